//! A job's log lines, stored in chunks (`log_chunks`).

use rusqlite::{Connection, params};

use crate::store::{JobId, LogLine, StoreError, log_chunks};

/// Stores `lines` (in order, none stored yet) as chunks.
pub(super) fn insert_chunks(
    conn: &Connection,
    job_id: &str,
    lines: &[LogLine],
) -> Result<(), StoreError> {
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

pub(super) fn append(
    conn: &mut Connection,
    id: JobId,
    lines: Vec<LogLine>,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let id = id.to_string();
    // A line stored already (a retried batch) is not stored again.
    let stored: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(last_n), 0) FROM job_log_chunks WHERE job_id = ?1")?
        .query_row([&id], |r| r.get(0))?;
    let fresh = lines.partition_point(|line| line.n <= stored as u64);
    insert_chunks(&tx, &id, &lines[fresh..])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn read(
    conn: &mut Connection,
    id: JobId,
    after: u64,
    limit: usize,
) -> Result<Vec<LogLine>, StoreError> {
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
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::test_support::store_with_a_queued_job;
    use crate::store::{JobStore, LogLine, Stream, log_chunks};

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
}
