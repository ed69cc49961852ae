//! The cluster's events: written once, listed per workspace, newest first.

use rusqlite::{Connection, params};

use super::rows::{from_ts, ts};
use crate::store::{ClusterEvent, StoreError};

pub(super) fn add(conn: &mut Connection, event: &ClusterEvent) -> Result<u64, StoreError> {
    conn.execute(
        r#"INSERT INTO events (workspace, at, kind, "from", "to", timeline, cause)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#,
        params![
            event.workspace,
            ts(event.at),
            event.kind,
            event.from,
            event.to,
            event.timeline.map(|t| t as i64),
            event.cause,
        ],
    )?;
    Ok(conn.last_insert_rowid() as u64)
}

pub(super) fn list(
    conn: &mut Connection,
    workspace: &str,
    limit: usize,
) -> Result<Vec<ClusterEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT id, workspace, at, kind, "from", "to", timeline, cause FROM events
           WHERE workspace = ?1 ORDER BY id DESC LIMIT ?2"#,
    )?;
    let rows = stmt.query_map(params![workspace, limit as i64], |row| {
        Ok(ClusterEvent {
            id: row.get::<_, i64>(0)? as u64,
            workspace: row.get(1)?,
            at: from_ts(row.get(2)?),
            kind: row.get(3)?,
            from: row.get(4)?,
            to: row.get(5)?,
            timeline: row.get::<_, Option<i64>>(6)?.map(|t| t as u64),
            cause: row.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use crate::store::sqlite::SqliteStore;
    use crate::store::{ClusterEvent, JobStore};

    fn event(workspace: &str, to: &str) -> ClusterEvent {
        ClusterEvent {
            id: 0,
            workspace: workspace.into(),
            at: OffsetDateTime::now_utc(),
            kind: "leader_changed".into(),
            from: Some("primary1".into()),
            to: Some(to.into()),
            timeline: Some(2),
            cause: "automatic".into(),
        }
    }

    #[tokio::test]
    async fn events_are_listed_per_workspace_newest_first_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = SqliteStore::open(&path).unwrap();
        let first = store.add_event(event("default", "replica1")).await.unwrap();
        store.add_event(event("prod", "replica2")).await.unwrap();
        let third = store.add_event(event("default", "primary1")).await.unwrap();
        assert!(third > first);
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let listed = store.events("default", 10).await.unwrap();
        let ids: Vec<u64> = listed.iter().map(|e| e.id).collect();
        assert_eq!(ids, [third, first]);
        assert_eq!(listed[1].to.as_deref(), Some("replica1"));
        assert_eq!(listed[1].timeline, Some(2));
        assert_eq!(store.events("default", 1).await.unwrap().len(), 1);
    }
}
