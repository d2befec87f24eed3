//! GET/POST /api/wechat/callback: the mini-program's message push URL
//! (消息推送), outside the rate limits and without a bearer token — the
//! signature made with `wechat.push_token` is the authentication.
//!
//! GET is WeChat's URL check (echo `echostr`); POST carries events, of
//! which `wxa_media_check` (an image's verdict) is applied and the rest
//! accepted and ignored. Both modes of the JSON data format are read:
//! plain, and safe/compatible (`Encrypt`, with `wechat.push_aes_key`).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::images::{self, PushOutcome};
use super::push::{self, AesKey, Push};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::metrics::labels;
use crate::http::openapi::ErrorBody;
use crate::http::AppState;

/// Mounted outside the rate limits (WeChat calling).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_url, receive))
}

/// What WeChat puts in the push URL's query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PushQuery {
    /// SHA-1 of the Token, `timestamp` and `nonce`, sorted and joined
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    /// The URL check only: answered as given
    echostr: Option<String>,
    /// Safe mode: `aes`
    encrypt_type: Option<String>,
    /// Safe mode: SHA-1 of the Token, `timestamp`, `nonce` and `Encrypt`
    msg_signature: Option<String>,
}

fn count(state: &AppState, outcome: &str) {
    state
        .metrics()
        .inc("moderation_push_total", labels(&[("outcome", outcome)]), 1);
}

/// The Token, or 404 when the message push is not configured.
fn token(state: &AppState) -> AppResult<&str> {
    let t = state.config().wechat.push_token.as_str();
    if t.is_empty() {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "the message push is not configured on this server (wechat.push_token)",
        ));
    }
    Ok(t)
}

fn bad_signature(state: &AppState, what: &str) -> AppError {
    count(state, "bad_signature");
    // Never the query's values: a forged request is noise in the log.
    tracing::warn!(what, "message push refused: bad signature");
    AppError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidSignature,
        format!("{what} does not match wechat.push_token"),
    )
}

/// `signature` over the Token, `timestamp` and `nonce`.
fn verify_query(state: &AppState, q: &PushQuery) -> AppResult<()> {
    let token = token(state)?;
    let (Some(sig), Some(ts), Some(nonce)) = (&q.signature, &q.timestamp, &q.nonce) else {
        return Err(bad_signature(
            state,
            "a push without signature, timestamp and nonce",
        ));
    };
    if !push::verify(sig, &[token, ts, nonce]) {
        return Err(bad_signature(state, "signature"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/wechat/callback", tag = "wechat",
    description = "WeChat's check of the message push URL (消息推送): `echostr` is answered as given \
        when `signature` is the SHA-1 of `wechat.push_token`, `timestamp` and `nonce`, sorted and joined.",
    params(PushQuery),
    responses(
        (status = 200, description = "`echostr`, as given", content_type = "text/plain", body = String),
        (status = 400, description = "`invalid_request`: no `echostr`", body = ErrorBody),
        (status = 401, description = "`invalid_signature`", body = ErrorBody),
        (status = 404, description = "`not_found`: `wechat.push_token` is not set", body = ErrorBody),
    ))]
async fn verify_url(
    State(state): State<AppState>,
    Query(q): Query<PushQuery>,
) -> AppResult<Response> {
    verify_query(&state, &q)?;
    let Some(echo) = q.echostr else {
        return Err(AppError::invalid_request("echostr is required"));
    };
    count(&state, "url_verified");
    tracing::info!("message push URL verified by WeChat");
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], echo).into_response())
}

#[utoipa::path(post, path = "/api/wechat/callback", tag = "wechat",
    description = "WeChat's message push (消息推送), data format JSON, plain or safe mode. \
        The `wxa_media_check` event (an image's media_check_async verdict: `trace_id`, \
        `result.suggest` pass/review/risky, `result.label`, `detail`) is applied; other events are \
        accepted and ignored. A verdict for an unknown `trace_id` is answered 200 too (WeChat retries \
        anything else) and counted.",
    params(PushQuery),
    request_body(content = Object, description = "The event (plain mode) or `{ToUserName, Encrypt}` (safe mode)"),
    responses(
        (status = 200, description = "`success`", content_type = "text/plain", body = String),
        (status = 400, description = "`invalid_request`: not a JSON event, or an `Encrypt` that cannot be read", body = ErrorBody),
        (status = 401, description = "`invalid_signature`: `signature` (or `msg_signature`) is wrong", body = ErrorBody),
        (status = 404, description = "`not_found`: `wechat.push_token` is not set", body = ErrorBody),
    ))]
async fn receive(
    State(state): State<AppState>,
    Query(q): Query<PushQuery>,
    body: Bytes,
) -> AppResult<Response> {
    verify_query(&state, &q)?;
    let event = read_event(&state, &q, &body).inspect_err(|e| {
        if e.code == ErrorCode::InvalidRequest {
            count(&state, "malformed");
        }
    })?;
    let outcome = images::on_push(&state, event).await?;
    count(&state, outcome.as_str());
    if outcome == PushOutcome::UnknownTrace {
        tracing::debug!("unknown trace_id answered 200 so WeChat does not retry");
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "success",
    )
        .into_response())
}

/// The event of a verified push: as sent (plain mode), or decrypted from
/// `Encrypt` after checking `msg_signature` (safe and compatible modes).
fn read_event(state: &AppState, q: &PushQuery, body: &[u8]) -> AppResult<Push> {
    let parse = |bytes: &[u8]| {
        serde_json::from_slice::<Push>(bytes).map_err(|_| {
            AppError::invalid_request(
                "the push is not a JSON event (set the data format of the message push to JSON)",
            )
        })
    };
    let outer = parse(body)?;
    let Some(encrypt) = outer.encrypt.as_deref() else {
        if q.encrypt_type.as_deref() == Some("aes") {
            return Err(AppError::invalid_request(
                "encrypt_type=aes, but the body has no Encrypt",
            ));
        }
        return Ok(outer);
    };
    let wechat = &state.config().wechat;
    let Some(key) = AesKey::parse(&wechat.push_aes_key) else {
        if outer.event.is_some() {
            // Compatible mode: the plain fields are there too, and the
            // query's signature (checked) covers the push.
            return Ok(outer);
        }
        tracing::warn!("encrypted message push, but wechat.push_aes_key is not set");
        return Err(AppError::invalid_request(
            "an encrypted push, but wechat.push_aes_key is not set",
        ));
    };
    let (Some(sig), Some(ts), Some(nonce)) = (&q.msg_signature, &q.timestamp, &q.nonce) else {
        return Err(bad_signature(
            state,
            "an encrypted push without msg_signature",
        ));
    };
    if !push::verify(sig, &[&wechat.push_token, ts, nonce, encrypt]) {
        return Err(bad_signature(state, "msg_signature"));
    }
    let plain = key.decrypt(encrypt, &wechat.app_id).map_err(|e| {
        tracing::warn!(error = %e, "encrypted message push unreadable");
        AppError::invalid_request(format!("Encrypt could not be read: {e}"))
    })?;
    parse(plain.as_bytes())
}
