//! POST /api/voice/transcribe, POST /api/voice/speech.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiJson, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/voice/transcribe", post(transcribe))
        .route("/api/voice/speech", post(speech))
}

#[derive(OpenApi)]
#[openapi(paths(transcribe, speech))]
pub struct Doc;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TranscribeBody {
    media_id: String,
}

#[utoipa::path(post, path = "/api/voice/transcribe", tag = "voice", security(("bearer" = [])),
    request_body = TranscribeBody,
    responses((status = 200, description = "Transcribed (costs voice.cost_messages)", body = Transcript)))]
async fn transcribe(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<TranscribeBody>,
) -> AppResult<Json<Value>> {
    Ok(Json(
        super::transcribe(&state, &user, &body.media_id).await?,
    ))
}

/// The transcript, stored with the media.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct Transcript {
    media_id: String,
    text: String,
    /// `{free_remaining, balance_fen, charged_fen}`
    #[schema(value_type = Object)]
    quota: Value,
}

/// The synthesized audio, stored as the caller's media.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct Speech {
    /// `{id, content_type, size, url}`
    #[schema(value_type = Object)]
    media: Value,
    url_expires_at: String,
    /// `{free_remaining, balance_fen, charged_fen}`
    #[schema(value_type = Object)]
    quota: Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SpeechBody {
    text: String,
    voice: Option<String>,
}

#[utoipa::path(post, path = "/api/voice/speech", tag = "voice", security(("bearer" = [])),
    request_body = SpeechBody,
    responses((status = 200, description = "Synthesized (costs voice.cost_messages)", body = Speech)))]
async fn speech(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<SpeechBody>,
) -> AppResult<Json<Value>> {
    Ok(Json(
        super::speech(&state, &user, &body.text, body.voice.as_deref()).await?,
    ))
}
