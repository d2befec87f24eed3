//! The free quota and spendable balance, as the API shows them.

use crate::db::sql::Conn;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use crate::db::billing as repo;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ids::UserId;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub free_limit: i64,
    pub free_used_today: i64,
    pub free_remaining: i64,
    /// Spendable balance: stored balance minus fen held by replies in flight.
    pub balance_fen: i64,
    pub price_fen: i64,
}

/// The quota part of an answer to paid work (a chat reply, a voice result).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplyQuota {
    pub free_remaining: i64,
    pub balance_fen: i64,
    /// What this work was charged (0 when free).
    pub charged_fen: i64,
}

/// The user's quota on local day `day`.
pub fn view(conn: &Conn, user_id: &UserId, day: &str) -> AppResult<QuotaView> {
    let (s, q) = repo::settings_and_quota(conn, user_id, day)?;
    Ok(QuotaView {
        free_limit: s.free_daily,
        free_used_today: q.free_used_today,
        free_remaining: (s.free_daily - q.free_used_today).max(0),
        balance_fen: q.available_fen(),
        price_fen: s.price_fen,
    })
}

/// The quota after work that was charged `charged_fen`.
pub fn after(conn: &Conn, user_id: &UserId, day: &str, charged_fen: i64) -> AppResult<ReplyQuota> {
    let q = view(conn, user_id, day)?;
    Ok(ReplyQuota {
        free_remaining: q.free_remaining,
        balance_fen: q.balance_fen,
        charged_fen,
    })
}

/// What the work stored under `key` was charged (a replayed request
/// answers it; the replay itself is free).
pub fn charged_for(conn: &Conn, key: &str) -> AppResult<i64> {
    repo::charged_for(conn, key)
}

/// 402 with what it costs and how to top up.
pub fn exhausted_error(price_fen: i64, topup_amounts_fen: &[i64]) -> AppError {
    AppError::new(
        StatusCode::PAYMENT_REQUIRED,
        ErrorCode::QuotaExhausted,
        format!(
            "no free messages left today and the balance is below the price of {price_fen} fen; top up to continue"
        ),
    )
    .with("price_fen", json!(price_fen))
    .with("topup_amounts_fen", json!(topup_amounts_fen))
}
