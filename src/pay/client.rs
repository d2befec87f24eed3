//! The WeChat Pay API v3 merchant client: every request signed
//! `WECHATPAY2-SHA256-RSA2048`, every successful response's signature
//! verified before its body is read.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::crypto::{nonce_str, MerchantKey, PlatformKeys, VerifyError};

/// WeChat Pay's answers and notifications older (or newer) than this are
/// refused, as the official SDKs do.
pub const MAX_SKEW_SECS: i64 = 300;

pub struct PayClient {
    http: reqwest::Client,
    base: String,
    mch_id: String,
    serial_no: String,
    key: MerchantKey,
    platform: PlatformKeys,
}

/// A transaction as WeChat Pay reports it (order query and decrypted
/// TRANSACTION.SUCCESS notifications). Unknown fields are ignored: WeChat
/// Pay adds fields without notice.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    #[serde(default)]
    pub appid: String,
    #[serde(default)]
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: Option<String>,
    pub trade_state: String,
    pub amount: Option<Amount>,
    pub success_time: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Amount {
    pub total: Option<i64>,
    pub payer_total: Option<i64>,
    pub currency: Option<String>,
    pub payer_currency: Option<String>,
}

#[derive(Debug)]
pub enum PayError {
    /// Network failure or timeout.
    Unreachable(String),
    /// WeChat Pay answered an error status with its `{code, message}`.
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer's signature headers were missing, stale or wrong.
    Untrusted(String),
    /// A verified answer we could not read.
    Malformed(String),
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayError::Unreachable(e) => write!(f, "WeChat Pay could not be reached: {e}"),
            PayError::Refused {
                status,
                code,
                message,
            } => write!(f, "WeChat Pay answered {status} {code}: {message}"),
            PayError::Untrusted(e) => write!(f, "WeChat Pay's answer is not trusted: {e}"),
            PayError::Malformed(e) => write!(f, "WeChat Pay's answer is unreadable: {e}"),
        }
    }
}

/// Why signed headers (of a response or a notification) were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedError {
    Missing(&'static str),
    BadTimestamp,
    Stale { skew_secs: i64 },
    Verify(VerifyError),
}

impl std::fmt::Display for SignedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignedError::Missing(h) => write!(f, "missing {h} header"),
            SignedError::BadTimestamp => write!(f, "Wechatpay-Timestamp is not a number"),
            SignedError::Stale { skew_secs } => {
                write!(f, "Wechatpay-Timestamp is {skew_secs} s away from now")
            }
            SignedError::Verify(e) => e.fmt(f),
        }
    }
}

/// Checks `Wechatpay-Serial/-Signature/-Timestamp/-Nonce` over
/// "TS\nNONCE\nBODY\n": the timestamp within 5 minutes of `now_secs`, the
/// serial one we trust, the signature valid (and not a SIGNTEST probe).
pub fn verify_signed(
    platform: &PlatformKeys,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignedError> {
    let get = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(SignedError::Missing(name))
    };
    let serial = get("wechatpay-serial")?;
    let signature = get("wechatpay-signature")?;
    let timestamp = get("wechatpay-timestamp")?;
    let nonce = get("wechatpay-nonce")?;
    let ts: i64 = timestamp.parse().map_err(|_| SignedError::BadTimestamp)?;
    let skew = ts - now_secs;
    if skew.abs() > MAX_SKEW_SECS {
        return Err(SignedError::Stale { skew_secs: skew });
    }
    let mut message = Vec::with_capacity(body.len() + 64);
    message.extend_from_slice(format!("{timestamp}\n{nonce}\n").as_bytes());
    message.extend_from_slice(body);
    message.push(b'\n');
    platform
        .verify(serial, &message, signature)
        .map_err(SignedError::Verify)
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// An answer as received.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// `{code, message}` of an error answer (UNKNOWN when unreadable).
    fn error_code(&self) -> (String, String) {
        let e: ErrorBody = serde_json::from_slice(&self.body).unwrap_or(ErrorBody {
            code: None,
            message: None,
        });
        (
            e.code.unwrap_or_else(|| "UNKNOWN".into()),
            e.message.unwrap_or_default().chars().take(200).collect(),
        )
    }
}

/// What a query of a made-up order came back with.
#[derive(Debug)]
pub struct Probe {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// Whether the answer carried a valid platform signature.
    pub signature: Result<(), SignedError>,
}

