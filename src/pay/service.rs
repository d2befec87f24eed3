//! Payments domain: checkout, the one settlement path shared by
//! notifications, order queries and reconciliation, and the notification
//! checks.

use crate::db::sql::Tx;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::client::{verify_signed, PayError, Transaction as WxTransaction};
use super::crypto::nonce_str;
use super::views::{CheckoutResponse, OrderStatus, PayParams};
use super::{pay_sign_message, Payments, ORDER_TTL_SECS};
use crate::billing::ledger;
use crate::clock::{rfc3339, to_ms};
use crate::db::payments::{self as repo, PaymentRow};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;
use crate::ids::UserId;

/// `M` + UTC yyyymmddHHMMSS + 12 random characters: 27 of [A-Za-z0-9],
/// inside WeChat Pay's 6-32, sortable by time when reading logs.
pub fn new_out_trade_no(now: DateTime<Utc>) -> String {
    format!(
        "M{}{}",
        now.format("%Y%m%d%H%M%S"),
        nonce_str(12).to_ascii_uppercase()
    )
}

/// WeChat Pay's allowed out_trade_no: 6-32 of [A-Za-z0-9_-|*].
pub fn valid_out_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

fn upstream(e: &PayError) -> AppError {
    tracing::warn!(error = %e, "WeChat Pay call failed");
    let msg = match e {
        PayError::Refused { code, message, .. } => {
            format!("WeChat Pay refused the order ({code}: {message})")
        }
        PayError::Unreachable(_) => "WeChat Pay could not be reached".into(),
        PayError::Untrusted(_) => "WeChat Pay's answer failed signature verification".into(),
        PayError::Malformed(_) => "WeChat Pay answered an unreadable body".into(),
    };
    AppError::new(StatusCode::BAD_GATEWAY, ErrorCode::UpstreamError, msg)
}

