//! Content security (issue 22): msgSecCheck on messages in and replies out,
//! with a managed access token, against a fake WeChat that speaks
//! stable_token and msg_sec_check (v2) and checks what it receives.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi};
use crate::fakes::wechat::{self, FakeWechat, SecCheck};

struct Setup {
    app: TestApp,
    wechat: FakeWechat,
    llm: FakeOpenAi,
}

async fn setup(f: impl FnOnce(&mut mvp28::config::Config)) -> Setup {
    let wechat = FakeWechat::start().await;
    let llm = FakeOpenAi::start().await;
    let (base, provider) = (wechat.base_url.clone(), llm.provider(5));
    let app = TestApp::builder()
        .config(|c| {
            c.llm.providers = vec![provider];
            c.wechat.app_id = wechat::APP_ID.into();
            c.wechat.app_secret = wechat::APP_SECRET.into();
            c.wechat.api_base = base;
            c.auth.dev_login = Some(true);
            c.moderation.enabled = true;
            f(c);
        })
        .spawn()
        .await;
    Setup { app, wechat, llm }
}

/// A user with no free messages and `fen` of balance: a reply costs 100.
async fn paying_user(app: &TestApp, name: &str, fen: i64) -> String {
    let (token, uid) = app.login(name).await;
    for args in [
        vec!["admin", "set-free-quota", "0"],
        vec!["admin", "grant", "--user", &uid, "--fen", &fen.to_string()],
    ] {
        let out = app.cli(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    token
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    app.get("/api/me", Some(token)).await.1["quota"]["balance_fen"]
        .as_i64()
        .unwrap()
}

fn db(app: &TestApp) -> super::common::TestDb {
    super::common::TestDb::of(app)
}

fn count(app: &TestApp, sql: &str) -> i64 {
    db(app).query_row(sql, [], |r| r.get(0)).unwrap()
}

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

async fn stream_chat(app: &TestApp, token: &str, body: Value) -> Vec<(String, Value)> {
    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    sse_events(&res.text().await.unwrap())
}

fn assert_audit_clean(app: &TestApp) {
    let out = app.cli(&["admin", "audit"]);
    assert!(out.status.success(), "audit: {}", stdout(&out));
}

#[tokio::test]
async fn token_is_fetched_once_for_many_checks_and_refreshed_once_on_40001() {
    let s = setup(|_| {}).await;
    let (token, _) = s.app.login("alice").await;
    for i in 0..3 {
        let (st, body) = s
            .app
            .post(
                "/api/chat",
                Some(&token),
                json!({"message": format!("hello {i}")}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let checks = s.wechat.checks();
    assert!(checks.len() >= 6, "input and output checked: {checks:?}");
    assert_eq!(s.wechat.tokens_fetched(), 1, "one token for every check");
    let req = &s.wechat.token_requests()[0];
    assert_eq!(req["grant_type"], "client_credential");
    assert_eq!(req["appid"], wechat::APP_ID);
    assert_eq!(req["secret"], wechat::APP_SECRET);
    for c in &checks {
        assert_eq!(c.access_token, "ACCESS-TOKEN-1");
        assert_eq!(c.body["version"], 2);
        assert_eq!(c.body["scene"], 2);
        assert_eq!(c.body["openid"], "dev:alice");
        assert_eq!(c.errcode, 0);
    }
    let input: Vec<&str> = checks.iter().map(|c| c.content()).collect();
    assert!(input.contains(&"hello 0"), "{input:?}");
    assert!(input.contains(&"reply to: hello 0"), "{input:?}");

    // the token expires: many concurrent checks see 40001, one refresh
    s.wechat.expire_token();
    let before = s.wechat.checks().len();
    let turns = (0..5).map(|i| {
        s.app.post(
            "/api/chat",
            Some(&token),
            json!({"message": format!("again {i}")}),
        )
    });
    for (st, body) in futures_util::future::join_all(turns).await {
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    assert_eq!(s.wechat.tokens_fetched(), 2, "refreshed exactly once");
    let after = &s.wechat.checks()[before..];
    let rejected = after.iter().filter(|c| c.errcode == 40001).count();
    assert!((1..=5).contains(&rejected), "{after:?}");
    assert!(after
        .iter()
        .filter(|c| c.errcode == 0)
        .all(|c| c.access_token == "ACCESS-TOKEN-2"));

    // the token never reaches a log line or /metrics
    let m = s.app.metrics().await;
    assert!(!m.contains("ACCESS-TOKEN"));
    assert!(m.contains("moderation_checks_total{direction=\"input\",result=\"pass\"}"));
    assert!(m.contains("moderation_check_duration_seconds_count{direction=\"output\"}"));
}

#[tokio::test]
async fn risky_input_is_refused_before_any_upstream_call_and_uncharged() {
    let s = setup(|_| {}).await;
    let token = paying_user(&s.app, "bob", 300).await;
    let (st, body) = s
        .app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "say something RISKY", "client_msg_id": "r1"}),
        )
        .await;
    let err = assert_error(st, &body, 422, "content_blocked");
    assert_eq!(err["label"], 20002);
    // streamed too: refused before the stream starts, as plain JSON
    let res = s
        .app
        .client
        .post(s.app.url("/api/chat/stream"))
        .bearer_auth(&token)
        .json(&json!({"message": "RISKY again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(s.llm.count(), 0, "the model never saw it");
    assert_eq!(balance(&s.app, &token).await, 300);
    assert_eq!(count(&s.app, "SELECT count(*) FROM messages"), 0);
    assert_eq!(count(&s.app, "SELECT count(*) FROM sessions"), 0);
    assert_eq!(count(&s.app, "SELECT count(*) FROM reservations"), 0);
    let m = s.app.metrics().await;
    assert!(
        m.contains("moderation_blocks_total{direction=\"input\",label=\"porn\"} 2"),
        "{m}"
    );
    assert_audit_clean(&s.app);
}

fn risky_script() -> Behavior {
    Behavior::Script(vec![
        "First sentence is fine. ".into(),
        "Second is fine too. ".into(),
        "Now something RISKY ".into(),
        "comes here. ".into(),
        "And more.".into(),
    ])
}

/// The stored reply of the user's only session.
async fn stored_reply(app: &TestApp, token: &str) -> Value {
    let (_, sessions) = app.get("/api/sessions", Some(token)).await;
    let sid = sessions["items"][0]["id"].as_str().unwrap().to_string();
    let (_, msgs) = app
        .get(&format!("/api/sessions/{sid}/messages"), Some(token))
        .await;
    msgs["items"].as_array().unwrap().last().unwrap().clone()
}

fn assert_blocked_and_uncharged(app: &TestApp, reply: &Value) {
    assert_eq!(reply["status"], "blocked", "{reply}");
    assert!(!reply["content"].as_str().unwrap().contains("RISKY"));
    assert_eq!(reply["content"], mvp28::moderation::BLOCKED_NOTICE);
    assert_eq!(
        count(app, "SELECT count(*) FROM ledger WHERE kind = 'charge'"),
        0
    );
    // what the model produced is still spend
    assert_eq!(count(app, "SELECT count(*) FROM llm_calls"), 1);
    assert_audit_clean(app);
}

#[tokio::test]
async fn a_reply_turning_risky_is_cut_before_the_risky_segment_reaches_an_sse_client() {
    let s = setup(|_| {}).await;
    let token = paying_user(&s.app, "carol", 300).await;
    s.llm.set(risky_script());
    let events = stream_chat(&s.app, &token, json!({"message": "tell me"})).await;
    let text: String = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert!(!text.contains("RISKY"), "{events:?}");
    assert!(
        "First sentence is fine. Second is fine too. ".starts_with(&text),
        "only checked text was sent: {text:?}"
    );
    assert!(
        !text.is_empty(),
        "the safe sentences were released: {events:?}"
    );
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "error", "{events:?}");
    assert_eq!(data["error"]["code"], "content_blocked");
    assert_eq!(balance(&s.app, &token).await, 300);
    let reply = stored_reply(&s.app, &token).await;
    assert_blocked_and_uncharged(&s.app, &reply);
    // segments were checked as they came, before the whole
    let outputs: Vec<String> = s
        .wechat
        .checks()
        .iter()
        .map(|c| c.content().to_string())
        .filter(|c| c != "tell me")
        .collect();
    assert!(outputs.len() >= 2, "{outputs:?}");
    assert!(outputs.last().unwrap().contains("RISKY"));
    let m = s.app.metrics().await;
    assert!(m.contains("moderation_blocks_total{direction=\"output\",label=\"porn\"} 1"));
}

#[tokio::test]
async fn a_reply_turning_risky_is_refused_to_a_plain_client_and_stored_blocked() {
    let s = setup(|_| {}).await;
    let token = paying_user(&s.app, "dave", 300).await;
    s.llm.set(risky_script());
    let (st, body) = s
        .app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "tell me", "client_msg_id": "p1"}),
        )
        .await;
    let err = assert_error(st, &body, 422, "content_blocked");
    assert!(!body.to_string().contains("RISKY"), "{err}");
    assert_eq!(balance(&s.app, &token).await, 300);
    let reply = stored_reply(&s.app, &token).await;
    assert_blocked_and_uncharged(&s.app, &reply);
    // a retry is answered from the stored (blocked) reply, free
    let (st, again) = s
        .app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "tell me", "client_msg_id": "p1"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["message"]["status"], "blocked");
    assert_eq!(again["quota"]["charged_fen"], 0);
    assert_eq!(s.llm.count(), 1);
}

#[tokio::test]
async fn review_passes_by_default_and_blocks_when_configured() {
    let s = setup(|_| {}).await;
    let (token, _) = s.app.login("erin").await;
    let (st, body) = s
        .app
        .post("/api/chat", Some(&token), json!({"message": "REVIEW me"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["message"]["status"], "complete");

    let s = setup(|c| c.moderation.on_review = "block".into()).await;
    let token = paying_user(&s.app, "erin", 300).await;
    let (st, body) = s
        .app
        .post("/api/chat", Some(&token), json!({"message": "REVIEW me"}))
        .await;
    let err = assert_error(st, &body, 422, "content_blocked");
    assert_eq!(err["label"], 21000);
    assert_eq!(s.llm.count(), 0);
    assert_eq!(balance(&s.app, &token).await, 300);
}

#[tokio::test]
async fn wechat_down_refuses_with_fail_open_off() {
    let s = setup(|_| {}).await;
    let token = paying_user(&s.app, "frank", 300).await;
    for mode in [SecCheck::Busy, SecCheck::Down] {
        s.wechat.set_sec_check(mode);
        let (st, body) = s
            .app
            .post("/api/chat", Some(&token), json!({"message": "hi"}))
            .await;
        assert_error(st, &body, 503, "moderation_unavailable");
    }
    assert_eq!(s.llm.count(), 0);
    assert_eq!(balance(&s.app, &token).await, 300);
    assert_eq!(count(&s.app, "SELECT count(*) FROM messages"), 0);
    let m = s.app.metrics().await;
    assert!(
        m.contains("moderation_failures_total{direction=\"input\",reason=\"busy\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("moderation_failures_total{direction=\"input\",reason=\"unusable\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn wechat_down_lets_text_through_with_fail_open_on() {
    let s = setup(|c| c.moderation.fail_open = true).await;
    let token = paying_user(&s.app, "grace", 300).await;
    s.wechat.set_sec_check(SecCheck::Busy);
    let (st, body) = s
        .app
        .post("/api/chat", Some(&token), json!({"message": "hi"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["message"]["content"], "reply to: hi");
    assert_eq!(body["quota"]["charged_fen"], 100);
    // WeChat not even reachable
    let s = setup(|c| {
        c.moderation.fail_open = true;
        c.wechat.api_base = format!("http://127.0.0.1:{}", free_port());
    })
    .await;
    let (token, _) = s.app.login("grace").await;
    let (st, body) = s
        .app
        .post("/api/chat", Some(&token), json!({"message": "hi"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let m = s.app.metrics().await;
    assert!(
        m.contains("moderation_failures_total{direction=\"input\",reason=\"token\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn long_content_is_checked_in_parts() {
    let s = setup(|_| {}).await;
    let (token, _) = s.app.login("heidi").await;
    let message: String = (0..6000)
        .map(|i| char::from_u32(0x4e00 + (i % 700)).unwrap())
        .collect();
    let (st, body) = s
        .app
        .post("/api/chat", Some(&token), json!({"message": message}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let checks = s.wechat.checks();
    assert!(checks.iter().all(|c| c.errcode == 0), "every part accepted");
    let input: Vec<&str> = checks
        .iter()
        .map(|c| c.content())
        .take_while(|c| !c.starts_with("reply to:"))
        .collect();
    assert_eq!(input.len(), 3, "6000 characters in 3 parts");
    assert!(input.iter().all(|p| p.chars().count() <= 2500));
    assert!(message.starts_with(input[0]) && message.ends_with(input[2]));
    // a risky phrase at the very end of a long message is still found
    let risky = format!("{}RISKY", &message);
    let (st, body) = s
        .app
        .post("/api/chat", Some(&token), json!({"message": risky}))
        .await;
    assert_error(st, &body, 422, "content_blocked");
}

#[test]
fn enabling_moderation_needs_a_wechat_app() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.moderation.enabled = true;
    let e = c.validate().unwrap_err();
    assert_eq!(e.key, "moderation.enabled");
    c.wechat.app_id = "wx1".into();
    c.wechat.app_secret = "s".into();
    c.validate().unwrap();
    c.moderation.on_review = "maybe".into();
    assert_eq!(c.validate().unwrap_err().key, "moderation.on_review");
}

#[test]
fn the_blocked_status_migration_keeps_rows_indexes_and_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("m.db")).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    let mut files: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        name[1..name.find("__").unwrap()].parse::<u32>().unwrap()
    });
    let (before, after): (Vec<_>, Vec<_>) = files.into_iter().partition(|p| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        name[1..name.find("__").unwrap()].parse::<u32>().unwrap() < 8
    });
    for f in &before {
        conn.execute_batch(&std::fs::read_to_string(f).unwrap())
            .unwrap();
    }
    conn.execute_batch(
        "INSERT INTO users (id, openid, created_at, last_login_at) VALUES ('u1', 'o1', 1, 1);
         INSERT INTO sessions (id, user_id, title, created_at, updated_at) VALUES ('s1', 'u1', 't', 1, 1);
         INSERT INTO messages (id, session_id, user_id, role, content, status, client_msg_id, created_at, attachments)
             VALUES ('m1', 's1', 'u1', 'user', 'hi', 'complete', 'c1', 1, '[]');
         INSERT INTO messages (id, session_id, user_id, role, content, model, status, reply_to, created_at)
             VALUES ('m2', 's1', 'u1', 'assistant', 'yo', 'gpt', 'failed', 'm1', 2);
         INSERT INTO messages (id, session_id, user_id, role, content, status, created_at)
             VALUES ('m3', 's1', 'u1', 'user', 'gone', 'complete', 3);
         DELETE FROM messages WHERE id = 'm3';",
    )
    .unwrap();
    let blocked = "UPDATE messages SET status = 'blocked' WHERE id = 'm2'";
    assert!(conn.execute(blocked, []).is_err(), "not allowed before V8");
    for f in &after {
        conn.execute_batch(&std::fs::read_to_string(f).unwrap())
            .unwrap();
    }
    conn.execute(blocked, []).unwrap();
    let rows: Vec<(i64, String, String, Option<String>)> = conn
        .prepare("SELECT seq, id, status, attachments FROM messages ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (1, "m1".into(), "complete".into(), Some("[]".into())),
            (2, "m2".into(), "blocked".into(), None)
        ]
    );
    // a deleted newest seq is not reused
    conn.execute(
        "INSERT INTO messages (id, session_id, user_id, role, content, status, created_at)
         VALUES ('m4', 's1', 'u1', 'user', 'new', 'complete', 4)",
        [],
    )
    .unwrap();
    let seq: i64 = conn
        .query_row("SELECT seq FROM messages WHERE id = 'm4'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seq, 4);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' AND sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        indexes,
        [
            "messages_by_session",
            "messages_client_msg_id",
            "messages_reply_to"
        ]
    );
    // still unique per user and client_msg_id; still cascades
    assert!(conn
        .execute(
            "INSERT INTO messages (id, session_id, user_id, role, content, status, client_msg_id, created_at)
             VALUES ('m5', 's1', 'u1', 'user', 'x', 'complete', 'c1', 5)",
            [],
        )
        .is_err());
    conn.execute("DELETE FROM sessions WHERE id = 's1'", [])
        .unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    conn.execute_batch("PRAGMA foreign_key_check;").unwrap();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_until_end(ws: &mut Ws) -> (String, Value) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut text = String::new();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .unwrap()
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let f: Value = serde_json::from_str(t.as_str()).unwrap();
        if f["type"] == "delta" {
            text.push_str(f["text"].as_str().unwrap());
        } else {
            return (text, f);
        }
    }
}

#[tokio::test]
async fn a_websocket_sees_only_checked_text_and_a_blocked_reply_resumes_as_blocked() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = setup(|_| {}).await;
    let token = paying_user(&s.app, "ivan", 300).await;
    s.llm.set(risky_script());
    let url = format!(
        "{}?token={token}",
        s.app.url("/api/chat/ws").replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let chat = json!({"type": "chat", "message": "tell me"}).to_string();
    ws.send(Message::Text(chat.into())).await.unwrap();
    let (text, last) = ws_until_end(&mut ws).await;
    assert!(!text.contains("RISKY"), "{text}");
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["error"]["code"], "content_blocked");
    let reply = stored_reply(&s.app, &token).await;
    assert_eq!(reply["status"], "blocked");
    // resuming the stored reply gives neither its text nor the notice's tail
    let offset = text.encode_utf16().count();
    let resume = json!({"type": "resume", "message_id": reply["id"], "offset": offset});
    ws.send(Message::Text(resume.to_string().into()))
        .await
        .unwrap();
    let (rest, last) = ws_until_end(&mut ws).await;
    assert_eq!(rest, "");
    assert_eq!(last["error"]["code"], "content_blocked", "{last}");
    assert_eq!(balance(&s.app, &token).await, 300);
}

// ------------------------------------------------------------------ images

const PUSH_TOKEN: &str = "PushToken2026";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const RISKY_PNG: &[u8] = b"\x89PNG\r\n\x1a\n-an-image-the-fake-finds-RISKY";

/// Images moderation on, the server on a known port whose public URL is
/// really its own (WeChat must fetch the media URL), a vision model.
async fn setup_images(auto_push: bool, aes_key: Option<&str>) -> Setup {
    let port = free_port();
    let s = setup(|c| {
        c.moderation.images = true;
        c.wechat.push_token = PUSH_TOKEN.into();
        c.wechat.push_aes_key = aes_key.unwrap_or("").into();
        c.server.bind = format!("127.0.0.1:{port}");
        c.server.public_url = format!("http://127.0.0.1:{port}");
        c.llm.providers[0].vision = true;
    })
    .await;
    s.wechat.set_push(wechat::PushTarget {
        url: s.app.url("/api/wechat/callback"),
        token: PUSH_TOKEN.into(),
        aes_key: aes_key.map(String::from),
        auto: auto_push,
    });
    s
}

/// presign -> PUT -> commit; (media id, the commit's download URL).
async fn upload_image(app: &TestApp, token: &str, bytes: &[u8]) -> (String, String) {
    let (st, p) = app
        .post(
            "/api/upload/presign",
            Some(token),
            json!({"filename": "pic.png", "content_type": "image/png", "size": bytes.len()}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    let res = app
        .client
        .put(p["url"].as_str().unwrap())
        .header("content-type", "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "PUT {}", res.status());
    let (st, c) = app
        .post(
            "/api/upload/commit",
            Some(token),
            json!({"upload_id": p["upload_id"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    (
        c["media"]["id"].as_str().unwrap().to_string(),
        c["media"]["url"].as_str().unwrap().to_string(),
    )
}

async fn attach(app: &TestApp, token: &str, media_id: &str) -> (StatusCode, Value) {
    app.post(
        "/api/chat",
        Some(token),
        json!({"message": "what is in this picture?", "attachments": [media_id]}),
    )
    .await
}

fn check_status(app: &TestApp, media_id: &str) -> Option<String> {
    db(app)
        .query_row(
            "SELECT check_status FROM media WHERE id = ?1",
            [media_id],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn a_committed_image_is_checked_and_a_risky_verdict_blocks_attaching_and_downloading() {
    let s = setup_images(true, None).await;
    let token = paying_user(&s.app, "judy", 300).await;
    let (id, url) = upload_image(&s.app, &token, RISKY_PNG).await;

    // WeChat got media_check_async as documented and could fetch the image
    let checks = s.wechat.media_checks_done(1).await;
    assert_eq!(checks.len(), 1, "{checks:?}");
    let c = &checks[0];
    assert_eq!(c.errcode, 0, "{c:?}");
    assert_eq!(c.trace_id.as_deref(), Some("fake-media-trace-1"));
    assert_eq!(c.access_token, "ACCESS-TOKEN-1");
    assert_eq!(c.body["media_type"], 2);
    assert_eq!(c.body["version"], 2);
    assert_eq!(c.body["scene"], 2);
    assert_eq!(c.body["openid"], "dev:judy");
    let media_url = c.body["media_url"].as_str().unwrap();
    assert!(
        media_url.starts_with(&s.app.config.server.public_url),
        "{media_url}"
    );
    assert_eq!(
        c.fetched,
        Some((200, RISKY_PNG.to_vec())),
        "the fake fetched the image"
    );
    assert_eq!(c.pushed, Some(200), "the signed verdict was accepted");
    assert_eq!(check_status(&s.app, &id).as_deref(), Some("risky"));

    // attaching it: 422 content_blocked with the label, no upstream call, nothing charged
    let (st, body) = attach(&s.app, &token, &id).await;
    let err = assert_error(st, &body, 422, "content_blocked");
    assert_eq!(err["label"], 20002);
    assert_eq!(err["media_id"], id.as_str());
    assert_eq!(s.llm.count(), 0);
    assert_eq!(balance(&s.app, &token).await, 300);
    assert_eq!(count(&s.app, "SELECT count(*) FROM messages"), 0);
    assert_eq!(count(&s.app, "SELECT count(*) FROM reservations"), 0);

    // downloading it: 451, by the media endpoint and by a URL handed out before
    let (st, body) = s.app.get(&format!("/api/media/{id}"), Some(&token)).await;
    let err = assert_error(st, &body, 451, "content_blocked");
    assert_eq!(err["label"], 20002);
    let res = s.app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 451);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_blocked");
    let res = s.app.client.get(media_url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 451, "WeChat's URL too");

    // a retried push of the same verdict changes and counts nothing more
    let (st, text) = s
        .wechat
        .push_verdict("fake-media-trace-1", "risky", 20002)
        .await;
    assert_eq!((st, text.as_str()), (200, "success"));
    let m = s.app.metrics().await;
    assert!(
        m.contains("moderation_blocks_total{direction=\"image\",label=\"porn\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("moderation_image_checks_total{result=\"started\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("moderation_image_checks_total{result=\"risky\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("moderation_push_total{outcome=\"applied\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("moderation_push_total{outcome=\"duplicate\"} 1"),
        "{m}"
    );
    assert!(!m.contains(PUSH_TOKEN));
    assert_eq!(
        count(
            &s.app,
            "SELECT count(*) FROM moderation_blocks WHERE direction = 'image'"
        ),
        1
    );
    assert_audit_clean(&s.app);
}

#[tokio::test]
async fn a_pending_image_waits_and_a_passed_one_can_be_attached() {
    let s = setup_images(false, None).await;
    let token = paying_user(&s.app, "ken", 300).await;
    let (id, url) = upload_image(&s.app, &token, crate::media::PNG).await;
    let checks = s.wechat.media_checks_done(1).await;
    assert_eq!(checks[0].fetched, Some((200, crate::media::PNG.to_vec())));
    assert_eq!(check_status(&s.app, &id).as_deref(), Some("pending"));

    // no verdict yet: 409 moderation_pending, nothing reaches the model
    let (st, body) = attach(&s.app, &token, &id).await;
    let err = assert_error(st, &body, 409, "moderation_pending");
    assert_eq!(err["media_id"], id.as_str());
    assert_eq!(s.llm.count(), 0);
    assert_eq!(balance(&s.app, &token).await, 300);
    // the uploader may still download it meanwhile
    let res = s.app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // a verdict for a trace nobody knows: 200 (or WeChat retries), counted
    let (st, text) = s.wechat.push_verdict("no-such-trace", "risky", 20002).await;
    assert_eq!((st, text.as_str()), (200, "success"));
    assert_eq!(check_status(&s.app, &id).as_deref(), Some("pending"));

    // pass, in compatible mode (plain fields beside an Encrypt this server
    // has no key for): the image goes to the (vision) model, charged
    let mut event = wechat::media_event("fake-media-trace-1", "pass", 100);
    event["Encrypt"] = json!("bm90LXJlYWRhYmxlLXdpdGhvdXQtdGhlLWtleQ==");
    let (ts, nonce, sig) = wechat::signed(PUSH_TOKEN);
    let res = s
        .app
        .client
        .post(s.app.url(&format!(
            "/api/wechat/callback?signature={sig}&timestamp={ts}&nonce={nonce}"
        )))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "success");
    assert_eq!(check_status(&s.app, &id).as_deref(), Some("pass"));
    let (st, body) = attach(&s.app, &token, &id).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["quota"]["charged_fen"], 100);
    assert_eq!(s.llm.count(), 1);

    // the one-step upload (wx.uploadFile) starts a check too
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(crate::media::PNG.to_vec())
            .file_name("b.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let res = s
        .app
        .client
        .post(s.app.url("/api/upload"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let checks = s.wechat.media_checks_done(2).await;
    assert_eq!(checks[1].fetched, Some((200, crate::media::PNG.to_vec())));
    let m = s.app.metrics().await;
    assert!(
        m.contains("moderation_push_total{outcome=\"unknown_trace\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("moderation_image_checks_total{result=\"pass\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_push_with_a_bad_signature_is_refused_and_changes_nothing() {
    let s = setup_images(false, None).await;
    let token = paying_user(&s.app, "leo", 300).await;
    let (id, _) = upload_image(&s.app, &token, RISKY_PNG).await;
    s.wechat.media_checks_done(1).await;
    let event = wechat::media_event("fake-media-trace-1", "pass", 100);
    let callback = s.app.url("/api/wechat/callback");

    // signed with another Token
    let forged = wechat::PushTarget {
        url: callback.clone(),
        token: "SomeoneElsesToken".into(),
        aes_key: None,
        auto: false,
    };
    let (st, body) = wechat::push(&forged, &event).await;
    assert_eq!(st, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "invalid_signature");
    // no signature at all; a good signature over another timestamp
    let res = s
        .app
        .client
        .post(&callback)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (ts, nonce, sig) = wechat::signed(PUSH_TOKEN);
    let res = s
        .app
        .client
        .post(format!(
            "{callback}?signature={sig}&timestamp=1{ts}&nonce={nonce}"
        ))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(check_status(&s.app, &id).as_deref(), Some("pending"));
    let (st, body) = attach(&s.app, &token, &id).await;
    assert_error(st, &body, 409, "moderation_pending");
    assert_eq!(s.llm.count(), 0);

    // a signed body that is not a JSON event: 400, nothing changes
    let res = s
        .app
        .client
        .post(format!(
            "{callback}?signature={sig}&timestamp={ts}&nonce={nonce}"
        ))
        .body("<xml><Event>wxa_media_check</Event></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let m = s.app.metrics().await;
    assert!(
        m.contains("moderation_push_total{outcome=\"bad_signature\"} 3"),
        "{m}"
    );

    // the URL check echoes echostr only with a good signature
    let (ts, nonce, sig) = wechat::signed(PUSH_TOKEN);
    let res = s
        .app
        .client
        .get(format!(
            "{callback}?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=4375120948345356249"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "4375120948345356249");
    let res = s
        .app
        .client
        .get(format!(
            "{callback}?signature={}&timestamp={ts}&nonce={nonce}&echostr=4375120948345356249",
            "0".repeat(40)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let text = res.text().await.unwrap();
    assert!(!text.contains("4375120948345356249"), "{text}");
    assert!(text.contains("invalid_signature"), "{text}");

    // without wechat.push_token the callback is not configured: 404
    let plain = setup(|_| {}).await;
    let res = plain
        .app
        .client
        .get(plain.app.url(&format!(
            "/api/wechat/callback?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn safe_mode_pushes_are_verified_and_decrypted() {
    let s = setup_images(true, Some(AES_KEY)).await;
    let token = paying_user(&s.app, "mia", 300).await;
    let (id, _) = upload_image(&s.app, &token, RISKY_PNG).await;
    let checks = s.wechat.media_checks_done(1).await;
    assert_eq!(checks[0].pushed, Some(200));
    assert_eq!(check_status(&s.app, &id).as_deref(), Some("risky"));
    let (st, body) = attach(&s.app, &token, &id).await;
    assert_error(st, &body, 422, "content_blocked");

    // an Encrypt under another key (right signatures) is refused
    let other = wechat::PushTarget {
        url: s.app.url("/api/wechat/callback"),
        token: PUSH_TOKEN.into(),
        aes_key: Some("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg".into()),
        auto: false,
    };
    let (st, _) = wechat::push(
        &other,
        &wechat::media_event("fake-media-trace-1", "pass", 100),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(check_status(&s.app, &id).as_deref(), Some("risky"));
}

#[tokio::test]
async fn admin_usage_shows_blocks_per_day() {
    let s = setup_images(true, None).await;
    let token = paying_user(&s.app, "nina", 300).await;
    let (st, body) = s
        .app
        .post("/api/chat", Some(&token), json!({"message": "RISKY words"}))
        .await;
    assert_error(st, &body, 422, "content_blocked");
    upload_image(&s.app, &token, RISKY_PNG).await;
    s.wechat.media_checks_done(1).await;

    let out = s.app.cli(&["admin", "usage", "--days", "3660", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{v}");
    let day = &blocks[0];
    assert_eq!(day["day"], "2026-11-25");
    assert_eq!(
        (&day["input"], &day["output"], &day["image"], &day["total"]),
        (&json!(1), &json!(0), &json!(1), &json!(2))
    );
    let labels = day["labels"].as_array().unwrap();
    assert!(
        labels.contains(&json!({"direction": "input", "label": 20002, "name": "porn", "count": 1}))
    );
    assert!(
        labels.contains(&json!({"direction": "image", "label": 20002, "name": "porn", "count": 1}))
    );

    let out = s.app.cli(&["admin", "usage", "--days", "3660"]);
    let text = stdout(&out);
    assert!(text.contains("content security blocks per day"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("2026-11-25") && l.contains("porn"))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().take(5).collect();
    assert_eq!(cols, ["2026-11-25", "1", "0", "1", "2"], "{row}");
}

#[test]
fn images_need_moderation_and_a_push_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.wechat.app_id = "wx1".into();
    c.wechat.app_secret = "s".into();
    c.moderation.images = true;
    assert_eq!(c.validate().unwrap_err().key, "moderation.images");
    c.moderation.enabled = true;
    assert_eq!(c.validate().unwrap_err().key, "wechat.push_token");
    c.wechat.push_token = "bad token!".into();
    assert_eq!(c.validate().unwrap_err().key, "wechat.push_token");
    c.wechat.push_token = PUSH_TOKEN.into();
    c.validate().unwrap();
    c.wechat.push_aes_key = "short".into();
    assert_eq!(c.validate().unwrap_err().key, "wechat.push_aes_key");
    c.wechat.push_aes_key = AES_KEY.into();
    c.validate().unwrap();
}
