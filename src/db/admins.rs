//! The operator console's accounts, sessions, API tokens and audit trail
//! (`crate::console`). Secrets are stored as hashes only: an Argon2 PHC
//! string for passwords, SHA-256 hex for session and API tokens.

use crate::db::sql::{params, Conn, OptionalExtension, Row, Tx};

use crate::error::AppResult;

#[derive(Debug, Clone)]
pub struct AdminRow {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

fn admin(r: &Row<'_>) -> crate::db::sql::DbResult<AdminRow> {
    Ok(AdminRow {
        id: r.get(0)?,
        name: r.get(1)?,
        password_hash: r.get(2)?,
        created_at: r.get(3)?,
        last_login_at: r.get(4)?,
    })
}

pub fn find_by_name(conn: &Conn, name: &str) -> AppResult<Option<AdminRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, password_hash, created_at, last_login_at FROM admins WHERE name = ?1",
        )?
        .query_row([name], admin)
        .optional()?)
}

pub fn list(conn: &Conn) -> AppResult<Vec<(AdminRow, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.name, a.password_hash, a.created_at, a.last_login_at,
                (SELECT count(*) FROM admin_tokens t WHERE t.admin_id = a.id AND t.revoked_at IS NULL)
         FROM admins a ORDER BY a.name",
    )?;
    let rows = stmt.query_map([], |r| Ok((admin(r)?, r.get(5)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Creates an admin; false when the name is taken.
pub fn create(tx: &Tx<'_>, name: &str, password_hash: &str, now: i64) -> AppResult<bool> {
    let n = tx
        .prepare_cached(
            "INSERT INTO admins (name, password_hash, created_at, password_set_at)
             VALUES (?1, ?2, ?3, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![name, password_hash, now])?;
    Ok(n == 1)
}

/// Sets a new password and ends every session of the admin; false when
/// there is no such admin.
pub fn reset_password(tx: &Tx<'_>, name: &str, password_hash: &str, now: i64) -> AppResult<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE admins SET password_hash = ?2, password_set_at = ?3 WHERE name = ?1",
        )?
        .execute(params![name, password_hash, now])?;
    tx.prepare_cached(
        "DELETE FROM admin_sessions WHERE admin_id = (SELECT id FROM admins WHERE name = ?1)",
    )?
    .execute([name])?;
    Ok(n == 1)
}

pub fn set_last_login(tx: &Tx<'_>, id: i64, now: i64) -> AppResult<()> {
    tx.prepare_cached("UPDATE admins SET last_login_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

// ------------------------------------------------------------------ sessions

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub admin_id: i64,
    pub admin_name: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

pub fn insert_session(
    tx: &Tx<'_>,
    token_hash: &str,
    admin_id: i64,
    csrf_token: &str,
    now: i64,
) -> AppResult<()> {
    tx.prepare_cached(
        "INSERT INTO admin_sessions (token_hash, admin_id, csrf_token, created_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![token_hash, admin_id, csrf_token, now])?;
    Ok(())
}

pub fn find_session(conn: &Conn, token_hash: &str) -> AppResult<Option<SessionRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT s.admin_id, a.name, s.csrf_token, s.created_at, s.last_seen_at
             FROM admin_sessions s JOIN admins a ON a.id = s.admin_id WHERE s.token_hash = ?1",
        )?
        .query_row([token_hash], |r| {
            Ok(SessionRow {
                admin_id: r.get(0)?,
                admin_name: r.get(1)?,
                csrf_token: r.get(2)?,
                created_at: r.get(3)?,
                last_seen_at: r.get(4)?,
            })
        })
        .optional()?)
}

pub fn touch_session(tx: &Tx<'_>, token_hash: &str, now: i64) -> AppResult<()> {
    tx.prepare_cached("UPDATE admin_sessions SET last_seen_at = ?2 WHERE token_hash = ?1")?
        .execute(params![token_hash, now])?;
    Ok(())
}

pub fn delete_session(tx: &Tx<'_>, token_hash: &str) -> AppResult<()> {
    tx.prepare_cached("DELETE FROM admin_sessions WHERE token_hash = ?1")?
        .execute([token_hash])?;
    Ok(())
}

/// Drops sessions idle since `idle_before` or created before `created_before`.
pub fn delete_expired_sessions(
    tx: &Tx<'_>,
    idle_before: i64,
    created_before: i64,
) -> AppResult<usize> {
    Ok(tx
        .prepare_cached("DELETE FROM admin_sessions WHERE last_seen_at < ?1 OR created_at < ?2")?
        .execute(params![idle_before, created_before])?)
}

// -------------------------------------------------------------------- tokens

/// Stores an API token of the named admin; None when there is no such admin.
pub fn insert_token(
    tx: &Tx<'_>,
    name: &str,
    token_hash: &str,
    label: &str,
    now: i64,
) -> AppResult<Option<i64>> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO admin_tokens (admin_id, token_hash, label, created_at)
             SELECT id, ?2, ?3, ?4 FROM admins WHERE name = ?1 RETURNING id",
        )?
        .query_row(params![name, token_hash, label, now], |r| r.get(0))
        .optional()?)
}

/// (admin id, admin name, token id) of a live API token.
pub fn find_token(conn: &Conn, token_hash: &str) -> AppResult<Option<(i64, String, i64)>> {
    Ok(conn
        .prepare_cached(
            "SELECT a.id, a.name, t.id FROM admin_tokens t JOIN admins a ON a.id = t.admin_id
             WHERE t.token_hash = ?1 AND t.revoked_at IS NULL",
        )?
        .query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub admin_id: i64,
    pub admin_name: String,
    pub label: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const TOKEN_COLUMNS: &str = "t.id, t.admin_id, a.name, t.label, t.created_at, t.revoked_at
     FROM admin_tokens t JOIN admins a ON a.id = t.admin_id";

fn token_row(r: &Row<'_>) -> crate::db::sql::DbResult<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        admin_id: r.get(1)?,
        admin_name: r.get(2)?,
        label: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

/// Every API token (live and revoked), newest first; never the hash.
pub fn tokens(conn: &Conn) -> AppResult<Vec<TokenRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} ORDER BY t.id DESC"))?;
    let rows = stmt.query_map([], token_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn token(conn: &Conn, id: i64) -> AppResult<Option<TokenRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} WHERE t.id = ?1"))?
        .query_row([id], token_row)
        .optional()?)
}

/// Open browser sessions per admin id.
pub fn session_counts(conn: &Conn) -> AppResult<Vec<(i64, i64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT admin_id, count(*) FROM admin_sessions GROUP BY admin_id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes a token by id; false when it was not live.
pub fn revoke_token(tx: &Tx<'_>, id: i64, now: i64) -> AppResult<bool> {
    Ok(tx
        .prepare_cached(
            "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![id, now])?
        == 1)
}

// --------------------------------------------------------------------- audit

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub created_at: i64,
}

pub fn append_audit(
    tx: &Tx<'_>,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&str>,
    after: Option<&str>,
    now: i64,
) -> AppResult<()> {
    tx.prepare_cached(
        "INSERT INTO admin_audit (actor, action, target, before, after, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![actor, action, target, before, after, now])?;
    Ok(())
}

/// The newest `limit` audit rows, newest first.
pub fn audit_tail(conn: &Conn, limit: u32) -> AppResult<Vec<AuditRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, actor, action, target, before, after, created_at FROM admin_audit
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditRow {
            id: r.get(0)?,
            actor: r.get(1)?,
            action: r.get(2)?,
            target: r.get(3)?,
            before: r.get(4)?,
            after: r.get(5)?,
            created_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
