//! Jobs and logs in an SQLite file (embedded: nothing to install).
//!
//! Schema changes are numbered migrations applied at open, tracked by
//! `PRAGMA user_version`. Every call runs on the blocking pool, except reads
//! of a few rows by key (`read_by_key`). Reads have a
//! connection of their own: in WAL mode they see the last commit without
//! waiting for a write in progress (a job's log lines, a batch at a time).
//!
//! `connection` holds the connections and where calls run, `schema` the
//! migrations, `rows` a job's columns, `writes` and `reads` the jobs table's
//! statements, `logs` the log lines', `events` the cluster's events',
//! `schedules` the backup schedules', `records` the small JSON documents'.

mod connection;
mod events;
mod logs;
mod reads;
mod records;
mod rows;
mod schedules;
mod schema;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::Connection;
use serde_json::Value;
use time::OffsetDateTime;

use self::connection::Slot;
use super::{
    ClusterEvent, Completion, Job, JobFilter, JobId, JobPage, JobStore, LogLine, ScheduleRecord,
    StoreError,
};

pub struct SqliteStore {
    conn: Slot,
    reader: Slot,
    /// The connection for reads by key (`read_by_key`), opened on first
    /// use and shared by the calling threads, one at a time.
    by_key: Mutex<Option<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (or creates) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Other(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = connection::open(path)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Slot::new(conn),
            reader: Slot::new(connection::open(path)?),
            by_key: Mutex::new(None),
            path: path.to_owned(),
        })
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert(&self, job: Job) -> Result<(), StoreError> {
        self.with(move |conn| writes::insert(conn, job)).await
    }

    async fn mark_running(
        &self,
        id: JobId,
        at: OffsetDateTime,
        pid: Option<u32>,
        pid_start: Option<u64>,
    ) -> Result<(), StoreError> {
        self.with(move |conn| writes::mark_running(conn, id, at, pid, pid_start))
            .await
    }

    async fn complete(
        &self,
        id: JobId,
        completion: Completion,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(move |conn| writes::complete(conn, id, completion, at))
            .await
    }

    async fn set_result(&self, id: JobId, result: Value) -> Result<(), StoreError> {
        self.with(move |conn| writes::set_result(conn, id, result))
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.read_by_key(move |conn| reads::get(conn, id)).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let filter = filter.clone();
        // A small page of the newest jobs reads that many rows down the
        // sequence number: on the calling thread. A filter can make the query
        // scan the table: on the blocking pool.
        let by_key = filter.workspace.is_none()
            && filter.kind.is_none()
            && filter.status.is_none()
            && filter.limit <= reads::SMALL_PAGE;
        let query = move |conn: &mut Connection| reads::list(conn, &filter);
        if by_key {
            self.read_by_key(query).await
        } else {
            self.read(query).await
        }
    }

    async fn append_log(&self, id: JobId, lines: Vec<LogLine>) -> Result<(), StoreError> {
        self.with(move |conn| logs::append(conn, id, lines)).await
    }

    async fn read_log(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.read(move |conn| logs::read(conn, id, after, limit))
            .await
    }

    async fn interrupt_unfinished(&self, at: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        self.with(move |conn| writes::interrupt_unfinished(conn, at))
            .await
    }

    async fn add_event(&self, event: ClusterEvent) -> Result<u64, StoreError> {
        self.with(move |conn| events::add(conn, &event)).await
    }

    async fn events(&self, workspace: &str, limit: usize) -> Result<Vec<ClusterEvent>, StoreError> {
        let workspace = workspace.to_string();
        self.read(move |conn| events::list(conn, &workspace, limit))
            .await
    }

    async fn put_schedule(&self, schedule: ScheduleRecord) -> Result<(), StoreError> {
        self.with(move |conn| schedules::put(conn, &schedule)).await
    }

    async fn schedule(&self, workspace: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        let workspace = workspace.to_string();
        self.read_by_key(move |conn| schedules::get(conn, &workspace))
            .await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.read(schedules::list).await
    }

    async fn delete_schedule(&self, workspace: &str) -> Result<bool, StoreError> {
        let workspace = workspace.to_string();
        self.with(move |conn| schedules::delete(conn, &workspace))
            .await
    }

    async fn put_record(&self, kind: &str, key: &str, value: Value) -> Result<(), StoreError> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.with(move |conn| records::put(conn, &kind, &key, &value))
            .await
    }

    async fn record(&self, kind: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.read_by_key(move |conn| records::get(conn, &kind, &key))
            .await
    }

    async fn records(&self, kind: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let kind = kind.to_string();
        self.read(move |conn| records::list(conn, &kind)).await
    }

    async fn delete_record(&self, kind: &str, key: &str) -> Result<bool, StoreError> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.with(move |conn| records::delete(conn, &kind, &key))
            .await
    }
}

/// What the submodules' tests share.
#[cfg(test)]
mod test_support {
    use serde_json::json;

    use super::SqliteStore;
    use crate::store::{Job, JobId, JobKind, JobStore};

    pub(super) fn job(workspace: &str, kind: JobKind) -> Job {
        Job::queued(JobId::new(), kind, workspace, json!({"output": true}))
    }

    /// A store in a temporary directory (kept alive by the first value) with
    /// one queued job.
    pub(super) async fn store_with_a_queued_job() -> (tempfile::TempDir, SqliteStore, JobId) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.db")).unwrap();
        let j = job("default", JobKind::TerraformPlan);
        let id = j.id;
        store.insert(j).await.unwrap();
        (dir, store, id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_support::job;
    use super::*;
    use crate::store::{JobKind, JobStatus, Stream};

    #[tokio::test]
    async fn a_job_round_trips_and_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = SqliteStore::open(&path).unwrap();
        let j = job("default", JobKind::TerraformPlan);
        let id = j.id;
        store.insert(j).await.unwrap();
        store
            .mark_running(id, OffsetDateTime::now_utc(), Some(42), Some(7))
            .await
            .unwrap();
        let lines = vec![
            LogLine {
                n: 1,
                stream: Stream::Stdout,
                text: "one".into(),
            },
            LogLine {
                n: 2,
                stream: Stream::Stderr,
                text: "two".into(),
            },
        ];
        store.append_log(id, lines.clone()).await.unwrap();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let loaded = store.get(id).await.unwrap().unwrap();
        assert_eq!(loaded.status, JobStatus::Running);
        assert_eq!(loaded.pid, Some(42));
        assert_eq!(loaded.request, json!({"output": true}));
        assert_eq!(store.read_log(id, 0, 10).await.unwrap(), lines);
        assert_eq!(store.read_log(id, 1, 10).await.unwrap(), lines[1..]);

        let interrupted = store
            .interrupt_unfinished(OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            JobStatus::Interrupted
        );
    }
}
