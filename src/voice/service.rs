//! Voice: speech-to-text and text-to-speech through an OpenAI-compatible
//! `/audio/*` API, charged like messages (`voice.cost_messages`) through
//! the same reserve -> call -> settle / release path as chat.

use crate::db::sql::Tx;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::billing::calls::{self, CallRecord, Subject};
use crate::billing::types::CallOutcome;
use crate::billing::{self, Hold, ReplyQuota};
use crate::clock::to_ms;
use crate::config::VoiceConfig;
use crate::db::media::{self as media_repo, MediaRow, NewMedia};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;
use crate::ids::{MediaId, UserId};
use crate::storage::views::MediaResponse;

/// The transcript, stored with the media.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transcript {
    pub media_id: MediaId,
    pub text: String,
    /// The caller's quota after the call
    pub quota: ReplyQuota,
}

/// The synthesized audio, stored as the caller's media.
#[derive(Debug, Serialize, ToSchema)]
pub struct Speech {
    #[serde(flatten)]
    pub media: MediaResponse,
    /// The caller's quota after the call
    pub quota: ReplyQuota,
}

fn disabled() -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::VoiceDisabled,
        "voice is not configured on this server (voice.api_key is empty)",
    )
}

fn upstream(message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_GATEWAY, ErrorCode::UpstreamError, message)
}

/// The voice config when text-to-speech is usable (`voice.api_key` set).
fn config(state: &AppState) -> AppResult<&VoiceConfig> {
    let v = &state.config().voice;
    if v.api_key.is_empty() {
        return Err(disabled());
    }
    Ok(v)
}

/// The voice config when speech-to-text is usable: the key of the chosen
/// `stt_provider` is set.
fn stt_config(state: &AppState) -> AppResult<&VoiceConfig> {
    let v = &state.config().voice;
    let key = match v.stt_provider.as_str() {
        "assemblyai" => &v.assemblyai_api_key,
        _ => &v.api_key,
    };
    if key.is_empty() {
        return Err(disabled());
    }
    Ok(v)
}

/// Holds `voice.cost_messages` messages' worth for operation `op_id`.
async fn reserve(state: &AppState, user_id: &UserId, op_id: &str, n: u32) -> AppResult<Hold> {
    let (uid, at, keys) = (user_id.clone(), state.at(), Hold::keys(op_id, n));
    let st = state.clone();
    state
        .db()
        .write(move |tx| Hold::reserve(tx, &st.config().quota, &at, &uid, keys))
        .await
}

/// What an operation that failed leaves behind: its upstream call
/// recorded, its hold given back.
async fn fail(state: &AppState, hold: Hold, call: CallRecord) {
    calls::record_alone(state.db(), state.metrics(), state.at(), vec![call]).await;
    hold.release_alone(state.db(), to_ms(state.now())).await;
}

fn client(v: &VoiceConfig) -> reqwest::Client {
    crate::llm::http_client(Duration::from_secs(v.timeout_secs))
}

/// Sends (authorized by the caller) with the whole call bounded by
/// `voice.timeout_secs`; the upstream's body is never echoed (it may quote
/// the key).
async fn send(v: &VoiceConfig, req: reqwest::RequestBuilder, what: &str) -> AppResult<Bytes> {
    let call = async {
        let res = req.send().await?;
        let status = res.status();
        let body = res.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(Duration::from_secs(v.timeout_secs), call).await {
        Err(_) => Err(AppError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamError,
            format!("{what} timed out; nothing was charged"),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e.without_url(), "{what} failed");
            Err(upstream(format!("{what} failed; nothing was charged")))
        }
        Ok(Ok((status, _))) if !status.is_success() => {
            tracing::warn!(status = status.as_u16(), "{what} refused");
            Err(upstream(format!(
                "{what} failed (upstream status {}); nothing was charged",
                status.as_u16()
            )))
        }
        Ok(Ok((_, body))) => Ok(body),
    }
}

