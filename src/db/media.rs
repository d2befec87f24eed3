//! Media records: pending uploads and committed objects.

use crate::db::sql::{params, Conn, OptionalExtension, Row, Tx};

use crate::error::AppResult;
use crate::ids::{MediaId, UserId};
use crate::moderation::CheckStatus;

#[derive(Debug, Clone)]
pub struct MediaRow {
    pub id: MediaId,
    pub user_id: UserId,
    pub object_key: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub committed: bool,
    pub created_at: i64,
    /// Content security (images): None = never checked.
    pub check_status: Option<CheckStatus>,
    /// WeChat's label with the verdict.
    pub check_label: Option<i64>,
    /// When the check was started (ms).
    pub check_started_at: Option<i64>,
}

pub struct NewMedia<'a> {
    pub id: &'a MediaId,
    pub user_id: &'a UserId,
    pub object_key: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub size: i64,
}

const COLUMNS: &str = "id, user_id, object_key, filename, content_type, size, state, created_at,
    check_status, check_label, check_started_at";

fn row(r: &Row<'_>) -> crate::db::sql::DbResult<MediaRow> {
    Ok(MediaRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        object_key: r.get(2)?,
        filename: r.get(3)?,
        content_type: r.get(4)?,
        size: r.get(5)?,
        committed: r.get::<String>(6)? == "committed",
        created_at: r.get(7)?,
        check_status: r.get(8)?,
        check_label: r.get(9)?,
        check_started_at: r.get(10)?,
    })
}

/// What a user stores: (bytes of committed and pending media, pending
/// uploads).
pub fn usage_of(conn: &Conn, user_id: &UserId) -> AppResult<(i64, i64)> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0)
             FROM media WHERE user_id = ?1",
        )?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

pub fn insert_pending(tx: &Tx<'_>, m: &NewMedia<'_>, now: i64) -> AppResult<()> {
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
pub fn find_for_user(conn: &Conn, user_id: &UserId, id: &MediaId) -> AppResult<Option<MediaRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM media WHERE id = ?1 AND user_id = ?2"
        ))?
        .query_row(params![id, user_id], row)
        .optional()?)
}

pub fn find_by_key(conn: &Conn, object_key: &str) -> AppResult<Option<MediaRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM media WHERE object_key = ?1"
        ))?
        .query_row([object_key], row)
        .optional()?)
}

/// Marks a pending upload committed; false when it no longer is pending
/// (committed meanwhile, or swept).
pub fn mark_committed(tx: &Tx<'_>, id: &MediaId, now: i64) -> AppResult<bool> {
    let n = tx.prepare_cached("UPDATE media SET state = 'committed', committed_at = ?2 WHERE id = ?1 AND state = 'pending'")?.execute(
        params![id, now],
    )?;
    Ok(n == 1)
}

/// Up to `limit` uploads still pending that were created before `cutoff`.
pub fn pending_before(conn: &Conn, cutoff: i64, limit: u32) -> AppResult<Vec<MediaRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM media WHERE state = 'pending' AND created_at < ?1
         ORDER BY created_at LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![cutoff, limit], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes these rows if they are still pending; returns how many went.
pub fn delete_pending(tx: &Tx<'_>, ids: &[MediaId]) -> AppResult<usize> {
    let mut stmt = tx.prepare_cached("DELETE FROM media WHERE id = ?1 AND state = 'pending'")?;
    let mut n = 0;
    for id in ids {
        n += stmt.execute([id])?;
    }
    Ok(n)
}

/// A committed object the server wrote itself (text-to-speech output).
pub fn insert_committed(tx: &Tx<'_>, m: &NewMedia<'_>, origin: &str, now: i64) -> AppResult<()> {
    tx.execute(
        "INSERT INTO media (id, user_id, object_key, filename, content_type, size, state,
                            created_at, committed_at, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'committed', ?7, ?7, ?8)",
        params![
            m.id,
            m.user_id,
            m.object_key,
            m.filename,
            m.content_type,
            m.size,
            now,
            origin
        ],
    )?;
    Ok(())
}

