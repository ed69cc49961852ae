//! `/terraform/*`: generate the tfvars, run init, plan, apply, destroy, output.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PreferAsync, RunReply, RunResult, SeesSecrets, WorkspaceParam, reply};
use crate::auth::Access;
use crate::cluster::guardrails::{Approval, approval_at_plan};
use crate::cluster::{self, Actor, App};
use crate::domain::{DestroyOptions, RunOptions};
use crate::error::{ApiError, ErrorBody, OptionalJson};
use crate::runner::{JobHandle, RunOutput};
use crate::tokens::Scope;
use crate::tools::terraform::{Command, Outputs, PlanSummary};

/// The routes act on `default`; `routes::api()` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Plan).declare(routes!(generate)))
        .routes(Access::Needs(Scope::Plan).declare(routes!(init)))
        .routes(Access::Needs(Scope::Plan).declare(routes!(plan)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(apply)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(destroy)))
        .routes(Access::Needs(Scope::Read).declare(routes!(output)))
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
        (status = 403, description = "The caller's `db_hosts` quota would be exceeded (`rule`, \
            `quota`); nothing written", body = ErrorBody),
        (status = 409, description = "The workspace is busy, or expired", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn generate(
    State(app): State<App>,
    actor: Actor,
    WorkspaceParam(workspace): WorkspaceParam,
    OptionalJson(body): OptionalJson<Option<TerraformVariables>>,
) -> Result<axum::Json<GenerateResult>, ApiError> {
    let Some(TerraformVariables(given)) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object of terraform variables",
        ));
    };
    let generated = cluster::generate(&app, &workspace, &given, &actor).await?;
    Ok(axum::Json(GenerateResult {
        message: "terraform.tfvars file generated successfully".into(),
        used_variables: given,
        default_variables: generated.defaults,
    }))
}

/// `plan`'s success: whether the saved plan changes anything.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanResult {
    pub message: String,
    pub job_id: crate::store::JobId,
    /// Whether the plan changes anything (`-detailed-exitcode` 2).
    pub changes: bool,
    /// What the plan changes, from `terraform show -json`.
    #[schema(nullable = false)]
    pub summary: Option<PlanSummary>,
    /// `pending` when the workspace requires approval: another token
    /// approves the plan (`POST /jobs/{job_id}/approve`) before apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub approval: Option<Approval>,
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
        app: &App,
        done: impl FnOnce(&RunOutput) -> T,
    ) -> Result<RunReply<T>, ApiError> {
        let failure = match self.command {
            Command::Output => "Terraform output command failed".to_string(),
            command => format!("Terraform command '{}' failed", command.name()),
        };
        reply(app, self.handle, self.run_async, failure, done).await
    }

    /// The answer of init, apply and destroy.
    async fn reply_run_result(self, app: &App) -> Result<RunReply<RunResult>, ApiError> {
        let name = self.command.name();
        let include_output = self.include_output;
        self.reply(app, |out| RunResult {
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
    State(app): State<App>,
    ws: WorkspaceParam,
    actor: Actor,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<RunResult>, ApiError> {
    let started = start(&app, ws, actor, prefer, options, Command::Init).await?;
    started.reply_run_result(&app).await
}

/// `terraform plan`, saved for apply.
#[utoipa::path(
    post,
    path = "/terraform/plan",
    operation_id = "terraform_plan",
    tag = "terraform",
    summary = "terraform plan, saved for apply",
    description = "Runs `terraform plan -input=false -no-color -detailed-exitcode -out=<plan file>`. \
        The plan is saved for `apply`, with the digest of the `terraform.tfvars` it was made from, \
        and summarized from `terraform show -json` (`summary`, also in the job's `result`). When \
        the workspace requires approval, the plan awaits another token's \
        (`POST /jobs/{job_id}/approve`) before it can be applied.",
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
    State(app): State<App>,
    ws: WorkspaceParam,
    actor: Actor,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<PlanResult>, ApiError> {
    let started = start(&app, ws, actor, prefer, options, Command::Plan).await?;
    let include_output = started.include_output;
    started
        .reply(&app, |out| PlanResult {
            message: "Terraform command 'plan' executed successfully".into(),
            job_id: out.job_id,
            changes: cluster::plan_changes(out.exit_code),
            summary: out
                .result
                .as_ref()
                .and_then(|r| serde_json::from_value(r["summary"].clone()).ok()),
            approval: approval_at_plan(out.result.as_ref()),
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
        planned, once. A plan made while the workspace required approval is applied only once \
        another token approved it.",
    params(PreferAsync),
    request_body(content = Option<RunOptions>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "terraform apply succeeded", body = RunResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, or terraform failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No saved plan, a plan made before terraform.tfvars last \
            changed, a plan awaiting approval (`job_id`: the plan's job) or rejected, or the \
            workspace is busy (`job_id`, `Retry-After`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait, when a job holds the workspace"))),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn apply(
    State(app): State<App>,
    ws: WorkspaceParam,
    actor: Actor,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<RunResult>, ApiError> {
    let started = start(&app, ws, actor, prefer, options, Command::Apply).await?;
    started.reply_run_result(&app).await
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
    State(app): State<App>,
    ws: WorkspaceParam,
    actor: Actor,
    prefer: PreferAsync,
    OptionalJson(options): OptionalJson<DestroyOptions>,
) -> Result<RunReply<RunResult>, ApiError> {
    let options = OptionalJson(options.into());
    let started = start(&app, ws, actor, prefer, options, Command::Destroy).await?;
    started.reply_run_result(&app).await
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
    State(app): State<App>,
    ws: WorkspaceParam,
    actor: Actor,
    SeesSecrets(reveal): SeesSecrets,
    prefer: PreferAsync,
    options: OptionalJson<RunOptions>,
) -> Result<RunReply<OutputResult>, ApiError> {
    let started = start(&app, ws, actor, prefer, options, Command::Output).await?;
    let format = app.config.output_format;
    started
        .reply(&app, move |out| {
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
    app: &App,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(mut options): OptionalJson<RunOptions>,
    command: Command,
) -> Result<Started, ApiError> {
    options.run_async |= prefer_async;
    let handle = cluster::start_command(app, &workspace, command, &options, &actor).await?;
    Ok(Started {
        handle,
        command,
        run_async: options.run_async,
        include_output: options.output,
    })
}
