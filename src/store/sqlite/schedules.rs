//! The backup schedules: one row per workspace, replaced whole.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{from_ts, ts};
use crate::store::{ScheduleRecord, StoreError};

const COLUMNS: &str = r#"workspace, "full", diff, incr, timezone, saved_at, considered_at,
    pending, last_runs, last_error"#;

pub(super) fn put(conn: &mut Connection, schedule: &ScheduleRecord) -> Result<(), StoreError> {
    let json = |value: Result<String, serde_json::Error>| {
        value.map_err(|e| StoreError::Other(format!("a schedule's state: {e}")))
    };
    let last_runs = json(serde_json::to_string(&schedule.last_runs))?;
    let last_error = match &schedule.last_error {
        Some(failure) => Some(json(serde_json::to_string(failure))?),
        None => None,
    };
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO backup_schedules ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            schedule.workspace,
            schedule.full,
            schedule.diff,
            schedule.incr,
            schedule.timezone,
            ts(schedule.saved_at),
            ts(schedule.considered_at),
            schedule.pending,
            last_runs,
            last_error,
        ],
    )?;
    Ok(())
}

pub(super) fn get(
    conn: &mut Connection,
    workspace: &str,
) -> Result<Option<ScheduleRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM backup_schedules WHERE workspace = ?1"
    ))?;
    Ok(stmt.query_row([workspace], from_row).optional()?)
}

pub(super) fn list(conn: &mut Connection) -> Result<Vec<ScheduleRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM backup_schedules ORDER BY workspace"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn delete(conn: &mut Connection, workspace: &str) -> Result<bool, StoreError> {
    let deleted = conn.execute(
        "DELETE FROM backup_schedules WHERE workspace = ?1",
        [workspace],
    )?;
    Ok(deleted > 0)
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    // The state is the server's own JSON: unreadable, it is as if empty.
    let last_runs: String = row.get(8)?;
    let last_error: Option<String> = row.get(9)?;
    Ok(ScheduleRecord {
        workspace: row.get(0)?,
        full: row.get(1)?,
        diff: row.get(2)?,
        incr: row.get(3)?,
        timezone: row.get(4)?,
        saved_at: from_ts(row.get(5)?),
        considered_at: from_ts(row.get(6)?),
        pending: row.get(7)?,
        last_runs: serde_json::from_str(&last_runs).unwrap_or_default(),
        last_error: last_error.and_then(|text| serde_json::from_str(&text).ok()),
    })
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use crate::store::sqlite::SqliteStore;
    use crate::store::{JobId, JobStore, ScheduleFailure, ScheduleRecord, ScheduledRun};

    fn schedule(workspace: &str) -> ScheduleRecord {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        ScheduleRecord {
            workspace: workspace.into(),
            full: "0 1 * * 0".into(),
            diff: None,
            incr: Some("0 1 * * 1-6".into()),
            timezone: "Europe/Paris".into(),
            saved_at: at,
            considered_at: at,
            pending: Some("incr".into()),
            last_runs: vec![ScheduledRun {
                kind: "full".into(),
                job_id: JobId::new(),
                at,
            }],
            last_error: Some(ScheduleFailure {
                kind: "incr".into(),
                message: "backups are not configured".into(),
                at,
            }),
        }
    }

    #[tokio::test]
    async fn a_schedule_is_replaced_whole_listed_deleted_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = SqliteStore::open(&path).unwrap();
        store.put_schedule(schedule("prod")).await.unwrap();
        let mut replaced = schedule("default");
        store.put_schedule(replaced.clone()).await.unwrap();
        replaced.full = "0 2 * * *".into();
        replaced.last_error = None;
        store.put_schedule(replaced.clone()).await.unwrap();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schedule("default").await.unwrap(), Some(replaced));
        assert_eq!(store.schedule("staging").await.unwrap(), None);
        let listed: Vec<String> = store
            .schedules()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.workspace)
            .collect();
        assert_eq!(listed, ["default", "prod"]);
        assert!(store.delete_schedule("prod").await.unwrap());
        assert!(!store.delete_schedule("prod").await.unwrap());
        assert_eq!(store.schedules().await.unwrap().len(), 1);
    }
}
