//! Images (README "Content security"): with `moderation.images` on, a
//! committed image is sent to WeChat's `wxa/media_check_async` as a
//! signed download URL WeChat fetches itself; the verdict comes later on
//! the message push (`handlers.rs`) and is stored with the media row.
//!
//! What a stored verdict means:
//! - `risky` (and `review` under `on_review = "block"`): the image can no
//!   longer be attached to a message or described by a batch job (422
//!   `content_blocked`), nor downloaded (451 `content_blocked`) — whatever
//!   the settings are now;
//! - no verdict yet: attaching answers 409 `moderation_pending` (nothing
//!   unchecked reaches the model), until `moderation.image_timeout_secs`
//!   have passed since the check started; then, like a check that failed,
//!   `moderation.fail_open` decides. Downloads stay allowed (the uploader
//!   already has the image, and WeChat must fetch it);
//! - never checked (uploaded while images were off, or WeChat could not be
//!   reached at commit): the check is started when it is first attached.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::push::{Push, MEDIA_CHECK_EVENT};
use super::{blocked, label_name, store_block, CheckStatus, Direction, Failure, Moderation};
use crate::billing::At;
use crate::config::ModerationConfig;
use crate::db::media::{self as repo, CheckApplied, MediaRow};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::metrics::labels;
use crate::http::AppState;

/// How long the download URL given to WeChat stays valid: WeChat fetches
/// it asynchronously, usually within seconds, and retries.
const CHECK_URL_TTL: Duration = Duration::from_secs(3600);

/// Verdicts pushed before their trace_id was stored (WeChat can be faster
/// than our write), kept this long.
const EARLY_TTL: Duration = Duration::from_secs(600);
const EARLY_MAX: usize = 1000;

/// What a client is told to wait before attaching a pending image again.
const PENDING_RETRY_SECS: u64 = 5;

struct EarlyVerdict {
    status: CheckStatus,
    label: Option<i64>,
    at: Instant,
}

/// Verdicts whose trace_id is not stored yet. The lock is held across the
/// write that stores a trace_id and across the write that applies a
/// verdict, so a verdict is either found in the row or in here.
#[derive(Default)]
pub struct Early(tokio::sync::Mutex<HashMap<String, EarlyVerdict>>);

#[derive(Deserialize)]
struct Started {
    trace_id: Option<String>,
}

impl Moderation {
    /// `wxa/media_check_async` for an image at `media_url`: its trace_id.
    async fn start_media_check(&self, openid: &str, media_url: &str) -> Result<String, Failure> {
        let body = json!({
            "media_url": media_url,
            "media_type": 2,
            "version": 2,
            "scene": self.cfg.scene,
            "openid": openid,
        });
        let answer: Started = self.post(&self.media_url, &body).await?;
        answer
            .trace_id
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::new("unusable", "answer without trace_id"))
    }
}

/// Content security for images, when on.
fn images_on(state: &AppState) -> Option<&Moderation> {
    state.moderation().filter(|m| m.images())
}

pub fn is_image(m: &MediaRow) -> bool {
    m.content_type.starts_with("image/")
}

/// Where an image stands, from its row and the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Allowed,
    Blocked(i64),
    Pending,
    Unchecked,
    NoVerdict,
}

fn standing(cfg: &ModerationConfig, on: bool, m: &MediaRow, now_ms: i64) -> Standing {
    let label = m.check_label.unwrap_or(0);
    match m.check_status {
        Some(CheckStatus::Risky) => Standing::Blocked(label),
        Some(CheckStatus::Review) if cfg.review_blocks() => Standing::Blocked(label),
        Some(CheckStatus::Review | CheckStatus::Pass) => Standing::Allowed,
        _ if !on || !is_image(m) => Standing::Allowed,
        Some(CheckStatus::Pending) => {
            let started = m.check_started_at.unwrap_or(0);
            let timeout = i64::try_from(cfg.image_timeout_secs * 1000).unwrap_or(i64::MAX);
            if now_ms.saturating_sub(started) < timeout {
                Standing::Pending
            } else {
                Standing::NoVerdict
            }
        }
        Some(CheckStatus::Failed) => Standing::NoVerdict,
        None => Standing::Unchecked,
    }
}

