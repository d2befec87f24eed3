//! POST /api/chat/stream: the reply as Server-Sent Events — `delta`
//! {message_id, offset, text} events (offset in UTF-16 code units), then one
//! `done` (the stored reply) or `error`. Refusals (401/402/4xx) come before
//! the stream, as plain JSON errors. Unbuffered for `wx.request({enableChunked})`
//! behind proxies (`Cache-Control: no-cache`, `X-Accel-Buffering: no`).
//! GET /api/chat/stream with an Upgrade is the WebSocket (`ws.rs`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::live::{replay_events, Event, Finished};
use super::service::{self, ChatInput, Started};
use crate::auth::AuthUser;
use crate::error::{AppResult, ErrorCode};
use crate::http::openapi::{ErrorBody, ErrorDetail};
use crate::http::ApiJson;
use crate::http::AppState;
use crate::ids::MessageId;

pub fn routes() -> OpenApiRouter<AppState> {
    // One path, two methods: POST is this stream, GET (an Upgrade) the
    // WebSocket, as a `wx.connectSocket` to this path expects.
    OpenApiRouter::new().routes(routes!(chat_stream, super::ws::upgrade_at_stream))
}

/// One Server-Sent Event.
#[derive(utoipa::ToSchema)]
pub struct ChatEvent {
    event: ChatEventKind,
    /// JSON: `{message_id, offset, text}` for `delta` (`offset`: where `text`
    /// starts in the reply, in UTF-16 code units), a `ChatReply` for `done`,
    /// an `ErrorBody` for `error`.
    data: String,
}

#[derive(Clone, Copy, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ChatEventKind {
    Delta,
    Done,
    Error,
}

impl From<ChatEvent> for SseEvent {
    fn from(e: ChatEvent) -> SseEvent {
        let name = match e.event {
            ChatEventKind::Delta => "delta",
            ChatEventKind::Done => "done",
            ChatEventKind::Error => "error",
        };
        SseEvent::default().event(name).data(e.data)
    }
}

/// The events of a started turn, whichever way it started.
pub fn events_of(started: Started) -> AppResult<(MessageId, BoxStream<'static, Event>)> {
    match started {
        Started::Live(gen) => Ok((gen.message_id.clone(), gen.listen(0)?.boxed())),
        Started::Replayed(outcome) => {
            let message_id = outcome.message.id.clone();
            let content = outcome.message.content.clone();
            let events = replay_events(&content, 0, Event::Done(Arc::new(outcome)))?;
            Ok((message_id, stream::iter(events).boxed()))
        }
    }
}

pub fn error_body(f: &Finished, request_id: &str) -> ErrorBody {
    let (code, message) = match f {
        Finished::Failed { code, message, .. } => (*code, message.as_str()),
        Finished::Done(_) => (ErrorCode::Internal, "not an error"),
    };
    ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_string(),
            request_id: request_id.to_string(),
            field: None,
            price_fen: None,
            topup_amounts_fen: None,
        },
    }
}

#[utoipa::path(post, path = "/api/chat/stream", tag = "chat", security(("bearer" = [])),
    request_body = ChatInput,
    description = "Server-Sent Events: `delta` events with data `{message_id, offset, text}` (`offset` in UTF-16 code units), then one `done` \
        (data: a `ChatReply`) or `error` (data: an `ErrorBody`). Refusals come before the stream, as JSON errors.",
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = ChatEvent),
        (status = 402, description = "`quota_exhausted`", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "`not_found`: not the caller's session", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "`in_progress`", body = crate::http::openapi::ErrorBody),
    ))]
async fn chat_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    ApiJson(input): ApiJson<ChatInput>,
) -> AppResult<Response> {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let started = service::start(&state, &user.id, input).await?;
    let (message_id, events) = events_of(started)?;
    let sse = events.map(move |ev| {
        let (event, data) = match ev {
            Event::Delta { offset, text } => (
                ChatEventKind::Delta,
                json!({"message_id": message_id, "offset": offset, "text": text}).to_string(),
            ),
            Event::Done(reply) => (ChatEventKind::Done, json!(*reply).to_string()),
            Event::Error(f) => (
                ChatEventKind::Error,
                json!(error_body(&f, &request_id)).to_string(),
            ),
        };
        Ok::<_, Infallible>(SseEvent::from(ChatEvent { event, data }))
    });
    let mut res = Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and similar proxies: pass each event on at once
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}
