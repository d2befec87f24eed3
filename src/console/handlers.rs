//! The admin API, `/api/admin/*`: JSON, authenticated by an admin session
//! cookie (plus `X-CSRF-Token` on state-changing requests) or by
//! `Authorization: Bearer mvp28adm_…` (`admin create-token`). Thin: each
//! handler extracts, calls `service`, answers.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{self, Admin};
use super::views::*;
use super::{accounts, service};
use crate::error::{AppError, AppResult};
use crate::http::openapi::ErrorBody;
use crate::http::{ApiJson, AppState};

/// The security schemes every admin operation documents (added to the
/// document by `http::openapi`).
pub const ADMIN_TOKEN: &str = "admin_token";
pub const ADMIN_SESSION: &str = "admin_session";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(whoami))
        .routes(routes!(overview))
        .routes(routes!(find_users))
        .routes(routes!(user_detail, erase_user))
        .routes(routes!(grant))
        .routes(routes!(orders))
        .routes(routes!(settle_order))
        .routes(routes!(reconcile))
        .routes(routes!(usage))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(providers))
        .routes(routes!(test_provider))
        .routes(routes!(system))
        .routes(routes!(audit_log))
        .routes(routes!(list_backups, run_backup))
        .routes(routes!(copy_backup))
        .routes(routes!(list_admins, create_admin))
        .routes(routes!(reset_admin))
        .routes(routes!(create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(doctor, run_doctor))
}

/// The client's address as the rate limits judge it.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let xff = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientIp(state.limits().client_ip(peer, xff)))
    }
}

/// Opens an admin session: sets the `mvp28_admin` cookie (HttpOnly,
/// SameSite=Strict, Secure under HTTPS) and answers the CSRF token.
/// Rate limited per address and per name.
#[utoipa::path(post, path = "/api/admin/login", tag = "admin", request_body = LoginInput,
    responses((status = 200, body = LoginResponse),
        (status = 401, description = "`unauthorized`: wrong name or password", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(input): ApiJson<LoginInput>,
) -> AppResult<Response> {
    let (body, token) = service::login(&state, ip, input).await?;
    let cookie = auth::set_cookie(&token, auth::secure(&state, &headers));
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Ends the session (and clears its cookie).
#[utoipa::path(post, path = "/api/admin/logout", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 204, description = "Logged out")))]
async fn logout(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
) -> AppResult<Response> {
    service::logout(&state, &admin).await?;
    let cookie = auth::clear_cookie(auth::secure(&state, &headers));
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Who the credential belongs to (and, for a session, its CSRF token).
#[utoipa::path(get, path = "/api/admin/me", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = WhoAmI)))]
async fn whoami(admin: Admin) -> Json<WhoAmI> {
    Json(WhoAmI {
        via: match admin.via {
            auth::Via::Session { .. } => "session",
            auth::Via::Token { .. } => "token",
        }
        .into(),
        csrf_token: admin.csrf().map(str::to_string),
        admin: admin.name,
    })
}

/// Today and the last `days` days: active users, messages (free and paid),
/// top-up income, charges, model spend, margin, failed calls, 402s.
#[utoipa::path(get, path = "/api/admin/overview", tag = "admin", params(DaysQuery),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = Overview)))]
async fn overview(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<DaysQuery>,
) -> AppResult<Json<Overview>> {
    Ok(Json(service::overview(&state, q.days).await?))
}

/// Finds users by id (or its beginning); openids are shown hashed.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", params(FindQuery),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = UserList)))]
async fn find_users(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<FindQuery>,
) -> AppResult<Json<UserList>> {
    Ok(Json(service::find_users(&state, q.q, q.limit).await?))
}

/// One user: quota, balance, holds in flight, ledger, orders.
#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "user id")),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = UserDetail), (status = 404, body = ErrorBody)))]
async fn user_detail(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> AppResult<Json<UserDetail>> {
    Ok(Json(service::user_detail(&state, id).await?))
}

/// Erases the account's personal data (as DELETE /api/me); payments and
/// ledger rows stay, anonymised.
#[utoipa::path(delete, path = "/api/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "user id")),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 204, description = "Erased"), (status = 404, body = ErrorBody),
        (status = 409, description = "`conflict`: already erased", body = ErrorBody)))]
async fn erase_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    service::erase(&state, &admin, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Credits (`fen` > 0) or debits (`fen` < 0) the balance with a reason:
/// one `grant` ledger row and one audit row.
#[utoipa::path(post, path = "/api/admin/users/{id}/grant", tag = "admin",
    params(("id" = String, Path, description = "user id")), request_body = GrantInput,
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = GrantResult), (status = 404, body = ErrorBody),
        (status = 409, description = "`insufficient_balance`", body = ErrorBody),
        (status = 422, description = "`validation`", body = ErrorBody)))]
