//! POST /api/pay/checkout, GET /api/pay/orders/{out_trade_no} (rate
//! limited, authenticated) and POST /api/pay/wechat/webhook (neither: it is
//! WeChat Pay calling, authenticated by its signature).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::service;
use super::views::{CheckoutResponse, OrderStatus};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::openapi::ErrorBody;
use crate::http::ApiJson;
use crate::http::AppState;

/// The user-facing routes. With payments disabled (`enabled` false) they
/// are documented all the same, but every /api/pay/* path answers 503
/// `payments_disabled`.
pub fn routes(enabled: bool) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(checkout))
        .routes(routes!(order));
    if enabled {
        return routes;
    }
    documentation_of(routes).route("/api/pay/{*rest}", any(payments_disabled))
}

/// The notification route (mounted outside the rate limits). With payments
/// disabled, it is documented but not routed (the catch-all of [`routes`]
/// answers it).
pub fn webhook_routes(enabled: bool) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new().routes(routes!(webhook));
    if enabled {
        return routes;
    }
    documentation_of(routes)
}

/// The routes' documentation, without the routes.
fn documentation_of(routes: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(routes.into_openapi())
}

async fn payments_disabled() -> AppError {
    AppError::unavailable(
        ErrorCode::PaymentsDisabled,
        "payments are not enabled on this server",
    )
}

fn payments(state: &AppState) -> AppResult<&super::Payments> {
    state.payments().ok_or_else(|| {
        AppError::unavailable(
            ErrorCode::PaymentsDisabled,
            "payments are not enabled on this server",
        )
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    /// One of the live top-up amounts (`admin set-topups`, the console;
    /// seeded from `quota.topup_amounts_fen`)
    #[schema(example = 600)]
    amount_fen: i64,
}

// The bodies `service` builds with `json!`, as the handlers answer them.

/// The arguments of `wx.requestPayment`, signed.
/// What WeChat Pay is answered when a notification is refused (it retries).
#[derive(Serialize, ToSchema)]
pub struct WebhookFail {
    /// `FAIL`
    code: &'static str,
    message: String,
}

#[utoipa::path(post, path = "/api/pay/checkout", tag = "pay", security(("bearer" = [])),
    request_body = CheckoutRequest,
    responses(
        (status = 200, description = "A JSAPI order", body = CheckoutResponse),
        (status = 502, description = "`upstream_error`: WeChat Pay failed", body = ErrorBody),
        (status = 503, description = "`payments_disabled`", body = ErrorBody),
    ))]
async fn checkout(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> AppResult<Json<CheckoutResponse>> {
    let pay = payments(&state)?;
    Ok(Json(
        service::checkout(&state, pay, user.id, req.amount_fen).await?,
    ))
}

#[utoipa::path(get, path = "/api/pay/orders/{out_trade_no}", tag = "pay", security(("bearer" = [])),
    params(("out_trade_no" = String, Path, description = "From checkout")),
    responses(
        (status = 200, description = "The order (a pending one is queried at WeChat Pay first)", body = OrderStatus),
        (status = 404, description = "`not_found`: not the caller's order", body = ErrorBody),
        (status = 503, description = "`payments_disabled`", body = ErrorBody),
    ))]
async fn order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(out_trade_no): Path<String>,
) -> AppResult<Json<OrderStatus>> {
    let pay = payments(&state)?;
    Ok(Json(
        service::order(&state, pay, user.id, out_trade_no).await?,
    ))
}

/// Answers as WeChat Pay expects: 204 on success (including a repeated
/// notification), else 4xx/5xx `{"code":"FAIL","message":…}` so it retries.
/// The body is taken raw: the signature covers the exact bytes.
#[utoipa::path(post, path = "/api/pay/wechat/webhook", tag = "pay",
    description = "WeChat Pay v3 notification, authenticated by its `Wechatpay-*` signature headers.",
    request_body(content = Object, description = "The notification envelope (resource encrypted with the APIv3 key)"),
    responses(
        (status = 204, description = "Credited (or already credited)"),
        (status = "4XX", description = "Refused", body = WebhookFail),
        (status = "5XX", description = "Not processed; WeChat Pay retries", body = WebhookFail),
    ))]
async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(pay) = state.payments() else {
        return payments_disabled().await.into_response();
    };
    match service::notification(&state, pay, &headers, &body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (
            e.status,
            Json(WebhookFail {
                code: "FAIL",
                message: e.message,
            }),
        )
            .into_response(),
    }
}
