//! `/terraform/*`: generate the tfvars, run init, plan, apply, destroy, output.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PreferAsync, RunReply, RunResult, SeesSecrets, StartedBy, WorkspaceParam};
use crate::domain::RunOptions;
use crate::domain::tfvars::conform;
use crate::error::{ApiError, ErrorBody, OptionalJson};
use crate::runner::{JobHandle, JobSpec, RunOutput};
use crate::startup::AppState;
use crate::tools::terraform::{self, Command, Outputs};
use crate::workspace::{LockGuard, Workspace, off_runtime, write_atomic};

/// The routes act on `default`; `startup` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generate))
        .routes(routes!(init))
        .routes(routes!(plan))
        .routes(routes!(apply))
        .routes(routes!(destroy))
        .routes(routes!(output))
}

/// The body of `generate`: the stack's variables by name. Names, types and
/// defaults come from the stack's `variables.tf`; numbers may be sent as
/// numeric strings (`"2"`).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct TerraformVariables(pub Map<String, Value>);

/// `generate`'s success: the variables written and the defaults left to the stack.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResult {
    pub message: String,
    /// The variables given, as given.
    #[schema(value_type = Object)]
    pub used_variables: Map<String, Value>,
    /// The stack's defaults of the variables not given.
    #[schema(value_type = Object)]
    pub default_variables: Map<String, Value>,
}

/// Checks the variables against the stack's `variables.tf` and writes
/// `terraform.tfvars` from its template.
#[utoipa::path(
    post,
    path = "/terraform/generate",
    operation_id = "terraform_generate",
    tag = "terraform",
    summary = "Write terraform.tfvars from the stack's variables",
    description = "Checks every variable against the stack's `variables.tf` (names, HCL types, \
        validation blocks) and writes `terraform.tfvars`. Nothing is written when a variable is \
        unknown, missing or invalid. A saved plan made from the previous variables can no longer \
        be applied.",
    request_body(content = TerraformVariables, description = "The stack's variables by name",
        example = json!({"bastion_key_pair": "bastion-key", "db_key_pair": "db-key",
            "replica_count": "2"})),
    responses(
        (status = 200, description = "terraform.tfvars written", body = GenerateResult),
        (status = 400, description = "Not a JSON object, or unknown, missing or invalid \
            variables (`unknown_variables`, `missing_variables`, `fields`); nothing written",
            body = ErrorBody),
        (status = 409, description = "The workspace is busy", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn generate(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
    OptionalJson(body): OptionalJson<Option<TerraformVariables>>,
) -> Result<axum::Json<GenerateResult>, ApiError> {
    let Some(TerraformVariables(given)) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object of terraform variables",
        ));
    };
    let tfvars = Tfvars::check(&state, &workspace, &given)?;
    let hold = state.hold_for_files(&workspace)?;
    tfvars.write(&state, &workspace, Some(hold)).await?;
    Ok(axum::Json(GenerateResult {
        message: "terraform.tfvars file generated successfully".into(),
        used_variables: given,
        default_variables: tfvars.defaults,
    }))
}

/// Variables checked against the stack's `variables.tf`, rendered as
/// `terraform.tfvars`.
pub(crate) struct Tfvars {
    rendered: String,
    /// The stack's defaults for what was not given.
    pub defaults: Map<String, Value>,
}

