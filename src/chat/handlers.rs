//! POST /api/chat, the session listings and session deletion.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::service::{self, message_json, ChatInput};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::clock::rfc3339;
use crate::db::chat as repo;
use crate::error::{ApiJson, AppError, AppResult};
use crate::pagination::{cursor, page, PageQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat", post(chat))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", delete(delete_session))
        .route("/api/sessions/{id}/messages", get(list_messages))
}

async fn chat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(input): ApiJson<ChatInput>,
) -> AppResult<Json<Value>> {
    Ok(Json(service::chat(&state, &user.id, input).await?))
}

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
