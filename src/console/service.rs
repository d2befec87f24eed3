//! What the console does, for the admin API and the pages alike. Each
//! action is one write that also appends its `admin_audit` row (who, what,
//! when, before and after), so an action and its trail commit together.

use crate::db::sql::{Conn, Tx};
use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, FixedOffset, NaiveTime, Utc};
use serde_json::json;

use super::auth::{self, Admin};
use super::views::*;
use crate::billing::{self, budget, ledger};
use crate::clock::{rfc3339, to_ms};
use crate::db::{self, admins, billing as money, console as repo};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;
use crate::ids::UserId;

/// The first local day of a period of `days` days ending today, and its
/// start in UTC milliseconds.
fn period(now: DateTime<Utc>, offset: FixedOffset, days: u32) -> (chrono::NaiveDate, i64) {
    let today = now.with_timezone(&offset).date_naive();
    let first = today - Duration::days(i64::from(days.max(1)) - 1);
    let since = first
        .and_time(NaiveTime::MIN)
        .and_local_timezone(offset)
        .single()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .unwrap_or(0);
    (first, since)
}

fn days_param(days: Option<u32>, default: u32) -> AppResult<u32> {
    let d = days.unwrap_or(default);
    if !(1..=366).contains(&d) {
        return Err(AppError::validation("days", "must be 1 to 366"));
    }
    Ok(d)
}

fn limit_param(limit: Option<u32>, default: u32, max: u32) -> AppResult<u32> {
    let l = limit.unwrap_or(default);
    if !(1..=max).contains(&l) {
        return Err(AppError::validation("limit", format!("must be 1 to {max}")));
    }
    Ok(l)
}

/// fen per nano-unit of upstream currency: 1 unit = 100 fen = 1e9 nanos.
fn nanos_to_fen(nanos: i64) -> i64 {
    nanos / 10_000_000
}

fn audit(
    tx: &Tx<'_>,
    admin: &str,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    now: i64,
) -> AppResult<()> {
    admins::append_audit(
        tx,
        admin,
        action,
        target,
        before.map(|v| v.to_string()).as_deref(),
        after.map(|v| v.to_string()).as_deref(),
        now,
    )
}

// ---------------------------------------------------------------- sessions

/// An Argon2 hash nobody's password matches, verified for unknown names so
/// a wrong name costs the same time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| auth::hash_password(&auth::new_password()).unwrap_or_default())
}

/// Checks name and password (rate limited per address and per name) and
/// opens a session: (the answer, the session cookie's token).
pub async fn login(
    state: &AppState,
    ip: IpAddr,
    input: LoginInput,
) -> AppResult<(LoginResponse, String)> {
    if input.name.len() > 64 || input.password.len() > 1024 {
        return Err(AppError::unauthorized("wrong name or password"));
    }
    if let Err(wait) = state.console().login_attempt(ip, &input.name) {
        return Err(AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("too many login attempts; retry in {wait} s"),
        )
        .with_retry_after(wait));
    }
    let name = input.name.clone();
    let found = state
        .db()
        .run(move |c| admins::find_by_name(c, &name))
        .await?;
    let password = input.password;
    let (ok, found) = tokio::task::spawn_blocking(move || {
        let phc = found
            .as_ref()
            .map(|a| a.password_hash.as_str())
            .unwrap_or(decoy_hash());
        (auth::verify_password(phc, &password), found)
    })
    .await
    .map_err(|e| AppError::internal(anyhow::anyhow!("password check failed: {e}")))?;
    let admin = match (ok, found) {
        (true, Some(a)) => a,
        _ => {
            tracing::warn!(admin = %input.name, %ip, "admin login refused");
            return Err(AppError::unauthorized("wrong name or password"));
        }
    };
    let (token, csrf) = auth::start_session(state, admin.id).await?;
    let now = to_ms(state.now());
    let name = admin.name.clone();
    state
        .db()
        .write(move |tx| audit(tx, &name, "login", &name, None, None, now))
        .await?;
    tracing::info!(admin = %admin.name, "admin logged in");
    Ok((
        LoginResponse {
            admin: admin.name,
            csrf_token: csrf,
            expires_at: rfc3339(now + auth::ABSOLUTE_SECS * 1000),
            idle_timeout_secs: auth::IDLE_SECS,
        },
        token,
    ))
}

