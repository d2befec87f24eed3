//! Upstream calls as the operator pays for them: every model or voice call
//! is one `llm_calls` row (tokens, latency, outcome, cost) recorded in the
//! write that stores the work it served, added to the period's spend (which
//! the budgets read) and counted in /metrics.

use std::time::{Duration, Instant};

use crate::db::sql::Tx;
use chrono::FixedOffset;

use super::types::CallOutcome;
use super::At;
use crate::clock::SharedClock;
use crate::config::LlmConfig;
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::http::metrics::{labels, Metrics};
use crate::ids::UserId;
use crate::llm::{Attempt, ChatMessage, LlmError, Opened, Route, TokenUsage};

pub use crate::db::usage::CallRecord;

/// Who a call was made for, and for what.
#[derive(Debug, Clone)]
pub struct Subject {
    pub user_id: UserId,
    /// The message, job or voice operation the call served.
    pub reference: String,
    /// The model as the client named it (before routing).
    pub model: String,
}

impl Subject {
    fn call(&self, provider: &str, provider_model: &str, latency_ms: i64, at: &At) -> CallRecord {
        CallRecord {
            user_id: Some(self.user_id.clone()),
            message_id: Some(self.reference.clone()),
            model: self.model.clone(),
            provider: provider.to_string(),
            provider_model: provider_model.to_string(),
            prompt_tokens: 0,
            completion_tokens: 0,
            estimated: false,
            latency_ms,
            outcome: CallOutcome::Ok,
            cost_nanos: 0,
            created_at: at.ms,
            error: None,
        }
    }

    /// Providers that failed before their first token (failover).
    pub fn attempts(&self, attempts: &[Attempt], at: &At) -> Vec<CallRecord> {
        attempts
            .iter()
            .map(|a| CallRecord {
                outcome: a.outcome,
                error: Some(a.error.clone()),
                ..self.call(&a.provider, &a.model_id, a.latency_ms, at)
            })
            .collect()
    }

    /// A call without token counts (audio): latency and outcome, no cost.
    pub fn untokened(
        &self,
        provider: &str,
        started: Instant,
        outcome: CallOutcome,
        at: &At,
    ) -> CallRecord {
        CallRecord {
            outcome,
            ..self.call(provider, &self.model, millis(started.elapsed()), at)
        }
    }

    /// A call without token counts that failed with `e` (the client's
    /// message, which is free of secrets, kept as its error text).
    pub fn failed(&self, provider: &str, started: Instant, e: &AppError, at: &At) -> CallRecord {
        let outcome = if e.status == axum::http::StatusCode::GATEWAY_TIMEOUT {
            CallOutcome::Timeout
        } else {
            CallOutcome::Error
        };
        CallRecord {
            error: Some(crate::llm::short_error(&e.message)),
            ..self.untokened(provider, started, outcome, at)
        }
    }

    /// A streamed completion of `chars` characters: tokens as the
    /// upstream reported them, else estimated (and marked so: spend must
    /// not read as zero just because a gateway omits usage), costed from
    /// `llm.prices`.
    fn streamed(
        &self,
        prices: &LlmConfig,
        opened: &Opened,
        usage: &Estimate,
        chars: usize,
        outcome: CallOutcome,
        at: &At,
    ) -> CallRecord {
        let (prompt, completion, estimated) = usage.resolve(chars);
        CallRecord {
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated,
            outcome,
            cost_nanos: cost_nanos(prices, &self.model, &opened.model_id, prompt, completion),
            ..self.call(
                &opened.provider,
                &opened.model_id,
                millis(opened.started.elapsed()),
                at,
            )
        }
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Reported usage, with the prompt's estimate to fall back on.
#[derive(Debug, Clone, Copy, Default)]
struct Estimate {
    reported: TokenUsage,
    prompt_estimate: i64,
}

impl Estimate {
    fn for_prompt(messages: &[ChatMessage]) -> Estimate {
        Estimate {
            reported: TokenUsage::default(),
            prompt_estimate: messages.iter().map(|m| estimate_tokens(&m.content)).sum(),
        }
    }

    /// (prompt, completion, whether either was estimated)
    fn resolve(&self, completion_chars: usize) -> (i64, i64, bool) {
        let r = self.reported;
        (
            r.prompt.unwrap_or(self.prompt_estimate),
            r.completion
                .unwrap_or_else(|| chars_to_tokens(completion_chars)),
            r.prompt.is_none() || r.completion.is_none(),
        )
    }
}

/// How a metered model call ended.
pub enum End {
    /// Streamed to its end.
    Complete,
    /// No provider produced a first token (every failover tried).
    Refused(AppError),
    /// Output was produced, then the stream failed: no failover.
    Cut(AppError),
}

/// A model call with its accounting.
pub struct Metered {
    /// Every upstream call made, to record: failed attempts, then the
    /// streamed one.
    pub calls: Vec<CallRecord>,
    /// What the upstream reported (stored with a chat reply).
    pub usage: TokenUsage,
    pub end: End,
}

/// What metering a model call needs: the price list, the clock and the
/// timezone of the spend periods.
pub struct Meter<'a> {
    pub prices: &'a LlmConfig,
    pub clock: SharedClock,
    pub offset: FixedOffset,
}

impl Meter<'_> {
    fn at(&self) -> At {
        At::new(self.clock.now(), self.offset)
    }