/// POST /api/pay/checkout: a pending payment row, then the JSAPI order at
/// WeChat Pay, then the signed wx.requestPayment parameters.
pub async fn checkout(
    state: &AppState,
    pay: &Payments,
    user_id: UserId,
    amount_fen: i64,
) -> AppResult<CheckoutResponse> {
    // the live amounts (`admin set-topups`, the console), not the config's
    let fallback = state.config().quota.topup_amounts_fen.clone();
    let amounts = state
        .db()
        .run(move |c| crate::billing::topups::live(c, &fallback))
        .await?;
    if !amounts.contains(&amount_fen) {
        return Err(
            AppError::validation("amount_fen", format!("must be one of {amounts:?}"))
                .with("topup_amounts_fen", json!(amounts)),
        );
    }
    let now = state.now();
    let now_ms = to_ms(now);
    let expires_ms = now_ms + ORDER_TTL_SECS * 1000;
    let no = new_out_trade_no(now);
    let openid = {
        let (no, user_id) = (no.clone(), user_id.clone());
        state
            .db()
            .write(move |tx| {
                repo::create_pending(tx, &no, &user_id, amount_fen, now_ms, expires_ms)
            })
            .await?
            .ok_or_else(|| AppError::unauthorized("account no longer exists"))?
    };
    let expire = DateTime::from_timestamp_millis(expires_ms)
        .unwrap_or(now)
        .with_timezone(&FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
        .to_rfc3339_opts(SecondsFormat::Secs, false);
    let order = json!({
        "appid": pay.app_id,
        "mchid": pay.mch_id,
        "description": pay.description,
        "out_trade_no": no,
        "time_expire": expire,
        "notify_url": pay.notify_url,
        "amount": {"total": amount_fen, "currency": "CNY"},
        "payer": {"openid": openid},
    });
    let prepay_id = match pay.client.jsapi(&order, now).await {
        Ok(id) => id,
        Err(e) => {
            // Nothing can be paid without a prepay_id; should WeChat Pay
            // have created the order after all, a later query still
            // settles it (failed -> paid is allowed).
            let no2 = no.clone();
            state
                .db()
                .write(move |tx| repo::finish_pending(tx, &no2, "failed"))
                .await?;
            tracing::info!(out_trade_no = %no, "checkout failed at WeChat Pay; order marked failed");
            return Err(upstream(&e));
        }
    };
    {
        let (no, prepay_id) = (no.clone(), prepay_id.clone());
        state
            .db()
            .write(move |tx| repo::set_prepay_id(tx, &no, &prepay_id))
            .await?;
    }
    tracing::info!(out_trade_no = %no, amount_fen, "checkout order created");
    Ok(CheckoutResponse {
        out_trade_no: no,
        pay_params: pay_params(pay, &prepay_id, now.timestamp()),
    })
}

/// The parameters of wx.requestPayment, signed with the merchant key.
pub fn pay_params(pay: &Payments, prepay_id: &str, timestamp: i64) -> PayParams {
    let ts = timestamp.to_string();
    let nonce = nonce_str(32);
    let package = format!("prepay_id={prepay_id}");
    let sign = pay
        .client
        .sign(&pay_sign_message(&pay.app_id, &ts, &nonce, &package));
    PayParams {
        app_id: pay.app_id.clone(),
        time_stamp: ts,
        nonce_str: nonce,
        package,
        sign_type: "RSA",
        pay_sign: sign,
    }
}

impl From<PaymentRow> for OrderStatus {
    fn from(p: PaymentRow) -> Self {
        OrderStatus {
            out_trade_no: p.out_trade_no,
            amount_fen: p.amount_fen,
            status: p.status,
            paid_at: p.paid_at.map(rfc3339),
        }
    }
}

/// GET /api/pay/orders/{no}: the caller's order; a pending one is first
/// queried at WeChat Pay and settled like a notification would.
pub async fn order(
    state: &AppState,
    pay: &Payments,
    user_id: UserId,
    out_trade_no: String,
) -> AppResult<OrderStatus> {
    let find = |state: &AppState| {
        let (no, uid) = (out_trade_no.clone(), user_id.clone());
        let db = state.db().clone();
        async move { db.run(move |c| repo::find_for_user(c, &no, &uid)).await }
    };
    let not_found = || AppError::not_found("order");
    if !valid_out_trade_no(&out_trade_no) {
        return Err(not_found());
    }
    let row = find(state).await?.ok_or_else(not_found)?;
    if row.status != "pending" {
        return Ok(row.into());
    }
    match pay.client.query(&out_trade_no, state.now()).await {
        Ok(Some(t)) => {
            if let Err(e) = settle_async(state, pay, t).await {
                // The stored status is still right; the next query or
                // reconcile will try again.
                tracing::warn!(out_trade_no = %out_trade_no, error = %e, "order query not settled");
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(out_trade_no = %out_trade_no, error = %e, "order query at WeChat Pay failed")
        }
    }
    let row = find(state).await?.ok_or_else(not_found)?;
    Ok(row.into())
}

/// What settling a WeChat Pay transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Marked paid and credited, just now.
    Credited { user_id: UserId, amount_fen: i64 },
    /// Already paid and credited before (a repeated notification).
    AlreadyPaid,
    /// A pending order moved to closed or failed.
    Finished(&'static str),
    /// Nothing to do (NOTPAY, USERPAYING, REFUND, or already final).
    Unchanged(String),
}

/// Why a transaction was refused: nothing was changed or credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownOrder,
    Mismatch(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownOrder => write!(f, "unknown out_trade_no"),
            Refusal::Mismatch(m) => write!(f, "does not match the stored order: {m}"),
        }
    }
}

/// The one settlement path, inside the caller's IMMEDIATE transaction:
/// checks the transaction against the stored order, then moves the order
/// (and for SUCCESS credits the ledger) — all or nothing.
pub fn settle(
    tx: &Tx<'_>,
    mch_id: &str,
    app_id: &str,
    t: &WxTransaction,
    now: i64,
) -> AppResult<Result<Settled, Refusal>> {
    let Some(p) = repo::find(tx, &t.out_trade_no)? else {
        return Ok(Err(Refusal::UnknownOrder));
    };
    let mismatch = |what: String| Ok(Err(Refusal::Mismatch(what)));
    if t.mchid != mch_id {
        return mismatch("mchid".into());
    }
    if t.appid != app_id {
        return mismatch("appid".into());
    }
    match t.trade_state.as_str() {
        "SUCCESS" => {
            let amount = t.amount.as_ref();
            if amount.and_then(|a| a.total) != Some(p.amount_fen) {
                return mismatch(format!(
                    "amount.total {:?} != {} fen",
                    amount.and_then(|a| a.total),
                    p.amount_fen
                ));
            }
            if amount.and_then(|a| a.currency.as_deref()) != Some("CNY") {
                return mismatch("amount.currency is not CNY".into());
            }
            let Some(txid) = t.transaction_id.as_deref().filter(|s| !s.is_empty()) else {
                return mismatch("no transaction_id".into());
            };
            if p.status == "paid" {
                return if p.transaction_id.as_deref() == Some(txid) {
                    Ok(Ok(Settled::AlreadyPaid))
                } else {
                    mismatch("a different transaction_id already paid this order".into())
                };
            }
            let paid_at = t
                .success_time
                .as_deref()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.timestamp_millis())
                .unwrap_or(now);
            // A closed or failed order that WeChat Pay reports paid was
            // paid (the money is there): it is credited like any other.
            if !repo::mark_paid(tx, &p.out_trade_no, txid, paid_at)? {
                return Ok(Ok(Settled::AlreadyPaid));
            }
            ledger::credit_topup(tx, &p.user_id, p.amount_fen, &p.out_trade_no, now)?;
            Ok(Ok(Settled::Credited {
                user_id: p.user_id,
                amount_fen: p.amount_fen,
            }))
        }
        "CLOSED" | "REVOKED" | "PAYERROR" => {
            let to = if t.trade_state == "PAYERROR" {
                "failed"
            } else {
                "closed"
            };
            if repo::finish_pending(tx, &p.out_trade_no, to)? {
                Ok(Ok(Settled::Finished(to)))
            } else {
                Ok(Ok(Settled::Unchanged(t.trade_state.clone())))
            }
        }
        other => Ok(Ok(Settled::Unchanged(other.to_string()))),
    }
}

