//! WeChat Pay against the in-process fake: paySign, checkout, notifications
//! (valid, repeated, parallel, and every way one can be wrong), order
//! queries, `admin reconcile`, and the ledger staying exact throughout.

use std::sync::Arc;

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::wechatpay::{self as wxpay, FakeWechatPay, Notify};

pub(crate) async fn pay_app(fake: &FakeWechatPay) -> TestApp {
    pay_app_at(fake, None, |_| {}).await
}

pub(crate) async fn pay_app_at(
    fake: &FakeWechatPay,
    at: Option<chrono::DateTime<Utc>>,
    f: impl FnOnce(&mut mvp28::config::Config),
) -> TestApp {
    let keys_dir = tempfile::tempdir().unwrap();
    let mut b = TestApp::builder().config(|c| {
        fake.configure(c, keys_dir.path());
        // WeChat Pay on makes this a deployment: the dev login these tests
        // log in with must be asked for by name.
        c.auth.dev_login = Some(true);
        f(c);
    });
    if let Some(t) = at {
        b = b.at(t);
    }
    let app = b.spawn().await;
    // Key files are read at start; the directory can go.
    drop(keys_dir);
    app
}

async fn checkout(app: &TestApp, token: &str, amount: i64) -> (StatusCode, Value) {
    app.post(
        "/api/pay/checkout",
        Some(token),
        json!({ "amount_fen": amount }),
    )
    .await
}

pub(crate) async fn checkout_ok(app: &TestApp, token: &str, amount: i64) -> String {
    let (s, b) = checkout(app, token, amount).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["out_trade_no"].as_str().unwrap().to_string()
}