/// Text derived from a media object, kept apart from `MediaRow` so that
/// ordinary lookups do not drag (up to megabytes of) text along.
#[derive(Debug, Clone, Default)]
pub struct MediaTexts {
    /// PDF text layer, extracted at commit or by a batch job.
    pub extracted_text: Option<String>,
    /// Why extraction failed (no text layer, unreadable PDF, …).
    pub extract_error: Option<String>,
    pub transcript: Option<String>,
    pub description: Option<String>,
}

pub fn texts(conn: &Conn, id: &MediaId) -> AppResult<MediaTexts> {
    Ok(conn
        .query_row(
            "SELECT extracted_text, extract_error, transcript, description FROM media WHERE id = ?1",
            [id],
            |r| {
                Ok(MediaTexts {
                    extracted_text: r.get(0)?,
                    extract_error: r.get(1)?,
                    transcript: r.get(2)?,
                    description: r.get(3)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

/// Records the outcome of a text extraction: the text, or why there is none.
pub fn set_extraction(
    tx: &Tx<'_>,
    id: &MediaId,
    outcome: &Result<String, String>,
) -> AppResult<()> {
    let (text, error) = match outcome {
        Ok(t) => (Some(t.as_str()), None),
        Err(e) => (None, Some(e.as_str())),
    };
    tx.prepare_cached("UPDATE media SET extracted_text = ?2, extract_error = ?3 WHERE id = ?1")?
        .execute(params![id, text, error])?;
    Ok(())
}

pub fn set_transcript(tx: &Tx<'_>, id: &MediaId, text: &str) -> AppResult<()> {
    tx.prepare_cached("UPDATE media SET transcript = ?2 WHERE id = ?1")?
        .execute(params![id, text])?;
    Ok(())
}

pub fn set_description(tx: &Tx<'_>, id: &MediaId, text: &str) -> AppResult<()> {
    tx.prepare_cached("UPDATE media SET description = ?2 WHERE id = ?1")?
        .execute(params![id, text])?;
    Ok(())
}

/// A content check was started: the media waits for its verdict under
/// `trace_id`. A verdict already stored is kept (a restart of the check
/// cannot undo it).
pub fn set_check_started(tx: &Tx<'_>, id: &MediaId, trace_id: &str, now: i64) -> AppResult<()> {
    tx.prepare_cached(
        "UPDATE media SET check_status = 'pending', check_trace_id = ?2, check_label = NULL,
                check_started_at = ?3, check_done_at = NULL
         WHERE id = ?1 AND (check_status IS NULL OR check_status = 'pending')",
    )?
    .execute(params![id, trace_id, now])?;
    Ok(())
}

/// What a pushed verdict changed.
#[derive(Debug, Clone)]
pub struct CheckApplied {
    pub media_id: MediaId,
    /// The status before (None: never checked).
    pub before: Option<CheckStatus>,
}

/// Stores the verdict for `trace_id`; None when no media has that trace
/// (unknown, or its media was deleted). A verdict is final: a later push
/// for the same trace (WeChat retries) changes nothing.
pub fn apply_check(
    tx: &Tx<'_>,
    trace_id: &str,
    status: CheckStatus,
    label: Option<i64>,
    now: i64,
) -> AppResult<Option<CheckApplied>> {
    let found: Option<(MediaId, Option<CheckStatus>)> = tx
        .prepare_cached("SELECT id, check_status FROM media WHERE check_trace_id = ?1")?
        .query_row([trace_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((media_id, before)) = found else {
        return Ok(None);
    };
    if before == Some(CheckStatus::Pending) {
        tx.prepare_cached(
            "UPDATE media SET check_status = ?2, check_label = ?3, check_done_at = ?4 WHERE id = ?1",
        )?
        .execute(params![media_id, status, label, now])?;
    }
    Ok(Some(CheckApplied { media_id, before }))
}