/// [`settle`] in its own write transaction, logging what happened.
pub async fn settle_async(
    state: &AppState,
    pay: &Payments,
    t: WxTransaction,
) -> AppResult<Result<Settled, Refusal>> {
    let (mch, app) = (pay.mch_id.clone(), pay.app_id.clone());
    let now = to_ms(state.now());
    let no = t.out_trade_no.clone();
    let out = state
        .db()
        .write(move |tx| settle(tx, &mch, &app, &t, now))
        .await?;
    log_settled(&no, &out);
    Ok(out)
}

pub fn log_settled(no: &str, out: &Result<Settled, Refusal>) {
    match out {
        Ok(Settled::Credited {
            user_id,
            amount_fen,
        }) => {
            tracing::info!(out_trade_no = %no, %user_id, amount_fen, "payment credited")
        }
        Ok(Settled::AlreadyPaid) => {
            tracing::info!(out_trade_no = %no, "payment already credited")
        }
        Ok(Settled::Finished(to)) => {
            tracing::info!(out_trade_no = %no, status = to, "order finished")
        }
        Ok(Settled::Unchanged(_)) => {}
        Err(r) => tracing::error!(out_trade_no = %no, refusal = %r, "payment NOT credited"),
    }
}

/// A refused notification: WeChat Pay retries on any non-2xx answer.
#[derive(Debug)]
pub struct WebhookError {
    pub status: StatusCode,
    pub message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> WebhookError {
    let message = message.into();
    tracing::warn!(status = status.as_u16(), reason = %message, "WeChat Pay notification refused");
    WebhookError { status, message }
}

#[derive(Deserialize)]
struct Notification {
    id: String,
    event_type: String,
    resource: Resource,
}

#[derive(Deserialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: String,
    nonce: String,
}

/// POST /api/pay/wechat/webhook: verify (signature, serial, timestamp),
/// decrypt, check against the stored order, settle exactly once.
pub async fn notification(
    state: &AppState,
    pay: &Payments,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), WebhookError> {
    verify_signed(
        pay.client.platform(),
        headers,
        body,
        state.now().timestamp(),
    )
    .map_err(|e| refuse(StatusCode::UNAUTHORIZED, format!("signature: {e}")))?;
    let n: Notification = serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("unreadable notification: {e}"),
        )
    })?;
    if n.resource.algorithm != "AEAD_AES_256_GCM" {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("unsupported algorithm {:?}", n.resource.algorithm),
        ));
    }
    let plain = pay
        .api_v3
        .decrypt(
            &n.resource.nonce,
            &n.resource.associated_data,
            &n.resource.ciphertext,
        )
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    if n.event_type == "REFUND.SUCCESS" {
        return refund_notification(state, pay, &n.id, &plain).await;
    }
    if n.event_type != "TRANSACTION.SUCCESS" {
        // Authentic but not ours to act on (REFUND.ABNORMAL/CLOSED, …):
        // accept so WeChat Pay stops resending.
        tracing::info!(notification_id = %n.id, event_type = %n.event_type, "notification ignored");
        return Ok(());
    }
    let t: WxTransaction = serde_json::from_slice(&plain).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("unreadable transaction: {e}"),
        )
    })?;
    if t.trade_state != "SUCCESS" {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("TRANSACTION.SUCCESS with trade_state {}", t.trade_state),
        ));
    }
    let no = t.out_trade_no.clone();
    match settle_async(state, pay, t).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(Refusal::UnknownOrder)) => Err(refuse(
            StatusCode::NOT_FOUND,
            format!("unknown out_trade_no {no}"),
        )),
        Ok(Err(r)) => Err(refuse(StatusCode::BAD_REQUEST, r.to_string())),
        Err(e) => {
            tracing::error!(out_trade_no = %no, error = %e, "notification not settled");
            Err(WebhookError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "temporarily unable to process; retry".into(),
            })
        }
    }
}

