//! The store's connections and where their calls run: the writer and the
//! reader each take one call at a time on the blocking pool; reads by key run
//! on the calling thread with that thread's own connection.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use super::SqliteStore;
use crate::store::StoreError;

/// WAL pages (4 KiB) after which a commit copies the WAL into the database
/// (SQLite's default: 1000). A request's own fsync (`generate` writing
/// `terraform.tfvars`) can wait behind a checkpoint; a smaller one is a
/// shorter wait.
pub(super) const CHECKPOINT_PAGES: i64 = 128;

/// A connection and its turn: one call at a time takes a blocking thread
/// (the others wait as tasks, not as threads parked on the lock).
#[derive(Clone)]
pub(super) struct Slot {
    conn: Arc<Mutex<Connection>>,
    turn: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    pub(super) fn new(conn: Connection) -> Slot {
        Slot {
            conn: Arc::new(Mutex::new(conn)),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// A cached statement keeps its query plan whatever values are bound. By
/// default SQLite (built with STAT4) plans some statements again for new
/// values, such as the job list's `(?1 IS NULL OR workspace = ?1)`.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// Opens a connection for the writer or the reader (WAL mode, checkpoints
/// every `CHECKPOINT_PAGES`).
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    stable_plans(&conn)?;
    Ok(conn)
}

impl SqliteStore {
    /// A connection for `read_by_key`: it only reads, never waits for a lock,
    /// and keeps a small page cache.
    fn open_local(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "query_only", "ON")?;
        conn.pragma_update(None, "cache_size", -256)?;
        stable_plans(&conn)?;
        Ok(conn)
    }

    /// Runs `f`, a read of a few rows found by key (a job by id, a page of the
    /// newest jobs), on the calling thread with the connection kept for such
    /// reads (a caller waits while another uses it): such a read is cheaper
    /// than the two thread wake-ups of the blocking pool, and in WAL mode it
    /// does not wait for the writer. Should SQLite
    /// answer busy all the same (a WAL being recovered), or the connection
    /// fail to open, the read goes to the blocking pool like the others.
    pub(super) async fn read_by_key<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        {
            let mut conn = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
            if conn.is_none() {
                *conn = self.open_local().ok();
            }
            if let Some(conn) = conn.as_mut() {
                match f(conn) {
                    Err(StoreError::Database(e))
                        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
                    result => return result,
                }
            }
        }
        self.read(f).await
    }

    /// Runs `f` with the connection that writes.
    pub(super) async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::on(self.conn.clone(), f).await
    }

    /// Runs `f`, which only reads, with the connection that reads.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use time::OffsetDateTime;

    use super::*;
    use crate::store::sqlite::reads::list_sql;
    use crate::store::sqlite::test_support::store_with_a_queued_job;
    use crate::store::{JobFilter, JobStatus, JobStore, LogLine, Stream};

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
        let by_key = store.by_key.lock().unwrap();
        let local = by_key.as_ref().expect("read by key");
        let stmt = local.prepare_cached(&list_sql()).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
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
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let ran_on = store
            .read_by_key(move |_| {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
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
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_ne!(ran_on, here, "the second try ran on the blocking pool");
    }
}