impl Tfvars {
    /// Every unknown, missing and invalid variable at once.
    pub(crate) fn check(
        state: &AppState,
        workspace: &Workspace,
        given: &Map<String, Value>,
    ) -> Result<Tfvars, ApiError> {
        let stack_dir = state.stack_dir(workspace);
        let stack = state.stacks.get(&stack_dir).map_err(ApiError::internal)?;

        let unknown: Vec<String> = given
            .keys()
            .filter(|name| stack.get(name).is_none())
            .cloned()
            .collect();
        let missing: Vec<String> = stack
            .variables
            .iter()
            .filter(|v| v.is_required() && given.get(&v.name).is_none_or(Value::is_null))
            .map(|v| v.name.clone())
            .collect();
        let mut invalid = Map::new();
        // Declaration order, so the file reads like variables.tf.
        let mut values = Map::new();
        for spec in &stack.variables {
            let Some(value) = given.get(&spec.name) else {
                continue;
            };
            if spec.is_required() && value.as_str().is_some_and(|v| v.trim().is_empty()) {
                invalid.insert(
                    spec.name.clone(),
                    json!("is required and must not be empty"),
                );
                continue;
            }
            match conform(value, &spec.ty).and_then(|v| spec.validate(&v).map(|_| v)) {
                Ok(v) => {
                    values.insert(spec.name.clone(), v);
                }
                Err(reason) => {
                    invalid.insert(spec.name.clone(), json!(reason));
                }
            }
        }
        if !unknown.is_empty() || !missing.is_empty() || !invalid.is_empty() {
            return Err(ApiError::Variables {
                unknown,
                missing,
                invalid,
            });
        }
        let rendered = state
            .renderer
            .render("terraform.tfvars.j2", json!({ "variables": values }))
            .map_err(ApiError::internal)?;
        let defaults = stack
            .variables
            .iter()
            .filter(|v| !given.contains_key(&v.name))
            .filter_map(|v| v.default.clone().map(|d| (v.name.clone(), d)))
            .collect();
        Ok(Tfvars { rendered, defaults })
    }

    /// Mirrors the stack into the workspace and writes the file. The caller
    /// holds the workspace; `hold`, its guard when the caller may be dropped
    /// (a request whose client goes away), is kept until the file is written. A plan made from other
    /// variables is refused by apply from now on: it records the digest of
    /// the tfvars it was made from.
    pub(crate) async fn write(
        &self,
        state: &AppState,
        workspace: &Workspace,
        hold: Option<LockGuard>,
    ) -> Result<(), ApiError> {
        let stack = state.stack_dir(workspace);
        let files_error = super::workspace_files_error(workspace);
        let workspace = workspace.clone();
        let rendered = self.rendered.clone();
        off_runtime(move || {
            let _hold = hold;
            workspace.sync_stack(&stack)?;
            write_atomic(&workspace.tfvars(), rendered.as_bytes())
        })
        .await
        .map_err(files_error)
    }
}

/// `terraform plan`'s `-detailed-exitcode`: 2 when the plan changes something.
fn plan_changes(exit_code: Option<i32>) -> bool {
    exit_code == Some(2)
}

/// `plan`'s success: whether the saved plan changes anything.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanResult {
    pub message: String,
    pub job_id: crate::store::JobId,
    /// Whether the plan changes anything (`-detailed-exitcode` 2).
    pub changes: bool,
    /// terraform's standard output, with `"output": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub output: Option<String>,
}

/// `output`'s success: `terraform output -json` parsed, and as text.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"message": "Terraform output command executed successfully",
    "job_id": "3b0c5b4e-8f5d-4c1b-9e0a-2f6d7c8b9a10",
    "outputs": {"bastion_eip_address": "203.0.113.10", "primary_db_addr": "10.20.1.10",
                "replica_db_addresses": ["10.20.2.11"]},
    "output": "bastion_eip_address = \"203.0.113.10\"\n"}))]
pub struct OutputResult {
    pub message: String,
    pub job_id: crate::store::JobId,
    /// Every output by name; sensitive ones show as `"(sensitive value)"`
    /// except to an authenticated admin token.
    #[schema(value_type = Object)]
    pub outputs: Map<String, Value>,
    /// The same outputs as text (or pretty JSON with `OUTPUT_FORMAT=json`).
    pub output: String,
}

