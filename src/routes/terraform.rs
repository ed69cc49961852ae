//! `/terraform/*`: generate the tfvars, run init, plan, apply, destroy, output.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::{PreferAsync, RunAnswer, SeesSecrets, StartedBy, WorkspaceParam};
use crate::domain::RunOptions;
use crate::domain::tfvars::{StackVariables, conform};
use crate::error::{ApiError, OptionalJson};
use crate::runner::JobSpec;
use crate::startup::AppState;
use crate::tools::terraform::{self, Command, Outputs};
use crate::workspace::{Workspace, write_atomic};

/// The original routes act on `default`; the same under `/workspaces/{name}`.
pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for prefix in ["", "/workspaces/{name}"] {
        router = router.route(&format!("{prefix}/terraform/generate"), post(generate));
        for command in [
            Command::Init,
            Command::Plan,
            Command::Apply,
            Command::Destroy,
            Command::Output,
        ] {
            let handler = move |s, w, b, r, p, o| run(s, w, b, r, p, o, command);
            router = router.route(
                &format!("{prefix}/terraform/{}", command.name()),
                post(handler),
            );
        }
    }
    router
}

/// Checks the variables against the stack's `variables.tf` and writes
/// `terraform.tfvars` from its template.
async fn generate(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
    OptionalJson(body): OptionalJson<Option<Map<String, Value>>>,
) -> Result<Response, ApiError> {
    let Some(given) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object of terraform variables",
        ));
    };
    let tfvars = Tfvars::check(&state, &workspace, &given)?;
    let _hold = state.hold_for_files(&workspace)?;
    tfvars.write(&state, &workspace)?;
    Ok(axum::Json(json!({
        "message": "terraform.tfvars file generated successfully",
        "used_variables": given,
        "default_variables": tfvars.defaults,
    }))
    .into_response())
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
        let stack = StackVariables::from_dir(&stack_dir).map_err(ApiError::internal)?;

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
    /// holds the workspace. A plan made from other variables is refused by
    /// apply from now on: it records the digest of the tfvars it was made from.
    pub(crate) fn write(&self, state: &AppState, workspace: &Workspace) -> Result<(), ApiError> {
        workspace
            .sync_stack(&state.stack_dir(workspace))
            .map_err(ApiError::internal)?;
        write_atomic(&workspace.tfvars(), self.rendered.as_bytes()).map_err(ApiError::internal)
    }
}

/// The run handler of every terraform command; its route names the command.
/// Only an authenticated admin's `output` shows sensitive values.
async fn run(
    state: State<AppState>,
    ws: WorkspaceParam,
    by: StartedBy,
    SeesSecrets(sees_secrets): SeesSecrets,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
    command: Command,
) -> Result<Response, ApiError> {
    let reveal = sees_secrets && command == Command::Output;
    run_revealing(state, ws, by, prefer, options, command, reveal).await
}

/// `reveal`: sensitive outputs in clear (an authenticated admin asked).
async fn run_revealing(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
    started_by: StartedBy,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(mut options): OptionalJson<RunOptions>,
    command: Command,
    reveal: bool,
) -> Result<Response, ApiError> {
    options.run_async |= prefer_async;
    check_confirmation(command, options.confirm.as_deref(), workspace.name())?;
    let request = json!({ "output": options.output, "async": options.run_async });
    let spec = run_spec(&state, &workspace, command, request, false)?;
    let mut spec = spec;
    started_by.stamp(&mut spec);
    spec.capture_stdout |= options.output && !options.run_async;
    let handle = state.submit(spec).await?;
    let name = command.name();
    let answer = if command == Command::Output {
        let format = state.config.output_format;
        RunAnswer {
            success_message: "Terraform output command executed successfully".into(),
            failure_message: "Terraform output command failed".into(),
            include_output: false,
            decorate: Some(Box::new(move |out, body| {
                let outputs = Outputs::parse(&out.stdout).unwrap_or_default();
                let masked = if reveal {
                    outputs.values.clone()
                } else {
                    outputs.masked()
                };
                let text = match format {
                    crate::config::OutputFormat::Json => {
                        serde_json::to_string_pretty(&masked).unwrap_or_default()
                    }
                    crate::config::OutputFormat::Text => Outputs::text_of(&masked),
                };
                body.insert("output".into(), json!(text));
                body.insert("outputs".into(), Value::Object(masked));
            })),
        }
    } else {
        RunAnswer {
            success_message: format!("Terraform command '{name}' executed successfully"),
            failure_message: format!("Terraform command '{name}' failed"),
            include_output: options.output,
            decorate: Some(Box::new(|out, body| {
                if let Some(Value::Object(result)) = &out.result {
                    for (k, v) in result {
                        body.insert(k.clone(), v.clone());
                    }
                }
            })),
        }
    };
    answer.respond(&state, handle, options.run_async).await
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
    workspace.ensure().map_err(ApiError::internal)?;
    let spec = match command {
        Command::Init => {
            let _hold = hold(state, workspace, held)?;
            workspace
                .sync_stack(&stack_dir)
                .map_err(ApiError::internal)?;
            terraform::job(&state.config, workspace, command, None, request)
        }
        Command::Plan => {
            {
                let _hold = hold(state, workspace, held)?;
                workspace
                    .sync_stack(&stack_dir)
                    .map_err(ApiError::internal)?;
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
                Ok(Some(json!({ "changes": out.exit_code == Some(2) })))
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
) -> Result<Option<crate::workspace::LockGuard>, ApiError> {
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
