//! A fake jscode2session: checks appid, secret, js_code and grant_type, and
//! answers like WeChat (JSON labelled text/plain).
//!
//! js_code conventions: "ok-<openid>" logs in <openid>; "union-<openid>"
//! also returns a unionid; "err-<errcode>" answers that errcode; "slow"
//! sleeps past any sane timeout; "html" answers a non-JSON body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

type Calls = Arc<Mutex<Vec<HashMap<String, String>>>>;

pub const APP_ID: &str = "wx-test-appid";
pub const APP_SECRET: &str = "wx-test-secret-do-not-log";

#[derive(Clone)]
pub struct FakeWechat {
    pub base_url: String,
    calls: Calls,
}

impl FakeWechat {
    pub async fn start() -> FakeWechat {
        let calls = Arc::new(Mutex::new(vec![]));
        let router = Router::new()
            .route("/sns/jscode2session", get(code2session))
            .with_state(calls.clone());
        FakeWechat {
            base_url: super::serve(router).await,
            calls,
        }
    }

    pub fn calls(&self) -> Vec<HashMap<String, String>> {
        self.calls.lock().unwrap().clone()
    }
}

fn text(body: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
}

async fn code2session(
    State(calls): State<Calls>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    calls.lock().unwrap().push(q.clone());
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
