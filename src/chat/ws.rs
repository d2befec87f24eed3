//! GET /api/chat/ws (and GET /api/chat/stream with an Upgrade, the path a
//! `wx.connectSocket` of the original client names): the chat exchange as
//! JSON frames, with resume.
//!
//! Client: `{"type":"chat","message",…}`, `{"type":"resume","message_id","offset"}`,
//! `{"type":"ping"}`. Server: `{"type":"delta","message_id","offset","text"}`…, then
//! `{"type":"done", …reply}` or `{"type":"error","error":{…}}`; `{"type":"pong"}`.
//! Each request is answered by its own task writing into the socket's
//! outbox, so pings are answered while a reply streams, and a closed socket
//! never stops a generation. Offsets count UTF-16 code units (JavaScript's
//! `string.length`): a client resumes with the length of what it holds.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::{self, BoxStream, StreamExt};
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::live::{replay_events, Event, Finished};
use super::service::{self, ChatInput};
use super::stream::{error_body, events_of};
use super::types::{MessageStatus, Role};
use crate::auth::{bearer_token, AuthUser};
use crate::db::chat as repo;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;
use crate::ids::{MediaId, MessageId, SessionId, UserId};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

#[utoipa::path(get, path = "/api/chat/ws", tag = "chat", security(("bearer" = [])),
    description = "WebSocket of JSON text frames. Client: `{\"type\":\"chat\",message,session_id?,new_session?,model?,client_msg_id?}`, \
        `{\"type\":\"resume\",message_id,offset}` (offset in UTF-16 code units), `{\"type\":\"ping\"}`. \
        Server: `{\"type\":\"delta\",message_id,offset,text}`…, \
        then `{\"type\":\"done\",…ChatReply}` or `{\"type\":\"error\",error}`; `{\"type\":\"pong\"}`.",
    params(("token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers")),
    responses((status = 101, description = "Switched to the WebSocket protocol")))]
async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> AppResult<Response> {
    accept(state, headers, query, ws).await
}

/// The same socket at the stream's path: `wx.connectSocket` to
/// `/api/chat/stream` (the original client's plan) works. POST there stays
/// Server-Sent Events.
#[utoipa::path(get, path = "/api/chat/stream", tag = "chat", security(("bearer" = [])),
    operation_id = "chat_stream_websocket",
    description = "With `Upgrade: websocket`: the WebSocket of GET /api/chat/ws, frame for frame.",
    params(("token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers")),
    responses((status = 101, description = "Switched to the WebSocket protocol")))]
pub(super) async fn upgrade_at_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> AppResult<Response> {
    accept(state, headers, query, ws).await
}

async fn accept(
    state: AppState,
    headers: HeaderMap,
    query: HashMap<String, String>,
    ws: WebSocketUpgrade,
) -> AppResult<Response> {
    // wx.connectSocket clients often cannot set headers: accept ?token= too.
    let token = bearer_token(&headers, None).or(query.get("token").map(String::as_str));
    let user = AuthUser::from_token(&state, token).await?;
    // kept to re-check its expiry on every chat frame
    let token = token.unwrap_or_default().to_string();
    // tungstenite's default read buffer is 128 KiB a socket: 10,000 open
    // sockets would be over a GiB. Client frames are small JSON; the
    // buffer grows for a larger one (up to max_message_size).
    Ok(ws
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| session(state, user, token, socket)))
}

/// What every chat frame re-checks, as an HTTP request would: the token is
/// still unexpired, the account still exists (not deleted since the
/// upgrade), and the frame fits the user's rate limit.
async fn recheck(state: &AppState, user: &AuthUser, token: &str) -> AppResult<()> {
    let again = AuthUser::from_token(state, Some(token)).await?;
    if again.id != user.id {
        return Err(AppError::unauthorized("token changed hands"));
    }
    state.limits().check_user(&user.id)
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Chat {
        message: String,
        session_id: Option<SessionId>,
        #[serde(default)]
        new_session: bool,
        model: Option<String>,
        client_msg_id: Option<String>,
        #[serde(default)]
        attachments: Vec<MediaId>,
    },
    Resume {
        message_id: MessageId,
        #[serde(default)]
        offset: usize,
    },
    Ping,
}

