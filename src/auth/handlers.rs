//! POST /api/auth/wechat, POST /api/auth/refresh, GET and DELETE /api/me.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AuthUser;
use crate::billing::quota::{self, QuotaView};
use crate::clock::{rfc3339, to_ms};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::http::openapi::ErrorBody;
use crate::http::ApiJson;
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(me, delete_me))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    /// The `wx.login` code (`dev:<name>` with the dev login on).
    #[schema(min_length = 1, max_length = 256, example = "dev:alice")]
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: String,
    /// RFC 3339 UTC
    created_at: String,
}

impl UserView {
    fn of(id: &str, created_at: i64) -> UserView {
        UserView {
            id: id.to_string(),
            created_at: rfc3339(created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// The bearer token (a JWT).
    token: String,
    /// RFC 3339 UTC
    expires_at: String,
    user: UserView,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    user: UserView,
    quota: QuotaView,
}

fn token_body(state: &AppState, user_id: &str, created_at: i64) -> TokenResponse {
    let (token, exp) = state.jwt().issue(user_id, state.now());
    TokenResponse {
        token,
        expires_at: rfc3339(to_ms(exp)),
        user: UserView::of(user_id, created_at),
    }
}

#[utoipa::path(post, path = "/api/auth/wechat", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "`invalid_code`: WeChat refused the code", body = ErrorBody),
        (status = 403, description = "`forbidden`: WeChat flagged the user", body = ErrorBody),
        (status = 502, description = "`upstream_error`: WeChat failed", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> AppResult<Json<TokenResponse>> {
    let code = req.code.trim();
    if code.is_empty() || code.len() > 256 {
        return Err(AppError::validation("code", "must be 1-256 characters"));
    }
    let identity = state.login().identify(code).await?;
    let now = to_ms(state.now());
    let user = state
        .db()
        .write(move |tx| {
            db::users::upsert_by_openid(tx, &identity.openid, identity.unionid.as_deref(), now)
        })
        .await?;
    tracing::info!(user_id = %user.id, "login");
    Ok(Json(token_body(&state, &user.id, user.created_at)))
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "A fresh token", body = TokenResponse)))]
async fn refresh(State(state): State<AppState>, user: AuthUser) -> Json<TokenResponse> {
    Json(token_body(&state, &user.id, user.created_at))
}

#[utoipa::path(get, path = "/api/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller and their quota", body = MeResponse)))]
async fn me(State(state): State<AppState>, user: AuthUser) -> AppResult<Json<MeResponse>> {
    let day = state.at().day;
    let uid = user.id.clone();
    let q = state.db().run(move |c| quota::view(c, &uid, &day)).await?;
    Ok(Json(MeResponse {
        user: UserView::of(&user.id, user.created_at),
        quota: q,
    }))
}

#[utoipa::path(delete, path = "/api/me", tag = "auth", security(("bearer" = [])),
    description = "Erases messages, sessions, media and locations; payments and ledger rows are kept, anonymised.",
    responses((status = 204, description = "Deleted")))]
async fn delete_me(State(state): State<AppState>, user: AuthUser) -> AppResult<StatusCode> {
    let now = to_ms(state.now());
    let uid = user.id.clone();
    let keys = state
        .db()
        .write(move |tx| db::users::delete_account(tx, &uid, now))
        .await?;
    // after the commit, so a request racing the deletion cannot re-add it
    state.forget_user(&user.id);
    state.storage().delete_all(&keys).await;
    tracing::info!(user_id = %user.id, media = keys.len(), "account deleted");
    Ok(StatusCode::NO_CONTENT)
}
