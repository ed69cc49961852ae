//! `GET /cluster`: the hosts and each replica's replication state and lag,
//! read from the cluster itself (PostgreSQL's own views, through the
//! bastion) by a read-only playbook.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WorkspaceParam;
use crate::auth::Access;
use crate::cluster::{self, Actor, App, ClusterStatus};
use crate::domain::PostgresqlVersion;
use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::tokens::Scope;

/// The route acts on `default`; `routes::api()` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(Access::Needs(Scope::Read).declare(routes!(cluster_status)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ClusterQuery {
    /// The PostgreSQL major version on the hosts (10-30); by default the
    /// version of the workspace's last successful run.
    #[param(value_type = Option<u8>, minimum = 10, maximum = 30)]
    postgresql_version: Option<String>,
}

/// The cluster's replication state, read from PostgreSQL on every host.
#[utoipa::path(
    get,
    path = "/cluster",
    operation_id = "cluster_status",
    tag = "cluster",
    summary = "Hosts and each replica's replication state and lag, read from the cluster",
    description = "Runs the read-only playbook `status.yml` (a job of kind `ansible.status`, no \
        vault, no lock) against the workspace's inventory: `pg_stat_replication` and the slots on \
        the primary, recovery state, LSNs and the WAL receiver on each replica.",
    params(ClusterQuery),
    responses(
        (status = 200, description = "The cluster's state (`healthy` false names the problems)",
            body = ClusterStatus),
        (status = 400, description = "A bad parameter, or the status playbook failed (`job_id`, \
            `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No inventory yet: configure (or deploy) first",
            body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn cluster_status(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    ApiQuery(query): ApiQuery<ClusterQuery>,
) -> Result<Json<Value>, ApiError> {
    let version = match &query.postgresql_version {
        Some(raw) => Some(
            PostgresqlVersion::parse(&json!(raw))
                .map_err(|e| ApiError::field("postgresql_version", e))?,
        ),
        None => None,
    };
    let body = cluster::cluster_status(&app, &workspace, version, &actor).await?;
    Ok(Json(Value::Object(body)))
}
