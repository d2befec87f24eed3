//! Reads for the operator console (`crate::console`): users found by id,
//! their holds and orders, orders by status, daily figures, provider
//! health. Counts and sums only: nothing here reads message content or
//! coordinates.

use std::collections::BTreeMap;

use crate::db::sql::{params, Conn, OptionalExtension, Row};

use crate::error::AppResult;
use crate::ids::UserId;

use super::payments::PaymentRow;

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub id: UserId,
    pub openid: Option<String>,
    pub created_at: i64,
    pub last_login_at: i64,
    pub deleted_at: Option<i64>,
    pub messages: i64,
    pub media: i64,
    pub locations: i64,
}

fn user_info(r: &Row<'_>) -> crate::db::sql::DbResult<UserInfo> {
    Ok(UserInfo {
        id: r.get(0)?,
        openid: r.get(1)?,
        created_at: r.get(2)?,
        last_login_at: r.get(3)?,
        deleted_at: r.get(4)?,
        messages: r.get(5)?,
        media: r.get(6)?,
        locations: r.get(7)?,
    })
}

const USER_COLUMNS: &str = "u.id, u.openid, u.created_at, u.last_login_at, u.deleted_at,
    (SELECT count(*) FROM messages m WHERE m.user_id = u.id),
    (SELECT count(*) FROM media d WHERE d.user_id = u.id),
    (SELECT count(*) FROM location_logs l WHERE l.user_id = u.id)";

pub fn user(conn: &Conn, id: &UserId) -> AppResult<Option<UserInfo>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"
        ))?
        .query_row([id], user_info)
        .optional()?)
}

/// Users whose id starts with `prefix` (or whose openid is exactly it),
/// newest first; the newest users when `prefix` is empty.
pub fn find_users(conn: &Conn, prefix: &str, limit: u32) -> AppResult<Vec<UserInfo>> {
    let escaped = prefix
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u
         WHERE ?1 = '' OR u.id LIKE ?2 ESCAPE '\\' OR u.openid = ?1
         ORDER BY u.created_at DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![prefix, format!("{escaped}%"), limit], user_info)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone)]
pub struct HoldRow {
    pub id: String,
    pub key: String,
    pub kind: String,
    pub amount_fen: i64,
    pub created_at: i64,
}

/// Reservations still held by the user's replies in flight.
pub fn holds(conn: &Conn, user_id: &UserId) -> AppResult<Vec<HoldRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, message_id, kind, amount_fen, created_at FROM reservations
         WHERE user_id = ?1 AND state = 'held' ORDER BY created_at",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(HoldRow {
            id: r.get(0)?,
            key: r.get(1)?,
            kind: r.get(2)?,
            amount_fen: r.get(3)?,
            created_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const PAYMENT_COLUMNS: &str = "out_trade_no, user_id, amount_fen, status, transaction_id, \
                               prepay_id, created_at, expires_at, paid_at";

fn payment(r: &Row<'_>) -> crate::db::sql::DbResult<PaymentRow> {
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

/// Orders, newest first, optionally of one status and/or one user.
pub fn orders(
    conn: &Conn,
    status: Option<&str>,
    user_id: Option<&UserId>,
    limit: u32,
) -> AppResult<Vec<PaymentRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE (CAST(?1 AS TEXT) IS NULL OR status = ?1) AND (CAST(?2 AS TEXT) IS NULL OR user_id = ?2)
         ORDER BY created_at DESC, out_trade_no LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![status, user_id, limit], payment)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One local day's figures.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct DayFigures {
    /// Local calendar day (quota.timezone), YYYY-MM-DD.
    pub day: String,
    /// Users who sent at least one message that day.
    pub active_users: i64,
    pub free_messages: i64,
    pub paid_messages: i64,
    /// Paid WeChat Pay top-ups credited that day.
    pub topup_fen: i64,
    /// Per-message charges taken from balances that day.
    pub charges_fen: i64,
    /// Model spend, nano-units of the upstream's currency.
    pub spend_nanos: i64,
    pub calls: i64,
    pub failed_calls: i64,
    /// 402 `quota_exhausted` answers that day (kept since V11).
    pub quota_refusals: i64,
}