pub async fn logout(state: &AppState, admin: &Admin) -> AppResult<()> {
    if let auth::Via::Session { token_hash, .. } = &admin.via {
        let h = token_hash.clone();
        state
            .db()
            .write(move |tx| admins::delete_session(tx, &h))
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- overview

fn totals<'a>(days: impl Iterator<Item = &'a db::console::DayFigures>) -> Totals {
    let mut t = Totals {
        active_users: 0,
        free_messages: 0,
        paid_messages: 0,
        topup_fen: 0,
        charges_fen: 0,
        spend: String::new(),
        spend_nanos: 0,
        margin_fen: 0,
        calls: 0,
        failed_calls: 0,
        quota_refusals: 0,
    };
    for d in days {
        t.active_users += d.active_users;
        t.free_messages += d.free_messages;
        t.paid_messages += d.paid_messages;
        t.topup_fen += d.topup_fen;
        t.charges_fen += d.charges_fen;
        t.spend_nanos += d.spend_nanos;
        t.calls += d.calls;
        t.failed_calls += d.failed_calls;
        t.quota_refusals += d.quota_refusals;
    }
    t.spend = budget::format_units(t.spend_nanos);
    t.margin_fen = t.charges_fen - nanos_to_fen(t.spend_nanos);
    t
}

pub async fn overview(state: &AppState, days: Option<u32>) -> AppResult<Overview> {
    let days = days_param(days, 30)?;
    let offset = state.config().quota.offset();
    let now = state.now();
    let (first, since) = period(now, offset, days);
    let offset_secs = i64::from(offset.local_minus_utc());
    let (figures, (users_total, users_live, _, _), active_period, active_today) = state
        .db()
        .run(move |c| {
            let today_since = period(now, offset, 1).1;
            Ok((
                repo::daily(c, since, offset_secs)?,
                repo::totals(c)?,
                repo::active_users_since(c, since)?,
                repo::active_users_since(c, today_since)?,
            ))
        })
        .await?;
    let mut out = vec![];
    for i in 0..days {
        let day = (first + Duration::days(i64::from(i))).to_string();
        out.push(
            figures
                .get(&day)
                .cloned()
                .unwrap_or(db::console::DayFigures {
                    day,
                    ..Default::default()
                }),
        );
    }
    let today = out.last().map(|d| d.day.clone()).unwrap_or_default();
    let mut today_totals = totals(out.last().into_iter());
    today_totals.active_users = active_today;
    let mut period_totals = totals(out.iter());
    // distinct over the period, not the sum of the days
    period_totals.active_users = active_period;
    Ok(Overview {
        today,
        today_totals,
        period_days: days,
        period_totals,
        days: out,
        quota_exhausted_since_start: state.metrics().total("quota_exhausted_total"),
        users_total,
        users_live,
    })
}

// ------------------------------------------------------------------- users

fn openid_hash(openid: Option<&str>) -> Option<String> {
    openid.map(|o| auth::sha256_hex(o)[..16].to_string())
}

fn user_summary(u: &repo::UserInfo) -> UserSummary {
    UserSummary {
        id: u.id.to_string(),
        openid_hash: openid_hash(u.openid.as_deref()),
        created_at: rfc3339(u.created_at),
        last_login_at: rfc3339(u.last_login_at),
        deleted_at: u.deleted_at.map(rfc3339),
        messages: u.messages,
        media: u.media,
        locations: u.locations,
    }
}

fn order_view(p: &db::payments::PaymentRow) -> OrderView {
    OrderView {
        out_trade_no: p.out_trade_no.clone(),
        user_id: p.user_id.to_string(),
        amount_fen: p.amount_fen,
        status: p.status.clone(),
        transaction_id: p.transaction_id.clone(),
        created_at: rfc3339(p.created_at),
        expires_at: rfc3339(p.expires_at),
        paid_at: p.paid_at.map(rfc3339),
    }
}

pub async fn find_users(
    state: &AppState,
    q: Option<String>,
    limit: Option<u32>,
) -> AppResult<UserList> {
    let limit = limit_param(limit, 50, 100)?;
    let q = q.unwrap_or_default().trim().to_string();
    if q.len() > 128 {
        return Err(AppError::validation("q", "at most 128 characters"));
    }
    let rows = state
        .db()
        .run(move |c| repo::find_users(c, &q, limit))
        .await?;
    Ok(UserList {
        items: rows.iter().map(user_summary).collect(),
    })
}

pub async fn user_detail(state: &AppState, id: String) -> AppResult<UserDetail> {
    let uid = UserId::from(id);
    let day = state.at().day;
    state
        .db()
        .run(move |c| {
            let u = repo::user(c, &uid)?.ok_or_else(|| AppError::not_found("user"))?;
            let q = billing::quota::view(c, &uid, &day)?;
            let (balance_fen, held_fen) = money::balance(c, &uid)?;
            Ok(UserDetail {
                user: user_summary(&u),
                quota: QuotaInfo {
                    free_limit: q.free_limit,
                    free_used_today: q.free_used_today,
                    balance_fen,
                    held_fen,
                    price_fen: q.price_fen,
                },
                holds: repo::holds(c, &uid)?
                    .into_iter()
                    .map(|h| HoldView {
                        id: h.id,
                        key: h.key,
                        kind: h.kind,
                        amount_fen: h.amount_fen,
                        created_at: rfc3339(h.created_at),
                    })
                    .collect(),
                ledger: ledger::ledger_tail(c, &uid, 50)?
                    .into_iter()
                    .map(|r| LedgerView {
                        id: r.id,
                        delta_fen: r.delta_fen,
                        balance_after: r.balance_after,
                        kind: r.kind.to_string(),
                        reference: r.reference,
                        created_at: rfc3339(r.created_at),
                    })
                    .collect(),
                orders: repo::orders(c, None, Some(&uid), 50)?
                    .iter()
                    .map(order_view)
                    .collect(),
            })
        })
        .await
}

/// Credit or debit through `billing::ledger::grant` (one ledger row), with
/// its audit row in the same transaction.
pub async fn grant(
    state: &AppState,
    admin: &Admin,
    id: String,
    input: GrantInput,
) -> AppResult<GrantResult> {
    let fen = input.fen;
    if fen == 0 || fen.abs() > 100_000_000 {
        return Err(AppError::validation(
            "fen",
            "must be non-zero, at most 100000000 either way",
        ));
    }
    let reason = input.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(AppError::validation("reason", "1 to 200 characters"));
    }
    let uid = UserId::from(id);
    let now = to_ms(state.now());
    let actor = admin.name.clone();
    let u = uid.clone();
    let balance = state
        .db()
        .write(move |tx| {
            if !db::users::exists(tx, &u)? {
                return Err(AppError::not_found("user"));
            }
            let (before, held) = money::balance(tx, &u)?;
            let reference = format!("{reason} (by {actor})");
            match ledger::grant(tx, &u, fen, &reference, now)? {
                Err(i) => Err(AppError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::InsufficientBalance,
                    format!(
                        "a debit of {} fen would leave less than the {} fen held (balance {} fen)",
                        -fen, i.held_fen, i.balance_fen
                    ),
                )
                .with("balance_fen", json!(i.balance_fen))
                .with("held_fen", json!(i.held_fen))),
                Ok(after) => {
                    audit(
                        tx,
                        &actor,
                        if fen > 0 { "user.grant" } else { "user.debit" },
                        &u,
                        Some(json!({"balance_fen": before, "held_fen": held})),
                        Some(json!({"balance_fen": after, "fen": fen, "reason": reason})),
                        now,
                    )?;
                    Ok(after)
                }
            }
        })
        .await?;
    tracing::info!(admin = %admin.name, user_id = %uid, fen, "admin grant");
    Ok(GrantResult {
        user_id: uid.to_string(),
        fen,
        balance_fen: balance,
    })
}