/// Whether a verdict keeps the image from users and the model.
fn blocks(cfg: &ModerationConfig, status: CheckStatus) -> bool {
    status == CheckStatus::Risky || (status == CheckStatus::Review && cfg.review_blocks())
}

/// Called once when an upload is committed: an image's check is started.
/// Never fails the commit; an image whose check could not be started is
/// checked when it is first attached.
pub async fn on_commit(state: &AppState, m: &MediaRow) {
    if images_on(state).is_none() || !is_image(m) {
        return;
    }
    if let Err(reason) = start(state, m).await {
        tracing::warn!(media_id = %m.id, reason = %reason, "image check could not be started");
    }
}

/// Starts WeChat's check of `m` and stores its trace_id (status pending).
async fn start(state: &AppState, m: &MediaRow) -> Result<(), String> {
    let mo = images_on(state).ok_or("images moderation is off")?;
    let metrics = state.metrics();
    let uid = m.user_id.clone();
    let openid = state
        .db()
        .run(move |c| crate::db::users::openid(c, &uid))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the account is gone")?;
    let url = state
        .storage()
        .download_url_for(&m.object_key, &m.content_type, state.now(), CHECK_URL_TTL)
        .await
        .map_err(|e| format!("no download URL: {e}"))?;
    let begun = Instant::now();
    let trace = mo.start_media_check(&openid, &url.url).await;
    metrics.observe(
        "moderation_check_duration_seconds",
        labels(&[("direction", Direction::Image.as_str())]),
        begun.elapsed(),
    );
    let trace = match trace {
        Ok(t) => t,
        Err(f) => {
            metrics.inc(
                "moderation_image_checks_total",
                labels(&[("result", "start_failed")]),
                1,
            );
            metrics.inc(
                "moderation_failures_total",
                labels(&[
                    ("direction", Direction::Image.as_str()),
                    ("reason", f.reason),
                ]),
                1,
            );
            return Err(format!("{}: {}", f.reason, f.detail));
        }
    };
    metrics.inc(
        "moderation_image_checks_total",
        labels(&[("result", "started")]),
        1,
    );
    let mut early = mo.early.0.lock().await;
    let pre = early.remove(&trace);
    let (id, at, cfg) = (m.id.clone(), state.at(), mo.cfg.clone());
    let t = trace.clone();
    let applied = state
        .db()
        .write(move |tx| {
            repo::set_check_started(tx, &id, &t, at.ms)?;
            match pre {
                Some(v) => apply(tx, &at, &cfg, &t, v.status, v.label),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    drop(early);
    tracing::info!(media_id = %m.id, trace_id = %trace, "image check started");
    if let Some(a) = applied {
        counted(state, &mo.cfg, &a);
    }
    Ok(())
}

/// Stores a verdict, counting a block once (when it ends a pending check).
fn apply(
    tx: &crate::db::sql::Tx<'_>,
    at: &At,
    cfg: &ModerationConfig,
    trace_id: &str,
    status: CheckStatus,
    label: Option<i64>,
) -> AppResult<Option<(CheckApplied, CheckStatus, Option<i64>)>> {
    let Some(a) = repo::apply_check(tx, trace_id, status, label, at.ms)? else {
        return Ok(None);
    };
    if a.before == Some(CheckStatus::Pending) && blocks(cfg, status) {
        store_block(tx, at, Direction::Image, label.unwrap_or(0))?;
    }
    Ok(Some((a, status, label)))
}

/// Metrics and a log line for a stored verdict; true when it was new.
fn counted(
    state: &AppState,
    cfg: &ModerationConfig,
    (a, status, label): &(CheckApplied, CheckStatus, Option<i64>),
) -> bool {
    if a.before != Some(CheckStatus::Pending) {
        return false;
    }
    let metrics = state.metrics();
    metrics.inc(
        "moderation_image_checks_total",
        labels(&[("result", status.as_str())]),
        1,
    );
    let label = label.unwrap_or(0);
    if blocks(cfg, *status) {
        metrics.inc(
            "moderation_blocks_total",
            labels(&[
                ("direction", Direction::Image.as_str()),
                ("label", label_name(label)),
            ]),
            1,
        );
        tracing::info!(media_id = %a.media_id, label, "image blocked by media_check_async");
    } else {
        tracing::info!(media_id = %a.media_id, status = status.as_str(), label, "image check done");
    }
    true
}

/// What a verified push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// A pending image got its verdict.
    Applied,
    /// A verdict already stored (WeChat retries a push it thinks failed).
    Duplicate,
    /// No media has this trace_id (yet): kept a while in case its start is
    /// still being stored, answered 200 so WeChat does not retry.
    UnknownTrace,
    /// Another event, or one for another app: nothing to do.
    Ignored,
}

impl PushOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Applied => "applied",
            PushOutcome::Duplicate => "duplicate",
            PushOutcome::UnknownTrace => "unknown_trace",
            PushOutcome::Ignored => "ignored",
        }
    }
}

