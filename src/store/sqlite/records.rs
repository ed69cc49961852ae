//! Small JSON documents by kind and key: workspace policies, quotas,
//! approvals, webhooks and their deliveries.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::store::StoreError;

pub(super) fn put(
    conn: &mut Connection,
    kind: &str,
    key: &str,
    value: &Value,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?1, ?2, ?3)",
        params![kind, key, value.to_string()],
    )?;
    Ok(())
}

pub(super) fn get(
    conn: &mut Connection,
    kind: &str,
    key: &str,
) -> Result<Option<Value>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM records WHERE kind = ?1 AND key = ?2")?;
    let text: Option<String> = stmt
        .query_row(params![kind, key], |row| row.get(0))
        .optional()?;
    text.map(|t| parse(&t)).transpose()
}

pub(super) fn list(conn: &mut Connection, kind: &str) -> Result<Vec<(String, Value)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM records WHERE kind = ?1 ORDER BY key")?;
    let rows = stmt.query_map([kind], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (key, text) = row?;
        records.push((key, parse(&text)?));
    }
    Ok(records)
}

pub(super) fn delete(conn: &mut Connection, kind: &str, key: &str) -> Result<bool, StoreError> {
    let deleted = conn.execute(
        "DELETE FROM records WHERE kind = ?1 AND key = ?2",
        params![kind, key],
    )?;
    Ok(deleted > 0)
}

fn parse(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(format!("a stored record: {e}")))
}
