//! Free daily quota and prepaid balance, as the API shows them.

use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset, Utc};
use rusqlite::Connection;
use serde::Serialize;
use serde_json::json;

use crate::db::quota::{self, Exhausted};
use crate::error::{AppError, AppResult};

/// The user's calendar day in the quota's timezone, e.g. "2026-11-25".
pub fn local_day(now: DateTime<Utc>, offset: FixedOffset) -> String {
    now.with_timezone(&offset).format("%Y-%m-%d").to_string()
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub free_limit: i64,
    pub free_used_today: i64,
    pub free_remaining: i64,
    /// Spendable balance: stored balance minus fen held by replies in flight.
    pub balance_fen: i64,
    pub price_fen: i64,
}

pub fn view(conn: &Connection, user_id: &str, today: &str) -> AppResult<QuotaView> {
    let s = quota::settings(conn)?;
    let q = quota::quota_state(conn, user_id, today)?;
    Ok(QuotaView {
        free_limit: s.free_daily,
        free_used_today: q.free_used_today,
        free_remaining: (s.free_daily - q.free_used_today).max(0),
        balance_fen: q.available_fen(),
        price_fen: s.price_fen,
    })
}

/// 402 with what it costs and how to top up.
pub fn exhausted_error(e: Exhausted, topup_amounts_fen: &[i64]) -> AppError {
    AppError::new(
        StatusCode::PAYMENT_REQUIRED,
        "quota_exhausted",
        format!(
            "no free messages left today and the balance is below the price of {} fen; top up to continue",
            e.price_fen
        ),
    )
    .with("price_fen", json!(e.price_fen))
    .with("topup_amounts_fen", json!(topup_amounts_fen))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn local_day_rolls_at_local_midnight() {
        let cst = crate::config::parse_offset("+08:00").unwrap();
        let before = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 15, 59, 59)
            .unwrap();
        let after = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 16, 0, 0)
            .unwrap();
        assert_eq!(super::local_day(before, cst), "2026-11-25");
        assert_eq!(super::local_day(after, cst), "2026-11-26");
    }
}
