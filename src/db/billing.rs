//! The SQL of money: settings, free quota, balance, reservations and the
//! ledger. The rule that uses these statements is `crate::billing`; nothing
//! else calls the writes here.

use crate::db::sql::{params, Conn, OptionalExtension, Tx};

use crate::billing::types::{LedgerKind, ReservationKind, ReservationState};
use crate::error::AppResult;
use crate::ids::UserId;

pub const FREE_DAILY: &str = "free_daily";
pub const PRICE_FEN: &str = "price_fen";

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub free_daily: i64,
    pub price_fen: i64,
}

pub fn settings(conn: &Conn) -> AppResult<Settings> {
    // One statement for both: this runs in every chat turn.
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE(max(CASE WHEN key = 'free_daily' THEN value END), 0),
                COALESCE(max(CASE WHEN key = 'price_fen' THEN value END), 0)
         FROM settings WHERE key IN ('free_daily', 'price_fen')",
    )?;
    Ok(stmt.query_row([], |r| {
        Ok(Settings {
            free_daily: r.get(0)?,
            price_fen: r.get(1)?,
        })
    })?)
}

pub fn get_setting(conn: &Conn, key: &str) -> AppResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Writes a setting's first value; later changes come from the admin CLI.
pub fn seed_setting(conn: &Conn, key: &str, value: i64, now: i64) -> AppResult<()> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?
    .execute(params![key, value, now])?;
    Ok(())
}

pub fn set_setting(conn: &Conn, key: &str, value: i64, now: i64) -> AppResult<()> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![key, value, now])?;
    Ok(())
}

/// The top-up amounts are the settings `topup.0`, `topup.1`, … in order.
const TOPUP_KEYS: &str = "topup.%";

