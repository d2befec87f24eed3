//! One chat turn: reserve -> call the model -> settle (or release).

use crate::db::sql::{Conn, Tx};
use std::sync::Arc;

use futures_util::StreamExt;

use serde::Deserialize;

use super::live::{Event, Finished, Generation};
use super::types::{MessageStatus, Role};
use super::views::{ChatReply, MessagePage, MessageView, SessionPage, SessionView};
use crate::billing::calls::{self, CallRecord, End, Subject};
use crate::billing::{self, budget, Hold};
use crate::db::chat::{self as repo, MessageRow, NewMessage};
use crate::db::Db;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::pagination::{cursor, page, PageQuery};
use crate::http::AppState;
use crate::ids::{MediaId, MessageId, SessionId, UserId};
use crate::llm::{ChatMessage, Route, TokenUsage};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatInput {
    #[schema(min_length = 1)]
    pub message: String,
    /// One of the configured models; default `llm.default_model`.
    pub model: Option<String>,
    /// Continue this session (the caller's). Omitted: the caller's latest
    /// conversation continues when its last message is younger than
    /// `chat.continue_within_minutes`, else a new one starts; the reply's
    /// `session_id` says which.
    pub session_id: Option<SessionId>,
    /// Always start a new conversation (with `session_id`: 422).
    #[serde(default)]
    pub new_session: bool,
    /// Idempotency key: a retry is answered from the stored reply.
    #[schema(min_length = 1, max_length = 128)]
    pub client_msg_id: Option<String>,
    /// Ids of the caller's committed media (docs/media.md).
    #[serde(default)]
    pub attachments: Vec<MediaId>,
}

/// What the first transaction decided.
enum Begun {
    /// A retry of a request already answered.
    Replayed(ChatReply),
    /// A retry of a request still being answered.
    InFlight(MessageId),
    Started(Turn),
}

struct Turn {
    session_id: SessionId,
    user_msg_id: MessageId,
    reply_id: MessageId,
    context: Vec<repo::ContextRow>,
}

/// A turn that has been accepted (quota held, messages stored).
// Short-lived (one per request) and rarely the big variant (a replay):
// boxing would cost an allocation on every replay for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Started {
    Replayed(ChatReply),
    Live(Arc<Generation>),
}

