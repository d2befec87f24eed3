//! OpenAI-compatible streaming `POST {base_url}/chat/completions` (OpenAI,
//! DeepSeek, Qwen, Moonshot, and any compatible gateway).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{upstream_events, BoxFuture, EventStream, LlmError, LlmRequest, Provider, StreamEvent};
use crate::config::ProviderConfig;

pub struct OpenAiProvider {
    name: String,
    url: String,
    api_key: String,
    timeout: Duration,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
}

impl OpenAiProvider {
    pub fn new(cfg: &ProviderConfig) -> Self {
        let timeout = Duration::from_secs(cfg.timeout_secs);
        Self {
            name: cfg.name.clone(),
            url: format!("{}/chat/completions", cfg.base_url.trim_end_matches('/')),
            api_key: cfg.api_key.clone(),
            timeout,
            client: super::http_client(timeout),
        }
    }

    async fn start(&self, req: LlmRequest) -> Result<EventStream, LlmError> {
        let messages: Vec<_> =
            req.messages
                .iter()
                .map(|m| {
                    if m.images.is_empty() {
                        return json!({"role": m.role, "content": m.content});
                    }
                    // Vision: content becomes parts, text first, then images.
                    let mut parts = vec![json!({"type": "text", "text": m.content})];
                    parts.extend(m.images.iter().map(
                        |i| json!({"type": "image_url", "image_url": {"url": i.openai_url()}}),
                    ));
                    json!({"role": m.role, "content": parts})
                })
                .collect();
        let body = json!({
            "model": req.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": req.max_tokens,
        });
        let send = self
            .client
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .json(&body)
            .send();
        let res = super::send_with_timeout(send, self.timeout, &self.api_key).await?;
        if is_json(&res) {
            // Some gateways ignore `stream`: a plain completion is a
            // one-chunk reply.
            return self.plain_completion(res).await;
        }
        Ok(upstream_events(
            res,
            self.timeout,
            self.api_key.clone(),
            parse_chunk,
        ))
    }
}

/// One SSE event of a streamed completion as our events; `Ok(None)` at
/// `[DONE]`.
pub(super) fn parse_chunk(ev: &super::sse::SseEvent) -> Result<Option<Vec<StreamEvent>>, LlmError> {
    if ev.data.trim() == "[DONE]" {
        return Ok(None);
    }
    let chunk: Chunk = serde_json::from_str(&ev.data)
        .map_err(|e| LlmError::upstream(Some(200), format!("unparseable chunk: {e}")))?;
    if let Some(err) = chunk.error {
        return Err(LlmError::upstream(
            Some(200),
            format!("error in stream: {err}"),
        ));
    }
    let mut out = vec![];
    if let Some(text) = chunk
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.delta)
        .and_then(|d| d.content)
        .filter(|t| !t.is_empty())
    {
        out.push(StreamEvent::Text(text));
    }
    if let Some(u) = chunk.usage {
        out.push(StreamEvent::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
    }
    Ok(Some(out))
}

fn is_json(res: &reqwest::Response) -> bool {
    res.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// A non-streamed `chat.completion` body.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: Option<Delta>,
}

impl OpenAiProvider {
    async fn plain_completion(&self, res: reqwest::Response) -> Result<EventStream, LlmError> {
        let body = tokio::time::timeout(self.timeout, res.bytes())
            .await
            .map_err(|_| LlmError::Timeout)?
            .map_err(|e| super::transport_error(e, &self.api_key))?;
        let c: Completion = serde_json::from_slice(&body)
            .map_err(|e| LlmError::upstream(Some(200), format!("unparseable completion: {e}")))?;
        if let Some(err) = c.error {
            return Err(LlmError::upstream(
                Some(200),
                super::scrub(&format!("error in completion: {err}"), &self.api_key),
            ));
        }
        let mut events = vec![];
        if let Some(text) = c
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message)
            .and_then(|m| m.content)
            .filter(|t| !t.is_empty())
        {
            events.push(Ok(StreamEvent::Text(text)));
        }
        if let Some(u) = c.usage {
            events.push(Ok(StreamEvent::Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            }));
        }
        Ok(Box::pin(futures_util::stream::iter(events)))
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, req: LlmRequest) -> BoxFuture<'_, Result<EventStream, LlmError>> {
        Box::pin(self.start(req))
    }
}
