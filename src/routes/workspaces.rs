//! `/workspaces`: named environments (staging, prod, ...), each with its own
//! stack, tfvars, state, plans, inventory and lock. The run routes act on one
//! under `/workspaces/{name}/...`; the original routes act on `default`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WorkspaceParam;
use crate::auth::Access;
use crate::cluster::{self, App, WorkspaceInfo};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::openapi::WorkspaceNameParam;
use crate::tokens::Scope;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Admin).declare(routes!(list_workspaces, create_workspace)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(get_workspace, delete_workspace)))
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

#[utoipa::path(
    get,
    path = "/workspaces",
    tag = "workspaces",
    summary = "List the workspaces",
    responses((status = 200, description = "Every workspace, `default` first", body = WorkspaceList))
)]
async fn list_workspaces(State(app): State<App>) -> Json<WorkspaceList> {
    Json(WorkspaceList {
        workspaces: cluster::list_workspaces(&app),
    })
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
    State(app): State<App>,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), ApiError> {
    let created = cluster::create_workspace(&app, &request.name, request.stack).await?;
    Ok((StatusCode::CREATED, Json(created)))
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
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Json<WorkspaceInfo> {
    Json(cluster::describe(&app, &workspace))
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
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Result<Json<Deleted>, ApiError> {
    cluster::delete_workspace(&app, &workspace).await?;
    Ok(Json(Deleted {
        message: format!("workspace '{}' deleted", workspace.name()),
    }))
}