/// Erases the account's personal data as DELETE /api/me does (payments
/// and ledger rows stay, anonymised).
pub async fn erase(state: &AppState, admin: &Admin, id: String) -> AppResult<()> {
    let uid = UserId::from(id);
    let now = to_ms(state.now());
    let actor = admin.name.clone();
    let u = uid.clone();
    let keys = state
        .db()
        .write(move |tx| {
            let info = repo::user(tx, &u)?.ok_or_else(|| AppError::not_found("user"))?;
            if info.deleted_at.is_some() {
                return Err(AppError::conflict("the account is already erased"));
            }
            let keys = db::users::delete_account(tx, &u, now)?;
            audit(
                tx,
                &actor,
                "user.erase",
                &u,
                Some(json!({"messages": info.messages, "media": info.media, "locations": info.locations})),
                Some(json!({"deleted": true})),
                now,
            )?;
            Ok(keys)
        })
        .await?;
    state.forget_user(&uid);
    state.storage().delete_all(&keys).await;
    tracing::info!(admin = %admin.name, user_id = %uid, "account erased by admin");
    Ok(())
}

// ---------------------------------------------------------------- payments

const STATUSES: [&str; 4] = ["pending", "paid", "closed", "failed"];

pub async fn orders(state: &AppState, q: OrdersQuery) -> AppResult<OrderList> {
    let limit = limit_param(q.limit, 100, 500)?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(AppError::validation(
                "status",
                "one of pending, paid, closed, failed",
            ));
        }
    }
    let (status, user) = (q.status, q.user_id.map(UserId::from));
    state
        .db()
        .run(move |c| {
            let rows = repo::orders(c, status.as_deref(), user.as_ref(), limit)?;
            let counts: BTreeMap<String, i64> =
                db::payments::payments_by_status(c)?.into_iter().collect();
            Ok(OrderList {
                items: rows.iter().map(order_view).collect(),
                counts,
            })
        })
        .await
}