async fn session(state: AppState, user: AuthUser, token: String, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let (outbox, mut out_rx) = mpsc::channel::<Value>(64);
    loop {
        tokio::select! {
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame: ClientFrame = match serde_json::from_str(text.as_str()) {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = outbox.try_send(frame_error(&AppError::invalid_request(format!(
                                "bad frame: {e}"
                            ))));
                            continue;
                        }
                    };
                    if matches!(frame, ClientFrame::Chat { .. }) {
                        match recheck(&state, &user, &token).await {
                            Ok(()) => {}
                            Err(e) if e.code == ErrorCode::Unauthorized => {
                                let _ = sink.send(Message::Text(frame_error(&e).to_string().into())).await;
                                let _ = sink.send(Message::Close(None)).await;
                                break;
                            }
                            Err(e) => {
                                let _ = outbox.try_send(frame_error(&e));
                                continue;
                            }
                        }
                    }
                    handle(&state, &user, frame, outbox.clone())
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = outbox.try_send(frame_error(&AppError::invalid_request("send JSON text frames")));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // ping/pong frames are answered by the protocol layer
            },
            Some(out) = out_rx.recv() => {
                if sink.send(Message::Text(out.to_string().into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn frame_error(e: &AppError) -> Value {
    let mut f = json!({"type": "error", "error": {"code": e.code, "message": e.message}});
    if let Some(secs) = e.retry_after {
        f["error"]["retry_after"] = json!(secs);
    }
    f
}

fn handle(state: &AppState, user: &AuthUser, frame: ClientFrame, outbox: mpsc::Sender<Value>) {
    let state = state.clone();
    let user_id = user.id.clone();
    tokio::spawn(async move {
        let result = match frame {
            ClientFrame::Ping => {
                let _ = outbox.send(json!({"type": "pong"})).await;
                return;
            }
            ClientFrame::Chat {
                message,
                session_id,
                new_session,
                model,
                client_msg_id,
                attachments,
            } => {
                let input = ChatInput {
                    message,
                    model,
                    session_id,
                    new_session,
                    client_msg_id,
                    attachments,
                };
                match service::start(&state, &user_id, input).await {
                    Ok(s) => events_of(s),
                    Err(e) => Err(e),
                }
            }
            ClientFrame::Resume { message_id, offset } => {
                resume(&state, &user_id, &message_id, offset).await
            }
        };
        match result {
            Ok((message_id, events)) => forward(message_id, events, outbox).await,
            Err(e) => {
                if e.code == ErrorCode::QuotaExhausted {
                    crate::http::metrics::quota_refused(&state, "/api/chat/ws").await;
                }
                let _ = outbox.send(frame_error(&e)).await;
            }
        }
    });
}

async fn forward(
    message_id: MessageId,
    mut events: BoxStream<'static, Event>,
    outbox: mpsc::Sender<Value>,
) {
    while let Some(ev) = events.next().await {
        let frame = match ev {
            Event::Delta { offset, text } => {
                json!({"type": "delta", "message_id": message_id, "offset": offset, "text": text})
            }
            Event::Done(reply) => {
                let mut frame = json!(*reply);
                frame["type"] = json!("done");
                frame
            }
            Event::Error(f) => {
                let e = error_body(&f, "").error;
                json!({"type": "error", "error": {"code": e.code, "message": e.message}})
            }
        };
        if outbox.send(frame).await.is_err() {
            return; // socket gone; the generation carries on regardless
        }
    }
}

/// The rest of a reply from `offset` (UTF-16 code units): live from memory
/// while it is being generated (or just was), else from the stored message.
/// An offset inside a character or past the end is an `error` frame.
async fn resume(
    state: &AppState,
    user_id: &UserId,
    message_id: &MessageId,
    offset: usize,
) -> AppResult<(MessageId, BoxStream<'static, Event>)> {
    if let Some(gen) = state.live().get(user_id, message_id) {
        return Ok((gen.message_id.clone(), gen.listen(offset)?.boxed()));
    }
    let stored = load_reply(state, user_id, message_id).await?;
    let id = stored.message.id.clone();
    if stored.message.status != MessageStatus::Generating {
        return Ok((id, stream::iter(stored_events(&stored, offset)?).boxed()));
    }
    // Being generated by another instance on the same database (Postgres):
    // the rest arrives once that instance has stored it.
    let (st, uid, mid) = (state.clone(), user_id.clone(), message_id.clone());
    let rest = stream::once(async move {
        match wait_stored(&st, &uid, &mid)
            .await
            .and_then(|r| stored_events(&r, offset))
        {
            Ok(events) => events,
            Err(e) => vec![Event::Error(Finished::failed(&e))],
        }
    })
    .flat_map(stream::iter);
    Ok((id, rest.boxed()))
}

async fn load_reply(
    state: &AppState,
    user_id: &UserId,
    message_id: &MessageId,
) -> AppResult<super::views::ChatReply> {
    let (uid, mid) = (user_id.clone(), message_id.clone());
    let day = state.at().day;
    state
        .db()
        .run(move |c| {
            let msg = repo::find_user_message(c, &uid, &mid)?
                .filter(|m| m.role == Role::Assistant)
                .ok_or_else(|| AppError::not_found("message"))?;
            super::service::replay(c, &uid, &day, msg)
        })
        .await
}

/// Polls until the reply is no longer `generating` (bounded by the
/// request timeout, at least a minute).
async fn wait_stored(
    state: &AppState,
    user_id: &UserId,
    message_id: &MessageId,
) -> AppResult<super::views::ChatReply> {
    let limit = std::time::Duration::from_secs(state.config().server.request_timeout_secs.max(60));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let r = load_reply(state, user_id, message_id).await?;
        if r.message.status != MessageStatus::Generating {
            return Ok(r);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AppError::unavailable(
                ErrorCode::Unavailable,
                "this reply is still being generated; resume again later",
            ));
        }
    }
}

/// The rest of a stored reply from `offset`, and how it ended.
fn stored_events(stored: &super::views::ChatReply, offset: usize) -> AppResult<Vec<Event>> {
    let msg = &stored.message;
    if msg.status == MessageStatus::Blocked {
        // withheld by content security: the stored notice is not the reply
        return Ok(vec![Event::Error(Finished::failed(
            &crate::moderation::withheld(),
        ))]);
    }
    let last = if msg.status == MessageStatus::Complete {
        Event::Done(Arc::new(stored.clone()))
    } else {
        Event::Error(Finished::Failed {
            status: 502,
            code: ErrorCode::GenerationFailed,
            message: "this reply was cut short by an upstream failure; nothing was charged".into(),
        })
    };
    replay_events(&msg.content, offset, last)
}
