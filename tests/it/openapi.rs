//! The OpenAPI document, `app::ROUTES` and the router agree: a route added
//! to one and not the others fails here.

use std::collections::BTreeSet;
use std::path::Path;

use mvp28::app::ROUTES;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::TestApp;
use crate::fakes::wechatpay::FakeWechatPay;

fn listed() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn document_lists_exactly_the_routes() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.get("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc,
        serde_json::to_value(mvp28::openapi::document()).unwrap()
    );

    let want = listed();
    let have = documented(&doc);
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented but not in app::ROUTES: {extra:?}"
    );

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
    app.stop().await;
}

/// Every listed route is served: neither the fallback's 404 nor a 405.
/// Payments are on, so no `/api/pay/*` catch-all stands in for a route.
#[tokio::test]
async fn every_listed_route_is_served() {
    let fake = FakeWechatPay::start().await;
    let keys = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .config(|c| fake.configure(c, keys.path()))
        .spawn()
        .await;
    assert!(app.state().payments().is_some());
    for (method, path) in ROUTES {
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
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"),
            "{method} {path} is listed in app::ROUTES but not routed"
        );
    }
    app.stop().await;
}

/// Every `.route("…", method(…))` in src/ is in `app::ROUTES`, so a route
/// registered without being listed (and so without being documented) fails.
#[test]
fn every_registered_route_is_listed() {
    let mut registered = BTreeSet::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in rust_files(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        registered.extend(routes_in(&text));
    }
    assert!(registered.len() >= 20, "the scan found {registered:?}");
    // With payments off, one catch-all stands for every /api/pay/* route.
    registered.remove(&("ANY".to_string(), "/api/pay/{*rest}".to_string()));
    let listed = listed();
    let unlisted: Vec<_> = registered.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "registered in a router but not in app::ROUTES (nor documented): {unlisted:?}"
    );
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// (METHOD, path) of each `.route("path", get(a).post(b))` call.
fn routes_in(text: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut rest = text;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let Some(q1) = rest.find('"') else { break };
        if !rest[..q1].trim().is_empty() {
            continue; // not a literal path
        }
        let Some(q2) = rest[q1 + 1..].find('"') else {
            break;
        };
        let path = &rest[q1 + 1..q1 + 1 + q2];
        // The handler expression: up to the call's closing parenthesis.
        let after = &rest[q1 + 2 + q2..];
        let mut depth = 1;
        let mut end = after.len();
        for (j, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let expr = &after[..end];
        for method in ["get", "post", "put", "delete", "patch", "any"] {
            let pat = format!("{method}(");
            let mut from = 0;
            while let Some(k) = expr[from..].find(&pat) {
                let at = from + k;
                let before = expr[..at].chars().last();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    out.push((method.to_uppercase(), path.to_string()));
                }
                from = at + pat.len();
            }
        }
    }
    out
}
