//! A fake jscode2session: checks appid, secret, js_code and grant_type, and
//! answers like WeChat (JSON labelled text/plain).
//!
//! js_code conventions: "ok-<openid>" logs in <openid>; "union-<openid>"
//! also returns a unionid; "err-<errcode>" answers that errcode; "slow"
//! sleeps past any sane timeout; "html" answers a non-JSON body.
//!
//! Content security: `POST /cgi-bin/stable_token` (JSON grant_type,
//! appid, secret; issues `ACCESS-TOKEN-<n>`) and `POST
//! /wxa/msg_sec_check?access_token=` (v2 body: content, version 2, scene,
//! openid), checked as WeChat does. Verdicts: content containing "RISKY" is
//! `risky` (label 20002), "REVIEW" is `review` (label 21000), else `pass`.
//!
//! Images: `POST /wxa/media_check_async?access_token=` (body: media_url,
//! media_type 2, version 2, scene, openid) answers a `trace_id`, then
//! fetches `media_url` as WeChat does (the bytes are kept for the test to
//! compare) and — once a push target is set — pushes the verdict to the
//! server's message push URL as the `wxa_media_check` event, signed with
//! the push Token (plain JSON mode, or safe mode with an EncodingAESKey).
//! The fetched bytes are judged like text: "RISKY" risky (20002),
//! "REVIEW" review (21000), else pass (100).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

type Calls = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// How msg_sec_check behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecCheck {
    /// Judges content (RISKY / REVIEW / pass).
    Judge,
    /// WeChat busy: errcode -1 on every check.
    Busy,
    /// HTTP 502 with an HTML body (a gateway in front of WeChat failing).
    Down,
}

/// One msg_sec_check request as received.
#[derive(Clone, Debug)]
pub struct Check {
    pub access_token: String,
    pub body: Value,
    /// errcode answered (0: a verdict)
    pub errcode: i64,
}

impl Check {
    pub fn content(&self) -> &str {
        self.body["content"].as_str().unwrap_or("")
    }
}

/// One media_check_async request as received, and what the fake then
/// fetched from its media_url.
#[derive(Clone, Debug)]
pub struct MediaCheck {
    pub access_token: String,
    pub body: Value,
    pub errcode: i64,
    pub trace_id: Option<String>,
    /// (HTTP status, body) of the GET of media_url, once done
    pub fetched: Option<(u16, Vec<u8>)>,
    /// status of the verdict's push, once pushed
    pub pushed: Option<u16>,
}

/// Where and how verdicts are pushed.
#[derive(Clone, Debug)]
pub struct PushTarget {
    pub url: String,
    pub token: String,
    /// Safe mode: the EncodingAESKey
    pub aes_key: Option<String>,
    /// false: the test pushes verdicts itself
    pub auto: bool,
}

#[derive(Default)]
struct Security {
    /// stable_token requests as received
    token_requests: Vec<Value>,
    issued: u64,
    /// the token msg_sec_check accepts (None: none issued, or expired)
    valid: Option<String>,
    checks: Vec<Check>,
    mode: Option<SecCheck>,
    media: Vec<MediaCheck>,
    push: Option<PushTarget>,
}

#[derive(Clone)]
struct Shared {
    calls: Calls,
    security: Arc<Mutex<Security>>,
}

pub const APP_ID: &str = "wx-test-appid";
pub const APP_SECRET: &str = "wx-test-secret-do-not-log";

#[derive(Clone)]
pub struct FakeWechat {
    pub base_url: String,
    calls: Calls,
    security: Arc<Mutex<Security>>,
}

impl FakeWechat {
    pub async fn start() -> FakeWechat {
        let calls = Arc::new(Mutex::new(vec![]));
        let security = Arc::new(Mutex::new(Security::default()));
        let router = Router::new()
            .route("/sns/jscode2session", get(code2session))
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/wxa/msg_sec_check", post(msg_sec_check))
            .route("/wxa/media_check_async", post(media_check_async))
            .with_state(Shared {
                calls: calls.clone(),
                security: security.clone(),
            });
        FakeWechat {
            base_url: super::serve(router).await,
            calls,
            security,
        }
    }

    pub fn calls(&self) -> Vec<HashMap<String, String>> {
        self.calls.lock().unwrap().clone()
    }

    /// How many access tokens were fetched.
    pub fn tokens_fetched(&self) -> usize {
        self.security.lock().unwrap().token_requests.len()
    }

    pub fn token_requests(&self) -> Vec<Value> {
        self.security.lock().unwrap().token_requests.clone()
    }

    /// Every msg_sec_check received.
    pub fn checks(&self) -> Vec<Check> {
        self.security.lock().unwrap().checks.clone()
    }

    /// The current token stops working (answers 40001) until a new one is fetched.
    pub fn expire_token(&self) {
        self.security.lock().unwrap().valid = None;
    }

    pub fn set_sec_check(&self, mode: SecCheck) {
        self.security.lock().unwrap().mode = Some(mode);
    }

    /// Where verdicts go (the server's /api/wechat/callback).
    pub fn set_push(&self, target: PushTarget) {
        self.security.lock().unwrap().push = Some(target);
    }

