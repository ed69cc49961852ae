//! `/deploy`: generate → init → plan → apply → output → configure → run as
//! one job with named steps, and `/deploy/resume` to go on from the step a
//! failed deploy stopped at.
//!
//! Everything the steps need is checked before the first one starts, so a
//! bad request changes nothing. The deploy holds the workspace from its
//! first step to its last; each tool step is a job of its own (its log at
//! `/jobs/{id}/log`), and the deploy's result lists the steps as they go.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ansible::{ConfigureInput, Inventory, playbook_spec, write_configuration};
use super::terraform::{Tfvars, run_spec};
use super::{PreferAsync, StartedBy, WorkspaceParam, details};
use crate::domain::PostgresqlVersion;
use crate::error::{ApiError, ApiJson, ErrorBody, OptionalJson};
use crate::runner::{Pipeline, PipelineEnd, PipelineSpec, RunOutput};
use crate::startup::AppState;
use crate::store::{JobFilter, JobId, JobKind, JobStatus};
use crate::tools::terraform::{Command, Outputs};
use crate::workspace::Workspace;

/// The routes act on `default`; `startup` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deploy))
        .routes(routes!(resume))
}

/// The steps of a deploy, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Generate,
    Init,
    Plan,
    Apply,
    Output,
    Configure,
    Run,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Generate,
        Step::Init,
        Step::Plan,
        Step::Apply,
        Step::Output,
        Step::Configure,
        Step::Run,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Generate => "generate",
            Step::Init => "init",
            Step::Plan => "plan",
            Step::Apply => "apply",
            Step::Output => "output",
            Step::Configure => "configure",
            Step::Run => "run",
        }
    }

    fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Where a deploy that stopped at this step goes on: a saved plan is
    /// applied once, whatever the outcome, so a failed apply plans again.
    fn resume_point(self) -> Step {
        match self {
            Step::Apply => Step::Plan,
            other => other,
        }
    }
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
    #[schema(value_type = super::ansible::ConfigureRequest)]
    configure: Map<String, Value>,
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

/// What the steps work from, checked.
struct DeployInput {
    variables: Map<String, Value>,
    configure_body: Map<String, Value>,
    configure: ConfigureInput,
    version: PostgresqlVersion,
}

impl DeployInput {
    /// Checks everything the steps will need, naming each problem with its
    /// place in the body (`variables.replica_count`, `configure.db_key_path`).
    fn check(
        state: &AppState,
        workspace: &Workspace,
        variables: Map<String, Value>,
        configure_body: Map<String, Value>,
        version: Option<&Value>,
    ) -> Result<DeployInput, ApiError> {
        let mut problems = Map::new();
        match Tfvars::check(state, workspace, &variables) {
            Ok(_) => {}
            Err(ApiError::Variables {
                unknown,
                missing,
                invalid,
            }) => {
                for name in unknown {
                    problems.insert(
                        format!("variables.{name}"),
                        json!("is not a variable of the stack"),
                    );
                }
                for name in missing {
                    problems.insert(format!("variables.{name}"), json!("is required"));
                }
                for (name, reason) in invalid {
                    problems.insert(format!("variables.{name}"), reason);
                }
            }
            Err(other) => return Err(other),
        }
        let configure = match ConfigureInput::parse(&configure_body) {
            Ok(input) => Some(input),
            Err(ApiError::Validation { fields, .. }) => {
                for (name, reason) in fields {
                    problems.insert(format!("configure.{name}"), reason);
                }
                None
            }
            Err(other) => return Err(other),
        };
        let version = match version {
            None => Some(PostgresqlVersion::DEFAULT),
            Some(raw) => PostgresqlVersion::parse(raw)
                .map_err(|e| problems.insert("postgresql_version".into(), json!(e)))
                .ok(),
        };
        if state.config.ansible_vault_password.is_none() {
            return Err(ApiError::bad_request(
                "ANSIBLE_VAULT_PASSWORD is not set in the server's environment: the run step needs it",
            ));
        }
        match (configure, version) {
            (Some(configure), Some(version)) if problems.is_empty() => Ok(DeployInput {
                variables,
                configure_body,
                configure,
                version,
            }),
            _ => Err(ApiError::fields(problems)),
        }
    }

