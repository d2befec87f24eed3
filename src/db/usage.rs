//! llm_calls and llm_spend: upstream usage, spend per period, the usage report.

use crate::db::sql::{params, Conn, Tx};

use crate::billing::types::CallOutcome;
use crate::error::AppResult;
use crate::ids::UserId;

#[derive(Debug, Clone)]
pub struct CallRecord {
    pub user_id: Option<UserId>,
    pub message_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub provider_model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub estimated: bool,
    pub latency_ms: i64,
    pub outcome: CallOutcome,
    pub cost_nanos: i64,
    pub created_at: i64,
    /// Why a failed call failed (`llm::short_error`); None when it did not.
    pub error: Option<String>,
}

/// Records a call and adds its cost to the day's and month's spend.
pub fn record_call(tx: &Tx<'_>, c: &CallRecord, day: &str, month: &str) -> AppResult<()> {
    tx.prepare_cached("INSERT INTO llm_calls (user_id, message_id, model, provider, provider_model, prompt_tokens,
             completion_tokens, estimated, latency_ms, outcome, cost_nanos, created_at, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)")?.execute(
        params![
            c.user_id,
            c.message_id,
            c.model,
            c.provider,
            c.provider_model,
            c.prompt_tokens,
            c.completion_tokens,
            c.estimated,
            c.latency_ms,
            c.outcome,
            c.cost_nanos,
            c.created_at,
            c.error
        ],
    )?;
    if c.cost_nanos > 0 {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO llm_spend (period, cost_nanos) VALUES (?1, ?2)
             ON CONFLICT(period) DO UPDATE SET cost_nanos = llm_spend.cost_nanos + excluded.cost_nanos",
        )?;
        stmt.execute(params![format!("d:{day}"), c.cost_nanos])?;
        stmt.execute(params![format!("m:{month}"), c.cost_nanos])?;
    }
    Ok(())
}

/// Spend so far in the given day and month, and the settings
/// `day_budget_key` and `month_budget_key` (nanos; 0 when unset), in one
/// statement: every chat turn checks them.
pub fn spend_and_budgets(
    conn: &Conn,
    (day, month): (&str, &str),
    (day_budget_key, month_budget_key): (&str, &str),
) -> AppResult<[i64; 4]> {
    let mut stmt = conn.prepare_cached(
        "SELECT COALESCE((SELECT cost_nanos FROM llm_spend WHERE period = ?1), 0),
                COALESCE((SELECT cost_nanos FROM llm_spend WHERE period = ?2), 0),
                COALESCE((SELECT value FROM settings WHERE key = ?3), 0),
                COALESCE((SELECT value FROM settings WHERE key = ?4), 0)",
    )?;
    let periods = (format!("d:{day}"), format!("m:{month}"));
    Ok(stmt.query_row(
        params![periods.0, periods.1, day_budget_key, month_budget_key],
        |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
    )?)
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UsageRow {
    pub key: String,
    pub calls: i64,
    pub failures: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub estimated_calls: i64,
    pub cost_nanos: i64,
    /// per-message charges (fen) attributed to this row
    pub charges_fen: i64,
    /// paid top-ups (fen); only attributable by day and by user
    pub topups_fen: i64,
}

/// Grouping of the usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Model,
    Provider,
    Day,
    User,
}

/// Calls, tokens, spend and income since `since_ms`, grouped. `offset_secs`
/// is the quota timezone's UTC offset (for days).
pub fn report(conn: &Conn, since_ms: i64, by: By, offset_secs: i64) -> AppResult<Vec<UsageRow>> {
    let backend = conn.backend();
    let day = |col: &str| backend.local_day(col, offset_secs);
    let call_key = match by {
        By::Model => "c.model".to_string(),
        By::Provider => "c.provider".to_string(),
        By::Day => day("c.created_at"),
        By::User => "COALESCE(c.user_id, '-')".to_string(),
    };
    let mut rows: std::collections::BTreeMap<String, UsageRow> = Default::default();
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {call_key}, count(*), sum(CASE WHEN c.outcome <> 'ok' THEN 1 ELSE 0 END), sum(c.prompt_tokens),
                    sum(c.completion_tokens), sum(c.estimated), sum(c.cost_nanos)
             FROM llm_calls c WHERE c.created_at >= ?1 GROUP BY 1"
        ))?;
        let mut q = stmt.query([since_ms])?;
        while let Some(r) = q.next()? {
            let row = row_for(&mut rows, r.get(0)?);
            row.calls = r.get(1)?;
            row.failures = r.get(2)?;
            row.prompt_tokens = r.get(3)?;
            row.completion_tokens = r.get(4)?;
            row.estimated_calls = r.get(5)?;
            row.cost_nanos = r.get(6)?;
        }
    }
    // Charges are tied to the reply they paid for; via its (ok) call for
    // model/provider.
    let charge_sql = match by {
        By::Model | By::Provider => format!(
            "SELECT c.{}, -sum(l.delta_fen) FROM ledger l
             JOIN llm_calls c ON c.message_id = l.reference AND c.outcome = 'ok'
             WHERE l.kind = 'charge' AND l.created_at >= ?1 GROUP BY 1",
            if by == By::Model { "model" } else { "provider" }
        ),
        By::Day => format!(
            "SELECT {}, -sum(delta_fen) FROM ledger l WHERE kind = 'charge' AND created_at >= ?1 GROUP BY 1",
            day("l.created_at")
        ),
        By::User => "SELECT user_id, -sum(delta_fen) FROM ledger WHERE kind = 'charge' AND created_at >= ?1 GROUP BY 1".to_string(),
    };
    add_income(conn, &charge_sql, since_ms, &mut rows, |row, v| {
        row.charges_fen = v
    })?;
    let topup_sql = match by {
        By::Day => Some(format!(
            "SELECT {}, sum(delta_fen) FROM ledger l WHERE kind = 'topup' AND created_at >= ?1 GROUP BY 1",
            day("l.created_at")
        )),
        By::User => Some("SELECT user_id, sum(delta_fen) FROM ledger WHERE kind = 'topup' AND created_at >= ?1 GROUP BY 1".to_string()),
        _ => None,
    };
    if let Some(sql) = topup_sql {
        add_income(conn, &sql, since_ms, &mut rows, |row, v| row.topups_fen = v)?;
    }
    Ok(rows.into_values().collect())
}

fn row_for(rows: &mut std::collections::BTreeMap<String, UsageRow>, key: String) -> &mut UsageRow {
    rows.entry(key.clone()).or_insert_with(|| UsageRow {
        key,
        ..Default::default()
    })
}

fn add_income(
    conn: &Conn,
    sql: &str,
    since_ms: i64,
    rows: &mut std::collections::BTreeMap<String, UsageRow>,
    set: impl Fn(&mut UsageRow, i64),
) -> AppResult<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut q = stmt.query([since_ms])?;
    while let Some(r) = q.next()? {
        set(row_for(rows, r.get(0)?), r.get(1)?);
    }
    Ok(())
}

/// Paid top-ups since `since_ms` (fen), for totals of groupings that cannot
/// attribute them.
pub fn topups_since(conn: &Conn, since_ms: i64) -> AppResult<i64> {
    Ok(conn.prepare_cached("SELECT COALESCE(sum(delta_fen), 0) FROM ledger WHERE kind = 'topup' AND created_at >= ?1")?.query_row(
        [since_ms],
        |r| r.get(0),
    )?)
}