/// The body of `destroy`, as documented: the run options and the
/// confirmation. The handler reads it as `RunOptions`, whose `confirm` only
/// destroy accepts; a unit test keeps the two alike.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"confirm": "default"}))]
#[allow(dead_code)]
pub struct DestroyOptions {
    /// Return terraform's standard output in the answer.
    #[serde(default)]
    output: bool,
    /// Answer `202` at once with the job instead of waiting for its end.
    #[serde(default, rename = "async")]
    run_async: bool,
    /// The workspace's name, typed out (`default` on the original routes).
    confirm: String,
}

/// A terraform job submitted, and how its caller wants the answer.
struct Started {
    handle: JobHandle,
    command: Command,
    run_async: bool,
    include_output: bool,
}

impl Started {
    /// The job at once (async), or its success as `done` makes it.
    async fn reply<T>(
        self,
        state: &AppState,
        done: impl FnOnce(&RunOutput) -> T,
    ) -> Result<RunReply<T>, ApiError> {
        let failure = match self.command {
            Command::Output => "Terraform output command failed".to_string(),
            command => format!("Terraform command '{}' failed", command.name()),
        };
        state
            .reply(self.handle, self.run_async, failure, done)
            .await
    }

    /// The answer of init, apply and destroy.
    async fn reply_run_result(self, state: &AppState) -> Result<RunReply<RunResult>, ApiError> {
        let name = self.command.name();
        let include_output = self.include_output;
        self.reply(state, |out| RunResult {
            message: format!("Terraform command '{name}' executed successfully"),
            job_id: out.job_id,
            output: include_output.then(|| out.stdout.clone()),
        })
        .await
    }
}