/// The decrypted resource of a REFUND.* notification.
#[derive(Debug, Deserialize)]
struct WxRefund {
    mchid: String,
    out_trade_no: String,
    refund_id: String,
    refund_status: String,
    amount: WxRefundAmount,
}

#[derive(Debug, Deserialize)]
struct WxRefundAmount {
    /// The order's total, fen.
    total: i64,
    /// This refund, fen.
    refund: i64,
}

/// REFUND.SUCCESS: the refunded amount is debited once per refund id (a
/// `refund` ledger row), never below what is spendable; a shortfall (the
/// user already spent it) is recorded for `admin user show` / `admin audit`.
async fn refund_notification(
    state: &AppState,
    pay: &Payments,
    event_id: &str,
    plain: &[u8],
) -> Result<(), WebhookError> {
    let r: WxRefund = serde_json::from_slice(plain)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("unreadable refund: {e}")))?;
    if r.refund_status != "SUCCESS" {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("REFUND.SUCCESS with refund_status {}", r.refund_status),
        ));
    }
    if r.mchid != pay.mch_id {
        return Err(refuse(StatusCode::BAD_REQUEST, "refund for another mchid"));
    }
    if r.refund_id.is_empty() || r.refund_id.len() > 64 || r.amount.refund <= 0 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "refund without id or amount",
        ));
    }
    let now = to_ms(state.now());
    let out = state
        .db()
        .write(move |tx| {
            let Some(p) = repo::find(tx, &r.out_trade_no)? else {
                return Ok(Err(format!("unknown out_trade_no {}", r.out_trade_no)));
            };
            if p.status != "paid" {
                return Ok(Err(format!("order {} is not paid", p.out_trade_no)));
            }
            if r.amount.total != p.amount_fen {
                return Ok(Err(format!(
                    "amount.total {} != {} fen",
                    r.amount.total, p.amount_fen
                )));
            }
            let before = crate::db::billing::refunded_on_order(tx, &p.out_trade_no)?;
            let already = crate::db::billing::refund_recorded(tx, &r.refund_id)?;
            if !already && before + r.amount.refund > p.amount_fen {
                return Ok(Err(format!(
                    "refunds of {} fen exceed the order's {} fen",
                    before + r.amount.refund,
                    p.amount_fen
                )));
            }
            let done = ledger::debit_refund(
                tx,
                &p.user_id,
                &p.out_trade_no,
                &r.refund_id,
                r.amount.refund,
                now,
            )?;
            Ok(Ok((p.user_id, p.out_trade_no, r.refund_id, done)))
        })
        .await;
    match out {
        Ok(Ok((user_id, no, refund_id, done))) => {
            match done {
                ledger::Refunded::Already => {
                    tracing::info!(%refund_id, out_trade_no = %no, "refund already debited")
                }
                ledger::Refunded::Debited {
                    debited_fen,
                    shortfall_fen,
                } => {
                    if shortfall_fen > 0 {
                        tracing::warn!(%refund_id, out_trade_no = %no, %user_id, debited_fen,
                            shortfall_fen, "refund debited with a shortfall (already spent)");
                    } else {
                        tracing::info!(%refund_id, out_trade_no = %no, %user_id, debited_fen,
                            "refund debited");
                    }
                }
            }
            Ok(())
        }
        Ok(Err(why)) => {
            tracing::error!(notification_id = %event_id, refusal = %why, "refund NOT debited");
            Err(refuse(StatusCode::BAD_REQUEST, why))
        }
        Err(e) => {
            tracing::error!(notification_id = %event_id, error = %e, "refund not processed");
            Err(WebhookError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "temporarily unable to process; retry".into(),
            })
        }
    }
}
