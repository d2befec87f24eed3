//! Upload domain: presign -> (client PUTs the bytes) -> commit; media
//! lookups; the sweep of uploads never committed.

use crate::db::sql::Tx;
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Utc};
use serde_json::json;

use super::views::{MediaResponse, MediaView};
use super::{SignedUrl, StoreError, WriteError};
use crate::auth::AuthUser;
use crate::clock::to_ms;
use crate::db::media::{self as repo, MediaRow, NewMedia};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;
use crate::ids::{MediaId, UserId};

/// A pending upload older than this is abandoned: refused at commit and
/// swept with its object.
pub const PENDING_MAX_AGE: chrono::Duration = chrono::Duration::days(1);

/// Rows (and objects) handled per sweep round.
const SWEEP_BATCH: u32 = 500;

pub struct PresignRequest {
    pub filename: String,
    pub content_type: String,
    pub size: i64,
}

pub struct Presigned {
    pub upload_id: MediaId,
    pub upload: SignedUrl,
}

/// The extension of the object key, from the (allowlisted) content type,
/// never from the client's filename.
fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/heic" => "heic",
        "audio/mpeg" => "mp3",
        "audio/mp4" | "audio/x-m4a" => "m4a",
        "audio/aac" => "aac",
        "audio/wav" | "audio/x-wav" => "wav",
        "video/mp4" => "mp4",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    }
}

pub fn object_key(
    user_id: &UserId,
    media_id: &MediaId,
    content_type: &str,
    now: DateTime<Utc>,
) -> String {
    format!(
        "u/{user_id}/{:04}/{:02}/{media_id}.{}",
        now.year(),
        now.month(),
        extension(content_type)
    )
}

pub(crate) fn storage_error(e: StoreError) -> AppError {
    let mut err = AppError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::UpstreamError,
        "object storage is unavailable, retry later",
    );
    err.source = Some(e.into());
    err
}

fn validate(req: &PresignRequest, state: &AppState) -> AppResult<(String, String, u64)> {
    let (filename, content_type) = validate_file(&req.filename, &req.content_type, state)?;
    if req.size <= 0 {
        return Err(AppError::validation("size", "must be > 0"));
    }
    let size = req.size as u64;
    let cfg = &state.config().storage;
    if size > cfg.max_upload_bytes {
        return Err(too_large(cfg.max_upload_bytes));
    }
    Ok((filename, content_type, size))
}

fn too_large(max: u64) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("size exceeds the limit of {max} bytes"),
    )
    .with("max_upload_bytes", json!(max))
}

/// The checks every upload passes, whichever way it arrives: a file name
/// and an allowlisted type. Returns them normalised.
fn validate_file(
    filename: &str,
    content_type: &str,
    state: &AppState,
) -> AppResult<(String, String)> {
    let filename = filename.trim();
    if filename.is_empty() || filename.chars().count() > 255 {
        return Err(AppError::validation(
            "filename",
            "must be 1 to 255 characters",
        ));
    }
    if filename.chars().any(char::is_control) {
        return Err(AppError::validation(
            "filename",
            "must not contain control characters",
        ));
    }
    let content_type = content_type.trim().to_ascii_lowercase();
    let cfg = &state.config().storage;
    if !cfg.allowed_content_types.contains(&content_type) {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("content_type {content_type:?} is not accepted"),
        )
        .with("allowed_content_types", json!(cfg.allowed_content_types)));
    }
    Ok((filename.to_string(), content_type))
}

fn quota_exceeded(message: String, key: &str, limit: u64) -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::StorageQuotaExceeded,
        message,
    )
    .with(key, json!(limit))
}

/// The user's storage bounds, checked in the write that adds the row, so
/// concurrent uploads cannot both slip under them: `size` more bytes must
/// fit `max_bytes`, and (for a presign) one more pending upload must fit
/// `max_pending`.
fn within_quota(
    tx: &Tx<'_>,
    user_id: &UserId,
    size: u64,
    max_bytes: u64,
    max_pending: Option<u32>,
) -> AppResult<()> {
    let (bytes, pending) = repo::usage_of(tx, user_id)?;
    if let Some(max_pending) = max_pending.filter(|m| pending >= i64::from(*m)) {
        return Err(quota_exceeded(
            format!("{pending} uploads are pending; commit them or wait for them to expire"),
            "max_pending_uploads_per_user",
            u64::from(max_pending),
        ));
    }
    if bytes as u64 + size > max_bytes {
        return Err(quota_exceeded(
            format!(
                "storing {size} more bytes would pass your {max_bytes}-byte limit ({bytes} used)"
            ),
            "max_bytes_per_user",
            max_bytes,
        ));
    }
    Ok(())
}

