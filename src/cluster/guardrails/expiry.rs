//! Temporary workspaces: at `expires_at` the server destroys the workspace's
//! resources itself (a `destroy` job started by `scheduler`) and marks it
//! expired, its history kept. `workspace.expiring` goes out
//! `WORKSPACE_EXPIRY_WARNING_SECONDS` before. The due dates are in the job
//! store, so expiry survives a restart: the first look is at start-up.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use super::{Policy, policy, save_policy};
use crate::cluster::backup::SCHEDULER;
use crate::cluster::notify::Event;
use crate::cluster::{Actor, App, Error, list_workspaces, start_command};
use crate::domain::RunOptions;
use crate::store::JobStatus;
use crate::tools::terraform::Command;
use crate::workspace::Workspace;

/// A failed expiry destroy is tried again after this long.
const RETRY_AFTER: time::Duration = time::Duration::minutes(5);

/// Every `every`, acts on the workspaces due to expire, until `stop`.
pub async fn run_expiry(app: App, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        for info in list_workspaces(&app) {
            let workspace = app.workspace(&info.name);
            if let Err(err) = expire(&app, &workspace, OffsetDateTime::now_utc()).await {
                tracing::warn!(workspace = info.name, error = %err, "expiry could not act on a workspace");
            }
        }
    }
}

/// Warns, destroys or marks one workspace as its expiry calls for at `now`.
pub async fn expire(app: &App, workspace: &Workspace, now: OffsetDateTime) -> Result<(), Error> {
    let _held = app.guardrails.lock().await;
    let mut current = policy(app, workspace).await?;
    let Some(expires_at) = current.expires_at else {
        return Ok(());
    };
    if current.expired_at.is_some() {
        return Ok(());
    }
    let warning = time::Duration::try_from(app.config.expiry_warning).unwrap_or_default();
    if now >= expires_at - warning && current.warned_for != Some(expires_at) && now < expires_at {
        current.warned_for = Some(expires_at);
        save_policy(app, workspace, &current).await?;
        app.notify(
            Event::WorkspaceExpiring,
            workspace.name(),
            json!({ "expires_at": rfc3339(expires_at), "owner": current.owner }),
        );
        return Ok(());
    }
    if now < expires_at {
        return Ok(());
    }
    // The destroy started earlier: done, running, or to try again.
    if let Some(job_id) = current.destroy_job {
        let job = app.runner.job(job_id).await.map_err(Error::of_store)?;
        match job.map(|j| (j.status, j.finished_at)) {
            Some((status, _)) if !status.is_finished() => return Ok(()),
            Some((JobStatus::Succeeded, _)) => {
                return mark_expired(app, workspace, current, now).await;
            }
            Some((_, Some(ended))) if now - ended < RETRY_AFTER => return Ok(()),
            _ => {}
        }
    }
    // A workspace busy at expiry is destroyed when its job has ended (an
    // apply writes its resources into the state as it ends).
    if app.runner.locks().holder(workspace.name()).is_some() {
        return Ok(());
    }
    if workspace.resource_count() == 0 {
        return mark_expired(app, workspace, current, now).await;
    }
    let options = RunOptions {
        run_async: true,
        confirm: Some(workspace.name().to_string()),
        ..RunOptions::default()
    };
    let actor = Actor {
        name: Some(SCHEDULER.into()),
        ..Actor::default()
    };
    match start_command(app, workspace, Command::Destroy, &options, &actor).await {
        Ok(handle) => {
            tracing::info!(workspace = workspace.name(), job_id = %handle.id, "expired: destroying the workspace's resources");
            current.destroy_job = Some(handle.id);
            save_policy(app, workspace, &current).await?;
            // Marked expired as soon as the destroy ends, not a tick later.
            let (app, workspace) = (app.clone(), workspace.clone());
            tokio::spawn(async move {
                if handle.wait().await.status != JobStatus::Succeeded {
                    return;
                }
                if let Err(err) = destroyed(&app, &workspace).await {
                    tracing::warn!(workspace = workspace.name(), error = %err, "expiry could not mark a workspace expired");
                }
            });
            Ok(())
        }
        Err(Error::Busy { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Marks the workspace expired once expiry's destroy has succeeded (unless
/// it was extended meanwhile).
async fn destroyed(app: &App, workspace: &Workspace) -> Result<(), Error> {
    let _held = app.guardrails.lock().await;
    let current = policy(app, workspace).await?;
    let now = OffsetDateTime::now_utc();
    let due = current.expires_at.is_some_and(|at| at <= now);
    if !due || current.expired_at.is_some() || current.destroy_job.is_none() {
        return Ok(());
    }
    mark_expired(app, workspace, current, now).await
}

async fn mark_expired(
    app: &App,
    workspace: &Workspace,
    mut current: Policy,
    now: OffsetDateTime,
) -> Result<(), Error> {
    current.expired_at = Some(now);
    save_policy(app, workspace, &current).await?;
    tracing::info!(workspace = workspace.name(), "workspace expired");
    app.notify(
        Event::WorkspaceExpired,
        workspace.name(),
        json!({
            "expires_at": current.expires_at.map(rfc3339),
            "expired_at": rfc3339(now),
            "destroy_job_id": current.destroy_job,
            "owner": current.owner,
        }),
    );
    Ok(())
}

/// Moves the workspace's expiry `hours` later (from now if it has passed);
/// an expired workspace becomes usable again. Bounded by
/// `WORKSPACE_MAX_EXTEND_HOURS`.
pub async fn extend(app: &App, workspace: &Workspace, hours: i64) -> Result<Policy, Error> {
    let max = app.config.max_extend_hours;
    if hours < 1 || hours as u64 > max {
        return Err(Error::field(
            "hours",
            format!("must be a whole number from 1 to {max} (WORKSPACE_MAX_EXTEND_HOURS)"),
        ));
    }
    let _held = app.guardrails.lock().await;
    let mut current = policy(app, workspace).await?;
    let Some(expires_at) = current.expires_at else {
        return Err(Error::Conflict(format!(
            "workspace '{}' does not expire: set expires_at with PATCH /workspaces/{} to make \
             it temporary",
            workspace.name(),
            workspace.name()
        )));
    };
    let now = OffsetDateTime::now_utc();
    current.expires_at = Some(expires_at.max(now) + time::Duration::hours(hours));
    current.expired_at = None;
    current.destroy_job = None;
    save_policy(app, workspace, &current).await?;
    Ok(current)
}

/// Refuses work on an expired workspace other than a destroy: its resources
/// are gone, and nothing would take new ones down.
pub async fn check_usable(app: &App, workspace: &Workspace) -> Result<(), Error> {
    let current = policy(app, workspace).await?;
    match current.expired_at {
        Some(at) => Err(Error::Conflict(format!(
            "workspace '{}' expired at {}: extend it (POST /workspaces/{}/extend) to use it again",
            workspace.name(),
            rfc3339(at),
            workspace.name()
        ))),
        None => Ok(()),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}
