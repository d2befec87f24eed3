//! POST /api/chat, the session listings and session deletion.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use super::service::{self, message_json, ChatInput};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::billing::ReplyQuota;
use crate::clock::rfc3339;
use crate::db::chat as repo;
use crate::error::{ApiJson, AppError, AppResult};
use crate::openapi::ErrorBody;
use crate::pagination::{cursor, page, PageQuery};

#[derive(OpenApi)]
#[openapi(paths(chat, list_sessions, list_messages, delete_session))]
pub struct Doc;

// Documentation of bodies built with `json!` (`service::message_json`,
// `ChatOutcome::to_json`, the listings below): the live replies are
// shared with the SSE and WebSocket streams as JSON values.

/// A stored message.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct MessageView {
    id: String,
    /// `user` or `assistant`
    role: String,
    content: String,
    model: Option<String>,
    /// `complete`, `generating` or `failed`
    status: String,
    /// RFC 3339 UTC
    created_at: String,
}

/// A chat reply (also the SSE `done` event and the WebSocket `done` frame).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ChatReply {
    session_id: String,
    message: MessageView,
    quota: ReplyQuota,
}

#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct SessionView {
    id: String,
    title: String,
    created_at: String,
    updated_at: String,
}

/// Most recently active first.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct SessionPage {
    items: Vec<SessionView>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// Pages run from newest to older; items within a page oldest first.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct MessagePage {
    items: Vec<MessageView>,
    next_cursor: Option<String>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat", post(chat))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", delete(delete_session))
        .route("/api/sessions/{id}/messages", get(list_messages))
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
) -> AppResult<Json<Value>> {
    Ok(Json(service::chat(&state, &user.id, input).await?))
}

#[utoipa::path(get, path = "/api/sessions", tag = "chat", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "The caller's sessions", body = SessionPage)))]
async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<Value>> {
    let limit = q.limit()?;
    let after = q.cursor_parts()?;
    let rows = state
        .db()
        .run(move |c| repo::list_sessions(c, &user.id, after, limit + 1))
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |s| cursor(s.updated_at, &s.id),
        |s| {
            json!({
                "id": s.id,
                "title": s.title,
                "created_at": rfc3339(s.created_at),
                "updated_at": rfc3339(s.updated_at),
            })
        },
    )))
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
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<Value>> {
    let limit = q.limit()?;
    let before = q.cursor_parts()?.map(|(seq, _)| seq);
    let rows = state
        .db()
        .run(move |c| {
            repo::find_session(c, &user.id, &id)?.ok_or_else(|| AppError::not_found("session"))?;
            repo::list_messages(c, &id, before, limit + 1)
        })
        .await?;
    // Pages run newest to oldest; within a page, oldest first.
    let more = rows.len() > limit as usize;
    let mut rows = rows;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|m| cursor(m.seq, "m"))
    } else {
        None
    };
    rows.reverse();
    Ok(Json(json!({
        "items": rows.iter().map(message_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
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
    Path(id): Path<String>,
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