async fn grant(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<GrantInput>,
) -> AppResult<Json<GrantResult>> {
    Ok(Json(service::grant(&state, &admin, id, input).await?))
}

/// Orders, newest first, by status; with the count of each status.
#[utoipa::path(get, path = "/api/admin/payments", tag = "admin", params(OrdersQuery),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = OrderList)))]
async fn orders(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<OrdersQuery>,
) -> AppResult<Json<OrderList>> {
    Ok(Json(service::orders(&state, q).await?))
}

/// Queries WeChat Pay about the order and settles it (credits exactly once).
#[utoipa::path(post, path = "/api/admin/payments/{out_trade_no}/settle", tag = "admin",
    params(("out_trade_no" = String, Path)),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = SettleResult), (status = 404, body = ErrorBody),
        (status = 502, description = "`upstream_error`", body = ErrorBody),
        (status = 503, description = "`payments_disabled`", body = ErrorBody)))]
async fn settle_order(
    State(state): State<AppState>,
    admin: Admin,
    Path(no): Path<String>,
) -> AppResult<Json<SettleResult>> {
    Ok(Json(service::settle(&state, &admin, no).await?))
}

/// `admin reconcile`: settles or closes the pending orders older than N minutes.
#[utoipa::path(post, path = "/api/admin/payments/reconcile", tag = "admin",
    request_body = ReconcileInput,
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = ReconcileResult),
        (status = 503, description = "`payments_disabled`", body = ErrorBody)))]
async fn reconcile(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(input): ApiJson<ReconcileInput>,
) -> AppResult<Json<ReconcileResult>> {
    Ok(Json(service::reconcile(&state, &admin, input).await?))
}

/// Calls, failures, tokens, spend and income by model, provider and day;
/// p50/p95 latency; budgets and what is left of them.
#[utoipa::path(get, path = "/api/admin/usage", tag = "admin", params(DaysQuery),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = Usage)))]
async fn usage(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<DaysQuery>,
) -> AppResult<Json<Usage>> {
    Ok(Json(service::usage(&state, q.days).await?))
}

/// The live settings (the same rows `admin set-price`, `set-free-quota`
/// and `set-budget` write).
#[utoipa::path(get, path = "/api/admin/settings", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = SettingsView)))]
async fn get_settings(
    State(state): State<AppState>,
    _admin: Admin,
) -> AppResult<Json<SettingsView>> {
    Ok(Json(service::settings(&state).await?))
}

/// Changes any of the live settings; takes effect at once.
#[utoipa::path(put, path = "/api/admin/settings", tag = "admin", request_body = SettingsInput,
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = SettingsView),
        (status = 422, description = "`validation`", body = ErrorBody)))]
async fn put_settings(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(input): ApiJson<SettingsInput>,
) -> AppResult<Json<SettingsView>> {
    Ok(Json(service::update_settings(&state, &admin, input).await?))
}

/// Each provider: circuit breaker, last success, recent failed calls.
#[utoipa::path(get, path = "/api/admin/providers", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = ProviderList)))]
async fn providers(State(state): State<AppState>, _admin: Admin) -> AppResult<Json<ProviderList>> {
    Ok(Json(service::providers(&state).await?))
}

/// One small request to the provider now, past its breaker.
#[utoipa::path(post, path = "/api/admin/providers/{name}/test", tag = "admin",
    params(("name" = String, Path)),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = ProbeResult), (status = 404, body = ErrorBody)))]
async fn test_provider(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> AppResult<Json<ProbeResult>> {
    Ok(Json(service::probe(&state, &admin, name).await?))
}

/// Version, uptime, database and WAL size, the ledger audit.
#[utoipa::path(get, path = "/api/admin/system", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = SystemView)))]
async fn system(State(state): State<AppState>, _admin: Admin) -> AppResult<Json<SystemView>> {
    Ok(Json(service::system(&state).await?))
}

/// The admin audit trail, newest first.
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", params(LimitQuery),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = AuditList)))]
async fn audit_log(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<LimitQuery>,
) -> AppResult<Json<AuditList>> {
    Ok(Json(service::audit_log(&state, q.limit).await?))
}

/// The database copies in `backup.dir`, newest first.
#[utoipa::path(get, path = "/api/admin/backups", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = BackupList)))]
async fn list_backups(State(state): State<AppState>, _admin: Admin) -> AppResult<Json<BackupList>> {
    Ok(Json(service::backups(&state).await?))
}

/// Writes a consistent online copy of the database into `backup.dir` now.
#[utoipa::path(post, path = "/api/admin/backups", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = BackupFile),
        (status = 409, description = "`conflict`: a backup of this second exists", body = ErrorBody)))]
