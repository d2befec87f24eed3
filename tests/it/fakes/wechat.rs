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

#[derive(Default)]
struct Security {
    /// stable_token requests as received
    token_requests: Vec<Value>,
    issued: u64,
    /// the token msg_sec_check accepts (None: none issued, or expired)
    valid: Option<String>,
    checks: Vec<Check>,
    mode: Option<SecCheck>,
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
