//! High availability under `/cluster`: the current primary, the Patroni
//! operations (switchover, failover, restart, reinit) as jobs, and the
//! leader changes the monitor recorded.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PreferAsync, RunReply, WorkspaceParam, reply};
use crate::auth::Access;
use crate::cluster::ha::{
    self, FailoverRequest, LeaderChange, Operation, ReinitRequest, Reinitialized, RestartRequest,
    Restarted, SwitchoverRequest,
};
use crate::cluster::{self, Actor, App, Primary};
use crate::error::{ApiError, ApiQuery, ErrorBody, OptionalJson};
use crate::store::{ClusterEvent, JobId};
use crate::tokens::Scope;

/// The routes act on `default`; `routes::api()` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Read).declare(routes!(primary)))
        .routes(Access::Needs(Scope::Read).declare(routes!(events)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(switchover)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(failover)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(restart)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(reinit)))
}

/// The current leader, from Patroni's REST API through the bastion.
#[utoipa::path(
    get,
    path = "/cluster/primary",
    operation_id = "cluster_primary",
    tag = "cluster",
    summary = "The member to write to now",
    description = "Asks every member's Patroni (`/primary`, `/cluster`) through the bastion, or \
        answers a view younger than a second. Answers within 2 s.",
    responses(
        (status = 200, description = "The leader", body = Primary),
        (status = 409, description = "No inventory yet: configure (or deploy) first",
            body = ErrorBody),
        (status = 503, response = crate::openapi::ClusterUnavailable),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn primary(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Result<Json<Primary>, ApiError> {
    Ok(Json(cluster::primary(&app, &workspace).await?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// At most this many, newest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /cluster/events`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<ClusterEvent>,
}

/// Leader changes the cluster monitor saw, newest first.
#[utoipa::path(
    get,
    path = "/cluster/events",
    operation_id = "cluster_events",
    tag = "cluster",
    summary = "Leader changes, newest first, with their cause",
    description = "Recorded by the cluster monitor (`CLUSTER_MONITOR_SECONDS`): `cause` is \
        `switchover`, `failover` or `restore` when an operation of this server caused the change, \
        `automatic` when Patroni did it by itself.",
    params(EventsQuery),
    responses(
        (status = 200, description = "The events", body = EventList),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn events(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let events = cluster::cluster_events(&app, &workspace, limit).await?;
    Ok(Json(EventList { events }))
}

/// A switchover or failover that ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderChangeResult {
    pub message: String,
    pub job_id: JobId,
    #[serde(flatten)]
    pub change: LeaderChange,
}

/// A restart that ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestartResult {
    pub message: String,
    pub job_id: JobId,
    #[serde(flatten)]
    pub restart: Restarted,
}

/// A reinit that ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReinitResult {
    pub message: String,
    pub job_id: JobId,
    #[serde(flatten)]
    pub reinit: Reinitialized,
}

/// Hands the leader's role to a replica (Patroni's `/switchover`).
#[utoipa::path(
    post,
    path = "/cluster/switchover",
    operation_id = "cluster_switchover",
    tag = "cluster",
    summary = "Hand the leader's role to a replica",
    description = "Checks the cluster first (a leader, every member running, a candidate within \
        `maximum_lag_on_failover`), then runs `operate.yml` (a job of kind \
        `cluster.switchover`), which calls Patroni's `POST /switchover` from a database host and \
        measures the time no member accepted writes.",
    params(PreferAsync),
    request_body(content = Option<SwitchoverRequest>, description = "The body may be omitted"),
    responses(
        (status = 200, description = "Switched over (or scheduled)", body = LeaderChangeResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "A bad field (`candidate`, `scheduled_at`), no vault, or the \
            playbook failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No inventory, no leader, a member not running, a candidate \
            that lags or is not running, or the workspace is busy", body = ErrorBody),
        (status = 503, response = crate::openapi::ClusterUnavailable),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn switchover(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<SwitchoverRequest>,
) -> Result<RunReply<LeaderChangeResult>, ApiError> {
    let run_async = request.run_async || prefer_async;
    let operation = Operation::switchover(&request, OffsetDateTime::now_utc())?;
    let handle = ha::operate(&app, &workspace, operation, run_async, &actor).await?;
    reply(&app, handle, run_async, "Switchover failed", |out| {
        let change: LeaderChange = ha::result_of(out);
        LeaderChangeResult {
            message: match change.scheduled_at {
                Some(_) => "Switchover scheduled".into(),
                None => "Switchover done".into(),
            },
            job_id: out.job_id,
            change,
        }
    })
    .await
}

/// Promotes a replica when there is no healthy leader (Patroni's `/failover`).
#[utoipa::path(
    post,
    path = "/cluster/failover",
    operation_id = "cluster_failover",
    tag = "cluster",
    summary = "Promote a replica when the cluster has no healthy leader",
    description = "For a cluster without a healthy leader only (else: switchover). `confirm` \
        must be the workspace's name. Runs `operate.yml` (a job of kind `cluster.failover`).",
    params(PreferAsync),
    request_body(content = FailoverRequest),
    responses(
        (status = 200, description = "The candidate leads", body = LeaderChangeResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "A bad field (`candidate`, `confirm`), no vault, or the \
            playbook failed (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No inventory, a healthy leader (use switchover), a \
            candidate not running, or the workspace is busy", body = ErrorBody),
        (status = 503, response = crate::openapi::ClusterUnavailable),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn failover(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<FailoverRequest>,
) -> Result<RunReply<LeaderChangeResult>, ApiError> {
    let run_async = request.run_async || prefer_async;
    let operation = Operation::failover(&request, workspace.name())?;
    let handle = ha::operate(&app, &workspace, operation, run_async, &actor).await?;
    reply(&app, handle, run_async, "Failover failed", |out| {
        LeaderChangeResult {
            message: "Failover done".into(),
            job_id: out.job_id,
            change: ha::result_of(out),
        }
    })
    .await
}

/// Restarts PostgreSQL on the members, one at a time (Patroni's `/restart`).
#[utoipa::path(
    post,
    path = "/cluster/restart",
    operation_id = "cluster_restart",
    tag = "cluster",
    summary = "Restart members one at a time, replicas first, the leader last",
    description = "Runs `operate.yml` (a job of kind `cluster.restart`): each member in turn is \
        restarted through Patroni and waited for (`running`, no pending restart). The leader is \
        restarted in place, or first hands over to a healthy replica with \
        `\"switchover_leader\": true`. With `pending_only` (the default) members without pending \
        settings are left alone.",
    params(PreferAsync),
    request_body(content = Option<RestartRequest>, description = "The body may be omitted"),
    responses(
        (status = 200, description = "The members restarted, in order", body = RestartResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "A bad field (`member`), no vault, or the playbook failed \
            (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No inventory, no leader, a member whose Patroni does not \
            answer, or the workspace is busy", body = ErrorBody),
        (status = 503, response = crate::openapi::ClusterUnavailable),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn restart(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<RestartRequest>,
) -> Result<RunReply<RestartResult>, ApiError> {
    let run_async = request.run_async || prefer_async;
    let operation = Operation::restart(&request)?;
    let handle = ha::operate(&app, &workspace, operation, run_async, &actor).await?;
    reply(&app, handle, run_async, "Restart failed", |out| {
        RestartResult {
            message: "Restart done".into(),
            job_id: out.job_id,
            restart: ha::result_of(out),
        }
    })
    .await
}

/// Rebuilds a replica from the leader (Patroni's `/reinitialize`).
#[utoipa::path(
    post,
    path = "/cluster/reinit",
    operation_id = "cluster_reinit",
    tag = "cluster",
    summary = "Rebuild a replica from the leader",
    description = "Runs `operate.yml` (a job of kind `cluster.reinit`): Patroni wipes the \
        member's data and clones it from the leader again; the job waits until it runs.",
    params(PreferAsync),
    request_body(content = ReinitRequest),
    responses(
        (status = 200, description = "The member runs again", body = ReinitResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "A bad field (`member`), no vault, or the playbook failed \
            (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No inventory, no leader, the member is the leader, or the \
            workspace is busy", body = ErrorBody),
        (status = 503, response = crate::openapi::ClusterUnavailable),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn reinit(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<ReinitRequest>,
) -> Result<RunReply<ReinitResult>, ApiError> {
    let run_async = request.run_async || prefer_async;
    let operation = Operation::reinit(&request)?;
    let handle = ha::operate(&app, &workspace, operation, run_async, &actor).await?;
    reply(&app, handle, run_async, "Reinit failed", |out| {
        ReinitResult {
            message: "Reinit done".into(),
            job_id: out.job_id,
            reinit: ha::result_of(out),
        }
    })
    .await
}
