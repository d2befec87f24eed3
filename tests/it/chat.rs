//! Chat against a fake OpenAI-compatible upstream: context, free quota,
//! paid overage, refunds, idempotency, concurrency, live settings, audit.

use std::time::Duration;

use chrono::TimeZone;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi, API_KEY};

pub(crate) async fn app_with(fake: &FakeOpenAi, timeout_secs: u64) -> TestApp {
    let provider = fake.provider(timeout_secs);
    TestApp::builder()
        .config(|c| {
            c.llm.providers = vec![provider];
            c.llm.system_prompt = "You are helpful.".into();
            c.llm.context_messages = 4;
            // these tests fail one provider on purpose; breaker tests live in streaming.rs
            c.llm.breaker_failures = 1000;
        })
        .spawn()
        .await
}

async fn chat(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post("/api/chat", Some(token), body).await
}

pub(crate) async fn quota(app: &TestApp, token: &str) -> Value {
    let (s, b) = app.get("/api/me", Some(token)).await;
    assert_eq!(s, StatusCode::OK);
    b["quota"].clone()
}

pub(crate) fn admin(app: &TestApp, args: &[&str]) -> String {
    let out = app.cli(args);
    assert!(
        out.status.success(),
        "admin {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

pub(crate) fn assert_audit_clean(app: &TestApp) {
    let out = app.cli(&["admin", "audit"]);
    assert!(out.status.success(), "audit failed: {}", stdout(&out));
    assert!(stdout(&out).contains("audit ok"));
}

#[tokio::test]
async fn reply_is_stored_and_context_is_sent() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&fake, 5).await;
    let (token, _) = app.login("alice").await;
    let (s, first) = chat(&app, &token, json!({"message": "first question"})).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["message"]["content"], "reply to: first question");
    assert_eq!(first["message"]["role"], "assistant");
    assert_eq!(first["message"]["status"], "complete");
    assert_eq!(first["message"]["model"], "gpt-4o-mini");
    assert_eq!(first["quota"]["charged_fen"], 0);
    let sid = first["session_id"].as_str().unwrap();

    for i in 0..3 {
        let (s, b) = chat(
            &app,
            &token,
            json!({"message": format!("q{i}"), "session_id": sid, "model": "gpt-4o"}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["session_id"], sid);
    }
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let last = &reqs[3].body;
    assert_eq!(last["model"], "gpt-4o");
    let msgs: Vec<(String, String)> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().into(),
                m["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    // system prompt, then the last 4 stored messages, then the new one
    let want: Vec<(String, String)> = [
        ("system", "You are helpful."),
        ("user", "q0"),
        ("assistant", "reply to: q0"),
        ("user", "q1"),
        ("assistant", "reply to: q1"),
        ("user", "q2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(msgs, want);

    // the conversation is listed with its title and messages
    let (_, sessions) = app.get("/api/sessions", Some(&token)).await;
    assert_eq!(sessions["items"][0]["id"], sid);
    assert_eq!(sessions["items"][0]["title"], "first question");
    let (_, msgs) = app
        .get(&format!("/api/sessions/{sid}/messages"), Some(&token))
        .await;
    assert_eq!(msgs["items"].as_array().unwrap().len(), 8);
    assert_eq!(msgs["items"][0]["content"], "first question");
    assert_eq!(msgs["items"][7]["content"], "reply to: q2");
}

#[tokio::test]
async fn unknown_model_and_foreign_session() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&fake, 5).await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let (s, b) = chat(&app, &alice, json!({"message": "hi", "model": "gpt-9"})).await;
    assert_error(s, &b, 400, "unknown_model");
    let (_, a) = chat(&app, &alice, json!({"message": "mine"})).await;
    let sid = a["session_id"].as_str().unwrap();
    let (s, b) = chat(&app, &bob, json!({"message": "hi", "session_id": sid})).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .get(&format!("/api/sessions/{sid}/messages"), Some(&bob))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .delete(&format!("/api/sessions/{sid}"), Some(&bob))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = chat(&app, &alice, json!({"message": "   "})).await;
    assert_error(s, &b, 422, "validation");
    assert_eq!(fake.count(), 1, "no upstream call for refused requests");
    // bob's failed attempts charged nothing
    assert_eq!(quota(&app, &bob).await["free_used_today"], 0);
    // the owner can delete it
    assert_eq!(
        app.delete(&format!("/api/sessions/{sid}"), Some(&alice))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (s, _) = app
        .get(&format!("/api/sessions/{sid}/messages"), Some(&alice))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn twentieth_is_free_twenty_first_is_charged_and_402_skips_upstream() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&fake, 5).await;
    let (token, uid) = app.login("alice").await;
    admin(
        &app,
        &[
            "admin",
            "grant",
            "--user",
            &uid,
            "--fen",
            "150",
            "--reason",
            "test credit",
        ],
    );
    for i in 1..=20 {
        let (s, b) = chat(&app, &token, json!({"message": format!("m{i}")})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["quota"]["charged_fen"], 0, "message {i} must be free");
        assert_eq!(b["quota"]["free_remaining"], 20 - i);
    }
    let (s, b) = chat(&app, &token, json!({"message": "m21"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["quota"]["charged_fen"], 100);
    assert_eq!(b["quota"]["balance_fen"], 50);
    let q = quota(&app, &token).await;
    assert_eq!(
        q,
        json!({"free_limit": 20, "free_used_today": 20, "free_remaining": 0, "balance_fen": 50, "price_fen": 100})
    );

    let calls = fake.count();
    let (s, b) = chat(&app, &token, json!({"message": "m22"})).await;
    let err = assert_error(s, &b, 402, "quota_exhausted");
    assert_eq!(err["price_fen"], 100);
    assert_eq!(err["topup_amounts_fen"], json!([600, 1000, 3000]));
    assert_eq!(fake.count(), calls, "402 must not call the upstream");
    assert_eq!(quota(&app, &token).await["balance_fen"], 50);

    let show = admin(&app, &["admin", "user", "show", &uid]);
    assert!(show.contains("50 fen"), "{show}");
    assert!(
        show.contains("charge") && show.contains("test credit"),
        "{show}"
    );
    assert_audit_clean(&app);
}

#[tokio::test]
async fn free_count_rolls_over_at_local_midnight() {
    let fake = FakeOpenAi::start().await;
    let provider = fake.provider(5);
    // 23:59 in UTC+8
    let app = TestApp::builder()
        .at(chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 15, 59, 0)
            .unwrap())
        .config(|c| c.llm.providers = vec![provider])
        .spawn()
        .await;
    admin(&app, &["admin", "set-free-quota", "2"]);
    let (token, _) = app.login("alice").await;
    for _ in 0..2 {
        assert_eq!(
            chat(&app, &token, json!({"message": "x"})).await.0,
            StatusCode::OK
        );
    }
    let (s, b) = chat(&app, &token, json!({"message": "x"})).await;
    assert_error(s, &b, 402, "quota_exhausted");
    // 23:59:59 local: still the same day
    app.clock.advance(chrono::Duration::seconds(59));
    assert_eq!(
        chat(&app, &token, json!({"message": "x"})).await.0,
        StatusCode::PAYMENT_REQUIRED
    );
    // local midnight (16:00 UTC): a new day
    app.clock.advance(chrono::Duration::seconds(1));
    let q = quota(&app, &token).await;
    assert_eq!(q["free_used_today"], 0);
    assert_eq!(q["free_remaining"], 2);
    let (s, b) = chat(&app, &token, json!({"message": "x"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["quota"]["free_remaining"], 1);
}

#[tokio::test]
async fn upstream_failure_and_timeout_refund() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&fake, 1).await;
    let (token, uid) = app.login("alice").await;
    admin(&app, &["admin", "grant", "--user", &uid, "--fen", "100"]);
    // one free message, then paid ones: both kinds must be given back
    admin(&app, &["admin", "set-free-quota", "1"]);
    for behavior in [
        Behavior::Status(500),
        Behavior::Status(429),
        Behavior::Status(401),
    ] {
        fake.set(behavior.clone());
        let (s, b) = chat(&app, &token, json!({"message": "fails"})).await;
        let err = assert_error(s, &b, 502, "upstream_error");
        assert!(!err.to_string().contains(API_KEY), "key leaked: {err}");
        let q = quota(&app, &token).await;
        assert_eq!(
            (q["free_used_today"].as_i64(), q["balance_fen"].as_i64()),
            (Some(0), Some(100)),
            "{behavior:?}"
        );
    }
    fake.set(Behavior::Slow(Duration::from_secs(3)));
    let (s, b) = chat(&app, &token, json!({"message": "slow"})).await;
    assert_error(s, &b, 504, "upstream_error");
    assert_eq!(quota(&app, &token).await["free_used_today"], 0);

    // paid path: use the free one, then fail a paid one
    fake.set(Behavior::Echo);
    assert_eq!(
        chat(&app, &token, json!({"message": "free"})).await.0,
        StatusCode::OK
    );
    fake.set(Behavior::Status(503));
    let (s, _) = chat(&app, &token, json!({"message": "paid fails"})).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(quota(&app, &token).await["balance_fen"], 100);
    // failed turns leave no messages behind
    let (_, sessions) = app.get("/api/sessions", Some(&token)).await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 1);
    // and nothing was ledgered but the grant
    let conn = super::common::TestDb::of(&app);
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM ledger WHERE user_id = ?1",
            [&uid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1);
    assert_audit_clean(&app);
}

#[tokio::test]
async fn retried_client_msg_id_is_answered_from_storage() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&fake, 5).await;
    let (token, uid) = app.login("alice").await;
    admin(&app, &["admin", "set-free-quota", "0"]);
    admin(&app, &["admin", "grant", "--user", &uid, "--fen", "500"]);
    let body = json!({"message": "pay once", "client_msg_id": "c-1"});
    let (s1, b1) = chat(&app, &token, body.clone()).await;
    assert_eq!(s1, StatusCode::OK, "{b1}");
    let (s2, b2) = chat(&app, &token, body.clone()).await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(b1["message"], b2["message"]);
    assert_eq!(b1["session_id"], b2["session_id"]);
    assert_eq!(fake.count(), 1, "the retry must not call the upstream");
    assert_eq!(
        quota(&app, &token).await["balance_fen"],
        400,
        "charged once"
    );
    // a failed attempt can be retried with the same id
    fake.set(Behavior::Status(500));
    let retry = json!({"message": "flaky", "client_msg_id": "c-2"});
    assert_eq!(
        chat(&app, &token, retry.clone()).await.0,
        StatusCode::BAD_GATEWAY
    );
    fake.set(Behavior::Echo);
    let (s, b) = chat(&app, &token, retry).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(quota(&app, &token).await["balance_fen"], 300);
    // client_msg_ids are per user
    let (bob, _) = app.login("bob").await;
    let (s, b) = chat(&app, &bob, body).await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED, "{b}");
    assert_audit_clean(&app);
}

