//! HTTP routes. Handlers validate input into domain types and hand tool runs
//! to the runner; none of them spawns a process.

pub mod ansible;
pub mod cluster;
pub mod deploy;
pub mod docs;
pub mod health;
pub mod jobs;
pub mod terraform;
pub mod workspaces;

use std::sync::Arc;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::runner::{JobHandle, JobSpec, RunOutput, SubmitError};
use crate::startup::AppState;
use crate::store::{Job, JobId};
use crate::workspace::{Holder, LockGuard, Workspace};

/// `Prefer: respond-async` (RFC 7240) asks for the asynchronous answer, like
/// `"async": true` in the body.
pub struct PreferAsync(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PreferAsync {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let prefers = parts
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
        Ok(PreferAsync(prefers))
    }
}

/// The header, documented on every run route.
impl utoipa::IntoParams for PreferAsync {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        vec![
            ParameterBuilder::new()
                .name("Prefer")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "`respond-async` asks for the `202` answer, like `\"async\": true` in the body",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .examples(["respond-async"]),
                ))
                .build(),
        ]
    }
}

/// Who made the request (the token's name) and its `x-request-id`, recorded
/// on the jobs it starts.
pub struct StartedBy {
    pub name: Option<String>,
    pub request_id: Option<String>,
}

impl StartedBy {
    pub fn stamp(&self, spec: &mut crate::runner::JobSpec) {
        spec.started_by = self.name.clone();
        spec.request_id = self.request_id.clone();
    }
}

/// Whether the caller may see sensitive values (an authenticated admin).
pub struct SeesSecrets(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SeesSecrets {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(SeesSecrets(
            parts
                .extensions
                .get::<crate::auth::Principal>()
                .is_some_and(crate::auth::Principal::may_see_secrets),
        ))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for StartedBy {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(StartedBy {
            name: parts
                .extensions
                .get::<crate::auth::Principal>()
                .map(|p| p.name.clone()),
            request_id: parts
                .extensions
                .get::<crate::request_id::RequestId>()
                .map(|r| r.0.clone()),
        })
    }
}

/// The workspace a route acts on: `/workspaces/{name}/...`, or `default` for
/// the original routes. An unknown or malformed name is refused.
pub struct WorkspaceParam(pub Workspace);

impl axum::extract::FromRequestParts<AppState> for WorkspaceParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))?;
        let name = params
            .iter()
            .find(|(key, _)| *key == "name")
            .map(|(_, value)| value.to_string());
        let Some(name) = name else {
            return Ok(WorkspaceParam(state.workspace(DEFAULT_WORKSPACE)));
        };
        let name =
            crate::domain::WorkspaceName::parse(&name).map_err(|e| ApiError::field("name", e))?;
        let workspace = state.workspace(name.as_str());
        if !workspace.exists() {
            return Err(ApiError::NotFound(format!(
                "no workspace '{}': create it with POST /workspaces",
                name.as_str()
            )));
        }
        Ok(WorkspaceParam(workspace))
    }
}

/// Maps an error preparing a workspace's files. A `DELETE
/// /workspaces/{name}` can remove the directory between the request's
/// check that the workspace exists and this: that is a 404 like any request
/// for a missing workspace, not a server error.
pub(crate) fn workspace_files_error(workspace: &Workspace) -> impl Fn(std::io::Error) -> ApiError {
    let workspace = workspace.clone();
    move |err| {
        if err.kind() == std::io::ErrorKind::NotFound && !workspace.exists() {
            let name = workspace.name();
            ApiError::NotFound(format!("no workspace '{name}': it was deleted meanwhile"))
        } else {
            ApiError::internal(err)
        }
    }
}

/// The workspace the original routes act on.
pub const DEFAULT_WORKSPACE: &str = crate::workspace::DEFAULT;

impl AppState {
    pub fn workspace(&self, name: &str) -> Workspace {
        Workspace::new(&self.config.data_dir, name)
    }

    /// Where the stacks live: the directory holding `TERRAFORM_DIR`.
    pub fn stacks_root(&self) -> std::path::PathBuf {
        self.config
            .terraform_dir
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| self.config.terraform_dir.clone())
    }

    /// The stack a workspace runs: its own (a directory next to
    /// `TERRAFORM_DIR`), or `TERRAFORM_DIR`.
    pub fn stack_dir(&self, workspace: &Workspace) -> std::path::PathBuf {
        match workspace.stack() {
            Some(stack) => self.stacks_root().join(stack),
            None => self.config.terraform_dir.clone(),
        }
    }

    /// Submits a job, turning a busy workspace into a 409.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobHandle, ApiError> {
        self.runner.submit(spec).await.map_err(submit_error)
    }

    /// Holds the workspace while a request rewrites its files.
    pub fn hold_for_files(&self, workspace: &Workspace) -> Result<LockGuard, ApiError> {
        self.runner
            .locks()
            .acquire(workspace.name(), Holder::FileUpdate)
            .map_err(|holder| busy(workspace.name().to_string(), holder))
    }
}

