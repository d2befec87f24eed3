//! `mvp28 admin usage`: the usage table (or JSON) for an operator.

use crate::db::sql::Conn;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde_json::json;

use super::budget::format_units;
use crate::config::Config;
use crate::db::usage::{self as repo, By, UsageRow};
use crate::error::AppResult;
use crate::ops::admin::UsageBy;

pub fn print(
    conn: &Conn,
    config: &Config,
    now: DateTime<Utc>,
    days: u32,
    by: UsageBy,
    as_json: bool,
) -> AppResult<()> {
    let offset = config.quota.offset();
    let local_today = now.with_timezone(&offset).date_naive();
    let first_day = local_today - Duration::days(i64::from(days) - 1);
    let since = first_day
        .and_time(NaiveTime::MIN)
        .and_local_timezone(offset)
        .single()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .unwrap_or(0);
    let by = match by {
        UsageBy::Model => By::Model,
        UsageBy::Provider => By::Provider,
        UsageBy::Day => By::Day,
        UsageBy::User => By::User,
    };
    let rows = repo::report(conn, since, by, i64::from(offset.local_minus_utc()))?;
    let mut total = UsageRow {
        key: "TOTAL".into(),
        ..Default::default()
    };
    for r in &rows {
        total.calls += r.calls;
        total.failures += r.failures;
        total.prompt_tokens += r.prompt_tokens;
        total.completion_tokens += r.completion_tokens;
        total.estimated_calls += r.estimated_calls;
        total.cost_nanos += r.cost_nanos;
        total.charges_fen += r.charges_fen;
    }
    total.topups_fen = repo::topups_since(conn, since)?;
    let blocks = blocks_per_day(conn, &first_day.to_string())?;
    if as_json {
        let out = json!({
            "since": first_day.to_string(),
            "days": days,
            "by": format!("{by:?}").to_lowercase(),
            "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
            "total": row_json(&total),
            "blocks": blocks,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(());
    }
    println!(
        "usage since {first_day} ({days} day(s), local time {}), by {:?}",
        config.quota.timezone, by
    );
    println!(
        "{:<28} {:>7} {:>6} {:>12} {:>12} {:>14} {:>12} {:>12}",
        "key", "calls", "fails", "prompt tok", "compl tok", "spend", "charges CNY", "top-ups CNY"
    );
    for r in rows.iter().chain(std::iter::once(&total)) {
        println!(
            "{:<28} {:>7} {:>6} {:>12} {:>12} {:>14} {:>12} {:>12}",
            r.key,
            r.calls,
            r.failures,
            r.prompt_tokens,
            r.completion_tokens,
            format_units(r.cost_nanos),
            yuan(r.charges_fen),
            yuan(r.topups_fen)
        );
    }
    if total.estimated_calls > 0 {
        println!(
            "({} call(s) reported no usage; their tokens are estimated)",
            total.estimated_calls
        );
    }
    println!();
    if blocks.is_empty() {
        println!("content security blocks per day: none");
        return Ok(());
    }
    println!("content security blocks per day");
    println!(
        "{:<12} {:>6} {:>6} {:>6} {:>6}  labels",
        "day", "input", "output", "image", "total"
    );
    for d in &blocks {
        let labels: Vec<String> = d
            .labels
            .iter()
            .map(|l| format!("{} {} {}x{}", l.direction, l.label, l.name, l.count))
            .collect();
        println!(
            "{:<12} {:>6} {:>6} {:>6} {:>6}  {}",
            d.day,
            d.input,
            d.output,
            d.image,
            d.total,
            labels.join(", ")
        );
    }
    Ok(())
}

/// Content security blocks on one local day.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct BlocksDay {
    /// Local day (quota.timezone), `YYYY-MM-DD`
    pub day: String,
    /// Chat messages refused
    pub input: i64,
    /// Replies withheld
    pub output: i64,
    /// Images blocked (media_check_async verdicts)
    pub image: i64,
    pub total: i64,
    pub labels: Vec<BlockLabel>,
}

/// How many blocks one direction had with one of WeChat's labels.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BlockLabel {
    /// `input`, `output` or `image`
    pub direction: String,
    /// WeChat's label (20002 …)
    pub label: i64,
    /// Its name (`porn` …; `other` when not a known one)
    pub name: String,
    pub count: i64,
}

/// Blocks per local day since `first_day` (`YYYY-MM-DD`), oldest first.
pub fn blocks_per_day(conn: &Conn, first_day: &str) -> AppResult<Vec<BlocksDay>> {
    use crate::moderation::Direction;
    let mut out: Vec<BlocksDay> = vec![];
    for b in crate::db::moderation::blocks_since(conn, first_day)? {
        if out.last().is_none_or(|d| d.day != b.day) {
            out.push(BlocksDay {
                day: b.day.clone(),
                ..Default::default()
            });
        }
        let d = out.last_mut().expect("pushed");
        match b.direction {
            Direction::Input => d.input += b.count,
            Direction::Output => d.output += b.count,
            Direction::Image => d.image += b.count,
        }
        d.total += b.count;
        d.labels.push(BlockLabel {
            direction: b.direction.as_str().to_string(),
            label: b.label,
            name: crate::moderation::label_name(b.label).to_string(),
            count: b.count,
        });
    }
    Ok(out)
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, (fen % 100).abs())
}

fn row_json(r: &UsageRow) -> serde_json::Value {
    json!({
        "key": r.key,
        "calls": r.calls,
        "failures": r.failures,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "estimated_calls": r.estimated_calls,
        "spend": format_units(r.cost_nanos),
        "spend_nanos": r.cost_nanos,
        "charges_fen": r.charges_fen,
        "topups_fen": r.topups_fen,
    })
}
