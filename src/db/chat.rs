//! Conversations (sessions) and their messages.

use crate::db::sql::{params, Conn, OptionalExtension, Row, Tx};

use crate::chat::types::{MessageStatus, Role};
use crate::error::AppResult;
use crate::ids::{MessageId, SessionId, UserId};

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: SessionId,
    pub title: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub seq: i64,
    pub id: MessageId,
    pub session_id: SessionId,
    pub role: Role,
    pub content: String,
    pub model: Option<String>,
    pub status: MessageStatus,
    pub created_at: i64,
    /// JSON list of the media a user message carried (see `media::AttachmentRef`).
    pub attachments: Option<String>,
}

const MESSAGE_COLS: &str =
    "seq, id, session_id, role, content, model, status, created_at, attachments";

fn message_row(r: &Row<'_>) -> crate::db::sql::DbResult<MessageRow> {
    Ok(MessageRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        session_id: r.get(2)?,
        role: r.get(3)?,
        content: r.get(4)?,
        model: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
        attachments: r.get(8)?,
    })
}

fn session_row(r: &Row<'_>) -> crate::db::sql::DbResult<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        title: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
    })
}

pub fn find_session(
    conn: &Conn,
    user_id: &UserId,
    id: &SessionId,
) -> AppResult<Option<SessionRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, title, created_at, updated_at FROM sessions WHERE id = ?1 AND user_id = ?2",
        )?
        .query_row(params![id, user_id], session_row)
        .optional()?)
}

/// The user's most recently active session, if its last message was written
/// at or after `since` (unix ms).
pub fn latest_session_active_since(
    conn: &Conn,
    user_id: &UserId,
    since: i64,
) -> AppResult<Option<SessionId>> {
    Ok(conn
        .prepare_cached(
            "SELECT s.id FROM (SELECT id FROM sessions WHERE user_id = ?1
                               ORDER BY updated_at DESC, id DESC LIMIT 1) s
             WHERE (SELECT created_at FROM messages WHERE session_id = s.id
                    ORDER BY seq DESC LIMIT 1) >= ?2",
        )?
        .query_row(params![user_id, since], |r| r.get(0))
        .optional()?)
}

pub fn create_session(
    tx: &Tx<'_>,
    id: &SessionId,
    user_id: &UserId,
    title: &str,
    now: i64,
) -> AppResult<()> {
    tx.prepare_cached("INSERT INTO sessions (id, user_id, title, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)")?.execute(
        params![id, user_id, title, now],
    )?;
    Ok(())
}

pub struct NewMessage<'a> {
    pub id: &'a MessageId,
    pub session_id: &'a SessionId,
    pub user_id: &'a UserId,
    pub role: Role,
    pub content: &'a str,
    pub model: Option<&'a str>,
    pub status: MessageStatus,
    pub reply_to: Option<&'a MessageId>,
    pub client_msg_id: Option<&'a str>,
    pub now: i64,
}

pub fn insert_message(tx: &Tx<'_>, m: &NewMessage<'_>) -> AppResult<i64> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO messages (id, session_id, user_id, role, content, model, status, reply_to,
                               client_msg_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         RETURNING seq",
        )?
        .query_row(
            params![
                m.id,
                m.session_id,
                m.user_id,
                m.role,
                m.content,
                m.model,
                m.status,
                m.reply_to,
                m.client_msg_id,
                m.now
            ],
            |r| r.get(0),
        )?)
}

pub fn find_message(conn: &Conn, id: &MessageId) -> AppResult<Option<MessageRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE id = ?1"
        ))?
        .query_row([id], message_row)
        .optional()?)
}

/// The reply to an earlier request carrying the same client_msg_id.
pub fn reply_for_client_msg(
    conn: &Conn,
    user_id: &UserId,
    client_msg_id: &str,
) -> AppResult<Option<MessageRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE reply_to = (
                     SELECT id FROM messages WHERE user_id = ?1 AND client_msg_id = ?2)"
        ))?
        .query_row(params![user_id, client_msg_id], message_row)
        .optional()?)
}

/// A message as context for the next turn.
#[derive(Debug, Clone)]
pub struct ContextRow {
    pub role: Role,
    pub content: String,
    /// JSON list of the media it carried (see `media::AttachmentRef`).
    pub attachments: Option<String>,
}

/// The last `limit` completed messages of the session before `before_seq`,
/// oldest first.
pub fn context(
    conn: &Conn,
    session_id: &SessionId,
    before_seq: i64,
    limit: u32,
) -> AppResult<Vec<ContextRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT role, content, attachments FROM messages
         WHERE session_id = ?1 AND seq < ?2 AND status = 'complete'
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![session_id, before_seq, limit], |r| {
        Ok(ContextRow {
            role: r.get(0)?,
            content: r.get(1)?,
            attachments: r.get(2)?,
        })
    })?;
    let mut out: Vec<ContextRow> = rows.collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

/// Remembers which media a user message carried.
pub fn set_attachments(tx: &Tx<'_>, message_id: &MessageId, json: &str) -> AppResult<()> {
    tx.prepare_cached("UPDATE messages SET attachments = ?2 WHERE id = ?1")?
        .execute(params![message_id, json])?;
    Ok(())
}

