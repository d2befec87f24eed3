//! What the models see of a user's media: images for vision models, the
//! text layer of PDFs, transcripts of audio (docs/media.md).

pub mod pdf;

use std::sync::Arc;

use base64::Engine;
use serde::Serialize;

use crate::db::media::{self as repo, MediaRow};
use crate::error::{AppError, AppResult};
use crate::http::AppState;
use crate::ids::{MediaId, UserId};
use crate::llm::{Image, Route};

/// Anthropic's per-image limit, and a sane bound for OpenAI's too.
pub const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;

/// Called once when an upload is committed: PDFs get their text extracted
/// and stored (or the reason there is none); with `moderation.images`, an
/// image's content check is started. Never fails the commit.
pub async fn on_commit(state: &AppState, m: &MediaRow) {
    crate::moderation::images::on_commit(state, m).await;
    if m.content_type != "application/pdf" {
        return;
    }
    if let Err(e) = extract_and_store(state, m).await {
        tracing::warn!(media_id = %m.id, error = %e, "could not record PDF text extraction");
    }
}

/// Extracts the PDF's text and stores the outcome; returns it.
pub async fn extract_and_store(
    state: &AppState,
    m: &MediaRow,
) -> AppResult<Result<String, String>> {
    let max = state.config().storage.max_upload_bytes;
    let outcome = match state.storage().read_all(&m.object_key, max).await {
        Ok(Some(bytes)) => {
            let limits = pdf::Limits::from_config(&state.config().storage);
            pdf::extract(bytes, &limits)
                .await
                .map_err(|e| format!("{}: {e}", m.filename))
        }
        Ok(None) => Err("the PDF is larger than storage.max_upload_bytes".into()),
        // Not the PDF's fault: report it, record nothing, let a later
        // attempt (attach, batch job) try again.
        Err(e) => return Err(crate::storage::service::storage_error(e)),
    };
    match &outcome {
        Ok(t) => tracing::info!(media_id = %m.id, chars = t.len(), "PDF text extracted"),
        Err(e) => tracing::info!(media_id = %m.id, error = %e, "PDF has no usable text"),
    }
    let (id, o) = (m.id.clone(), outcome.clone());
    state
        .db()
        .write(move |tx| repo::set_extraction(tx, &id, &o))
        .await?;
    Ok(outcome)
}

/// The stored text of a PDF, extracting it now if that never happened
/// (uploads committed before extraction existed).
pub async fn pdf_text(state: &AppState, m: &MediaRow) -> AppResult<Result<String, String>> {
    let id = m.id.clone();
    let t = state.db().run(move |c| repo::texts(c, &id)).await?;
    match (t.extracted_text, t.extract_error) {
        (Some(text), _) => Ok(Ok(text)),
        (None, Some(err)) => Ok(Err(err)),
        (None, None) => extract_and_store(state, m).await,
    }
}

/// How an attachment is remembered on its message (JSON in
/// `messages.attachments`), so later turns can mention it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AttachmentRef {
    pub id: MediaId,
    pub content_type: String,
    pub filename: String,
}

/// Attachments ready for the model.
#[derive(Default)]
pub struct Prepared {
    pub refs: Vec<AttachmentRef>,
    /// Appended to the user's message for the model (PDF text, transcripts).
    pub text: String,
    pub images: Vec<Arc<Image>>,
}

