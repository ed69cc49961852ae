//! The backup scheduler: every `BACKUP_SCHEDULER_SECONDS` it looks at each
//! workspace's schedule and starts the backup it calls for.
//!
//! Each tick, a schedule wants the largest type (full > diff > incr) with a
//! fire time since it was last considered, or a backup left waiting for a
//! busy workspace if that is larger: one backup, never one per fire time.
//! Fire times passed while the server was down are caught up on the same way
//! at start-up (the first tick is at once): one backup of the largest type
//! missed. A backup due while the workspace is busy waits (`pending`) and
//! starts on a later tick; one the server refuses (backups not configured,
//! no inventory) is recorded as `last_error` and not tried again.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::schedule::Schedule;
use super::{BackupType, start_backup};
use crate::cluster::{Actor, App, Error};
use crate::store::{JobId, ScheduleFailure, ScheduleRecord, ScheduledRun};
use crate::workspace::Workspace;

/// The name the scheduler's jobs record as `started_by`.
pub const SCHEDULER: &str = "scheduler";

/// Every `every`, starts the backups the schedules call for, until `stop`
/// turns true (a tick in progress ends first). The first tick is at once,
/// which catches up on the fire times missed while the server was down.
pub async fn run_schedules(app: App, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        run_due(&app, OffsetDateTime::now_utc()).await;
    }
}

/// Starts what every schedule calls for at `now` (the clock's time, or a
/// test's), a workspace at a time.
pub async fn run_due(app: &App, now: OffsetDateTime) {
    let records = match app.runner.store().schedules().await {
        Ok(records) => records,
        Err(err) => {
            tracing::warn!(error = %err, "the backup scheduler could not read the schedules");
            return;
        }
    };
    for record in records {
        let workspace = app.workspace(&record.workspace);
        if let Err(err) = run_schedule(app, &workspace, now).await {
            tracing::warn!(workspace = workspace.name(), error = %err, "the backup scheduler could not act on a schedule");
        }
    }
}

/// What came of trying to start a scheduled backup.
#[derive(Debug)]
enum Attempt {
    Started(JobId),
    /// A job or a file update holds the workspace: the backup waits.
    Busy,
    /// Refused for another reason: recorded, not tried again.
    Refused(String),
}

/// Acts on one schedule: reads it again, starts the backup it wants if the
/// workspace is free, and records what came of it. The schedules' lock is
/// held throughout, so a `PUT` or `DELETE` meanwhile is not overwritten.
async fn run_schedule(app: &App, workspace: &Workspace, now: OffsetDateTime) -> Result<(), Error> {
    let _held = app.schedules.lock().await;
    let store = app.runner.store();
    let Some(mut record) = store
        .schedule(workspace.name())
        .await
        .map_err(Error::of_store)?
    else {
        return Ok(());
    };
    if !workspace.exists() {
        return Ok(());
    }
    let schedule = Schedule::of_record(&record).map_err(Error::internal)?;
    let Some(kind) = wanted(&schedule, &record, now) else {
        return Ok(());
    };
    let attempt = if app.runner.locks().holder(workspace.name()).is_some() {
        Attempt::Busy
    } else {
        let actor = Actor {
            name: Some(SCHEDULER.into()),
            ..Actor::default()
        };
        match start_backup(app, workspace, kind, true, &actor).await {
            Ok(handle) => Attempt::Started(handle.id),
            Err(Error::Busy { .. }) => Attempt::Busy,
            Err(err) => Attempt::Refused(reason(&err)),
        }
    };
    let name = workspace.name();
    match &attempt {
        Attempt::Started(job_id) => {
            tracing::info!(workspace = name, kind = kind.as_str(), %job_id, "scheduled backup started");
        }
        Attempt::Busy => {
            tracing::info!(
                workspace = name,
                kind = kind.as_str(),
                "scheduled backup waits: the workspace is busy"
            );
        }
        Attempt::Refused(reason) => {
            tracing::warn!(
                workspace = name,
                kind = kind.as_str(),
                reason,
                "scheduled backup refused"
            );
        }
    }
    record_attempt(&mut record, kind, attempt, now);
    store.put_schedule(record).await.map_err(Error::of_store)
}