    /// The deploy job's request: what a resume starts again from. No secret
    /// is in it (key paths, not keys).
    fn record(&self, resumed_from: Option<JobId>) -> Value {
        let mut record = json!({
            "variables": self.variables,
            "configure": self.configure_body,
            "postgresql_version": self.version.get(),
        });
        if let Some(id) = resumed_from {
            record["resumed_from"] = json!(id);
        }
        record
    }
}

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// Done by the deploy this one resumed.
    Skipped,
}

impl StepStatus {
    /// How a step whose job ended this way stands.
    fn of_job(status: JobStatus) -> StepStatus {
        match status {
            JobStatus::Succeeded => StepStatus::Succeeded,
            JobStatus::Cancelled => StepStatus::Cancelled,
            JobStatus::TimedOut => StepStatus::TimedOut,
            _ => StepStatus::Failed,
        }
    }
}

/// One step as the deploy's result shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StepRecord {
    /// generate, init, plan, apply, output, configure or run.
    name: String,
    status: StepStatus,
    /// The step's tool job (generate and configure's file writes have none,
    /// configure's `terraform output` has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    job_id: Option<JobId>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    finished_at: Option<OffsetDateTime>,
    /// Why the step did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
}

/// A deploy's steps and what it learnt, as its job's `result` holds them
/// (updated while it runs) and as its answers show them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct DeployProgress {
    pub steps: Vec<StepRecord>,
    /// The step the deploy stopped at, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub failed_step: Option<String>,
    /// The deploy this one resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub resumed_from: Option<JobId>,
    /// terraform's outputs, sensitive ones masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub outputs: Option<Map<String, Value>>,
    /// The hosts configure wrote into the inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub inventory: Option<Inventory>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub outputs: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub inventory: Option<Inventory>,
}

