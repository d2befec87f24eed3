//! Replies being generated, shared between the task that generates them and
//! any number of listeners (the request that started it, a WebSocket that
//! reconnected and resumes). Generation never depends on a listener.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, Stream};
use tokio::sync::watch;

use super::views::ChatReply;
use crate::error::{AppError, ErrorCode};
use crate::ids::{MessageId, UserId};

/// How a generation ended.
#[derive(Clone, Debug)]
pub enum Finished {
    /// The stored chat reply, shared by every listener.
    Done(Arc<ChatReply>),
    Failed {
        status: u16,
        code: ErrorCode,
        message: String,
    },
}

impl Finished {
    pub fn failed(e: &AppError) -> Self {
        Finished::Failed {
            status: e.status.as_u16(),
            code: e.code,
            message: e.message.clone(),
        }
    }

    pub fn to_app_error(&self) -> Option<AppError> {
        match self {
            Finished::Done(_) => None,
            Finished::Failed {
                status,
                code,
                message,
            } => Some(AppError::new(
                axum::http::StatusCode::from_u16(*status)
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
                *code,
                message.clone(),
            )),
        }
    }
}

/// What a listener receives.
#[derive(Clone, Debug)]
pub enum Event {
    Delta(String),
    Done(Arc<ChatReply>),
    Error(Finished),
}

#[derive(Default)]
struct Progress {
    text: String,
    finished: Option<Finished>,
    /// The client was told the turn failed (its deadline passed): the turn
    /// must not be charged.
    abandoned: bool,
    /// The reply is being settled (charged): too late to abandon it.
    settling: bool,
}

pub struct Generation {
    pub user_id: UserId,
    pub message_id: MessageId,
    progress: Mutex<Progress>,
    /// Bumped on every change; listeners wait on it.
    tick: watch::Sender<u64>,
}

impl Generation {
    pub fn push(&self, text: &str) {
        self.progress
            .lock()
            .expect("progress lock")
            .text
            .push_str(text);
        self.tick.send_modify(|v| *v += 1);
    }

    pub fn finish(&self, f: Finished) {
        self.progress.lock().expect("progress lock").finished = Some(f);
        self.tick.send_modify(|v| *v += 1);
    }

    /// The waiting client gives up (and will be told the turn failed):
    /// true if the turn will not be charged; false if it is already being
    /// settled (then wait for it: the client gets the reply).
    pub fn abandon(&self) -> bool {
        let mut p = self.progress.lock().expect("progress lock");
        if !p.settling {
            p.abandoned = true;
        }
        !p.settling
    }

    /// The generator is about to charge: false if the client was already
    /// told the turn failed.
    pub fn begin_settle(&self) -> bool {
        let mut p = self.progress.lock().expect("progress lock");
        if !p.abandoned {
            p.settling = true;
        }
        !p.abandoned
    }

    pub fn text(&self) -> String {
        self.progress.lock().expect("progress lock").text.clone()
    }

    /// Everything from `offset` (in Unicode scalar values) on, as it comes,
    /// then the final event.
    pub fn listen(self: &Arc<Self>, offset: usize) -> impl Stream<Item = Event> + Send + 'static {
        struct L {
            gen: Arc<Generation>,
            rx: watch::Receiver<u64>,
            /// byte position in the text; None until the char offset is resolved
            pos: Option<usize>,
            offset_chars: usize,
            ended: bool,
        }
        let l = L {
            rx: self.tick.subscribe(),
            gen: self.clone(),
            pos: None,
            offset_chars: offset,
            ended: false,
        };
        stream::unfold(l, |mut l| async move {
            if l.ended {
                return None;
            }
            loop {
                l.rx.borrow_and_update();
                let (chunk, finished) = {
                    let p = l.gen.progress.lock().expect("progress lock");
                    let pos = *l.pos.get_or_insert_with(|| {
                        p.text
                            .char_indices()
                            .nth(l.offset_chars)
                            .map_or(p.text.len(), |(i, _)| i)
                    });
                    (
                        p.text[pos.min(p.text.len())..].to_string(),
                        p.finished.clone(),
                    )
                };
                if !chunk.is_empty() {
                    l.pos = l.pos.map(|p| p + chunk.len());
                    return Some((Event::Delta(chunk), l));
                }
                match finished {
                    Some(Finished::Done(v)) => {
                        l.ended = true;
                        return Some((Event::Done(v), l));
                    }
                    Some(f) => {
                        l.ended = true;
                        return Some((Event::Error(f), l));
                    }
                    None => {}
                }
                if l.rx.changed().await.is_err() {
                    // The generator is gone without finishing (cannot happen
                    // short of a panic): end the listener.
                    return None;
                }
            }
        })
    }
}

/// The replies being generated now, by message id.
#[derive(Default)]
pub struct Live {
    map: Mutex<HashMap<MessageId, Arc<Generation>>>,
}

impl Live {
    pub fn start(self: &Arc<Self>, user_id: &UserId, message_id: &MessageId) -> Arc<Generation> {
        let (tick, _) = watch::channel(0);
        let gen = Arc::new(Generation {
            user_id: user_id.clone(),
            message_id: message_id.clone(),
            progress: Mutex::new(Progress::default()),
            tick,
        });
        self.map
            .lock()
            .expect("live lock")
            .insert(message_id.clone(), gen.clone());
        gen
    }

    /// A generation of this user's, if it is (or was very recently) live.
    pub fn get(&self, user_id: &UserId, message_id: &MessageId) -> Option<Arc<Generation>> {
        self.map
            .lock()
            .expect("live lock")
            .get(message_id)
            .filter(|g| g.user_id == *user_id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("live lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unlists a finished generation. Its reply is stored by then (settled
    /// or failed), so a later resume reads it from the database; keeping
    /// finished replies in memory would only cost RAM under load.
    pub fn retire(&self, message_id: &MessageId) {
        self.map.lock().expect("live lock").remove(message_id);
    }
}
