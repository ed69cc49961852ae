//! `/workspaces`: named environments (staging, prod, ...), each with its own
//! stack, tfvars, state, plans, inventory and lock. The run routes act on one
//! under `/workspaces/{name}/...`; the original routes act on `default`.
//! Creating and extending one is self-service (`apply`); lifting its
//! guardrails and deleting it is `admin`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WorkspaceParam;
use crate::auth::Access;
use crate::cluster::{self, Actor, App, NewWorkspace, WorkspaceInfo};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::openapi::WorkspaceNameParam;
use crate::tokens::Scope;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Read).declare(routes!(list_workspaces)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(create_workspace)))
        .routes(Access::Needs(Scope::Read).declare(routes!(get_workspace)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(update_workspace)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(delete_workspace)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(extend_workspace)))
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
    /// Its saved plans wait for another token's approval before apply.
    #[serde(default)]
    approval_required: bool,
    /// When the server destroys it (RFC 3339); without the admin scope at
    /// most `WORKSPACE_MAX_EXTEND_HOURS` ahead.
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<String>,
}

/// The body of `PATCH /workspaces/{name}`: the settings to change. (Read
/// as a map, to tell a null `expires_at` from an absent one.)
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"approval_required": true, "expires_at": "2026-12-31T18:00:00Z"}))]
pub struct UpdateRequest {
    /// Turning it off needs the admin scope.
    approval_required: Option<bool>,
    /// RFC 3339, or null for never (which needs the admin scope).
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<String>,
}

/// The body of `POST /workspaces/{name}/extend`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"hours": 24}))]
pub struct ExtendRequest {
    /// 1 to `WORKSPACE_MAX_EXTEND_HOURS`.
    hours: i64,
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
    responses(
        (status = 200, description = "Every workspace, `default` first", body = WorkspaceList),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn list_workspaces(State(app): State<App>) -> Result<Json<WorkspaceList>, ApiError> {
    Ok(Json(WorkspaceList {
        workspaces: cluster::describe_all(&app).await?,
    }))
}

#[utoipa::path(
    post,
    path = "/workspaces",
    tag = "workspaces",
    summary = "Create a workspace",
    description = "A named environment with its own copy of a stack, tfvars, state, saved plans, \
        inventory and lock. Every run route works on it under `/workspaces/{name}/...`. The \
        caller's token becomes its owner; the token's `workspaces` quota bounds how many it owns.",
    request_body(content = CreateRequest),
    responses(
        (status = 201, description = "Created", body = WorkspaceInfo),
        (status = 400, description = "A bad name, an unknown stack, an expiry in the past or too \
            far ahead (`fields`)", body = ErrorBody),
        (status = 403, description = "The token's `workspaces` quota is used up (`rule`, `quota`)",
            body = ErrorBody),
        (status = 409, description = "The workspace exists, or another request is creating or \
            deleting it", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn create_workspace(
    State(app): State<App>,
    actor: Actor,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), ApiError> {
    let expires_at = request
        .expires_at
        .as_deref()
        .map(cluster::parse_expiry)
        .transpose()?;
    let new = NewWorkspace {
        stack: request.stack,
        approval_required: request.approval_required,
        expires_at,
    };
    let created = cluster::create_workspace(&app, &request.name, new, &actor).await?;
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
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn get_workspace(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    Ok(Json(cluster::describe(&app, &workspace).await?))
}

#[utoipa::path(
    patch,
    path = "/workspaces/{name}",
    tag = "workspaces",
    summary = "Change a workspace's approvals or expiry",
    description = "`approval_required` and `expires_at` (RFC 3339, or null for never). Turning \
        approvals off, removing an expiry or setting one beyond `WORKSPACE_MAX_EXTEND_HOURS` \
        needs the admin scope. A new expiry makes an expired workspace usable again.",
    params(WorkspaceNameParam),
    request_body(content = UpdateRequest),
    responses(
        (status = 200, description = "The workspace as changed", body = WorkspaceInfo),
        (status = 400, description = "A bad value or an unknown setting (`fields`), or a setting \
            of `default`; nothing changed", body = ErrorBody),
        (status = 403, description = "Lifting a guardrail without the admin scope (`rule`)",
            body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn update_workspace(
    State(app): State<App>,
    actor: Actor,
    WorkspaceParam(workspace): WorkspaceParam,
    ApiJson(patch): ApiJson<Map<String, Value>>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    Ok(Json(
        cluster::update_workspace(&app, &workspace, &patch, &actor).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/workspaces/{name}/extend",
    tag = "workspaces",
    summary = "Push a temporary workspace's expiry back",
    description = "Moves `expires_at` `hours` later (from now if it has passed; an expired \
        workspace becomes usable again), at most `WORKSPACE_MAX_EXTEND_HOURS` at a time.",
    params(WorkspaceNameParam),
    request_body(content = ExtendRequest),
    responses(
        (status = 200, description = "The workspace with its new expiry", body = WorkspaceInfo),
        (status = 400, description = "`hours` missing or outside 1 to the maximum", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 409, description = "The workspace does not expire", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn extend_workspace(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    ApiJson(request): ApiJson<ExtendRequest>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    cluster::guardrails::expiry::extend(&app, &workspace, request.hours).await?;
    Ok(Json(cluster::describe(&app, &workspace).await?))
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
