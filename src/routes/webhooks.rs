//! `/webhooks`: URLs told of jobs' ends, approvals, expiring workspaces and
//! leader changes by a signed POST. Every route needs `admin`, reads too:
//! they show where the server sends what happens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Access;
use crate::cluster::webhooks::{self, Delivery, NewWebhook, Webhook};
use crate::cluster::{Actor, App};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::tokens::Scope;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Admin).declare(routes!(list_webhooks, create_webhook)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(delete_webhook)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(list_deliveries)))
}

/// The webhook a route names.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct WebhookIdParam {
    /// The webhook's id (a UUID).
    id: String,
}

/// Every webhook, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// A webhook's recent deliveries (the last 100), newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

/// `DELETE /webhooks/{id}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub message: String,
}

#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    summary = "List the webhooks",
    description = "Secrets are shown as `********`.",
    responses(
        (status = 200, description = "Every webhook, oldest first", body = WebhookList),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn list_webhooks(State(app): State<App>) -> Result<Json<WebhookList>, ApiError> {
    Ok(Json(WebhookList {
        webhooks: webhooks::list_webhooks(&app).await?,
    }))
}

#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    summary = "Create a webhook",
    description = "Each event it subscribes to is POSTed to `url` as JSON, signed with \
        `X-Pgcluster-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>`, and \
        retried with a doubling wait until a `2xx` answer (`WEBHOOK_MAX_ATTEMPTS` tries). \
        Events: `job.finished`, `approval.requested`, `approval.decided`, \
        `workspace.expiring`, `workspace.expired`, `cluster.leader_changed`. The secret is \
        never shown again.",
    request_body(content = NewWebhook),
    responses(
        (status = 201, description = "Created", body = Webhook),
        (status = 400, description = "A refused `url` (not http(s), malformed, link-local), \
            `events` (empty, unknown), `secret` (not 16-256 characters) or `workspace` \
            (`fields`); nothing is stored", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn create_webhook(
    State(app): State<App>,
    actor: Actor,
    ApiJson(request): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    let created = webhooks::create_webhook(&app, request, actor.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook",
    description = "Its deliveries are forgotten; one waiting to be retried is not tried again.",
    params(WebhookIdParam),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn delete_webhook(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    webhooks::delete_webhook(&app, &id).await?;
    Ok(Json(Deleted {
        message: format!("webhook '{id}' deleted"),
    }))
}

#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's recent deliveries",
    description = "The last 100, newest first: each with its tries (status code or error) and \
        its state, `pending`, `delivered` or `failed`.",
    params(WebhookIdParam),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn list_deliveries(
    State(app): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    Ok(Json(DeliveryList {
        deliveries: webhooks::list_deliveries(&app, &id).await?,
    }))
}