/// POSTs a notification to the webhook; returns (status, body text).
pub(crate) async fn deliver(app: &TestApp, n: &Notify) -> (StatusCode, String) {
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

fn assert_fail(status: StatusCode, body: &str, want: u16) {
    assert_eq!(status.as_u16(), want, "body: {body}");
    let v: Value = serde_json::from_str(body).expect("FAIL body is JSON");
    assert_eq!(v["code"], "FAIL", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

pub(crate) async fn balance(app: &TestApp, token: &str) -> i64 {
    let (s, b) = app.get("/api/me", Some(token)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["quota"]["balance_fen"].as_i64().unwrap()
}

fn db(app: &TestApp) -> super::common::TestDb {
    super::common::TestDb::of(app)
}

fn db_balance(app: &TestApp, user_id: &str) -> i64 {
    db(app)
        .query_row(
            "SELECT balance_fen FROM user_quotas WHERE user_id = ?1",
            [user_id],
            |r| r.get(0),
        )
        .unwrap()
}

pub(crate) fn topups(app: &TestApp, out_trade_no: &str) -> i64 {
    db(app)
        .query_row(
            "SELECT count(*) FROM ledger WHERE kind = 'topup' AND reference = ?1",
            [out_trade_no],
            |r| r.get(0),
        )
        .unwrap()
}

fn stored_status(app: &TestApp, out_trade_no: &str) -> String {
    db(app)
        .query_row(
            "SELECT status FROM payments WHERE out_trade_no = ?1",
            [out_trade_no],
            |r| r.get(0),
        )
        .unwrap()
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

fn verify_pay_params(p: &Value) {
    let msg = mvp28::pay::pay_sign_message(
        p["appId"].as_str().unwrap(),
        p["timeStamp"].as_str().unwrap(),
        p["nonceStr"].as_str().unwrap(),
        p["package"].as_str().unwrap(),
    );
    assert!(
        wxpay::merchant_verify(&msg, p["paySign"].as_str().unwrap()),
        "paySign does not verify: {p}"
    );
}

// ---------------------------------------------------------------- signing

#[test]
fn pay_sign_signs_the_official_example_string() {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    // The example of the official "小程序调起支付" page.
    let msg = mvp28::pay::pay_sign_message(
        "wx8888888888888888",
        "1414561699",
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "prepay_id=wx201410272009395522657a690389285100",
    );
    let want = "wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n";
    assert_eq!(msg, want);
    let pem = wxpay::keys().merchant.to_pkcs8_pem(LineEnding::LF).unwrap();
    let key = mvp28::pay::crypto::MerchantKey::from_pem(&pem).unwrap();
    let sig = key.sign(msg.as_bytes());
    // Verified independently, with the rsa crate directly on the literal.
    assert!(wxpay::merchant_verify(want, &sig));
    assert!(!wxpay::merchant_verify(
        &want.replace("1414561699", "1414561698"),
        &sig
    ));
    // PKCS#1 v1.5 is deterministic: same input, same signature.
    assert_eq!(sig, key.sign(want.as_bytes()));
    // A PKCS#1 ("RSA PRIVATE KEY") file works as well.
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let pem1 = wxpay::keys().merchant.to_pkcs1_pem(LineEnding::LF).unwrap();
    let key1 = mvp28::pay::crypto::MerchantKey::from_pem(&pem1).unwrap();
    assert_eq!(key1.sign(want.as_bytes()), sig);
}

// ---------------------------------------------------------------- checkout

#[tokio::test]
async fn checkout_places_a_signed_jsapi_order_and_returns_signed_pay_params() {
    let fake = FakeWechatPay::start().await;
    let app = pay_app(&fake).await;
    let (token, _) = app.login("alice").await;

    let (s, b) = checkout(&app, &token, 1000).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let no = b["out_trade_no"].as_str().unwrap();
    assert!(
        (6..=32).contains(&no.len()) && no.bytes().all(|c| c.is_ascii_alphanumeric()),
        "{no}"
    );
    let p = &b["pay_params"];
    assert_eq!(p["appId"], wxpay::APP_ID);
    assert_eq!(p["signType"], "RSA");
    assert_eq!(p["timeStamp"], app.clock_now().to_string());
    assert!(p["nonceStr"].as_str().unwrap().len() <= 32);
    assert!(p["package"].as_str().unwrap().starts_with("prepay_id=wx"));
    verify_pay_params(p);

    // What WeChat Pay received (the fake verified the signature already).
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v3/pay/transactions/jsapi");
    assert!(reqs[0]
        .authorization
        .starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000109\",nonce_str=\""));
    let body = &reqs[0].body;
    assert_eq!(body["appid"], wxpay::APP_ID);
    assert_eq!(body["mchid"], wxpay::MCH_ID);
    assert_eq!(body["out_trade_no"], no);
    assert_eq!(body["description"], "余额充值");
    // clock: 2026-11-25T04:00Z = 12:00 in UTC+8; orders live two hours
    assert_eq!(body["time_expire"], "2026-11-25T14:00:00+08:00");
    assert_eq!(
        body["notify_url"],
        format!("{}/api/pay/wechat/webhook", app.config.server.public_url)
    );
    assert_eq!(body["amount"], json!({"total": 1000, "currency": "CNY"}));
    assert_eq!(body["payer"], json!({"openid": "dev:alice"}));
    assert!(
        fake.sign_failures().is_empty(),
        "{:?}",
        fake.sign_failures()
    );

    // The order is pending (WeChat Pay says NOTPAY).
    let (s, o) = app
        .get(&format!("/api/pay/orders/{no}"), Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(
        o,
        json!({"out_trade_no": no, "amount_fen": 1000, "status": "pending", "paid_at": null})
    );
    let q = fake.requests().pop().unwrap();
    assert_eq!(q.method, "GET");
    assert_eq!(
        q.path,
        format!("/v3/pay/transactions/out-trade-no/{no}?mchid=1900000109")
    );
    assert!(
        fake.sign_failures().is_empty(),
        "{:?}",
        fake.sign_failures()
    );

    // Refusals.
    let (s, b) = checkout(&app, &token, 999).await;
    let e = assert_error(s, &b, 422, "validation");
    assert_eq!(e["field"], "amount_fen");
    let (s, b) = app
        .post(
            "/api/pay/checkout",
            Some(&token),
            json!({"amount_fen": 1000, "x": 1}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = checkout(&app, "not-a-token", 1000).await;
    assert_error(s, &b, 401, "unauthorized");
    assert_eq!(fake.requests().len(), 2, "refused checkouts call nobody");
}

#[tokio::test]
async fn an_upstream_failure_is_502_and_marks_the_order_failed() {
    let fake = FakeWechatPay::start().await;
    let app = pay_app(&fake).await;
    let (token, _) = app.login("alice").await;

    fake.fail_jsapi(true);
    let (s, b) = checkout(&app, &token, 600).await;
    assert_error(s, &b, 502, "upstream_error");
    let no = fake.requests()[0].body["out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stored_status(&app, &no), "failed");
    let (_, o) = app
        .get(&format!("/api/pay/orders/{no}"), Some(&token))
        .await;
    assert_eq!(o["status"], "failed");

    // An answer whose signature does not verify is not trusted either.
    fake.fail_jsapi(false);
    fake.tamper_responses(true);
    let (s, b) = checkout(&app, &token, 600).await;
    let e = assert_error(s, &b, 502, "upstream_error");
    assert!(e["message"].as_str().unwrap().contains("signature"), "{e}");
    let no = fake.requests()[1].body["out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stored_status(&app, &no), "failed");
    assert_eq!(balance(&app, &token).await, 0);
}

#[tokio::test]
async fn payments_disabled_answers_503_everywhere() {
    let app = TestApp::spawn().await;
    let (token, _) = app.login("alice").await;
    let (s, b) = checkout(&app, &token, 600).await;
    assert_error(s, &b, 503, "payments_disabled");
    let (s, b) = app.get("/api/pay/orders/M123456", Some(&token)).await;
    assert_error(s, &b, 503, "payments_disabled");
    let (s, b) = app.post("/api/pay/wechat/webhook", None, json!({})).await;
    assert_error(s, &b, 503, "payments_disabled");
}

#[tokio::test]
async fn another_users_order_is_404() {
    let fake = FakeWechatPay::start().await;
    let app = pay_app(&fake).await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let no = checkout_ok(&app, &alice, 600).await;
    let (s, b) = app.get(&format!("/api/pay/orders/{no}"), Some(&bob)).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/api/pay/orders/M0000000000", Some(&alice)).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/api/pay/orders/bad%20no", Some(&alice)).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get(&format!("/api/pay/orders/{no}"), None).await;
    assert_error(s, &b, 401, "unauthorized");
}

// ---------------------------------------------------------------- notifications

#[tokio::test]
async fn a_valid_notification_credits_once_and_the_webhook_is_not_rate_limited() {
    let fake = FakeWechatPay::start().await;
    // Three limited requests a minute: login, checkout, the order query.
    let app = pay_app_at(&fake, None, |c| c.rate_limit.per_ip_per_minute = 3).await;
    let (token, user) = app.login("alice").await;
    let no = checkout_ok(&app, &token, 3000).await;
    let n = fake.notification(&fake.pay(&no), app.clock_now());

    let (s, body) = deliver(&app, &n).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(db_balance(&app, &user), 3000);
    assert_eq!(topups(&app, &no), 1);
    // Repeats (WeChat Pay resends until it sees a success) credit nothing,
    // and are never rate limited.
    for _ in 0..4 {
        let (s, body) = deliver(&app, &n).await;
        assert!(s.is_success(), "{s} {body}");
    }
    assert_eq!(db_balance(&app, &user), 3000);
    assert_eq!(topups(&app, &no), 1);

    let (s, o) = app
        .get(&format!("/api/pay/orders/{no}"), Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(o["status"], "paid");
    assert_eq!(o["paid_at"], "2026-11-25T04:01:02.000Z");
    let (txid, ledger_ref): (String, String) = db(&app)
        .query_row(
            "SELECT p.transaction_id, l.reference FROM payments p JOIN ledger l
             ON l.reference = p.out_trade_no WHERE p.out_trade_no = ?1 AND l.user_id = ?2",
            [&no, &user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        Some(txid.as_str()),
        fake.order(&no).unwrap().transaction_id.as_deref()
    );
    assert_eq!(ledger_ref, no);
    assert_audit_clean(&app);
}

#[tokio::test]
async fn the_same_notification_ten_times_in_parallel_credits_exactly_once() {
    let fake = FakeWechatPay::start().await;
    let app = Arc::new(pay_app(&fake).await);
    let (token, _) = app.login("alice").await;
    let no = checkout_ok(&app, &token, 1000).await;
    let n = fake.notification(&fake.pay(&no), app.clock_now());
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (app, n) = (app.clone(), n.clone());
            tokio::spawn(async move { deliver(&app, &n).await })
        })
        .collect();
    for t in tasks {
        let (s, body) = t.await.unwrap();
        assert!(s.is_success(), "{s} {body}");
    }
    assert_eq!(balance(&app, &token).await, 1000);
    assert_eq!(topups(&app, &no), 1);
    assert_audit_clean(&app);
}

#[tokio::test]
async fn refused_notifications_credit_nothing() {
    let fake = FakeWechatPay::start().await;
    let app = pay_app(&fake).await;
    let (token, _) = app.login("alice").await;
    let no = checkout_ok(&app, &token, 1000).await;
    let paid = fake.pay(&no);
    let now = app.clock_now();
    let good = fake.notification(&paid, now);

    let mut cases: Vec<(&str, Notify, u16)> = vec![];
    let mut n = good.clone();
    n.set_header(
        "Wechatpay-Signature",
        &wxpay::platform_sign("something else"),
    );
    cases.push(("tampered signature", n, 401));
    let mut n = good.clone();
    n.body = n.body.replacen("支付成功", "支付成功!", 1);
    cases.push(("tampered body", n, 401));
    let mut n = good.clone();
    n.set_header(
        "Wechatpay-Signature",
        &format!("WECHATPAY/SIGNTEST/{}", good.header("Wechatpay-Signature")),
    );
    cases.push(("SIGNTEST probe", n, 401));
    let mut n = good.clone();
    n.set_header(
        "Wechatpay-Serial",
        "PUB_KEY_ID_0000000000000000000000000000000000",
    );
    cases.push(("unknown serial", n, 401));
    let mut n = good.clone();
    n.headers.retain(|(k, _)| k != "Wechatpay-Nonce");
    cases.push(("missing nonce", n, 401));
    cases.push(("stale timestamp", fake.notification(&paid, now - 301), 401));
    cases.push(("future timestamp", fake.notification(&paid, now + 301), 401));

    // Correctly signed, but the content is wrong.
    let mut body: Value = serde_json::from_str(&good.body).unwrap();
    let ct = body["resource"]["ciphertext"].as_str().unwrap().to_string();
    let flipped = if ct.starts_with('A') { "B" } else { "A" };
    body["resource"]["ciphertext"] = json!(format!("{flipped}{}", &ct[1..]));
    cases.push((
        "corrupted ciphertext",
        wxpay::sign_notification(&body.to_string(), now),
        400,
    ));
    let mut body: Value = serde_json::from_str(&good.body).unwrap();
    body["resource"]["associated_data"] = json!("other");
    cases.push((
        "wrong associated data",
        wxpay::sign_notification(&body.to_string(), now),
        400,
    ));
    cases.push((
        "not JSON",
        wxpay::sign_notification("<xml>SUCCESS</xml>", now),
        400,
    ));
    let variant = |f: &dyn Fn(&mut Value)| {
        let mut t = paid.clone();
        f(&mut t);
        fake.notification(&t, now)
    };
    cases.push(("amount", variant(&|t| t["amount"]["total"] = json!(1)), 400));
    cases.push((
        "currency",
        variant(&|t| t["amount"]["currency"] = json!("USD")),
        400,
    ));
    cases.push(("appid", variant(&|t| t["appid"] = json!("wx-other")), 400));
    cases.push(("mchid", variant(&|t| t["mchid"] = json!("1900000110")), 400));
    cases.push((
        "unknown order",
        variant(&|t| t["out_trade_no"] = json!("M20261125120000UNKNOWN0000")),
        404,
    ));

    for (name, n, want) in &cases {
        let (s, body) = deliver(&app, n).await;
        assert_eq!(s.as_u16(), *want, "{name}: {body}");
        assert_fail(s, &body, *want);
    }
    assert_eq!(
        balance(&app, &token).await,
        0,
        "a refused notification credited"
    );
    assert_eq!(stored_status(&app, &no), "pending");
    assert_eq!(topups(&app, &no), 0);

    // The app's clock moving on makes a once-valid notification stale.
    let late = fake.notification(&paid, app.clock_now());
    app.clock.advance(Duration::minutes(6));
    let (s, body) = deliver(&app, &late).await;
    assert_fail(s, &body, 401);
    assert_eq!(balance(&app, &token).await, 0);

    // Within five minutes is fine, and the real one still credits.
    let ok = fake.notification(&paid, app.clock_now() - 299);
    let (s, body) = deliver(&app, &ok).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(balance(&app, &token).await, 1000);
    assert_audit_clean(&app);
}

// ---------------------------------------------------------------- queries and reconcile

#[tokio::test]
async fn an_order_query_settles_a_missed_notification() {
    let fake = FakeWechatPay::start().await;
    let app = pay_app(&fake).await;
    let (token, _) = app.login("alice").await;
    let no = checkout_ok(&app, &token, 600).await;
    let paid = fake.pay(&no);

    let (s, o) = app
        .get(&format!("/api/pay/orders/{no}"), Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(o["status"], "paid", "{o}");
    assert_eq!(balance(&app, &token).await, 600);
    let queries = fake.requests().len();
    // Settled orders are answered from the database.
    let (_, o) = app
        .get(&format!("/api/pay/orders/{no}"), Some(&token))
        .await;
    assert_eq!(o["status"], "paid");
    assert_eq!(fake.requests().len(), queries);
    // The notification arriving late changes nothing.
    let (s, body) = deliver(&app, &fake.notification(&paid, app.clock_now())).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(balance(&app, &token).await, 600);
    assert_eq!(topups(&app, &no), 1);

    // CLOSED and PAYERROR end an order.
    let closed = checkout_ok(&app, &token, 600).await;
    fake.set_trade_state(&closed, "CLOSED");
    let (_, o) = app
        .get(&format!("/api/pay/orders/{closed}"), Some(&token))
        .await;
    assert_eq!(o["status"], "closed");
    let failed = checkout_ok(&app, &token, 600).await;
    fake.set_trade_state(&failed, "PAYERROR");
    let (_, o) = app
        .get(&format!("/api/pay/orders/{failed}"), Some(&token))
        .await;
    assert_eq!(o["status"], "failed");
    assert_eq!(balance(&app, &token).await, 600);
    assert!(
        fake.sign_failures().is_empty(),
        "{:?}",
        fake.sign_failures()
    );
    assert_audit_clean(&app);
}

/// The env that gives the CLI this fake's payment config.
fn pay_env(fake: &FakeWechatPay, app: &TestApp) -> Vec<(&'static str, String)> {
    let (key, pubkey) = wxpay::write_key_files(app.dir.path());
    vec![
        ("MVP28_DATABASE__PATH", app.config.database.path.clone()),
        ("MVP28_DATABASE__URL", app.config.database.url.clone()),
        ("WECHAT_PAY_MCHID", wxpay::MCH_ID.into()),
        ("WECHAT_PAY_SERIAL_NO", wxpay::MERCHANT_SERIAL.into()),
        ("WECHAT_PAY_V3KEY", wxpay::API_V3_KEY.into()),
        ("MVP28_WECHAT_PAY__APP_ID", wxpay::APP_ID.into()),
        ("MVP28_WECHAT_PAY__PRIVATE_KEY_PATH", key),
        ("MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_PATH", pubkey),
        (
            "MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_ID",
            wxpay::PUB_KEY_ID.into(),
        ),
        ("MVP28_WECHAT_PAY__API_BASE", fake.base_url.clone()),
    ]
}

/// Runs `admin reconcile` off the test's runtime, which must keep serving
/// the fake meanwhile.
async fn reconcile(fake: &FakeWechatPay, app: &TestApp) -> (bool, String) {
    let env = pay_env(fake, app);
    let dir = app.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_cli(&dir, &["admin", "reconcile"], &env)
    })
    .await
    .unwrap();
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[tokio::test]
async fn admin_reconcile_settles_paid_and_closes_expired_orders() {
    // The CLI runs on the real clock; the app's clock places orders in
    // the past relative to it.
    let real = Utc::now();
    let fake = FakeWechatPay::start().await;
    let app = pay_app_at(&fake, Some(real - Duration::hours(3)), |_| {}).await;
    let (token, _) = app.login("alice").await;

    let expired = checkout_ok(&app, &token, 600).await; // expired an hour ago
    app.clock.set(real - Duration::minutes(30));
    let paid = checkout_ok(&app, &token, 1000).await;
    fake.pay(&paid);
    let payerror = checkout_ok(&app, &token, 600).await;
    fake.set_trade_state(&payerror, "PAYERROR");
    let waiting = checkout_ok(&app, &token, 600).await; // NOTPAY, not expired
    app.clock.set(real - Duration::minutes(1));
    let recent = checkout_ok(&app, &token, 3000).await; // too recent to look at
    fake.pay(&recent);
    app.clock.set(real);

    let (ok, out) = reconcile(&fake, &app).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{paid}: paid -> 1000 fen credited")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{expired}: expired NOTPAY -> closed")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{payerror}: PAYERROR -> failed")),
        "{out}"
    );
    assert!(out.contains(&format!("{waiting}: still NOTPAY")), "{out}");
    assert!(!out.contains(&recent), "{out}");
    assert!(
        out.contains("4 checked, 1 paid, 1 closed, 1 failed, 1 still pending, 0 errors"),
        "{out}"
    );
    assert_eq!(stored_status(&app, &paid), "paid");
    assert_eq!(stored_status(&app, &expired), "closed");
    assert_eq!(stored_status(&app, &payerror), "failed");
    assert_eq!(stored_status(&app, &waiting), "pending");
    assert_eq!(stored_status(&app, &recent), "pending");
    assert_eq!(fake.order(&expired).unwrap().trade_state, "CLOSED");
    assert!(fake.requests().iter().any(|r| r.path
        == format!("/v3/pay/transactions/out-trade-no/{expired}/close")
        && r.body == json!({"mchid": wxpay::MCH_ID})));
    assert!(
        fake.sign_failures().is_empty(),
        "{:?}",
        fake.sign_failures()
    );
    assert_eq!(balance(&app, &token).await, 1000);

    // A second run finds the paid one settled: no double credit.
    let (ok, out) = reconcile(&fake, &app).await;
    assert!(ok, "{out}");
    assert!(out.contains("1 checked"), "{out}");
    assert_eq!(topups(&app, &paid), 1);
    assert_eq!(balance(&app, &token).await, 1000);
    assert_audit_clean(&app);
}

#[test]
fn reconcile_without_payments_configured_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(dir.path(), &["admin", "reconcile"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("payments are not enabled"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------- config

#[tokio::test]
async fn payment_config_is_validated_and_bad_key_files_stop_the_start() {
    let fake = FakeWechatPay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = || {
        let mut c = test_config(dir.path());
        fake.configure(&mut c, dir.path());
        c
    };
    base().validate().expect("fake config is valid");
    type Edit = Box<dyn Fn(&mut mvp28::config::Config)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "wechat_pay.serial_no",
            Box::new(|c| c.wechat_pay.serial_no.clear()),
        ),
        (
            "wechat_pay.private_key_path",
            Box::new(|c| c.wechat_pay.private_key_path.clear()),
        ),
        (
            "wechat_pay.api_v3_key",
            Box::new(|c| c.wechat_pay.api_v3_key.pop().map(|_| ()).unwrap()),
        ),
        (
            "wechat_pay.platform_public_key_id",
            Box::new(|c| c.wechat_pay.platform_public_key_id = "123".into()),
        ),
        (
            "wechat_pay.platform_public_key_id",
            Box::new(|c| c.wechat_pay.platform_public_key_id.clear()),
        ),
        (
            "wechat_pay.app_id",
            Box::new(|c| c.wechat_pay.app_id.clear()),
        ),
        (
            "wechat_pay.notify_url",
            Box::new(|c| c.wechat_pay.notify_url = "https://x.example/hook?a=1".into()),
        ),
    ];
    for (key, f) in cases {
        let mut c = base();
        f(&mut c);
        let e = c.validate().expect_err(key);
        assert_eq!(e.key, key, "{e}");
    }
    // app_id falls back to wechat.app_id; notify_url to public_url.
    let mut c = base();
    c.wechat_pay.app_id.clear();
    c.wechat.app_id = "wx-login-app".into();
    c.wechat.app_secret = "s".into();
    c.validate().unwrap();
    assert_eq!(c.pay_app_id(), "wx-login-app");
    assert_eq!(
        c.pay_notify_url(),
        "http://127.0.0.1:8080/api/pay/wechat/webhook"
    );

    // Key files are read at start; a bad one is a startup error naming the key.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut c = base();
    c.wechat_pay.private_key_path = garbage.to_string_lossy().into();
    let e = mvp28::ops::serve::start(c, Arc::new(mvp28::clock::SystemClock))
        .await
        .err()
        .expect("bad key refused");
    assert!(
        e.to_string().contains("wechat_pay.private_key_path"),
        "{e:#}"
    );
    let mut c = base();
    c.wechat_pay.platform_public_key_path = dir.path().join("missing.pem").to_string_lossy().into();
    let e = mvp28::pay::Payments::from_config(&c)
        .err()
        .expect("missing key refused");
    assert!(
        e.to_string()
            .contains("wechat_pay.platform_public_key_path"),
        "{e:#}"
    );
}

#[test]
fn config_check_reports_a_bad_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), "not a key").unwrap();
    let out = run_cli(
        dir.path(),
        &["config", "check"],
        &[
            ("WECHAT_PAY_MCHID", wxpay::MCH_ID),
            ("WECHAT_PAY_SERIAL_NO", wxpay::MERCHANT_SERIAL),
            ("WECHAT_PAY_V3KEY", wxpay::API_V3_KEY),
            ("MVP28_WECHAT_PAY__APP_ID", wxpay::APP_ID),
            ("MVP28_WECHAT_PAY__PRIVATE_KEY_PATH", "k.pem"),
            ("MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_PATH", "k.pem"),
            (
                "MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_ID",
                wxpay::PUB_KEY_ID,
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wechat_pay.private_key_path"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(wxpay::API_V3_KEY));
}

/// A platform certificate for the fake's platform key, made by openssl.
fn platform_cert(dir: &std::path::Path, serial_hex: &str) -> String {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = dir.join("platform_key.pem");
    std::fs::write(
        &key,
        wxpay::keys()
            .platform
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let cert = dir.join("wechatpay_cert.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "30",
            "-subj",
            "/CN=Tenpay.com Root CA/O=Tenpay.com",
        ])
        .args(["-set_serial", &format!("0x{serial_hex}")])
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert.to_string_lossy().into_owned()
}

/// Certificate mode beside public-key mode (a switch in progress): a
/// notification signed under either serial is trusted; others are not.
#[tokio::test]
async fn platform_certificates_are_trusted_by_their_serial_alongside_the_public_key() {
    const CERT_SERIAL: &str = "3A7C1F0B9E8D2C4A6B5E7F9012345678ABCDEF01";
    let fake = FakeWechatPay::start().await;
    let certs = tempfile::tempdir().unwrap();
    let cert = platform_cert(certs.path(), CERT_SERIAL);
    let app = pay_app_at(&fake, None, |c| {
        c.wechat_pay.platform_cert_paths = vec![cert.clone()]
    })
    .await;
    let (token, user) = app.login("cert").await;
    // responses still come under the public key id
    let first = checkout_ok(&app, &token, 600).await;
    let second = checkout_ok(&app, &token, 1000).await;
    let mut n = fake.notification(&fake.pay(&first), app.clock_now());
    n.set_header("wechatpay-serial", CERT_SERIAL);
    let (s, body) = deliver(&app, &n).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let n2 = fake.notification(&fake.pay(&second), app.clock_now());
    let (s, body) = deliver(&app, &n2).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(db_balance(&app, &user), 1600);
    // a serial nobody configured is refused
    let mut n3 = fake.notification(&fake.pay(&first), app.clock_now());
    n3.set_header(
        "wechatpay-serial",
        "00112233445566778899AABBCCDDEEFF00112233",
    );
    let (s, _) = deliver(&app, &n3).await;
    assert!(s.is_client_error() || s.is_server_error());
    assert_eq!(db_balance(&app, &user), 1600);

    // certificates alone are a valid configuration; a broken one stops the start
    let mut c = app.config.clone();
    c.wechat_pay.private_key_path = wxpay::write_key_files(certs.path()).0;
    c.wechat_pay.platform_public_key_path.clear();
    c.wechat_pay.platform_public_key_id.clear();
    c.validate().expect("certificate mode alone is valid");
    assert!(mvp28::pay::Payments::from_config(&c).unwrap().is_some());
    let bad = certs.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    c.wechat_pay.platform_cert_paths = vec![bad.to_string_lossy().into_owned()];
    let err = mvp28::pay::Payments::from_config(&c)
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("platform_cert_paths"),
        "{err:#}"
    );
}
