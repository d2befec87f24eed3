//! Media records: pending uploads and committed objects.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::AppResult;

#[derive(Debug, Clone)]
pub struct MediaRow {
    pub id: String,
    pub user_id: String,
    pub object_key: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub committed: bool,
    pub created_at: i64,
}

pub struct NewMedia<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub object_key: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub size: i64,
}

const COLUMNS: &str = "id, user_id, object_key, filename, content_type, size, state, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MediaRow> {
    Ok(MediaRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        object_key: r.get(2)?,
        filename: r.get(3)?,
        content_type: r.get(4)?,
        size: r.get(5)?,
        committed: r.get::<_, String>(6)? == "committed",
        created_at: r.get(7)?,
    })
}

pub fn insert_pending(tx: &Transaction<'_>, m: &NewMedia<'_>, now: i64) -> AppResult<()> {
    tx.prepare_cached("INSERT INTO media (id, user_id, object_key, filename, content_type, size, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)")?.execute(
        params![
            m.id,
            m.user_id,
            m.object_key,
            m.filename,
            m.content_type,
            m.size,
            now
        ],
    )?;
    Ok(())
}

/// The user's media record, in any state; another user's is None.
pub fn find_for_user(conn: &Connection, user_id: &str, id: &str) -> AppResult<Option<MediaRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM media WHERE id = ?1 AND user_id = ?2"
        ))?
        .query_row(params![id, user_id], row)
        .optional()?)
}

pub fn find_by_key(conn: &Connection, object_key: &str) -> AppResult<Option<MediaRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM media WHERE object_key = ?1"
        ))?
        .query_row([object_key], row)
        .optional()?)
}

/// Marks a pending upload committed; false when it no longer is pending
/// (committed meanwhile, or swept).
pub fn mark_committed(tx: &Transaction<'_>, id: &str, now: i64) -> AppResult<bool> {
    let n = tx.prepare_cached("UPDATE media SET state = 'committed', committed_at = ?2 WHERE id = ?1 AND state = 'pending'")?.execute(
        params![id, now],
    )?;
    Ok(n == 1)
}

/// Up to `limit` uploads still pending that were created before `cutoff`.
pub fn pending_before(conn: &Connection, cutoff: i64, limit: u32) -> AppResult<Vec<MediaRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM media WHERE state = 'pending' AND created_at < ?1
         ORDER BY created_at LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![cutoff, limit], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes these rows if they are still pending; returns how many went.
pub fn delete_pending(tx: &Transaction<'_>, ids: &[String]) -> AppResult<usize> {
    let mut stmt = tx.prepare_cached("DELETE FROM media WHERE id = ?1 AND state = 'pending'")?;
    let mut n = 0;
    for id in ids {
        n += stmt.execute([id])?;
    }
    Ok(n)
}
