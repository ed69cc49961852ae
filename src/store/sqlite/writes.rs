//! Writes to the jobs table, each run with the writer's connection.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use time::OffsetDateTime;

use super::rows::{JOB_COLUMNS, from_ts, job_from_row, ts};
use crate::store::{Completion, INTERRUPTED, Job, JobId, JobStatus, StoreError, duration_ms};

pub(super) fn insert(conn: &mut Connection, job: Job) -> Result<(), StoreError> {
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
}

pub(super) fn mark_running(
    conn: &mut Connection,
    id: JobId,
    at: OffsetDateTime,
    pid: Option<u32>,
    pid_start: Option<u64>,
) -> Result<(), StoreError> {
    let changed = conn.execute(
        "UPDATE jobs SET status = 'running', started_at = ?2, pid = ?3, pid_start = ?4
         WHERE id = ?1",
        params![id.to_string(), ts(at), pid, pid_start.map(|p| p as i64)],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound(id));
    }
    Ok(())
}

pub(super) fn complete(
    conn: &mut Connection,
    id: JobId,
    completion: Completion,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
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
}

pub(super) fn set_result(
    conn: &mut Connection,
    id: JobId,
    result: Value,
) -> Result<(), StoreError> {
    let updated = conn.execute(
        "UPDATE jobs SET result = ?2 WHERE id = ?1",
        params![id.to_string(), result.to_string()],
    )?;
    if updated == 0 {
        return Err(StoreError::NotFound(id));
    }
    Ok(())
}

pub(super) fn interrupt_unfinished(
    conn: &mut Connection,
    at: OffsetDateTime,
) -> Result<Vec<Job>, StoreError> {
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
}
