//! A fake OpenAI-compatible /v1/chat/completions that records what it was
//! sent and answers as told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

pub const API_KEY: &str = "sk-test-FAKEKEY-0123456789";

#[derive(Clone, Debug)]
pub enum Behavior {
    /// Reply "reply to: <last user message>" with usage 11/7.
    Echo,
    /// Answer this status with an error body quoting the key (as OpenAI does).
    Status(u16),
    /// Wait, then behave as Echo.
    Slow(Duration),
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Clone)]
pub struct FakeOpenAi {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    behavior: Behavior,
    requests: Vec<Recorded>,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let inner = Arc::new(Mutex::new(Inner {
            behavior: Behavior::Echo,
            requests: vec![],
        }));
        let router = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(inner.clone());
        let base = super::serve(router).await;
        FakeOpenAi {
            base_url: format!("{base}/v1"),
            inner,
        }
    }

    pub fn set(&self, b: Behavior) {
        self.inner.lock().unwrap().behavior = b;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// A provider config pointing here.
    pub fn provider(&self, timeout_secs: u64) -> mvp28::config::ProviderConfig {
        mvp28::config::ProviderConfig {
            name: "openai".into(),
            kind: "openai".into(),
            base_url: self.base_url.clone(),
            api_key: API_KEY.into(),
            models: vec!["gpt-4o-mini".into(), "gpt-4o".into()],
            timeout_secs,
        }
    }
}

async fn completions(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let behavior = {
        let mut g = inner.lock().unwrap();
        g.requests.push(Recorded {
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body: body.clone(),
        });
        g.behavior.clone()
    };
    match behavior {
        Behavior::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": format!("Incorrect API key provided: {API_KEY}"), "type": "invalid_request_error"}})),
        )
            .into_response(),
        Behavior::Slow(d) => {
            tokio::time::sleep(d).await;
            Json(reply(&body)).into_response()
        }
        Behavior::Echo => Json(reply(&body)).into_response(),
    }
}

fn reply(body: &Value) -> Value {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("reply to: {last}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    })
}