    /// Every media_check_async received.
    pub fn media_checks(&self) -> Vec<MediaCheck> {
        self.security.lock().unwrap().media.clone()
    }

    /// Waits until `n` media checks were fetched (and, with an automatic
    /// push target, pushed); returns them.
    pub async fn media_checks_done(&self, n: usize) -> Vec<MediaCheck> {
        for _ in 0..500 {
            let (checks, auto) = {
                let sec = self.security.lock().unwrap();
                (sec.media.clone(), sec.push.as_ref().is_some_and(|p| p.auto))
            };
            let done = checks
                .iter()
                .filter(|c| c.fetched.is_some() && (!auto || c.pushed.is_some()))
                .count();
            if done >= n {
                return checks;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{n} media checks not done: {:?}", self.media_checks());
    }

    /// Pushes a verdict for `trace_id` as WeChat does: signed with the
    /// target's Token (safe mode with its key). Returns (status, body).
    pub async fn push_verdict(&self, trace_id: &str, suggest: &str, label: i64) -> (u16, String) {
        let target = self
            .security
            .lock()
            .unwrap()
            .push
            .clone()
            .expect("push target set");
        push(&target, &media_event(trace_id, suggest, label)).await
    }
}

/// The `wxa_media_check` event as WeChat pushes it (label as a string, as
/// WeChat sends it).
pub fn media_event(trace_id: &str, suggest: &str, label: i64) -> Value {
    json!({
        "ToUserName": "gh_fake",
        "FromUserName": "o-fake",
        "CreateTime": 1_764_043_200,
        "MsgType": "event",
        "Event": "wxa_media_check",
        "appid": APP_ID,
        "trace_id": trace_id,
        "version": 2,
        "result": {"suggest": suggest, "label": label.to_string()},
        "detail": [{"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label.to_string(), "prob": 90}],
    })
}

/// The query WeChat signs a push with: (timestamp, nonce, signature).
pub fn signed(token: &str) -> (String, String, String) {
    let ts = "1764043200".to_string();
    let nonce = format!("{}", rand_nonce());
    let sig = mvp28::moderation::push::signature(&[token, &ts, &nonce]);
    (ts, nonce, sig)
}

fn rand_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1_514_711_492);
    N.fetch_add(7919, Ordering::Relaxed)
}

/// POSTs `event` to the target, plain or (with a key) in safe mode.
pub async fn push(target: &PushTarget, event: &Value) -> (u16, String) {
    let (ts, nonce, sig) = signed(&target.token);
    let client = reqwest::Client::new();
    let req = match &target.aes_key {
        None => client
            .post(format!(
                "{}?signature={sig}&timestamp={ts}&nonce={nonce}",
                target.url
            ))
            .json(event),
        Some(key) => {
            let key = mvp28::moderation::push::AesKey::parse(key).expect("EncodingAESKey");
            let encrypt = key.encrypt(&event.to_string(), APP_ID, [42; 16]);
            let msg_sig =
                mvp28::moderation::push::signature(&[&target.token, &ts, &nonce, &encrypt]);
            client
                .post(format!(
                    "{}?signature={sig}&timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={msg_sig}",
                    target.url
                ))
                .json(&json!({"ToUserName": "gh_fake", "Encrypt": encrypt}))
        }
    };
    let res = req.send().await.expect("push sent");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

fn text(body: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
}

async fn code2session(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    shared.calls.lock().unwrap().push(q.clone());
    if q.get("appid").map(String::as_str) != Some(APP_ID) {
        return text(json!({"errcode": 40013, "errmsg": "invalid appid"}));
    }
    if q.get("secret").map(String::as_str) != Some(APP_SECRET) {
        return text(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    if q.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return text(json!({"errcode": 40002, "errmsg": "invalid grant_type"}));
    }
    let code = q.get("js_code").cloned().unwrap_or_default();
    if let Some(openid) = code.strip_prefix("ok-") {
        return text(json!({"openid": openid, "session_key": "SESSIONKEY-must-not-leak"}));
    }
    if let Some(openid) = code.strip_prefix("union-") {
        return text(
            json!({"openid": openid, "unionid": format!("u-{openid}"), "session_key": "SESSIONKEY-must-not-leak"}),
        );
    }
    if let Some(errcode) = code.strip_prefix("err-") {
        let errcode: i64 = errcode.parse().unwrap();
        return text(json!({"errcode": errcode, "errmsg": "fake error"}));
    }
    if code == "slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if code == "html" {
        return (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>502 Bad Gateway</html>",
        )
            .into_response();
    }
    text(json!({"errcode": 40029, "errmsg": "invalid code"}))
}

fn err(errcode: i64, errmsg: &str) -> Response {
    Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

/// POST /cgi-bin/stable_token: a JSON body (not a query), as documented.
async fn stable_token(State(shared): State<Shared>, body: String) -> Response {
    let Ok(b) = serde_json::from_str::<Value>(&body) else {
        return err(47001, "data format error");
    };
    let mut sec = shared.security.lock().unwrap();
    sec.token_requests.push(b.clone());
    if b["grant_type"] != "client_credential" {
        return err(40002, "invalid grant_type");
    }
    if b["appid"] != APP_ID {
        return err(40013, "invalid appid");
    }
    if b["secret"] != APP_SECRET {
        return err(40125, "invalid appsecret");
    }
    // normal mode answers the valid token; a new one once it expired
    let token = match &sec.valid {
        Some(t) if b["force_refresh"] != true => t.clone(),
        _ => {
            sec.issued += 1;
            let t = format!("ACCESS-TOKEN-{}", sec.issued);
            sec.valid = Some(t.clone());
            t
        }
    };
    Json(json!({"access_token": token, "expires_in": 7200})).into_response()
}

/// POST /wxa/msg_sec_check?access_token=…: version 2.
async fn msg_sec_check(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let b: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let token = q.get("access_token").cloned().unwrap_or_default();
    let mut sec = shared.security.lock().unwrap();
    let mode = sec.mode.unwrap_or(SecCheck::Judge);
    let content = b["content"].as_str().unwrap_or("");
    let (errcode, answer) = if mode == SecCheck::Down {
        (-2, None)
    } else if sec.valid.as_deref() != Some(token.as_str()) {
        (40001, None)
    } else if mode == SecCheck::Busy {
        (-1, None)
    } else if b["version"] != 2
        || content.is_empty()
        || content.chars().count() > 2500
        || !b["scene"].as_i64().is_some_and(|s| (1..=4).contains(&s))
        || b["openid"].as_str().is_none_or(|o| o.is_empty())
    {
        (47001, None)
    } else {
        let (suggest, label) = if content.contains("RISKY") {
            ("risky", 20002)
        } else if content.contains("REVIEW") {
            ("review", 21000)
        } else {
            ("pass", 100)
        };
        (
            0,
            Some(json!({
                "errcode": 0, "errmsg": "ok",
                "result": {"suggest": suggest, "label": label},
                "detail": [{"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90}],
                "trace_id": "fake-trace",
            })),
        )
    };
    sec.checks.push(Check {
        access_token: token,
        body: b,
        errcode,
    });
    drop(sec);
    match (errcode, answer) {
        (_, Some(a)) => Json(a).into_response(),
        (-2, _) => (
            axum::http::StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html>502 Bad Gateway</html>",
        )
            .into_response(),
        (-1, _) => err(-1, "system error"),
        (40001, _) => err(
            40001,
            "invalid credential, access_token is invalid or not latest",
        ),
        _ => err(47001, "data format error"),
    }
}

/// POST /wxa/media_check_async?access_token=…: version 2, media_type 2
/// (image) or 1 (audio). Answers a trace_id, then fetches and judges.
async fn media_check_async(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let b: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let token = q.get("access_token").cloned().unwrap_or_default();
    let mut sec = shared.security.lock().unwrap();
    let url = b["media_url"].as_str().unwrap_or("").to_string();
    let errcode = if sec.valid.as_deref() != Some(token.as_str()) {
        40001
    } else if !(url.starts_with("http://") || url.starts_with("https://"))
        || !matches!(b["media_type"].as_i64(), Some(1 | 2))
        || b["version"] != 2
        || !b["scene"].as_i64().is_some_and(|s| (1..=4).contains(&s))
        || b["openid"].as_str().is_none_or(|o| o.is_empty())
    {
        47001
    } else {
        0
    };
    let trace_id = (errcode == 0).then(|| format!("fake-media-trace-{}", sec.media.len() + 1));
    let index = sec.media.len();
    sec.media.push(MediaCheck {
        access_token: token,
        body: b,
        errcode,
        trace_id: trace_id.clone(),
        fetched: None,
        pushed: None,
    });
    drop(sec);
    let Some(trace_id) = trace_id else {
        return match errcode {
            40001 => err(
                40001,
                "invalid credential, access_token is invalid or not latest",
            ),
            _ => err(47001, "data format error"),
        };
    };
    // Asynchronously, as WeChat: fetch the media, judge it, push the verdict.
    let security = shared.security.clone();
    let trace = trace_id.clone();
    tokio::spawn(async move {
        let fetched = match reqwest::get(&url).await {
            Ok(res) => {
                let status = res.status().as_u16();
                (
                    status,
                    res.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                )
            }
            Err(_) => (0, vec![]),
        };
        let text = String::from_utf8_lossy(&fetched.1).to_string();
        let target = {
            let mut sec = security.lock().unwrap();
            sec.media[index].fetched = Some(fetched);
            sec.push.clone().filter(|p| p.auto)
        };
        let Some(target) = target else { return };
        let (suggest, label) = if text.contains("RISKY") {
            ("risky", 20002)
        } else if text.contains("REVIEW") {
            ("review", 21000)
        } else {
            ("pass", 100)
        };
        let (status, _) = push(&target, &media_event(&trace, suggest, label)).await;
        security.lock().unwrap().media[index].pushed = Some(status);
    });
    Json(json!({"errcode": 0, "errmsg": "ok", "trace_id": trace_id})).into_response()
}
