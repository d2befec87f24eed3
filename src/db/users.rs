//! Users: upsert on login, lookup for auth, account deletion.

use crate::db::sql::{params, Conn, OptionalExtension, Tx};

use crate::error::AppResult;
use crate::ids::UserId;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: UserId,
    pub created_at: i64,
}

/// Finds the user with this openid or creates one; unionid is kept when
/// WeChat sends it (and never erased by a login that omits it).
pub fn upsert_by_openid(
    tx: &Tx<'_>,
    openid: &str,
    unionid: Option<&str>,
    now: i64,
) -> AppResult<UserRow> {
    let existing = tx
        .prepare_cached("SELECT id, created_at FROM users WHERE openid = ?1")?
        .query_row([openid], |r| {
            Ok(UserRow {
                id: r.get(0)?,
                created_at: r.get(1)?,
            })
        })
        .optional()?;
    if let Some(u) = existing {
        tx.prepare_cached(
            "UPDATE users SET last_login_at = ?2, unionid = COALESCE(?3, unionid) WHERE id = ?1",
        )?
        .execute(params![u.id, now, unionid])?;
        return Ok(u);
    }
    let id = UserId::new(now);
    tx.prepare_cached("INSERT INTO users (id, openid, unionid, created_at, last_login_at) VALUES (?1, ?2, ?3, ?4, ?4)")?.execute(
        params![id, openid, unionid, now],
    )?;
    Ok(UserRow {
        id,
        created_at: now,
    })
}

/// A live (not deleted) user.
pub fn find_active(conn: &Conn, id: &UserId) -> AppResult<Option<UserRow>> {
    Ok(conn
        .prepare_cached("SELECT id, created_at FROM users WHERE id = ?1 AND deleted_at IS NULL")?
        .query_row([id], |r| {
            Ok(UserRow {
                id: r.get(0)?,
                created_at: r.get(1)?,
            })
        })
        .optional()?)
}

/// A live user's openid (what WeChat's per-user APIs take).
pub fn openid(conn: &Conn, id: &UserId) -> AppResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT openid FROM users WHERE id = ?1 AND deleted_at IS NULL")?
        .query_row([id], |r| r.get::<Option<String>>(0))
        .optional()?
        .flatten())
}

/// Any user, deleted or not (admin).
pub fn exists(conn: &Conn, id: &UserId) -> AppResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Erases the user's personal data: messages, sessions, media records and
/// locations go; the user row stays without openid/unionid so payments and
/// ledger rows keep an anonymous owner for accounting. Returns the object
/// keys of the deleted media so the caller can remove the objects.
pub fn delete_account(tx: &Tx<'_>, id: &UserId, now: i64) -> AppResult<Vec<String>> {
    let keys: Vec<String> = {
        let mut stmt = tx.prepare_cached("SELECT object_key FROM media WHERE user_id = ?1")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    tx.prepare_cached("DELETE FROM messages WHERE user_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM media WHERE user_id = ?1")?
        .execute([id])?;
    // job results hold extracted text; their items go by cascade
    tx.prepare_cached("DELETE FROM jobs WHERE user_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM location_logs WHERE user_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("UPDATE payments SET payer_openid = NULL WHERE user_id = ?1")?
        .execute([id])?;
    tx.prepare_cached(
        "UPDATE users SET openid = NULL, unionid = NULL, deleted_at = ?2 WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    Ok(keys)
}