/// The stored top-up amounts, in order (empty before they are seeded).
pub fn topups(conn: &Conn) -> AppResult<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT value FROM settings WHERE key LIKE ?1 ORDER BY CAST(substr(key, 7) AS INTEGER)",
    )?;
    let rows = stmt.query_map([TOPUP_KEYS], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the top-up amounts (validated by the caller).
pub fn set_topups(tx: &Tx<'_>, amounts: &[i64], now: i64) -> AppResult<()> {
    tx.prepare_cached("DELETE FROM settings WHERE key LIKE ?1")?
        .execute([TOPUP_KEYS])?;
    for (i, a) in amounts.iter().enumerate() {
        set_setting(tx, &format!("topup.{i}"), *a, now)?;
    }
    Ok(())
}

/// Stores the first top-up amounts unless some are stored already.
pub fn seed_topups(tx: &Tx<'_>, amounts: &[i64], now: i64) -> AppResult<()> {
    if topups(tx)?.is_empty() && !amounts.is_empty() {
        set_topups(tx, amounts, now)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaState {
    pub free_used_today: i64,
    pub balance_fen: i64,
    pub held_fen: i64,
}

impl QuotaState {
    pub fn available_fen(&self) -> i64 {
        self.balance_fen - self.held_fen
    }
}

/// The user's quota as of local day `today` (a day other than the stored
/// one means nothing is used yet today).
pub fn quota_state(conn: &Conn, user_id: &UserId, today: &str) -> AppResult<QuotaState> {
    Ok(conn
        .prepare_cached(
            "SELECT CASE WHEN free_day = ?2 THEN free_used ELSE 0 END, balance_fen, held_fen
             FROM user_quotas WHERE user_id = ?1",
        )?
        .query_row(params![user_id, today], |r| {
            Ok(QuotaState {
                free_used_today: r.get(0)?,
                balance_fen: r.get(1)?,
                held_fen: r.get(2)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// [`settings`] and [`quota_state`] in one statement: every chat turn
/// needs both, twice.
pub fn settings_and_quota(
    conn: &Conn,
    user_id: &UserId,
    today: &str,
) -> AppResult<(Settings, QuotaState)> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE((SELECT value FROM settings WHERE key = 'free_daily'), 0),
                    COALESCE((SELECT value FROM settings WHERE key = 'price_fen'), 0),
                    q.free_used, q.balance_fen, q.held_fen
             FROM (SELECT 1 AS one) AS base
             LEFT JOIN (SELECT CASE WHEN free_day = ?2 THEN free_used ELSE 0 END AS free_used,
                               balance_fen, held_fen
                        FROM user_quotas WHERE user_id = ?1) AS q ON TRUE",
        )?
        .query_row(params![user_id, today], |r| {
            Ok((
                Settings {
                    free_daily: r.get(0)?,
                    price_fen: r.get(1)?,
                },
                QuotaState {
                    free_used_today: r.get::<Option<i64>>(2)?.unwrap_or(0),
                    balance_fen: r.get::<Option<i64>>(3)?.unwrap_or(0),
                    held_fen: r.get::<Option<i64>>(4)?.unwrap_or(0),
                },
            ))
        })?)
}

pub fn ensure_quota_row(tx: &Tx<'_>, user_id: &UserId, now: i64) -> AppResult<()> {
    tx.prepare_cached(
        "INSERT INTO user_quotas (user_id, updated_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?
    .execute(params![user_id, now])?;
    Ok(())
}

/// Counts `used` free messages on `day` (the day it counts for).
pub fn set_free_used(
    tx: &Tx<'_>,
    user_id: &UserId,
    day: &str,
    used: i64,
    now: i64,
) -> AppResult<()> {
    tx.prepare_cached(
        "UPDATE user_quotas SET free_day = ?2, free_used = ?3, updated_at = ?4 WHERE user_id = ?1",
    )?
    .execute(params![user_id, day, used, now])?;
    Ok(())
}

/// Gives one free message of `day` back, if `day` is still the counted day.
pub fn give_back_free(tx: &Tx<'_>, user_id: &UserId, day: &str, now: i64) -> AppResult<()> {
    tx.prepare_cached(
        "UPDATE user_quotas SET free_used = free_used - 1, updated_at = ?3
         WHERE user_id = ?1 AND free_day = ?2 AND free_used > 0",
    )?
    .execute(params![user_id, day, now])?;
    Ok(())
}

/// Adds `fen` (negative: removes) to what replies in flight hold.
pub fn add_held(tx: &Tx<'_>, user_id: &UserId, fen: i64, now: i64) -> AppResult<()> {
    tx.prepare_cached(
        "UPDATE user_quotas SET held_fen = held_fen + ?2, updated_at = ?3 WHERE user_id = ?1",
    )?
    .execute(params![user_id, fen, now])?;
    Ok(())
}

/// Turns `fen` held into a charge: balance and hold both drop.
pub fn charge_held(tx: &Tx<'_>, user_id: &UserId, fen: i64, now: i64) -> AppResult<()> {
    tx.prepare_cached(
        "UPDATE user_quotas SET balance_fen = balance_fen - ?2, held_fen = held_fen - ?2,
         updated_at = ?3 WHERE user_id = ?1",
    )?
    .execute(params![user_id, fen, now])?;
    Ok(())
}

/// Adds `fen` (negative: removes) to the stored balance.
pub fn add_balance(tx: &Tx<'_>, user_id: &UserId, fen: i64, now: i64) -> AppResult<()> {
    tx.prepare_cached(
        "UPDATE user_quotas SET balance_fen = balance_fen + ?2, updated_at = ?3 WHERE user_id = ?1",
    )?
    .execute(params![user_id, fen, now])?;
    Ok(())
}

/// What one reservation holds, as stored.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: String,
    pub user_id: UserId,
    /// The message (or voice operation part) the reservation is for.
    pub key: String,
    pub kind: ReservationKind,
    pub amount_fen: i64,
    /// The local day a free message was counted on.
    pub free_day: String,
}

pub fn insert_reservation(tx: &Tx<'_>, r: &Reservation, now: i64) -> AppResult<()> {
    tx.prepare_cached(
        "INSERT INTO reservations (id, user_id, message_id, kind, amount_fen, free_day, state, created_at, owner)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'held', ?7, ?8)",
    )?
    .execute(params![r.id, r.user_id, r.key, r.kind, r.amount_fen, r.free_day, now, tx.instance()])?;
    Ok(())
}

/// Closes the reservation still held for `key` as `settled` or
/// `released`, and returns it; None when nothing was held.
pub fn close_held(
    tx: &Tx<'_>,
    key: &str,
    state: ReservationState,
    now: i64,
) -> AppResult<Option<Reservation>> {
    Ok(tx
        .prepare_cached(
            "UPDATE reservations SET state = ?2, closed_at = ?3
             WHERE message_id = ?1 AND state = 'held'
             RETURNING id, user_id, message_id, kind, amount_fen, free_day",
        )?
        .query_row(params![key, state, now], |r| {
            Ok(Reservation {
                id: r.get(0)?,
                user_id: r.get(1)?,
                key: r.get(2)?,
                kind: r.get(3)?,
                amount_fen: r.get(4)?,
                free_day: r.get(5)?,
            })
        })
        .optional()?)
}

/// Keys whose reservations are still held (after a crash, all of them).
pub fn held_keys(conn: &Conn) -> AppResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT message_id FROM reservations WHERE state = 'held'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The fen charged for the settled work stored under `key`.
pub fn charged_for(conn: &Conn, key: &str) -> AppResult<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT amount_fen FROM reservations
             WHERE message_id = ?1 AND state = 'settled' AND kind = 'paid'",
        )?
        .query_row([key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The user's balance and what replies in flight hold of it.
pub fn balance(conn: &Conn, user_id: &UserId) -> AppResult<(i64, i64)> {
    Ok(conn
        .prepare_cached("SELECT balance_fen, held_fen FROM user_quotas WHERE user_id = ?1")?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// Appends one balance change; returns the balance after it.
pub fn append_ledger(
    tx: &Tx<'_>,
    user_id: &UserId,
    delta: i64,
    kind: LedgerKind,
    reference: &str,
    now: i64,
) -> AppResult<i64> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO ledger (user_id, delta_fen, balance_after, kind, reference, created_at)
             VALUES (?1, ?2, (SELECT balance_fen FROM user_quotas WHERE user_id = ?1), ?3, ?4, ?5)
             RETURNING balance_after",
        )?
        .query_row(params![user_id, delta, kind, reference, now], |r| r.get(0))?)
}

#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub id: i64,
    pub delta_fen: i64,
    pub balance_after: i64,
    pub kind: LedgerKind,
    pub reference: String,
    pub created_at: i64,
}

pub fn ledger_tail(conn: &Conn, user_id: &UserId, n: u32) -> AppResult<Vec<LedgerRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, delta_fen, balance_after, kind, reference, created_at FROM ledger
         WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![user_id, n], |r| {
        Ok(LedgerRow {
            id: r.get(0)?,
            delta_fen: r.get(1)?,
            balance_after: r.get(2)?,
            kind: r.get(3)?,
            reference: r.get(4)?,
            created_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone)]
pub struct AuditMismatch {
    pub user_id: UserId,
    pub balance_fen: i64,
    pub ledger_sum: i64,
}

/// Every user whose stored balance differs from the sum of their ledger.
pub fn audit(conn: &Conn) -> AppResult<(usize, Vec<AuditMismatch>)> {
    let checked: i64 = conn.prepare_cached("SELECT count(*) FROM (SELECT user_id FROM user_quotas UNION SELECT user_id FROM ledger) AS known")?.query_row(
        [],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(
        "WITH sums AS (SELECT user_id, SUM(delta_fen) AS s FROM ledger GROUP BY user_id),
              ids AS (SELECT user_id FROM user_quotas UNION SELECT user_id FROM sums)
         SELECT ids.user_id, COALESCE(q.balance_fen, 0), COALESCE(sums.s, 0)
         FROM ids LEFT JOIN user_quotas q ON q.user_id = ids.user_id
                  LEFT JOIN sums ON sums.user_id = ids.user_id
         WHERE COALESCE(q.balance_fen, 0) <> COALESCE(sums.s, 0)
         ORDER BY ids.user_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(AuditMismatch {
            user_id: r.get(0)?,
            balance_fen: r.get(1)?,
            ledger_sum: r.get(2)?,
        })
    })?;
    Ok((checked as usize, rows.collect::<Result<_, _>>()?))
}

/// Income so far (fen): per-message charges and paid top-ups (for metrics).
pub fn income_totals(conn: &Conn) -> AppResult<(i64, i64)> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(-sum(CASE WHEN kind = 'charge' THEN delta_fen END), 0),
                COALESCE(sum(CASE WHEN kind = 'topup' THEN delta_fen END), 0) FROM ledger",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// A WeChat Pay refund as recorded: refunded, debited, and the shortfall
/// (refunded but already spent).
#[derive(Debug, Clone)]
pub struct RefundRow {
    pub refund_id: String,
    pub out_trade_no: String,
    pub user_id: UserId,
    pub amount_fen: i64,
    pub debited_fen: i64,
    pub shortfall_fen: i64,
    pub created_at: i64,
}

pub fn refund_recorded(conn: &Conn, refund_id: &str) -> AppResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM refunds WHERE refund_id = ?1")?
        .query_row([refund_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Fen refunded so far on one order.
pub fn refunded_on_order(conn: &Conn, out_trade_no: &str) -> AppResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(SUM(amount_fen), 0) FROM refunds WHERE out_trade_no = ?1")?
        .query_row([out_trade_no], |r| r.get(0))?)
}

pub fn insert_refund(tx: &Tx<'_>, r: &RefundRow) -> AppResult<()> {
    tx.prepare_cached(
        "INSERT INTO refunds (refund_id, out_trade_no, user_id, amount_fen, debited_fen,
                              shortfall_fen, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        r.refund_id,
        r.out_trade_no,
        r.user_id,
        r.amount_fen,
        r.debited_fen,
        r.shortfall_fen,
        r.created_at
    ])?;
    Ok(())
}

/// Refund shortfalls per user (users with none are left out).
pub fn refund_shortfalls(conn: &Conn) -> AppResult<Vec<(UserId, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, SUM(shortfall_fen) FROM refunds WHERE shortfall_fen > 0
         GROUP BY user_id ORDER BY user_id",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One user's total refund shortfall.
pub fn refund_shortfall(conn: &Conn, user_id: &UserId) -> AppResult<i64> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(SUM(shortfall_fen), 0) FROM refunds WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))?)
}