fn payments(state: &AppState) -> AppResult<&crate::pay::Payments> {
    state.payments().ok_or_else(|| {
        AppError::unavailable(
            ErrorCode::PaymentsDisabled,
            "payments are not enabled on this server",
        )
    })
}

/// Queries WeChat Pay about one order and settles it as a notification
/// would (`pay::service::settle`: credit exactly once).
pub async fn settle(state: &AppState, admin: &Admin, no: String) -> AppResult<SettleResult> {
    use crate::pay::service::{log_settled, settle, Settled};
    let pay = payments(state)?;
    if !crate::pay::service::valid_out_trade_no(&no) {
        return Err(AppError::not_found("order"));
    }
    let n = no.clone();
    let row = state
        .db()
        .run(move |c| db::payments::find(c, &n))
        .await?
        .ok_or_else(|| AppError::not_found("order"))?;
    let now = state.now();
    let queried = pay.client.query(&no, now).await.map_err(|e| {
        AppError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamError,
            format!("WeChat Pay query failed: {e}"),
        )
    })?;
    let actor = admin.name.clone();
    let now_ms = to_ms(now);
    let before = row.status.clone();
    let (trade_state, outcome, after) = match queried {
        None => ("ORDER_NOT_EXIST".to_string(), "unchanged".to_string(), row),
        Some(t) => {
            let (mch, app) = (pay.mch_id.clone(), pay.app_id.clone());
            let trade_state = t.trade_state.clone();
            let n = no.clone();
            let (out, after) = state
                .db()
                .write(move |tx| {
                    let out = settle(tx, &mch, &app, &t, now_ms)?;
                    let after =
                        db::payments::find(tx, &n)?.ok_or_else(|| AppError::not_found("order"))?;
                    Ok((out, after))
                })
                .await?;
            log_settled(&no, &out);
            let outcome = match &out {
                Ok(Settled::Credited { .. }) => "credited".to_string(),
                Ok(Settled::AlreadyPaid) => "already_paid".to_string(),
                Ok(Settled::Finished(to)) => to.to_string(),
                Ok(Settled::Unchanged(_)) => "unchanged".to_string(),
                Err(r) => format!("refused: {r}"),
            };
            (trade_state, outcome, after)
        }
    };
    let (n, o, ts, after_status) = (
        no.clone(),
        outcome.clone(),
        trade_state.clone(),
        after.status.clone(),
    );
    state
        .db()
        .write(move |tx| {
            audit(
                tx,
                &actor,
                "payment.settle",
                &n,
                Some(json!({"status": before})),
                Some(json!({"status": after_status, "wechat_trade_state": ts, "outcome": o})),
                now_ms,
            )
        })
        .await?;
    Ok(SettleResult {
        order: order_view(&after),
        wechat_trade_state: trade_state,
        outcome,
    })
}

pub async fn reconcile(
    state: &AppState,
    admin: &Admin,
    input: ReconcileInput,
) -> AppResult<ReconcileResult> {
    let pay = payments(state)?;
    let minutes = input.older_than_minutes.unwrap_or(10);
    if minutes > 60 * 24 * 365 {
        return Err(AppError::validation("older_than_minutes", "at most a year"));
    }
    let mut lines = vec![];
    let summary =
        crate::pay::reconcile::reconcile(pay, state.db(), minutes, state.now(), &mut |l| {
            lines.push(l)
        })
        .await?;
    let now = to_ms(state.now());
    let (actor, after) = (admin.name.clone(), serde_json::to_value(&summary).ok());
    state
        .db()
        .write(move |tx| {
            audit(
                tx,
                &actor,
                "payments.reconcile",
                &format!("older_than_minutes={minutes}"),
                None,
                after,
                now,
            )
        })
        .await?;
    Ok(ReconcileResult { summary, lines })
}

// ------------------------------------------------------------------- usage

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

