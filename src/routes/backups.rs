//! Backups and point-in-time recovery: take a backup, list the repository
//! and its recovery window, restore the cluster to a point of its history,
//! and the schedule the server takes backups on.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PreferAsync, RunReply, WorkspaceParam, reply};
use crate::auth::Access;
use crate::cluster::backup::{
    self, Backup, BackupRequest, Backups, RestoreRequest, Restored, ScheduleRequest, ScheduleView,
};
use crate::cluster::ha::result_of;
use crate::cluster::{Actor, App};
use crate::error::{ApiError, ApiJson, ErrorBody, OptionalJson};
use crate::store::JobId;
use crate::tokens::Scope;

/// The routes act on `default`; `routes::api()` nests the same under
/// `/workspaces/{name}`.
pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Read).declare(routes!(list)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(take)))
        .routes(Access::Needs(Scope::Admin).declare(routes!(restore)))
        .routes(Access::Needs(Scope::Read).declare(routes!(show_schedule)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(set_schedule, delete_schedule)))
}

/// A backup that ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupResult {
    pub message: String,
    pub job_id: JobId,
    #[serde(flatten)]
    pub backup: Backup,
}

/// A restore that ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreResult {
    pub message: String,
    pub job_id: JobId,
    #[serde(flatten)]
    pub restored: Restored,
}