/// What a refusal says in `last_error`: a server fault's cause stays in the
/// server's log.
fn reason(err: &Error) -> String {
    match err {
        Error::Internal(_) => "an unexpected error occurred; the server's log has the cause".into(),
        other => other.to_string(),
    }
}

/// The backup a schedule wants at `now`: the larger of the one waiting for
/// the workspace and the largest type due since the schedule was last
/// considered.
fn wanted(schedule: &Schedule, record: &ScheduleRecord, now: OffsetDateTime) -> Option<BackupType> {
    let waiting = record.pending.as_deref().and_then(BackupType::parse);
    let due = schedule.due(record.considered_at, now);
    match (waiting, due) {
        (Some(a), Some(b)) => Some(if size(a) >= size(b) { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Records an attempt at `now`: the fire times up to `now` are acted on; a
/// busy workspace keeps the backup waiting; a start or a refusal ends it.
fn record_attempt(
    record: &mut ScheduleRecord,
    kind: BackupType,
    attempt: Attempt,
    now: OffsetDateTime,
) {
    record.considered_at = record.considered_at.max(now);
    record.pending = None;
    let kind_name = kind.as_str().to_string();
    match attempt {
        Attempt::Busy => record.pending = Some(kind_name),
        Attempt::Started(job_id) => {
            record.last_runs.retain(|run| run.kind != kind_name);
            record.last_runs.push(ScheduledRun {
                kind: kind_name,
                job_id,
                at: now,
            });
            record.last_runs.sort_by_key(|run| {
                std::cmp::Reverse(BackupType::parse(&run.kind).map(size).unwrap_or(0))
            });
            record.last_error = None;
        }
        Attempt::Refused(message) => {
            record.last_error = Some(ScheduleFailure {
                kind: kind_name,
                message,
                at: now,
            });
        }
    }
}

/// Full is larger than diff, diff than incr.
fn size(kind: BackupType) -> u8 {
    match kind {
        BackupType::Full => 3,
        BackupType::Diff => 2,
        BackupType::Incr => 1,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cluster::backup::schedule::tests::{at, record, schedule};

    #[test]
    fn several_types_due_at_once_make_one_backup_of_the_largest() {
        // Sunday 2026-11-29 at 01:00 every type fires.
        let body = json!({"full": "0 1 * * 0", "diff": "0 1 * * 0,3", "incr": "0 1 * * *"});
        let s = schedule(body.clone());
        let before = at("2026-11-29 00:59:50");
        let now = at("2026-11-29 01:00:05");
        assert_eq!(s.due(before, now), Some(BackupType::Full));
        let mut r = record(&body, before);
        assert_eq!(wanted(&s, &r, now), Some(BackupType::Full));
        record_attempt(
            &mut r,
            BackupType::Full,
            Attempt::Started(JobId::new()),
            now,
        );
        // The next tick finds nothing more to do.
        assert_eq!(wanted(&s, &r, at("2026-11-29 01:00:20")), None);
        // Monday: only the incremental.
        assert_eq!(
            wanted(&s, &r, at("2026-11-30 01:00:10")),
            Some(BackupType::Incr)
        );
    }

    #[test]
    fn missed_fire_times_are_coalesced_into_one_backup_of_the_largest_type_missed() {
        // Down from Tuesday 2026-11-24 12:00 to Thursday 2026-11-26 12:00:
        // two daily incrementals and Wednesday's differential were missed,
        // no full (Sundays).
        let body = json!({"full": "0 1 * * 0", "diff": "0 1 * * 3", "incr": "0 1 * * *"});
        let s = schedule(body.clone());
        let down = at("2026-11-24 12:00");
        let up = at("2026-11-26 12:00");
        let mut r = record(&body, down);
        assert_eq!(wanted(&s, &r, up), Some(BackupType::Diff));
        let job = JobId::new();
        record_attempt(&mut r, BackupType::Diff, Attempt::Started(job), up);
        assert_eq!(r.considered_at, up);
        assert_eq!(wanted(&s, &r, up + Duration::from_secs(15)), None);
        assert_eq!(r.last_runs.len(), 1);
        assert_eq!(r.last_runs[0].job_id, job);
        assert_eq!(r.last_runs[0].kind, "diff");

        // Down over a Sunday too: one full.
        let r = record(&body, at("2026-11-28 12:00"));
        assert_eq!(
            wanted(&s, &r, at("2026-12-02 12:00")),
            Some(BackupType::Full)
        );
    }

    #[test]
    fn a_backup_due_while_the_workspace_is_busy_waits_and_starts_once_free() {
        let body = json!({"full": "0 1 * * 0", "incr": "* * * * *"});
        let s = schedule(body.clone());
        let t0 = at("2026-11-24 10:00:30");
        let mut r = record(&body, t0);
        let t1 = at("2026-11-24 10:01:05");
        assert_eq!(wanted(&s, &r, t1), Some(BackupType::Incr));
        record_attempt(&mut r, BackupType::Incr, Attempt::Busy, t1);
        assert_eq!(r.pending.as_deref(), Some("incr"));
        // Still wanted on the next tick though no fire time passed since.
        let t2 = at("2026-11-24 10:01:20");
        assert_eq!(s.due(r.considered_at, t2), None);
        assert_eq!(wanted(&s, &r, t2), Some(BackupType::Incr));
        // Busy across further fire times: still one waiting backup.
        let t3 = at("2026-11-24 10:03:10");
        record_attempt(&mut r, BackupType::Incr, Attempt::Busy, t3);
        assert_eq!(r.pending.as_deref(), Some("incr"));
        // Free: it starts, and nothing waits any more.
        let t4 = at("2026-11-24 10:03:25");
        assert_eq!(wanted(&s, &r, t4), Some(BackupType::Incr));
        record_attempt(&mut r, BackupType::Incr, Attempt::Started(JobId::new()), t4);
        assert_eq!(r.pending, None);
        assert_eq!(wanted(&s, &r, at("2026-11-24 10:03:40")), None);
    }

    #[test]
    fn a_larger_type_due_while_a_smaller_one_waits_replaces_it() {
        let body = json!({"full": "0 1 * * 0", "incr": "* * * * *"});
        let s = schedule(body.clone());
        let mut r = record(&body, at("2026-11-29 00:58:30"));
        record_attempt(
            &mut r,
            BackupType::Incr,
            Attempt::Busy,
            at("2026-11-29 00:59:05"),
        );
        let at_one = at("2026-11-29 01:00:05");
        assert_eq!(wanted(&s, &r, at_one), Some(BackupType::Full));
        record_attempt(&mut r, BackupType::Full, Attempt::Busy, at_one);
        assert_eq!(r.pending.as_deref(), Some("full"));
        // A smaller one due later does not shrink it.
        assert_eq!(
            wanted(&s, &r, at("2026-11-29 01:01:05")),
            Some(BackupType::Full)
        );
    }

    #[test]
    fn a_refused_backup_is_recorded_and_not_tried_again() {
        let body = json!({"full": "0 1 * * *"});
        let s = schedule(body.clone());
        let mut r = record(&body, at("2026-11-24 00:00"));
        let now = at("2026-11-24 01:00:10");
        record_attempt(
            &mut r,
            BackupType::Full,
            Attempt::Refused("backups are not configured".into()),
            now,
        );
        let failure = r.last_error.clone().unwrap();
        assert_eq!(failure.kind, "full");
        assert_eq!(failure.message, "backups are not configured");
        assert_eq!(r.pending, None);
        assert_eq!(wanted(&s, &r, now + Duration::from_secs(15)), None);
        // The next one that starts clears it.
        let next_day = at("2026-11-25 01:00:10");
        record_attempt(
            &mut r,
            BackupType::Full,
            Attempt::Started(JobId::new()),
            next_day,
        );
        assert_eq!(r.last_error, None);
    }
}
