//! One chat turn: reserve -> call the model -> settle (or release).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::clock::{rfc3339, to_ms};
use crate::db::chat::{self as repo, MessageRow, NewMessage};
use crate::db::quota as quota_repo;
use crate::error::{AppError, AppResult};
use crate::ids::new_id;
use crate::llm::{ChatMessage, LlmRequest, Provider};
use crate::quota;

pub struct ChatInput {
    pub message: String,
    pub model: Option<String>,
    pub session_id: Option<String>,
    pub client_msg_id: Option<String>,
}

#[derive(Serialize)]
pub struct ReplyQuota {
    pub free_remaining: i64,
    pub balance_fen: i64,
    pub charged_fen: i64,
}

pub struct ChatOutcome {
    pub session_id: String,
    pub message: MessageRow,
    pub quota: ReplyQuota,
}

impl ChatOutcome {
    pub fn to_json(&self) -> Value {
        json!({
            "session_id": self.session_id,
            "message": message_json(&self.message),
            "quota": self.quota,
        })
    }
}

pub fn message_json(m: &MessageRow) -> Value {
    json!({
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "model": m.model,
        "status": m.status,
        "created_at": rfc3339(m.created_at),
    })
}

/// What the first transaction decided.
enum Begun {
    /// A retry of a request already answered.
    Replayed(ChatOutcome),
    Started(Turn),
}

struct Turn {
    session_id: String,
    user_msg_id: String,
    reply_id: String,
    context: Vec<(String, String)>,
}

/// Runs a whole turn. It is spawned so that a client hanging up cannot
/// leave a reservation held: the turn always ends settled or released.
pub async fn chat(state: &AppState, user_id: &str, input: ChatInput) -> AppResult<ChatOutcome> {
    let message = input.message.trim().to_string();
    if message.is_empty() {
        return Err(AppError::validation("message", "must not be empty"));
    }
    if message.chars().count() > state.config().llm.max_message_chars {
        return Err(AppError::validation(
            "message",
            format!(
                "longer than {} characters",
                state.config().llm.max_message_chars
            ),
        ));
    }
    if let Some(c) = &input.client_msg_id {
        if c.is_empty() || c.len() > 128 {
            return Err(AppError::validation(
                "client_msg_id",
                "must be 1-128 characters",
            ));
        }
    }
    let (model, provider) = state.llm().resolve(input.model.as_deref())?;
    let state = state.clone();
    let user_id = user_id.to_string();
    tokio::spawn(async move { run_turn(&state, &user_id, message, model, provider, input).await })
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("chat task failed: {e}")))?
}

async fn run_turn(
    state: &AppState,
    user_id: &str,
    message: String,
    model: String,
    provider: Arc<dyn Provider>,
    input: ChatInput,
) -> AppResult<ChatOutcome> {
    let begun = begin(state, user_id, &message, &model, input).await?;
    let turn = match begun {
        Begun::Replayed(outcome) => return Ok(outcome),
        Begun::Started(t) => t,
    };
    let mut messages = Vec::with_capacity(turn.context.len() + 2);
    let system = &state.config().llm.system_prompt;
    if !system.is_empty() {
        messages.push(ChatMessage {
            role: "system",
            content: system.clone(),
        });
    }
    for (role, content) in turn.context.iter() {
        let role = if role == "assistant" {
            "assistant"
        } else {
            "user"
        };
        messages.push(ChatMessage {
            role,
            content: content.clone(),
        });
    }
    messages.push(ChatMessage {
        role: "user",
        content: message,
    });
    let req = LlmRequest { model, messages };
    let result = provider.complete(&req).await;

    let now = to_ms(state.now());
    let today = state.today();
    let uid = user_id.to_string();
    match result {
        Ok(reply) => {
            let Turn {
                session_id,
                reply_id,
                ..
            } = turn;
            state
                .db()
                .write(move |tx| {
                    repo::complete_reply(
                        tx,
                        &reply_id,
                        &reply.content,
                        reply.prompt_tokens,
                        reply.completion_tokens,
                        now,
                    )?;
                    let charged = quota_repo::settle(tx, &reply_id, now)?;
                    let message = repo::find_message(tx, &reply_id)?
                        .ok_or_else(|| AppError::internal(anyhow::anyhow!("reply vanished")))?;
                    let q = quota::view(tx, &uid, &today)?;
                    Ok(ChatOutcome {
                        session_id,
                        message,
                        quota: ReplyQuota {
                            free_remaining: q.free_remaining,
                            balance_fen: q.balance_fen,
                            charged_fen: charged,
                        },
                    })
                })
                .await
        }
        Err(e) => {
            let Turn {
                user_msg_id,
                reply_id,
                ..
            } = turn;
            state
                .db()
                .write(move |tx| {
                    quota_repo::release(tx, &reply_id, now)?;
                    repo::discard_turn(tx, &user_msg_id, &reply_id)
                })
                .await?;
            Err(e.into_app_error(provider.name()))
        }
    }
}