/// A verified push: a `wxa_media_check` event's verdict is stored.
pub async fn on_push(state: &AppState, push: Push) -> AppResult<PushOutcome> {
    if push.event.as_deref() != Some(MEDIA_CHECK_EVENT) {
        tracing::debug!(
            msg_type = push.msg_type.as_deref().unwrap_or(""),
            event = push.event.as_deref().unwrap_or(""),
            "message push ignored (not wxa_media_check)"
        );
        return Ok(PushOutcome::Ignored);
    }
    let Some(trace) = push.trace_id.filter(|t| !t.is_empty()) else {
        tracing::warn!("wxa_media_check push without trace_id ignored");
        return Ok(PushOutcome::Ignored);
    };
    if let Some(app) = push.appid.as_deref() {
        if app != state.config().wechat.app_id {
            tracing::warn!(trace_id = %trace, "wxa_media_check push for another appid ignored");
            return Ok(PushOutcome::Ignored);
        }
    }
    let label = push.result.as_ref().and_then(|r| r.label());
    let suggest = push.result.as_ref().and_then(|r| r.suggest.as_deref());
    let status = match (push.errcode.unwrap_or(0), suggest) {
        (0, Some("pass")) => CheckStatus::Pass,
        (0, Some("review")) => CheckStatus::Review,
        (0, Some("risky")) => CheckStatus::Risky,
        (errcode, _) => {
            tracing::warn!(
                trace_id = %trace,
                errcode,
                errmsg = push.errmsg.as_deref().unwrap_or(""),
                "wxa_media_check push without a verdict: the check failed"
            );
            state.metrics().inc(
                "moderation_failures_total",
                labels(&[
                    ("direction", Direction::Image.as_str()),
                    ("reason", "refused"),
                ]),
                1,
            );
            CheckStatus::Failed
        }
    };
    let cfg = state.config().moderation.clone();
    let early = match state.moderation() {
        Some(m) => Some(m.early.0.lock().await),
        None => None,
    };
    let (at, t, c) = (state.at(), trace.clone(), cfg.clone());
    let applied = state
        .db()
        .write(move |tx| apply(tx, &at, &c, &t, status, label))
        .await?;
    let Some(applied) = applied else {
        if let Some(mut early) = early {
            early.retain(|_, v| v.at.elapsed() < EARLY_TTL);
            if early.len() < EARLY_MAX {
                early.insert(
                    trace.clone(),
                    EarlyVerdict {
                        status,
                        label,
                        at: Instant::now(),
                    },
                );
            }
        }
        tracing::warn!(trace_id = %trace, "wxa_media_check push for an unknown trace_id");
        return Ok(PushOutcome::UnknownTrace);
    };
    drop(early);
    Ok(if counted(state, &cfg, &applied) {
        PushOutcome::Applied
    } else {
        PushOutcome::Duplicate
    })
}

fn pending() -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        ErrorCode::ModerationPending,
        "the image is still being checked by WeChat content security; retry shortly",
    )
    .with_retry_after(PENDING_RETRY_SECS)
}

fn no_verdict(state: &AppState, m: &MediaRow) -> AppResult<()> {
    state.metrics().inc(
        "moderation_failures_total",
        labels(&[
            ("direction", Direction::Image.as_str()),
            ("reason", "no_verdict"),
        ]),
        1,
    );
    if state.config().moderation.fail_open {
        tracing::warn!(media_id = %m.id, "image has no verdict; let through (moderation.fail_open)");
        return Ok(());
    }
    Err(AppError::unavailable(
        ErrorCode::ModerationUnavailable,
        "WeChat content security gave this image no verdict; nothing was charged",
    ))
}