async fn find_audio(state: &AppState, user: &AuthUser, media_id: &MediaId) -> AppResult<MediaRow> {
    let (uid, id) = (user.id.clone(), media_id.clone());
    let m = state
        .db()
        .run(move |c| media_repo::find_for_user(c, &uid, &id))
        .await?
        .filter(|m| m.committed)
        .ok_or_else(|| AppError::not_found("media"))?;
    if !m.content_type.starts_with("audio/") {
        return Err(AppError::validation(
            "media_id",
            format!("{} is not audio", m.content_type),
        ));
    }
    Ok(m)
}

/// Operations in flight, one lock per key (a media id): two transcriptions
/// of one recording make one upstream call and one charge.
#[derive(Default)]
pub struct Flights {
    map: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Flights {
    /// Runs `f` alone for `key` (others with the same key wait).
    async fn alone<T>(&self, key: &str, f: impl std::future::Future<Output = T>) -> T {
        let lock = self
            .map
            .lock()
            .expect("flights lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        let out = {
            let _g = lock.lock().await;
            f.await
        };
        let mut map = self.map.lock().expect("flights lock");
        // the map's and ours: nobody else waits on this key
        if Arc::strong_count(&lock) == 2 {
            map.remove(key);
        }
        out
    }
}

/// Runs a charged operation in a task of its own, so a client that hangs
/// up after the reservation never leaves a hold behind: the operation ends
/// settled or released whatever happens to the request.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = AppResult<T>> + Send + 'static,
) -> AppResult<T> {
    tokio::spawn(f)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("voice task failed: {e}")))?
}

/// POST /api/voice/transcribe: the audio's text, stored with the media. A
/// media already transcribed answers its stored text, free.
pub async fn transcribe(
    state: &AppState,
    user: &AuthUser,
    media_id: &MediaId,
) -> AppResult<Transcript> {
    let (state, user, media_id) = (state.clone(), user.clone(), media_id.clone());
    detached(async move {
        let key = media_id.to_string();
        state
            .voice_flights()
            .alone(&key, transcribe_alone(&state, &user, &media_id))
            .await
    })
    .await
}

async fn transcribe_alone(
    state: &AppState,
    user: &AuthUser,
    media_id: &MediaId,
) -> AppResult<Transcript> {
    let v = stt_config(state)?;
    let m = find_audio(state, user, media_id).await?;
    let id = m.id.clone();
    let texts = state.db().run(move |c| media_repo::texts(c, &id)).await?;
    if let Some(text) = texts.transcript {
        let (uid, day) = (user.id.clone(), state.at().day);
        let q = state
            .db()
            .run(move |c| billing::quota::after(c, &uid, &day, 0))
            .await?;
        return Ok(Transcript {
            media_id: m.id,
            text,
            quota: q,
        });
    }
    let op = crate::ids::new_id("vop", to_ms(state.now()));
    let hold = reserve(state, &user.id, &op, v.cost_messages).await?;
    let started = std::time::Instant::now();
    let stt_provider = if v.stt_provider == "assemblyai" {
        "assemblyai"
    } else {
        "voice"
    };
    let subject = Subject {
        user_id: user.id.clone(),
        reference: op,
        model: v.stt_model.clone(),
    };
    let text = match stt(state, v, &m).await {
        Ok(t) => t,
        Err(e) => {
            let call = subject.failed(stt_provider, started, &e, &state.at());
            fail(state, hold, call).await;
            return Err(e);
        }
    };
    let call = subject.untokened(stt_provider, started, CallOutcome::Ok, &state.at());
    let (mid, t) = (m.id.clone(), text.clone());
    let q = charge(state, &user.id, hold, call, move |tx| {
        media_repo::set_transcript(tx, &mid, &t)
    })
    .await?
    .1;
    tracing::info!(media_id = %m.id, chars = text.len(), "audio transcribed");
    Ok(Transcript {
        media_id: m.id,
        text,
        quota: q,
    })
}

