//! The operator console through HTTP and the CLI: admin accounts, login
//! limits, sessions (cookie flags, CSRF, idle and absolute expiry), admin
//! API tokens, neither side's credentials opening the other, every action
//! with its audit row, bad input answered in the error shape with nothing
//! changed, and the pages.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi};
use crate::fakes::wechatpay::FakeWechatPay;

/// `mvp28 admin create-admin NAME` → the one-time password.
pub fn create_admin(app: &TestApp, name: &str) -> String {
    let out = app.cli(&["admin", "create-admin", name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let pw = text.lines().last().unwrap().trim().to_string();
    assert_eq!(pw.len(), 20, "{text}");
    pw
}

/// `mvp28 admin create-token NAME` → the token.
pub fn create_token(app: &TestApp, name: &str) -> String {
    let out = app.cli(&["admin", "create-token", name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).lines().last().unwrap().trim().to_string();
    assert!(token.starts_with("mvp28adm_"), "{token}");
    token
}

/// A logged-in browser session: the cookie and the CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub set_cookie: String,
}

pub async fn login(
    app: &TestApp,
    name: &str,
    password: &str,
) -> Result<Session, (StatusCode, Value)> {
    let res = app
        .client
        .post(app.url("/api/admin/login"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = res.json().await.unwrap();
    if status != StatusCode::OK {
        return Err((status, body));
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    Ok(Session {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
        set_cookie,
    })
}

/// A request as the console sends it: cookie, and the CSRF token when `csrf`.
async fn call(
    app: &TestApp,
    s: &Session,
    method: Method,
    path: &str,
    body: Option<Value>,
    csrf: bool,
) -> (StatusCode, Value) {
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("cookie", &s.cookie);
    if csrf {
        req = req.header("x-csrf-token", &s.csrf);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    app.send(req, None).await
}

async fn with_token(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    app.send(req, Some(token)).await
}

async fn balance(app: &TestApp, user_token: &str) -> i64 {
    let (s, me) = app.get("/api/me", Some(user_token)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    me["quota"]["balance_fen"].as_i64().unwrap()
}

async fn audit_actions(app: &TestApp, token: &str) -> Vec<Value> {
    let (s, b) = with_token(app, token, Method::GET, "/api/admin/audit", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn login_session_cookie_csrf_and_expiry() {
    let app = TestApp::spawn().await;
    let pw = create_admin(&app, "ops");
    let (user_token, user_id) = app.login("alice").await;

    // wrong password / unknown name: 401, the same message
    let (s, b) = login(&app, "ops", "not-the-password").await.err().unwrap();
    let e1 = assert_error(s, &b, 401, "unauthorized");
    let (s, b) = login(&app, "nobody", &pw).await.err().unwrap();
    let e2 = assert_error(s, &b, 401, "unauthorized");
    assert_eq!(e1["message"], e2["message"]);

    let sess = login(&app, "ops", &pw).await.unwrap();
    let flags: Vec<&str> = sess.set_cookie.split(';').map(str::trim).collect();
    assert!(flags.contains(&"HttpOnly"), "{}", sess.set_cookie);
    assert!(flags.contains(&"SameSite=Strict"), "{}", sess.set_cookie);
    assert!(
        !flags.contains(&"Secure"),
        "plain HTTP: {}",
        sess.set_cookie
    );
    assert!(sess.cookie.starts_with("mvp28_admin="));

    let (s, me) = call(&app, &sess, Method::GET, "/api/admin/me", None, false).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["admin"], "ops");
    assert_eq!(me["via"], "session");

    // A state-changing request without (or with a wrong) CSRF token: 403,
    // nothing changed.
    let grant = json!({"fen": 500, "reason": "goodwill"});
    let path = format!("/api/admin/users/{user_id}/grant");
    let (s, b) = call(&app, &sess, Method::POST, &path, Some(grant.clone()), false).await;
    assert_error(s, &b, 403, "csrf_failed");
    let res = app
        .client
        .post(app.url(&path))
        .header("cookie", &sess.cookie)
        .header("x-csrf-token", "0".repeat(32))
        .json(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(balance(&app, &user_token).await, 0);
    let (s, b) = call(&app, &sess, Method::POST, &path, Some(grant), true).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(balance(&app, &user_token).await, 500);

    // Idle expiry: 31 minutes unused.
    app.clock.advance(chrono::Duration::minutes(31));
    let (s, b) = call(&app, &sess, Method::GET, "/api/admin/me", None, false).await;
    assert_error(s, &b, 401, "unauthorized");

    // Absolute expiry: a busy session still ends after 12 hours.
    let sess = login(&app, "ops", &pw).await.unwrap();
    let mut ended_at = None;
    for i in 0..40 {
        app.clock.advance(chrono::Duration::minutes(20));
        let (s, b) = call(&app, &sess, Method::GET, "/api/admin/me", None, false).await;
        if s != StatusCode::OK {
            assert_error(s, &b, 401, "unauthorized");
            ended_at = Some(i + 1);
            break;
        }
    }
    // 36 steps of 20 minutes are exactly 12 hours: the 37th is past it
    assert_eq!(ended_at, Some(37));

    // logout ends the session
    let sess = login(&app, "ops", &pw).await.unwrap();
    let (s, _) = call(&app, &sess, Method::POST, "/api/admin/logout", None, true).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = call(&app, &sess, Method::GET, "/api/admin/me", None, false).await;
    assert_error(s, &b, 401, "unauthorized");
}

#[tokio::test]
async fn login_is_rate_limited_even_with_limits_off() {
    let app = TestApp::spawn().await;
    let pw = create_admin(&app, "ops");
    for _ in 0..10 {
        let (s, _) = login(&app, "ops", "wrong").await.err().unwrap();
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, b) = login(&app, "ops", &pw).await.err().unwrap();
    assert_error(s, &b, 429, "rate_limited");
}

#[tokio::test]
async fn user_and_admin_credentials_never_cross() {
    let app = TestApp::spawn().await;
    let pw = create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, _) = app.login("alice").await;
    let sess = login(&app, "ops", &pw).await.unwrap();

    // a mini-program token on the admin API
    for path in ["/api/admin/me", "/api/admin/users", "/api/admin/overview"] {
        let (s, b) = app.get(path, Some(&user_token)).await;
        assert_error(s, &b, 401, "unauthorized");
    }
    let (s, b) = app
        .post(
            "/api/admin/settings",
            Some(&user_token),
            json!({"price_fen": 1}),
        )
        .await;
    assert!(matches!(s.as_u16(), 401 | 405), "{s} {b}");
    // no credential at all
    let (s, b) = app.get("/api/admin/users", None).await;
    assert_error(s, &b, 401, "unauthorized");
    // an admin API token and an admin session on the mini-program API
    let (s, b) = app.get("/api/me", Some(&token)).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app
        .send(
            app.client
                .get(app.url("/api/me"))
                .header("cookie", &sess.cookie),
            None,
        )
        .await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app
        .send(
            app.client.get(app.url("/api/me")).header(
                "authorization",
                format!("Bearer {}", sess.cookie.trim_start_matches("mvp28_admin=")),
            ),
            None,
        )
        .await;
    assert_error(s, &b, 401, "unauthorized");

    // the admin token works, needs no CSRF token, and can be revoked
    let (s, b) = with_token(&app, &token, Method::GET, "/api/admin/me", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["via"], "token");
    let out = app.cli(&["admin", "revoke-token", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (s, b) = with_token(&app, &token, Method::GET, "/api/admin/me", None).await;
    assert_error(s, &b, 401, "unauthorized");

    let out = app.cli(&["admin", "list-admins"]);
    assert!(stdout(&out).contains("ops"), "{}", stdout(&out));
    // reset-admin: the old password stops working, sessions end
    let out = app.cli(&["admin", "reset-admin", "ops"]);
    assert!(out.status.success());
    let new_pw = stdout(&out).lines().last().unwrap().trim().to_string();
    let (s, _) = call(&app, &sess, Method::GET, "/api/admin/me", None, false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(login(&app, "ops", &pw).await.is_err());
    assert!(login(&app, "ops", &new_pw).await.is_ok());
    // create-admin twice: refused
    let out = app.cli(&["admin", "create-admin", "ops"]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn grant_debit_erase_each_audited_and_bad_input_changes_nothing() {
    let app = TestApp::spawn().await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, user_id) = app.login("bob").await;

    let (s, b) = with_token(
        &app,
        &token,
        Method::GET,
        &format!("/api/admin/users?q={}", &user_id[..8]),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let found = b["items"].as_array().unwrap();
    assert!(found.iter().any(|u| u["id"] == user_id.as_str()), "{b}");
    // openids only hashed
    assert!(!b.to_string().contains("dev:bob"), "{b}");

    let grant = |fen: i64, reason: &str| json!({"fen": fen, "reason": reason});
    let path = format!("/api/admin/users/{user_id}/grant");
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        &path,
        Some(grant(1000, "refund for outage")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["balance_fen"], 1000);
    assert_eq!(balance(&app, &user_token).await, 1000);

    // bad input: each refused in the error shape, balance unchanged
    for (body, status, code) in [
        (grant(-1001, "too much"), 409, "insufficient_balance"),
        (grant(0, "nothing"), 422, "validation"),
        (grant(5, "  "), 422, "validation"),
        (
            json!({"fen": 5, "reason": "x", "extra": 1}),
            400,
            "invalid_request",
        ),
        (json!({"fen": "5", "reason": "x"}), 422, "validation"),
    ] {
        let (s, b) = with_token(&app, &token, Method::POST, &path, Some(body.clone())).await;
        assert_error(s, &b, status, code);
    }
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/users/usr_nobody/grant",
        Some(grant(5, "x")),
    )
    .await;
    assert_error(s, &b, 404, "not_found");
    assert_eq!(balance(&app, &user_token).await, 1000);

    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        &path,
        Some(grant(-300, "chargeback")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(balance(&app, &user_token).await, 700);

    let (s, d) = with_token(
        &app,
        &token,
        Method::GET,
        &format!("/api/admin/users/{user_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["quota"]["balance_fen"], 700);
    assert_eq!(d["ledger"].as_array().unwrap().len(), 2);
    assert_eq!(d["ledger"][0]["delta_fen"], -300);
    assert_eq!(d["ledger"][0]["kind"], "grant");

    let audit = audit_actions(&app, &token).await;
    let grants: Vec<&Value> = audit
        .iter()
        .filter(|a| a["target"] == user_id.as_str())
        .collect();
    assert_eq!(grants.len(), 2, "{audit:?}");
    assert_eq!(grants[0]["action"], "user.debit");
    assert_eq!(grants[0]["actor"], "ops");
    assert!(grants[0]["before"].as_str().unwrap().contains("1000"));
    assert!(grants[0]["after"].as_str().unwrap().contains("700"));
    assert_eq!(grants[1]["action"], "user.grant");

    // erase: the user's token dies; a second erase conflicts; audited
    let erase = format!("/api/admin/users/{user_id}");
    let (s, b) = with_token(&app, &token, Method::DELETE, &erase, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = app.get("/api/me", Some(&user_token)).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = with_token(&app, &token, Method::DELETE, &erase, None).await;
    assert_error(s, &b, 409, "conflict");
    let audit = audit_actions(&app, &token).await;
    assert_eq!(audit[0]["action"], "user.erase");

    // the ledger still balances
    let out = app.cli(&["admin", "audit"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // and the CLI shows the trail
    let out = app.cli(&["admin", "audit-log"]);
    assert!(stdout(&out).contains("user.erase"), "{}", stdout(&out));
}

#[tokio::test]
async fn settings_change_live_with_the_cli_rules() {
    let app = TestApp::spawn().await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, _) = app.login("carol").await;

    let (s, b) = with_token(
        &app,
        &token,
        Method::PUT,
        "/api/admin/settings",
        Some(json!({"price_fen": 250, "free_daily": 3, "daily_budget": 2.5})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["price_fen"], 250);
    let (_, me) = app.get("/api/me", Some(&user_token)).await;
    assert_eq!(me["quota"]["price_fen"], 250);
    assert_eq!(me["quota"]["free_limit"], 3);

    for (body, field) in [
        (json!({"price_fen": -1}), "price_fen"),
        (json!({"free_daily": -5}), "free_daily"),
        (json!({"monthly_budget": -1.0}), "monthly_budget"),
        (json!({}), "price_fen"),
    ] {
        let (s, b) = with_token(&app, &token, Method::PUT, "/api/admin/settings", Some(body)).await;
        let e = assert_error(s, &b, 422, "validation");
        assert_eq!(e["field"], field);
    }
    let (_, me) = app.get("/api/me", Some(&user_token)).await;
    assert_eq!(me["quota"]["price_fen"], 250);

    // the CLI writes the same rows, and both are in the trail
    let out = app.cli(&["admin", "set-price", "120"]);
    assert!(out.status.success());
    let (_, b) = with_token(&app, &token, Method::GET, "/api/admin/settings", None).await;
    assert_eq!(b["price_fen"], 120);
    let audit = audit_actions(&app, &token).await;
    assert_eq!(audit[0]["actor"], "cli");
    assert_eq!(audit[0]["target"], "price_fen");
    assert!(audit
        .iter()
        .any(|a| a["actor"] == "ops" && a["target"] == "budget_daily_nanos"));
}

#[tokio::test]
async fn payments_settle_one_order_and_reconcile() {
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
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, user_id) = app.login("dave").await;
    let (s, b) = app
        .post(
            "/api/pay/checkout",
            Some(&user_token),
            json!({"amount_fen": 1000}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let no = b["out_trade_no"].as_str().unwrap().to_string();

    let (s, b) = with_token(
        &app,
        &token,
        Method::GET,
        "/api/admin/payments?status=pending",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["items"][0]["out_trade_no"], no.as_str());
    assert_eq!(b["counts"]["pending"], 1);
    let (s, b) = with_token(
        &app,
        &token,
        Method::GET,
        "/api/admin/payments?status=bogus",
        None,
    )
    .await;
    assert_error(s, &b, 422, "validation");

    // WeChat Pay still says NOTPAY: nothing changes
    let settle = format!("/api/admin/payments/{no}/settle");
    let (s, b) = with_token(&app, &token, Method::POST, &settle, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "unchanged");
    assert_eq!(balance(&app, &user_token).await, 0);

    fake.pay(&no);
    let (s, b) = with_token(&app, &token, Method::POST, &settle, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "credited");
    assert_eq!(b["order"]["status"], "paid");
    assert_eq!(balance(&app, &user_token).await, 1000);
    // again: credited once
    let (_, b) = with_token(&app, &token, Method::POST, &settle, None).await;
    assert_eq!(b["outcome"], "already_paid");
    assert_eq!(balance(&app, &user_token).await, 1000);

    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/payments/NOSUCHORDER1/settle",
        None,
    )
    .await;
    assert_error(s, &b, 404, "not_found");

    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/payments/reconcile",
        Some(json!({"older_than_minutes": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        b["lines"][0].as_str().unwrap().starts_with("reconcile:"),
        "{b}"
    );

    let audit = audit_actions(&app, &token).await;
    assert_eq!(audit[0]["action"], "payments.reconcile");
    assert!(audit.iter().any(|a| a["action"] == "payment.settle"
        && a["target"] == no.as_str()
        && a["after"].as_str().unwrap().contains("credited")));

    let (_, d) = with_token(
        &app,
        &token,
        Method::GET,
        &format!("/api/admin/users/{user_id}"),
        None,
    )
    .await;
    assert_eq!(d["orders"][0]["status"], "paid");
    assert_eq!(d["ledger"][0]["kind"], "topup");
}

#[tokio::test]
async fn payments_off_answers_payments_disabled() {
    let app = TestApp::spawn().await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/payments/ORDER123456/settle",
        None,
    )
    .await;
    assert_error(s, &b, 503, "payments_disabled");
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/payments/reconcile",
        Some(json!({})),
    )
    .await;
    assert_error(s, &b, 503, "payments_disabled");
}

#[tokio::test]
async fn overview_usage_providers_and_system() {
    let fake = FakeOpenAi::start().await;
    let provider = fake.provider(5);
    let app = TestApp::builder()
        .config(|c| c.llm.providers = vec![provider])
        .spawn()
        .await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, _) = app.login("erin").await;
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&user_token),
            json!({"message": "secret words"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    fake.set(Behavior::Status(500));
    let (s, _) = app
        .post("/api/chat", Some(&user_token), json!({"message": "x"}))
        .await;
    assert_eq!(s.as_u16(), 502);

    let (s, o) = with_token(
        &app,
        &token,
        Method::GET,
        "/api/admin/overview?days=7",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(o["days"].as_array().unwrap().len(), 7);
    assert_eq!(o["today_totals"]["free_messages"], 1);
    assert_eq!(o["today_totals"]["active_users"], 1);
    assert!(
        o["today_totals"]["failed_calls"].as_i64().unwrap() >= 1,
        "{o}"
    );
    let (s, b) = with_token(
        &app,
        &token,
        Method::GET,
        "/api/admin/overview?days=0",
        None,
    )
    .await;
    assert_error(s, &b, 422, "validation");

    let (s, u) = with_token(&app, &token, Method::GET, "/api/admin/usage?days=1", None).await;
    assert_eq!(s, StatusCode::OK, "{u}");
    let m = &u["by_model"][0];
    assert_eq!(m["key"], "gpt-4o-mini");
    assert!(m["p50_ms"].is_i64(), "{u}");

    let (s, p) = with_token(&app, &token, Method::GET, "/api/admin/providers", None).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let openai = &p["items"][0];
    assert_eq!(openai["name"], "openai");
    assert!(openai["last_success_at"].is_string(), "{p}");
    assert_eq!(openai["recent_failures"][0]["outcome"], "error", "{p}");
    let (s, t) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/providers/openai/test",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["ok"], false, "{t}");
    fake.set(Behavior::Echo);
    let (_, t) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/providers/openai/test",
        None,
    )
    .await;
    assert_eq!(t["ok"], true, "{t}");
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/providers/nope/test",
        None,
    )
    .await;
    assert_error(s, &b, 404, "not_found");

    let (s, sys) = with_token(&app, &token, Method::GET, "/api/admin/system", None).await;
    assert_eq!(s, StatusCode::OK, "{sys}");
    assert_eq!(sys["ledger_audit_mismatches"], json!([]));
    assert!(sys["database_bytes"].as_i64().unwrap() > 0);

    // privacy: no message content anywhere in the admin API
    for path in [
        "/api/admin/overview",
        "/api/admin/users",
        "/api/admin/usage",
        "/api/admin/providers",
        "/api/admin/audit",
    ] {
        let (_, b) = with_token(&app, &token, Method::GET, path, None).await;
        assert!(!b.to_string().contains("secret words"), "{path}: {b}");
    }
}

#[tokio::test]
async fn pages_need_a_session_and_render_from_the_binary() {
    let app = TestApp::spawn().await;
    let pw = create_admin(&app, "ops");
    let (_, user_id) = app.login("frank").await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirect.get(app.url("/admin/")).send().await.unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(res.headers()["location"], "/admin/login");
    let res = no_redirect
        .get(app.url("/admin/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for asset in ["/admin/assets/console.css", "/admin/assets/console.js"] {
        let res = no_redirect.get(app.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
    }

    let sess = login(&app, "ops", &pw).await.unwrap();
    for page in [
        "/admin/".to_string(),
        "/admin/users".into(),
        format!("/admin/users/{user_id}"),
        "/admin/payments".into(),
        "/admin/usage".into(),
        "/admin/settings".into(),
        "/admin/providers".into(),
        "/admin/system".into(),
        "/admin/admins".into(),
    ] {
        let res = no_redirect
            .get(app.url(&page))
            .header("cookie", &sess.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{page}");
        assert!(res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        let html = res.text().await.unwrap();
        assert!(html.contains(&sess.csrf), "{page}: no CSRF meta");
        assert!(!html.contains("dev:frank"), "{page} shows an openid");
        if page == "/admin/" {
            assert!(html.contains("<svg"), "no chart");
        }
    }
}

#[tokio::test]
async fn admin_api_is_in_the_openapi_document() {
    let doc = serde_json::to_value(mvp28::http::openapi::document()).unwrap();
    for path in [
        "/api/admin/login",
        "/api/admin/users/{id}/grant",
        "/api/admin/settings",
        "/api/admin/payments/{out_trade_no}/settle",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    assert_eq!(schemes["admin_session"]["in"], "cookie");
}

#[tokio::test]
async fn backup_from_the_console_is_listed_and_audited() {
    if super::common::sqlite_only("the online backup API copies the SQLite file") {
        return;
    }
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("b");
    let d = dir.to_string_lossy().into_owned();
    let app = TestApp::builder()
        .config(|c| c.backup.dir = d)
        .spawn()
        .await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (s, b) = with_token(&app, &token, Method::GET, "/api/admin/backups", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["items"], json!([]));
    let (s, b) = with_token(&app, &token, Method::POST, "/api/admin/backups", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let name = b["name"].as_str().unwrap().to_string();
    assert!(b["bytes"].as_u64().unwrap() > 0);
    // a restorable SQLite file with the schema
    let copy = rusqlite::Connection::open(dir.join(&name)).unwrap();
    let n: i64 = copy
        .query_row("SELECT count(*) FROM admins", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    // the same second again: 409, nothing overwritten
    let (s, b) = with_token(&app, &token, Method::POST, "/api/admin/backups", None).await;
    assert_error(s, &b, 409, "conflict");
    let (_, b) = with_token(&app, &token, Method::GET, "/api/admin/backups", None).await;
    assert_eq!(b["items"][0]["name"], name.as_str());
    let audit = audit_actions(&app, &token).await;
    assert_eq!(audit[0]["action"], "backup.run");
}

/// Every audit row as text (to prove no secret reached it).
async fn audit_text(app: &TestApp, token: &str) -> String {
    serde_json::to_string(&audit_actions(app, token).await).unwrap()
}

#[tokio::test]
async fn admins_and_tokens_from_the_console_audited_without_secrets() {
    let app = TestApp::spawn().await;
    let pw = create_admin(&app, "ops");
    let sess = login(&app, "ops", &pw).await.unwrap();
    let (s, b) = call(&app, &sess, Method::GET, "/api/admin/admins", None, false).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    assert_eq!(b["items"][0]["name"], "ops");
    assert_eq!(b["items"][0]["sessions"], 1);
    assert!(!b.to_string().contains("argon2"), "{b}");

    // without the CSRF token: 403, nobody created
    let body = json!({"name": "bea"});
    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/admins",
        Some(body.clone()),
        false,
    )
    .await;
    assert_error(s, &b, 403, "csrf_failed");
    let (s, b) = login(&app, "bea", "anything").await.err().unwrap();
    assert_error(s, &b, 401, "unauthorized");

    // created: the one-time password works, once shown
    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/admins",
        Some(body.clone()),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["name"], "bea");
    let bea_pw = b["password"].as_str().unwrap().to_string();
    assert_eq!(bea_pw.len(), 20);
    let bea = login(&app, "bea", &bea_pw).await.unwrap();

    // bad input: the error shape, nothing created
    for (body, status, code) in [
        (json!({"name": "bea"}), 409, "conflict"),
        (json!({"name": "no spaces"}), 422, "validation"),
        (json!({"name": ""}), 422, "validation"),
        (json!({"name": "x", "role": "root"}), 400, "invalid_request"),
        (json!({}), 422, "validation"),
    ] {
        let (s, b) = call(
            &app,
            &sess,
            Method::POST,
            "/api/admin/admins",
            Some(body),
            true,
        )
        .await;
        assert_error(s, &b, status, code);
    }
    let (_, b) = call(&app, &sess, Method::GET, "/api/admin/admins", None, false).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 2, "{b}");

    // nobody resets themselves from the console; another admin can
    let (s, b) = call(
        &app,
        &bea,
        Method::POST,
        "/api/admin/admins/bea/reset",
        None,
        true,
    )
    .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/admins/nobody/reset",
        None,
        true,
    )
    .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/admins/bea/reset",
        None,
        false,
    )
    .await;
    assert_error(s, &b, 403, "csrf_failed");
    assert!(
        login(&app, "bea", &bea_pw).await.is_ok(),
        "a refused reset changed the password"
    );
    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/admins/bea/reset",
        None,
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let bea_new = b["password"].as_str().unwrap().to_string();
    // her sessions ended; only the new password works
    let (s, _) = call(&app, &bea, Method::GET, "/api/admin/me", None, false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(login(&app, "bea", &bea_pw).await.is_err());
    assert!(login(&app, "bea", &bea_new).await.is_ok());

    // an API token from the console: acts as the caller, works as Bearer
    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/tokens",
        Some(json!({"label": "ci"})),
        false,
    )
    .await;
    assert_error(s, &b, 403, "csrf_failed");
    for body in [json!({"label": "  "}), json!({"label": "x".repeat(101)})] {
        let (s, b) = call(
            &app,
            &sess,
            Method::POST,
            "/api/admin/tokens",
            Some(body),
            true,
        )
        .await;
        assert_error(s, &b, 422, "validation");
    }
    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/tokens",
        Some(json!({"label": "ci"})),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["admin"], "ops");
    let token = b["token"].as_str().unwrap().to_string();
    let token_id = b["id"].as_i64().unwrap();
    assert!(token.starts_with("mvp28adm_"));
    let (s, me) = with_token(&app, &token, Method::GET, "/api/admin/me", None).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["admin"], "ops");
    assert_eq!(me["via"], "token");
    let (_, b) = with_token(&app, &token, Method::GET, "/api/admin/admins", None).await;
    let ops = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "ops")
        .unwrap()
        .clone();
    assert_eq!(ops["tokens"][0]["label"], "ci");
    assert!(ops["tokens"][0]["revoked_at"].is_null());
    assert!(!b.to_string().contains(&token), "a token listed: {b}");

    // every action audited, no password or token in the trail
    let trail = audit_text(&app, &token).await;
    for secret in [&bea_pw, &bea_new, &token, &pw] {
        assert!(
            !trail.contains(secret.as_str()),
            "a secret in the audit trail: {trail}"
        );
    }
    let audit = audit_actions(&app, &token).await;
    let find = |action: &str| {
        audit
            .iter()
            .find(|a| a["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit:?}"))
            .clone()
    };
    let created = find("admin.create");
    assert_eq!(
        (created["actor"].as_str(), created["target"].as_str()),
        (Some("ops"), Some("bea"))
    );
    let reset = find("admin.reset");
    assert_eq!(reset["target"], "bea");
    assert!(
        reset["before"].as_str().unwrap().contains("\"sessions\":2"),
        "{reset}"
    );
    let made = find("token.create");
    assert!(made["after"]
        .as_str()
        .unwrap()
        .contains(&format!("\"token_id\":{token_id}")));

    // revoke: unknown, bad id, then the real one (with the token itself)
    let (s, b) = call(
        &app,
        &sess,
        Method::DELETE,
        "/api/admin/tokens/999",
        None,
        true,
    )
    .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = call(
        &app,
        &sess,
        Method::DELETE,
        "/api/admin/tokens/abc",
        None,
        true,
    )
    .await;
    assert_eq!(s.as_u16(), 400, "{b}");
    let (s, b) = call(
        &app,
        &sess,
        Method::DELETE,
        &format!("/api/admin/tokens/{token_id}"),
        None,
        false,
    )
    .await;
    assert_error(s, &b, 403, "csrf_failed");
    let (s, b) = with_token(
        &app,
        &token,
        Method::DELETE,
        &format!("/api/admin/tokens/{token_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = with_token(&app, &token, Method::GET, "/api/admin/me", None).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = call(
        &app,
        &sess,
        Method::DELETE,
        &format!("/api/admin/tokens/{token_id}"),
        None,
        true,
    )
    .await;
    assert_error(s, &b, 409, "conflict");
    let (_, b) = call(&app, &sess, Method::GET, "/api/admin/audit", None, false).await;
    assert_eq!(b["items"][0]["action"], "token.revoke");
    assert_eq!(b["items"][0]["target"], token_id.to_string());
    // and the CLI sees what the console made
    let out = app.cli(&["admin", "list-admins"]);
    assert!(stdout(&out).contains("bea"), "{}", stdout(&out));
}

#[tokio::test]
async fn top_up_amounts_are_live_from_the_console_and_the_cli() {
    let fake = FakeWechatPay::start().await;
    let keys = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .config(|c| {
            fake.configure(c, keys.path());
            c.auth.dev_login = Some(true);
            c.quota.free_daily = 0;
        })
        .spawn()
        .await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, _) = app.login("tina").await;
    let checkout = |fen: i64| {
        let (app, t) = (&app, user_token.clone());
        async move {
            app.post("/api/pay/checkout", Some(&t), json!({"amount_fen": fen}))
                .await
        }
    };
    // seeded from the config
    let (_, b) = with_token(&app, &token, Method::GET, "/api/admin/settings", None).await;
    assert_eq!(b["topup_amounts_fen"], json!([600, 1000, 3000]));

    let (s, b) = with_token(
        &app,
        &token,
        Method::PUT,
        "/api/admin/settings",
        Some(json!({"topup_amounts_fen": [700, 1500]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["topup_amounts_fen"], json!([700, 1500]));
    let (s, b) = checkout(1500).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = checkout(600).await;
    let e = assert_error(s, &b, 422, "validation");
    assert_eq!(e["topup_amounts_fen"], json!([700, 1500]));
    // a 402 offers the live amounts
    let (s, b) = app
        .post("/api/chat", Some(&user_token), json!({"message": "hi"}))
        .await;
    let e = assert_error(s, &b, 402, "quota_exhausted");
    assert_eq!(e["topup_amounts_fen"], json!([700, 1500]));

    // bad lists: the error shape, nothing changed
    for body in [
        json!({"topup_amounts_fen": []}),
        json!({"topup_amounts_fen": [0]}),
        json!({"topup_amounts_fen": [-600]}),
        json!({"topup_amounts_fen": [600, 600]}),
        json!({"topup_amounts_fen": [100_000_000]}),
        json!({"topup_amounts_fen": (1..=11).collect::<Vec<i64>>()}),
    ] {
        let (s, b) = with_token(&app, &token, Method::PUT, "/api/admin/settings", Some(body)).await;
        let e = assert_error(s, &b, 422, "validation");
        assert_eq!(e["field"], "topup_amounts_fen");
    }
    let (s, b) = with_token(
        &app,
        &token,
        Method::PUT,
        "/api/admin/settings",
        Some(json!({"topup_amounts_fen": ["600"]})),
    )
    .await;
    assert!(matches!(s.as_u16(), 400 | 422), "{s} {b}");
    let (_, b) = with_token(&app, &token, Method::GET, "/api/admin/settings", None).await;
    assert_eq!(b["topup_amounts_fen"], json!([700, 1500]));

    // the CLI: same rules, same setting, same trail
    for bad in ["0", "600,abc", "600,600", ""] {
        let out = app.cli(&["admin", "set-topups", bad]);
        assert!(!out.status.success(), "set-topups {bad:?} accepted");
    }
    let out = app.cli(&["admin", "set-topups", "600,1200,3000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, b) = with_token(&app, &token, Method::GET, "/api/admin/settings", None).await;
    assert_eq!(b["topup_amounts_fen"], json!([600, 1200, 3000]));
    let (s, b) = checkout(1200).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = checkout(1500).await;
    assert_error(s, &b, 422, "validation");
    let audit = audit_actions(&app, &token).await;
    let topups: Vec<&Value> = audit
        .iter()
        .filter(|a| a["target"] == "topup_amounts_fen")
        .collect();
    assert_eq!(topups.len(), 2, "{audit:?}");
    assert_eq!(topups[0]["actor"], "cli");
    assert!(topups[0]["before"].as_str().unwrap().contains("[700,1500]"));
    assert_eq!(topups[1]["actor"], "ops");
    assert!(topups[1]["before"]
        .as_str()
        .unwrap()
        .contains("[600,1000,3000]"));
}

#[tokio::test]
async fn quota_refusals_are_counted_per_local_day() {
    let app = TestApp::builder()
        .config(|c| c.quota.free_daily = 1)
        .spawn()
        .await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, _) = app.login("uma").await;
    let chat = || app.post("/api/chat", Some(&user_token), json!({"message": "hi"}));
    assert_eq!(chat().await.0, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(chat().await.0.as_u16(), 402);
    }
    // a refusal over the WebSocket counts too
    {
        use crate::streaming::{ws_connect, ws_next, ws_send};
        let mut ws = ws_connect(&app, &user_token, true).await;
        ws_send(&mut ws, json!({"type": "chat", "message": "hi"})).await;
        let f = ws_next(&mut ws).await;
        assert_eq!(f["error"]["code"], "quota_exhausted", "{f}");
    }
    let (_, o) = with_token(
        &app,
        &token,
        Method::GET,
        "/api/admin/overview?days=2",
        None,
    )
    .await;
    assert_eq!(o["today_totals"]["quota_refusals"], 3, "{o}");
    assert_eq!(o["days"][1]["quota_refusals"], 3, "{o}");
    // the next local day: yesterday keeps its three, today starts at none
    app.clock.advance(chrono::Duration::days(1));
    assert_eq!(chat().await.0, StatusCode::OK);
    assert_eq!(chat().await.0.as_u16(), 402);
    let (_, o) = with_token(
        &app,
        &token,
        Method::GET,
        "/api/admin/overview?days=2",
        None,
    )
    .await;
    assert_eq!(o["days"][0]["quota_refusals"], 3, "{o}");
    assert_eq!(o["days"][1]["quota_refusals"], 1, "{o}");
    assert_eq!(o["today_totals"]["quota_refusals"], 1, "{o}");
    assert_eq!(o["period_totals"]["quota_refusals"], 4, "{o}");
    // kept in the database: a restart does not reset them
    let mut app = app;
    app.restart().await;
    let (_, o) = with_token(
        &app,
        &token,
        Method::GET,
        "/api/admin/overview?days=2",
        None,
    )
    .await;
    assert_eq!(o["period_totals"]["quota_refusals"], 4, "{o}");
    assert_eq!(o["quota_exhausted_since_start"], 0, "{o}");
}

#[tokio::test]
async fn provider_failures_keep_a_short_error_without_the_key() {
    let fake = FakeOpenAi::start().await;
    let provider = fake.provider(5);
    let app = TestApp::builder()
        .config(|c| c.llm.providers = vec![provider])
        .spawn()
        .await;
    create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let (user_token, _) = app.login("vic").await;
    fake.set(Behavior::Status(503));
    let (s, _) = app
        .post(
            "/api/chat",
            Some(&user_token),
            json!({"message": "private words"}),
        )
        .await;
    assert_eq!(s.as_u16(), 502);
    let (s, p) = with_token(&app, &token, Method::GET, "/api/admin/providers", None).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let f = &p["items"][0]["recent_failures"][0];
    let error = f["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {p}"));
    assert!(error.starts_with("HTTP 503"), "{error}");
    assert!(error.contains("Incorrect API key provided"), "{error}");
    assert!(error.chars().count() <= 200, "{error}");
    // the fake quotes the key back: never stored, never shown
    assert!(
        !p.to_string().contains(crate::fakes::openai::API_KEY),
        "{p}"
    );
    assert!(!p.to_string().contains("private words"), "{p}");
    let stored: Option<String> = super::common::TestDb::of(&app)
        .query_row(
            "SELECT error FROM llm_calls WHERE outcome <> 'ok'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored.as_deref(), Some(error));
}

#[tokio::test]
async fn doctor_runs_on_demand_and_is_kept() {
    let app = TestApp::spawn().await;
    let pw = create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let sess = login(&app, "ops", &pw).await.unwrap();
    // nothing runs on a read
    let (s, d) = with_token(&app, &token, Method::GET, "/api/admin/doctor", None).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(d["ran_at"].is_null(), "{d}");
    assert_eq!(d["checks"], json!([]));
    let (s, b) = call(&app, &sess, Method::POST, "/api/admin/doctor", None, false).await;
    assert_error(s, &b, 403, "csrf_failed");
    let (s, b) = app.post("/api/admin/doctor", None, json!({})).await;
    assert_error(s, &b, 401, "unauthorized");

    let (s, d) = call(&app, &sess, Method::POST, "/api/admin/doctor", None, true).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(d["ran_at"].is_string(), "{d}");
    let checks = d["checks"].as_array().unwrap();
    let parts: Vec<&str> = checks.iter().map(|c| c["part"].as_str().unwrap()).collect();
    for part in ["config", "mode", "database", "disk", "storage", "llm"] {
        assert!(parts.contains(&part), "no {part} check: {d}");
    }
    // the embedded defaults are dev mode: a warning with its key and fix
    let mode = checks.iter().find(|c| c["part"] == "mode").unwrap();
    assert_eq!(mode["status"], "warn", "{mode}");
    assert!(mode["key"].is_string() && mode["fix"].is_string(), "{mode}");
    assert_eq!(
        d["ok_count"].as_u64().unwrap()
            + d["warn_count"].as_u64().unwrap()
            + d["fail_count"].as_u64().unwrap(),
        checks.len() as u64
    );
    let (_, again) = with_token(&app, &token, Method::GET, "/api/admin/doctor", None).await;
    assert_eq!(again, d);
    let audit = audit_actions(&app, &token).await;
    assert_eq!(audit[0]["action"], "doctor.run");
    // the System page shows it
    let html = app
        .client
        .get(app.url("/admin/system"))
        .header("cookie", &sess.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("id=\"doctor\""), "{html}");
}

// multi-thread: the in-process S3 server keeps answering while a backup runs
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_to_a_chosen_name_or_s3_and_nowhere_else() {
    if super::common::sqlite_only("the online backup API copies the SQLite file") {
        return;
    }
    let s3 = crate::fakes::s3::FakeS3::start().await;
    let s3cfg = s3.config();
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("b");
    let d = dir.to_string_lossy().into_owned();
    let app = TestApp::builder()
        .config(|c| {
            c.backup.dir = d;
            c.storage.s3 = s3cfg.clone();
        })
        .spawn()
        .await;
    let pw = create_admin(&app, "ops");
    let token = create_token(&app, "ops");
    let sess = login(&app, "ops", &pw).await.unwrap();
    let copy = |to: &str| json!({ "to": to });

    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/backups/copy",
        Some(copy("before-upgrade.db")),
        false,
    )
    .await;
    assert_error(s, &b, 403, "csrf_failed");
    assert!(!dir.join("before-upgrade.db").exists());

    let (s, b) = call(
        &app,
        &sess,
        Method::POST,
        "/api/admin/backups/copy",
        Some(copy("upgrades/before-upgrade.db")),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let written = dir.join("upgrades/before-upgrade.db");
    assert!(written.exists());
    assert!(b["bytes"].as_u64().unwrap() > 0);
    assert!(
        b["to"]
            .as_str()
            .unwrap()
            .ends_with("upgrades/before-upgrade.db"),
        "{b}"
    );
    let n: i64 = rusqlite::Connection::open(&written)
        .unwrap()
        .query_row("SELECT count(*) FROM admins", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let modified = std::fs::metadata(&written).unwrap().modified().unwrap();

    // the same target again: 409, not overwritten
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/backups/copy",
        Some(copy("upgrades/before-upgrade.db")),
    )
    .await;
    assert_error(s, &b, 409, "conflict");
    assert_eq!(
        std::fs::metadata(&written).unwrap().modified().unwrap(),
        modified
    );

    // nowhere outside backup.dir, nothing but .db files
    let outside = backups.path().join("escaped.db");
    for to in [
        "../escaped.db".to_string(),
        outside.to_string_lossy().into_owned(),
        "notes.txt".into(),
        ".hidden.db".into(),
        "s3://only-a-bucket".into(),
        "".into(),
    ] {
        let (s, b) = with_token(
            &app,
            &token,
            Method::POST,
            "/api/admin/backups/copy",
            Some(copy(&to)),
        )
        .await;
        let e = assert_error(s, &b, 422, "validation");
        assert_eq!(e["field"], "to", "{to}");
    }
    assert!(!outside.exists());
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/backups/copy",
        Some(json!({"to": "x.db", "over": true})),
    )
    .await;
    assert_error(s, &b, 400, "invalid_request");

    // s3://: uploaded with [storage.s3]'s keys; an existing key is refused
    let url = format!("s3://{}/backups/console.db", s3cfg.bucket);
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/backups/copy",
        Some(copy(&url)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["to"], url.as_str());
    let n: i64 = rusqlite::Connection::open(s3.file_of("backups/console.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM admins", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let (s, b) = with_token(
        &app,
        &token,
        Method::POST,
        "/api/admin/backups/copy",
        Some(copy(&url)),
    )
    .await;
    assert_error(s, &b, 409, "conflict");

    let audit = audit_actions(&app, &token).await;
    let copies: Vec<&Value> = audit
        .iter()
        .filter(|a| a["action"] == "backup.copy")
        .collect();
    assert_eq!(copies.len(), 2, "{audit:?}");
    assert_eq!(copies[0]["target"], url.as_str());
}
