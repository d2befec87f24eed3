//! The OpenAPI document comes from the route registration itself: each
//! handler's `#[utoipa::path]` is registered once, with `routes!`, and
//! `app::router` serves both the routes and their document. These tests
//! check that the served document is that document with its shared parts,
//! and that every operation it lists is routed.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::TestApp;
use crate::fakes::wechatpay::FakeWechatPay;

/// (METHOD, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The app with payments on (`true`: every /api/pay/* route is its own) or
/// off (one catch-all answers them all, 503).
async fn spawn(payments: bool, keys: &std::path::Path) -> (TestApp, Option<FakeWechatPay>) {
    if !payments {
        let app = TestApp::spawn().await;
        assert!(app.state().payments().is_none());
        return (app, None);
    }
    let fake = FakeWechatPay::start().await;
    let app = TestApp::builder()
        .config(|c| fake.configure(c, keys))
        .spawn()
        .await;
    assert!(app.state().payments().is_some());
    (app, Some(fake))
}

async fn served(app: &TestApp) -> Value {
    let res = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

#[tokio::test]
async fn served_document_is_the_generated_one_with_the_shared_parts() {
    let keys = tempfile::tempdir().unwrap();
    let generated = serde_json::to_value(mvp28::http::openapi::document()).unwrap();
    // The document does not depend on whether payments are on.
    for payments in [false, true] {
        let (app, _fake) = spawn(payments, keys.path()).await;
        assert_eq!(served(&app).await, generated, "payments on: {payments}");
        app.stop().await;
    }
    let doc = generated;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["title"], "mvp28");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let ops = operations(&doc);
    for op in [
        ("GET", "/api/health"),
        ("GET", "/api/openapi.json"),
        ("GET", "/metrics"),
        ("POST", "/api/pay/wechat/webhook"),
        ("PUT", "/api/upload/local/{token}"),
    ] {
        assert!(
            ops.contains(&(op.0.to_string(), op.1.to_string())),
            "{op:?} missing from {ops:?}"
        );
    }
    assert!(ops.len() >= 25, "{ops:?}");

    // Shared parts: the bearer scheme, the error envelope, a 401 on every
    // authenticated operation and an error answer on every operation.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let err = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(err["required"], serde_json::json!(["error"]), "{err}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("default"),
                "{method} {path}: no default answer"
            );
            if op.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
        }
    }
}

/// Every documented operation is routed: requested on a running app (path
/// parameters filled in), it gets neither the fallback's 404 nor a 405.
/// With payments off, the /api/pay/* catch-all answers for the payment
/// routes, so both configurations are checked.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let keys = tempfile::tempdir().unwrap();
    for payments in [true, false] {
        let (app, _fake) = spawn(payments, keys.path()).await;
        let ops = operations(&served(&app).await);
        assert!(!ops.is_empty());
        for (method, path) in &ops {
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let res = app
                .client
                .request(m, app.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let at = format!("{method} {path} (payments on: {payments})");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{at}");
            assert!(
                !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"),
                "{at} is documented but not routed"
            );
        }
        app.stop().await;
    }
}
