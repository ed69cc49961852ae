//! Jobs and logs in an SQLite file (embedded: nothing to install).
//!
//! Schema changes are numbered migrations applied at open, tracked by
//! `PRAGMA user_version`. Every call runs on the blocking pool, except reads
//! of a few rows by key (`read_by_key`). Reads have a
//! connection of their own: in WAL mode they see the last commit without
//! waiting for a write in progress (a job's log lines, a batch at a time).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use thread_local::ThreadLocal;
use time::OffsetDateTime;

use super::log_chunks;
use super::{
    Completion, INTERRUPTED, Job, JobFilter, JobId, JobKind, JobPage, JobStatus, JobStore, LogLine,
    StoreError, Stream, duration_ms,
};

/// Each entry upgrades the schema by one version (and `after_migration`
/// moves data where SQL alone cannot).
const MIGRATIONS: [&str; 3] = [
    r#"
CREATE TABLE jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    workspace    TEXT NOT NULL,
    request      TEXT NOT NULL,
    started_by   TEXT,
    status       TEXT NOT NULL,
    exit_code    INTEGER,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    duration_ms  INTEGER,
    result       TEXT,
    error        TEXT,
    pid          INTEGER,
    pid_start    INTEGER
);
CREATE INDEX jobs_by_workspace ON jobs (workspace, seq);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE TABLE job_logs (
    job_id  TEXT NOT NULL,
    n       INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    text    TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE jobs ADD COLUMN request_id TEXT;
"#,
    // Log lines packed in chunks (`log_chunks`), the rows of `job_logs`
    // moved into them, then dropped.
    r#"
CREATE TABLE job_log_chunks (
    job_id  TEXT NOT NULL,
    first_n INTEGER NOT NULL,
    last_n  INTEGER NOT NULL,
    lines   BLOB NOT NULL,
    PRIMARY KEY (job_id, last_n)
);
"#,
];

pub struct SqliteStore {
    conn: Slot,
    reader: Slot,
    /// Each calling thread's own connection, for reads by key
    /// (`read_by_key`).
    local: ThreadLocal<RefCell<Connection>>,
    path: PathBuf,
}

/// WAL pages (4 KiB) after which a commit copies the WAL into the database
/// (SQLite's default: 1000). A checkpoint syncs the WAL, then the database:
/// while jobs print fast, a request's own fsync (`generate` writing
/// `terraform.tfvars`) can wait behind one, and a smaller one is a shorter
/// wait. 4 x 10 MB/s printed, against the default: the server's CPU and
/// bytes written the same, `generate`'s loaded p99 2.5-3.5 ms against
/// 3.9-4.1 ms (bench/notes.md).
const CHECKPOINT_PAGES: i64 = 128;