pub async fn usage(state: &AppState, days: Option<u32>) -> AppResult<Usage> {
    use crate::db::usage::{report, By, UsageRow};
    let days = days_param(days, 7)?;
    let offset = state.config().quota.offset();
    let (first, since) = period(state.now(), offset, days);
    let offset_secs = i64::from(offset.local_minus_utc());
    let at = state.at();
    state
        .db()
        .run(move |c| {
            let lat = repo::call_latencies(c, since, 200_000)?;
            let mut by_model: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            let mut by_provider: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for (model, provider, ms, outcome) in lat {
                if outcome == "ok" {
                    by_model.entry(model).or_default().push(ms);
                    by_provider.entry(provider).or_default().push(ms);
                }
            }
            for v in by_model.values_mut().chain(by_provider.values_mut()) {
                v.sort_unstable();
            }
            let view = |r: UsageRow, lat: Option<&Vec<i64>>| UsageRowView {
                p50_ms: lat.and_then(|l| percentile(l, 0.5)),
                p95_ms: lat.and_then(|l| percentile(l, 0.95)),
                spend: budget::format_units(r.cost_nanos),
                key: r.key,
                calls: r.calls,
                failures: r.failures,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                spend_nanos: r.cost_nanos,
                charges_fen: r.charges_fen,
                topups_fen: r.topups_fen,
            };
            let s = budget::standing(c, &at)?;
            let left = |budget: i64, spent: i64| {
                (budget > 0).then(|| budget::format_units((budget - spent).max(0)))
            };
            Ok(Usage {
                since: first.to_string(),
                days,
                by_model: report(c, since, By::Model, offset_secs)?
                    .into_iter()
                    .map(|r| {
                        let l = by_model.get(&r.key);
                        view(r, l)
                    })
                    .collect(),
                by_provider: report(c, since, By::Provider, offset_secs)?
                    .into_iter()
                    .map(|r| {
                        let l = by_provider.get(&r.key);
                        view(r, l)
                    })
                    .collect(),
                by_day: report(c, since, By::Day, offset_secs)?
                    .into_iter()
                    .map(|r| view(r, None))
                    .collect(),
                budgets: Budgets {
                    daily_budget: budget::format_units(s.day_budget),
                    daily_spent: budget::format_units(s.day_spend),
                    daily_left: left(s.day_budget, s.day_spend),
                    monthly_budget: budget::format_units(s.month_budget),
                    monthly_spent: budget::format_units(s.month_spend),
                    monthly_left: left(s.month_budget, s.month_spend),
                },
                blocks: crate::billing::report::blocks_per_day(c, &first.to_string())?,
            })
        })
        .await
}

// ---------------------------------------------------------------- settings

fn read_settings(c: &Conn, fallback: &[i64]) -> AppResult<SettingsView> {
    let s = money::settings(c)?;
    let topups = billing::topups::live(c, fallback)?;
    Ok(SettingsView {
        price_fen: s.price_fen,
        free_daily: s.free_daily,
        daily_budget: budget::format_units(
            money::get_setting(c, budget::DAILY_BUDGET)?.unwrap_or(0),
        ),
        monthly_budget: budget::format_units(
            money::get_setting(c, budget::MONTHLY_BUDGET)?.unwrap_or(0),
        ),
        topup_amounts_fen: topups,
    })
}

pub async fn settings(state: &AppState) -> AppResult<SettingsView> {
    let fallback = state.config().quota.topup_amounts_fen.clone();
    state.db().run(move |c| read_settings(c, &fallback)).await
}

