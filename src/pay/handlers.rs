//! POST /api/pay/checkout, GET /api/pay/orders/{out_trade_no} (rate
//! limited, authenticated) and POST /api/pay/wechat/webhook (neither: it is
//! WeChat Pay calling, authenticated by its signature).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::service;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiJson, AppError, AppResult};

/// The user-facing routes; with payments disabled, every /api/pay/* path
/// answers 503 `payments_disabled`.
pub fn router(state: &AppState) -> Router<AppState> {
    if state.payments().is_none() {
        return Router::new().route("/api/pay/{*rest}", any(payments_disabled));
    }
    Router::new()
        .route("/api/pay/checkout", post(checkout))
        .route("/api/pay/orders/{out_trade_no}", get(order))
}

/// The notification route (mounted outside the rate limits).
pub fn webhook_router(state: &AppState) -> Router<AppState> {
    if state.payments().is_none() {
        return Router::new();
    }
    Router::new().route("/api/pay/wechat/webhook", post(webhook))
}

async fn payments_disabled() -> AppError {
    AppError::unavailable(
        "payments_disabled",
        "payments are not enabled on this server",
    )
}

fn payments(state: &AppState) -> AppResult<&super::Payments> {
    state.payments().ok_or_else(|| {
        AppError::unavailable(
            "payments_disabled",
            "payments are not enabled on this server",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    amount_fen: i64,
}

async fn checkout(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> AppResult<Json<Value>> {
    let pay = payments(&state)?;
    Ok(Json(
        service::checkout(&state, pay, user.id, req.amount_fen).await?,
    ))
}

async fn order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(out_trade_no): Path<String>,
) -> AppResult<Json<Value>> {
    let pay = payments(&state)?;
    Ok(Json(
        service::order(&state, pay, user.id, out_trade_no).await?,
    ))
}

/// Answers as WeChat Pay expects: 204 on success (including a repeated
/// notification), else 4xx/5xx `{"code":"FAIL","message":…}` so it retries.
/// The body is taken raw: the signature covers the exact bytes.
async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(pay) = state.payments() else {
        return payments_disabled().await.into_response();
    };
    match service::notification(&state, pay, &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (
            e.status,
            Json(json!({"code": "FAIL", "message": e.message})),
        )
            .into_response(),
    }
}
