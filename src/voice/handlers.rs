//! POST /api/voice/transcribe, POST /api/voice/speech.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::service::{self, Speech, Transcript};
use crate::auth::AuthUser;
use crate::error::AppResult;
use crate::http::ApiJson;
use crate::http::AppState;
use crate::ids::MediaId;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(transcribe))
        .routes(routes!(speech))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TranscribeBody {
    media_id: MediaId,
}

#[utoipa::path(post, path = "/api/voice/transcribe", tag = "voice", security(("bearer" = [])),
    request_body = TranscribeBody,
    responses((status = 200, description = "Transcribed (costs voice.cost_messages)", body = Transcript)))]
async fn transcribe(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<TranscribeBody>,
) -> AppResult<Json<Transcript>> {
    Ok(Json(
        service::transcribe(&state, &user, &body.media_id).await?,
    ))
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
    Ok(Json(
        service::speech(&state, &user, &body.text, body.voice.as_deref()).await?,
    ))
}
