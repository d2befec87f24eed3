//! POST /api/files/batch, GET /api/jobs/{id}.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiJson, AppResult};
use crate::openapi::typed;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(batch))
        .routes(routes!(job))
}

/// A batch job and its per-file progress.
#[derive(Serialize, Deserialize, ToSchema)]
struct Job {
    id: String,
    /// `extract_text` or `describe`
    action: String,
    state: String,
    /// RFC 3339 UTC
    created_at: String,
    /// RFC 3339 UTC, once finished
    finished_at: Option<String>,
    progress: JobProgress,
    /// In the order of `media_ids`
    items: Vec<JobItem>,
}

/// How many items are in each state.
#[derive(Serialize, Deserialize, ToSchema)]
struct JobProgress {
    total: u64,
    pending: u64,
    running: u64,
    done: u64,
    failed: u64,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct JobItem {
    media_id: String,
    state: String,
    /// The extracted text or the description, once done
    result: Option<String>,
    /// Why the item failed
    error: Option<String>,
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
) -> AppResult<(StatusCode, Json<Job>)> {
    let v = super::submit(&state, &user, body.media_ids, &body.action).await?;
    Ok((StatusCode::ACCEPTED, Json(typed(v)?)))
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "media", security(("bearer" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "The caller's job", body = Job)))]
async fn job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> AppResult<Json<Job>> {
    Ok(Json(typed(super::view(&state, &user.id, &id).await?)?))
}