/// May `m` go to the model (a chat attachment, a batch describe)? Err:
/// 422 `content_blocked` (with the label), 409 `moderation_pending`, or
/// 503 `moderation_unavailable` (no verdict, `fail_open` off).
pub async fn check_attach(state: &AppState, m: &MediaRow) -> AppResult<()> {
    let cfg = &state.config().moderation;
    match standing(cfg, images_on(state).is_some(), m, state.at().ms) {
        Standing::Allowed => Ok(()),
        Standing::Blocked(label) => {
            Err(blocked(Direction::Image, label).with("media_id", json!(m.id)))
        }
        Standing::Pending => Err(pending().with("media_id", json!(m.id))),
        Standing::Unchecked => match start(state, m).await {
            Ok(()) => Err(pending().with("media_id", json!(m.id))),
            Err(reason) => {
                tracing::warn!(media_id = %m.id, reason = %reason, "image check could not be started");
                no_verdict(state, m)
            }
        },
        Standing::NoVerdict => no_verdict(state, m),
    }
}

/// May `m` be downloaded? Only a blocking verdict refuses it: 451
/// `content_blocked`.
pub fn check_download(state: &AppState, m: &MediaRow) -> AppResult<()> {
    let cfg = &state.config().moderation;
    match m.check_status {
        Some(s) if blocks(cfg, s) => Err(AppError::new(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            ErrorCode::ContentBlocked,
            format!(
                "this image was blocked by WeChat content security (label {}: {})",
                m.check_label.unwrap_or(0),
                label_name(m.check_label.unwrap_or(0))
            ),
        )
        .with("label", json!(m.check_label.unwrap_or(0)))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MediaId, UserId};

    fn row(status: Option<CheckStatus>, started: Option<i64>, ct: &str) -> MediaRow {
        MediaRow {
            id: MediaId::new(1),
            user_id: UserId::new(1),
            object_key: "k".into(),
            filename: "f".into(),
            content_type: ct.into(),
            size: 1,
            committed: true,
            created_at: 0,
            check_status: status,
            check_label: Some(20002),
            check_started_at: started,
        }
    }

    #[test]
    fn standing_follows_the_verdict_and_the_settings() {
        let mut cfg = ModerationConfig {
            image_timeout_secs: 10,
            ..Default::default()
        };
        let img = |s, t| row(s, t, "image/png");
        use CheckStatus::*;
        assert_eq!(
            standing(&cfg, true, &img(Some(Risky), None), 0),
            Standing::Blocked(20002)
        );
        // a stored risky verdict holds with images moderation off too
        assert_eq!(
            standing(&cfg, false, &img(Some(Risky), None), 0),
            Standing::Blocked(20002)
        );
        assert_eq!(
            standing(&cfg, true, &img(Some(Review), None), 0),
            Standing::Allowed
        );
        cfg.on_review = "block".into();
        assert_eq!(
            standing(&cfg, true, &img(Some(Review), None), 0),
            Standing::Blocked(20002)
        );
        assert_eq!(
            standing(&cfg, true, &img(Some(Pass), None), 0),
            Standing::Allowed
        );
        assert_eq!(
            standing(&cfg, true, &img(Some(Pending), Some(0)), 9_999),
            Standing::Pending
        );
        assert_eq!(
            standing(&cfg, true, &img(Some(Pending), Some(0)), 10_000),
            Standing::NoVerdict
        );
        assert_eq!(
            standing(&cfg, false, &img(Some(Pending), Some(0)), 0),
            Standing::Allowed
        );
        assert_eq!(
            standing(&cfg, true, &img(Some(Failed), None), 0),
            Standing::NoVerdict
        );
        assert_eq!(
            standing(&cfg, true, &img(None, None), 0),
            Standing::Unchecked
        );
        assert_eq!(
            standing(&cfg, false, &img(None, None), 0),
            Standing::Allowed
        );
        assert_eq!(
            standing(&cfg, true, &row(None, None, "application/pdf"), 0),
            Standing::Allowed
        );
    }
}