impl PayClient {
    pub fn new(
        base: &str,
        mch_id: &str,
        serial_no: &str,
        key: MerchantKey,
        platform: PlatformKeys,
        timeout: Duration,
    ) -> PayClient {
        PayClient {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .user_agent(concat!("mvp28/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("reqwest client"),
            base: base.trim_end_matches('/').to_string(),
            mch_id: mch_id.to_string(),
            serial_no: serial_no.to_string(),
            key,
            platform,
        }
    }

    pub fn platform(&self) -> &PlatformKeys {
        &self.platform
    }

    /// Base64 RSA-SHA256 signature with the merchant key (also used for
    /// the mini-program's paySign).
    pub fn sign(&self, message: &str) -> String {
        self.key.sign(message.as_bytes())
    }

    /// The Authorization header for a request: signature over
    /// "METHOD\nPATH?QUERY\nTS\nNONCE\nBODY\n".
    pub fn authorization(
        &self,
        method: &str,
        path_and_query: &str,
        timestamp: i64,
        nonce: &str,
        body: &str,
    ) -> String {
        let message = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n");
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{}\"",
            self.mch_id,
            self.serial_no,
            self.sign(&message)
        )
    }

    /// Sends a signed request; a 2xx answer is returned only once its
    /// signature verifies. `path_and_query` is exactly what is signed.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<(u16, Bytes), PayError> {
        let answer = self.send(method, path_and_query, body, now).await?;
        if !(200..300).contains(&answer.status) {
            // Error answers are only used for their status and code, never
            // to move money, so they are not required to be signed.
            let (code, message) = answer.error_code();
            return Err(PayError::Refused {
                status: answer.status,
                code,
                message,
            });
        }
        verify_signed(
            &self.platform,
            &answer.headers,
            &answer.body,
            now.timestamp(),
        )
        .map_err(|e| PayError::Untrusted(e.to_string()))?;
        Ok((answer.status, answer.body))
    }

    /// One signed request, its answer as received (nothing verified).
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<Answer, PayError> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let ts = now.timestamp();
        let nonce = nonce_str(32);
        let auth = self.authorization(method.as_str(), path_and_query, ts, &nonce, &body);
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .header("authorization", auth)
            .header("accept", "application/json");
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body);
        }
        let res = req
            .send()
            .await
            .map_err(|e| PayError::Unreachable(without_url(&e)))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .bytes()
            .await
            .map_err(|e| PayError::Unreachable(without_url(&e)))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Queries an order that cannot exist (for `mvp28 doctor`). WeChat Pay
    /// answers `ORDER_NOT_EXIST` only to a request signed by the merchant
    /// key it knows for `mch_id` and `serial_no`, and signs that answer with
    /// its platform key: so the answer checks every key but the APIv3 one.
    pub async fn probe(&self, now: DateTime<Utc>) -> Result<Probe, PayError> {
        let no = format!("MVP28DOCTOR{}", nonce_str(16));
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{no}?mchid={}",
            self.mch_id
        );
        let answer = self.send(Method::GET, &path, None, now).await?;
        let (code, message) = answer.error_code();
        Ok(Probe {
            status: answer.status,
            code,
            message,
            signature: verify_signed(
                &self.platform,
                &answer.headers,
                &answer.body,
                now.timestamp(),
            ),
        })
    }

    /// POST /v3/pay/transactions/jsapi; returns the prepay_id.
    pub async fn jsapi(&self, order: &Value, now: DateTime<Utc>) -> Result<String, PayError> {
        let (_, body) = self
            .call(Method::POST, "/v3/pay/transactions/jsapi", Some(order), now)
            .await?;
        #[derive(Deserialize)]
        struct Prepay {
            prepay_id: String,
        }
        let p: Prepay =
            serde_json::from_slice(&body).map_err(|e| PayError::Malformed(e.to_string()))?;
        if p.prepay_id.is_empty() {
            return Err(PayError::Malformed("empty prepay_id".into()));
        }
        Ok(p.prepay_id)
    }

    /// GET /v3/pay/transactions/out-trade-no/{no}?mchid=…; None when WeChat
    /// Pay has no such order (it was never created there).
    pub async fn query(
        &self,
        out_trade_no: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Transaction>, PayError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            self.mch_id
        );
        match self.call(Method::GET, &path, None, now).await {
            Ok((_, body)) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| PayError::Malformed(e.to_string())),
            Err(PayError::Refused {
                status: 404, code, ..
            }) if code == "ORDER_NOT_EXIST" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POST /v3/pay/transactions/out-trade-no/{no}/close.
    pub async fn close(&self, out_trade_no: &str, now: DateTime<Utc>) -> Result<(), PayError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": self.mch_id });
        self.call(Method::POST, &path, Some(&body), now).await?;
        Ok(())
    }
}

/// reqwest errors name the URL; ours carry nothing secret, but keep logs
/// short and uniform.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<wechat pay>");
    }
    if e.is_timeout() {
        s = format!("timed out ({s})");
    }
    s
}
