//! Balance changes that are not charges: top-ups and operator grants. Each
//! is one ledger row in the caller's transaction, so `admin audit` (the
//! balance equals the sum of its ledger) holds after every commit.

use rusqlite::Transaction;

use super::types::LedgerKind;
use crate::db::billing as repo;
use crate::error::AppResult;
use crate::ids::UserId;

pub use crate::db::billing::{audit, ledger_tail, AuditMismatch, LedgerRow};

/// A debit would take the balance below what replies in flight hold.
#[derive(Debug)]
pub struct Insufficient {
    pub balance_fen: i64,
    pub held_fen: i64,
}

/// Operator credit (or debit, `fen < 0`). Refused when the balance would
/// drop below the fen already held by replies in flight (so never below
/// zero). Returns the new balance.
pub fn grant(
    tx: &Transaction<'_>,
    user_id: &UserId,
    fen: i64,
    reason: &str,
    now_ms: i64,
) -> AppResult<Result<i64, Insufficient>> {
    repo::ensure_quota_row(tx, user_id, now_ms)?;
    let (balance_fen, held_fen) = repo::balance(tx, user_id)?;
    if balance_fen + fen < held_fen {
        return Ok(Err(Insufficient {
            balance_fen,
            held_fen,
        }));
    }
    repo::add_balance(tx, user_id, fen, now_ms)?;
    repo::append_ledger(tx, user_id, fen, LedgerKind::Grant, reason, now_ms).map(Ok)
}

/// Credits a paid top-up: one `topup` ledger row referencing the order.
/// The `ledger_once` index refuses a second credit for the same order, so
/// even a logic slip upstream cannot credit twice. Returns the new balance.
pub fn credit_topup(
    tx: &Transaction<'_>,
    user_id: &UserId,
    fen: i64,
    out_trade_no: &str,
    now_ms: i64,
) -> AppResult<i64> {
    repo::ensure_quota_row(tx, user_id, now_ms)?;
    repo::add_balance(tx, user_id, fen, now_ms)?;
    repo::append_ledger(tx, user_id, fen, LedgerKind::Topup, out_trade_no, now_ms)
}
