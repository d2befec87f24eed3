//! Content security: WeChat's msgSecCheck (v2) on what users send and what
//! the model answers (README "Content security").
//!
//! - Input: the user's text (with what attachments add to it) is checked in
//!   `chat::service::start`, before anything is held or sent upstream.
//! - Output: the reply is released to its listeners one checked segment at a
//!   time (`screen_output`): at sentence ends, or every
//!   `moderation.segment_chars` characters; then checked once whole.
//! - Text over msgSecCheck's limit is checked in overlapping parts.
//! - WeChat unreachable, busy or rate limited: `moderation.fail_open`.
//! - Images (`moderation.images`): `images.rs` starts WeChat's
//!   media_check_async when an image is committed and applies the verdict
//!   pushed to `/api/wechat/callback` (`handlers.rs`, `push.rs`).
//! - Every block is counted by day in `moderation_blocks` (`admin usage`).

pub mod access_token;
pub mod handlers;
pub mod images;
pub mod push;
mod segment;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

pub use access_token::{AccessToken, AccessTokens, TokenError};
pub use segment::{parts, MAX_CHECK_CHARS};

use crate::billing::At;
use crate::chat::live::Generation;
use crate::config::{ModerationConfig, WechatConfig};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::metrics::{labels, Metrics};
use crate::http::AppState;
use crate::ids::UserId;

/// What a blocked reply is stored as (status `blocked`).
pub const BLOCKED_NOTICE: &str =
    "该回复因内容安全原因未予显示。(This reply was withheld for content security reasons.)";

crate::sql_enum!(
    /// What was checked: a chat message (in), a reply (out), an image.
    pub Direction {
        Input = "input",
        Output = "output",
        Image = "image",
    }
);

crate::sql_enum!(
    /// An image's content check (`media.check_status`): started and
    /// waiting, or WeChat's suggestion as pushed, or `failed` (the push
    /// carried an errcode instead of a verdict).
    pub CheckStatus {
        Pending = "pending",
        Pass = "pass",
        Review = "review",
        Risky = "risky",
        Failed = "failed",
    }
);

/// msgSecCheck's labels by name; any other number is "other" (metrics
/// labels come from this fixed set only).
pub fn label_name(label: i64) -> &'static str {
    match label {
        100 => "normal",
        10001 => "ad",
        20001 => "politics",
        20002 => "porn",
        20003 => "abuse",
        20006 => "crime",
        20008 => "fraud",
        20012 => "vulgar",
        20013 => "copyright",
        _ => "other",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suggest {
    Pass,
    Review,
    Risky,
}

#[derive(Debug, Clone, Copy)]
struct Verdict {
    suggest: Suggest,
    label: i64,
}

/// Why a check has no verdict; `reason` is a metrics label (fixed set).
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    detail: String,
}

impl Failure {
    fn new(reason: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            reason,
            detail: detail.into(),
        }
    }
}

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Failure {
        Failure::new("token", e.to_string())
    }
}

/// The errcode every WeChat server API answers (absent or 0: success).
#[derive(Deserialize)]
struct ErrAnswer {
    errcode: Option<i64>,
    errmsg: Option<String>,
}

#[derive(Deserialize)]
struct CheckAnswer {
    result: Option<CheckResult>,
}

#[derive(Deserialize)]
struct CheckResult {
    suggest: String,
    label: Option<i64>,
}

/// msgSecCheck with its settings and the process's access token.
pub struct Moderation {
    cfg: ModerationConfig,
    tokens: Arc<AccessTokens>,
    client: reqwest::Client,
    url: String,
    /// `wxa/media_check_async`
    media_url: String,
    /// Verdicts pushed before their trace_id was stored (images.rs).
    early: images::Early,
}