/// Daily figures since `since_ms`, keyed by local day (`offset_secs` from UTC).
pub fn daily(
    conn: &Conn,
    since_ms: i64,
    offset_secs: i64,
) -> AppResult<BTreeMap<String, DayFigures>> {
    let backend = conn.backend();
    let day = |col: &str| backend.local_day(col, offset_secs);
    let mut out: BTreeMap<String, DayFigures> = BTreeMap::new();
    let mut fill = |sql: String,
                    set: &dyn Fn(&mut DayFigures, &Row<'_>) -> crate::db::sql::DbResult<()>|
     -> AppResult<()> {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut q = stmt.query([since_ms])?;
        while let Some(r) = q.next()? {
            let d: String = r.get(0)?;
            let e = out.entry(d.clone()).or_insert_with(|| DayFigures {
                day: d,
                ..Default::default()
            });
            set(e, &r)?;
        }
        Ok(())
    };
    fill(
        format!(
            "SELECT {}, count(DISTINCT user_id) FROM messages
             WHERE role = 'user' AND created_at >= ?1 GROUP BY 1",
            day("created_at")
        ),
        &|e, r| {
            e.active_users = r.get(1)?;
            Ok(())
        },
    )?;
    fill(
        format!(
            "SELECT {}, sum(CASE WHEN kind = 'free' THEN 1 ELSE 0 END), sum(CASE WHEN kind = 'paid' THEN 1 ELSE 0 END) FROM reservations
             WHERE state = 'settled' AND created_at >= ?1 GROUP BY 1",
            day("created_at")
        ),
        &|e, r| {
            e.free_messages = r.get(1)?;
            e.paid_messages = r.get(2)?;
            Ok(())
        },
    )?;
    fill(
        format!(
            "SELECT {}, COALESCE(sum(CASE WHEN kind = 'topup' THEN delta_fen END), 0),
                    COALESCE(-sum(CASE WHEN kind = 'charge' THEN delta_fen END), 0)
             FROM ledger WHERE created_at >= ?1 GROUP BY 1",
            day("created_at")
        ),
        &|e, r| {
            e.topup_fen = r.get(1)?;
            e.charges_fen = r.get(2)?;
            Ok(())
        },
    )?;
    fill(
        format!(
            "SELECT {}, count(*), sum(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END), sum(cost_nanos) FROM llm_calls
             WHERE created_at >= ?1 GROUP BY 1",
            day("created_at")
        ),
        &|e, r| {
            e.calls = r.get(1)?;
            e.failed_calls = r.get(2)?;
            e.spend_nanos = r.get(3)?;
            Ok(())
        },
    )?;
    fill(
        format!(
            "SELECT day, count FROM quota_refusals
             WHERE day >= {}",
            day("CAST(?1 AS BIGINT)")
        ),
        &|e, r| {
            e.quota_refusals = r.get(1)?;
            Ok(())
        },
    )?;
    Ok(out)
}

/// Counts one 402 `quota_exhausted` answer on local `day`.
pub fn count_quota_refusal(tx: &crate::db::sql::Tx<'_>, day: &str) -> AppResult<()> {
    tx.prepare_cached(
        "INSERT INTO quota_refusals (day, count) VALUES (?1, 1)
         ON CONFLICT(day) DO UPDATE SET count = quota_refusals.count + 1",
    )?
    .execute([day])?;
    Ok(())
}

/// (model, provider, latency_ms, outcome) of calls since `since_ms`, at most
/// `limit` of the newest (for latency percentiles).
pub fn call_latencies(
    conn: &Conn,
    since_ms: i64,
    limit: u32,
) -> AppResult<Vec<(String, String, i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT model, provider, latency_ms, outcome FROM llm_calls WHERE created_at >= ?1
         ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![since_ms, limit], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderCall {
    pub model: String,
    pub provider_model: String,
    pub outcome: String,
    pub latency_ms: i64,
    /// Why it failed (short, secret-free); null for calls before V11.
    pub error: Option<String>,
    #[serde(skip)]
    pub created_ms: i64,
}

/// The provider's last successful call and its latest failed ones.
pub fn provider_calls(
    conn: &Conn,
    provider: &str,
    failures: u32,
) -> AppResult<(Option<i64>, Vec<ProviderCall>)> {
    let last_ok: Option<i64> = conn
        .prepare_cached(
            "SELECT max(created_at) FROM llm_calls WHERE provider = ?1 AND outcome = 'ok'",
        )?
        .query_row([provider], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT model, provider_model, outcome, latency_ms, created_at, error FROM llm_calls
         WHERE provider = ?1 AND outcome <> 'ok' ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![provider, failures], |r| {
        Ok(ProviderCall {
            model: r.get(0)?,
            provider_model: r.get(1)?,
            outcome: r.get(2)?,
            latency_ms: r.get(3)?,
            created_ms: r.get(4)?,
            error: r.get(5)?,
        })
    })?;
    Ok((last_ok, rows.collect::<Result<_, _>>()?))
}

/// (users, live users, payments, ledger rows) in the whole database.
pub fn totals(conn: &Conn) -> AppResult<(i64, i64, i64, i64)> {
    Ok(conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM users WHERE deleted_at IS NULL),
                    (SELECT count(*) FROM payments), (SELECT count(*) FROM ledger)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?)
}

/// The database's size in bytes (pages in use, WAL excluded).
pub fn database_bytes(conn: &Conn) -> AppResult<i64> {
    Ok(conn.query_row(conn.backend().database_size_sql(), [], |r| r.get(0))?)
}

/// Distinct users who sent a message since `since_ms`.
pub fn active_users_since(conn: &Conn, since_ms: i64) -> AppResult<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(DISTINCT user_id) FROM messages WHERE role = 'user' AND created_at >= ?1",
        )?
        .query_row([since_ms], |r| r.get(0))?)
}
