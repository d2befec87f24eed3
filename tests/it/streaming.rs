//! Streaming replies (SSE, WebSocket with resume), stream billing, the
//! Anthropic provider, failover and the circuit breaker.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::fakes::anthropic::{self, FakeAnthropic};
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

fn admin(app: &TestApp, args: &[&str]) {
    let out = app.cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

/// A paying user with no free messages: every completed reply costs 100 fen.
async fn paying_user(app: &TestApp, name: &str, fen: i64) -> String {
    let (token, uid) = app.login(name).await;
    admin(app, &["admin", "set-free-quota", "0"]);
    admin(
        app,
        &["admin", "grant", "--user", &uid, "--fen", &fen.to_string()],
    );
    token
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    app.get("/api/me", Some(token)).await.1["quota"]["balance_fen"]
        .as_i64()
        .unwrap()
}

fn ledger_rows(app: &TestApp, kind: &str) -> i64 {
    let conn = super::common::TestDb::of(app);
    conn.query_row("SELECT count(*) FROM ledger WHERE kind = ?1", [kind], |r| {
        r.get(0)
    })
    .unwrap()
}

fn assert_audit_clean(app: &TestApp) {
    let out = app.cli(&["admin", "audit"]);
    assert!(out.status.success(), "audit: {}", stdout(&out));
}

/// Parses an SSE body into (event, data) pairs.
pub(crate) fn sse_events(body: &str) -> Vec<(String, Value)> {
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

async fn stream_chat(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn stored_reply(app: &TestApp, token: &str, session_id: &str) -> Value {
    let (_, msgs) = app
        .get(&format!("/api/sessions/{session_id}/messages"), Some(token))
        .await;
    msgs["items"].as_array().unwrap().last().unwrap().clone()
}

#[tokio::test]
async fn sse_deltas_concatenate_to_the_stored_reply() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(vec![fake.provider(5)], |_| {}).await;
    let token = paying_user(&app, "alice", 300).await;
    let res = stream_chat(&app, &token, json!({"message": "tell me a story"})).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&res.text().await.unwrap());
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d)
        .collect();
    assert!(deltas.len() >= 3, "streamed in pieces: {events:?}");
    let (last_event, done) = events.last().unwrap();
    assert_eq!(last_event, "done");
    let text: String = deltas.iter().map(|d| d["text"].as_str().unwrap()).collect();
    assert_eq!(text, "reply to: tell me a story");
    assert_eq!(done["message"]["content"], text);
    assert_eq!(done["message"]["status"], "complete");
    assert!(deltas
        .iter()
        .all(|d| d["message_id"] == done["message"]["id"]));
    assert_eq!(done["quota"]["charged_fen"], 100);
    let stored = stored_reply(&app, &token, done["session_id"].as_str().unwrap()).await;
    assert_eq!(stored["content"], text);
    assert_eq!(stored["id"], done["message"]["id"]);
    assert_eq!(balance(&app, &token).await, 200);
    // the upstream was asked to stream, with usage
    let sent = &fake.requests()[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // and the usage it reported is stored with the reply
    let conn = super::common::TestDb::of(&app);
    let tokens: (i64, i64) = conn
        .query_row(
            "SELECT prompt_tokens, completion_tokens FROM messages WHERE id = ?1",
            [done["message"]["id"].as_str().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(tokens, (11, 7));
}

#[tokio::test]
async fn sse_refusals_come_before_the_stream_as_json() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(vec![fake.provider(5)], |_| {}).await;
    let (token, _) = app.login("broke").await;
    admin(&app, &["admin", "set-free-quota", "0"]);
    let res = stream_chat(&app, &token, json!({"message": "hi"})).await;
    assert_eq!(res.status(), 402);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exhausted");
    let res = stream_chat(&app, &token, json!({"message": "hi", "model": "nope"})).await;
    assert_eq!(res.status(), 400);
    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn a_client_that_disconnects_still_gets_its_reply_stored_and_charged_once() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Gated);
    let app = app_with(vec![fake.provider(5)], |_| {}).await;
    let token = paying_user(&app, "leaver", 300).await;
    let mut res = stream_chat(&app, &token, json!({"message": "long answer please"})).await;
    assert_eq!(res.status(), 200);
    // read until the first delta, then hang up
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        seen.push_str(&String::from_utf8_lossy(
            &res.chunk().await.unwrap().unwrap(),
        ));
    }
    drop(res);
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.open_gate();
    let mut stored = Value::Null;
    for _ in 0..100 {
        let (_, sessions) = app.get("/api/sessions", Some(&token)).await;
        if let Some(sid) = sessions["items"][0]["id"].as_str() {
            stored = stored_reply(&app, &token, sid).await;
            if stored["status"] == "complete" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["content"], "reply to: long answer please");
    assert_eq!(balance(&app, &token).await, 200, "charged exactly once");
    assert_eq!(ledger_rows(&app, "charge"), 1);
    assert_audit_clean(&app);
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_stores_the_partial_reply_as_failed_and_charges_nothing() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::FailAfter(2));
    let app = app_with(vec![fake.provider(5)], |c| c.llm.breaker_failures = 1000).await;
    let token = paying_user(&app, "unlucky", 300).await;
    let res = stream_chat(
        &app,
        &token,
        json!({"message": "one two three four", "client_msg_id": "m1"}),
    )
    .await;
    let events = sse_events(&res.text().await.unwrap());
    let partial: String = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(partial, "reply to: ");
    let (last, err) = events.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(err["error"]["code"], "upstream_error");
    let (_, sessions) = app.get("/api/sessions", Some(&token)).await;
    let stored = stored_reply(&app, &token, sessions["items"][0]["id"].as_str().unwrap()).await;
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["content"], partial);
    assert_eq!(balance(&app, &token).await, 300, "nothing charged");
    assert_eq!(ledger_rows(&app, "charge"), 0);
    // the same client_msg_id can be retried; no failover happened
    assert_eq!(fake.count(), 1);
    fake.set(Behavior::Echo);
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "one two three four", "client_msg_id": "m1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(balance(&app, &token).await, 200);
    assert_audit_clean(&app);
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn ws_connect(app: &TestApp, token: &str, by_header: bool) -> Ws {
    let url = app.url("/api/chat/ws").replace("http://", "ws://");
    let req = if by_header {
        let mut r = url.into_client_request().unwrap();
        r.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    } else {
        format!("{url}?token={token}")
            .into_client_request()
            .unwrap()
    };
    tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connects")
        .0
}

