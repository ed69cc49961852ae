//! `/deploy`: generate → init → plan → apply → output → configure → run as
//! one job with named steps (`cluster::deploy`), and `/deploy/resume` to go
//! on from the step a failed deploy stopped at.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PreferAsync, WorkspaceParam, reply};
use crate::auth::Access;
use crate::cluster::deploy::{self, DeployInput, DeployProgress, StepRecord};
use crate::cluster::{Actor, App, ConfigureRequest, Inventory};
use crate::error::{ApiError, ApiJson, ErrorBody, OptionalJson};
use crate::runner::JobHandle;
use crate::store::{JobId, JobStatus};
use crate::tokens::Scope;

/// The routes act on `default`; `routes::api()` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Apply).declare(routes!(deploy)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(resume)))
}

/// The body of `/deploy`: the bodies of generate and configure, and run's
/// version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "variables": {"bastion_key_pair": "bastion-key", "db_key_pair": "db-key", "replica_count": 2},
    "configure": {"bastion_key_path": "/home/ops/.ssh/bastion.pem",
                  "db_key_path": "/home/ops/.ssh/db.pem", "max_connections": "200"},
    "postgresql_version": 16, "async": true}))]
pub struct DeployRequest {
    /// Terraform variables, as `/terraform/generate` takes them.
    #[schema(value_type = Object)]
    variables: Map<String, Value>,
    /// Key paths and PostgreSQL settings, as `/ansible/configure` takes them.
    configure: ConfigureRequest,
    /// The PostgreSQL major version run installs (default 16).
    #[serde(default)]
    #[schema(value_type = Option<u8>, minimum = 10, maximum = 30)]
    postgresql_version: Option<Value>,
    /// Answer `202` at once with the deploy job instead of waiting for its end.
    #[serde(default, rename = "async")]
    run_async: bool,
}

/// The body of `/deploy/resume`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// Answer `202` at once with the deploy job instead of waiting for its end.
    #[serde(default, rename = "async")]
    run_async: bool,
}

/// A deploy that succeeded.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployResult {
    pub message: String,
    pub job_id: JobId,
    #[serde(flatten)]
    pub progress: DeployProgress,
}

/// A deploy's `400`: a step failed (the original tool's failure shape, with
/// the steps), or the input was refused (`error` and `fields` only, nothing
/// started).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployFailure {
    /// `Deploy failed at step '<name>'`, or what was wrong with the input.
    pub error: String,
    /// The failed step's error, standard error and end of standard output.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub details: Option<String>,
    /// Refused input: each field (`variables.replica_count`) and the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fields: Option<std::collections::BTreeMap<String, String>>,
    /// The deploy job.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub job_id: Option<JobId>,
    /// How the deploy ended: failed, cancelled or timed_out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<JobStatus>,
    /// The step the deploy stopped at.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub failed_step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub steps: Option<Vec<StepRecord>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub resumed_from: Option<JobId>,
    /// The plan job the deploy stopped for (`409`): approve it, then resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub awaiting_approval: Option<JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub outputs: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub inventory: Option<Inventory>,
}

