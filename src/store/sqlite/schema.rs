//! The schema: numbered migrations applied at open, tracked by
//! `PRAGMA user_version`.

use rusqlite::Connection;

use super::logs::insert_chunks;
use crate::store::{LogLine, StoreError, Stream, log_chunks};

/// Each entry upgrades the schema by one version (and `after_migration`
/// moves data where SQL alone cannot).
pub(super) const MIGRATIONS: [&str; 6] = [
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
    // The cluster's events (leader changes), listed per workspace.
    r#"
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    "from"    TEXT,
    "to"      TEXT,
    timeline  INTEGER,
    cause     TEXT NOT NULL
);
CREATE INDEX events_by_workspace ON events (workspace, id);
"#,
    // A backup schedule per workspace, and where its scheduler is with it
    // (`last_runs` and `last_error` as JSON).
    r#"
CREATE TABLE backup_schedules (
    workspace     TEXT PRIMARY KEY,
    "full"        TEXT NOT NULL,
    diff          TEXT,
    incr          TEXT,
    timezone      TEXT NOT NULL,
    saved_at      INTEGER NOT NULL,
    considered_at INTEGER NOT NULL,
    pending       TEXT,
    last_runs     TEXT NOT NULL,
    last_error    TEXT
);
"#,
    // Small JSON documents by kind and key (workspace policies, quotas,
    // approvals, webhooks, deliveries).
    r#"
CREATE TABLE records (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"#,
];

/// Brings the schema up to date, a migration per transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{JobId, JobStore};

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
}