#[tokio::test]
async fn concurrent_requests_never_overspend() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Slow(Duration::from_millis(50)));
    let app = app_with(&fake, 5).await;
    let (token, uid) = app.login("alice").await;
    admin(&app, &["admin", "set-free-quota", "2"]);
    admin(&app, &["admin", "grant", "--user", &uid, "--fen", "500"]);
    // k = 2 free + 5 paid = 7 messages left
    let mut tasks = vec![];
    for i in 0..20 {
        let client = app.client.clone();
        let url = app.url("/api/chat");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"message": format!("c{i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = vec![];
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        13,
        "{statuses:?}"
    );
    let q = quota(&app, &token).await;
    assert_eq!(q["balance_fen"], 0);
    assert_eq!(q["free_remaining"], 0);
    assert_eq!(fake.count(), 7);
    assert_audit_clean(&app);
}

#[tokio::test]
async fn price_and_quota_changes_are_live() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&fake, 5).await;
    let (token, uid) = app.login("alice").await;
    admin(&app, &["admin", "set-free-quota", "1"]);
    admin(&app, &["admin", "set-price", "30"]);
    admin(&app, &["admin", "grant", "--user", &uid, "--fen", "100"]);
    let q = quota(&app, &token).await;
    assert_eq!(
        (q["free_limit"].as_i64(), q["price_fen"].as_i64()),
        (Some(1), Some(30))
    );
    assert_eq!(
        chat(&app, &token, json!({"message": "a"})).await.1["quota"]["charged_fen"],
        0
    );
    assert_eq!(
        chat(&app, &token, json!({"message": "b"})).await.1["quota"]["charged_fen"],
        30
    );
    admin(&app, &["admin", "set-price", "45"]);
    let (_, b) = chat(&app, &token, json!({"message": "c"})).await;
    assert_eq!(b["quota"]["charged_fen"], 45);
    assert_eq!(b["quota"]["balance_fen"], 25);
    admin(&app, &["admin", "set-free-quota", "5"]);
    let (_, b) = chat(&app, &token, json!({"message": "d"})).await;
    assert_eq!(b["quota"]["charged_fen"], 0);
    assert_eq!(b["quota"]["free_remaining"], 3);
    assert_audit_clean(&app);
}