/// A connection and its turn: one call at a time takes a blocking thread
/// (the others wait as tasks, not as threads parked on the lock).
#[derive(Clone)]
struct Slot {
    conn: Arc<Mutex<Connection>>,
    turn: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    fn new(conn: Connection) -> Slot {
        Slot {
            conn: Arc::new(Mutex::new(conn)),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// A cached statement keeps its query plan whatever values are bound. By
/// default SQLite (built with STAT4) plans some statements again whenever
/// their parameters are bound anew, to pick an index for the values: the
/// job list's `(?1 IS NULL OR workspace = ?1)` was parsed and planned again
/// at every `GET /jobs`, most of that query's cost.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (or creates) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Other(format!("{}: {e}", dir.display())))?;
        }
        let open = || -> Result<Connection, StoreError> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            stable_plans(&conn)?;
            Ok(conn)
        };
        let mut conn = open()?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Slot::new(conn),
            reader: Slot::new(open()?),
            local: ThreadLocal::new(),
            path: path.to_owned(),
        })
    }

    /// A connection for `read_by_key`: it only reads, never waits for a lock,
    /// and keeps a small page cache (there is one per thread).
    fn open_local(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "query_only", "ON")?;
        conn.pragma_update(None, "cache_size", -256)?;
        stable_plans(&conn)?;
        Ok(conn)
    }

    /// Runs `f`, a read of a few rows found by key (a job by id, a page of the
    /// newest jobs by sequence number), on the calling thread with
    /// that thread's own connection. Handing it to the blocking pool and back
    /// costs two thread wake-ups: most of a `GET /jobs/{id}`'s CPU time, and
    /// on a busy machine most of its wait. Such a read takes microseconds on
    /// pages in memory, and in WAL mode a reader does not wait for the
    /// writer. Should SQLite answer busy all the same (a WAL being
    /// recovered), or the connection fail to open, the read goes to the
    /// blocking pool like the others.
    async fn read_by_key<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if let Ok(cell) = self
            .local
            .get_or_try(|| self.open_local().map(RefCell::new))
            && let Ok(mut conn) = cell.try_borrow_mut()
        {
            match f(&mut conn) {
                Err(StoreError::Database(e))
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
                result => return result,
            }
        }
        self.read(f).await
    }

    /// Runs `f` with the connection that writes.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::on(self.conn.clone(), f).await
    }

    /// Runs `f`, which only reads, with the connection that reads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::on(self.reader.clone(), f).await
    }

    async fn on<T, F>(slot: Slot, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let turn = slot
            .turn
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Other(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let mut conn = slot.conn.lock().unwrap_or_else(|p| p.into_inner());
            let result = f(&mut conn);
            drop(turn);
            result
        })
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = version.max(0) as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Other(format!(
            "the database schema (version {version}) is newer than this server knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        after_migration(index + 1, &tx)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The data moves of the migration to `version`, in its transaction.
fn after_migration(version: usize, tx: &rusqlite::Transaction) -> Result<(), StoreError> {
    if version != 3 {
        return Ok(());
    }
    // One row per line becomes a chunk per run of lines, a job at a time.
    let mut read = tx.prepare("SELECT job_id, n, stream, text FROM job_logs ORDER BY job_id, n")?;
    let mut rows = read.query([])?;
    let mut job = String::new();
    let mut lines: Vec<LogLine> = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if id != job || lines.len() >= log_chunks::MAX_LINES {
            insert_chunks(tx, &job, &lines)?;
            lines.clear();
            job = id;
        }
        lines.push(LogLine {
            n: row.get::<_, i64>(1)? as u64,
            stream: Stream::parse(&row.get::<_, String>(2)?),
            text: row.get(3)?,
        });
    }
    insert_chunks(tx, &job, &lines)?;
    drop(rows);
    drop(read);
    tx.execute_batch("DROP TABLE job_logs")?;
    Ok(())
}

/// Stores `lines` (in order, none stored yet) as chunks.
fn insert_chunks(conn: &Connection, job_id: &str, lines: &[LogLine]) -> Result<(), StoreError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO job_log_chunks (job_id, first_n, last_n, lines) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for chunk in log_chunks::pack(lines) {
        insert.execute(params![
            job_id,
            chunk.first_n as i64,
            chunk.last_n as i64,
            chunk.bytes
        ])?;
    }
    Ok(())
}

/// Most jobs in a page read on the calling thread (`list`).
const SMALL_PAGE: usize = 100;

