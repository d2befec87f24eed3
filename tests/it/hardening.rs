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
    let conn = super::common::TestDb::of(app);
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

// ---- 15. failover that does not cause outages ----

#[tokio::test]
async fn a_models_only_provider_is_tried_even_with_its_circuit_open() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Status(500));
    let app = app_with(vec![fake.provider(5)], |c| {
        c.llm.breaker_failures = 3;
        c.llm.breaker_cooldown_secs = 30;
    })
    .await;
    let (token, _) = app.login("only").await;
    for _ in 0..3 {
        let (s, b) = app
            .post("/api/chat", Some(&token), json!({"message": "x"}))
            .await;
        assert_error(s, &b, 502, "upstream_error");
    }
    // the upstream recovers: the next user is served at once, no outage
    fake.set(Behavior::Echo);
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "y"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(fake.count(), 4);
}

async fn two_provider_app(a: &FakeOpenAi, b: &FakeOpenAi, failures: u32) -> TestApp {
    let (pa, pb) = (a.named("primary", 2), b.named("backup", 2));
    app_with(vec![pa, pb], |c| {
        c.llm.breaker_failures = failures;
        c.llm.breaker_cooldown_secs = 30;
        c.llm.routes = vec![mvp28::config::RouteConfig {
            model: "gpt-4o-mini".into(),
            providers: vec!["primary".into(), "backup".into()],
        }];
    })
    .await
}

