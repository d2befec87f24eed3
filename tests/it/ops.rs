//! Operations: metrics, object-level authorization, logs.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi};

async fn scrape(app: &TestApp, xff: Option<&str>, token: Option<&str>) -> (StatusCode, String) {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_requests_llm_calls_and_refusals() {
    let fake = FakeOpenAi::start().await;
    let provider = fake.provider(5);
    let app = TestApp::builder()
        .config(|c| {
            c.llm.providers = vec![provider];
            c.server.trusted_proxies = vec!["127.0.0.1".into()];
            c.llm.daily_budget = 5.0;
        })
        .spawn()
        .await;
    let (token, _) = app.login("m").await;
    app.cli(&["admin", "set-free-quota", "1"]);
    assert_eq!(
        app.post("/api/chat", Some(&token), json!({"message": "a"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.post("/api/chat", Some(&token), json!({"message": "b"}))
            .await
            .0,
        StatusCode::PAYMENT_REQUIRED
    );
    app.cli(&["admin", "set-free-quota", "5"]);
    fake.set(Behavior::Status(500));
    assert_eq!(
        app.post("/api/chat", Some(&token), json!({"message": "c"}))
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );

    let (s, text) = scrape(&app, None, None).await;
    assert_eq!(s, StatusCode::OK);
    for want in [
        "http_requests_total{route=\"/api/chat\",method=\"POST\",status=\"200\"} 1",
        "http_requests_total{route=\"/api/chat\",method=\"POST\",status=\"402\"} 1",
        "http_requests_total{route=\"/api/chat\",method=\"POST\",status=\"502\"} 1",
        "quota_exhausted_total{route=\"/api/chat\"} 1",
        "llm_calls_total{provider=\"openai\",outcome=\"ok\"} 1",
        "llm_calls_total{provider=\"openai\",outcome=\"error\"} 1",
        "llm_tokens_total{provider=\"openai\",model=\"gpt-4o-mini\",kind=\"prompt\"} 11",
        "http_request_duration_seconds_count{route=\"/api/chat\",method=\"POST\"} 3",
        "llm_budget{period=\"day\"} 5",
        "live_generations",
        "db_pool_wait_seconds",
        "# TYPE llm_call_duration_seconds histogram",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // a client behind the (trusted, local) proxy is not loopback
    let (s, _) = scrape(&app, Some("203.0.113.7"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metrics_token_opens_remote_scraping() {
    let app = TestApp::builder()
        .config(|c| c.metrics.token = "metrics-secret-123".into())
        .spawn()
        .await;
    assert_eq!(scrape(&app, None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&app, None, Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, text) = scrape(&app, None, Some("metrics-secret-123")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("db_pool_acquisitions"));
}