pub async fn presign(
    state: &AppState,
    user: &AuthUser,
    req: PresignRequest,
) -> AppResult<Presigned> {
    let (filename, content_type, size) = validate(&req, state)?;
    let now = state.now();
    let id = MediaId::new(to_ms(now));
    let key = object_key(&user.id, &id, &content_type, now);
    // Signing is local computation; do it before the row exists so a
    // failure leaves nothing behind.
    let upload = state
        .storage()
        .upload_url(&key, &content_type, size, now)
        .map_err(AppError::internal)?;
    let (uid, mid) = (user.id.clone(), id.clone());
    let (max_bytes, max_pending) = (
        state.config().storage.max_bytes_per_user,
        state.config().storage.max_pending_uploads_per_user,
    );
    state
        .db()
        .write(move |tx| {
            // In the write that adds the row: concurrent presigns cannot
            // both slip under the bound.
            within_quota(tx, &uid, size, max_bytes, Some(max_pending))?;
            repo::insert_pending(
                tx,
                &NewMedia {
                    id: &mid,
                    user_id: &uid,
                    object_key: &key,
                    filename: &filename,
                    content_type: &content_type,
                    size: size as i64,
                },
                to_ms(now),
            )
        })
        .await?;
    Ok(Presigned {
        upload_id: id,
        upload,
    })
}

/// The type of a file part: as sent, unless missing or generic (some
/// devices send `application/octet-stream` from `wx.uploadFile`), then from
/// the file name's extension.
pub fn part_content_type(sent: Option<&str>, filename: &str) -> String {
    let sent = sent
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty() && t != "application/octet-stream");
    if let Some(t) = sent {
        return t;
    }
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
    .to_string()
}

/// POST /api/upload: one file part streamed to storage and committed in
/// one step. Checked like a presign (name, type, `storage.max_upload_bytes`,
/// cut off while streaming); answered like a commit.
pub async fn upload_stream<S, E>(
    state: &AppState,
    user: &AuthUser,
    filename: &str,
    content_type: &str,
    body: S,
) -> AppResult<MediaResponse>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send,
    E: Into<axum::BoxError>,
{
    let (filename, content_type) = validate_file(filename, content_type, state)?;
    let max = state.config().storage.max_upload_bytes;
    let now = state.now();
    let id = MediaId::new(to_ms(now));
    let key = object_key(&user.id, &id, &content_type, now);
    let size = match state.storage().write_chunks(&key, max, body).await {
        Ok(n) => n,
        Err(WriteError::TooLarge) => return Err(too_large(max)),
        Err(WriteError::Body(e)) => {
            return Err(if super::handlers::is_length_limit(&e) {
                too_large(max)
            } else {
                AppError::invalid_request(format!("the upload body was unreadable: {e}"))
            })
        }
        Err(WriteError::Store(e)) => return Err(storage_error(e)),
    };
    if size == 0 {
        let _ = state.storage().delete(&key).await;
        return Err(AppError::validation("file", "is empty"));
    }
    let (uid, mid, k) = (user.id.clone(), id.clone(), key.clone());
    let max_bytes = state.config().storage.max_bytes_per_user;
    let stored = state
        .db()
        .write(move |tx| {
            within_quota(tx, &uid, size, max_bytes, None)?;
            repo::insert_committed(
                tx,
                &NewMedia {
                    id: &mid,
                    user_id: &uid,
                    object_key: &k,
                    filename: &filename,
                    content_type: &content_type,
                    size: size as i64,
                },
                "upload",
                to_ms(now),
            )
        })
        .await;
    if let Err(e) = stored {
        // Never an object without its row.
        let _ = state.storage().delete(&key).await;
        return Err(e);
    }
    let m = find(state, user, &id)
        .await?
        .ok_or_else(|| AppError::not_found("upload"))?;
    crate::media::on_commit(state, &m).await;
    tracing::info!(media_id = %m.id, size = m.size, "upload stored (multipart)");
    media_view(state, &m).await
}

async fn find(state: &AppState, user: &AuthUser, id: &MediaId) -> AppResult<Option<MediaRow>> {
    let (uid, id) = (user.id.clone(), id.clone());
    state
        .db()
        .run(move |c| repo::find_for_user(c, &uid, &id))
        .await
}

