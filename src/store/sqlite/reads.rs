//! Reads of the jobs table: a job by id, a page of the list.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{JOB_COLUMNS, job_from_row};
use crate::store::{Job, JobFilter, JobId, JobKind, JobPage, JobStatus, StoreError};

/// Most jobs in a page read on the calling thread (`list`).
pub(super) const SMALL_PAGE: usize = 100;

/// A page of jobs, newest first: ?1 workspace, ?2 kind, ?3 status (each
/// NULL for any), ?4 sequence number to start below (NULL: the newest), ?5
/// how many.
pub(super) fn list_sql() -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE (?1 IS NULL OR workspace = ?1)
           AND (?2 IS NULL OR kind = ?2)
           AND (?3 IS NULL OR status = ?3)
           AND (?4 IS NULL OR seq < ?4)
         ORDER BY seq DESC LIMIT ?5"
    )
}

pub(super) fn get(conn: &mut Connection, id: JobId) -> Result<Option<Job>, StoreError> {
    // Cached: parsing the statement cost more than running it.
    let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
    Ok(stmt
        .query_row([id.to_string()], job_from_row)
        .optional()?
        .map(|(_, job)| job))
}

pub(super) fn list(conn: &mut Connection, filter: &JobFilter) -> Result<JobPage, StoreError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobStore;
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::test_support::job;

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