/// Validates, reserves and starts generating in a task of its own, so that
/// a client hanging up never stops (or leaks) a turn: it always ends stored
/// and settled, or released.
pub async fn start(state: &AppState, user_id: &UserId, input: ChatInput) -> AppResult<Started> {
    let message = input.message.trim().to_string();
    if message.is_empty() {
        return Err(AppError::validation("message", "must not be empty"));
    }
    let max = state.config().llm.max_message_chars;
    if message.chars().count() > max {
        return Err(AppError::validation(
            "message",
            format!("longer than {max} characters"),
        ));
    }
    if input.new_session && input.session_id.is_some() {
        return Err(AppError::validation(
            "new_session",
            "cannot be true together with session_id",
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
    let route = state.llm().resolve(input.model.as_deref())?;
    // Every attachment refusal (404/422) comes before anything is held.
    let prepared = crate::media::prepare(state, user_id, &input.attachments, &route).await?;
    // Content security: refused here, nothing is held or sent upstream.
    let screen = crate::moderation::screen_input(state, user_id, &message, &prepared.text).await?;
    let refs = (!prepared.refs.is_empty())
        .then(|| serde_json::to_string(&prepared.refs).expect("refs serialize"));
    let turn = match begin(state, user_id, &message, route.model(), refs, input).await? {
        Begun::Replayed(outcome) => return Ok(Started::Replayed(outcome)),
        Begun::InFlight(reply_id) => {
            return match state.live().get(user_id, &reply_id) {
                Some(gen) => Ok(Started::Live(gen)),
                None => Err(AppError::conflict(
                    "a request with this client_msg_id is still being answered; retry shortly",
                )
                .with_code(ErrorCode::InProgress)),
            }
        }
        Begun::Started(t) => t,
    };
    let gen = state.live().start(user_id, &turn.reply_id);
    let task_state = state.clone();
    let task_gen = gen.clone();
    let user_id = user_id.clone();
    tokio::spawn(async move {
        generate(
            &task_state,
            &user_id,
            turn,
            route,
            (message, prepared),
            &task_gen,
            screen,
        )
        .await;
        task_state.live().retire(&task_gen.message_id);
    });
    Ok(Started::Live(gen))
}

/// POST /api/chat: the whole reply at once.
pub async fn chat(state: &AppState, user_id: &UserId, input: ChatInput) -> AppResult<ChatReply> {
    let gen = match start(state, user_id, input).await? {
        Started::Replayed(reply) => return Ok(reply),
        Started::Live(gen) => gen,
    };
    // The answer must come before the server's request timeout (408): a
    // client told the turn failed is never charged for it, so at the
    // deadline the turn is abandoned (released when it ends) unless it is
    // already being settled.
    let timeout = std::time::Duration::from_secs(state.config().server.request_timeout_secs);
    let deadline = tokio::time::Instant::now()
        + timeout.saturating_sub((timeout / 4).min(std::time::Duration::from_secs(1)));
    let mut events = std::pin::pin!(gen.listen(0)?);
    let mut abandoned = false;
    loop {
        let ev = if abandoned {
            events.next().await
        } else {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(ev) => ev,
                Err(_) => {
                    if gen.abandon() {
                        return Err(AppError::new(
                            axum::http::StatusCode::GATEWAY_TIMEOUT,
                            ErrorCode::UpstreamError,
                            "the model did not answer in time; you were not charged",
                        ));
                    }
                    // already settling: the reply is a write away
                    abandoned = true;
                    continue;
                }
            }
        };
        let Some(ev) = ev else { break };
        match ev {
            Event::Delta { .. } => {}
            Event::Done(v) => return Ok(Arc::unwrap_or_clone(v)),
            Event::Error(f) => {
                return Err(f
                    .to_app_error()
                    .unwrap_or_else(|| AppError::internal(anyhow::anyhow!("no error"))))
            }
        }
    }
    Err(AppError::internal(anyhow::anyhow!(
        "generation ended without a result"
    )))
}

async fn generate(
    state: &AppState,
    user_id: &UserId,
    mut turn: Turn,
    route: Route,
    (message, prepared): (String, crate::media::Prepared),
    gen: &Generation,
    screen: Option<crate::moderation::Screen>,
) {
    let mut messages = Vec::with_capacity(turn.context.len() + 2);
    let system = &state.config().llm.system_prompt;
    if !system.is_empty() {
        messages.push(ChatMessage::text("system", system.clone()));
    }
    // The newest earlier messages that fit `llm.context_max_chars`.
    let budget = state.config().llm.context_max_chars;
    // Taken, not copied: the turn lives as long as its stream, and the
    // earlier messages are only needed to build the request.
    let rows = std::mem::take(&mut turn.context);
    let mut context = Vec::with_capacity(rows.len());
    let mut used = 0usize;
    for c in rows.into_iter().rev() {
        let content = match &c.attachments {
            // Earlier attachments are named, not re-sent.
            Some(a) => format!("{}{}", c.content, crate::media::placeholder(a)),
            None => c.content,
        };
        used += content.chars().count();
        if used > budget {
            break;
        }
        context.push(ChatMessage::text(c.role.as_str(), content));
    }
    messages.extend(context.into_iter().rev());
    let content = if prepared.text.is_empty() {
        message
    } else {
        message + &prepared.text
    };
    messages.push(ChatMessage {
        role: "user",
        content,
        images: prepared.images,
    });

    let subject = Subject {
        user_id: user_id.clone(),
        reference: turn.reply_id.to_string(),
        model: route.model().to_string(),
    };
    // With content security on, text reaches `gen` one checked segment at a time.
    let (sink, released) = crate::moderation::screen_output(state, screen.as_ref(), gen);
    let meter = state.meter();
    let call = meter.call(&route, messages, &subject, sink);
    let (metered, released) = tokio::join!(call, released);
    calls::count(state.metrics(), &metered.calls);
    let end = match released {
        Ok(()) => metered.end,
        Err(e) if e.code == ErrorCode::ContentBlocked => {
            if let Err(db) = end_blocked(state, &turn, metered.calls).await {
                tracing::error!(error = %db, "could not release a blocked turn");
            }
            gen.finish(Finished::failed(&e));
            return;
        }
        // could not be checked (fail_open off): like a cut, what passed is kept
        Err(e) => End::Cut(e),
    };
    let failed = match end {
        End::Complete if !gen.begin_settle() => AppError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamError,
            "the reply came after the request's deadline; you were not charged",
        ),
        End::Complete => {
            let text = gen.text();
            let calls = metered.calls.clone();
            let settled = settle(state, user_id, &turn, text, metered.usage, metered.calls);
            match settled.await {
                Ok(Some(reply)) => gen.finish(Finished::Done(Arc::new(reply))),
                Ok(None) => gen.finish(Finished::failed(&AppError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    "the conversation was deleted while the reply was generated; you were not charged",
                ))),
                Err(e) => {
                    // A turn ends settled or released, never neither: the
                    // settle rolled back, so give the hold back on its own.
                    tracing::error!(error = %e, "could not settle a reply; releasing its hold");
                    if let Err(db) = release_only(state, &turn, calls).await {
                        tracing::error!(error = %db, "could not release a failed turn");
                    }
                    gen.finish(Finished::failed(&e));
                }
            }
            return;
        }
        End::Refused(e) => e,
        // Output was already sent: no failover. The partial text is kept,
        // marked failed, and nothing is charged.
        End::Cut(e) => e,
    };
    if let Err(db) = end_without_reply(state, &turn, gen.text(), metered.calls).await {
        tracing::error!(error = %db, "could not release a failed turn");
    }
    gen.finish(Finished::failed(&failed));
}