impl Moderation {
    pub fn new(cfg: &ModerationConfig, wechat: &WechatConfig, tokens: Arc<AccessTokens>) -> Self {
        Moderation {
            cfg: cfg.clone(),
            tokens,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(wechat.timeout_secs))
                .build()
                .expect("reqwest client"),
            url: format!(
                "{}/wxa/msg_sec_check",
                wechat.api_base.trim_end_matches('/')
            ),
            media_url: format!(
                "{}/wxa/media_check_async",
                wechat.api_base.trim_end_matches('/')
            ),
            early: Default::default(),
        }
    }

    /// Checks `text` (in parts when long) for `openid`. Err: 422
    /// `content_blocked` (with WeChat's label), or 503
    /// `moderation_unavailable` when WeChat gave no verdict and
    /// `fail_open` is off.
    pub async fn check(
        &self,
        metrics: &Metrics,
        direction: Direction,
        openid: &str,
        text: &str,
    ) -> AppResult<()> {
        for part in parts(text, MAX_CHECK_CHARS) {
            let started = Instant::now();
            let outcome = self.check_part(openid, part).await;
            metrics.observe(
                "moderation_check_duration_seconds",
                labels(&[("direction", direction.as_str())]),
                started.elapsed(),
            );
            let result = match &outcome {
                Ok(v) => match v.suggest {
                    Suggest::Pass => "pass",
                    Suggest::Review => "review",
                    Suggest::Risky => "risky",
                },
                Err(_) => "error",
            };
            metrics.inc(
                "moderation_checks_total",
                labels(&[("direction", direction.as_str()), ("result", result)]),
                1,
            );
            match outcome {
                Ok(Verdict {
                    suggest: Suggest::Pass,
                    ..
                }) => {}
                Ok(Verdict {
                    suggest: Suggest::Review,
                    label,
                }) if !self.cfg.review_blocks() => {
                    tracing::info!(
                        direction = direction.as_str(),
                        label,
                        "msgSecCheck suggests review; passed (moderation.on_review = \"pass\")"
                    );
                }
                Ok(Verdict { label, suggest }) => {
                    metrics.inc(
                        "moderation_blocks_total",
                        labels(&[
                            ("direction", direction.as_str()),
                            ("label", label_name(label)),
                        ]),
                        1,
                    );
                    tracing::info!(
                        direction = direction.as_str(),
                        label,
                        review = suggest == Suggest::Review,
                        "content blocked by msgSecCheck"
                    );
                    return Err(blocked(direction, label));
                }
                Err(f) => {
                    metrics.inc(
                        "moderation_failures_total",
                        labels(&[("direction", direction.as_str()), ("reason", f.reason)]),
                        1,
                    );
                    if self.cfg.fail_open {
                        tracing::warn!(
                            direction = direction.as_str(),
                            reason = f.reason,
                            detail = %f.detail,
                            "msgSecCheck gave no verdict; text let through (moderation.fail_open)"
                        );
                        continue;
                    }
                    tracing::warn!(
                        direction = direction.as_str(),
                        reason = f.reason,
                        detail = %f.detail,
                        "msgSecCheck gave no verdict; refused"
                    );
                    return Err(AppError::unavailable(
                        ErrorCode::ModerationUnavailable,
                        "content security check is unavailable; nothing was charged, retry shortly",
                    )
                    .with_retry_after(1));
                }
            }
        }
        Ok(())
    }

    /// One msgSecCheck call.
    async fn check_part(&self, openid: &str, content: &str) -> Result<Verdict, Failure> {
        let body = json!({
            "content": content,
            "version": 2,
            "scene": self.cfg.scene,
            "openid": openid,
        });
        let answer: CheckAnswer = self.post(&self.url, &body).await?;
        let r = answer
            .result
            .ok_or_else(|| Failure::new("unusable", "answer without result"))?;
        let suggest = match r.suggest.as_str() {
            "pass" => Suggest::Pass,
            "review" => Suggest::Review,
            "risky" => Suggest::Risky,
            _ => return Err(Failure::new("unusable", "unknown suggest")),
        };
        Ok(Verdict {
            suggest,
            label: r.label.unwrap_or(0),
        })
    }

    /// POSTs `body` to a WeChat server API with the access token, retried
    /// once with a refreshed token when the token was refused; the answer
    /// of an errcode 0, parsed.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<T, Failure> {
        let mut token = self.tokens.get().await?;
        let mut refreshed = false;
        loop {
            let bytes = self.call(url, &token, body).await?;
            let head: ErrAnswer = serde_json::from_slice(&bytes)
                .map_err(|_| Failure::new("unusable", "a non-JSON body"))?;
            let errcode = head.errcode.unwrap_or(0);
            if access_token::is_token_rejected(errcode) && !refreshed {
                refreshed = true;
                token = self.tokens.refresh(&token).await?;
                continue;
            }
            return match errcode {
                0 => serde_json::from_slice(&bytes)
                    .map_err(|_| Failure::new("unusable", "an answer of another shape")),
                code => {
                    let reason = match code {
                        -1 => "busy",
                        45009 | 45011 => "rate_limited",
                        c if access_token::is_token_rejected(c) => "token",
                        _ => "refused",
                    };
                    Err(Failure::new(
                        reason,
                        format!("errcode {code}: {}", head.errmsg.unwrap_or_default()),
                    ))
                }
            };
        }
    }

    async fn call(
        &self,
        url: &str,
        token: &AccessToken,
        body: &serde_json::Value,
    ) -> Result<bytes::Bytes, Failure> {
        // The URL carries the token: errors are described by kind only.
        let res = self
            .client
            .post(url)
            .query(&[("access_token", token.expose())])
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::new("unreachable", access_token::kind(&e)))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| Failure::new("unreachable", access_token::kind(&e)))?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
            return Err(Failure::new(
                "unusable",
                format!("HTTP {} with a non-JSON body", status.as_u16()),
            ));
        }
        Ok(bytes)
    }

    /// The settings this was built with.
    pub fn config(&self) -> &ModerationConfig {
        &self.cfg
    }

    /// Whether images are checked too (`moderation.images`).
    pub fn images(&self) -> bool {
        self.cfg.images
    }
}