/// Stores the finished reply and bumps its session's activity; returns the
/// stored row, or None when the row is gone (its session or account was
/// deleted while the reply was generated).
pub fn complete_reply(
    tx: &Tx<'_>,
    id: &MessageId,
    session_id: &SessionId,
    content: &str,
    tokens: (Option<i64>, Option<i64>),
    now: i64,
) -> AppResult<Option<MessageRow>> {
    let row = tx
        .prepare_cached(&format!(
            "UPDATE messages SET content = ?2, status = 'complete', prompt_tokens = ?3,
             completion_tokens = ?4 WHERE id = ?1 RETURNING {MESSAGE_COLS}"
        ))?
        .query_row(params![id, content, tokens.0, tokens.1], message_row)
        .optional()?;
    if row.is_some() {
        tx.prepare_cached("UPDATE sessions SET updated_at = ?2 WHERE id = ?1")?
            .execute(params![session_id, now])?;
    }
    Ok(row)
}

/// Removes a turn that produced nothing (the user may retry it with the same
/// client_msg_id), and its session when that leaves it empty.
pub fn discard_turn(tx: &Tx<'_>, user_msg_id: &MessageId, reply_id: &MessageId) -> AppResult<()> {
    let session: Option<String> = tx
        .prepare_cached("SELECT session_id FROM messages WHERE id = ?1")?
        .query_row([reply_id], |r| r.get(0))
        .optional()?;
    tx.prepare_cached("DELETE FROM messages WHERE id IN (?1, ?2)")?
        .execute(params![user_msg_id, reply_id])?;
    if let Some(s) = session {
        tx.prepare_cached("DELETE FROM sessions WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM messages WHERE session_id = ?1)")?.execute(
            [s],
        )?;
    }
    Ok(())
}

/// A reply cut short by an upstream failure: its partial text is kept as
/// `failed`, and its request may be retried under the same client_msg_id.
pub fn store_failed(tx: &Tx<'_>, reply_id: &MessageId, partial: &str) -> AppResult<()> {
    tx.prepare_cached("UPDATE messages SET content = ?2, status = 'failed' WHERE id = ?1")?
        .execute(params![reply_id, partial])?;
    release_client_msg_id(tx, reply_id)
}

/// A reply withheld by content security: only `notice` is kept.
pub fn store_blocked(tx: &Tx<'_>, reply_id: &MessageId, notice: &str) -> AppResult<()> {
    tx.prepare_cached("UPDATE messages SET content = ?2, status = 'blocked' WHERE id = ?1")?
        .execute(params![reply_id, notice])?;
    Ok(())
}

fn release_client_msg_id(tx: &Tx<'_>, reply_id: &str) -> AppResult<()> {
    tx.prepare_cached("UPDATE messages SET client_msg_id = NULL WHERE id = (SELECT reply_to FROM messages WHERE id = ?1)")?.execute(
        [reply_id],
    )?;
    Ok(())
}

/// A message of this user's.
pub fn find_user_message(
    conn: &Conn,
    user_id: &UserId,
    id: &MessageId,
) -> AppResult<Option<MessageRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE id = ?1 AND user_id = ?2"
        ))?
        .query_row(params![id, user_id], message_row)
        .optional()?)
}

/// Replies still `generating` with no live generator (after a crash) become
/// failed with whatever they hold, and their requests become retryable.
pub fn fail_orphaned(tx: &Tx<'_>, reply_id: &str) -> AppResult<()> {
    tx.prepare_cached(
        "UPDATE messages SET status = 'failed' WHERE id = ?1 AND status = 'generating'",
    )?
    .execute([reply_id])?;
    release_client_msg_id(tx, reply_id)
}

/// Most recently active first; the cursor is the last item's (updated_at, id).
pub fn list_sessions(
    conn: &Conn,
    user_id: &UserId,
    after: Option<(i64, String)>,
    limit: u32,
) -> AppResult<Vec<SessionRow>> {
    let (ts, id) = after.unwrap_or((i64::MAX, String::new()));
    let mut stmt = conn.prepare_cached(
        "SELECT id, title, created_at, updated_at FROM sessions
         WHERE user_id = ?1 AND (updated_at < ?2 OR (updated_at = ?2 AND id < ?3) OR ?3 = '')
         ORDER BY updated_at DESC, id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![user_id, ts, id, limit], session_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Newest first, strictly before `before_seq`.
pub fn list_messages(
    conn: &Conn,
    session_id: &SessionId,
    before_seq: Option<i64>,
    limit: u32,
) -> AppResult<Vec<MessageRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM messages WHERE session_id = ?1 AND seq < ?2
         ORDER BY seq DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![session_id, before_seq.unwrap_or(i64::MAX), limit],
        message_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes the user's session and its messages; false when not theirs.
pub fn delete_session(tx: &Tx<'_>, user_id: &UserId, id: &SessionId) -> AppResult<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM sessions WHERE id = ?1 AND user_id = ?2")?
        .execute(params![id, user_id])?
        > 0)
}