pub(crate) async fn ws_send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

pub(crate) async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// Collects delta texts until done/error; returns (text, final frame).
pub(crate) async fn ws_until_end(ws: &mut Ws) -> (String, Value) {
    let mut text = String::new();
    loop {
        let f = ws_next(ws).await;
        match f["type"].as_str().unwrap() {
            "delta" => text.push_str(f["text"].as_str().unwrap()),
            _ => return (text, f),
        }
    }
}

#[tokio::test]
async fn websocket_exchange_ping_and_resume_mid_reply() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(vec![fake.provider(5)], |_| {}).await;
    let token = paying_user(&app, "wsuser", 500).await;

    // a whole exchange over ?token=
    let mut ws = ws_connect(&app, &token, false).await;
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(ws_next(&mut ws).await["type"], "pong");
    ws_send(&mut ws, json!({"type": "chat", "message": "hello socket"})).await;
    let (text, done) = ws_until_end(&mut ws).await;
    assert_eq!(done["type"], "done");
    assert_eq!(text, "reply to: hello socket");
    assert_eq!(done["message"]["content"], text);
    assert_eq!(done["quota"]["charged_fen"], 100);
    ws_send(&mut ws, json!({"type": "bogus"})).await;
    assert_eq!(ws_next(&mut ws).await["error"]["code"], "invalid_request");

    // resume mid-reply on a new socket (Authorization header this time)
    fake.set(Behavior::Gated);
    ws_send(&mut ws, json!({"type": "chat", "message": "a longer reply please", "session_id": done["session_id"]})).await;
    let first = ws_next(&mut ws).await;
    assert_eq!(first["type"], "delta");
    let got = first["text"].as_str().unwrap().to_string();
    let message_id = first["message_id"].as_str().unwrap().to_string();
    drop(ws);
    let mut ws2 = ws_connect(&app, &token, true).await;
    ws_send(
        &mut ws2,
        json!({"type": "resume", "message_id": message_id, "offset": got.chars().count()}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.open_gate();
    let (rest, done2) = ws_until_end(&mut ws2).await;
    assert_eq!(done2["type"], "done");
    assert_eq!(format!("{got}{rest}"), "reply to: a longer reply please");
    assert_eq!(done2["message"]["content"], format!("{got}{rest}"));
    assert_eq!(balance(&app, &token).await, 300, "two replies, two charges");

    // resume of a finished reply from an offset, from storage after a restart
    let mut app = app;
    app.restart().await;
    let mut ws3 = ws_connect(&app, &token, true).await;
    ws_send(
        &mut ws3,
        json!({"type": "resume", "message_id": message_id, "offset": 6}),
    )
    .await;
    let (tail, done3) = ws_until_end(&mut ws3).await;
    assert_eq!(tail, "to: a longer reply please");
    assert_eq!(done3["message"]["id"], message_id.as_str());
    // another user cannot resume it
    let (other, _) = app.login("intruder").await;
    let mut ws4 = ws_connect(&app, &other, false).await;
    ws_send(
        &mut ws4,
        json!({"type": "resume", "message_id": message_id, "offset": 0}),
    )
    .await;
    assert_eq!(ws_next(&mut ws4).await["error"]["code"], "not_found");
    assert_eq!(balance(&app, &token).await, 300, "resuming never charges");
    assert_audit_clean(&app);
}

#[tokio::test]
async fn websocket_needs_a_valid_token() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/chat/ws").replace("http://", "ws://");
    let err = tokio_tungstenite::connect_async(format!("{url}?token=forged"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
}

#[tokio::test]
async fn anthropic_messages_stream_through_the_same_path() {
    let claude = FakeAnthropic::start().await;
    let app = app_with(vec![claude.provider()], |c| {
        c.llm.default_model = "claude-haiku".into();
        c.llm.system_prompt = "Be brief.".into();
    })
    .await;
    let (token, _) = app.login("ann").await;
    let (s, first) = app
        .post("/api/chat", Some(&token), json!({"message": "hi"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["message"]["content"], "claude says: hi");
    let res = stream_chat(
        &app,
        &token,
        json!({"message": "again", "session_id": first["session_id"]}),
    )
    .await;
    let events = sse_events(&res.text().await.unwrap());
    let text: String = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "claude says: again");
    let req = &claude.requests()[1];
    assert_eq!(req.headers["x-api-key"], anthropic::API_KEY);
    assert_eq!(req.headers["anthropic-version"], "2023-06-01");
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(req.body["model"], "claude-haiku");
    assert_eq!(req.body["max_tokens"], 321);
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["system"], "Be brief.");
    assert_eq!(
        req.body["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "claude says: hi"},
            {"role": "user", "content": "again"},
        ])
    );
    let conn = super::common::TestDb::of(&app);
    let tokens: (i64, i64) = conn
        .query_row("SELECT prompt_tokens, completion_tokens FROM messages WHERE content = 'claude says: again'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(tokens, (25, 9));
}

async fn two_provider_app(a: &FakeOpenAi, b: &FakeOpenAi, failures: u32) -> TestApp {
    let (pa, pb) = (a.named("primary", 2), b.named("backup", 2));
    app_with(vec![pa, pb], |c| {
        c.llm.breaker_failures = failures;
        c.llm.breaker_cooldown_secs = 30;
        c.llm.routes = vec![mvp28::config::RouteConfig {
            model: "gpt-4o-mini".into(),
            providers: vec!["primary".into(), "backup:backup-model-id".into()],
        }];
    })
    .await
}

#[tokio::test]
async fn failover_follows_the_route_and_maps_model_ids() {
    let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let app = two_provider_app(&a, &b, 1000).await;
    let (token, _) = app.login("f").await;
    for behavior in [
        Behavior::Status(500),
        Behavior::Status(429),
        Behavior::Slow(Duration::from_secs(4)),
    ] {
        a.set(behavior.clone());
        let (s, body) = app
            .post("/api/chat", Some(&token), json!({"message": "x"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{behavior:?}: {body}");
        assert_eq!(body["message"]["content"], "reply to: x");
    }
    assert_eq!(a.count(), 3);
    assert_eq!(b.count(), 3);
    assert!(b
        .requests()
        .iter()
        .all(|r| r.body["model"] == "backup-model-id"));
    assert!(a
        .requests()
        .iter()
        .all(|r| r.body["model"] == "gpt-4o-mini"));
    // healthy primary: the backup is not asked
    a.set(Behavior::Echo);
    app.post("/api/chat", Some(&token), json!({"message": "y"}))
        .await;
    assert_eq!((a.count(), b.count()), (4, 3));
    // both down: an upstream error, nothing charged
    a.set(Behavior::Status(502));
    b.set(Behavior::Status(503));
    let (s, body) = app
        .post("/api/chat", Some(&token), json!({"message": "z"}))
        .await;
    assert_error(s, &body, 502, "upstream_error");
    assert_eq!(
        app.get("/api/me", Some(&token)).await.1["quota"]["free_used_today"],
        4
    );
}

#[tokio::test]
async fn no_failover_once_output_has_been_sent() {
    let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    a.set(Behavior::FailAfter(1));
    let app = two_provider_app(&a, &b, 1000).await;
    let (token, _) = app.login("g").await;
    let res = stream_chat(&app, &token, json!({"message": "partial"})).await;
    let events = sse_events(&res.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "error");
    assert!(events.iter().any(|(e, _)| e == "delta"));
    assert_eq!(
        b.count(),
        0,
        "the backup must not be asked after output was sent"
    );
}

#[tokio::test]
async fn breaker_opens_probes_half_open_and_closes() {
    let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    a.set(Behavior::Status(503));
    let app = two_provider_app(&a, &b, 2).await;
    let (token, _) = app.login("h").await;
    let chat = || app.post("/api/chat", Some(&token), json!({"message": "x"}));
    // two failures open the primary's circuit
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(a.count(), 2);
    // open: skipped without a call
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(a.count(), 2);
    // after the cool-down one probe goes through; it fails and reopens
    app.clock.advance(chrono::Duration::seconds(30));
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(a.count(), 3);
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(a.count(), 3, "reopened after the failed probe");
    // next probe succeeds: closed again, the primary serves
    app.clock.advance(chrono::Duration::seconds(30));
    a.set(Behavior::Echo);
    let b_before = b.count();
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(a.count(), 5);
    assert_eq!(b.count(), b_before);
}

#[tokio::test]
async fn retry_after_keeps_a_provider_out_that_long() {
    let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    a.set(Behavior::RateLimited(120));
    let app = two_provider_app(&a, &b, 1000).await;
    let (token, _) = app.login("r").await;
    assert_eq!(
        app.post("/api/chat", Some(&token), json!({"message": "1"}))
            .await
            .0,
        StatusCode::OK
    );
    a.set(Behavior::Echo);
    app.clock.advance(chrono::Duration::seconds(119));
    app.post("/api/chat", Some(&token), json!({"message": "2"}))
        .await;
    assert_eq!(a.count(), 1, "still resting per Retry-After");
    app.clock.advance(chrono::Duration::seconds(1));
    app.post("/api/chat", Some(&token), json!({"message": "3"}))
        .await;
    assert_eq!(a.count(), 2);
    // with every provider resting, the answer is a 503 and nothing is held
    let single = FakeOpenAi::start().await;
    single.set(Behavior::RateLimited(60));
    let app = app_with(vec![single.provider(2)], |_| {}).await;
    let (token, _) = app.login("s").await;
    let (s, b1) = app
        .post("/api/chat", Some(&token), json!({"message": "1"}))
        .await;
    assert_error(s, &b1, 502, "upstream_error");
    let (s, b2) = app
        .post("/api/chat", Some(&token), json!({"message": "2"}))
        .await;
    let err = assert_error(s, &b2, 503, "upstream_unavailable");
    assert!(err["message"].as_str().unwrap().contains("cooling down"));
    assert_eq!(single.count(), 1);
    assert_eq!(
        app.get("/api/me", Some(&token)).await.1["quota"]["free_used_today"],
        0
    );
}

/// SIGTERM with a stream still open: the server waits its grace period,
/// cuts the stream, checkpoints and exits 0.
#[tokio::test]
async fn sigterm_with_an_open_stream_exits_after_the_grace_period() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Gated);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 1\n[auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\n\
             [[llm.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"{}\"\n\
             models = [\"gpt-4o-mini\"]\ntimeout_secs = 60\n",
            fake.base_url,
            crate::fakes::openai::API_KEY
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = ServeGuard::start(dir.path(), &base).await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/auth/wechat"))
        .json(&json!({"code": "dev:t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut res = client
        .post(format!("{base}/api/chat/stream"))
        .bearer_auth(login["token"].as_str().unwrap())
        .json(&json!({"message": "held open"}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        seen.push_str(&String::from_utf8_lossy(
            &res.chunk().await.unwrap().unwrap(),
        ));
    }
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("exited within 10 s");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited the grace period"
    );
    let wal = dir.path().join("data/mvp28.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL checkpointed"
    );
}
