//! The cluster monitor: every few seconds (`CLUSTER_MONITOR_SECONDS`) it
//! probes each configured workspace (keeping the views warm) and records a
//! change of leader as an event, with its cause: an operation of ours
//! (`switchover`, `failover`) or Patroni by itself (`automatic`).

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::probe::cluster_view;
use crate::cluster::{App, list_workspaces};
use crate::store::{ClusterEvent, JobFilter, JobKind};
use crate::workspace::{Holder, Workspace};

/// The leader last seen in a workspace, and since when it leads.
struct Seen {
    leader: String,
    since: OffsetDateTime,
}

/// Runs until the task is dropped.
pub async fn monitor_leaders(app: App, every: Duration) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut probes = tokio::task::JoinSet::new();
        for workspace in watched(&app).await {
            let app = app.clone();
            probes.spawn(async move {
                let view = cluster_view(&app, &workspace).await;
                (workspace, view)
            });
        }
        while let Some(probed) = probes.join_next().await {
            let Ok((workspace, Ok(view))) = probed else {
                continue;
            };
            // No leader now: the change is recorded once a new one leads.
            if let Some(leader) = &view.leader {
                observe(&app, &mut seen, &workspace, leader, view.timeline).await;
            }
        }
    }
}

/// The workspaces with an inventory that no job other than an operation
/// holds (a playbook run restarts members on purpose; a deploy rebuilds).
async fn watched(app: &App) -> Vec<Workspace> {
    let mut watched = Vec::new();
    for info in list_workspaces(app).into_iter().filter(|w| w.configured) {
        let free = match app.runner.locks().holder(&info.name) {
            None => true,
            Some(Holder::FileUpdate) => false,
            Some(Holder::Job(id)) => matches!(
                app.runner.job(id).await,
                Ok(Some(job)) if job.kind.is_cluster_operation()
            ),
        };
        if free {
            watched.push(app.workspace(&info.name));
        }
    }
    watched
}

/// Records a leader different from the last one seen; the first one seen
/// is no change.
async fn observe(
    app: &App,
    seen: &mut HashMap<String, Seen>,
    workspace: &Workspace,
    leader: &str,
    timeline: Option<u64>,
) {
    let now = OffsetDateTime::now_utc();
    if seen
        .get(workspace.name())
        .is_some_and(|s| s.leader == leader)
    {
        return;
    }
    let previous = seen.insert(
        workspace.name().to_string(),
        Seen {
            leader: leader.to_string(),
            since: now,
        },
    );
    let Some(previous) = previous else {
        return;
    };
    let cause = cause(app, workspace, leader, previous.since, now).await;
    tracing::warn!(workspace = workspace.name(), from = %previous.leader, to = leader, cause, "the cluster's leader changed");
    crate::metrics::leader_changed(workspace.name(), cause);
    app.notify(
        crate::cluster::notify::Event::LeaderChanged,
        workspace.name(),
        serde_json::json!({
            "from": previous.leader,
            "to": leader,
            "timeline": timeline,
            "cause": cause,
        }),
    );
    let event = ClusterEvent {
        id: 0,
        workspace: workspace.name().to_string(),
        at: now,
        kind: "leader_changed".into(),
        from: Some(previous.leader),
        to: Some(leader.to_string()),
        timeline,
        cause: cause.into(),
    };
    if let Err(err) = app.runner.store().add_event(event).await {
        tracing::error!(error = %err, "could not record a leader change");
    }
}

/// `switchover`, `failover` or `restore` when such an operation of ours ran
/// while the old leader led (or was scheduled for then) and did not end with another
/// leader than `to`, else `automatic`.
async fn cause(
    app: &App,
    workspace: &Workspace,
    to: &str,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> &'static str {
    for (kind, cause) in [
        (JobKind::ClusterSwitchover, "switchover"),
        (JobKind::ClusterFailover, "failover"),
        (JobKind::ClusterRestart, "switchover"),
        (JobKind::ClusterRestore, "restore"),
    ] {
        let filter = JobFilter {
            workspace: Some(workspace.name().to_string()),
            kind: Some(kind),
            limit: 1,
            ..JobFilter::default()
        };
        let Ok(page) = app.runner.jobs(&filter).await else {
            continue;
        };
        let Some(job) = page.jobs.first() else {
            continue;
        };
        // A restart hands the leader over only when asked to.
        if kind == JobKind::ClusterRestart && job.request["switchover_leader"] != true {
            continue;
        }
        let ran = !job.status.is_finished() || job.finished_at.is_some_and(|t| t >= since);
        let scheduled = job.request["scheduled_at"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .is_some_and(|t| t >= since - Duration::from_secs(10) && t <= now);
        let elsewhere = job
            .result
            .as_ref()
            .is_some_and(|r| r["new_leader"].as_str().is_some_and(|new| new != to));
        if (ran || scheduled) && !elsewhere {
            return cause;
        }
    }
    "automatic"
}