#[tokio::test]
async fn request_faults_neither_trip_the_breaker_nor_fail_over() {
    let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let app = two_provider_app(&a, &b, 2).await;
    let (token, _) = app.login("fault").await;
    for code in [400, 413, 422, 400] {
        a.set(Behavior::Status(code));
        let (s, body) = app
            .post("/api/chat", Some(&token), json!({"message": "x"}))
            .await;
        assert_error(s, &body, 502, "upstream_error");
    }
    assert_eq!(b.count(), 0, "a request fault does not fail over");
    // the primary is still in rotation
    a.set(Behavior::Echo);
    let (s, _) = app
        .post("/api/chat", Some(&token), json!({"message": "y"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((a.count(), b.count()), (5, 0));
    // 408 and 429 are the provider's: they fail over
    for behavior in [Behavior::Status(408), Behavior::Status(429)] {
        a.set(behavior);
        let (s, _) = app
            .post("/api/chat", Some(&token), json!({"message": "z"}))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(b.count(), 2);
    assert_eq!(
        app.get("/api/me", Some(&token)).await.1["quota"]["free_used_today"],
        3,
        "failed turns are not counted"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_exactly_not_the_cooldown() {
    let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    a.set(Behavior::RateLimited(1));
    let app = two_provider_app(&a, &b, 1000).await;
    let (token, _) = app.login("ra").await;
    let chat = || app.post("/api/chat", Some(&token), json!({"message": "x"}));
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!((a.count(), b.count()), (1, 1));
    a.set(Behavior::Echo);
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(a.count(), 1, "resting for the second it asked");
    app.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!((a.count(), b.count()), (2, 2), "back after one second");
}

// ---- 9. a client that gets an error is never charged ----

#[tokio::test]
async fn a_chat_slower_than_the_request_timeout_is_an_error_and_never_charged() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Slow(Duration::from_secs(3)));
    let app = app_with(vec![fake.provider(10)], |c| {
        c.server.request_timeout_secs = 2;
    })
    .await;
    let (token, _) = paying_user(&app, "slow", 300).await;
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "take your time", "client_msg_id": "slow-1"}),
        )
        .await;
    assert!(s.is_client_error() || s.is_server_error(), "{s}: {b}");
    // the reply arrives after the client was told it failed
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(balance(&app, &token).await, 300, "not charged");
    assert_eq!(
        sql_i64(&app, "SELECT count(*) FROM ledger WHERE kind = 'charge'"),
        0
    );
    assert_eq!(open_holds(&app), 0);
    assert_audit_clean(&app);
    // a fast retry under the same id is answered and charged once
    fake.set(Behavior::Echo);
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "take your time", "client_msg_id": "slow-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(balance(&app, &token).await, 200);
    assert_audit_clean(&app);
}

// ---- 7. voice: one charge per recording, no hold left by a hang-up ----

const AUDIO: &[u8] = b"ID3\x04\x00-an-uploaded-recording";

#[tokio::test]
async fn concurrent_transcriptions_charge_once_and_a_hang_up_leaves_no_hold() {
    use crate::fakes::voice::{FakeVoice, TRANSCRIPT};
    use crate::media::{me, upload};
    let fake = FakeVoice::start().await;
    fake.set_delay(Duration::from_millis(500));
    let v = fake.config();
    let app = TestApp::builder().config(|c| c.voice = v).spawn().await;
    let (token, _) = app.login("voice").await;
    let id = upload(&app, &token, "memo.mp3", "audio/mpeg", AUDIO).await;
    let ask = || {
        app.post(
            "/api/voice/transcribe",
            Some(&token),
            json!({"media_id": id}),
        )
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(ask(), ask());
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{b1} {b2}");
    assert_eq!(b1["text"], TRANSCRIPT);
    assert_eq!(b2["text"], TRANSCRIPT);
    assert_eq!(fake.transcriptions().len(), 1, "one upstream call");
    assert_eq!(me(&app, &token).await["free_used_today"], 1, "one charge");

    // a client that hangs up after the reservation: the operation still
    // ends settled, nothing stays held
    let other = upload(&app, &token, "memo2.mp3", "audio/mpeg", AUDIO).await;
    let hang_up = app
        .client
        .post(app.url("/api/voice/transcribe"))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(150))
        .json(&json!({"media_id": other}))
        .send()
        .await;
    assert!(hang_up.is_err(), "the client gave up");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(open_holds(&app), 0, "no hold left behind");
    assert_eq!(me(&app, &token).await["free_used_today"], 2);
    assert_audit_clean(&app);
}

// ---- 10. refunds ----

async fn deliver(app: &TestApp, n: &crate::fakes::wechatpay::Notify) -> (StatusCode, String) {
    let mut req = app
        .client
        .post(app.url("/api/pay/wechat/webhook"))
        .body(n.body.clone());
    for (k, v) in &n.headers {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_refund_debits_once_never_below_zero_and_records_the_shortfall() {
    use crate::fakes::wechatpay::FakeWechatPay;
    let fake = FakeWechatPay::start().await;
    let keys = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .config(|c| {
            fake.configure(c, keys.path());
            // with WeChat Pay on, the dev login must be asked for
            c.auth.dev_login = Some(true);
        })
        .spawn()
        .await;
    let (token, uid) = app.login("refund").await;
    let (s, b) = app
        .post(
            "/api/pay/checkout",
            Some(&token),
            json!({"amount_fen": 3000}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let no = b["out_trade_no"].as_str().unwrap().to_string();
    let (s, body) = deliver(&app, &fake.notification(&fake.pay(&no), app.clock_now())).await;
    assert!(s.is_success(), "{body}");
    assert_eq!(balance(&app, &token).await, 3000);
    // spend one message (echo, no free quota left)
    admin(&app, &["admin", "set-free-quota", "0"]);
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "spend"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(balance(&app, &token).await, 2900);

    // a partial refund, delivered three times: debited once
    let r1 = fake.refund_notification(&no, "50300000001", 1000, app.clock_now());
    for _ in 0..3 {
        let (s, body) = deliver(&app, &r1).await;
        assert!(s.is_success(), "{s} {body}");
    }
    assert_eq!(balance(&app, &token).await, 1900);
    // the rest of the order refunded: only what is left can be debited
    let r2 = fake.refund_notification(&no, "50300000002", 2000, app.clock_now());
    let (s, body) = deliver(&app, &r2).await;
    assert!(s.is_success(), "{s} {body}");
    assert_eq!(balance(&app, &token).await, 0, "never below zero");
    assert_eq!(
        sql_i64(&app, "SELECT count(*) FROM ledger WHERE kind = 'refund'"),
        2
    );
    assert_eq!(
        sql_i64(
            &app,
            "SELECT -sum(delta_fen) FROM ledger WHERE kind = 'refund'"
        ),
        2900
    );
    // more than the order: refused, nothing changes
    let r3 = fake.refund_notification(&no, "50300000003", 1, app.clock_now());
    let (s, _) = deliver(&app, &r3).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // the shortfall is shown to the operator
    let show = admin(&app, &["admin", "user", "show", &uid]);
    assert!(show.contains("refund shortfall 100 fen"), "{show}");
    let audit = admin(&app, &["admin", "audit"]);
    assert!(audit.contains("audit ok"), "{audit}");
    assert!(
        audit.contains(&format!("refund shortfall {uid}: 100 fen")),
        "{audit}"
    );
}

// ---- 17. durable commits by default ----

#[tokio::test]
async fn commits_are_durable_by_default_and_normal_is_a_choice() {
    if super::common::sqlite_only("PRAGMA synchronous") {
        return;
    }
    /// (readers' `synchronous`, WAL fsyncs a durable write waited for)
    async fn durability(app: &TestApp) -> (i64, u64) {
        let db = app.state().db();
        let read = db
            .run(|c| Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?))
            .await
            .unwrap();
        let before = db.write_stats().3;
        db.write(|tx| {
            tx.execute("UPDATE settings SET updated_at = updated_at", [])?;
            Ok(())
        })
        .await
        .unwrap();
        (read, db.write_stats().3 - before)
    }
    // FULL: the writer commits unsynced and a sync thread fsyncs the WAL
    // before the write is answered (src/db/writer.rs)
    let app = TestApp::spawn().await;
    // (a background write may share the fsync or need its own)
    let (read, syncs) = durability(&app).await;
    assert_eq!(read, 2);
    assert!(syncs >= 1, "FULL: answered after an fsync");
    let metrics = app.metrics().await;
    assert!(metrics.contains("\ndb_wal_syncs{} "), "{metrics}");
    let app = TestApp::builder()
        .config(|c| c.database.synchronous = mvp28::config::Synchronous::Normal)
        .spawn()
        .await;
    assert_eq!(durability(&app).await, (1, 0));
}

// ---- 18. one serve per SQLite database ----

#[tokio::test]
async fn a_second_serve_on_the_same_database_refuses_to_start() {
    if super::common::sqlite_only("one server per SQLite file (Postgres is shared by design)") {
        return;
    }
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Gated);
    let app = app_with(vec![fake.provider(10)], |_| {}).await;
    let (token, _) = paying_user(&app, "owner", 300).await;
    // a reply in flight, holding 100 fen
    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(&token)
        .json(&json!({"message": "in flight"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    use futures_util::StreamExt;
    let _first = body.next().await;
    assert_eq!(open_holds(&app), 1);

    let port = free_port().to_string();
    let bind = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MVP28_DATABASE__PATH", &app.config.database.path)
        .env("MVP28_SERVER__BIND", &bind)
        .env("MVP28_AUTH__JWT_SECRET", TEST_JWT_SECRET)
        .current_dir(app.dir.path())
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second serve started on a database already served");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("mvp28.db.serve.lock"), "names the lock: {err}");
    assert!(
        err.contains(&std::process::id().to_string()),
        "names the holder: {err}"
    );
    assert_eq!(open_holds(&app), 1, "the first server's hold is untouched");
    // admin and migrate --status work beside the running server
    admin(&app, &["admin", "audit"]);
    admin(&app, &["migrate", "--status"]);
    fake.open_gate();
    let text = String::from_utf8(body.map(|c| c.unwrap().to_vec()).concat().await).unwrap();
    assert!(text.contains("event: done"), "{text}");
    assert_eq!(
        balance(&app, &token).await,
        200,
        "charged once, by its owner"
    );
    assert_audit_clean(&app);
}

// ---- 13. sessions end; deletion is immediate ----

#[tokio::test]
async fn refresh_cannot_pass_the_absolute_session_lifetime() {
    let app = TestApp::spawn().await;
    let t0 = app.clock_now();
    let (mut token, _) = app.login("long").await;
    let app = &app;
    let refresh = |t: String| async move {
        app.send(app.client.post(app.url("/api/auth/refresh")), Some(&t))
            .await
    };
    for _ in 0..4 {
        app.clock.advance(chrono::Duration::days(6));
        let (s, b) = refresh(token.clone()).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        token = b["token"].as_str().unwrap().to_string();
    }
    // day 29: the fresh token ends with the session, at day 30
    app.clock.advance(chrono::Duration::days(5));
    let (s, b) = refresh(token.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let exp = chrono::DateTime::parse_from_rfc3339(b["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(exp, t0 + 30 * 86_400, "{b}");
    token = b["token"].as_str().unwrap().to_string();
    app.clock.advance(chrono::Duration::days(1));
    let (s, b) = refresh(token.clone()).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app.get("/api/me", Some(&token)).await;
    assert_error(s, &b, 401, "unauthorized");
    // a new login starts a new session
    let (token, _) = app.login("long").await;
    let (s, _) = refresh(token).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn account_deletion_ends_every_token_at_once() {
    let app = TestApp::spawn().await;
    let (a, _) = app.login("gone").await;
    let (b, _) = app.login("gone").await;
    // both tokens known (cached)
    assert_eq!(app.get("/api/me", Some(&a)).await.0, StatusCode::OK);
    assert_eq!(app.get("/api/me", Some(&b)).await.0, StatusCode::OK);
    // requests racing the deletion cannot bring the account back
    let racing = (0..20).map(|_| app.get("/api/me", Some(&b)));
    let (_, deleted) = tokio::join!(
        futures_util::future::join_all(racing),
        app.delete("/api/me", Some(&a))
    );
    assert_eq!(deleted.0, StatusCode::NO_CONTENT, "{}", deleted.1);
    for t in [&a, &b] {
        let (s, body) = app.get("/api/me", Some(t)).await;
        assert_error(s, &body, 401, "unauthorized");
        let (s, body) = app
            .send(app.client.post(app.url("/api/auth/refresh")), Some(t))
            .await;
        assert_error(s, &body, 401, "unauthorized");
    }
}

// ---- 12. the WebSocket re-checks every chat frame ----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(app: &TestApp, token: &str) -> Ws {
    let url = format!(
        "{}?token={token}",
        app.url("/api/chat/ws").replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connects")
        .0
}

async fn ws_chat(ws: &mut Ws, message: &str) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type": "chat", "message": message})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
}

/// The next frame that ends an exchange (done or error); None when the
/// server closed the socket.
async fn ws_end(ws: &mut Ws) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")?;
        match msg {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] != "delta" {
                    return Some(v);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn websocket_chat_frames_are_rate_limited() {
    let app = TestApp::builder()
        .config(|c| c.rate_limit.per_user_per_minute = 4)
        .spawn()
        .await;
    let (token, _) = app.login("wsrl").await;
    let mut ws = ws_connect(&app, &token).await; // one request of four
    let mut ends = vec![];
    for i in 0..5 {
        ws_chat(&mut ws, &format!("m{i}")).await;
        ends.push(ws_end(&mut ws).await.expect("an answer"));
    }
    let limited: Vec<&Value> = ends
        .iter()
        .filter(|f| f["type"] == "error" && f["error"]["code"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 2, "{ends:?}");
    assert!(limited[0]["error"]["retry_after"].as_u64().unwrap() >= 1);
    assert_eq!(
        ends.iter().filter(|f| f["type"] == "done").count(),
        3,
        "{ends:?}"
    );
}

#[tokio::test]
async fn websocket_frames_after_deletion_or_expiry_are_refused_and_closed() {
    let app = TestApp::builder()
        .config(|c| c.auth.token_ttl_secs = 3600)
        .spawn()
        .await;
    // deleted while the socket is open
    let (token, uid) = app.login("wsdel").await;
    let mut ws = ws_connect(&app, &token).await;
    ws_chat(&mut ws, "before").await;
    assert_eq!(ws_end(&mut ws).await.unwrap()["type"], "done");
    let (s, _) = app.delete("/api/me", Some(&token)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    ws_chat(&mut ws, "after deletion").await;
    let f = ws_end(&mut ws).await.expect("an error frame");
    assert_eq!(f["error"]["code"], "unauthorized", "{f}");
    assert!(ws_end(&mut ws).await.is_none(), "then closed");
    assert_eq!(
        sql_i64(
            &app,
            &format!("SELECT count(*) FROM sessions WHERE user_id = '{uid}'")
        ),
        0,
        "nothing created under the deleted account"
    );
    // a token that expires while the socket is open
    let (token, _) = app.login("wsexp").await;
    let mut ws = ws_connect(&app, &token).await;
    app.clock.advance(chrono::Duration::seconds(3601));
    ws_chat(&mut ws, "after expiry").await;
    let f = ws_end(&mut ws).await.expect("an error frame");
    assert_eq!(f["error"]["code"], "unauthorized", "{f}");
    assert!(ws_end(&mut ws).await.is_none(), "then closed");
}

// ---- 2. metric series stay bounded ----

#[tokio::test]
async fn custom_methods_do_not_grow_the_metric_series() {
    let app = TestApp::spawn().await;
    // warm every series a probe can touch
    for m in ["M1AAAA", "M1AAAB"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let _ = app
            .client
            .request(method, app.url("/api/health"))
            .send()
            .await;
    }
    let before = app.metrics().await.lines().count();
    for i in 0..50 {
        let name = format!("M1{}{i}", "A".repeat(2000));
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let res = app
            .client
            .request(method, app.url("/api/health"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
        let method = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        let _ = app
            .client
            .request(method, app.url(&format!("/no/such/path/{i}")))
            .send()
            .await;
    }
    let text = app.metrics().await;
    assert!(!text.contains("M1AAAA"), "a custom method became a label");
    assert!(!text.contains("/no/such/path"), "a raw path became a label");
    assert!(
        text.lines().count() <= before + 40,
        "series grew from {before} to {} lines",
        text.lines().count()
    );
}

// ---- 14. signed-URL tokens never reach the log ----

#[tokio::test]
async fn the_access_log_names_route_templates_not_signed_url_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [log]\nlevel = \"info\"\n\
             [auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\n"
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("server.log");
    let server = ServeGuard::start_logged(dir.path(), &base, Some(&log)).await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/auth/wechat"))
        .json(&json!({"code": "dev:logged"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let body = b"\x89PNG\r\n\x1a\n-bytes";
    let presign: Value = client
        .post(format!("{base}/api/upload/presign"))
        .bearer_auth(token)
        .json(&json!({"filename": "a.png", "content_type": "image/png", "size": body.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put_url = presign["url"].as_str().expect("a url").to_string();
    let mut put = client.put(&put_url).body(body.to_vec());
    if let Some(h) = presign["headers"].as_object() {
        for (k, v) in h {
            put = put.header(k, v.as_str().unwrap());
        }
    }
    assert!(put.send().await.unwrap().status().is_success());
    let commit: Value = client
        .post(format!("{base}/api/upload/commit"))
        .bearer_auth(token)
        .json(&json!({"upload_id": presign["upload_id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let get_url = commit["media"]["url"]
        .as_str()
        .expect("a media url")
        .to_string();
    assert!(client
        .get(&get_url)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    // A clean stop writes out every queued access line (a SIGKILL could
    // come before the log thread wrote the last ones on a busy machine).
    let mut server = server;
    server.terminate(std::time::Duration::from_secs(30));
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let secret_of = |url: &str| {
        url.split('?')
            .next()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    };
    for url in [&put_url, &get_url] {
        let t = secret_of(url);
        assert!(t.len() > 16, "{url}");
        assert!(!text.contains(&t), "a signed-URL token is in the log");
    }
    assert!(text.contains("/api/upload/local/{token}"), "{text}");
}

// ---- 3. health does not call storage on every probe ----

#[tokio::test]
async fn health_probes_share_one_storage_check_per_interval() {
    use crate::fakes::s3::FakeS3;
    let fake = FakeS3::start().await;
    let s3 = fake.config();
    let app = TestApp::builder()
        .config(|c| {
            c.storage.kind = "s3".into();
            c.storage.s3 = s3;
        })
        .spawn()
        .await;
    let calls = || fake.seen().len();
    let before = calls();
    let probes = (0..30).map(|_| app.get("/api/health", None));
    for (s, b) in futures_util::future::join_all(probes).await {
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["storage"], "ok");
    }
    for _ in 0..30 {
        assert_eq!(app.get("/api/health", None).await.0, StatusCode::OK);
    }
    assert!(
        calls() - before <= 1,
        "{} storage calls for 60 probes",
        calls() - before
    );
}

// ---- 11. upstream cost bounded per message ----

#[tokio::test]
async fn max_tokens_is_sent_and_context_is_bounded_by_size() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(vec![fake.provider(5)], |c| {
        c.llm.context_messages = 20;
        c.llm.context_max_chars = 60;
    })
    .await;
    let (token, _) = app.login("bounded").await;
    let mut sid = Value::Null;
    for i in 0..4 {
        let mut body = json!({"message": format!("question number {i} padded to thirty")});
        if !sid.is_null() {
            body["session_id"] = sid.clone();
        }
        let (s, b) = app.post("/api/chat", Some(&token), body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        sid = b["session_id"].clone();
    }
    let reqs = fake.requests();
    assert!(
        reqs.iter().all(|r| r.body["max_tokens"] == 1024),
        "default cap sent"
    );
    let last = &reqs.last().unwrap().body["messages"];
    let msgs = last.as_array().unwrap();
    let (current, context) = msgs.split_last().unwrap();
    assert!(current["content"].as_str().unwrap().contains("number 3"));
    let chars: usize = context
        .iter()
        .map(|m| m["content"].as_str().unwrap().chars().count())
        .sum();
    assert!(chars <= 60, "context of {chars} chars: {last}");
    assert!(!context.is_empty(), "the newest earlier messages still go");
    assert!(
        context.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("reply to: question number 2"),
        "{last}"
    );

    let app = app_with(vec![fake.provider(5)], |c| c.llm.max_output_tokens = 77).await;
    let (token, _) = app.login("capped").await;
    app.post("/api/chat", Some(&token), json!({"message": "x"}))
        .await;
    assert_eq!(fake.requests().last().unwrap().body["max_tokens"], 77);
}

// ---- 1. PDF decompression bombs ----

/// Writes a raw DEFLATE stream (one fixed-Huffman block) bit by bit.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn new() -> Self {
        Bits {
            out: vec![],
            acc: 0,
            n: 0,
        }
    }
    /// `len` bits of `v`, least significant first (header fields, extra bits).
    fn lsb(&mut self, v: u32, len: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A Huffman code: most significant bit first.
    fn code(&mut self, v: u32, len: u32) {
        let mut r = 0;
        for i in 0..len {
            r |= ((v >> i) & 1) << (len - 1 - i);
        }
        self.lsb(r, len);
    }
    fn literal(&mut self, b: u8) {
        if b < 144 {
            self.code(0x30 + b as u32, 8)
        } else {
            self.code(0x190 + (b as u32 - 144), 9)
        }
    }
    /// Copy 258 bytes from `dist` back.
    fn copy258(&mut self, dist: u32) {
        const BASE: [u32; 30] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
            1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
        ];
        self.code(0xC5, 8); // length code 285 = 258
        let c = BASE.iter().rposition(|b| *b <= dist).unwrap() as u32;
        self.code(c, 5);
        let extra = if c < 4 { 0 } else { c / 2 - 1 };
        self.lsb(dist - BASE[c as usize], extra);
    }
    fn finish(mut self) -> Vec<u8> {
        self.code(0, 7); // end of block
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for x in chunk {
            a += *x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn zlib(deflate: Vec<u8>, adler: u32) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    out.extend(deflate);
    out.extend(adler.to_be_bytes());
    out
}

/// zlib(zlib(`n` zero bytes)): a few tens of KB that inflate twice to `n`.
fn double_flate_bomb(n: u64) -> Vec<u8> {
    let copies = (n - 1) / 258;
    let mut inner = Bits::new();
    inner.lsb(1, 1); // BFINAL
    inner.lsb(1, 2); // fixed Huffman
    inner.literal(0);
    for _ in 0..copies {
        inner.copy258(1);
    }
    let produced = 1 + copies * 258;
    // adler32 of zeros: a = 1, b = count
    let inner = zlib(inner.finish(), (((produced % 65521) as u32) << 16) | 1);
    // the inner stream repeats every 13 bytes: literals, then copies at 13
    let mut outer = Bits::new();
    outer.lsb(1, 1);
    outer.lsb(1, 2);
    let mut i = 0;
    while i < inner.len() {
        if i >= 13 && i + 258 <= inner.len() && inner[i..i + 258] == inner[i - 13..i + 245] {
            outer.copy258(13);
            i += 258;
        } else {
            outer.literal(inner[i]);
            i += 1;
        }
    }
    zlib(outer.finish(), adler32(&inner))
}

fn bomb_pdf(n: u64) -> Vec<u8> {
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let mut content = Stream::new(
        dictionary! { "Filter" => vec!["FlateDecode".into(), "FlateDecode".into()] },
        double_flate_bomb(n),
    );
    content.allows_compression = false;
    let content_id = doc.add_object(content);
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = vec![];
    doc.save_to(&mut out).unwrap();
    out
}

#[test]
fn the_bomb_builder_makes_what_it_says() {
    // small enough to check by inflating it with lopdf itself
    let pdf = bomb_pdf(1 << 20);
    let doc = lopdf::Document::load_mem(&pdf).unwrap();
    let page = *doc.get_pages().values().next().unwrap();
    let content = doc.get_page_content(page).unwrap();
    // (lopdf ends page content with a newline)
    let zeros = content.iter().filter(|b| **b == 0).count();
    assert_eq!(zeros, 1 + ((1 << 20) - 1) / 258 * 258);
    assert!(pdf.len() < 20_000, "{} bytes", pdf.len());
}

#[tokio::test]
async fn a_pdf_decompression_bomb_is_refused_while_the_server_stays_up() {
    use crate::media::upload;
    let fake = FakeOpenAi::start().await;
    let app = app_with(vec![fake.provider(5)], |_| {}).await;
    let (token, _) = app.login("bomber").await;
    let bomb = bomb_pdf(4 << 30); // 4 GiB of zeros behind two FlateDecodes
    assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
    let started = std::time::Instant::now();
    let probe = async {
        let mut worst = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(3) {
            let t = std::time::Instant::now();
            let (s, _) = app.get("/api/health", None).await;
            assert_eq!(s, StatusCode::OK);
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    };
    let uploads = async {
        let a = upload(&app, &token, "bomb.pdf", "application/pdf", &bomb).await;
        let b = upload(&app, &token, "bomb2.pdf", "application/pdf", &bomb).await;
        (a, b)
    };
    let (worst, (id, _)) = tokio::join!(probe, uploads);
    assert!(worst < Duration::from_secs(1), "health took {worst:?}");
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "summarize", "attachments": [id]}),
        )
        .await;
    let err = assert_error(s, &b, 422, "validation");
    assert_eq!(err["field"], "attachments[0]", "{b}");
    assert!(
        err["message"].as_str().unwrap().contains("bomb.pdf"),
        "names the file: {b}"
    );
    assert_eq!(fake.count(), 0, "nothing sent upstream");
}

// ---- 6. deleting a conversation while its reply is generated ----

#[tokio::test]
async fn deleting_a_session_or_account_mid_reply_releases_the_hold_at_once() {
    use futures_util::StreamExt;
    let fake = FakeOpenAi::start().await;
    let app = app_with(vec![fake.provider(10)], |_| {}).await;
    for delete_account in [false, true] {
        fake.set(Behavior::Gated);
        let name = format!("del-{delete_account}");
        let (token, uid) = paying_user(&app, &name, 300).await;
        let res = app
            .client
            .post(app.url("/api/chat/stream"))
            .bearer_auth(&token)
            .json(&json!({"message": "one two three"}))
            .send()
            .await
            .unwrap();
        let mut body = res.bytes_stream();
        let _first = body.next().await;
        assert_eq!(balance(&app, &token).await, 200, "held while generating");
        if delete_account {
            let (s, _) = app.delete("/api/me", Some(&token)).await;
            assert_eq!(s, StatusCode::NO_CONTENT);
        } else {
            let (_, list) = app.get("/api/sessions", Some(&token)).await;
            let sid = list["items"][0]["id"].as_str().unwrap().to_string();
            let (s, b) = app
                .delete(&format!("/api/sessions/{sid}"), Some(&token))
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
        }
        fake.open_gate();
        let rest: Vec<u8> = body
            .map(|c| c.map(|b| b.to_vec()).unwrap_or_default())
            .concat()
            .await;
        let text = String::from_utf8_lossy(&rest);
        assert!(text.contains("event: error"), "{text}");
        assert_eq!(open_holds(&app), 0, "released at once, not at a restart");
        assert_eq!(
            sql_i64(
                &app,
                &format!("SELECT balance_fen - held_fen FROM user_quotas WHERE user_id = '{uid}'")
            ),
            300,
            "spendable again, nothing charged"
        );
        assert_audit_clean(&app);
    }
}

// ---- 4. per-user storage quota ----

#[tokio::test]
async fn presigns_stop_at_the_users_storage_quota() {
    let app = TestApp::builder()
        .config(|c| {
            c.storage.max_bytes_per_user = 1000;
            c.storage.max_pending_uploads_per_user = 3;
        })
        .spawn()
        .await;
    let (token, _) = app.login("hoarder").await;
    let presign = |size: u64| {
        app.post(
            "/api/upload/presign",
            Some(&token),
            json!({"filename": "a.png", "content_type": "image/png", "size": size}),
        )
    };
    for _ in 0..3 {
        let (s, b) = presign(100).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, b) = presign(100).await;
    let err = assert_error(s, &b, 403, "storage_quota_exceeded");
    assert_eq!(err["max_pending_uploads_per_user"], 3, "{b}");
    // bytes: pending count lifted, 300 of 1000 bytes pending
    let app2 = TestApp::builder()
        .config(|c| c.storage.max_bytes_per_user = 1000)
        .spawn()
        .await;
    let (token2, _) = app2.login("big").await;
    let presign2 = |size: u64| {
        app2.post(
            "/api/upload/presign",
            Some(&token2),
            json!({"filename": "a.png", "content_type": "image/png", "size": size}),
        )
    };
    assert_eq!(presign2(900).await.0, StatusCode::OK);
    let (s, b) = presign2(101).await;
    let err = assert_error(s, &b, 403, "storage_quota_exceeded");
    assert_eq!(err["max_bytes_per_user"], 1000, "{b}");
    assert_eq!(
        presign2(100).await.0,
        StatusCode::OK,
        "exactly at the limit"
    );
    // other users are not affected
    let (other, _) = app2.login("other").await;
    let (s, _) = app2
        .post(
            "/api/upload/presign",
            Some(&other),
            json!({"filename": "a.png", "content_type": "image/png", "size": 900}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

// ---- 5. batch describe jobs: charged, bounded per user ----

#[tokio::test]
async fn describe_jobs_cost_a_message_per_image_and_are_bounded_per_user() {
    use crate::media::{upload, wait_job, PNG};
    let fake = FakeOpenAi::start().await;
    let mut p = fake.provider(5);
    p.vision = true;
    let app = app_with(vec![p], |c| c.jobs.max_pending_per_user = 1).await;
    let (token, uid) = paying_user(&app, "describer", 250).await;
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(upload(&app, &token, &format!("{i}.png"), "image/png", PNG).await);
    }
    let batch = |ids: Vec<String>| {
        app.post(
            "/api/files/batch",
            Some(&token),
            json!({"media_ids": ids, "action": "describe"}),
        )
    };
    // three images cost 300 fen: refused before anything runs
    let (s, b) = batch(ids.clone()).await;
    assert_error(s, &b, 402, "quota_exhausted");
    assert_eq!(fake.count(), 0);
    admin(&app, &["admin", "grant", "--user", &uid, "--fen", "250"]);
    // one job at a time per user
    fake.set(Behavior::Gated);
    let (s, b) = batch(ids.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let job = b["id"].as_str().unwrap().to_string();
    assert_eq!(balance(&app, &token).await, 200, "all three held");
    let (s, b) = batch(vec![ids[0].clone()]).await;
    assert_error(s, &b, 429, "too_many_jobs");
    fake.open_gate();
    let done = wait_job(&app, &token, &job).await;
    assert_eq!(done["progress"]["done"], 3, "{done}");
    assert_eq!(balance(&app, &token).await, 200, "charged 300");
    assert_eq!(
        sql_i64(&app, "SELECT count(*) FROM ledger WHERE kind = 'charge'"),
        3
    );
    // a failed item is released
    fake.set(Behavior::Status(500));
    let (s, b) = batch(vec![ids[0].clone()]).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let done = wait_job(&app, &token, b["id"].as_str().unwrap()).await;
    assert_eq!(done["progress"]["failed"], 1, "{done}");
    assert_eq!(balance(&app, &token).await, 200, "nothing charged for it");
    assert_eq!(open_holds(&app), 0);
    assert_audit_clean(&app);
}

// ---- 19. no RSA timing side channel in the binary ----

#[test]
fn the_binary_carries_no_rustcrypto_rsa_or_aes_gcm() {
    // RUSTSEC-2023-0071: `rsa` has no fixed release. Production signing,
    // verification, AES-256-GCM and HS256 come from ring; `rsa`/`aes-gcm`/
    // `jsonwebtoken` may only build the tests' fakes.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for krate in ["rsa", "aes-gcm", "jsonwebtoken"] {
        let out = std::process::Command::new(&cargo)
            .args(["tree", "--offline", "--locked", "-e", "normal", "-i", krate])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.trim().is_empty(),
            "{krate} is in the binary's dependency tree:\n{text}"
        );
    }
}
