//! Balance changes that are not charges: top-ups and operator grants. Each
//! is one ledger row in the caller's transaction, so `admin audit` (the
//! balance equals the sum of its ledger) holds after every commit.

use crate::db::sql::Tx;

use super::types::LedgerKind;
use crate::db::billing as repo;
use crate::error::AppResult;
use crate::ids::UserId;

pub use crate::db::billing::{
    audit, ledger_tail, refund_shortfall, refund_shortfalls, AuditMismatch, LedgerRow,
};

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
    tx: &Tx<'_>,
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
    tx: &Tx<'_>,
    user_id: &UserId,
    fen: i64,
    out_trade_no: &str,
    now_ms: i64,
) -> AppResult<i64> {
    repo::ensure_quota_row(tx, user_id, now_ms)?;
    repo::add_balance(tx, user_id, fen, now_ms)?;
    repo::append_ledger(tx, user_id, fen, LedgerKind::Topup, out_trade_no, now_ms)
}

/// What a refund did to the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refunded {
    /// This refund id was already recorded: nothing changed.
    Already,
    /// `debited_fen` taken from the balance (one `refund` ledger row when
    /// non-zero); `shortfall_fen` of the refund had already been spent (or
    /// is held by work in flight) and is recorded, not debited.
    Debited {
        debited_fen: i64,
        shortfall_fen: i64,
    },
}

/// Debits a refunded top-up once per `refund_id`: at most what is
/// spendable (balance minus holds), so never below zero; the rest is
/// recorded as a shortfall.
pub fn debit_refund(
    tx: &Tx<'_>,
    user_id: &UserId,
    out_trade_no: &str,
    refund_id: &str,
    fen: i64,
    now_ms: i64,
) -> AppResult<Refunded> {
    if repo::refund_recorded(tx, refund_id)? {
        return Ok(Refunded::Already);
    }
    repo::ensure_quota_row(tx, user_id, now_ms)?;
    let (balance_fen, held_fen) = repo::balance(tx, user_id)?;
    let debited_fen = fen.min(balance_fen - held_fen).max(0);
    let shortfall_fen = fen - debited_fen;
    if debited_fen > 0 {
        repo::add_balance(tx, user_id, -debited_fen, now_ms)?;
        repo::append_ledger(
            tx,
            user_id,
            -debited_fen,
            LedgerKind::Refund,
            refund_id,
            now_ms,
        )?;
    }
    repo::insert_refund(
        tx,
        &repo::RefundRow {
            refund_id: refund_id.to_string(),
            out_trade_no: out_trade_no.to_string(),
            user_id: user_id.clone(),
            amount_fen: fen,
            debited_fen,
            shortfall_fen,
            created_at: now_ms,
        },
    )?;
    Ok(Refunded::Debited {
        debited_fen,
        shortfall_fen,
    })
}
