//! Issue 15 (hardening): each test reproduces one defect found by an
//! adversarial read (empty upstream replies, errors that were charged,
//! breaker outages, refunds, sockets after deletion, …) and pins its fix.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi};

async fn app_with(
    providers: Vec<mvp28::config::ProviderConfig>,
    f: impl FnOnce(&mut mvp28::config::Config),
) -> TestApp {
    TestApp::builder()
        .config(|c| {
            c.llm.providers = providers;
            f(c);
        })
        .spawn()
        .await
}

fn admin(app: &TestApp, args: &[&str]) -> String {
    let out = app.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A paying user with no free messages: every completed reply costs 100 fen.
async fn paying_user(app: &TestApp, name: &str, fen: i64) -> (String, String) {
    let (token, uid) = app.login(name).await;
    admin(app, &["admin", "set-free-quota", "0"]);
    admin(
        app,
        &["admin", "grant", "--user", &uid, "--fen", &fen.to_string()],
    );
    (token, uid)
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    app.get("/api/me", Some(token)).await.1["quota"]["balance_fen"]
        .as_i64()
        .unwrap()
}

fn sql_i64(app: &TestApp, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(&app.config.database.path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn open_holds(app: &TestApp) -> i64 {
    sql_i64(
        app,
        "SELECT count(*) FROM reservations WHERE state = 'held'",
    )
}

fn assert_audit_clean(app: &TestApp) {
    let out = app.cli(&["admin", "audit"]);
    assert!(
        out.status.success() && stdout(&out).contains("audit ok"),
        "audit: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Parses an SSE body into (event, data) pairs.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            Some((event?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

// ---- 8. an upstream reply with no text ----

#[tokio::test]
async fn empty_upstream_reply_is_a_failure_never_a_panic_or_a_hang() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Empty);
    let app = app_with(vec![fake.provider(5)], |c| c.llm.breaker_failures = 1000).await;
    let (token, _) = paying_user(&app, "empty", 300).await;
    let (s, b) = tokio::time::timeout(
        Duration::from_secs(10),
        app.post(
            "/api/chat",
            Some(&token),
            json!({"message": "hi", "client_msg_id": "e1"}),
        ),
    )
    .await
    .expect("POST /api/chat answers");
    assert_error(s, &b, 502, "upstream_error");
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        app.client
            .post(app.url("/api/chat/stream"))
            .bearer_auth(&token)
            .json(&json!({"message": "hi again"}))
            .send(),
    )
    .await
    .expect("stream answers")
    .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), res.text())
        .await
        .expect("stream ends")
        .unwrap();
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap().0, "error", "{body}");
    assert_eq!(balance(&app, &token).await, 300, "nothing charged");
    assert_eq!(open_holds(&app), 0, "nothing held");
    // the client_msg_id is free for a retry
    fake.set(Behavior::Echo);
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "hi", "client_msg_id": "e1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["message"]["content"], "reply to: hi");
    assert_eq!(balance(&app, &token).await, 200);
    assert_audit_clean(&app);
}

// ---- 16. a plain JSON completion to a streaming request ----

#[tokio::test]
async fn plain_json_completion_to_a_streaming_request_is_a_one_chunk_reply() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::PlainJson);
    let app = app_with(vec![fake.provider(5)], |_| {}).await;
    let (token, _) = paying_user(&app, "json", 300).await;
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "plain"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["message"]["content"], "reply to: plain");
    assert_eq!(b["quota"]["charged_fen"], 100);
    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(&token)
        .json(&json!({"message": "streamed"}))
        .send()
        .await
        .unwrap();
    let events = sse_events(&res.text().await.unwrap());
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    assert_eq!(done["message"]["content"], "reply to: streamed");
    // the usage the completion reported is stored
    assert_eq!(
        sql_i64(
            &app,
            "SELECT completion_tokens FROM messages WHERE content = 'reply to: plain'"
        ),
        7
    );
    assert_eq!(balance(&app, &token).await, 100);
    assert_audit_clean(&app);
}
