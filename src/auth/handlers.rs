//! POST /api/auth/wechat, POST /api/auth/refresh, GET and DELETE /api/me.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::service;
use super::views::{MeResponse, TokenResponse};
use super::AuthUser;
use crate::error::AppResult;
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
    // What WeChat's login and profile flows (wx.getUserProfile,
    // wx.getUserInfo, open-data) put beside the code. Accepted so a
    // mini-program may post them as it got them; ignored: the identity is
    // the code's openid alone.
    /// Ignored (wx.getUserProfile's `userInfo`)
    #[serde(rename = "userInfo")]
    #[schema(value_type = Object, nullable = false)]
    #[allow(dead_code)]
    user_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// Ignored
    #[serde(rename = "encryptedData")]
    #[schema(nullable = false)]
    #[allow(dead_code)]
    encrypted_data: Option<String>,
    /// Ignored
    #[schema(nullable = false)]
    #[allow(dead_code)]
    iv: Option<String>,
    /// Ignored
    #[schema(nullable = false)]
    #[allow(dead_code)]
    signature: Option<String>,
    /// Ignored
    #[serde(rename = "rawData")]
    #[schema(nullable = false)]
    #[allow(dead_code)]
    raw_data: Option<String>,
    /// Ignored
    #[serde(rename = "cloudID")]
    #[schema(nullable = false)]
    #[allow(dead_code)]
    cloud_id: Option<String>,
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
    Ok(Json(service::login(&state, &req.code).await?))
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "A fresh token", body = TokenResponse)))]
async fn refresh(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    user: AuthUser,
) -> AppResult<Json<TokenResponse>> {
    let token = crate::auth::bearer_token(&headers, None).unwrap_or_default();
    Ok(Json(service::refresh(&state, &user, token)?))
}

#[utoipa::path(get, path = "/api/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller and their quota", body = MeResponse)))]
async fn me(State(state): State<AppState>, user: AuthUser) -> AppResult<Json<MeResponse>> {
    Ok(Json(service::me(&state, &user).await?))
}

#[utoipa::path(delete, path = "/api/me", tag = "auth", security(("bearer" = [])),
    description = "Erases messages, sessions, media and locations; payments and ledger rows are kept, anonymised.",
    responses((status = 204, description = "Deleted")))]
async fn delete_me(State(state): State<AppState>, user: AuthUser) -> AppResult<StatusCode> {
    service::delete_account(&state, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}