#[tokio::test]
async fn admin_grant_rules_and_audit_detects_tampering() {
    let app = TestApp::spawn().await;
    let (_, uid) = app.login("alice").await;
    admin(
        &app,
        &[
            "admin", "grant", "--user", &uid, "--fen", "100", "--reason", "gift",
        ],
    );
    let out = app.cli(&[
        "admin", "grant", "--user", &uid, "--fen", "-101", "--reason", "oops",
    ]);
    assert!(!out.status.success(), "went below zero");
    assert!(stderr(&out).contains("below zero"), "{}", stderr(&out));
    admin(
        &app,
        &[
            "admin", "grant", "--user", &uid, "--fen", "-100", "--reason", "clawback",
        ],
    );
    let out = app.cli(&["admin", "grant", "--user", "usr_nobody", "--fen", "5"]);
    assert!(!out.status.success());
    assert_audit_clean(&app);

    // the ledger is append-only at the database level
    let conn = super::common::TestDb::of(&app);
    assert!(conn.execute("UPDATE ledger SET delta_fen = 1", []).is_err());
    assert!(conn.execute("DELETE FROM ledger", []).is_err());
    // a balance changed behind the ledger's back is caught
    conn.execute(
        "UPDATE user_quotas SET balance_fen = 999 WHERE user_id = ?1",
        [&uid],
    )
    .unwrap();
    let out = app.cli(&["admin", "audit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&uid) && stdout(&out).contains("999"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn message_pages_run_newest_to_oldest() {
    let app = TestApp::spawn().await;
    let (token, _) = app.login("alice").await;
    let (_, first) = chat(&app, &token, json!({"message": "m0"})).await;
    let sid = first["session_id"].as_str().unwrap().to_string();
    for i in 1..5 {
        chat(
            &app,
            &token,
            json!({"message": format!("m{i}"), "session_id": sid}),
        )
        .await;
    }
    // 10 messages, pages of 4: [m3 reply..m4 reply], …
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/sessions/{sid}/messages?limit=4&cursor={c}"),
            None => format!("/api/sessions/{sid}/messages?limit=4"),
        };
        let (s, page) = app.get(&path, Some(&token)).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let items: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect();
        seen.splice(0..0, items);
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..5)
        .flat_map(|i| [format!("m{i}"), format!("echo: m{i}")])
        .collect();
    assert_eq!(seen, want);
    let (s, b) = app
        .get(
            &format!("/api/sessions/{sid}/messages?limit=0"),
            Some(&token),
        )
        .await;
    assert_error(s, &b, 422, "validation");

    // sessions: most recently active first
    app.clock.advance(chrono::Duration::seconds(1));
    let (_, other) = chat(
        &app,
        &token,
        json!({"message": "another", "new_session": true}),
    )
    .await;
    let (_, list) = app.get("/api/sessions?limit=1", Some(&token)).await;
    assert_eq!(list["items"][0]["id"], other["session_id"]);
    let c = list["next_cursor"].as_str().unwrap();
    let (_, list2) = app
        .get(&format!("/api/sessions?limit=1&cursor={c}"), Some(&token))
        .await;
    assert_eq!(list2["items"][0]["id"], sid.as_str());
    assert!(list2["next_cursor"].is_null());
}

