//! Payments (WeChat Pay top-up orders). Status moves pending -> paid |
//! closed | failed; a paid order is credited to the ledger in the same
//! transaction that marks it paid (see `pay::service::settle`).

use crate::db::sql::{params, Conn, OptionalExtension, Row, Tx};

use crate::error::AppResult;
use crate::ids::UserId;

#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub out_trade_no: String,
    pub user_id: UserId,
    pub amount_fen: i64,
    pub status: String,
    pub transaction_id: Option<String>,
    pub prepay_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub paid_at: Option<i64>,
}

const COLUMNS: &str = "out_trade_no, user_id, amount_fen, status, transaction_id, prepay_id, \
                       created_at, expires_at, paid_at";

fn row(r: &Row<'_>) -> crate::db::sql::DbResult<PaymentRow> {
    Ok(PaymentRow {
        out_trade_no: r.get(0)?,
        user_id: r.get(1)?,
        amount_fen: r.get(2)?,
        status: r.get(3)?,
        transaction_id: r.get(4)?,
        prepay_id: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        paid_at: r.get(8)?,
    })
}

/// Creates a pending order for a live user, recording the payer's openid;
/// returns that openid, or None when the user no longer exists.
pub fn create_pending(
    tx: &Tx<'_>,
    out_trade_no: &str,
    user_id: &UserId,
    amount_fen: i64,
    now: i64,
    expires_at: i64,
) -> AppResult<Option<String>> {
    Ok(tx
        .prepare_cached("INSERT INTO payments (out_trade_no, user_id, payer_openid, amount_fen, status, created_at, expires_at)
             SELECT ?1, id, openid, ?3, 'pending', ?4, ?5 FROM users
             WHERE id = ?2 AND deleted_at IS NULL AND openid IS NOT NULL
             RETURNING payer_openid")?.query_row(
            params![out_trade_no, user_id, amount_fen, now, expires_at],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn set_prepay_id(tx: &Tx<'_>, out_trade_no: &str, prepay_id: &str) -> AppResult<()> {
    tx.prepare_cached("UPDATE payments SET prepay_id = ?2 WHERE out_trade_no = ?1")?
        .execute(params![out_trade_no, prepay_id])?;
    Ok(())
}

pub fn find(conn: &Conn, out_trade_no: &str) -> AppResult<Option<PaymentRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM payments WHERE out_trade_no = ?1"
        ))?
        .query_row([out_trade_no], row)
        .optional()?)
}

/// The order if it belongs to `user_id`.
pub fn find_for_user(
    conn: &Conn,
    out_trade_no: &str,
    user_id: &UserId,
) -> AppResult<Option<PaymentRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM payments WHERE out_trade_no = ?1 AND user_id = ?2"
        ))?
        .query_row(params![out_trade_no, user_id], row)
        .optional()?)
}

/// Marks an order paid unless it already is; true when this call did it.
pub fn mark_paid(
    tx: &Tx<'_>,
    out_trade_no: &str,
    transaction_id: &str,
    paid_at: i64,
) -> AppResult<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE payments SET status = 'paid', transaction_id = ?2, paid_at = ?3
         WHERE out_trade_no = ?1 AND status <> 'paid'",
        )?
        .execute(params![out_trade_no, transaction_id, paid_at])?;
    Ok(n == 1)
}

/// Moves a pending order to `status` ('closed' or 'failed'); true when it
/// was pending.
pub fn finish_pending(tx: &Tx<'_>, out_trade_no: &str, status: &str) -> AppResult<bool> {
    debug_assert!(matches!(status, "closed" | "failed"));
    let n = tx
        .prepare_cached(
            "UPDATE payments SET status = ?2 WHERE out_trade_no = ?1 AND status = 'pending'",
        )?
        .execute(params![out_trade_no, status])?;
    Ok(n == 1)
}

/// Pending orders created before `created_before`, oldest first.
pub fn pending_before(conn: &Conn, created_before: i64) -> AppResult<Vec<PaymentRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM payments WHERE status = 'pending' AND created_at < ?1
         ORDER BY created_at, out_trade_no"
    ))?;
    let rows = stmt.query_map([created_before], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Payment orders per status (for metrics).
pub fn payments_by_status(conn: &Conn) -> AppResult<Vec<(String, i64)>> {
    let mut stmt = conn
        .prepare_cached("SELECT status, count(*) FROM payments GROUP BY status ORDER BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
