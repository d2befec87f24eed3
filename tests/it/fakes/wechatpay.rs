//! An in-process fake WeChat Pay API v3 (JSAPI orders, order query, close)
//! that speaks the protocol: it verifies the merchant's
//! `WECHATPAY2-SHA256-RSA2048` signature on every request (refusing 401
//! SIGN_ERROR otherwise), records requests, checks JSAPI bodies, signs
//! every answer with its platform key (`Wechatpay-Serial` = the public key
//! id), and builds signed, AES-256-GCM encrypted notifications.
//!
//! Keys are generated at test time, once per test binary.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

pub const MCH_ID: &str = "1900000109";
pub const APP_ID: &str = "wxd678efh567hg6787";
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const API_V3_KEY: &str = "0123456789abcdefghijklmnopqrstuv";
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0119000001092025010100000000000001";

pub struct Keys {
    pub merchant: RsaPrivateKey,
    pub platform: RsaPrivateKey,
}

/// The merchant and platform keys (2048-bit), generated once per test
/// binary, in parallel.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let gen = || RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("keygen");
        let other = std::thread::spawn(gen);
        let merchant = gen();
        Keys {
            merchant,
            platform: other.join().expect("keygen thread"),
        }
    })
}

pub fn merchant_public() -> RsaPublicKey {
    keys().merchant.to_public_key()
}