/// The repository's backups, the recovery window and archiving health.
#[utoipa::path(
    get,
    path = "/backups",
    operation_id = "backups_list",
    tag = "backups",
    summary = "Backups, the recovery window and WAL archiving health",
    description = "Runs the read-only playbook `status.yml` (a job of kind `ansible.status`), \
        which reads `pgbackrest info --output=json` and `pg_stat_archiver` on the leader. \
        `recovery_window` is what a restore can reach: from the end of the oldest backup to \
        now while archiving works.",
    responses(
        (status = 200, description = "The repository", body = Backups),
        (status = 400, description = "The status playbook failed (`job_id`, `status`, \
            `details`)", body = ErrorBody),
        (status = 409, description = "No inventory yet, or backups not configured (the stack \
            outputs no `backup_repository`)", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn list(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
) -> Result<Json<Backups>, ApiError> {
    Ok(Json(backup::backups(&app, &workspace, &actor).await?))
}

/// Takes a backup on the leader.
#[utoipa::path(
    post,
    path = "/backups",
    operation_id = "backups_take",
    tag = "backups",
    summary = "Take a full, differential or incremental backup on the leader",
    description = "Runs `backup.yml` (a job of kind `cluster.backup`): `pgbackrest backup` on the \
        member Patroni says leads, into the workspace's stanza. An `incr` or `diff` without a \
        full backup to build on is taken as a full one. The answer names the backup's label.",
    params(PreferAsync),
    request_body(content = Option<BackupRequest>, description = "The body may be omitted"),
    responses(
        (status = 200, description = "The backup taken", body = BackupResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "A bad field (`type`), no vault, or the playbook failed \
            (`job_id`, `status`, `details`)", body = ErrorBody),
        (status = 409, description = "No inventory yet, backups not configured, or the \
            workspace is busy", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn take(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<BackupRequest>,
) -> Result<RunReply<BackupResult>, ApiError> {
    let run_async = request.run_async || prefer_async;
    let kind = request.backup_type()?;
    let handle = backup::start_backup(&app, &workspace, kind, run_async, &actor).await?;
    reply(&app, handle, run_async, "Backup failed", |out| {
        BackupResult {
            message: "Backup done".into(),
            job_id: out.job_id,
            backup: result_of(out),
        }
    })
    .await
}

/// Restores the whole cluster to a point of its history.
#[utoipa::path(
    post,
    path = "/restore",
    operation_id = "backups_restore",
    tag = "backups",
    summary = "Point-in-time recovery of the whole cluster, in place",
    description = "Checks the target against the recovery window first (nothing runs on a \
        refusal), then runs `restore.yml` (a job of kind `cluster.restore`): the present is \
        archived, Patroni stopped everywhere, the leader's data restored with `pgbackrest \
        restore --delta` and recovered to the target, which it promotes on a new timeline; \
        Patroni re-bootstrapped on it and the replicas cloned again. The cluster is healthy \
        when the job succeeds. Writes are refused while it runs: prefer `async`.",
    params(PreferAsync),
    request_body(content = RestoreRequest),
    responses(
        (status = 200, description = "The cluster runs on the restored data", body = RestoreResult),
        (status = 202, response = crate::openapi::Accepted),
        (status = 400, description = "A bad field (`target`, `target.time`, `target.backup`, \
            `target.lsn`, `confirm`), no vault, or the playbook failed (`job_id`, `status`, \
            `details`)", body = ErrorBody),
        (status = 409, description = "A target outside the recovery window (named), an unknown \
            backup label, no backup, no inventory yet, backups not configured, or the workspace \
            is busy",
            body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn restore(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    actor: Actor,
    PreferAsync(prefer_async): PreferAsync,
    OptionalJson(request): OptionalJson<RestoreRequest>,
) -> Result<RunReply<RestoreResult>, ApiError> {
    let run_async = request.run_async || prefer_async;
    let request = RestoreRequest {
        run_async,
        ..request
    };
    let handle = backup::restore(&app, &workspace, &request, &actor).await?;
    reply(&app, handle, run_async, "Restore failed", |out| {
        RestoreResult {
            message: "Restore done".into(),
            job_id: out.job_id,
            restored: result_of(out),
        }
    })
    .await
}

/// `DELETE /backup-schedule`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleDeleted {
    pub message: String,
}

/// Sets the schedule the server takes backups on.
#[utoipa::path(
    put,
    path = "/backup-schedule",
    operation_id = "backup_schedule_set",
    tag = "backups",
    summary = "Set (or replace) the schedule the server takes backups on",
    description = "A cron expression of 5 fields (minute hour day-of-month month day-of-week, no \
        seconds) per backup type, read in `timezone`. The server's scheduler \
        (`BACKUP_SCHEDULER_SECONDS`) starts each backup as a job of kind `cluster.backup` with \
        `started_by: \"scheduler\"`. Several types due at once make one backup, the largest \
        (full > diff > incr); one due while the workspace is busy waits until it is free. Fire \
        times missed while the server was down make one backup of the largest type missed, \
        at start-up. Fire times count from the save; the last runs are kept. Nothing is stored \
        on a refusal.",
    request_body(content = ScheduleRequest),
    responses(
        (status = 200, description = "The schedule, with its next fire times", body = ScheduleView),
        (status = 400, description = "A bad field (`full`, `diff`, `incr`, `timezone`), each \
            named with the reason, or an unknown one", body = ErrorBody),
        (status = 404, description = "No such workspace", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn set_schedule(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
    ApiJson(request): ApiJson<ScheduleRequest>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(
        backup::save_schedule(&app, &workspace, &request).await?,
    ))
}

/// The schedule, its next fire times and what it started.
#[utoipa::path(
    get,
    path = "/backup-schedule",
    operation_id = "backup_schedule_get",
    tag = "backups",
    summary = "The backup schedule, its next fire times and the backups it started",
    description = "`next_runs` holds each type's next fire time (RFC 3339, in the schedule's \
        time zone); `last_runs` the last backup started per type, with its job's status; \
        `pending` a backup waiting for the workspace to be free; `last_error` the last backup \
        the scheduler could not start, and why.",
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "No schedule, or no such workspace", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn show_schedule(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(backup::schedule_of(&app, &workspace).await?))
}

/// Stops the scheduled backups.
#[utoipa::path(
    delete,
    path = "/backup-schedule",
    operation_id = "backup_schedule_delete",
    tag = "backups",
    summary = "Remove the backup schedule",
    description = "No backup starts on it afterwards; a backup it started goes on.",
    responses(
        (status = 200, description = "Removed", body = ScheduleDeleted),
        (status = 404, description = "No schedule, or no such workspace", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn delete_schedule(
    State(app): State<App>,
    WorkspaceParam(workspace): WorkspaceParam,
) -> Result<Json<ScheduleDeleted>, ApiError> {
    backup::delete_schedule(&app, &workspace).await?;
    Ok(Json(ScheduleDeleted {
        message: format!(
            "the backup schedule of workspace '{}' is removed",
            workspace.name()
        ),
    }))
}