/// Transaction 1: idempotency check, session, reservation, both messages.
async fn begin(
    state: &AppState,
    user_id: &str,
    message: &str,
    model: &str,
    input: ChatInput,
) -> AppResult<Begun> {
    let now = to_ms(state.now());
    let today = state.today();
    let uid = user_id.to_string();
    let message = message.to_string();
    let model = model.to_string();
    let context_len = state.config().llm.context_messages;
    let topups = state.config().quota.topup_amounts_fen.clone();
    state
        .db()
        .write(move |tx| {
            if let Some(cmid) = &input.client_msg_id {
                if let Some(reply) = repo::reply_for_client_msg(tx, &uid, cmid)? {
                    return replay(tx, &uid, &today, reply).map(Begun::Replayed);
                }
            }
            let session_id = match &input.session_id {
                Some(id) => {
                    repo::find_session(tx, &uid, id)?
                        .ok_or_else(|| AppError::not_found("session"))?
                        .id
                }
                None => {
                    let id = new_id("ses", now);
                    repo::create_session(tx, &id, &uid, &title_of(&message), now)?;
                    id
                }
            };
            let user_msg_id = new_id("msg", now);
            let reply_id = new_id("msg", now);
            if let Err(e) = quota_repo::reserve(tx, &uid, &reply_id, &today, now)? {
                return Err(quota::exhausted_error(e, &topups));
            }
            let seq = repo::insert_message(
                tx,
                &NewMessage {
                    id: &user_msg_id,
                    session_id: &session_id,
                    user_id: &uid,
                    role: "user",
                    content: &message,
                    model: None,
                    status: "complete",
                    reply_to: None,
                    client_msg_id: input.client_msg_id.as_deref(),
                    now,
                },
            )?;
            repo::insert_message(
                tx,
                &NewMessage {
                    id: &reply_id,
                    session_id: &session_id,
                    user_id: &uid,
                    role: "assistant",
                    content: "",
                    model: Some(&model),
                    status: "generating",
                    reply_to: Some(&user_msg_id),
                    client_msg_id: None,
                    now,
                },
            )?;
            let context = repo::context(tx, &session_id, seq, context_len)?;
            Ok(Begun::Started(Turn {
                session_id,
                user_msg_id,
                reply_id,
                context,
            }))
        })
        .await
}

fn replay(
    conn: &rusqlite::Connection,
    user_id: &str,
    today: &str,
    reply: MessageRow,
) -> AppResult<ChatOutcome> {
    if reply.status == "generating" {
        return Err(AppError::conflict(
            "a request with this client_msg_id is still being answered; retry shortly",
        )
        .with_code("in_progress"));
    }
    let q = quota::view(conn, user_id, today)?;
    Ok(ChatOutcome {
        session_id: reply.session_id.clone(),
        quota: ReplyQuota {
            free_remaining: q.free_remaining,
            balance_fen: q.balance_fen,
            // what the original request was charged; the replay itself is free
            charged_fen: repo::charged_fen(conn, &reply.id)?,
        },
        message: reply,
    })
}

fn title_of(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or("").trim();
    let mut title: String = first_line.chars().take(30).collect();
    if first_line.chars().count() > 30 {
        title.push('…');
    }
    title
}

/// Startup: replies left `generating` by a crash are marked failed and what
/// they held is given back.
pub fn recover_orphans(conn: &mut rusqlite::Connection, now: i64) -> AppResult<usize> {
    let ids = quota_repo::held_message_ids(conn)?;
    for id in &ids {
        crate::db::write_tx(conn, |tx| {
            quota_repo::release(tx, id, now)?;
            repo::fail_orphaned(tx, id)
        })?;
    }
    Ok(ids.len())
}