fn blocked(direction: Direction, label: i64) -> AppError {
    let what = match direction {
        Direction::Input => "your message",
        Direction::Output => "the reply",
        Direction::Image => "the image",
    };
    AppError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ContentBlocked,
        format!(
            "{what} was blocked by WeChat content security (label {label}: {}); nothing was charged",
            label_name(label)
        ),
    )
    .with("label", json!(label))
}

/// A reply stored as `blocked`, asked for again (a resume).
pub fn withheld() -> AppError {
    AppError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ContentBlocked,
        "the reply was blocked by WeChat content security; nothing was charged",
    )
}

/// Counts a block by day (`admin usage`) when `e` is one (422
/// `content_blocked`, carrying WeChat's label); other errors are not.
async fn note_block(state: &AppState, direction: Direction, e: &AppError) {
    if e.code != ErrorCode::ContentBlocked {
        return;
    }
    let label = e.extra.get("label").and_then(|l| l.as_i64()).unwrap_or(0);
    record_block(state, direction, label).await;
}

/// Stores one block in `moderation_blocks` (its local day, direction and
/// label). A failure is logged: the block itself has already happened.
pub async fn record_block(state: &AppState, direction: Direction, label: i64) {
    let at = state.at();
    if let Err(e) = state
        .db()
        .write(move |tx| store_block(tx, &at, direction, label))
        .await
    {
        tracing::warn!(error = %e, "could not record a content security block");
    }
}

fn store_block(
    tx: &crate::db::sql::Tx<'_>,
    at: &At,
    direction: Direction,
    label: i64,
) -> AppResult<()> {
    crate::db::moderation::record_block(tx, &at.day, direction, label, at.ms)
}

/// Who a turn's text is checked for (msgSecCheck wants the user's openid).
pub struct Screen {
    openid: String,
}

/// Checks what a chat turn sends the model (the message and the text its
/// attachments add). None: moderation is off.
pub async fn screen_input(
    state: &AppState,
    user_id: &UserId,
    message: &str,
    attached_text: &str,
) -> AppResult<Option<Screen>> {
    let Some(m) = state.moderation() else {
        return Ok(None);
    };
    let uid = user_id.clone();
    let openid = state
        .db()
        .run(move |c| crate::db::users::openid(c, &uid))
        .await?
        .ok_or_else(|| AppError::unauthorized("account not found"))?;
    let text = if attached_text.is_empty() {
        message.to_string()
    } else {
        format!("{message}{attached_text}")
    };
    if let Err(e) = m
        .check(state.metrics(), Direction::Input, &openid, &text)
        .await
    {
        note_block(state, Direction::Input, &e).await;
        return Err(e);
    }
    Ok(Some(Screen { openid }))
}

/// Where a model call's text goes: straight into the generation, or to
/// the screen that releases it.
pub type Sink<'a> = Box<dyn FnMut(&str) + Send + 'a>;

/// Runs beside the model call; Ok once everything was released, Err when
/// the reply was blocked (`content_blocked`) or could not be checked.
pub type Released<'a> = Pin<Box<dyn Future<Output = AppResult<()>> + Send + 'a>>;

/// The text sink for a model call and the task that releases its text to
/// `gen`'s listeners. Without a screen the text goes straight through.
pub fn screen_output<'a>(
    state: &'a AppState,
    screen: Option<&'a Screen>,
    gen: &'a Generation,
) -> (Sink<'a>, Released<'a>) {
    let (Some(screen), Some(m)) = (screen, state.moderation()) else {
        return (Box::new(|t| gen.push(t)), Box::pin(async { Ok(()) }));
    };
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let sink: Sink<'a> = Box::new(move |t: &str| {
        // after a block the receiver is gone: the rest is dropped
        let _ = tx.send(t.to_string());
    });
    let segment_chars = m.cfg.segment_chars;
    let release = async move {
        let metrics = state.metrics();
        let mut rx = rx;
        let mut pending = String::new();
        let mut ended = false;
        let mut segments = 0;
        loop {
            while let Ok(t) = rx.try_recv() {
                pending.push_str(&t);
            }
            if let Some(n) = segment::ready(&pending, segment_chars, ended) {
                let seg: String = pending.drain(..n).collect();
                if let Err(e) = m
                    .check(metrics, Direction::Output, &screen.openid, &seg)
                    .await
                {
                    note_block(state, Direction::Output, &e).await;
                    return Err(e);
                }
                gen.push(&seg);
                segments += 1;
                continue;
            }
            if ended {
                break;
            }
            match rx.recv().await {
                Some(t) => pending.push_str(&t),
                None => ended = true,
            }
        }
        if segments > 1 {
            // the whole reply, in context
            if let Err(e) = m
                .check(metrics, Direction::Output, &screen.openid, &gen.text())
                .await
            {
                note_block(state, Direction::Output, &e).await;
                return Err(e);
            }
        }
        Ok(())
    };
    (sink, Box::pin(release))
}
