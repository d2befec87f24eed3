//! POST /api/chat, the session listings and session deletion.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::service::{self, message_json, ChatInput};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::billing::ReplyQuota;
use crate::clock::rfc3339;
use crate::db::chat as repo;
use crate::error::{ApiJson, AppError, AppResult};
use crate::openapi::{typed, ErrorBody};
use crate::pagination::{cursor, page, PageQuery};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat))
        .routes(routes!(list_sessions))
        .routes(routes!(delete_session))
        .routes(routes!(list_messages))
}

// Messages and replies are built as JSON by the service
// (`service::message_json`, `ChatOutcome::to_json`): the live replies are
// shared with the SSE and WebSocket streams as JSON values. The handlers
// answer them as these types (`openapi::typed`).

/// A stored message.
#[derive(Serialize, Deserialize, ToSchema)]
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
    /// Only on a user message that carried media: `[{id, content_type, filename}]`
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "keep_null"
    )]
    #[schema(value_type = Vec<Object>, nullable = false)]
    attachments: Option<Value>,
}

/// `Some` even for a null, so a null stays null rather than going absent.
fn keep_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A chat reply (also the SSE `done` event and the WebSocket `done` frame).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChatReply {
    session_id: String,
    message: MessageView,
    #[serde(deserialize_with = "reply_quota")]
    quota: ReplyQuota,
}

/// Reads a [`ReplyQuota`] (the service's type only serializes).
pub(crate) fn reply_quota<'de, D: Deserializer<'de>>(d: D) -> Result<ReplyQuota, D::Error> {
    #[derive(Deserialize)]
    struct Quota {
        free_remaining: i64,
        balance_fen: i64,
        charged_fen: i64,
    }
    let q = Quota::deserialize(d)?;
    Ok(ReplyQuota {
        free_remaining: q.free_remaining,
        balance_fen: q.balance_fen,
        charged_fen: q.charged_fen,
    })
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    id: String,
    title: String,
    created_at: String,
    updated_at: String,
}

/// Most recently active first.
#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    items: Vec<SessionView>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// Pages run from newest to older; items within a page oldest first.
#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    items: Vec<MessageView>,
    next_cursor: Option<String>,
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
    Ok(Json(typed(service::chat(&state, &user.id, input).await?)?))
}

#[utoipa::path(get, path = "/api/sessions", tag = "chat", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "The caller's sessions", body = SessionPage)))]
async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<SessionPage>> {
    let limit = q.limit()?;
    let after = q.cursor_parts()?;
    let rows = state
        .db()
        .run(move |c| repo::list_sessions(c, &user.id, after, limit + 1))
        .await?;
    let (rows, next_cursor) = page(rows, limit, |s| cursor(s.updated_at, &s.id));
    Ok(Json(SessionPage {
        items: rows
            .into_iter()
            .map(|s| SessionView {
                id: s.id,
                title: s.title,
                created_at: rfc3339(s.created_at),
                updated_at: rfc3339(s.updated_at),
            })
            .collect(),
        next_cursor,
    }))
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
) -> AppResult<Json<MessagePage>> {
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
    Ok(Json(MessagePage {
        items: rows
            .iter()
            .map(|m| typed(message_json(m)))
            .collect::<AppResult<_>>()?,
        next_cursor: next,
    }))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_message_keeps_its_attachments_absent_null_or_listed() {
        let base = json!({"id": "msg", "role": "user", "content": "hi", "model": null,
            "status": "complete", "created_at": "2026-01-01T00:00:00Z"});
        let listed = json!([{"id": "med", "content_type": "image/png", "filename": "a.png"}]);
        for attachments in [None, Some(Value::Null), Some(listed)] {
            let mut sent = base.clone();
            if let Some(a) = attachments {
                sent["attachments"] = a;
            }
            let view: MessageView = typed(sent.clone()).unwrap();
            assert_eq!(serde_json::to_value(&view).unwrap(), sent);
        }
    }
}