/// Changes the live settings the CLI changes (`set-price`,
/// `set-free-quota`, `set-budget`), with the same bounds.
pub async fn update_settings(
    state: &AppState,
    admin: &Admin,
    input: SettingsInput,
) -> AppResult<SettingsView> {
    let mut changes: Vec<(&'static str, i64)> = vec![];
    if let Some(v) = input.price_fen {
        if !(0..=1_000_000).contains(&v) {
            return Err(AppError::validation("price_fen", "must be 0 to 1000000"));
        }
        changes.push((money::PRICE_FEN, v));
    }
    if let Some(v) = input.free_daily {
        if !(0..=1_000_000_000).contains(&v) {
            return Err(AppError::validation(
                "free_daily",
                "must be 0 to 1000000000",
            ));
        }
        changes.push((money::FREE_DAILY, v));
    }
    for (field, key, v) in [
        ("daily_budget", budget::DAILY_BUDGET, input.daily_budget),
        (
            "monthly_budget",
            budget::MONTHLY_BUDGET,
            input.monthly_budget,
        ),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || !(0.0..=1e9).contains(&v) {
                return Err(AppError::validation(
                    field,
                    "an amount >= 0 (0 = no budget)",
                ));
            }
            changes.push((key, budget::to_nanos(v)));
        }
    }
    if let Some(t) = &input.topup_amounts_fen {
        billing::topups::validate(t).map_err(|e| AppError::validation("topup_amounts_fen", e))?;
    }
    if changes.is_empty() && input.topup_amounts_fen.is_none() {
        return Err(AppError::validation("price_fen", "nothing to change"));
    }
    let topups = input.topup_amounts_fen;
    let fallback = state.config().quota.topup_amounts_fen.clone();
    let now = to_ms(state.now());
    let actor = admin.name.clone();
    state
        .db()
        .write(move |tx| {
            for (key, value) in changes {
                let before = money::get_setting(tx, key)?;
                if before == Some(value) {
                    continue;
                }
                money::set_setting(tx, key, value, now)?;
                audit(
                    tx,
                    &actor,
                    "settings.set",
                    key,
                    Some(json!({ key: before })),
                    Some(json!({ key: value })),
                    now,
                )?;
            }
            if let Some(amounts) = topups {
                let before = billing::topups::live(tx, &fallback)?;
                if before != amounts {
                    money::set_topups(tx, &amounts, now)?;
                    audit(
                        tx,
                        &actor,
                        "settings.set",
                        "topup_amounts_fen",
                        Some(json!({ "topup_amounts_fen": before })),
                        Some(json!({ "topup_amounts_fen": amounts })),
                        now,
                    )?;
                }
            }
            read_settings(tx, &fallback)
        })
        .await
}

// --------------------------------------------------------------- providers

pub async fn providers(state: &AppState) -> AppResult<ProviderList> {
    use crate::llm::breaker::State;
    let list = state.llm().providers();
    let names: Vec<String> = list.iter().map(|p| p.name.clone()).collect();
    let calls = state
        .db()
        .run(move |c| {
            names
                .iter()
                .map(|n| repo::provider_calls(c, n, 10))
                .collect::<AppResult<Vec<_>>>()
        })
        .await?;
    let items = list
        .into_iter()
        .zip(calls)
        .map(|(p, (last_ok, failures))| {
            let (breaker, failures_n, open_until) = match p.breaker {
                State::Closed { failures } => ("closed", failures, None),
                State::Open { until } => ("open", 0, Some(until.to_rfc3339())),
                State::HalfOpen { .. } => ("half_open", 0, None),
            };
            ProviderView {
                name: p.name,
                models: p.models,
                breaker: breaker.into(),
                failures: failures_n,
                open_until,
                last_success_at: last_ok.map(rfc3339),
                recent_failures: failures
                    .into_iter()
                    .map(|f| ProviderFailure {
                        at: rfc3339(f.created_ms),
                        model: f.model,
                        provider_model: f.provider_model,
                        outcome: f.outcome,
                        latency_ms: f.latency_ms,
                        error: f.error,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(ProviderList { items })
}

pub async fn probe(state: &AppState, admin: &Admin, name: String) -> AppResult<ProbeResult> {
    let started = std::time::Instant::now();
    let result = state
        .llm()
        .probe(&name)
        .await
        .ok_or_else(|| AppError::not_found("provider"))?;
    let latency_ms = started.elapsed().as_millis() as i64;
    let (ok, detail) = match result {
        Ok(text) => (true, text.chars().take(200).collect()),
        Err(e) => (false, e.chars().take(500).collect::<String>()),
    };
    let now = to_ms(state.now());
    let (actor, n) = (admin.name.clone(), name.clone());
    state
        .db()
        .write(move |tx| {
            audit(
                tx,
                &actor,
                "provider.test",
                &n,
                None,
                Some(json!({"ok": ok, "latency_ms": latency_ms})),
                now,
            )
        })
        .await?;
    Ok(ProbeResult {
        provider: name,
        ok,
        latency_ms,
        detail,
    })
}

// ------------------------------------------------------------------ system

pub async fn system(state: &AppState) -> AppResult<SystemView> {
    let path = state.db().path().to_path_buf();
    let wal = {
        let mut p = path.clone().into_os_string();
        p.push("-wal");
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    };
    let (bytes, (users, _, payments, ledger_rows), (checked, mismatches)) = state
        .db()
        .run(|c| {
            Ok((
                repo::database_bytes(c)?,
                repo::totals(c)?,
                ledger::audit(c)?,
            ))
        })
        .await?;
    Ok(SystemView {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: state.console().uptime_secs(),
        // the SQLite file, or the Postgres server without its password
        database_path: state.db().location().to_string(),
        database_bytes: bytes,
        wal_bytes: wal,
        users_total: users,
        payments_total: payments,
        ledger_rows,
        ledger_audit_checked: checked,
        ledger_audit_mismatches: mismatches
            .iter()
            .map(|m| {
                format!(
                    "{}: balance {} fen, ledger sum {} fen",
                    m.user_id, m.balance_fen, m.ledger_sum
                )
            })
            .collect(),
        payments_enabled: state.payments().is_some(),
    })
}

pub async fn audit_log(state: &AppState, limit: Option<u32>) -> AppResult<AuditList> {
    let limit = limit_param(limit, 100, 500)?;
    let rows = state
        .db()
        .run(move |c| admins::audit_tail(c, limit))
        .await?;
    Ok(AuditList {
        items: rows
            .into_iter()
            .map(|r| AuditView {
                id: r.id,
                actor: r.actor,
                action: r.action,
                target: r.target,
                before: r.before,
                after: r.after,
                at: rfc3339(r.created_at),
            })
            .collect(),
    })
}

// ----------------------------------------------------------------- backups

/// The database copies in `backup.dir` (scheduled and console ones).
pub async fn backups(state: &AppState) -> AppResult<BackupList> {
    let dir = state.config().backup.dir.clone();
    let d = dir.clone();
    let items = tokio::task::spawn_blocking(move || {
        let mut items: Vec<BackupFile> = match std::fs::read_dir(&d) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".db")))
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some(BackupFile {
                        name: e.file_name().to_string_lossy().into_owned(),
                        bytes: m.len(),
                        modified_at: m
                            .modified()
                            .ok()
                            .map(|t| rfc3339(to_ms(DateTime::<Utc>::from(t)))),
                    })
                })
                .collect(),
            Err(_) => vec![],
        };
        items.sort_by(|a, b| b.name.cmp(&a.name));
        items
    })
    .await
    .map_err(|e| AppError::internal(anyhow::anyhow!("listing backups: {e}")))?;
    Ok(BackupList { dir, items })
}

