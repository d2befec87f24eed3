//! POST /api/files/batch, GET /api/jobs/{id}.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use utoipa::{OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiJson, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/files/batch", post(batch))
        .route("/api/jobs/{id}", get(job))
}

#[derive(OpenApi)]
#[openapi(paths(batch, job))]
pub struct Doc;

/// A batch job and its per-file progress.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct Job {
    id: String,
    action: String,
    state: String,
    /// `{total, pending, running, done, failed}`
    #[schema(value_type = Object)]
    progress: Value,
    /// `[{media_id, state, result, error}]`
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    media_ids: Vec<String>,
    action: String,
}

#[utoipa::path(post, path = "/api/files/batch", tag = "media", security(("bearer" = [])),
    request_body = BatchBody,
    responses((status = 202, description = "Job started", body = Job)))]
async fn batch(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<BatchBody>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let v = super::submit(&state, &user, body.media_ids, &body.action).await?;
    Ok((StatusCode::ACCEPTED, Json(v)))
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "media", security(("bearer" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "The caller's job", body = Job)))]
async fn job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    Ok(Json(super::view(&state, &user.id, &id).await?))
}