impl StepRecord {
    fn new(step: Step, status: StepStatus) -> StepRecord {
        StepRecord {
            name: step.name().to_string(),
            status,
            job_id: None,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }
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
        of its own (`steps[].job_id`). The job's `result` shows the steps while it runs.",
    params(PreferAsync),
    request_body(content = DeployRequest, description = "generate's variables, configure's key \
        paths and settings, run's version"),
    responses(
        (status = 200, description = "Every step succeeded", body = DeployResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid input (`fields` names each, e.g. \
            `variables.replica_count`), or a step failed (`failed_step`, `steps`, `details`)",
            body = DeployFailure),
        (status = 409, response = crate::openapi::Busy),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn deploy(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
    started_by: StartedBy,
    PreferAsync(prefer_async): PreferAsync,
    ApiJson(request): ApiJson<DeployRequest>,
) -> Result<Response, ApiError> {
    let run_async = request.run_async || prefer_async;
    let input = DeployInput::check(
        &state,
        &workspace,
        request.variables,
        request.configure,
        request.postgresql_version.as_ref(),
    )?;
    start(
        &state,
        workspace,
        started_by,
        input,
        Step::Generate,
        None,
        run_async,
    )
    .await
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
        once). The steps before it are `skipped`.",
    params(PreferAsync),
    request_body(content = Option<ResumeRequest>, description = "Run options; the body may be omitted"),
    responses(
        (status = 200, description = "The remaining steps succeeded", body = DeployResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "Invalid options, the saved inputs no longer pass the \
            checks, or a step failed (`failed_step`, `steps`, `details`)", body = DeployFailure),
        (status = 409, description = "No deploy to resume, the last one succeeded, or the \
            workspace is busy", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn resume(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
    started_by: StartedBy,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<ResumeRequest>,
) -> Result<Response, ApiError> {
    let run_async = request.run_async || prefer_async;
    let filter = JobFilter {
        workspace: Some(workspace.name().to_string()),
        kind: Some(JobKind::Deploy),
        limit: 1,
        ..JobFilter::default()
    };
    let last = state
        .runner
        .store()
        .list(&filter)
        .await
        .map_err(ApiError::internal)?
        .jobs
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "workspace '{}' has no deploy to resume: start one with POST /deploy",
                workspace.name()
            ))
        })?;
    match last.status {
        JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut | JobStatus::Interrupted => {
        }
        JobStatus::Succeeded => {
            return Err(ApiError::Conflict(format!(
                "the last deploy ({}) succeeded: there is nothing to resume",
                last.id
            )));
        }
        JobStatus::Queued | JobStatus::Running => {
            return Err(ApiError::Busy {
                workspace: workspace.name().to_string(),
                job_id: last.id,
            });
        }
    }
    let stopped_at = last
        .result
        .as_ref()
        .and_then(|r| r["steps"].as_array())
        .and_then(|steps| {
            steps
                .iter()
                .find(|s| s["status"] != "succeeded" && s["status"] != "skipped")
        })
        .and_then(|s| s["name"].as_str())
        .and_then(Step::parse)
        .unwrap_or(Step::Generate);
    let field = |name: &str| match last.request.get(name) {
        Some(Value::Object(map)) => Ok(map.clone()),
        _ => Err(ApiError::internal(format!(
            "deploy {} has no {name} in its request",
            last.id
        ))),
    };
    let input = DeployInput::check(
        &state,
        &workspace,
        field("variables")?,
        field("configure")?,
        last.request.get("postgresql_version"),
    )?;
    start(
        &state,
        workspace,
        started_by,
        input,
        stopped_at.resume_point(),
        Some(last.id),
        run_async,
    )
    .await
}

async fn start(
    state: &AppState,
    workspace: Workspace,
    started_by: StartedBy,
    input: DeployInput,
    from: Step,
    resumed_from: Option<JobId>,
    run_async: bool,
) -> Result<Response, ApiError> {
    workspace
        .ensure()
        .map_err(super::workspace_files_error(&workspace))?;
    let spec = PipelineSpec {
        kind: JobKind::Deploy,
        workspace: workspace.name().to_string(),
        request: input.record(resumed_from),
        started_by: started_by.name.clone(),
        request_id: started_by.request_id.clone(),
    };
    let body_state = state.clone();
    let handle = state
        .runner
        .submit_pipeline(spec, move |pipeline| {
            Deploy {
                pipeline,
                state: body_state,
                workspace,
                started_by,
                input,
                resumed_from,
                steps: Vec::new(),
                outputs: None,
                inventory: None,
            }
            .run(from)
        })
        .await
        .map_err(super::submit_error)?;
    if run_async {
        return state
            .reply(handle, true, "", |_| Value::Null)
            .await
            .map(IntoResponse::into_response);
    }
    let output = handle.wait().await;
    let progress: DeployProgress = output
        .result
        .clone()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    if output.status == JobStatus::Succeeded {
        let verb = if resumed_from.is_some() {
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
        details: Some(details(&output)),
        fields: None,
        job_id: Some(output.job_id),
        status: Some(output.status),
        failed_step: progress.failed_step,
        steps: Some(progress.steps),
        resumed_from: progress.resumed_from,
        outputs: progress.outputs,
        inventory: progress.inventory,
    };
    Ok((StatusCode::BAD_REQUEST, Json(failure)).into_response())
}

/// A deploy in progress.
struct Deploy {
    pipeline: Pipeline,
    state: AppState,
    workspace: Workspace,
    started_by: StartedBy,
    input: DeployInput,
    resumed_from: Option<JobId>,
    steps: Vec<StepRecord>,
    /// The cluster's outputs, once the output step read them.
    outputs: Option<Outputs>,
    inventory: Option<Inventory>,
}

/// Why a step did not succeed.
struct StepFailure {
    status: JobStatus,
    error: String,
    job_id: Option<JobId>,
    stdout_tail: Vec<String>,
    stderr_tail: Vec<String>,
}

impl StepFailure {
    fn of_job(output: &RunOutput) -> StepFailure {
        StepFailure {
            status: output.status,
            error: output
                .error
                .clone()
                .unwrap_or_else(|| output.status.as_str().to_string()),
            job_id: Some(output.job_id),
            stdout_tail: output.stdout_tail.clone(),
            stderr_tail: output.stderr_tail.clone(),
        }
    }

    fn of_request(err: ApiError) -> StepFailure {
        let error = match &err {
            ApiError::Internal(_) => {
                tracing::error!(error = ?err, "a deploy step failed");
                "an unexpected error occurred (see the server's log)".to_string()
            }
            ApiError::Busy { workspace, job_id } => {
                format!("workspace '{workspace}' is busy with job {job_id}")
            }
            other => other.to_string(),
        };
        StepFailure {
            status: JobStatus::Failed,
            error,
            job_id: None,
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
        }
    }
}

impl Deploy {
    async fn run(mut self, from: Step) -> PipelineEnd {
        let resumed = self.resumed_from;
        let first = Step::ALL.iter().position(|s| *s == from).unwrap_or(0);
        for (index, step) in Step::ALL.into_iter().enumerate() {
            let status = if index < first {
                StepStatus::Skipped
            } else {
                StepStatus::Pending
            };
            self.steps.push(StepRecord::new(step, status));
        }
        if let Some(previous) = resumed {
            self.pipeline
                .log(&format!(
                    "resuming deploy {previous} at step {}",
                    from.name()
                ))
                .await;
        }
        for (index, step) in Step::ALL.into_iter().enumerate() {
            if self.steps[index].status == StepStatus::Skipped {
                continue;
            }
            if self.pipeline.cancelled() {
                return self.end_at(index, cancelled()).await;
            }
            self.steps[index].status = StepStatus::Running;
            self.steps[index].started_at = Some(OffsetDateTime::now_utc());
            self.publish().await;
            self.pipeline
                .log(&format!("step {}: started", step.name()))
                .await;
            let outcome = self.step(step, index).await;
            self.steps[index].finished_at = Some(OffsetDateTime::now_utc());
            match outcome {
                Ok(()) => {
                    self.steps[index].status = StepStatus::Succeeded;
                    self.pipeline
                        .log(&format!("step {}: succeeded", step.name()))
                        .await;
                }
                Err(failure) => return self.end_at(index, failure).await,
            }
        }
        self.publish().await;
        PipelineEnd {
            status: JobStatus::Succeeded,
            result: Some(json!(self.progress())),
            error: None,
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
        }
    }

    async fn step(&mut self, step: Step, index: usize) -> Result<(), StepFailure> {
        match step {
            Step::Generate => {
                let tfvars = Tfvars::check(&self.state, &self.workspace, &self.input.variables)
                    .map_err(StepFailure::of_request)?;
                tfvars
                    // The deploy holds the workspace throughout.
                    .write(&self.state, &self.workspace, None)
                    .await
                    .map_err(StepFailure::of_request)
            }
            Step::Init | Step::Plan | Step::Apply => {
                let command = match step {
                    Step::Init => Command::Init,
                    Step::Plan => Command::Plan,
                    _ => Command::Apply,
                };
                self.tool(index, |state, workspace, request| {
                    run_spec(state, workspace, command, request, true)
                })
                .await
                .map(drop)
            }
            Step::Output => {
                let output = self.output(index).await?;
                self.outputs = Some(output);
                Ok(())
            }
            Step::Configure => {
                let outputs = match self.outputs.take() {
                    Some(outputs) => outputs,
                    None => self.output(index).await?,
                };
                let inventory = write_configuration(
                    &self.state,
                    &self.workspace,
                    &self.input.configure,
                    &outputs,
                    None,
                )
                .await
                .map_err(StepFailure::of_request)?;
                self.pipeline
                    .log(&format!("inventory: {}", json!(inventory)))
                    .await;
                self.inventory = Some(inventory);
                self.outputs = Some(outputs);
                Ok(())
            }
            Step::Run => {
                let version = self.input.version;
                let spec = playbook_spec(
                    &self.state,
                    &self.workspace,
                    version,
                    json!({ "postgresql_version": version.get(), "deploy": self.pipeline.id() }),
                )
                .await
                .map_err(StepFailure::of_request)?;
                self.run_job(index, spec).await.map(drop)
            }
        }
    }

    /// Runs `terraform output` and reads the cluster from it.
    async fn output(&mut self, index: usize) -> Result<Outputs, StepFailure> {
        let output = self
            .tool(index, |state, workspace, request| {
                run_spec(state, workspace, Command::Output, request, true)
            })
            .await?;
        Outputs::parse(&output.stdout).map_err(|error| StepFailure {
            status: JobStatus::Failed,
            error,
            job_id: Some(output.job_id),
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
        })
    }

    /// Runs a terraform step's job.
    async fn tool(
        &mut self,
        index: usize,
        spec: impl FnOnce(&AppState, &Workspace, Value) -> Result<crate::runner::JobSpec, ApiError>,
    ) -> Result<Arc<RunOutput>, StepFailure> {
        let request = json!({ "deploy": self.pipeline.id() });
        let spec = spec(&self.state, &self.workspace, request).map_err(StepFailure::of_request)?;
        self.run_job(index, spec).await
    }

    async fn run_job(
        &mut self,
        index: usize,
        mut spec: crate::runner::JobSpec,
    ) -> Result<Arc<RunOutput>, StepFailure> {
        self.started_by.stamp(&mut spec);
        let handle = self
            .pipeline
            .start(spec)
            .await
            .map_err(|err| StepFailure::of_request(super::submit_error(err)))?;
        // Followers see the step's job (and can stream its log) while it runs.
        self.steps[index].job_id = Some(handle.id);
        self.publish().await;
        let output = self.pipeline.wait(handle).await;
        self.pipeline
            .log(&format!(
                "step {}: job {} {}",
                self.steps[index].name,
                output.job_id,
                output.status.as_str()
            ))
            .await;
        if output.status == JobStatus::Succeeded {
            Ok(output)
        } else {
            Err(StepFailure::of_job(&output))
        }
    }

    /// Ends the deploy at a step that did not succeed.
    async fn end_at(mut self, index: usize, failure: StepFailure) -> PipelineEnd {
        let name = self.steps[index].name.clone();
        let record = &mut self.steps[index];
        record.status = StepStatus::of_job(failure.status);
        record.error = Some(failure.error.clone());
        if failure.job_id.is_some() {
            record.job_id = failure.job_id;
        }
        record
            .finished_at
            .get_or_insert_with(OffsetDateTime::now_utc);
        let error = match failure.status {
            JobStatus::Cancelled => format!("cancelled at step '{name}'"),
            _ => format!("step '{name}' failed: {}", failure.error),
        };
        self.pipeline.log(&error).await;
        let mut progress = self.progress();
        progress.failed_step = Some(name);
        let result = json!(progress);
        self.pipeline.progress(result.clone()).await;
        PipelineEnd {
            status: failure.status,
            result: Some(result),
            error: Some(error),
            stdout_tail: failure.stdout_tail,
            stderr_tail: failure.stderr_tail,
        }
    }

    async fn publish(&self) {
        self.pipeline.progress(json!(self.progress())).await;
    }

    fn progress(&self) -> DeployProgress {
        DeployProgress {
            steps: self.steps.clone(),
            failed_step: None,
            resumed_from: self.resumed_from,
            outputs: self.outputs.as_ref().map(Outputs::masked),
            inventory: self.inventory.clone(),
        }
    }
}

fn cancelled() -> StepFailure {
    StepFailure {
        status: JobStatus::Cancelled,
        error: "cancelled".into(),
        job_id: None,
        stdout_tail: Vec::new(),
        stderr_tail: Vec::new(),
    }
}
