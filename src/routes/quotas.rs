//! `/quotas`: how many workspaces and database hosts each token may hold.
//! Set by an admin; creating a workspace or generating variables beyond a
//! quota is refused with `403`.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Access;
use crate::cluster::App;
use crate::cluster::guardrails::quotas::{self, Quota, QuotaUse};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::tokens::Scope;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Read).declare(routes!(list_quotas)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(set_quota, delete_quota)))
}

/// Every quota, by token name.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaList {
    pub quotas: Vec<QuotaUse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaDeleted {
    pub message: String,
}

/// A token's name in `API_TOKENS`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct TokenNameParam {
    /// 1-64 letters, digits, `-`, `_` or `.`.
    token_name: String,
}

#[utoipa::path(
    get,
    path = "/quotas",
    tag = "quotas",
    summary = "Every token's quota and use",
    responses(
        (status = 200, description = "The quotas with what each token uses now", body = QuotaList),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn list_quotas(State(app): State<App>) -> Result<Json<QuotaList>, ApiError> {
    Ok(Json(QuotaList {
        quotas: quotas::list_quotas(&app).await?,
    }))
}

#[utoipa::path(
    put,
    path = "/quotas/{token_name}",
    tag = "quotas",
    summary = "Set a token's quota",
    description = "`workspaces`: how many workspaces the token may own (it creates them); \
        `db_hosts`: the database hosts (1 + `replica_count` each) its workspaces may hold \
        together. A limit left out or null is no limit. Replaces the token's quota.",
    params(TokenNameParam),
    request_body(content = Quota, example = json!({"workspaces": 2, "db_hosts": 6})),
    responses(
        (status = 200, description = "The quota and the token's use", body = QuotaUse),
        (status = 400, description = "A negative or fractional limit, an unknown one, or none \
            (`fields`); nothing changed", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn set_quota(
    State(app): State<App>,
    Path(token): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<QuotaUse>, ApiError> {
    let quota = quotas::parse_quota(&body)?;
    Ok(Json(quotas::set_quota(&app, &token, &quota).await?))
}

#[utoipa::path(
    delete,
    path = "/quotas/{token_name}",
    tag = "quotas",
    summary = "Remove a token's quota",
    params(TokenNameParam),
    responses(
        (status = 200, description = "Removed: the token has no limits", body = QuotaDeleted),
        (status = 400, description = "Not a token name", body = ErrorBody),
        (status = 404, description = "The token has no quota", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn delete_quota(
    State(app): State<App>,
    Path(token): Path<String>,
) -> Result<Json<QuotaDeleted>, ApiError> {
    if !quotas::delete_quota(&app, &token).await? {
        return Err(ApiError::NotFound(format!("token '{token}' has no quota")));
    }
    Ok(Json(QuotaDeleted {
        message: format!("quota of token '{token}' removed"),
    }))
}
