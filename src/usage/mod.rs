//! Upstream usage accounting and the spend guard: every model call is
//! recorded with tokens and cost; chats stop (503, nobody charged, no
//! upstream call) once the day's or month's budget is spent.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset, Utc};

pub mod report;

use crate::app::AppState;
use crate::config::LlmConfig;
use crate::db::{quota as settings_repo, usage as repo};
use crate::error::{AppError, AppResult};

pub const DAILY_BUDGET: &str = "budget_daily_nanos";
pub const MONTHLY_BUDGET: &str = "budget_monthly_nanos";

/// Currency units (as configured, e.g. 12.5 USD) to integer nano-units.
pub fn to_nanos(units: f64) -> i64 {
    (units * 1e9).round() as i64
}

pub fn format_units(nanos: i64) -> String {
    format!(
        "{}.{:06}",
        nanos / 1_000_000_000,
        (nanos % 1_000_000_000).abs() / 1000
    )
}

/// Cost of a call from the configured per-million-token prices. A price per
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
    (text.chars().count() as i64 + 3) / 4
}

/// Records upstream calls inside the caller's write transaction, adding
/// their cost to the period's spend.
pub fn record(
    tx: &rusqlite::Transaction<'_>,
    periods: &(String, String),
    calls: &[repo::CallRecord],
) -> AppResult<()> {
    for c in calls {
        repo::record_call(tx, c, &periods.0, &periods.1)?;
    }
    Ok(())
}

/// Counts upstream calls in /metrics.
pub fn count(metrics: &crate::metrics::Metrics, calls: &[repo::CallRecord]) {
    use crate::metrics::labels;
    for c in calls {
        metrics.inc(
            "llm_calls_total",
            labels(&[("provider", &c.provider), ("outcome", c.outcome)]),
            1,
        );
        metrics.observe(
            "llm_call_duration_seconds",
            labels(&[("provider", &c.provider)]),
            std::time::Duration::from_millis(c.latency_ms as u64),
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
pub async fn record_alone(state: &AppState, calls: Vec<repo::CallRecord>) {
    count(state.metrics(), &calls);
    let periods = periods(state.now(), state.config().quota.offset());
    if let Err(e) = state
        .db()
        .write(move |tx| record(tx, &periods, &calls))
        .await
    {
        tracing::warn!(error = %e, "could not record upstream calls");
    }
}

/// Budget periods in local time: ("2026-11-25", "2026-11").
pub fn periods(now: DateTime<Utc>, offset: FixedOffset) -> (String, String) {
    let local = now.with_timezone(&offset);
    (
        local.format("%Y-%m-%d").to_string(),
        local.format("%Y-%m").to_string(),
    )
}

/// Remembers which soft-threshold warnings were already logged.
#[derive(Default)]
pub struct Guard {
    warned: Mutex<HashSet<String>>,
}

/// Spend and budgets right now (nanos; a budget of 0 means none).
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub day_spend: i64,
    pub month_spend: i64,
    pub day_budget: i64,
    pub month_budget: i64,
}

pub async fn standing(state: &AppState) -> AppResult<Standing> {
    let periods = periods(state.now(), state.config().quota.offset());
    state.db().run(move |c| standing_in(c, &periods)).await
}

pub fn standing_in(c: &rusqlite::Connection, periods: &(String, String)) -> AppResult<Standing> {
    let (day_spend, month_spend) = repo::spend(c, &periods.0, &periods.1)?;
    Ok(Standing {
        day_spend,
        month_spend,
        day_budget: settings_repo::get_setting(c, DAILY_BUDGET)?.unwrap_or(0),
        month_budget: settings_repo::get_setting(c, MONTHLY_BUDGET)?.unwrap_or(0),
    })
}

/// Inside the turn's first transaction: refuses a new chat once a budget is
/// spent (before anything is held or any upstream is called).
pub fn check_in(c: &rusqlite::Connection, periods: &(String, String)) -> AppResult<Standing> {
    let s = standing_in(c, periods)?;
    for (name, spent, budget) in [
        ("daily", s.day_spend, s.day_budget),
        ("monthly", s.month_spend, s.month_budget),
    ] {
        if budget > 0 && spent >= budget {
            return Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "budget_exhausted",
                format!("the service's {name} model budget is used up; try again later (you were not charged)"),
            ));
        }
    }
    Ok(s)
}

/// Warns once per period when spend passes the soft threshold.
pub fn warn_if_near(state: &AppState, s: &Standing, periods: &(String, String)) {
    let ratio = state.config().llm.budget_warn_ratio;
    for (name, period, spent, budget) in [
        ("daily", &periods.0, s.day_spend, s.day_budget),
        ("monthly", &periods.1, s.month_spend, s.month_budget),
    ] {
        if budget > 0 && spent as f64 >= ratio * budget as f64 {
            let key = format!("{name}:{period}");
            if state
                .usage_guard()
                .warned
                .lock()
                .expect("guard lock")
                .insert(key)
            {
                tracing::warn!(
                    period = %period,
                    spent = %format_units(spent),
                    budget = %format_units(budget),
                    "LLM spend passed {:.0}% of the {name} budget",
                    ratio * 100.0
                );
            }
        }
    }
}