    /// Opens `route` (failing over before the first token), streams the
    /// text to `on_text`, and accounts every upstream call it made for
    /// `subject`. Recording the calls is the caller's: in the write that
    /// stores the work they served.
    pub async fn call(
        &self,
        route: &Route,
        messages: Vec<ChatMessage>,
        subject: &Subject,
        mut on_text: impl FnMut(&str),
    ) -> Metered {
        let mut usage = Estimate::for_prompt(&messages);
        let mut attempts = vec![];
        let clock = self.clock.clone();
        let opened = route
            .open(messages, move || clock.now(), &mut attempts)
            .await;
        let mut calls = subject.attempts(&attempts, &self.at());
        let mut opened = match opened {
            Ok(o) => o,
            Err(e) => {
                return Metered {
                    calls,
                    usage: TokenUsage::default(),
                    end: End::Refused(e),
                }
            }
        };
        let mut chars = 0;
        let clock = self.clock.clone();
        let (reported, failure) = opened
            .drain(
                move || clock.now(),
                |t| {
                    chars += t.chars().count();
                    on_text(t)
                },
            )
            .await;
        usage.reported = reported;
        let outcome = match failure {
            Some(_) => CallOutcome::Partial,
            None => CallOutcome::Ok,
        };
        calls.push(CallRecord {
            error: failure.as_ref().map(LlmError::summary),
            ..subject.streamed(self.prices, &opened, &usage, chars, outcome, &self.at())
        });
        Metered {
            calls,
            usage: reported,
            end: match failure {
                Some(e) => End::Cut(e.to_app_error(&opened.provider)),
                None => End::Complete,
            },
        }
    }
}

/// Cost of a call from the configured per-million-token prices (the
/// provider's model id first, then the public model name). A price per
/// million tokens is exactly `price * 1000` nano-units per token.
pub fn cost_nanos(
    cfg: &LlmConfig,
    model: &str,
    provider_model: &str,
    prompt: i64,
    completion: i64,
) -> i64 {
    let price = cfg
        .prices
        .iter()
        .find(|p| p.model == provider_model)
        .or_else(|| cfg.prices.iter().find(|p| p.model == model));
    match price {
        Some(p) => {
            prompt * (p.input_per_mtok * 1000.0).round() as i64
                + completion * (p.output_per_mtok * 1000.0).round() as i64
        }
        None => 0,
    }
}

/// A rough count for streams that report no usage: ~4 characters a token.
pub fn estimate_tokens(text: &str) -> i64 {
    chars_to_tokens(text.chars().count())
}

fn chars_to_tokens(chars: usize) -> i64 {
    (chars as i64 + 3) / 4
}

/// Records calls inside the caller's write transaction, adding their cost
/// to the period's spend.
pub fn record(tx: &Tx<'_>, at: &At, calls: &[CallRecord]) -> AppResult<()> {
    for c in calls {
        crate::db::usage::record_call(tx, c, &at.day, &at.month)?;
    }
    Ok(())
}

/// Counts calls in /metrics (once each, whatever their write does).
pub fn count(metrics: &Metrics, calls: &[CallRecord]) {
    for c in calls {
        metrics.inc(
            "llm_calls_total",
            labels(&[("provider", &c.provider), ("outcome", c.outcome.as_str())]),
            1,
        );
        metrics.observe(
            "llm_call_duration_seconds",
            labels(&[("provider", &c.provider)]),
            Duration::from_millis(c.latency_ms as u64),
        );
        for (kind, n) in [
            ("prompt", c.prompt_tokens),
            ("completion", c.completion_tokens),
        ] {
            if n > 0 {
                metrics.inc(
                    "llm_tokens_total",
                    labels(&[
                        ("provider", &c.provider),
                        ("model", &c.model),
                        ("kind", kind),
                    ]),
                    n as u64,
                );
            }
        }
        if c.cost_nanos > 0 {
            metrics.inc(
                "llm_spend_nanos_total",
                labels(&[("model", &c.model)]),
                c.cost_nanos as u64,
            );
        }
    }
}

/// Counts and records calls that no other write carries (a failed call, a
/// batch item); a failure to record is logged, not returned.
pub async fn record_alone(db: &Db, metrics: &Metrics, at: At, calls: Vec<CallRecord>) {
    count(metrics, &calls);
    if let Err(e) = db.write(move |tx| record(tx, &at, &calls)).await {
        tracing::warn!(error = %e, "could not record upstream calls");
    }
}
