//! POST /api/files/batch, GET /api/jobs/{id}.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::Job;
use crate::auth::AuthUser;
use crate::error::AppResult;
use crate::http::ApiJson;
use crate::http::AppState;
use crate::ids::{JobId, MediaId};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(batch))
        .routes(routes!(job))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    media_ids: Vec<MediaId>,
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
    let job = super::service::submit(&state, &user, body.media_ids, &body.action).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "media", security(("bearer" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "The caller's job", body = Job)))]
async fn job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<JobId>,
) -> AppResult<Json<Job>> {
    Ok(Json(super::service::view(&state, &user.id, &id).await?))
}