async fn stt(state: &AppState, v: &VoiceConfig, m: &MediaRow) -> AppResult<String> {
    let bytes = state
        .storage()
        .read_all(&m.object_key, state.config().storage.max_upload_bytes)
        .await
        .map_err(crate::storage::service::storage_error)?
        .ok_or_else(|| AppError::validation("media_id", "audio too large"))?;
    if v.stt_provider == "assemblyai" {
        let overall = Duration::from_secs(v.timeout_secs);
        return match tokio::time::timeout(overall, assemblyai(v, bytes)).await {
            Ok(r) => r,
            Err(_) => Err(AppError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::UpstreamError,
                "transcription timed out; nothing was charged",
            )),
        };
    }
    // The upstream guesses the format from the file name's extension.
    let filename = m
        .object_key
        .rsplit('/')
        .next()
        .unwrap_or("audio.mp3")
        .to_string();
    let part = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name(filename)
        .mime_str(&m.content_type)
        .map_err(|e| AppError::internal(anyhow::anyhow!("mime: {e}")))?;
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("model", v.stt_model.clone())
        .text("response_format", "json");
    let url = format!("{}/audio/transcriptions", v.base_url.trim_end_matches('/'));
    let req = client(v).post(url).bearer_auth(&v.api_key).multipart(form);
    let body = send(v, req, "transcription").await?;
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|_| upstream("transcription answered something other than JSON"))?;
    parsed["text"]
        .as_str()
        .map(|t| t.trim().to_string())
        .ok_or_else(|| upstream("transcription answered without text"))
}

/// POST /api/voice/speech: synthesizes `text`, stores the audio as the
/// caller's media and answers it with a download URL.
pub async fn speech(
    state: &AppState,
    user: &AuthUser,
    text: &str,
    voice: Option<&str>,
) -> AppResult<Speech> {
    let (state, user) = (state.clone(), user.clone());
    let (text, voice) = (text.to_string(), voice.map(str::to_string));
    detached(async move { speech_now(&state, &user, &text, voice.as_deref()).await }).await
}

async fn speech_now(
    state: &AppState,
    user: &AuthUser,
    text: &str,
    voice: Option<&str>,
) -> AppResult<Speech> {
    let v = config(state)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(AppError::validation("text", "must not be empty"));
    }
    if text.chars().count() > v.max_speech_chars {
        return Err(AppError::validation(
            "text",
            format!("longer than {} characters", v.max_speech_chars),
        ));
    }
    let voice = voice.unwrap_or(&v.voice);
    if voice.is_empty()
        || voice.len() > 64
        || !voice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AppError::validation(
            "voice",
            "must be 1-64 letters, digits, '-' or '_'",
        ));
    }
    let now = state.now();
    let media_id = MediaId::new(to_ms(now));
    let hold = reserve(state, &user.id, &media_id, v.cost_messages).await?;
    let url = format!("{}/audio/speech", v.base_url.trim_end_matches('/'));
    let req = client(v).post(url).bearer_auth(&v.api_key).json(&json!({
        "model": v.tts_model,
        "input": text,
        "voice": voice,
        "response_format": "mp3",
    }));
    let started = std::time::Instant::now();
    let subject = Subject {
        user_id: user.id.clone(),
        reference: media_id.to_string(),
        model: v.tts_model.clone(),
    };
    let audio = match send(v, req, "speech synthesis").await {
        Ok(a) if !a.is_empty() && a.len() as u64 <= state.config().storage.max_upload_bytes => a,
        other => {
            let e = match other {
                Err(e) => e,
                Ok(_) => upstream("speech synthesis returned no (or too much) audio"),
            };
            let call = subject.failed("voice", started, &e, &state.at());
            fail(state, hold, call).await;
            return Err(e);
        }
    };
    let call = subject.untokened("voice", started, CallOutcome::Ok, &state.at());
    let content_type = "audio/mpeg";
    let key = crate::storage::service::object_key(&user.id, &media_id, content_type, now);
    if let Err(e) = state.storage().put(&key, audio.clone()).await {
        fail(state, hold, call).await;
        return Err(crate::storage::service::storage_error(e));
    }
    let (uid, ms) = (user.id.clone(), to_ms(state.now()));
    let (mid, k, size) = (media_id.clone(), key.clone(), audio.len() as i64);
    let stored = charge(state, &user.id, hold, call, move |tx| {
        media_repo::insert_committed(
            tx,
            &NewMedia {
                id: &mid,
                user_id: &uid,
                object_key: &k,
                filename: "speech.mp3",
                content_type,
                size,
            },
            "tts",
            ms,
        )?;
        media_repo::find_for_user(tx, &uid, &mid)?
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("media vanished")))
    })
    .await;
    let (m, q) = match stored {
        Ok(x) => x,
        Err(e) => {
            // The hold is released at the next start if this fails too.
            if let Err(d) = state.storage().delete(&key).await {
                tracing::warn!(error = %d, "could not remove unrecorded speech audio");
            }
            return Err(e);
        }
    };
    let media = crate::storage::service::media_view(state, &m).await?;
    tracing::info!(media_id = %m.id, size = m.size, "speech synthesized");
    Ok(Speech { media, quota: q })
}

