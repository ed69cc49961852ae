//! `/deploy`: generate → init → plan → apply → output → configure → run as
//! one job with named steps, and `/deploy/resume` to go on from the step a
//! failed deploy stopped at.
//!
//! Everything the steps need is checked before the first one starts, so a
//! bad request changes nothing. The deploy holds the workspace from its
//! first step to its last; each tool step is a job of its own (its log at
//! `/jobs/{id}/log`), and the deploy's result lists the steps as they go.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::ansible::{ConfigureInput, playbook_spec, write_configuration};
use super::terraform::{Tfvars, run_spec};
use super::{PreferAsync, RunAnswer, StartedBy, WorkspaceParam, details};
use crate::domain::PostgresqlVersion;
use crate::error::{ApiError, ApiJson, OptionalJson};
use crate::runner::{Pipeline, PipelineEnd, PipelineSpec, RunOutput};
use crate::startup::AppState;
use crate::store::{JobFilter, JobId, JobKind, JobStatus};
use crate::tools::terraform::{Command, Outputs};
use crate::workspace::Workspace;

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for prefix in ["", "/workspaces/{name}"] {
        router = router
            .route(&format!("{prefix}/deploy"), post(deploy))
            .route(&format!("{prefix}/deploy/resume"), post(resume));
    }
    router
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    /// Terraform variables, as `/terraform/generate` takes them.
    variables: Map<String, Value>,
    /// Key paths and PostgreSQL settings, as `/ansible/configure` takes them.
    configure: Map<String, Value>,
    #[serde(default)]
    postgresql_version: Option<Value>,
    #[serde(default, rename = "async")]
    run_async: bool,
}

/// The body of `/deploy/resume`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeRequest {
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

/// One step as the deploy's result shows it.
#[derive(Clone, Debug, Serialize)]
struct StepRecord {
    name: &'static str,
    /// pending, running, succeeded, failed, cancelled, timed_out or skipped.
    status: &'static str,
    /// The step's tool job (generate and configure's file writes have none,
    /// configure's `terraform output` has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<JobId>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    started_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    finished_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl StepRecord {
    fn new(step: Step, status: &'static str) -> StepRecord {
        StepRecord {
            name: step.name(),
            status,
            job_id: None,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }
}

/// Starts a deploy of the workspace.
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
    workspace.ensure().map_err(ApiError::internal)?;
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
        return RunAnswer {
            success_message: String::new(),
            failure_message: String::new(),
            include_output: false,
            decorate: None,
        }
        .respond(state, handle, true)
        .await;
    }
    let output = handle.wait().await;
    let mut body = match &output.result {
        Some(Value::Object(result)) => result.clone(),
        _ => Map::new(),
    };
    body.insert("job_id".into(), json!(output.job_id));
    if output.status == JobStatus::Succeeded {
        let verb = if resumed_from.is_some() {
            "resumed and completed"
        } else {
            "completed"
        };
        body.insert(
            "message".into(),
            json!(format!("Deploy {verb} successfully")),
        );
        return Ok(Json(Value::Object(body)).into_response());
    }
    // The original tool's failure shape, with the steps.
    let error = match body.get("failed_step").and_then(Value::as_str) {
        Some(step) => format!("Deploy failed at step '{step}'"),
        None => "Deploy failed".to_string(),
    };
    body.insert("error".into(), json!(error));
    body.insert("details".into(), json!(details(&output)));
    body.insert("status".into(), json!(output.status.as_str()));
    Ok((StatusCode::BAD_REQUEST, Json(Value::Object(body))).into_response())
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
    inventory: Option<Value>,
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
            let status = if index < first { "skipped" } else { "pending" };
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
            if self.steps[index].status == "skipped" {
                continue;
            }
            if self.pipeline.cancelled() {
                return self.end_at(index, cancelled()).await;
            }
            self.steps[index].status = "running";
            self.steps[index].started_at = Some(OffsetDateTime::now_utc());
            self.publish().await;
            self.pipeline
                .log(&format!("step {}: started", step.name()))
                .await;
            let outcome = self.step(step, index).await;
            self.steps[index].finished_at = Some(OffsetDateTime::now_utc());
            match outcome {
                Ok(()) => {
                    self.steps[index].status = "succeeded";
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
            result: Some(self.result()),
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
                    .write(&self.state, &self.workspace)
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
                )
                .map_err(StepFailure::of_request)?;
                self.pipeline.log(&format!("inventory: {inventory}")).await;
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
        let name = self.steps[index].name;
        let record = &mut self.steps[index];
        record.status = failure.status.as_str();
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
        let mut result = self.result();
        result["failed_step"] = json!(name);
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
        self.pipeline.progress(self.result()).await;
    }

    fn result(&self) -> Value {
        let mut result = json!({ "steps": self.steps });
        if let Some(previous) = self.resumed_from {
            result["resumed_from"] = json!(previous);
        }
        if let Some(outputs) = &self.outputs {
            result["outputs"] = Value::Object(outputs.masked());
        }
        if let Some(inventory) = &self.inventory {
            result["inventory"] = inventory.clone();
        }
        result
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