async fn run_backup(State(state): State<AppState>, admin: Admin) -> AppResult<Json<BackupFile>> {
    Ok(Json(service::backup_now(&state, &admin).await?))
}

/// `admin backup --to`: a consistent online copy to a name under
/// `backup.dir` or to `s3://bucket/key`; an existing target is refused.
#[utoipa::path(post, path = "/api/admin/backups/copy", tag = "admin", request_body = BackupInput,
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = BackupCopy),
        (status = 409, description = "`conflict`: the target exists", body = ErrorBody),
        (status = 422, description = "`validation`: not a name under backup.dir or an s3:// URL", body = ErrorBody),
        (status = 502, description = "`upstream_error`: the bucket failed", body = ErrorBody)))]
async fn copy_backup(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(input): ApiJson<BackupInput>,
) -> AppResult<Json<BackupCopy>> {
    Ok(Json(service::backup_copy(&state, &admin, input).await?))
}

/// The console accounts, their open sessions and API tokens (never a
/// password or a token).
#[utoipa::path(get, path = "/api/admin/admins", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = AdminList)))]
async fn list_admins(State(state): State<AppState>, _admin: Admin) -> AppResult<Json<AdminList>> {
    Ok(Json(accounts::admins(&state).await?))
}

/// `admin create-admin`: a new console account; its one-time password is
/// in this answer only.
#[utoipa::path(post, path = "/api/admin/admins", tag = "admin", request_body = NewAdminInput,
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = OneTimePassword),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 422, description = "`validation`", body = ErrorBody)))]
async fn create_admin(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(input): ApiJson<NewAdminInput>,
) -> AppResult<Json<OneTimePassword>> {
    Ok(Json(
        accounts::create_admin(&state, &admin, input.name).await?,
    ))
}

/// `admin reset-admin`: a new one-time password for another admin (in
/// this answer only); their sessions end. Not for the caller's own account.
#[utoipa::path(post, path = "/api/admin/admins/{name}/reset", tag = "admin",
    params(("name" = String, Path)),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = OneTimePassword),
        (status = 403, description = "`forbidden`: the caller's own account", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn reset_admin(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> AppResult<Json<OneTimePassword>> {
    Ok(Json(accounts::reset_admin(&state, &admin, name).await?))
}

/// `admin create-token`: an API token acting as the caller; the token is
/// in this answer only.
#[utoipa::path(post, path = "/api/admin/tokens", tag = "admin", request_body = NewTokenInput,
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = NewToken),
        (status = 422, description = "`validation`", body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(input): ApiJson<NewTokenInput>,
) -> AppResult<Json<NewToken>> {
    Ok(Json(
        accounts::create_api_token(&state, &admin, input.label).await?,
    ))
}

/// `admin revoke-token`: any admin's token, the caller's own included.
#[utoipa::path(delete, path = "/api/admin/tokens/{id}", tag = "admin",
    params(("id" = i64, Path)),
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody),
        (status = 409, description = "`conflict`: already revoked", body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<i64>,
) -> AppResult<StatusCode> {
    accounts::revoke_api_token(&state, &admin, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The last `doctor` report run from the console (nothing is run).
#[utoipa::path(get, path = "/api/admin/doctor", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = DoctorReport)))]
async fn doctor(State(state): State<AppState>, _admin: Admin) -> Json<DoctorReport> {
    Json(service::doctor(&state))
}

/// Runs `mvp28 doctor`'s checks against this server's config now (takes
/// seconds: storage, models, WeChat and WeChat Pay are asked).
#[utoipa::path(post, path = "/api/admin/doctor", tag = "admin",
    security(("admin_session" = []), ("admin_token" = [])),
    responses((status = 200, body = DoctorReport)))]
async fn run_doctor(State(state): State<AppState>, admin: Admin) -> AppResult<Json<DoctorReport>> {
    Ok(Json(service::run_doctor(&state, &admin).await?))
}