fn ts(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ts(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A page of jobs, newest first: ?1 workspace, ?2 kind, ?3 status (each
/// NULL for any), ?4 sequence number to start below (NULL: the newest), ?5
/// how many.
fn list_sql() -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE (?1 IS NULL OR workspace = ?1)
           AND (?2 IS NULL OR kind = ?2)
           AND (?3 IS NULL OR status = ?3)
           AND (?4 IS NULL OR seq < ?4)
         ORDER BY seq DESC LIMIT ?5"
    )
}

const JOB_COLUMNS: &str = "seq, id, kind, workspace, request, started_by, status, exit_code, \
    created_at, started_at, finished_at, duration_ms, result, error, pid, pid_start, request_id";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(u64, Job)> {
    let text = |i: usize| row.get::<_, String>(i);
    let json = |raw: Option<String>| raw.and_then(|r| serde_json::from_str::<Value>(&r).ok());
    let id: String = text(1)?;
    let job = Job {
        id: JobId::parse(&id).unwrap_or_default(),
        kind: JobKind::parse(&text(2)?).unwrap_or(JobKind::TerraformOutput),
        workspace: text(3)?,
        request: json(Some(text(4)?)).unwrap_or(Value::Null),
        started_by: row.get(5)?,
        status: JobStatus::parse(&text(6)?).unwrap_or(JobStatus::Interrupted),
        exit_code: row.get(7)?,
        created_at: from_ts(row.get(8)?),
        started_at: row.get::<_, Option<i64>>(9)?.map(from_ts),
        finished_at: row.get::<_, Option<i64>>(10)?.map(from_ts),
        duration_ms: row.get::<_, Option<i64>>(11)?.map(|d| d.max(0) as u64),
        result: json(row.get(12)?),
        error: row.get(13)?,
        pid: row.get::<_, Option<i64>>(14)?.map(|p| p as u32),
        pid_start: row.get::<_, Option<i64>>(15)?.map(|p| p as u64),
        request_id: row.get(16)?,
    };
    Ok((row.get::<_, i64>(0)? as u64, job))
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert(&self, job: Job) -> Result<(), StoreError> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO jobs (id, kind, workspace, request, started_by, status, created_at, request_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    job.id.to_string(),
                    job.kind.as_str(),
                    job.workspace,
                    job.request.to_string(),
                    job.started_by,
                    job.status.as_str(),
                    ts(job.created_at),
                    job.request_id,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn mark_running(
        &self,
        id: JobId,
        at: OffsetDateTime,
        pid: Option<u32>,
        pid_start: Option<u64>,
    ) -> Result<(), StoreError> {
        self.with(move |conn| {
            let changed = conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?2, pid = ?3, pid_start = ?4
                 WHERE id = ?1",
                params![id.to_string(), ts(at), pid, pid_start.map(|p| p as i64)],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn complete(
        &self,
        id: JobId,
        completion: Completion,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(move |conn| {
            let start: Option<(Option<i64>, i64)> = conn
                .query_row(
                    "SELECT started_at, created_at FROM jobs WHERE id = ?1",
                    [id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((started, created)) = start else {
                return Err(StoreError::NotFound(id));
            };
            let duration = duration_ms(from_ts(started.unwrap_or(created)), at);
            conn.execute(
                "UPDATE jobs SET status = ?2, exit_code = ?3, result = ?4, error = ?5,
                        finished_at = ?6, duration_ms = ?7
                 WHERE id = ?1",
                params![
                    id.to_string(),
                    completion.status.as_str(),
                    completion.exit_code,
                    completion.result.map(|r| r.to_string()),
                    completion.error,
                    ts(at),
                    duration as i64,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_result(&self, id: JobId, result: Value) -> Result<(), StoreError> {
        self.with(move |conn| {
            let updated = conn.execute(
                "UPDATE jobs SET result = ?2 WHERE id = ?1",
                params![id.to_string(), result.to_string()],
            )?;
            if updated == 0 {
                return Err(StoreError::NotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.read_by_key(move |conn| {
            // Cached: parsing the statement cost more than running it.
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
            Ok(stmt
                .query_row([id.to_string()], job_from_row)
                .optional()?
                .map(|(_, job)| job))
        })
        .await
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let filter = filter.clone();
        // A small page of the newest jobs reads that many rows down the
        // sequence number: on the calling thread. A filter can make the query
        // scan the table: on the blocking pool.
        let by_key = filter.workspace.is_none()
            && filter.kind.is_none()
            && filter.status.is_none()
            && filter.limit <= SMALL_PAGE;
        let query = move |conn: &mut Connection| {
            let mut stmt = conn.prepare_cached(&list_sql())?;
            let rows = stmt.query_map(
                params![
                    filter.workspace,
                    filter.kind.map(JobKind::as_str),
                    filter.status.map(JobStatus::as_str),
                    filter.before.map(|b| b as i64),
                    filter.limit as i64 + 1,
                ],
                job_from_row,
            )?;
            let mut page: Vec<(u64, Job)> = rows.collect::<Result<_, _>>()?;
            let next_cursor = if page.len() > filter.limit {
                page.pop();
                page.last().map(|(seq, _)| *seq)
            } else {
                None
            };
            Ok(JobPage {
                jobs: page.into_iter().map(|(_, job)| job).collect(),
                next_cursor,
            })
        };
        if by_key {
            self.read_by_key(query).await
        } else {
            self.read(query).await
        }
    }

    async fn append_log(&self, id: JobId, lines: Vec<LogLine>) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let id = id.to_string();
            // A line stored already (a retried batch) is not stored again.
            let stored: i64 = tx
                .prepare_cached(
                    "SELECT COALESCE(MAX(last_n), 0) FROM job_log_chunks WHERE job_id = ?1",
                )?
                .query_row([&id], |r| r.get(0))?;
            let fresh = lines.partition_point(|line| line.n <= stored as u64);
            insert_chunks(&tx, &id, &lines[fresh..])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn read_log(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT first_n, lines FROM job_log_chunks WHERE job_id = ?1 AND last_n > ?2
                 ORDER BY last_n",
            )?;
            let mut rows = stmt.query(params![id.to_string(), after as i64])?;
            let mut lines = Vec::new();
            while lines.len() < limit {
                let Some(row) = rows.next()? else { break };
                let first_n = row.get::<_, i64>(0)? as u64;
                let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                log_chunks::unpack_into(first_n, bytes, after, limit, &mut lines)?;
            }
            Ok(lines)
        })
        .await
    }

    async fn interrupt_unfinished(&self, at: OffsetDateTime) -> Result<Vec<Job>, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let jobs: Vec<Job> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('queued', 'running')"
                ))?;
                let rows = stmt.query_map([], job_from_row)?;
                rows.map(|r| r.map(|(_, job)| job))
                    .collect::<Result<_, _>>()?
            };
            for job in &jobs {
                let duration = duration_ms(job.started_at.unwrap_or(job.created_at), at);
                tx.execute(
                    "UPDATE jobs SET status = 'interrupted', error = ?2, finished_at = ?3,
                            duration_ms = ?4
                     WHERE id = ?1",
                    params![job.id.to_string(), INTERRUPTED, ts(at), duration as i64],
                )?;
            }
            tx.commit()?;
            Ok(jobs
                .into_iter()
                .map(|mut job| {
                    job.status = JobStatus::Interrupted;
                    job.error = Some(INTERRUPTED.into());
                    job.finished_at = Some(at);
                    job
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(workspace: &str, kind: JobKind) -> Job {
        Job::queued(JobId::new(), kind, workspace, json!({"output": true}))
    }

    /// A store in a temporary directory (kept alive by the first value) with
    /// one queued job.
    async fn store_with_a_queued_job() -> (tempfile::TempDir, SqliteStore, JobId) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.db")).unwrap();
        let j = job("default", JobKind::TerraformPlan);
        let id = j.id;
        store.insert(j).await.unwrap();
        (dir, store, id)
    }

    #[tokio::test]
    async fn a_cached_statement_is_not_planned_again_for_new_values() {
        let (_dir, store, _) = store_with_a_queued_job().await;
        // Small unfiltered pages: read on this thread, with its connection.
        for before in [None, Some(1), Some(2), None] {
            let filter = JobFilter {
                before,
                ..JobFilter::default()
            };
            store.list(&filter).await.unwrap();
        }
        let local = store.local.get().expect("read on this thread").borrow();
        let stmt = local.prepare_cached(&list_sql()).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

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

    /// The WAL is copied into the database every `CHECKPOINT_PAGES`, so it
    /// stays small however much a job prints (SQLite reuses it from the
    /// start after a checkpoint: its size is its high-water mark).
    #[tokio::test]
    async fn the_wal_stays_small_while_a_job_prints_megabytes() {
        let (dir, store, id) = store_with_a_queued_job().await;
        // Lines that do not compress: hex of a simple pseudo-random sequence.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random_line = |n: u64| {
            let text: String = (0..12)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    format!("{seed:016x}")
                })
                .collect();
            LogLine {
                n,
                stream: Stream::Stdout,
                text,
            }
        };
        // 8 MB of text in batches of 512 lines, as a job's writer stores them.
        let lines = 40_960;
        for start in (1..=lines).step_by(512) {
            let batch = (start..start + 512).map(&mut random_line).collect();
            store.append_log(id, batch).await.unwrap();
        }
        assert_eq!(store.read_log(id, lines - 1, 10).await.unwrap().len(), 1);
        let wal = std::fs::metadata(dir.path().join("jobs.db-wal"))
            .unwrap()
            .len();
        let checkpoint = CHECKPOINT_PAGES as u64 * 4096;
        assert!(
            wal < 3 * checkpoint,
            "WAL {wal} bytes, checkpoints every {checkpoint}"
        );
    }

    #[tokio::test]
    async fn many_lines_are_stored_in_order_and_a_repeat_is_ignored() {
        let (_dir, store, id) = store_with_a_queued_job().await;
        let line = |n: u64| LogLine {
            n,
            stream: if n.is_multiple_of(2) {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            text: format!("line {n}"),
        };
        // Whole chunks and a part of one, twice.
        let chunk = log_chunks::MAX_LINES as u64;
        store
            .append_log(id, (1..=chunk * 2 + 5).map(line).collect())
            .await
            .unwrap();
        let next = chunk * 2 + 6;
        store
            .append_log(id, (next..next + 70).map(line).collect())
            .await
            .unwrap();
        // Lines stored again (a retried batch) are not duplicated; the new
        // ones of the batch are stored.
        let end = next + 70;
        store
            .append_log(id, (end - 3..end + 2).map(line).collect())
            .await
            .unwrap();
        store.append_log(id, vec![line(3)]).await.unwrap();
        let stored = store.read_log(id, 0, 10_000).await.unwrap();
        assert_eq!(stored, (1..end + 2).map(line).collect::<Vec<_>>());
        // Pages that start and end inside chunks, as `after`/`limit` give them.
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = store.read_log(id, after, 100).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.n;
            paged.extend(page);
        }
        assert_eq!(paged, stored);
        assert_eq!(
            store.read_log(id, chunk - 1, 2).await.unwrap(),
            stored[chunk as usize - 1..chunk as usize + 1]
        );
    }

    #[tokio::test]
    async fn a_database_with_a_row_per_line_is_moved_to_chunks_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let (a, b) = (JobId::new(), JobId::new());
        {
            // The schema as it was at version 2, with lines of two jobs.
            let mut conn = Connection::open(&path).unwrap();
            for (index, migration) in MIGRATIONS[..2].iter().enumerate() {
                let tx = conn.transaction().unwrap();
                tx.execute_batch(migration).unwrap();
                tx.pragma_update(None, "user_version", index as i64 + 1)
                    .unwrap();
                tx.commit().unwrap();
            }
            for (id, count) in [(a, 1300), (b, 3)] {
                for n in 1..=count {
                    conn.execute(
                        "INSERT INTO job_logs (job_id, n, stream, text) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            id.to_string(),
                            n,
                            if n % 2 == 0 { "stderr" } else { "stdout" },
                            format!("{id} {n}")
                        ],
                    )
                    .unwrap();
                }
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        for (id, count) in [(a, 1300u64), (b, 3)] {
            let lines = store.read_log(id, 0, 10_000).await.unwrap();
            let expected: Vec<LogLine> = (1..=count)
                .map(|n| LogLine {
                    n,
                    stream: if n % 2 == 0 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    },
                    text: format!("{id} {n}"),
                })
                .collect();
            assert_eq!(lines, expected);
        }
        let old_table: i64 = store
            .read(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'job_logs'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(old_table, 0);
    }

    #[tokio::test]
    async fn a_read_by_id_runs_on_the_calling_thread_and_sees_the_last_write() {
        let (_dir, store, id) = store_with_a_queued_job().await;
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            JobStatus::Queued
        );
        store
            .mark_running(id, OffsetDateTime::now_utc(), Some(7), None)
            .await
            .unwrap();
        assert_eq!(store.get(id).await.unwrap().unwrap().pid, Some(7));

        let here = std::thread::current().id();
        let ran_on = store
            .read_by_key(|_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(ran_on, here);
    }

    #[tokio::test]
    async fn a_read_by_id_told_busy_goes_to_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.db")).unwrap();
        let here = std::thread::current().id();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let ran_on = store
            .read_by_key(move |_| {
                if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    // What a locked database answers a connection that does
                    // not wait.
                    return Err(StoreError::Database(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        None,
                    )));
                }
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_ne!(ran_on, here, "the second try ran on the blocking pool");
    }

    #[tokio::test]
    async fn listing_filters_and_pages_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.db")).unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let j = job(
                if i % 2 == 0 { "default" } else { "prod" },
                JobKind::TerraformInit,
            );
            ids.push(j.id);
            store.insert(j).await.unwrap();
        }
        let filter = JobFilter {
            workspace: Some("default".into()),
            limit: 2,
            ..JobFilter::default()
        };
        let first = store.list(&filter).await.unwrap();
        assert_eq!(
            first.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[4], ids[2]]
        );
        let second = store
            .list(&JobFilter {
                before: first.next_cursor,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert_eq!(
            second.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[0]]
        );
        assert!(second.next_cursor.is_none());

        // No filter: the newest first, a page at a time, on either path.
        for limit in [2, SMALL_PAGE + 1] {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let page = store
                    .list(&JobFilter {
                        before,
                        limit,
                        ..JobFilter::default()
                    })
                    .await
                    .unwrap();
                seen.extend(page.jobs.iter().map(|j| j.id));
                match page.next_cursor {
                    Some(cursor) => before = Some(cursor),
                    None => break,
                }
            }
            assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>());
        }
    }
}
