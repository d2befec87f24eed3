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
    /// `text` starts at `offset` in the reply, counted in UTF-16 code units
    /// (JavaScript's `string.length`), the unit clients resume with.
    Delta {
        offset: usize,
        text: String,
    },
    Done(Arc<ChatReply>),
    Error(Finished),
}

/// The byte position in `text` of UTF-16 offset `offset`: what a client
/// that has received `offset` code units (`text.length` in JavaScript) has
/// seen. Inside a surrogate pair or past the end is a 422 naming `offset`.
pub fn utf16_to_byte(text: &str, offset: usize) -> Result<usize, AppError> {
    let mut units = 0;
    for (i, c) in text.char_indices() {
        if units == offset {
            return Ok(i);
        }
        units += c.len_utf16();
        if units > offset {
            return Err(AppError::validation(
                "offset",
                "falls inside a character (a UTF-16 surrogate pair); offsets count UTF-16 code units",
            ));
        }
    }
    if units == offset {
        Ok(text.len())
    } else {
        Err(AppError::validation(
            "offset",
            format!("is past the end of the reply ({units} UTF-16 code units so far)"),
        ))
    }
}

/// The length of `text` in UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// The events that replay a stored reply from UTF-16 `offset`, ending with
/// `last`.
pub fn replay_events(content: &str, offset: usize, last: Event) -> Result<Vec<Event>, AppError> {
    let pos = utf16_to_byte(content, offset)?;
    let mut events = vec![];
    if pos < content.len() {
        events.push(Event::Delta {
            offset,
            text: content[pos..].to_string(),
        });
    }
    events.push(last);
    Ok(events)
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

    /// Everything from `offset` (UTF-16 code units) on, as it comes, then
    /// the final event. An offset inside a character or past what has been
    /// generated is refused (422 `validation`).
    pub fn listen(
        self: &Arc<Self>,
        offset: usize,
    ) -> Result<impl Stream<Item = Event> + Send + 'static, AppError> {
        struct L {
            gen: Arc<Generation>,
            rx: watch::Receiver<u64>,
            /// byte position in the text
            pos: usize,
            /// the same position in UTF-16 code units
            units: usize,
            ended: bool,
        }
        let rx = self.tick.subscribe();
        let pos = {
            let p = self.progress.lock().expect("progress lock");
            utf16_to_byte(&p.text, offset)?
        };
        let l = L {
            rx,
            gen: self.clone(),
            pos,
            units: offset,
            ended: false,
        };
        Ok(stream::unfold(l, |mut l| async move {
            if l.ended {
                return None;
            }
            loop {
                l.rx.borrow_and_update();
                let (chunk, finished) = {
                    let p = l.gen.progress.lock().expect("progress lock");
                    (
                        p.text[l.pos.min(p.text.len())..].to_string(),
                        p.finished.clone(),
                    )
                };
                if !chunk.is_empty() {
                    let offset = l.units;
                    l.pos += chunk.len();
                    l.units += utf16_len(&chunk);
                    return Some((
                        Event::Delta {
                            offset,
                            text: chunk,
                        },
                        l,
                    ));
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
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_utf16_code_units() {
        // "a" 1 unit, "é" 1, "中" 1, "😀" 2 (a surrogate pair), "b" 1
        let text = "aé中😀b";
        assert_eq!(utf16_len(text), 6);
        assert_eq!(utf16_to_byte(text, 0).unwrap(), 0);
        assert_eq!(utf16_to_byte(text, 1).unwrap(), 1);
        assert_eq!(utf16_to_byte(text, 2).unwrap(), 3);
        assert_eq!(utf16_to_byte(text, 3).unwrap(), 6);
        assert_eq!(utf16_to_byte(text, 5).unwrap(), 10);
        assert_eq!(utf16_to_byte(text, 6).unwrap(), text.len());
        let inside = utf16_to_byte(text, 4).unwrap_err();
        assert_eq!(inside.code, ErrorCode::Validation);
        assert!(utf16_to_byte(text, 7).is_err());
    }
}
