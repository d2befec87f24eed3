//! POST /api/chat, the session listings and session deletion.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::service::{self, ChatInput};
use super::views::{ChatReply, MessagePage, SessionPage};
use crate::auth::AuthUser;
use crate::db::chat as repo;
use crate::error::{AppError, AppResult};
use crate::http::openapi::ErrorBody;
use crate::http::pagination::PageQuery;
use crate::http::ApiJson;
use crate::http::AppState;
use crate::ids::SessionId;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat))
        .routes(routes!(list_sessions))
        .routes(routes!(delete_session))
        .routes(routes!(list_messages))
}

#[utoipa::path(post, path = "/api/chat", tag = "chat", security(("bearer" = [])),
    request_body = ChatInput,
    responses(
        (status = 200, description = "The stored reply", body = ChatReply),
        (status = 402, description = "`quota_exhausted`", body = ErrorBody),
        (status = 404, description = "`not_found`: not the caller's session", body = ErrorBody),
        (status = 409, description = "`in_progress`: same `client_msg_id` still answering", body = ErrorBody),
        (status = 502, description = "`upstream_error`: the model failed; nothing charged", body = ErrorBody),
    ))]
async fn chat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(input): ApiJson<ChatInput>,
) -> AppResult<Json<ChatReply>> {
    Ok(Json(service::chat(&state, &user.id, input).await?))
}

#[utoipa::path(get, path = "/api/sessions", tag = "chat", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "The caller's sessions", body = SessionPage)))]
async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<SessionPage>> {
    Ok(Json(service::sessions(&state, &user.id, &q).await?))
}

#[utoipa::path(get, path = "/api/sessions/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id"), PageQuery),
    responses(
        (status = 200, description = "A page of the session's messages", body = MessagePage),
        (status = 404, description = "`not_found`: not the caller's session", body = ErrorBody),
    ))]
async fn list_messages(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<SessionId>,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<MessagePage>> {
    Ok(Json(service::messages(&state, &user.id, &id, &q).await?))
}

#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 204, description = "Deleted with its messages"),
        (status = 404, description = "`not_found`: not the caller's session", body = ErrorBody),
    ))]
async fn delete_session(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<SessionId>,
) -> AppResult<StatusCode> {
    let deleted = state
        .db()
        .write(move |tx| repo::delete_session(tx, &user.id, &id))
        .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("session"))
    }
}
