//! `/workspaces`: named environments (staging, prod, ...), each with its own
//! stack, tfvars, state, plans, inventory and lock. The run routes act on one
//! under `/workspaces/{name}/...`; the original routes act on `default`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{DEFAULT_WORKSPACE, WorkspaceParam};
use crate::domain::WorkspaceName;
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::startup::AppState;
use crate::workspace::{Holder, Workspace, off_runtime};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(get_workspace, delete_workspace))
}

/// The workspace a route names: `/workspaces/{name}`. `startup` adds the
/// same parameter to every run route nested under it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct WorkspaceNameParam {
    /// 1-32 lowercase letters, digits or `-`, starting with a letter
    /// (`default` is the workspace of the original routes).
    #[param(pattern = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", example = "default")]
    name: String,
}

/// The body of `POST /workspaces`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "staging", "stack": "aws"}))]
pub struct CreateRequest {
    /// 1-32 lowercase letters, digits or `-`, starting with a letter.
    #[schema(pattern = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")]
    name: String,
    /// A stack directory next to `TERRAFORM_DIR` (`aws`, `local`); default:
    /// the one `TERRAFORM_DIR` names.
    stack: Option<String>,
}

/// A workspace and what is in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceInfo {
    pub name: String,
    /// The stack it runs (a directory next to `TERRAFORM_DIR`).
    pub stack: Option<String>,
    /// Resources in its terraform state.
    pub resources: usize,
    /// Whether `configure` has written its inventory.
    pub configured: bool,
    /// The job holding it (its id), `file update`, or null when idle.
    pub busy_with: Option<String>,
}

/// Every workspace, `default` first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceInfo>,
}

/// `DELETE /workspaces/{name}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub message: String,
}

fn describe(state: &AppState, workspace: &Workspace) -> WorkspaceInfo {
    let stack_dir = state.stack_dir(workspace);
    let busy_with = match state.runner.locks().holder(workspace.name()) {
        Some(Holder::Job(id)) => Some(id.to_string()),
        Some(Holder::FileUpdate) => Some("file update".to_string()),
        None => None,
    };
    WorkspaceInfo {
        name: workspace.name().to_string(),
        stack: stack_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        resources: workspace.resource_count(),
        configured: workspace.ansible_dir().join("hosts.ini").is_file(),
        busy_with,
    }
}

#[utoipa::path(
    get,
    path = "/workspaces",
    tag = "workspaces",
    summary = "List the workspaces",
    responses((status = 200, description = "Every workspace, `default` first", body = WorkspaceList))
)]
async fn list_workspaces(State(state): State<AppState>) -> Json<WorkspaceList> {
    let mut names = vec![DEFAULT_WORKSPACE.to_string()];
    if let Ok(entries) = std::fs::read_dir(state.config.data_dir.join("workspaces")) {
        let mut others: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| n != DEFAULT_WORKSPACE && WorkspaceName::parse(n).is_ok())
            .filter(|n| state.workspace(n).exists())
            .collect();
        others.sort();
        names.extend(others);
    }
    let workspaces = names
        .iter()
        .map(|n| describe(&state, &state.workspace(n)))
        .collect();
    Json(WorkspaceList { workspaces })
}

#[utoipa::path(
    post,
    path = "/workspaces",
    tag = "workspaces",
    summary = "Create a workspace",
    description = "A named environment with its own copy of a stack, tfvars, state, saved plans, \
        inventory and lock. Every run route works on it under `/workspaces/{name}/...`.",
    request_body(content = CreateRequest),
    responses(
        (status = 201, description = "Created", body = WorkspaceInfo),
        (status = 400, description = "A bad name or an unknown stack (`fields`)", body = ErrorBody),
        (status = 409, description = "The workspace exists, or another request is creating or \
            deleting it", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn create_workspace(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), ApiError> {
    let name = WorkspaceName::parse(&request.name).map_err(|e| ApiError::field("name", e))?;
    let stack = match request.stack {
        Some(stack) => stack,
        None => state
            .config
            .terraform_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ApiError::internal("TERRAFORM_DIR has no name"))?,
    };
    let known = known_stacks(&state);
    if !known.contains(&stack) {
        return Err(ApiError::field(
            "stack",
            format!("must be one of: {}", known.join(", ")),
        ));
    }
    let workspace = state.workspace(name.as_str());
    // Held like a delete holds it: two requests creating the same name (or
    // one deleting it) take turns, and only one of them creates it. The hold
    // goes with the write, kept until it is done even if the client leaves.
    let hold = state.hold_for_files(&workspace)?;
    if workspace.exists() {
        return Err(ApiError::Conflict(format!(
            "workspace '{}' already exists",
            name.as_str()
        )));
    }
    let created = off_runtime({
        let state = state.clone();
        move || {
            let _hold = hold;
            workspace.create(&stack)?;
            // Described before the hold goes, as this request leaves it: not
            // busy. (Described after, it could show the hold of the next
            // request for the name, one about to answer 409.)
            Ok(WorkspaceInfo {
                busy_with: None,
                ..describe(&state, &workspace)
            })
        }
    })
    .await
    .map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Directories next to `TERRAFORM_DIR` whose `*.tf` declare variables.
fn known_stacks(state: &AppState) -> Vec<String> {
    let mut stacks: Vec<String> = std::fs::read_dir(state.stacks_root())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter(|e| {
                    state
                        .stacks
                        .get(&e.path())
                        .is_ok_and(|s| !s.variables.is_empty())
                })
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    stacks.sort();
    stacks
}

#[utoipa::path(
    get,
    path = "/workspaces/{name}",
    tag = "workspaces",
    summary = "One workspace",
    params(WorkspaceNameParam),
    responses(
        (status = 200, description = "The workspace", body = WorkspaceInfo),
        (status = 400, description = "Not a workspace name", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
    )
)]
async fn get_workspace(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Json<WorkspaceInfo> {
    Json(describe(&state, &workspace))
}

/// Refused while the workspace's state still holds resources (destroy
/// first) or a job holds it.
#[utoipa::path(
    delete,
    path = "/workspaces/{name}",
    tag = "workspaces",
    summary = "Delete a workspace",
    description = "Refused while its state holds resources (destroy first) or a job holds it. \
        `default` cannot be deleted.",
    params(WorkspaceNameParam),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 400, description = "Not a workspace name, or `default`", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "Resources remain in its state, or it is busy", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn delete_workspace(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Result<Json<Deleted>, ApiError> {
    if workspace.name() == DEFAULT_WORKSPACE {
        return Err(ApiError::field(
            "name",
            "the default workspace cannot be deleted",
        ));
    }
    let hold = state.hold_for_files(&workspace)?;
    let resources = workspace.resource_count();
    if resources > 0 {
        return Err(ApiError::Conflict(format!(
            "workspace '{}' still has {resources} resources in its state: destroy them first (POST /workspaces/{}/terraform/destroy)",
            workspace.name(),
            workspace.name()
        )));
    }
    // A whole tree (providers, state, plans): on the blocking pool, held
    // until it is gone even if the client leaves.
    let removing = workspace.clone();
    off_runtime(move || {
        let _hold = hold;
        removing.remove()
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(Deleted {
        message: format!("workspace '{}' deleted", workspace.name()),
    }))
}