/// A consistent online copy of the SQLite file (off the async threads).
async fn copy_database(src: std::path::PathBuf, dest: std::path::PathBuf) -> AppResult<u64> {
    tokio::task::spawn_blocking(move || crate::ops::backup::backup_to(&src, &dest, |_, _| {}))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("backup task: {e}")))?
        .map_err(AppError::internal)
}

async fn audit_backup(
    state: &AppState,
    admin: &Admin,
    action: &'static str,
    target: &str,
    bytes: u64,
) -> AppResult<()> {
    let now = to_ms(state.now());
    let (actor, target) = (admin.name.clone(), target.to_owned());
    state
        .db()
        .write(move |tx| {
            audit(
                tx,
                &actor,
                action,
                &target,
                None,
                Some(json!({"bytes": bytes})),
                now,
            )
        })
        .await
}

fn refuse_on_postgres(state: &AppState) -> AppResult<()> {
    if state.db().backend() == crate::db::Backend::Postgres {
        return Err(AppError::conflict(crate::ops::backup::POSTGRES_BACKUPS));
    }
    Ok(())
}

/// `admin backup` into `backup.dir` now (a consistent online copy).
pub async fn backup_now(state: &AppState, admin: &Admin) -> AppResult<BackupFile> {
    refuse_on_postgres(state)?;
    let src = state.db().path().to_path_buf();
    let name = crate::ops::backup::scheduled_name(state.now());
    let dest = std::path::Path::new(&state.config().backup.dir).join(&name);
    if dest.exists() {
        return Err(AppError::conflict(
            "a backup of this second exists; retry in a second",
        ));
    }
    let bytes = copy_database(src, dest).await?;
    audit_backup(state, admin, "backup.run", &name, bytes).await?;
    tracing::info!(admin = %admin.name, bytes, "backup written from the console");
    Ok(BackupFile {
        name,
        bytes,
        modified_at: Some(rfc3339(to_ms(state.now()))),
    })
}