/// Writes the merchant private key (PKCS#8 PEM) and the platform public key
/// (SPKI PEM) into `dir`; returns their paths.
pub fn write_key_files(dir: &Path) -> (String, String) {
    let k = keys();
    let key = dir.join("apiclient_key.pem");
    std::fs::write(
        &key,
        k.merchant.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let pubkey = dir.join("pub_key.pem");
    std::fs::write(
        &pubkey,
        k.platform
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    (
        key.to_string_lossy().into_owned(),
        pubkey.to_string_lossy().into_owned(),
    )
}

pub fn nonce(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Base64 RSA-SHA256 signature by the platform key.
pub fn platform_sign(message: &str) -> String {
    let sk = SigningKey::<Sha256>::new(keys().platform.clone());
    B64.encode(sk.sign(message.as_bytes()).to_bytes())
}

/// Verifies a base64 RSA-SHA256 signature by the merchant key.
pub fn merchant_verify(message: &str, signature_b64: &str) -> bool {
    let Ok(raw) = B64.decode(signature_b64) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(raw.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(merchant_public())
        .verify(message.as_bytes(), &sig)
        .is_ok()
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as signed.
    pub path: String,
    pub authorization: String,
    pub body: Value,
}

#[derive(Clone, Debug)]
pub struct Order {
    /// The JSAPI request body.
    pub request: Value,
    pub trade_state: String,
    pub transaction_id: Option<String>,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    sign_failures: Vec<String>,
    orders: HashMap<String, Order>,
    fail_jsapi: bool,
    tamper_responses: bool,
}

#[derive(Clone)]
pub struct FakeWechatPay {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

/// A notification as WeChat Pay would POST it.
#[derive(Clone, Debug)]
pub struct Notify {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Notify {
    pub fn set_header(&mut self, name: &str, value: &str) {
        for (k, v) in &mut self.headers {
            if k.eq_ignore_ascii_case(name) {
                *v = value.to_string();
            }
        }
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

impl FakeWechatPay {
    pub async fn start() -> FakeWechatPay {
        keys();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new().fallback(handle).with_state(inner.clone());
        FakeWechatPay {
            base_url: super::serve(router).await,
            inner,
        }
    }

    /// Points `c` at this fake, with key files written into `dir`.
    pub fn configure(&self, c: &mut mvp28::config::Config, dir: &Path) {
        let (key, pubkey) = write_key_files(dir);
        let p = &mut c.wechat_pay;
        p.mch_id = MCH_ID.into();
        p.app_id = APP_ID.into();
        p.serial_no = MERCHANT_SERIAL.into();
        p.private_key_path = key;
        p.api_v3_key = API_V3_KEY.into();
        p.platform_public_key_path = pubkey;
        p.platform_public_key_id = PUB_KEY_ID.into();
        p.api_base = self.base_url.clone();
        p.timeout_secs = 5;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests whose merchant signature or Authorization format failed.
    pub fn sign_failures(&self) -> Vec<String> {
        self.inner.lock().unwrap().sign_failures.clone()
    }

    pub fn order(&self, out_trade_no: &str) -> Option<Order> {
        self.inner.lock().unwrap().orders.get(out_trade_no).cloned()
    }

    pub fn fail_jsapi(&self, on: bool) {
        self.inner.lock().unwrap().fail_jsapi = on;
    }

    /// Answers with a signature that does not match the body.
    pub fn tamper_responses(&self, on: bool) {
        self.inner.lock().unwrap().tamper_responses = on;
    }

    pub fn set_trade_state(&self, out_trade_no: &str, state: &str) {
        let mut g = self.inner.lock().unwrap();
        let o = g.orders.get_mut(out_trade_no).expect("known order");
        o.trade_state = state.into();
        if state == "SUCCESS" && o.transaction_id.is_none() {
            o.transaction_id = Some(format!(
                "4200{}",
                rand::thread_rng().gen_range(10u64.pow(17)..10u64.pow(18))
            ));
        }
    }

    /// Marks the order paid and returns the transaction WeChat Pay reports.
    pub fn pay(&self, out_trade_no: &str) -> Value {
        self.set_trade_state(out_trade_no, "SUCCESS");
        self.transaction(out_trade_no)
    }

    /// The transaction as the query API and notifications show it.
    pub fn transaction(&self, out_trade_no: &str) -> Value {
        let o = self.order(out_trade_no).expect("known order");
        transaction_json(&o)
    }

    /// A TRANSACTION.SUCCESS notification carrying `transaction`,
    /// encrypted with the APIv3 key and signed at unix time `ts`.
    pub fn notification(&self, transaction: &Value, ts: i64) -> Notify {
        let body = json!({
            "id": format!("EV-{}", nonce(16)),
            "create_time": "2026-11-25T12:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": encrypt_resource(&transaction.to_string(), "transaction"),
        });
        sign_notification(&body.to_string(), ts)
    }
}

impl FakeWechatPay {
    /// A REFUND.SUCCESS notification for `refund_fen` of a paid order,
    /// encrypted and signed at unix time `ts`.
    pub fn refund_notification(
        &self,
        out_trade_no: &str,
        refund_id: &str,
        refund_fen: i64,
        ts: i64,
    ) -> Notify {
        let t = self.transaction(out_trade_no);
        let refund = json!({
            "mchid": t["mchid"],
            "out_trade_no": out_trade_no,
            "transaction_id": t["transaction_id"],
            "out_refund_no": format!("R{out_trade_no}"),
            "refund_id": refund_id,
            "refund_status": "SUCCESS",
            "success_time": "2026-11-25T12:30:00+08:00",
            "user_received_account": "支付用户零钱",
            "amount": {"total": t["amount"]["total"], "refund": refund_fen,
                       "payer_total": t["amount"]["total"], "payer_refund": refund_fen},
        });
        let body = json!({
            "id": format!("EV-{}", nonce(16)),
            "create_time": "2026-11-25T12:30:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "REFUND.SUCCESS",
            "summary": "退款成功",
            "resource": encrypt_resource(&refund.to_string(), "refund"),
        });
        sign_notification(&body.to_string(), ts)
    }
}

/// AEAD_AES_256_GCM with the APIv3 key, as WeChat Pay encrypts resources.
pub fn encrypt_resource(plain: &str, associated_data: &str) -> Value {
    let n = nonce(12);
    let cipher = Aes256Gcm::new_from_slice(API_V3_KEY.as_bytes()).unwrap();
    let nonce_bytes: [u8; 12] = n.as_bytes().try_into().unwrap();
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce_bytes),
            Payload {
                msg: plain.as_bytes(),
                aad: associated_data.as_bytes(),
            },
        )
        .unwrap();
    json!({
        "original_type": "transaction",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": B64.encode(ct),
        "associated_data": associated_data,
        "nonce": n,
    })
}

/// Signs an arbitrary notification body at `ts` with the platform key.
pub fn sign_notification(body: &str, ts: i64) -> Notify {
    let n = nonce(32);
    let sig = platform_sign(&format!("{ts}\n{n}\n{body}\n"));
    Notify {
        headers: vec![
            ("Wechatpay-Serial".into(), PUB_KEY_ID.into()),
            ("Wechatpay-Signature".into(), sig),
            ("Wechatpay-Timestamp".into(), ts.to_string()),
            ("Wechatpay-Nonce".into(), n),
            (
                "Wechatpay-Signature-Type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: body.to_string(),
    }
}

fn transaction_json(o: &Order) -> Value {
    let r = &o.request;
    let mut t = json!({
        "appid": r["appid"],
        "mchid": r["mchid"],
        "out_trade_no": r["out_trade_no"],
        "trade_type": "JSAPI",
        "trade_state": o.trade_state,
        "trade_state_desc": o.trade_state,
        "amount": {"total": r["amount"]["total"], "currency": "CNY"},
        "payer": {"openid": r["payer"]["openid"]},
    });
    if o.trade_state == "SUCCESS" {
        t["transaction_id"] = json!(o.transaction_id);
        t["success_time"] = json!("2026-11-25T12:01:02+08:00");
        t["bank_type"] = json!("OTHERS");
        t["amount"]["payer_total"] = r["amount"]["total"].clone();
        t["amount"]["payer_currency"] = json!("CNY");
    }
    t
}

fn error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        json!({"code": code, "message": message}).to_string(),
    )
        .into_response()
}

/// Parses `WECHATPAY2-SHA256-RSA2048 k="v",…` and checks the signature.
fn check_authorization(
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &str,
) -> Result<String, String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization")?;
    let params = auth
        .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
        .ok_or("wrong schema")?;
    let mut kv = HashMap::new();
    for part in params.split(',') {
        let (k, v) = part.split_once('=').ok_or("bad parameter")?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or("unquoted value")?;
        kv.insert(k.trim().to_string(), v.to_string());
    }
    let get = |k: &str| kv.get(k).cloned().ok_or(format!("no {k}"));
    let (mchid, nonce, ts, serial, sig) = (
        get("mchid")?,
        get("nonce_str")?,
        get("timestamp")?,
        get("serial_no")?,
        get("signature")?,
    );
    if kv.len() != 5 {
        return Err(format!("unexpected parameters: {kv:?}"));
    }
    if mchid != MCH_ID || serial != MERCHANT_SERIAL {
        return Err("wrong mchid or serial_no".into());
    }
    if nonce.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err("bad nonce_str or timestamp".into());
    }
    let message = format!("{method}\n{path}\n{ts}\n{nonce}\n{body}\n");
    if !merchant_verify(&message, &sig) {
        return Err("signature does not verify".into());
    }
    Ok(ts)
}

/// A signed answer; the timestamp echoes the request's, so the client's
/// clock (manual in tests) sees a fresh response.
fn signed(inner: &Inner, ts: &str, status: StatusCode, body: String) -> Response {
    let n = nonce(32);
    let mut sig = platform_sign(&format!("{ts}\n{n}\n{body}\n"));
    if inner.tamper_responses {
        sig = platform_sign(&format!("{ts}\n{n}\n{body} \n"));
    }
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("wechatpay-serial", PUB_KEY_ID.parse().unwrap());
    h.insert("wechatpay-signature", sig.parse().unwrap());
    h.insert("wechatpay-timestamp", ts.parse().unwrap());
    h.insert("wechatpay-nonce", n.parse().unwrap());
    h.insert("request-id", "08F1-FAKE".parse().unwrap());
    res
}

fn check_jsapi(b: &Value) -> Result<(), String> {
    let s = |k: &str| b[k].as_str().unwrap_or("");
    if s("appid") != APP_ID {
        return Err("appid".into());
    }
    if s("mchid") != MCH_ID {
        return Err("mchid".into());
    }
    let d = s("description").chars().count();
    if d == 0 || d > 127 {
        return Err("description".into());
    }
    let no = s("out_trade_no");
    if !(6..=32).contains(&no.len())
        || !no
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-|*".contains(&c))
    {
        return Err("out_trade_no".into());
    }
    let exp = chrono::DateTime::parse_from_rfc3339(s("time_expire")).map_err(|_| "time_expire")?;
    if exp.offset().local_minus_utc() != 8 * 3600 {
        return Err("time_expire not +08:00".into());
    }
    let url = s("notify_url");
    if !url.starts_with("http") || url.contains('?') || url.contains('#') {
        return Err("notify_url".into());
    }
    if b["amount"]["total"].as_i64().unwrap_or(0) <= 0 || b["amount"]["currency"] != "CNY" {
        return Err("amount".into());
    }
    if b["payer"]["openid"].as_str().unwrap_or("").is_empty() {
        return Err("payer.openid".into());
    }
    Ok(())
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut g = inner.lock().unwrap();
    g.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    });
    let ts = match check_authorization(method.as_str(), &path, &headers, &text) {
        Ok(ts) => ts,
        Err(e) => {
            g.sign_failures.push(format!("{method} {path}: {e}"));
            return error(401, "SIGN_ERROR", &e);
        }
    };
    let json_body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let uri_path = uri.path();
    if method == Method::POST && uri_path == "/v3/pay/transactions/jsapi" {
        if g.fail_jsapi {
            return error(500, "SYSTEM_ERROR", "系统错误");
        }
        if let Err(field) = check_jsapi(&json_body) {
            return error(400, "PARAM_ERROR", &format!("invalid {field}"));
        }
        let no = json_body["out_trade_no"].as_str().unwrap().to_string();
        g.orders.insert(
            no,
            Order {
                request: json_body,
                trade_state: "NOTPAY".into(),
                transaction_id: None,
            },
        );
        let prepay = format!("wx{}", nonce(30));
        return signed(
            &g,
            &ts,
            StatusCode::OK,
            json!({"prepay_id": prepay}).to_string(),
        );
    }
    if let Some(rest) = uri_path.strip_prefix("/v3/pay/transactions/out-trade-no/") {
        if method == Method::GET && !rest.contains('/') {
            if uri.query() != Some(&format!("mchid={MCH_ID}")) {
                return error(400, "PARAM_ERROR", "mchid");
            }
            return match g.orders.get(rest) {
                // An authenticated error answer is signed too, as WeChat
                // Pay does (what `mvp28 doctor` relies on).
                None => signed(
                    &g,
                    &ts,
                    StatusCode::NOT_FOUND,
                    json!({"code": "ORDER_NOT_EXIST", "message": "订单不存在"}).to_string(),
                ),
                Some(o) => {
                    let t = transaction_json(o).to_string();
                    signed(&g, &ts, StatusCode::OK, t)
                }
            };
        }
        if let Some(no) = rest.strip_suffix("/close") {
            if method != Method::POST || json_body != json!({"mchid": MCH_ID}) {
                return error(400, "PARAM_ERROR", "close body");
            }
            let Some(o) = g.orders.get_mut(no) else {
                return error(404, "ORDER_NOT_EXIST", "订单不存在");
            };
            if o.trade_state == "SUCCESS" {
                return error(400, "ORDER_PAID", "订单已支付");
            }
            o.trade_state = "CLOSED".into();
            return signed(&g, &ts, StatusCode::NO_CONTENT, String::new());
        }
    }
    error(404, "NOT_FOUND", "no such API in the fake")
}