/// Starts a deploy of the workspace.
#[utoipa::path(
    post,
    path = "/deploy",
    operation_id = "deploy",
    tag = "deploy",
    summary = "generate → init → plan → apply → output → configure → run, as one job",
    description = "Checks every input first (nothing changes on a bad request), then runs the \
        steps in order as one job of kind `deploy` holding the workspace; each tool step is a job \
        of its own (`steps[].job_id`). The job's `result` shows the steps while it runs. When the \
        workspace requires approval, the deploy ends after `plan` (apply `awaiting_approval`, \
        `awaiting_approval`: the plan's job); once another token approved the plan, \
        `/deploy/resume` applies it and goes on.",
    params(PreferAsync),
    request_body(content = DeployRequest, description = "generate's variables, configure's key \
        paths and settings, run's version"),
    responses(
        (status = 200, description = "Every step succeeded", body = DeployResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid input (`fields` names each, e.g. \
            `variables.replica_count`), or a step failed (`failed_step`, `steps`, `details`)",
            body = DeployFailure),
        (status = 409, description = "The deploy stopped after plan: the plan awaits approval \
            (`awaiting_approval`, `steps`), or the workspace is busy (`job_id`, `Retry-After`)",
            body = DeployFailure,
            headers(("Retry-After" = u32, description = "Seconds to wait, when a job holds the workspace"))),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn deploy(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    ApiJson(request): ApiJson<DeployRequest>,
) -> Result<Response, ApiError> {
    let run_async = request.run_async || prefer_async;
    let input = DeployInput::check(
        &app,
        &workspace,
        request.variables,
        request.configure,
        request.postgresql_version.as_ref(),
    )?;
    let handle = deploy::deploy(&app, &workspace, input, &actor).await?;
    answer(&app, handle, run_async).await
}

/// Goes on with the workspace's last deploy from the step it stopped at,
/// with the same variables, key paths, settings and version.
#[utoipa::path(
    post,
    path = "/deploy/resume",
    operation_id = "deploy_resume",
    tag = "deploy",
    summary = "Resume the last deploy from the step it stopped at",
    description = "Starts a new deploy with the last one's inputs, from the step that failed, was \
        cancelled or was interrupted (a failed apply resumes from plan: a saved plan is applied \
        once), or from apply when it stopped for a plan since approved. The steps before it are \
        `skipped`.",
    params(PreferAsync),
    request_body(content = Option<ResumeRequest>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "The remaining steps succeeded", body = DeployResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, the saved inputs no longer pass the \
            checks, or a step failed (`failed_step`, `steps`, `details`)", body = DeployFailure),
        (status = 409, description = "No deploy to resume, the last one succeeded, its plan \
            still awaits approval (`job_id`: the plan's job) or was rejected, the resumed deploy \
            stopped for approval again (`awaiting_approval`), or the workspace is busy",
            body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn resume(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<ResumeRequest>,
) -> Result<Response, ApiError> {
    let run_async = request.run_async || prefer_async;
    let handle = deploy::resume(&app, &workspace, &actor).await?;
    answer(&app, handle, run_async).await
}

/// The deploy job at once (async), or its end: its steps, and on failure the
/// failed step with the details.
async fn answer(app: &App, handle: JobHandle, run_async: bool) -> Result<Response, ApiError> {
    if run_async {
        return reply(app, handle, true, "", |_| Value::Null)
            .await
            .map(IntoResponse::into_response);
    }
    let output = handle.wait().await;
    let progress: DeployProgress = output
        .result
        .clone()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    if output.status == JobStatus::Succeeded
        && let Some(plan) = progress.awaiting_approval
    {
        let stopped = DeployFailure {
            error: format!(
                "Deploy stopped after step 'plan': plan job {plan} awaits approval by another \
                 token (POST /jobs/{plan}/approve); then POST /deploy/resume applies it"
            ),
            details: None,
            fields: None,
            job_id: Some(output.job_id),
            status: None,
            failed_step: None,
            steps: Some(progress.steps),
            resumed_from: progress.resumed_from,
            awaiting_approval: Some(plan),
            outputs: None,
            inventory: None,
        };
        return Ok((StatusCode::CONFLICT, Json(stopped)).into_response());
    }
    if output.status == JobStatus::Succeeded {
        let verb = if progress.resumed_from.is_some() {
            "resumed and completed"
        } else {
            "completed"
        };
        return Ok(Json(DeployResult {
            message: format!("Deploy {verb} successfully"),
            job_id: output.job_id,
            progress,
        })
        .into_response());
    }
    let error = match &progress.failed_step {
        Some(step) => format!("Deploy failed at step '{step}'"),
        None => "Deploy failed".to_string(),
    };
    let failure = DeployFailure {
        error,
        details: Some(crate::cluster::details(&output)),
        fields: None,
        job_id: Some(output.job_id),
        status: Some(output.status),
        failed_step: progress.failed_step,
        steps: Some(progress.steps),
        resumed_from: progress.resumed_from,
        awaiting_approval: None,
        outputs: progress.outputs,
        inventory: progress.inventory,
    };
    Ok((StatusCode::BAD_REQUEST, Json(failure)).into_response())
}
