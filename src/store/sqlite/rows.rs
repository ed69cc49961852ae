//! A job's row: its columns and their conversion to a `Job`.

use rusqlite::Row;
use serde_json::Value;
use time::OffsetDateTime;

use crate::store::{Job, JobId, JobKind, JobStatus};

pub(super) fn ts(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(super) fn from_ts(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(super) const JOB_COLUMNS: &str = "seq, id, kind, workspace, request, started_by, status, exit_code, \
    created_at, started_at, finished_at, duration_ms, result, error, pid, pid_start, request_id";

pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(u64, Job)> {
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
        approval: None,
    };
    Ok((row.get::<_, i64>(0)? as u64, job))
}
