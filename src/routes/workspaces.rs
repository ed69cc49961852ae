//! `/workspaces`: named environments (staging, prod, ...), each with its own
//! stack, tfvars, state, plans, inventory and lock. The run routes act on one
//! under `/workspaces/{name}/...`; the original routes act on `default`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DEFAULT_WORKSPACE, WorkspaceParam};
use crate::domain::{StackVariables, WorkspaceName};
use crate::error::{ApiError, ApiJson};
use crate::startup::AppState;
use crate::workspace::{Holder, Workspace};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces", get(list_workspaces).post(create_workspace))
        .route(
            "/workspaces/{name}",
            get(get_workspace).delete(delete_workspace),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    /// A stack directory next to `TERRAFORM_DIR` (`aws`, `local`); default:
    /// the one `TERRAFORM_DIR` names.
    stack: Option<String>,
}

fn describe(state: &AppState, workspace: &Workspace) -> Value {
    let stack_dir = state.stack_dir(workspace);
    let holder = match state.runner.locks().holder(workspace.name()) {
        Some(Holder::Job(id)) => json!(id),
        Some(Holder::FileUpdate) => json!("file update"),
        None => Value::Null,
    };
    json!({
        "name": workspace.name(),
        "stack": stack_dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "resources": workspace.resource_count(),
        "configured": workspace.ansible_dir().join("hosts.ini").is_file(),
        "busy_with": holder,
    })
}

async fn list_workspaces(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
    let workspaces: Vec<Value> = names
        .iter()
        .map(|n| describe(&state, &state.workspace(n)))
        .collect();
    Ok(Json(json!({ "workspaces": workspaces })))
}

async fn create_workspace(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Response, ApiError> {
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
    if workspace.exists() {
        return Err(ApiError::Conflict(format!(
            "workspace '{}' already exists",
            name.as_str()
        )));
    }
    workspace.create(&stack).map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(describe(&state, &workspace))).into_response())
}

/// Directories next to `TERRAFORM_DIR` whose `*.tf` declare variables.
fn known_stacks(state: &AppState) -> Vec<String> {
    let mut stacks: Vec<String> = std::fs::read_dir(state.stacks_root())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter(|e| {
                    StackVariables::from_dir(&e.path()).is_ok_and(|s| !s.variables.is_empty())
                })
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    stacks.sort();
    stacks
}

async fn get_workspace(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Json<Value> {
    Json(describe(&state, &workspace))
}

/// Refused while the workspace's state still holds resources (destroy
/// first) or a job holds it.
async fn delete_workspace(
    State(state): State<AppState>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Result<Json<Value>, ApiError> {
    if workspace.name() == DEFAULT_WORKSPACE {
        return Err(ApiError::field(
            "name",
            "the default workspace cannot be deleted",
        ));
    }
    let _hold = state.hold_for_files(&workspace)?;
    let resources = workspace.resource_count();
    if resources > 0 {
        return Err(ApiError::Conflict(format!(
            "workspace '{}' still has {resources} resources in its state: destroy them first (POST /workspaces/{}/terraform/destroy)",
            workspace.name(),
            workspace.name()
        )));
    }
    workspace.remove().map_err(ApiError::internal)?;
    Ok(Json(json!({
        "message": format!("workspace '{}' deleted", workspace.name()),
    })))
}
