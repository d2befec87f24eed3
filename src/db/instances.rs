//! instances and leases: which server processes are alive on this
//! database, and which of them runs a piece of cluster-wide work.

use crate::db::sql::{params, Conn, Tx};
use crate::error::AppResult;

/// Registers this instance, or beats: its row says it is alive now.
pub fn register(tx: &Tx<'_>, now_wall_ms: i64) -> AppResult<()> {
    tx.execute(
        "INSERT INTO instances (id, started_at, heartbeat_at) VALUES (?1, ?2, ?2)
         ON CONFLICT(id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        params![tx.instance(), now_wall_ms],
    )?;
    Ok(())
}

/// A clean stop: others may release what this instance still held at once.
pub fn retire(tx: &Tx<'_>) -> AppResult<()> {
    tx.execute(
        "UPDATE instances SET heartbeat_at = 0 WHERE id = ?1",
        [tx.instance()],
    )?;
    Ok(())
}

/// Forgets instances that have not beaten since `before` (and released
/// nothing is owned by them any more).
pub fn forget_dead(tx: &Tx<'_>, before: i64) -> AppResult<usize> {
    Ok(tx.execute(
        "DELETE FROM instances WHERE heartbeat_at < ?1
         AND id NOT IN (SELECT owner FROM reservations WHERE state = 'held' AND owner IS NOT NULL)
         AND id NOT IN (SELECT owner FROM jobs WHERE state = 'running' AND owner IS NOT NULL)",
        [before],
    )?)
}

/// Keys of the holds whose owner is not alive (no beat since
/// `alive_after`), or unknown.
pub fn orphaned_holds(conn: &Conn, alive_after: i64) -> AppResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id FROM reservations WHERE state = 'held'
         AND (owner IS NULL OR owner NOT IN (SELECT id FROM instances WHERE heartbeat_at >= ?1))",
    )?;
    let rows = stmt.query_map([alive_after], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Takes the lease `name` for `ttl_ms` if it is free, expired or already
/// ours; true when this instance holds it now.
pub fn take_lease(tx: &Tx<'_>, name: &str, now_wall_ms: i64, ttl_ms: i64) -> AppResult<bool> {
    let n = tx.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.expires_at < ?4 OR leases.holder = excluded.holder",
        params![name, tx.instance(), now_wall_ms + ttl_ms, now_wall_ms],
    )?;
    Ok(n == 1)
}
