//! WeChat login against a fake jscode2session, JWT checks, account deletion
//! and rate limits.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::wechat::{FakeWechat, APP_ID, APP_SECRET};

async fn wechat_app(wx: &FakeWechat) -> TestApp {
    let base = wx.base_url.clone();
    TestApp::builder()
        .config(|c| {
            c.wechat.app_id = APP_ID.into();
            c.wechat.app_secret = APP_SECRET.into();
            c.wechat.api_base = base;
            c.wechat.timeout_secs = 1;
        })
        .spawn()
        .await
}

async fn login_code(app: &TestApp, code: &str) -> (StatusCode, Value) {
    app.post("/api/auth/wechat", None, json!({ "code": code }))
        .await
}

#[tokio::test]
async fn wechat_login_checks_params_and_repeat_logins_keep_the_user() {
    let wx = FakeWechat::start().await;
    let app = wechat_app(&wx).await;
    let (s1, b1) = login_code(&app, "ok-openid-alice").await;
    assert_eq!(s1, StatusCode::OK, "{b1}");
    let (s2, b2) = login_code(&app, "ok-openid-alice").await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(
        b1["user"]["id"], b2["user"]["id"],
        "same openid -> same user"
    );
    assert!(b1["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert!(b1["expires_at"].as_str().unwrap().ends_with('Z'));
    let (_, other) = login_code(&app, "ok-openid-bob").await;
    assert_ne!(other["user"]["id"], b1["user"]["id"]);
    // session_key is never handed out
    assert!(!b1.to_string().contains("SESSIONKEY"));

    let call = &wx.calls()[0];
    assert_eq!(call["appid"], APP_ID);
    assert_eq!(call["secret"], APP_SECRET);
    assert_eq!(call["js_code"], "ok-openid-alice");
    assert_eq!(call["grant_type"], "authorization_code");

    // the token works
    let token = b1["token"].as_str().unwrap();
    let (s, me) = app.get("/api/me", Some(token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["user"]["id"], b1["user"]["id"]);
}

#[tokio::test]
async fn unionid_is_kept() {
    let wx = FakeWechat::start().await;
    let app = wechat_app(&wx).await;
    let (s, b) = login_code(&app, "union-carol").await;
    assert_eq!(s, StatusCode::OK);
    // a later login without unionid must not erase it
    let (_, b2) = login_code(&app, "ok-carol").await;
    assert_eq!(b["user"]["id"], b2["user"]["id"]);
    let conn = super::common::TestDb::of(&app);
    let unionid: Option<String> = conn
        .query_row(
            "SELECT unionid FROM users WHERE openid = 'carol'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unionid.as_deref(), Some("u-carol"));
}

#[tokio::test]
async fn wechat_errcodes_map_to_statuses() {
    let wx = FakeWechat::start().await;
    let app = wechat_app(&wx).await;
    for (errcode, status, code) in [
        ("40029", 401, "invalid_code"),
        ("40163", 401, "invalid_code"),
        ("45011", 429, "rate_limited"),
        ("40226", 403, "forbidden"),
        ("-1", 503, "upstream_busy"),
        ("40125", 401, "invalid_code"),
    ] {
        let (s, b) = login_code(&app, &format!("err-{errcode}")).await;
        let err = assert_error(s, &b, status, code);
        assert!(
            err["message"].as_str().unwrap().contains(errcode),
            "errcode {errcode} missing from {err}"
        );
    }
    // non-JSON body and timeouts are upstream failures
    let (s, b) = login_code(&app, "html").await;
    assert_error(s, &b, 502, "upstream_error");
    let (s, b) = login_code(&app, "slow").await;
    assert_error(s, &b, 502, "upstream_error");
    // the secret never appears in what a client sees
    assert!(!b.to_string().contains(APP_SECRET));
}

#[tokio::test]
async fn unreachable_wechat_is_502() {
    let port = free_port();
    let app = TestApp::builder()
        .config(|c| {
            c.wechat.app_id = APP_ID.into();
            c.wechat.app_secret = APP_SECRET.into();
            c.wechat.api_base = format!("http://127.0.0.1:{port}");
        })
        .spawn()
        .await;
    let (s, b) = login_code(&app, "anything").await;
    let err = assert_error(s, &b, 502, "upstream_error");
    assert!(!err.to_string().contains(APP_SECRET));
}

#[tokio::test]
async fn dev_login_rules() {
    // on by default (no app id): dev codes work, others are refused
    let app = TestApp::spawn().await;
    let (a1, u1) = app.login("alice").await;
    let (_, u2) = app.login("alice").await;
    assert_eq!(u1, u2);
    assert!(!a1.is_empty());
    let (s, b) = login_code(&app, "plain-code").await;
    assert_error(s, &b, 401, "invalid_code");
    let (s, b) = login_code(&app, "dev:").await;
    assert_error(s, &b, 422, "validation");
    let (s, b) = login_code(&app, "").await;
    assert_error(s, &b, 422, "validation");

    // off once WeChat is configured: dev codes go to WeChat, which refuses them
    let wx = FakeWechat::start().await;
    let app = wechat_app(&wx).await;
    let (s, b) = login_code(&app, "dev:alice").await;
    assert_error(s, &b, 401, "invalid_code");
    assert_eq!(wx.calls().len(), 1);

    // unless turned on explicitly
    let base = wx.base_url.clone();
    let app = TestApp::builder()
        .config(|c| {
            c.wechat.app_id = APP_ID.into();
            c.wechat.app_secret = APP_SECRET.into();
            c.wechat.api_base = base;
            c.auth.dev_login = Some(true);
        })
        .spawn()
        .await;
    app.login("alice").await;
    let (s, _) = login_code(&app, "ok-real").await;
    assert_eq!(s, StatusCode::OK);
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn forged_tokens_are_rejected() {
    let app = TestApp::spawn().await;
    let (good, uid) = app.login("alice").await;
    let now = app.clock_now();
    let claims = json!({"sub": uid, "iat": now, "exp": now + 3600, "iss": "mvp28"});
    let sign = |alg: Algorithm, secret: &str, claims: &Value| {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    // sanity: a token we forge with the right key and claims is accepted,
    // so each rejection below is down to the one thing changed
    let control = sign(Algorithm::HS256, TEST_JWT_SECRET, &claims);
    let (s, _) = app.get("/api/me", Some(&control)).await;
    assert_eq!(s, StatusCode::OK);

    let mut tampered = good.clone();
    let sig_start = tampered.rfind('.').unwrap() + 1;
    let c = if &tampered[sig_start..sig_start + 1] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(sig_start..sig_start + 1, c);
    let payload_swapped = {
        let parts: Vec<&str> = good.split('.').collect();
        let other =
            json!({"sub": "usr_someoneelse", "iat": now, "exp": now + 3600, "iss": "mvp28"});
        format!("{}.{}.{}", parts[0], b64(&other), parts[2])
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not-a-jwt".into())),
        ("tampered signature", Some(tampered)),
        ("swapped payload", Some(payload_swapped)),
        (
            "other secret",
            Some(sign(
                Algorithm::HS256,
                "another-secret-0123456789abcdef0123",
                &claims,
            )),
        ),
        ("alg none", Some(none)),
        (
            "HS512",
            Some(sign(Algorithm::HS512, TEST_JWT_SECRET, &claims)),
        ),
        (
            "expired",
            Some(sign(
                Algorithm::HS256,
                TEST_JWT_SECRET,
                &json!({"sub": uid, "iat": now - 7200, "exp": now - 1, "iss": "mvp28"}),
            )),
        ),
        (
            "wrong issuer",
            Some(sign(
                Algorithm::HS256,
                TEST_JWT_SECRET,
                &json!({"sub": uid, "iat": now, "exp": now + 3600, "iss": "other"}),
            )),
        ),
        (
            "no exp",
            Some(sign(
                Algorithm::HS256,
                TEST_JWT_SECRET,
                &json!({"sub": uid, "iat": now, "iss": "mvp28"}),
            )),
        ),
        (
            "unknown user",
            Some(sign(
                Algorithm::HS256,
                TEST_JWT_SECRET,
                &json!({"sub": "usr_nobody", "iat": now, "exp": now + 3600, "iss": "mvp28"}),
            )),
        ),
    ];
    for (name, token) in cases {
        let mut req = app.client.get(app.url("/api/me"));
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{name} accepted");
        assert_eq!(res.headers()["www-authenticate"], "Bearer", "{name}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
    }
    // a token expires with the clock
    app.clock.advance(chrono::Duration::seconds(604_800 + 1));
    let (s, _) = app.get("/api/me", Some(&good)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_gives_a_working_token() {
    let app = TestApp::spawn().await;
    let (token, uid) = app.login("alice").await;
    app.clock.advance(chrono::Duration::days(6));
    let (s, b) = app.post("/api/auth/refresh", Some(&token), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let fresh = b["token"].as_str().unwrap().to_string();
    assert_eq!(b["user"]["id"], uid);
    app.clock.advance(chrono::Duration::days(2));
    assert_eq!(
        app.get("/api/me", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get("/api/me", Some(&fresh)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn deleting_the_account_erases_personal_data_and_keeps_the_ledger() {
    let app = TestApp::spawn().await;
    let (token, uid) = app.login("dora").await;
    let out = app.cli(&[
        "admin", "grant", "--user", &uid, "--fen", "300", "--reason", "promo",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    app.cli(&["admin", "set-free-quota", "0"]);
    let (s, chat) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "secret diary"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{chat}");
    let (s, _) = app
        .post(
            "/api/location/report",
            Some(&token),
            json!({"latitude": 31.2, "longitude": 121.4}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _) = app.delete("/api/me", Some(&token)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/me", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );

    let conn = super::common::TestDb::of(&app);
    let count = |sql: &str| -> i64 { conn.query_row(sql, [&uid], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM messages WHERE user_id = ?1"), 0);
    assert_eq!(count("SELECT count(*) FROM sessions WHERE user_id = ?1"), 0);
    assert_eq!(
        count("SELECT count(*) FROM location_logs WHERE user_id = ?1"),
        0
    );
    assert_eq!(count("SELECT count(*) FROM users WHERE id = ?1 AND openid IS NULL AND deleted_at IS NOT NULL"), 1);
    // the grant and the charge stay, anonymised, for accounting
    assert_eq!(count("SELECT count(*) FROM ledger WHERE user_id = ?1"), 2);
    let audit = app.cli(&["admin", "audit"]);
    assert!(audit.status.success(), "{}", stdout(&audit));

    // logging in again is a new, empty account
    let (_, uid2) = app.login("dora").await;
    assert_ne!(uid, uid2);
}

#[tokio::test]
async fn per_user_limit_has_retry_after_and_spares_other_users() {
    let app = TestApp::builder()
        .config(|c| c.rate_limit.per_user_per_minute = 3)
        .spawn()
        .await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/me", Some(&alice)).await.0, StatusCode::OK);
    }
    let res = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // bob is unaffected, and health is never limited
    assert_eq!(app.get("/api/me", Some(&bob)).await.0, StatusCode::OK);
    assert_eq!(app.get("/api/health", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn per_ip_limit_trusts_forwarded_for_only_from_trusted_proxies() {
    // untrusted peer: X-Forwarded-For is ignored, all requests share one IP
    let app = TestApp::builder()
        .config(|c| c.rate_limit.per_ip_per_minute = 2)
        .spawn()
        .await;
    for (i, want) in [401, 401, 429].into_iter().enumerate() {
        let res = app
            .client
            .get(app.url("/api/me"))
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), want, "request {i}");
    }
    // trusted peer: each forwarded client gets its own bucket
    let app = TestApp::builder()
        .config(|c| {
            c.rate_limit.per_ip_per_minute = 2;
            c.server.trusted_proxies = vec!["127.0.0.1".into()];
        })
        .spawn()
        .await;
    for i in 0..4 {
        let res = app
            .client
            .get(app.url("/api/me"))
            .header("x-forwarded-for", format!("203.0.113.9, 10.0.0.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "client {i} limited");
    }
    for want in [401, 429] {
        let res = app
            .client
            .get(app.url("/api/me"))
            .header("x-forwarded-for", "10.0.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), want);
    }
}

#[tokio::test]
async fn login_has_its_own_stricter_limit() {
    let app = TestApp::builder()
        .config(|c| {
            c.rate_limit.login_per_ip_per_minute = 2;
            c.rate_limit.per_ip_per_minute = 100;
        })
        .spawn()
        .await;
    let (token, _) = app.login("a").await;
    app.login("b").await;
    let (s, b) = login_code(&app, "dev:c").await;
    assert_error(s, &b, 429, "rate_limited");
    // other endpoints still answer from the same IP
    assert_eq!(app.get("/api/me", Some(&token)).await.0, StatusCode::OK);
}
