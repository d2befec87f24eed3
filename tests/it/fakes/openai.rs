//! A fake OpenAI-compatible /v1/chat/completions that records what it was
//! sent and answers as told: JSON, or SSE chunks when asked to stream. A
//! request without `Authorization: Bearer API_KEY` gets OpenAI's 401.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;

pub const API_KEY: &str = "sk-test-FAKEKEY-0123456789";

#[derive(Clone, Debug)]
pub enum Behavior {
    /// Reply "reply to: <last user message>" word by word, usage 11/7.
    Echo,
    /// Answer this status with an error body quoting the key (as OpenAI does).
    Status(u16),
    /// 429 with a Retry-After header (seconds).
    RateLimited(u64),
    /// Wait before answering at all, then behave as Echo.
    Slow(Duration),
    /// Send this many text chunks, then break the connection.
    FailAfter(usize),
    /// Send the first chunk, then wait until `open_gate()` before the rest.
    Gated,
    /// Echo without the usage chunk (some gateways never send one).
    NoUsage,
    /// Stream exactly these text chunks, 40 ms apart.
    Script(Vec<String>),
    /// Echo with this pause before each text chunk (a model thinking).
    Paced(Duration),
    /// A role chunk, a `finish_reason: stop` chunk and `[DONE]`: no text.
    Empty,
    /// Answer a streaming request with a plain JSON completion (gateways
    /// that ignore `stream`).
    PlainJson,
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
    gate: Arc<watch::Sender<bool>>,
}

struct Inner {
    behavior: Behavior,
    requests: Vec<Recorded>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    gate: Arc<watch::Sender<bool>>,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let inner = Arc::new(Mutex::new(Inner {
            behavior: Behavior::Echo,
            requests: vec![],
        }));
        let gate = Arc::new(watch::channel(false).0);
        let router = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(Shared {
                inner: inner.clone(),
                gate: gate.clone(),
            });
        let base = super::serve(router).await;
        FakeOpenAi {
            base_url: format!("{base}/v1"),
            inner,
            gate,
        }
    }

    pub fn set(&self, b: Behavior) {
        self.inner.lock().unwrap().behavior = b;
        self.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// A provider config pointing here.
    pub fn provider(&self, timeout_secs: u64) -> mvp28::config::ProviderConfig {
        self.named("openai", timeout_secs)
    }

    pub fn named(&self, name: &str, timeout_secs: u64) -> mvp28::config::ProviderConfig {
        mvp28::config::ProviderConfig {
            name: name.into(),
            kind: "openai".into(),
            base_url: self.base_url.clone(),
            api_key: API_KEY.into(),
            models: vec!["gpt-4o-mini".into(), "gpt-4o".into()],
            timeout_secs,
            max_tokens: 1024,
            vision: false,
        }
    }
}

fn reply_text(body: &Value) -> String {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| {
            // vision requests send content as parts: answer to the text part
            m["content"].as_str().or_else(|| {
                m["content"]
                    .as_array()?
                    .iter()
                    .find(|p| p["type"] == "text")?["text"]
                    .as_str()
            })
        })
        .unwrap_or("");
    format!("reply to: {last}")
}

fn chunk(model: &Value, delta: Value, usage: Option<Value>) -> Bytes {
    let mut c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
    if let Some(u) = usage {
        c["choices"] = json!([]);
        c["usage"] = u;
    }
    Bytes::from(format!("data: {c}\n\n"))
}

async fn completions(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let behavior = {
        let mut g = shared.inner.lock().unwrap();
        g.requests.push(Recorded {
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body: body.clone(),
        });
        g.behavior.clone()
    };
    // Like OpenAI: a wrong key is 401 before anything else.
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(format!("Bearer {API_KEY}").as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Incorrect API key provided: sk-wr***ey.", "type": "invalid_request_error", "code": "invalid_api_key"}})),
        )
            .into_response();
    }
    let error_body = json!({"error": {"message": format!("Incorrect API key provided: {API_KEY}"), "type": "invalid_request_error"}});
    match behavior {
        Behavior::Status(code) => {
            return (StatusCode::from_u16(code).unwrap(), Json(error_body)).into_response()
        }
        Behavior::RateLimited(secs) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(error_body),
            )
                .into_response()
        }
        Behavior::Slow(d) => tokio::time::sleep(d).await,
        Behavior::Empty => {
            let model = body["model"].clone();
            let mut stop = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            stop["choices"][0]["delta"] = json!({});
            let wire = format!(
                "{}data: {stop}\n\ndata: [DONE]\n\n",
                String::from_utf8_lossy(&chunk(&model, json!({"role": "assistant"}), None))
            );
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from(wire))
                .unwrap();
        }
        _ => {}
    }
    let text = reply_text(&body);
    if body["stream"] != json!(true) || matches!(behavior, Behavior::PlainJson) {
        return Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }))
        .into_response();
    }
    let model = body["model"].clone();
    let words: Vec<String> = match &behavior {
        Behavior::Script(chunks) => chunks.clone(),
        _ => text.split_inclusive(' ').map(String::from).collect(),
    };
    let mut frames: Vec<Bytes> = vec![chunk(
        &model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    frames.extend(
        words
            .iter()
            .map(|w| chunk(&model, json!({"content": w}), None)),
    );
    if !matches!(behavior, Behavior::NoUsage) {
        frames.push(chunk(
            &model,
            json!({}),
            Some(json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})),
        ));
    }
    frames.push(Bytes::from("data: [DONE]\n\n"));
    let gate = shared.gate.subscribe();
    let stream = stream::unfold(
        (frames, 0usize, behavior, gate),
        |(frames, i, behavior, mut gate)| async move {
            if i >= frames.len() {
                return None;
            }
            match &behavior {
                // frame 0 is the role chunk; text chunks start at 1
                Behavior::FailAfter(n) if i > *n => {
                    // let what was sent reach the client before the connection dies
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Some((
                        Err(std::io::Error::other("upstream died")),
                        (frames, usize::MAX, behavior, gate),
                    ));
                }
                Behavior::Script(_) if i >= 2 => {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                Behavior::Paced(d) if i >= 1 => tokio::time::sleep(*d).await,
                Behavior::Gated if i == 2 => {
                    while !*gate.borrow_and_update() {
                        if gate.changed().await.is_err() {
                            break;
                        }
                    }
                }
                _ => {}
            }
            Some((
                Ok::<_, std::io::Error>(frames[i].clone()),
                (frames, i + 1, behavior, gate),
            ))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream.boxed()))
        .unwrap()
}