/// The client's view of a committed media record, with a fresh download URL.
pub async fn media_view(state: &AppState, m: &MediaRow) -> AppResult<MediaResponse> {
    // An image content security blocked is never handed out again.
    crate::moderation::images::check_download(state, m)?;
    let url = state
        .storage()
        .download_url(&m.object_key, &m.content_type, state.now())
        .await
        .map_err(storage_error)?;
    Ok(MediaResponse {
        media: MediaView {
            id: m.id.clone(),
            content_type: m.content_type.clone(),
            size: m.size,
            url: url.url,
        },
        url_expires_at: crate::clock::rfc3339(to_ms(url.expires_at)),
    })
}

/// Verifies the uploaded object and marks the media committed. Idempotent:
/// committing a committed upload answers the same record.
pub async fn commit(
    state: &AppState,
    user: &AuthUser,
    upload_id: &MediaId,
) -> AppResult<MediaResponse> {
    let not_found = || AppError::not_found("upload");
    let m = find(state, user, upload_id).await?.ok_or_else(not_found)?;
    if m.committed {
        return media_view(state, &m).await;
    }
    let now = state.now();
    // Past this age the sweep may be deleting it right now.
    if m.created_at < to_ms(now - PENDING_MAX_AGE) {
        return Err(not_found());
    }
    let stored = state
        .storage()
        .size_of(&m.object_key)
        .await
        .map_err(storage_error)?;
    let Some(stored) = stored else {
        // Not final: the PUT may still be on its way.
        return Err(AppError::new(
            StatusCode::CONFLICT,
            ErrorCode::UploadIncomplete,
            "nothing has been uploaded for this upload_id yet; PUT the file to its url first",
        ));
    };
    if stored != m.size as u64 {
        // A wrong object is never kept; the row stays pending so the client
        // may PUT again while its URL is valid.
        state
            .storage()
            .delete(&m.object_key)
            .await
            .map_err(storage_error)?;
        return Err(AppError::validation(
            "size",
            format!(
                "the uploaded object has {stored} bytes, {} were declared; it was deleted",
                m.size
            ),
        ));
    }
    let id = m.id.clone();
    let ms = to_ms(now);
    let won = state
        .db()
        .write(move |tx| repo::mark_committed(tx, &id, ms))
        .await?;
    // Whether we or a concurrent commit won, it is committed now.
    let m = find(state, user, upload_id).await?.ok_or_else(not_found)?;
    if !m.committed {
        return Err(not_found());
    }
    if won {
        // Once, by the commit that won: derived text (PDF text layer).
        crate::media::on_commit(state, &m).await;
    }
    tracing::info!(media_id = %m.id, size = m.size, "upload committed");
    media_view(state, &m).await
}

/// The caller's committed media record; pending or foreign ones are 404.
pub async fn get(state: &AppState, user: &AuthUser, id: &MediaId) -> AppResult<MediaResponse> {
    match find(state, user, id).await? {
        Some(m) if m.committed => media_view(state, &m).await,
        _ => Err(AppError::not_found("media")),
    }
}

/// Deletes uploads left pending for over a day: objects first (so a failed
/// delete is retried next sweep), then their rows. Returns the rows removed.
pub async fn sweep_pending(state: &AppState) -> AppResult<usize> {
    let cutoff = to_ms(state.now() - PENDING_MAX_AGE);
    let mut removed = 0;
    loop {
        let rows = state
            .db()
            .run(move |c| repo::pending_before(c, cutoff, SWEEP_BATCH))
            .await?;
        if rows.is_empty() {
            break;
        }
        let full_batch = rows.len() as u32 == SWEEP_BATCH;
        let keys: Vec<String> = rows.iter().map(|r| r.object_key.clone()).collect();
        let failed = state.storage().delete_all(&keys).await;
        let ids: Vec<MediaId> = rows
            .into_iter()
            .filter(|r| !failed.contains(&r.object_key))
            .map(|r| r.id)
            .collect();
        let n = state
            .db()
            .write(move |tx| repo::delete_pending(tx, &ids))
            .await?;
        removed += n;
        // A batch that could not shrink (the store refuses deletes) would
        // loop forever; the next sweep retries.
        if !failed.is_empty() || !full_batch {
            break;
        }
    }
    tracing::info!(deleted = removed, "pending upload sweep");
    Ok(removed)
}

/// Runs the sweep at start and hourly, in the background: a slow or
/// unreachable store must not delay startup.
pub fn spawn_sweeper(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // once cluster-wide: the instance holding the lease sweeps
            let lease = std::time::Duration::from_secs(1800);
            match crate::ops::cluster::lease(state.db(), "pending_upload_sweep", lease).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "pending upload sweep lease failed");
                    continue;
                }
            }
            if let Err(e) = sweep_pending(&state).await {
                tracing::warn!(error = %e, "pending upload sweep failed");
            }
        }
    });
}