/// Runs `admin backup --to` from the console. The target is a name under
/// `backup.dir` (sub-directories allowed, created; `.db` at the end; no
/// `..`, no absolute path: the console never writes elsewhere on the
/// server) or `s3://bucket/key` (with `[storage.s3]`'s endpoint and keys).
/// As with the CLI, an existing target is refused (409), never overwritten.
pub async fn backup_copy(
    state: &AppState,
    admin: &Admin,
    input: BackupInput,
) -> AppResult<BackupCopy> {
    use crate::ops::backup;
    refuse_on_postgres(state)?;
    let to = input.to.trim().to_string();
    let bad = |why: &str| AppError::validation("to", why);
    if to.is_empty() || to.len() > 512 {
        return Err(bad("1 to 512 characters"));
    }
    let src = state.db().path().to_path_buf();
    let name = backup::scheduled_name(state.now());
    let (bytes, written) = if to.starts_with("s3://") {
        let (bucket, key) = backup::parse_s3_url(&to)
            .ok_or_else(|| bad("an s3 destination looks like s3://bucket/path/file.db"))?;
        let s3 = state.config().storage.s3.clone();
        if s3.endpoint.is_empty() || s3.access_key_id.is_empty() || s3.secret_access_key.is_empty()
        {
            return Err(bad(
                "an s3:// destination needs storage.s3.endpoint, access_key_id and secret_access_key",
            ));
        }
        let upstream = |e: anyhow::Error| {
            tracing::warn!(error = %format!("{e:#}"), "console backup to S3 failed");
            AppError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::UpstreamError,
                format!("the bucket: {e:#}"),
            )
        };
        if backup::s3_exists(&s3, &bucket, &key)
            .await
            .map_err(upstream)?
        {
            return Err(AppError::conflict(format!(
                "{to} exists already; refusing to overwrite"
            )));
        }
        let local = state.config().data_dir().join(format!(".upload-{name}"));
        let l = local.clone();
        let bytes = copy_database(src, l).await?;
        let sent = backup::upload(&s3, &local, &bucket, &key).await;
        let _ = tokio::fs::remove_file(&local).await;
        sent.map_err(upstream)?;
        (bytes, to.clone())
    } else {
        let rel = std::path::Path::new(&to);
        let fine = |c: std::path::Component<'_>| match c {
            std::path::Component::Normal(p) => p.to_str().is_some_and(|p| {
                !p.starts_with('.')
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            }),
            _ => false,
        };
        if !to.ends_with(".db") || !rel.components().all(fine) {
            return Err(bad(
                "a file name under backup.dir ending in .db (letters, digits, '.', '_', '-'; sub-directories allowed, no '..', no absolute path), or s3://bucket/key",
            ));
        }
        let dest = std::path::Path::new(&state.config().backup.dir).join(rel);
        if dest.exists() {
            return Err(AppError::conflict(format!(
                "{to} exists already in backup.dir; refusing to overwrite"
            )));
        }
        let d = dest.clone();
        let bytes = copy_database(src, d).await?;
        let shown = std::path::absolute(&dest).unwrap_or(dest);
        (bytes, shown.display().to_string())
    };
    audit_backup(state, admin, "backup.copy", &written, bytes).await?;
    tracing::info!(admin = %admin.name, to = %written, bytes, "backup copied from the console");
    Ok(BackupCopy { to: written, bytes })
}

// ------------------------------------------------------------------ doctor

fn doctor_report(ran_at: Option<i64>, checks: &[crate::ops::doctor::Check]) -> DoctorReport {
    use crate::ops::doctor::Status;
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    DoctorReport {
        ran_at: ran_at.map(rfc3339),
        ok: count(Status::Fail) == 0,
        ok_count: count(Status::Ok),
        warn_count: count(Status::Warn),
        fail_count: count(Status::Fail),
        checks: checks
            .iter()
            .map(|c| DoctorCheck {
                part: c.part.to_string(),
                status: match c.status {
                    Status::Ok => "ok",
                    Status::Warn => "warn",
                    Status::Fail => "fail",
                }
                .into(),
                message: c.message.clone(),
                key: c.key.clone(),
                fix: c.fix.clone(),
            })
            .collect(),
    }
}

/// The last `doctor` report (run from the console), without running
/// anything: the checks call out over the network and take seconds.
pub fn doctor(state: &AppState) -> DoctorReport {
    state
        .console()
        .last_doctor()
        .unwrap_or_else(|| doctor_report(None, &[]))
}

/// Runs `mvp28 doctor`'s checks against the running server's config now,
/// keeps the report for the System page, and writes an audit row.
pub async fn run_doctor(state: &AppState, admin: &Admin) -> AppResult<DoctorReport> {
    let checks = crate::ops::doctor::for_server(state.clone()).await;
    let now = to_ms(state.now());
    let report = doctor_report(Some(now), &checks);
    state.console().keep_doctor(report.clone());
    let (actor, after) = (
        admin.name.clone(),
        json!({"ok": report.ok_count, "warn": report.warn_count, "fail": report.fail_count}),
    );
    state
        .db()
        .write(move |tx| audit(tx, &actor, "doctor.run", "doctor", None, Some(after), now))
        .await?;
    Ok(report)
}
