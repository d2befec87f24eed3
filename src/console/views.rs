//! What the admin API answers (and the pages render). Openids appear only
//! hashed; message content and coordinates never appear.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::console::DayFigures;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub admin: String,
    /// Send as `X-CSRF-Token` with every state-changing request of this session.
    pub csrf_token: String,
    /// The session ends at this time at the latest (idle expiry is earlier
    /// when unused).
    pub expires_at: String,
    pub idle_timeout_secs: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub admin: String,
    /// `session` or `token`
    pub via: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    pub active_users: i64,
    pub free_messages: i64,
    pub paid_messages: i64,
    pub topup_fen: i64,
    pub charges_fen: i64,
    /// Model spend in the upstream's currency (decimal text).
    pub spend: String,
    pub spend_nanos: i64,
    /// Charges minus model spend, in fen (spend read as CNY).
    pub margin_fen: i64,
    pub calls: i64,
    pub failed_calls: i64,
    /// 402 `quota_exhausted` answers (counted per local day since V11).
    pub quota_refusals: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// Local day (quota.timezone) of "today".
    pub today: String,
    pub today_totals: Totals,
    pub period_days: u32,
    pub period_totals: Totals,
    /// One entry per local day of the period, oldest first (zeros included).
    pub days: Vec<DayFigures>,
    /// 402 `quota_exhausted` answers since this process started.
    pub quota_exhausted_since_start: u64,
    pub users_total: i64,
    pub users_live: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DaysQuery {
    /// Local calendar days, today included (1–366, default 30).
    pub days: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    /// A user id or its beginning (or an exact openid); empty: the newest users.
    pub q: Option<String>,
    /// 1–100, default 50
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserSummary {
    pub id: String,
    /// SHA-256 of the openid, first 16 hex digits (null once erased).
    pub openid_hash: Option<String>,
    pub created_at: String,
    pub last_login_at: String,
    pub deleted_at: Option<String>,
    pub messages: i64,
    pub media: i64,
    pub locations: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaInfo {
    pub free_limit: i64,
    pub free_used_today: i64,
    pub balance_fen: i64,
    pub held_fen: i64,
    pub price_fen: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    pub id: String,
    /// The message (or operation) it holds for.
    pub key: String,
    /// `free` or `paid`
    pub kind: String,
    pub amount_fen: i64,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerView {
    pub id: i64,
    pub delta_fen: i64,
    pub balance_after: i64,
    /// `topup`, `charge` or `grant`
    pub kind: String,
    pub reference: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub out_trade_no: String,
    pub user_id: String,
    pub amount_fen: i64,
    /// `pending`, `paid`, `closed` or `failed`
    pub status: String,
    pub transaction_id: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub paid_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetail {
    pub user: UserSummary,
    pub quota: QuotaInfo,
    pub holds: Vec<HoldView>,
    /// The newest 50 ledger rows, newest first.
    pub ledger: Vec<LedgerView>,
    /// The newest 50 orders, newest first.
    pub orders: Vec<OrderView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// Fen to credit (> 0) or debit (< 0); never 0. A debit may not take
    /// the balance below what replies in flight hold.
    pub fen: i64,
    /// Why (kept in the ledger and the audit trail).
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantResult {
    pub user_id: String,
    pub fen: i64,
    pub balance_fen: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// `pending`, `paid`, `closed` or `failed`; all when absent
    pub status: Option<String>,
    /// Only this user's orders
    pub user_id: Option<String>,
    /// 1–500, default 100
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub items: Vec<OrderView>,
    /// Orders per status, over all orders.
    pub counts: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettleResult {
    pub order: OrderView,
    /// What WeChat Pay reported (`SUCCESS`, `NOTPAY`, …; `ORDER_NOT_EXIST`).
    pub wechat_trade_state: String,
    /// What this call did: `credited`, `already_paid`, `closed`, `failed`,
    /// `unchanged`, or `refused: …`.
    pub outcome: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileInput {
    /// Only orders created at least this many minutes ago (default 10).
    pub older_than_minutes: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReconcileResult {
    pub summary: crate::pay::reconcile::Summary,
    pub lines: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRowView {
    pub key: String,
    pub calls: i64,
    pub failures: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub spend: String,
    pub spend_nanos: i64,
    pub charges_fen: i64,
    pub topups_fen: i64,
    /// Latency percentiles of this row's calls (ms); null without calls.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Budgets {
    /// Budgets and spend in the upstream's currency (decimal text); a
    /// budget of "0" means none.
    pub daily_budget: String,
    pub daily_spent: String,
    pub daily_left: Option<String>,
    pub monthly_budget: String,
    pub monthly_spent: String,
    pub monthly_left: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub since: String,
    pub days: u32,
    pub by_model: Vec<UsageRowView>,
    pub by_provider: Vec<UsageRowView>,
    pub by_day: Vec<UsageRowView>,
    pub budgets: Budgets,
    /// Content security blocks per local day (days with none are left out)
    pub blocks: Vec<crate::billing::report::BlocksDay>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    pub price_fen: i64,
    pub free_daily: i64,
    /// Upstream currency, decimal text; "0" = no budget.
    pub daily_budget: String,
    pub monthly_budget: String,
    /// What a checkout may ask for, in fen (live; seeded from
    /// `quota.topup_amounts_fen`, changed here or by `admin set-topups`).
    pub topup_amounts_fen: Vec<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsInput {
    /// 0–1000000
    pub price_fen: Option<i64>,
    /// 0–1000000000
    pub free_daily: Option<i64>,
    /// >= 0, upstream currency (e.g. 5 or 2.5); 0 = no budget
    pub daily_budget: Option<f64>,
    pub monthly_budget: Option<f64>,
    /// 1–10 distinct amounts of 1–10000000 fen, in the order to offer them
    pub topup_amounts_fen: Option<Vec<i64>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    pub name: String,
    pub models: Vec<String>,
    /// `closed`, `open` or `half_open`
    pub breaker: String,
    /// Consecutive failures counted while closed.
    pub failures: u32,
    /// While open: until when.
    pub open_until: Option<String>,
    pub last_success_at: Option<String>,
    pub recent_failures: Vec<ProviderFailure>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderFailure {
    pub at: String,
    pub model: String,
    pub provider_model: String,
    /// `error`, `timeout` or `partial`
    pub outcome: String,
    pub latency_ms: i64,
    /// Why it failed: e.g. `HTTP 503: …` (at most 200 characters, never
    /// the request or a key); null for calls recorded before it was kept.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub items: Vec<ProviderView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeResult {
    pub provider: String,
    pub ok: bool,
    pub latency_ms: i64,
    /// The first text of the answer, or why it failed.
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SystemView {
    pub version: String,
    pub uptime_secs: u64,
    pub database_path: String,
    pub database_bytes: i64,
    pub wal_bytes: u64,
    pub users_total: i64,
    pub payments_total: i64,
    pub ledger_rows: i64,
    /// `admin audit`: balances checked and those that differ from their ledger.
    pub ledger_audit_checked: usize,
    pub ledger_audit_mismatches: Vec<String>,
    pub payments_enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// 1–500, default 100
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupFile {
    pub name: String,
    pub bytes: u64,
    pub modified_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupList {
    /// `backup.dir`
    pub dir: String,
    /// Newest first.
    pub items: Vec<BackupFile>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub label: String,
    pub created_at: String,
    /// Set once revoked (revoked tokens stay listed).
    pub revoked_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminView {
    pub name: String,
    pub created_at: String,
    pub last_login_at: Option<String>,
    /// Browser sessions still open.
    pub sessions: i64,
    /// Every API token, newest first (never the token itself).
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminList {
    pub items: Vec<AdminView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdminInput {
    /// 1–64 letters, digits, `.`, `_`, `-`, `@`
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OneTimePassword {
    pub name: String,
    /// Shown once, stored only as an Argon2id hash: hand it over now.
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenInput {
    /// What it is for, 1–100 characters (the token acts as the caller)
    pub label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewToken {
    pub id: i64,
    pub admin: String,
    pub label: String,
    /// `mvp28adm_…`, shown once, stored only as its SHA-256: send it as
    /// `Authorization: Bearer …`.
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupInput {
    /// A file name (or relative path) under `backup.dir`, ending in `.db`,
    /// or `s3://bucket/key` (uploaded with `[storage.s3]`'s endpoint and
    /// keys). The target must not exist.
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupCopy {
    /// Where it went: an absolute path, or the `s3://` URL.
    pub to: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DoctorCheck {
    /// config, mode, database, disk, tls, storage, llm, wechat, wechat_pay, public_url, clock
    pub part: String,
    /// `ok`, `warn` or `fail`
    pub status: String,
    pub message: String,
    /// The config key to fix.
    pub key: Option<String>,
    /// What to do about it.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DoctorReport {
    /// When the checks last ran (null: not since the server started).
    pub ran_at: Option<String>,
    /// No check failed.
    pub ok: bool,
    pub ok_count: usize,
    pub warn_count: usize,
    pub fail_count: usize,
    pub checks: Vec<DoctorCheck>,
}