/// A job that could not start: a busy workspace is a 409.
pub(crate) fn submit_error(err: SubmitError) -> ApiError {
    match err {
        SubmitError::Busy { workspace, holder } => busy(workspace, holder),
        SubmitError::Store(err) => ApiError::internal(err),
    }
}

fn busy(workspace: String, holder: Holder) -> ApiError {
    match holder {
        Holder::Job(job_id) => ApiError::Busy { workspace, job_id },
        Holder::FileUpdate => ApiError::Conflict(format!(
            "workspace '{workspace}' is busy with a file update; retry in a moment"
        )),
    }
}

/// The answer of a run route started with `"async": true` (or
/// `Prefer: respond-async`): `202` with `Location: /jobs/{id}` at once.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedJob {
    pub job_id: JobId,
    /// The job as recorded when it was accepted (queued or running).
    pub job: Job,
}

/// A run route's success: a message, the job, and the tool's standard output
/// when `"output": true` was asked.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"message": "Terraform command 'init' executed successfully",
    "job_id": "3b0c5b4e-8f5d-4c1b-9e0a-2f6d7c8b9a10"}))]
pub struct RunResult {
    pub message: String,
    pub job_id: JobId,
    /// The tool's standard output, with `"output": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub output: Option<String>,
}

/// What a run route answers: the job at once (`202`), or the route's success
/// body once the job has succeeded (`200`).
pub enum RunReply<T> {
    Accepted(Box<AcceptedJob>),
    Finished(T),
}

impl<T: Serialize> IntoResponse for RunReply<T> {
    fn into_response(self) -> Response {
        match self {
            RunReply::Finished(body) => Json(body).into_response(),
            RunReply::Accepted(accepted) => {
                let location = format!("/jobs/{}", accepted.job_id);
                let mut response = (StatusCode::ACCEPTED, Json(*accepted)).into_response();
                response.headers_mut().insert(
                    header::LOCATION,
                    location.parse().expect("a job path is a valid header"),
                );
                response
            }
        }
    }
}

impl AppState {
    /// Answers at once with the job (async), or waits for its end: a job that
    /// did not succeed answers `failure` with its details (the original
    /// tool's shape), a successful one what `done` makes of its output.
    pub async fn reply<T>(
        &self,
        handle: JobHandle,
        run_async: bool,
        failure: impl Into<String>,
        done: impl FnOnce(&RunOutput) -> T,
    ) -> Result<RunReply<T>, ApiError> {
        if run_async {
            let id = handle.id;
            let job = self
                .runner
                .store()
                .get(id)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::internal(format!("job {id} vanished")))?;
            return Ok(RunReply::Accepted(Box::new(AcceptedJob {
                job_id: id,
                job,
            })));
        }
        let output: Arc<RunOutput> = handle.wait().await;
        if output.status != crate::store::JobStatus::Succeeded {
            return Err(ApiError::ToolFailed {
                error: failure.into(),
                details: details(&output),
                job_id: output.job_id,
                status: output.status,
            });
        }
        Ok(RunReply::Finished(done(&output)))
    }
}

/// The failure details: why it ended, stderr, and the end of stdout (Ansible
/// reports task failures on stdout).
pub fn details(output: &RunOutput) -> String {
    let mut parts = Vec::new();
    if let Some(error) = &output.error {
        parts.push(error.clone());
    }
    if !output.stderr_tail.is_empty() {
        parts.push(output.stderr_tail.join("\n"));
    }
    if !output.stdout_tail.is_empty() {
        parts.push(format!(
            "--- last {} lines of stdout ---\n{}",
            output.stdout_tail.len(),
            output.stdout_tail.join("\n")
        ));
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_removed_under_a_request_is_a_404_and_other_errors_stay_500() {
        let data = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(data.path(), "race");
        let not_found = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let status = |err: ApiError| err.into_response().status();

        // Gone: as if DELETE /workspaces/race ran meanwhile.
        let gone = workspace_files_error(&workspace)(not_found());
        assert_eq!(status(gone), StatusCode::NOT_FOUND);

        // Still there: a missing file is the server's problem.
        workspace.create("stack").unwrap();
        assert!(workspace.exists());
        let missing = workspace_files_error(&workspace)(not_found());
        assert_eq!(status(missing), StatusCode::INTERNAL_SERVER_ERROR);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            status(workspace_files_error(&workspace)(denied)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