/// `terraform init -input=false -no-color`.
#[utoipa::path(
    post,
    path = "/terraform/init",
    operation_id = "terraform_init",
    tag = "terraform",
    summary = "terraform init",
    description = "Runs `terraform init -input=false -no-color` in the workspace's copy of the stack.",
    params(PreferAsync),
    request_body(content = Option<RunOptions>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "terraform init succeeded", body = RunResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, or terraform failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn init(
    State(state): State<AppState>,
    ws: WorkspaceParam,
    by: StartedBy,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<RunResult>, ApiError> {
    let started = start(&state, ws, by, prefer, options, Command::Init).await?;
    started.reply_run_result(&state).await
}

/// `terraform plan`, saved for apply.
#[utoipa::path(
    post,
    path = "/terraform/plan",
    operation_id = "terraform_plan",
    tag = "terraform",
    summary = "terraform plan, saved for apply",
    description = "Runs `terraform plan -input=false -no-color -detailed-exitcode -out=<plan file>`. \
        The plan is saved for `apply`, with the digest of the `terraform.tfvars` it was made from.",
    params(PreferAsync),
    request_body(content = Option<RunOptions>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "The plan is saved", body = PlanResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, or terraform failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn plan(
    State(state): State<AppState>,
    ws: WorkspaceParam,
    by: StartedBy,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<PlanResult>, ApiError> {
    let started = start(&state, ws, by, prefer, options, Command::Plan).await?;
    let include_output = started.include_output;
    started
        .reply(&state, |out| PlanResult {
            message: "Terraform command 'plan' executed successfully".into(),
            job_id: out.job_id,
            changes: plan_changes(out.exit_code),
            output: include_output.then(|| out.stdout.clone()),
        })
        .await
}

/// `terraform apply` of the saved plan, once.
#[utoipa::path(
    post,
    path = "/terraform/apply",
    operation_id = "terraform_apply",
    tag = "terraform",
    summary = "terraform apply of the saved plan",
    description = "Runs `terraform apply -input=false -no-color <saved plan>`: exactly what was \
        planned, once.",
    params(PreferAsync),
    request_body(content = Option<RunOptions>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "terraform apply succeeded", body = RunResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, or terraform failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No saved plan, a plan made before terraform.tfvars last \
            changed, or the workspace is busy (`job_id`, `Retry-After`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait, when a job holds the workspace"))),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn apply(
    State(state): State<AppState>,
    ws: WorkspaceParam,
    by: StartedBy,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<RunResult>, ApiError> {
    let started = start(&state, ws, by, prefer, options, Command::Apply).await?;
    started.reply_run_result(&state).await
}

/// `terraform destroy`, confirmed by the workspace's name.
#[utoipa::path(
    post,
    path = "/terraform/destroy",
    operation_id = "terraform_destroy",
    tag = "terraform",
    summary = "terraform destroy (confirmed by the workspace's name)",
    description = "Runs `terraform destroy -input=false -no-color -auto-approve`, only with \
        `{\"confirm\": \"<workspace name>\"}` in the body (`default` on the original routes).",
    params(PreferAsync),
    request_body(content = DestroyOptions, description = "The confirmation and run options"),
    responses(
        (status = 200, description = "terraform destroy succeeded", body = RunResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "No or a wrong confirmation, invalid options, or terraform \
            failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn destroy(
    State(state): State<AppState>,
    ws: WorkspaceParam,
    by: StartedBy,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<RunResult>, ApiError> {
    let started = start(&state, ws, by, prefer, options, Command::Destroy).await?;
    started.reply_run_result(&state).await
}

/// `terraform output -json`, parsed. Only an authenticated admin sees
/// sensitive values.
#[utoipa::path(
    post,
    path = "/terraform/output",
    operation_id = "terraform_output",
    tag = "terraform",
    summary = "terraform output, parsed",
    description = "Runs `terraform output -json` and answers its outputs. Sensitive outputs show \
        as `\"(sensitive value)\"` except to an authenticated admin token.",
    params(PreferAsync),
    request_body(content = Option<RunOptions>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "The outputs", body = OutputResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, or terraform failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn output(
    State(state): State<AppState>,
    ws: WorkspaceParam,
    by: StartedBy,
    SeesSecrets(reveal): SeesSecrets,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<OutputResult>, ApiError> {
    let started = start(&state, ws, by, prefer, options, Command::Output).await?;
    let format = state.config.output_format;
    started
        .reply(&state, move |out| {
            let outputs = Outputs::parse(&out.stdout).unwrap_or_default();
            let shown = if reveal {
                outputs.values.clone()
            } else {
                outputs.masked()
            };
            let text = match format {
                crate::config::OutputFormat::Json => {
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                }
                crate::config::OutputFormat::Text => Outputs::text_of(&shown),
            };
            OutputResult {
                message: "Terraform output command executed successfully".into(),
                job_id: out.job_id,
                outputs: shown,
                output: text,
            }
        })
        .await
}

/// Checks the options and submits the command's job.
async fn start(
    state: &AppState,
    WorkspaceParam(workspace): WorkspaceParam,
    started_by: StartedBy,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(mut options): OptionalJson<RunOptions>,
    command: Command,
) -> Result<Started, ApiError> {
    options.run_async |= prefer_async;
    check_confirmation(command, options.confirm.as_deref(), workspace.name())?;
    let request = json!({ "output": options.output, "async": options.run_async });
    let spec = run_spec(state, &workspace, command, request, false)?;
    let mut spec = spec;
    started_by.stamp(&mut spec);
    spec.capture_stdout |= options.output && !options.run_async;
    let handle = state.submit(spec).await?;
    Ok(Started {
        handle,
        command,
        run_async: options.run_async,
        include_output: options.output,
    })
}

/// The job of a terraform command. `held`: the caller (a deploy) already
/// holds the workspace; otherwise it is held while the stack is mirrored.
pub(crate) fn run_spec(
    state: &AppState,
    workspace: &Workspace,
    command: Command,
    request: Value,
    held: bool,
) -> Result<JobSpec, ApiError> {
    let stack_dir = state.stack_dir(workspace);
    let files_error = super::workspace_files_error(workspace);
    workspace.ensure().map_err(&files_error)?;
    let spec = match command {
        Command::Init => {
            let _hold = hold(state, workspace, held)?;
            workspace.sync_stack(&stack_dir).map_err(&files_error)?;
            terraform::job(&state.config, workspace, command, None, request)
        }
        Command::Plan => {
            {
                let _hold = hold(state, workspace, held)?;
                workspace.sync_stack(&stack_dir).map_err(&files_error)?;
            }
            let plan_file = workspace.plan_file(&uuid::Uuid::new_v4().to_string());
            let mut spec =
                terraform::job(&state.config, workspace, command, Some(&plan_file), request);
            let ws = workspace.clone();
            let saved = plan_file.clone();
            // The variables the plan is made from: the workspace is held by
            // this job until it ends, so they cannot change under it.
            let tfvars_sha256 = workspace.tfvars_sha256();
            spec.on_success = Some(Box::new(move |out| {
                ws.clear_latest_plan();
                ws.set_latest_plan(&saved, &tfvars_sha256)
                    .map_err(|e| format!("could not record the saved plan: {e}"))?;
                Ok(Some(json!({ "changes": plan_changes(out.exit_code) })))
            }));
            spec.on_finish = Some(Box::new(move |status| {
                if status != crate::store::JobStatus::Succeeded {
                    let _ = std::fs::remove_file(&plan_file);
                }
            }));
            spec
        }
        Command::Apply => {
            let Some(saved) = workspace.latest_plan() else {
                return Err(ApiError::Conflict(
                    "there is no saved plan to apply: call /terraform/plan first".into(),
                ));
            };
            if saved.tfvars_sha256 != workspace.tfvars_sha256() {
                return Err(ApiError::Conflict(
                    "the saved plan was made before terraform.tfvars last changed: \
                     call /terraform/plan again, then apply"
                        .into(),
                ));
            }
            let plan_file = saved.path;
            let mut spec =
                terraform::job(&state.config, workspace, command, Some(&plan_file), request);
            let ws = workspace.clone();
            // A saved plan can be applied once, whatever the outcome.
            spec.on_finish = Some(Box::new(move |_| ws.clear_latest_plan()));
            spec
        }
        Command::Destroy => {
            let mut spec = terraform::job(&state.config, workspace, command, None, request);
            let ws = workspace.clone();
            spec.on_finish = Some(Box::new(move |_| ws.clear_latest_plan()));
            spec
        }
        Command::Output => {
            let mut spec = terraform::job(&state.config, workspace, command, None, request);
            spec.on_success = Some(Box::new(|out| {
                let outputs = Outputs::parse(&out.stdout)?;
                Ok(Some(
                    json!({ "outputs": outputs.masked(), "sensitive": outputs.sensitive }),
                ))
            }));
            spec
        }
    };
    Ok(spec)
}

fn hold(
    state: &AppState,
    workspace: &Workspace,
    held: bool,
) -> Result<Option<LockGuard>, ApiError> {
    if held {
        Ok(None)
    } else {
        state.hold_for_files(workspace).map(Some)
    }
}

/// `destroy` needs `"confirm": "<workspace name>"`; the other commands take
/// no confirmation.
fn check_confirmation(
    command: Command,
    confirm: Option<&str>,
    workspace: &str,
) -> Result<(), ApiError> {
    match (command, confirm) {
        (Command::Destroy, Some(given)) if given == workspace => Ok(()),
        (Command::Destroy, Some(_)) => Err(ApiError::field(
            "confirm",
            format!(
                "does not match the workspace: send {{\"confirm\": \"{workspace}\"}} to destroy \
                 every resource of workspace '{workspace}'"
            ),
        )),
        (Command::Destroy, None) => Err(ApiError::field(
            "confirm",
            format!(
                "is required: destroy removes every resource of workspace '{workspace}'; \
                 send {{\"confirm\": \"{workspace}\"}} to go ahead"
            ),
        )),
        (_, Some(_)) => Err(ApiError::field(
            "confirm",
            format!("only destroy takes a confirmation, not {}", command.name()),
        )),
        (_, None) => Ok(()),
    }
}