/// Gives a turn's hold back and records its calls, touching no message
/// (they may be gone).
async fn release_only(state: &AppState, turn: &Turn, calls: Vec<CallRecord>) -> AppResult<()> {
    let at = state.at();
    let reply_id = turn.reply_id.clone();
    state
        .db()
        .write(move |tx| {
            Hold::of(reply_id).release(tx, at.ms)?;
            calls::record(tx, &at, &calls)
        })
        .await
}

/// Stores the reply and turns the hold into a charge, in one transaction.
/// None: the reply's row is gone (its session or account was deleted while
/// it was generated): the hold is released instead, nothing charged.
async fn settle(
    state: &AppState,
    user_id: &UserId,
    turn: &Turn,
    text: String,
    usage: TokenUsage,
    calls: Vec<CallRecord>,
) -> AppResult<Option<ChatReply>> {
    let at = state.at();
    let uid = user_id.clone();
    let session_id = turn.session_id.clone();
    let reply_id = turn.reply_id.clone();
    state
        .db()
        .write(move |tx| {
            let tokens = (usage.prompt, usage.completion);
            calls::record(tx, &at, &calls)?;
            let Some(message) =
                repo::complete_reply(tx, &reply_id, &session_id, &text, tokens, at.ms)?
            else {
                Hold::of(reply_id).release(tx, at.ms)?;
                return Ok(None);
            };
            let charged = Hold::of(reply_id).settle(tx, at.ms)?;
            Ok(Some(ChatReply {
                session_id,
                message: message.into(),
                quota: billing::quota::after(tx, &uid, &at.day, charged)?,
            }))
        })
        .await
}