/// Checks every attachment (the caller's committed media, a kind the
/// model can take) and loads what the model needs. Runs before anything
/// is reserved, so every refusal is free.
pub async fn prepare(
    state: &AppState,
    user_id: &UserId,
    ids: &[MediaId],
    route: &Route,
) -> AppResult<Prepared> {
    let mut out = Prepared::default();
    if ids.is_empty() {
        return Ok(out);
    }
    let max = state.config().llm.max_attachments;
    if ids.len() > max {
        return Err(AppError::validation(
            "attachments",
            format!("at most {max} attachments per message"),
        ));
    }
    let mut rows = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(AppError::validation(
                &format!("attachments[{i}]"),
                "listed twice",
            ));
        }
        let (uid, mid) = (user_id.clone(), id.clone());
        let m = state
            .db()
            .run(move |c| repo::find_for_user(c, &uid, &mid))
            .await?
            .filter(|m| m.committed)
            .ok_or_else(|| AppError::not_found("media"))?;
        rows.push(m);
    }
    // Cheap checks for all before any expensive loading.
    for (i, m) in rows.iter().enumerate() {
        let field = format!("attachments[{i}]");
        let ct = m.content_type.as_str();
        if ct.starts_with("image/") {
            if !route.vision() {
                return Err(AppError::validation(
                    &field,
                    format!(
                        "model {:?} does not accept images; choose a vision model",
                        route.model()
                    ),
                ));
            }
            if m.size as u64 > MAX_IMAGE_BYTES {
                return Err(AppError::validation(
                    &field,
                    format!("images over {MAX_IMAGE_BYTES} bytes are not accepted"),
                ));
            }
        } else if !(ct == "application/pdf" || ct.starts_with("audio/")) {
            return Err(AppError::validation(
                &field,
                format!("{ct} cannot be attached to a message"),
            ));
        }
    }
    // Content security: no image with a blocking verdict, or (with
    // moderation.images) without a verdict, reaches the model.
    for m in rows.iter().filter(|m| m.content_type.starts_with("image/")) {
        crate::moderation::images::check_attach(state, m).await?;
    }
    let limit = state.config().llm.attachment_chars;
    for (i, m) in rows.iter().enumerate() {
        let field = format!("attachments[{i}]");
        let ct = m.content_type.as_str();
        if ct.starts_with("image/") {
            out.images.push(Arc::new(load_image(state, m).await?));
        } else if ct == "application/pdf" {
            let text = pdf_text(state, m)
                .await?
                .map_err(|e| AppError::validation(&field, e))?;
            push_text(&mut out.text, "PDF", &m.filename, &text, limit);
        } else {
            let id = m.id.clone();
            let texts = state.db().run(move |c| repo::texts(c, &id)).await?;
            let Some(t) = texts.transcript else {
                return Err(AppError::validation(
                    &field,
                    "audio must be transcribed first (POST /api/voice/transcribe)",
                ));
            };
            push_text(&mut out.text, "transcript of", &m.filename, &t, limit);
        }
        out.refs.push(AttachmentRef {
            id: m.id.clone(),
            content_type: m.content_type.clone(),
            filename: m.filename.clone(),
        });
    }
    Ok(out)
}

fn push_text(out: &mut String, kind: &str, filename: &str, text: &str, limit: usize) {
    out.push_str(&format!(
        "\n\n[Attached {kind} \"{filename}\"]\n{}\n[End of \"{filename}\"]",
        pdf::truncate_chars(text, limit)
    ));
}

/// The image as providers take it: its bytes (base64), plus a presigned
/// URL on S3 that OpenAI-compatible APIs fetch themselves.
pub async fn load_image(state: &AppState, m: &MediaRow) -> AppResult<Image> {
    let storage = state.storage();
    let bytes = storage
        .read_all(&m.object_key, MAX_IMAGE_BYTES)
        .await
        .map_err(crate::storage::service::storage_error)?
        .ok_or_else(|| AppError::validation("attachments", "image too large"))?;
    let url = if storage.kind() == "s3" {
        let signed = storage
            .download_url(&m.object_key, &m.content_type, state.now())
            .await
            .map_err(crate::storage::service::storage_error)?;
        Some(signed.url)
    } else {
        None
    };
    Ok(Image {
        media_type: m.content_type.clone(),
        url,
        base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
    })
}

/// How earlier attachments appear in the context of later turns.
pub fn placeholder(attachments_json: &str) -> String {
    let refs: Vec<AttachmentRef> = serde_json::from_str(attachments_json).unwrap_or_default();
    if refs.is_empty() {
        return String::new();
    }
    let list: Vec<String> = refs
        .iter()
        .map(|r| format!("\"{}\" ({})", r.filename, r.content_type))
        .collect();
    format!("\n[attached earlier: {}]", list.join(", "))
}
