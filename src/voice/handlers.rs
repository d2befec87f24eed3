//! POST /api/voice/transcribe, POST /api/voice/speech.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::billing::ReplyQuota;
use crate::chat::handlers::reply_quota;
use crate::error::{ApiJson, AppResult};
use crate::openapi::typed;
use crate::storage::handlers::MediaView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(transcribe))
        .routes(routes!(speech))
}

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
) -> AppResult<Json<Transcript>> {
    let v = super::transcribe(&state, &user, &body.media_id).await?;
    Ok(Json(typed(v)?))
}

/// The transcript, stored with the media.
#[derive(Serialize, Deserialize, ToSchema)]
struct Transcript {
    media_id: String,
    text: String,
    /// The caller's quota after the call
    #[serde(deserialize_with = "reply_quota")]
    quota: ReplyQuota,
}

/// The synthesized audio, stored as the caller's media.
#[derive(Serialize, Deserialize, ToSchema)]
struct Speech {
    media: MediaView,
    url_expires_at: String,
    /// The caller's quota after the call
    #[serde(deserialize_with = "reply_quota")]
    quota: ReplyQuota,
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
) -> AppResult<Json<Speech>> {
    let v = super::speech(&state, &user, &body.text, body.voice.as_deref()).await?;
    Ok(Json(typed(v)?))
}
