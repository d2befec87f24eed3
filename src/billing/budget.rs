//! The operator's spend budgets: new work stops (503, nobody charged, no
//! upstream call) once the day's or month's model spend reaches its budget;
//! a warning is logged once per period past `llm.budget_warn_ratio`.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::db::sql::Conn;
use axum::http::StatusCode;

use super::At;
use crate::db::usage as repo;
use crate::error::{AppError, AppResult, ErrorCode};

/// Setting keys (nano-units of the price currency; 0 = no budget).
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

/// Spend and budgets right now (nanos; a budget of 0 means none).
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub day_spend: i64,
    pub month_spend: i64,
    pub day_budget: i64,
    pub month_budget: i64,
}

pub fn standing(c: &Conn, at: &At) -> AppResult<Standing> {
    let [day_spend, month_spend, day_budget, month_budget] =
        repo::spend_and_budgets(c, (&at.day, &at.month), (DAILY_BUDGET, MONTHLY_BUDGET))?;
    Ok(Standing {
        day_spend,
        month_spend,
        day_budget,
        month_budget,
    })
}

/// Refuses new work once a budget is spent; run before anything is held or
/// any upstream is called.
pub fn check(c: &Conn, at: &At) -> AppResult<Standing> {
    let s = standing(c, at)?;
    for (name, spent, budget) in [
        ("daily", s.day_spend, s.day_budget),
        ("monthly", s.month_spend, s.month_budget),
    ] {
        if budget > 0 && spent >= budget {
            return Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::BudgetExhausted,
                format!("the service's {name} model budget is used up; try again later (you were not charged)"),
            ));
        }
    }
    Ok(s)
}

/// Remembers which soft-threshold warnings were already logged.
#[derive(Default)]
pub struct Guard {
    warned: Mutex<HashSet<String>>,
}

impl Guard {
    /// Warns once per period when spend passes `ratio` of a budget.
    pub fn warn_if_near(&self, ratio: f64, s: &Standing, at: &At) {
        for (name, period, spent, budget) in [
            ("daily", &at.day, s.day_spend, s.day_budget),
            ("monthly", &at.month, s.month_spend, s.month_budget),
        ] {
            if budget > 0 && spent as f64 >= ratio * budget as f64 {
                let key = format!("{name}:{period}");
                if self.warned.lock().expect("guard lock").insert(key) {
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
}