/// Kills the real binary with SIGKILL while a paid reply is in flight; the
/// next start releases the hold and marks the reply failed.
#[tokio::test]
async fn reservations_left_by_a_crash_are_released_at_start() {
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Slow(Duration::from_secs(30)));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\n\
         [[llm.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"{API_KEY}\"\n\
         models = [\"gpt-4o-mini\"]\ntimeout_secs = 60\n",
        fake.base_url
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut child = ServeGuard::start(dir.path(), &base).await;

    let login: Value = client
        .post(format!("{base}/api/auth/wechat"))
        .json(&json!({"code": "dev:crash"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let uid = login["user"]["id"].as_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = run_cli(dir.path(), args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    cli(&["admin", "set-free-quota", "0"]);
    cli(&["admin", "grant", "--user", &uid, "--fen", "100"]);

    let in_flight = tokio::spawn({
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        async move {
            client
                .post(format!("{base}/api/chat"))
                .bearer_auth(token)
                .json(&json!({"message": "doomed", "client_msg_id": "k1"}))
                .send()
                .await
        }
    });
    for _ in 0..200 {
        if fake.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(fake.count(), 1, "request reached the upstream");
    let me: Value = client
        .get(format!("{base}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["quota"]["balance_fen"], 0,
        "100 fen held while in flight"
    );

    child.kill9();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the connection died with the server"
    );
    let _child = ServeGuard::start(dir.path(), &base).await;

    let me: Value = client
        .get(format!("{base}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["quota"]["balance_fen"], 100,
        "hold released, nothing charged"
    );
    let sessions: Value = client
        .get(format!("{base}/api/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = sessions["items"][0]["id"].as_str().unwrap();
    let msgs: Value = client
        .get(format!("{base}/api/sessions/{sid}/messages"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(msgs["items"][1]["status"], "failed");
    // the request can be retried under the same client_msg_id
    fake.set(Behavior::Echo);
    let retry = client
        .post(format!("{base}/api/chat"))
        .bearer_auth(&token)
        .json(&json!({"message": "doomed", "client_msg_id": "k1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    let out = run_cli(dir.path(), &["admin", "audit"], &[]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[tokio::test]
async fn conversations_and_balances_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let (token, uid) = app.login("alice").await;
    admin(&app, &["admin", "grant", "--user", &uid, "--fen", "250"]);
    let (_, first) = chat(&app, &token, json!({"message": "remember me"})).await;
    app.restart().await;
    let (s, msgs) = app
        .get(
            &format!(
                "/api/sessions/{}/messages",
                first["session_id"].as_str().unwrap()
            ),
            Some(&token),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "token still valid, data still there");
    assert_eq!(msgs["items"][1]["content"], "echo: remember me");
    let q = quota(&app, &token).await;
    assert_eq!(
        (q["balance_fen"].as_i64(), q["free_used_today"].as_i64()),
        (Some(250), Some(1))
    );
}

/// A conversation deleted while its reply is being generated: the reply
/// has nowhere to go, so the turn answers 404 and nothing is charged.
#[tokio::test]
async fn a_conversation_deleted_mid_reply_is_not_charged() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&fake, 30).await;
    let (token, uid) = app.login("dora").await;
    admin(&app, &["admin", "grant", "--user", &uid, "--fen", "300"]);
    admin(&app, &["admin", "set-free-quota", "0"]);
    fake.set(Behavior::Gated);
    let turn = {
        let request = app
            .client
            .post(app.url("/api/chat"))
            .bearer_auth(&token)
            .json(&json!({"message": "soon gone"}));
        tokio::spawn(async move {
            let res = request.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        })
    };
    while fake.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(quota(&app, &token).await["balance_fen"], 200, "100 held");
    let (_, sessions) = app.get("/api/sessions", Some(&token)).await;
    let id = sessions["items"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .delete(&format!("/api/sessions/{id}"), Some(&token))
        .await;
    assert!(s.is_success(), "{s}");
    fake.open_gate();
    let (s, b) = turn.await.unwrap();
    assert_error(s, &b, 404, "not_found");
    assert_eq!(quota(&app, &token).await["balance_fen"], 300);
    let held: i64 = super::common::TestDb::of(&app)
        .query_row(
            "SELECT count(*) FROM reservations WHERE state = 'held'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(held, 0);
    // the upstream call is spend all the same
    let calls: i64 = super::common::TestDb::of(&app)
        .query_row("SELECT count(*) FROM llm_calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(calls, 1);
    assert_audit_clean(&app);
}