/// AssemblyAI: upload the bytes, create a transcript, poll until it is
/// completed or failed (the caller bounds the whole exchange).
async fn assemblyai(v: &VoiceConfig, bytes: Bytes) -> AppResult<String> {
    let base = v.assemblyai_base_url.trim_end_matches('/');
    let key = v.assemblyai_api_key.as_str();
    let http = client(v);
    let json_of = |b: Bytes| -> AppResult<Value> {
        serde_json::from_slice(&b)
            .map_err(|_| upstream("transcription answered something other than JSON"))
    };
    let up = http
        .post(format!("{base}/v2/upload"))
        .header("authorization", key)
        .header("content-type", "application/octet-stream")
        .body(bytes);
    let up = json_of(send(v, up, "transcription upload").await?)?;
    let audio_url = up["upload_url"]
        .as_str()
        .ok_or_else(|| upstream("transcription upload answered without upload_url"))?;
    let create = http
        .post(format!("{base}/v2/transcript"))
        .header("authorization", key)
        .json(&json!({ "audio_url": audio_url, "language_detection": true }));
    let created = json_of(send(v, create, "transcription").await?)?;
    let id = created["id"]
        .as_str()
        .filter(|id| id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .ok_or_else(|| upstream("transcription answered without a usable id"))?
        .to_string();
    let mut t = created;
    loop {
        match t["status"].as_str() {
            Some("completed") => {
                return Ok(t["text"].as_str().unwrap_or("").trim().to_string());
            }
            Some("error") => {
                tracing::warn!(error = %t["error"], "AssemblyAI transcription failed");
                return Err(upstream(
                    "transcription failed upstream (unreadable audio?); nothing was charged",
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(v.assemblyai_poll_ms)).await;
        let poll = http
            .get(format!("{base}/v2/transcript/{id}"))
            .header("authorization", key);
        t = json_of(send(v, poll, "transcription").await?)?;
    }
}

/// Stores what a successful operation produced (`store`), its upstream
/// call, and settles its hold, in one write; answers what `store` returned
/// and the quota after the charge. Voice calls are accounted like model
/// calls (llm_calls, metrics); audio has no token counts, so they carry
/// latency and outcome, and no cost.
async fn charge<T: Send + 'static>(
    state: &AppState,
    user_id: &UserId,
    hold: Hold,
    call: CallRecord,
    store: impl FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
) -> AppResult<(T, ReplyQuota)> {
    calls::count(state.metrics(), std::slice::from_ref(&call));
    let (uid, at) = (user_id.clone(), state.at());
    state
        .db()
        .write(move |tx| {
            let stored = store(tx)?;
            calls::record(tx, &at, std::slice::from_ref(&call))?;
            let charged = hold.settle(tx, at.ms)?;
            Ok((stored, billing::quota::after(tx, &uid, &at.day, charged)?))
        })
        .await
}
