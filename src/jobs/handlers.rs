//! POST /api/files/batch, GET /api/jobs/{id}.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiJson, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/files/batch", post(batch))
        .route("/api/jobs/{id}", get(job))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    media_ids: Vec<String>,
    action: String,
}

async fn batch(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<BatchBody>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let v = super::submit(&state, &user, body.media_ids, &body.action).await?;
    Ok((StatusCode::ACCEPTED, Json(v)))
}

async fn job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    Ok(Json(super::view(&state, &user.id, &id).await?))
}