/// Releases the hold. A turn with no output disappears (it can be retried
/// under the same client_msg_id); partial output is kept as `failed`.
async fn end_without_reply(
    state: &AppState,
    turn: &Turn,
    partial: String,
    calls: Vec<CallRecord>,
) -> AppResult<()> {
    end_unpaid(state, turn, calls, move |tx, user_msg_id, reply_id| {
        if partial.is_empty() {
            repo::discard_turn(tx, user_msg_id, reply_id)
        } else {
            repo::store_failed(tx, reply_id, &partial)
        }
    })
    .await
}

/// A reply content security withheld: stored as a fixed notice with status
/// `blocked`, the hold released; the upstream calls are still spend.
async fn end_blocked(state: &AppState, turn: &Turn, calls: Vec<CallRecord>) -> AppResult<()> {
    end_unpaid(state, turn, calls, |tx, _, reply_id| {
        repo::store_blocked(tx, reply_id, crate::moderation::BLOCKED_NOTICE)
    })
    .await
}

/// Ends a turn that is not charged, in one write: the hold released, the
/// upstream calls recorded (they are spend all the same), and the reply
/// stored as `store` says (given the user message's and the reply's ids).
async fn end_unpaid(
    state: &AppState,
    turn: &Turn,
    calls: Vec<CallRecord>,
    store: impl FnOnce(&Tx<'_>, &MessageId, &MessageId) -> AppResult<()> + Send + 'static,
) -> AppResult<()> {
    let at = state.at();
    let user_msg_id = turn.user_msg_id.clone();
    let reply_id = turn.reply_id.clone();
    state
        .db()
        .write(move |tx| {
            Hold::of(reply_id.to_string()).release(tx, at.ms)?;
            calls::record(tx, &at, &calls)?;
            store(tx, &user_msg_id, &reply_id)
        })
        .await
}

/// Transaction 1: idempotency check, budget, session, hold, both messages.
async fn begin(
    state: &AppState,
    user_id: &UserId,
    message: &str,
    model: &str,
    attachments: Option<String>,
    input: ChatInput,
) -> AppResult<Begun> {
    let at = state.at();
    let uid = user_id.clone();
    let message = message.to_string();
    let model = model.to_string();
    let context_len = state.config().llm.context_messages;
    let continue_within_ms = i64::from(state.config().chat.continue_within_minutes) * 60_000;
    let warn_state = state.clone();
    // Relaxed: the turn's first token need not wait for the disk. If the
    // machine loses this commit, it loses a turn nobody was charged for;
    // the turn's end (settled or released) is durable and takes it along.
    state
        .db()
        .write_relaxed(move |tx| {
            let now = at.ms;
            if let Some(cmid) = &input.client_msg_id {
                if let Some(reply) = repo::reply_for_client_msg(tx, &uid, cmid)? {
                    if reply.status == MessageStatus::Generating {
                        return Ok(Begun::InFlight(reply.id));
                    }
                    return replay(tx, &uid, &at.day, reply).map(Begun::Replayed);
                }
            }
            let standing = budget::check(tx, &at)?;
            let config = warn_state.config();
            warn_state
                .budget_guard()
                .warn_if_near(config.llm.budget_warn_ratio, &standing, &at);
            let existing = match &input.session_id {
                Some(id) => Some(
                    repo::find_session(tx, &uid, id)?
                        .ok_or_else(|| AppError::not_found("session"))?
                        .id,
                ),
                // The original client never sends a session id: continue
                // its conversation while it is fresh.
                None if !input.new_session && continue_within_ms > 0 => {
                    repo::latest_session_active_since(tx, &uid, now - continue_within_ms)?
                }
                None => None,
            };
            let continued = existing.is_some();
            let session_id = match existing {
                Some(id) => id,
                None => {
                    let id = SessionId::new(now);
                    repo::create_session(tx, &id, &uid, &title_of(&message), now)?;
                    id
                }
            };
            let user_msg_id = MessageId::new(now);
            let reply_id = MessageId::new(now);
            Hold::reserve(tx, &config.quota, &at, &uid, vec![reply_id.to_string()])?;
            let seq = repo::insert_message(
                tx,
                &NewMessage {
                    id: &user_msg_id,
                    session_id: &session_id,
                    user_id: &uid,
                    role: Role::User,
                    content: &message,
                    model: None,
                    status: MessageStatus::Complete,
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
                    role: Role::Assistant,
                    content: "",
                    model: Some(&model),
                    status: MessageStatus::Generating,
                    reply_to: Some(&user_msg_id),
                    client_msg_id: None,
                    now,
                },
            )?;
            if let Some(a) = &attachments {
                repo::set_attachments(tx, &user_msg_id, a)?;
            }
            // a session created by this turn has nothing before it
            let context = if continued {
                repo::context(tx, &session_id, seq, context_len)?
            } else {
                vec![]
            };
            Ok(Begun::Started(Turn {
                session_id,
                user_msg_id,
                reply_id,
                context,
            }))
        })
        .await
}

/// A stored reply as the answer to a retried request (or a resumed one).
pub(super) fn replay(
    conn: &Conn,
    user_id: &UserId,
    day: &str,
    reply: MessageRow,
) -> AppResult<ChatReply> {
    // what the original request was charged; the replay itself is free
    let charged = billing::quota::charged_for(conn, &reply.id)?;
    Ok(ChatReply {
        session_id: reply.session_id.clone(),
        quota: billing::quota::after(conn, user_id, day, charged)?,
        message: reply.into(),
    })
}

/// GET /api/sessions: the user's sessions, most recently active first.
pub async fn sessions(state: &AppState, user_id: &UserId, q: &PageQuery) -> AppResult<SessionPage> {
    let limit = q.limit()?;
    let after = q.cursor_parts()?;
    let uid = user_id.clone();
    let rows = state
        .db()
        .run(move |c| repo::list_sessions(c, &uid, after, limit + 1))
        .await?;
    let (rows, next_cursor) = page(rows, limit, |s| cursor(s.updated_at, &s.id));
    Ok(SessionPage {
        items: rows.into_iter().map(SessionView::from).collect(),
        next_cursor,
    })
}

/// GET /api/sessions/{id}/messages: pages run from newest to older; within
/// a page, oldest first.
pub async fn messages(
    state: &AppState,
    user_id: &UserId,
    session_id: &SessionId,
    q: &PageQuery,
) -> AppResult<MessagePage> {
    let limit = q.limit()?;
    let before = q.cursor_parts()?.map(|(seq, _)| seq);
    let (uid, sid) = (user_id.clone(), session_id.clone());
    let rows = state
        .db()
        .run(move |c| {
            repo::find_session(c, &uid, &sid)?.ok_or_else(|| AppError::not_found("session"))?;
            repo::list_messages(c, &sid, before, limit + 1)
        })
        .await?;
    let (mut rows, next_cursor) = page(rows, limit, |m| cursor(m.seq, "m"));
    rows.reverse();
    Ok(MessagePage {
        items: rows.into_iter().map(MessageView::from).collect(),
        next_cursor,
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
/// every open hold (a reply's, a voice operation's) held is given back.
pub async fn recover_orphans(db: &Db, now_ms: i64) -> AppResult<usize> {
    // Only what dead instances left: on Postgres a live one's turns are
    // still running (see ops::cluster).
    let alive_after = crate::ops::cluster::alive_after(db);
    let holds = db.run(move |c| Hold::orphaned(c, alive_after)).await?;
    let n = holds.len();
    for hold in holds {
        db.write(move |tx| {
            hold.release(tx, now_ms)?;
            repo::fail_orphaned(tx, hold.key())
        })
        .await?;
    }
    Ok(n)
}
