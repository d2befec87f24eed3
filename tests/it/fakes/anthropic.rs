//! A fake Anthropic Messages API (streaming): checks x-api-key,
//! anthropic-version and the body, records requests, and streams the real
//! event sequence (message_start, content_block_*, message_delta,
//! message_stop, with pings).

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::stream;
use serde_json::{json, Value};

pub const API_KEY: &str = "sk-ant-test-FAKE";

#[derive(Clone, Debug)]
pub struct Recorded {
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
pub struct FakeAnthropic {
    pub base_url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeAnthropic {
    pub async fn start() -> FakeAnthropic {
        let requests = Arc::new(Mutex::new(vec![]));
        let router = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(requests.clone());
        FakeAnthropic {
            base_url: format!("{}/v1", super::serve(router).await),
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn provider(&self) -> mvp28::config::ProviderConfig {
        mvp28::config::ProviderConfig {
            name: "claude".into(),
            kind: "anthropic".into(),
            base_url: self.base_url.clone(),
            api_key: API_KEY.into(),
            models: vec!["claude-haiku".into()],
            timeout_secs: 5,
            max_tokens: 321,
            vision: false,
        }
    }
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

async fn messages(
    State(requests): State<Arc<Mutex<Vec<Recorded>>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    requests.lock().unwrap().push(Recorded {
        headers: headers.clone(),
        body: body.clone(),
    });
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})),
        )
            .into_response();
    }
    if headers.get("anthropic-version").is_none() || body["max_tokens"].as_u64().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": "missing version or max_tokens"}})),
        )
            .into_response();
    }
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let text = format!("claude says: {last}");
    let mut frames = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": body["model"], "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for w in text.split_inclusive(' ') {
        frames.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
    }
    frames.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    frames.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}})));
    frames.push(event("message_stop", json!({"type": "message_stop"})));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream::iter(
            frames.into_iter().map(Ok::<_, std::io::Error>),
        )))
        .unwrap()
}
