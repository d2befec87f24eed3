//! POST /api/voice/transcribe, POST /api/voice/speech.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiJson, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/voice/transcribe", post(transcribe))
        .route("/api/voice/speech", post(speech))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TranscribeBody {
    media_id: String,
}

async fn transcribe(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<TranscribeBody>,
) -> AppResult<Json<Value>> {
    Ok(Json(
        super::transcribe(&state, &user, &body.media_id).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeechBody {
    text: String,
    voice: Option<String>,
}

async fn speech(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<SpeechBody>,
) -> AppResult<Json<Value>> {
    Ok(Json(
        super::speech(&state, &user, &body.text, body.voice.as_deref()).await?,
    ))
}
