//! Settings, free quota, balance, reservations and the ledger.
//!
//! A message in flight *holds* what it will cost (one free message, or
//! `price_fen` in `held_fen`); only settling a completed reply moves money,
//! as one ledger row. So `balance_fen == sum(ledger)` at every instant, even
//! while replies are being generated.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::AppResult;
use crate::ids::new_id;

pub const FREE_DAILY: &str = "free_daily";
pub const PRICE_FEN: &str = "price_fen";

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub free_daily: i64,
    pub price_fen: i64,
}

/// Writes the config's values as the live settings unless already present.
pub fn seed_settings(
    conn: &Connection,
    free_daily: i64,
    price_fen: i64,
    now: i64,
) -> AppResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)",
    )?;
    stmt.execute(params![FREE_DAILY, free_daily, now])?;
    stmt.execute(params![PRICE_FEN, price_fen, now])?;
    Ok(())
}

pub fn settings(conn: &Connection) -> AppResult<Settings> {
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

pub fn get_setting(conn: &Connection, key: &str) -> AppResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Writes a setting's first value; later changes come from the admin CLI.
pub fn seed_setting(conn: &Connection, key: &str, value: i64, now: i64) -> AppResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![key, value, now])?;
    Ok(())
}

pub fn set_setting(conn: &Connection, key: &str, value: i64, now: i64) -> AppResult<()> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![key, value, now])?;
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
pub fn quota_state(conn: &Connection, user_id: &str, today: &str) -> AppResult<QuotaState> {
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

fn ensure_quota_row(tx: &Transaction<'_>, user_id: &str, now: i64) -> AppResult<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO user_quotas (user_id, updated_at) VALUES (?1, ?2)")?
        .execute(params![user_id, now])?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: String,
    pub paid: bool,
    pub amount_fen: i64,
}

/// Nothing free left today and not enough balance for one message.
#[derive(Debug)]
pub struct Exhausted {
    pub price_fen: i64,
}

/// Holds one free message, else `price_fen` of balance, for `message_id`.
pub fn reserve(
    tx: &Transaction<'_>,
    user_id: &str,
    message_id: &str,
    today: &str,
    now: i64,
) -> AppResult<Result<Reservation, Exhausted>> {
    ensure_quota_row(tx, user_id, now)?;
    let s = settings(tx)?;
    let q = quota_state(tx, user_id, today)?;
    let (paid, amount) = if q.free_used_today < s.free_daily {
        tx.prepare_cached("UPDATE user_quotas SET free_day = ?2, free_used = ?3, updated_at = ?4 WHERE user_id = ?1")?.execute(
            params![user_id, today, q.free_used_today + 1, now],
        )?;
        (false, 0)
    } else if q.available_fen() >= s.price_fen {
        tx.prepare_cached(
            "UPDATE user_quotas SET held_fen = held_fen + ?2, updated_at = ?3 WHERE user_id = ?1",
        )?
        .execute(params![user_id, s.price_fen, now])?;
        (true, s.price_fen)
    } else {
        return Ok(Err(Exhausted {
            price_fen: s.price_fen,
        }));
    };
    let id = new_id("rsv", now);
    tx.prepare_cached("INSERT INTO reservations (id, user_id, message_id, kind, amount_fen, free_day, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'held', ?7)")?.execute(
        params![id, user_id, message_id, if paid { "paid" } else { "free" }, amount, today, now],
    )?;
    Ok(Ok(Reservation {
        id,
        paid,
        amount_fen: amount,
    }))
}

struct Held {
    id: String,
    user_id: String,
    paid: bool,
    amount_fen: i64,
    free_day: String,
}

fn held_for(tx: &Transaction<'_>, message_id: &str) -> AppResult<Option<Held>> {
    Ok(tx
        .prepare_cached(
            "SELECT id, user_id, kind, amount_fen, free_day FROM reservations
             WHERE message_id = ?1 AND state = 'held'",
        )?
        .query_row([message_id], |r| {
            Ok(Held {
                id: r.get(0)?,
                user_id: r.get(1)?,
                paid: r.get::<_, String>(2)? == "paid",
                amount_fen: r.get(3)?,
                free_day: r.get(4)?,
            })
        })
        .optional()?)
}

/// Turns the hold for `message_id` into a charge (one ledger row for a paid
/// message). Returns the fen charged; 0 when nothing was held.
pub fn settle(tx: &Transaction<'_>, message_id: &str, now: i64) -> AppResult<i64> {
    let Some(h) = held_for(tx, message_id)? else {
        return Ok(0);
    };
    if h.paid && h.amount_fen > 0 {
        tx.prepare_cached(
            "UPDATE user_quotas SET balance_fen = balance_fen - ?2, held_fen = held_fen - ?2,
             updated_at = ?3 WHERE user_id = ?1",
        )?
        .execute(params![h.user_id, h.amount_fen, now])?;
        append_ledger(tx, &h.user_id, -h.amount_fen, "charge", message_id, now)?;
    }
    tx.prepare_cached("UPDATE reservations SET state = 'settled', closed_at = ?2 WHERE id = ?1")?
        .execute(params![h.id, now])?;
    Ok(if h.paid { h.amount_fen } else { 0 })
}

/// Gives back what `message_id` held: the free message (if its day is still
/// the counted day) or the held fen. Nothing touches the ledger.
pub fn release(tx: &Transaction<'_>, message_id: &str, now: i64) -> AppResult<()> {
    let Some(h) = held_for(tx, message_id)? else {
        return Ok(());
    };
    if h.paid {
        tx.prepare_cached(
            "UPDATE user_quotas SET held_fen = held_fen - ?2, updated_at = ?3 WHERE user_id = ?1",
        )?
        .execute(params![h.user_id, h.amount_fen, now])?;
    } else {
        tx.prepare_cached(
            "UPDATE user_quotas SET free_used = free_used - 1, updated_at = ?3
             WHERE user_id = ?1 AND free_day = ?2 AND free_used > 0",
        )?
        .execute(params![h.user_id, h.free_day, now])?;
    }
    tx.prepare_cached("UPDATE reservations SET state = 'released', closed_at = ?2 WHERE id = ?1")?
        .execute(params![h.id, now])?;
    Ok(())
}

/// Message ids whose reservations are still held (after a crash, all of them).
pub fn held_message_ids(conn: &Connection) -> AppResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT message_id FROM reservations WHERE state = 'held'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn append_ledger(
    tx: &Transaction<'_>,
    user_id: &str,
    delta: i64,
    kind: &str,
    reference: &str,
    now: i64,
) -> AppResult<i64> {
    let balance: i64 = tx
        .prepare_cached("SELECT balance_fen FROM user_quotas WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO ledger (user_id, delta_fen, balance_after, kind, reference, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![user_id, delta, balance, kind, reference, now])?;
    Ok(balance)
}

/// Would take the balance below what is spendable (or below zero).
#[derive(Debug)]
pub struct Insufficient {
    pub balance_fen: i64,
    pub held_fen: i64,
}

/// Operator credit or debit. Refused when the balance would drop below the
/// fen already held by replies in flight (so never below zero).
pub fn grant(
    tx: &Transaction<'_>,
    user_id: &str,
    fen: i64,
    reason: &str,
    now: i64,
) -> AppResult<Result<i64, Insufficient>> {
    ensure_quota_row(tx, user_id, now)?;
    let q: (i64, i64) = tx
        .prepare_cached("SELECT balance_fen, held_fen FROM user_quotas WHERE user_id = ?1")?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if q.0 + fen < q.1 {
        return Ok(Err(Insufficient {
            balance_fen: q.0,
            held_fen: q.1,
        }));
    }
    tx.prepare_cached(
        "UPDATE user_quotas SET balance_fen = balance_fen + ?2, updated_at = ?3 WHERE user_id = ?1",
    )?
    .execute(params![user_id, fen, now])?;
    append_ledger(tx, user_id, fen, "grant", reason, now).map(Ok)
}

/// Credits a paid top-up: one `topup` ledger row referencing the order.
/// The `ledger_once` index refuses a second credit for the same order, so
/// even a logic slip upstream cannot credit twice. Returns the new balance.
pub fn credit_topup(
    tx: &Transaction<'_>,
    user_id: &str,
    fen: i64,
    out_trade_no: &str,
    now: i64,
) -> AppResult<i64> {
    ensure_quota_row(tx, user_id, now)?;
    tx.prepare_cached(
        "UPDATE user_quotas SET balance_fen = balance_fen + ?2, updated_at = ?3 WHERE user_id = ?1",
    )?
    .execute(params![user_id, fen, now])?;
    append_ledger(tx, user_id, fen, "topup", out_trade_no, now)
}

#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub id: i64,
    pub delta_fen: i64,
    pub balance_after: i64,
    pub kind: String,
    pub reference: String,
    pub created_at: i64,
}

pub fn ledger_tail(conn: &Connection, user_id: &str, n: u32) -> AppResult<Vec<LedgerRow>> {
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
    pub user_id: String,
    pub balance_fen: i64,
    pub ledger_sum: i64,
}

/// Every user whose stored balance differs from the sum of their ledger.
pub fn audit(conn: &Connection) -> AppResult<(usize, Vec<AuditMismatch>)> {
    let checked: i64 = conn.prepare_cached("SELECT count(*) FROM (SELECT user_id FROM user_quotas UNION SELECT user_id FROM ledger)")?.query_row(
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

/// Payment orders per status (for metrics).
pub fn payments_by_status(conn: &mut Connection) -> AppResult<Vec<(String, i64)>> {
    let mut stmt = conn
        .prepare_cached("SELECT status, count(*) FROM payments GROUP BY status ORDER BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Income so far (fen): per-message charges and paid top-ups (for metrics).
pub fn income_totals(conn: &mut Connection) -> AppResult<(i64, i64)> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(-sum(CASE WHEN kind = 'charge' THEN delta_fen END), 0),
                COALESCE(sum(CASE WHEN kind = 'topup' THEN delta_fen END), 0) FROM ledger",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}
