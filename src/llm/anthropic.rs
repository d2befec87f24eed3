//! Anthropic Messages API, streamed: `POST {base_url}/messages` with
//! x-api-key and anthropic-version; events message_start (input tokens),
//! content_block_delta (text_delta), message_delta (output tokens),
//! message_stop, ping and error.

use std::time::Duration;

use serde_json::{json, Value};

use super::{
    upstream_events, BoxFuture, EventStream, Image, LlmError, LlmRequest, Provider, StreamEvent,
};
use crate::config::ProviderConfig;

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    name: String,
    url: String,
    api_key: String,
    max_tokens: u32,
    timeout: Duration,
    client: reqwest::Client,
}

impl AnthropicProvider {
    pub fn new(cfg: &ProviderConfig) -> Self {
        let timeout = Duration::from_secs(cfg.timeout_secs);
        Self {
            name: cfg.name.clone(),
            url: format!("{}/messages", cfg.base_url.trim_end_matches('/')),
            api_key: cfg.api_key.clone(),
            max_tokens: cfg.max_tokens,
            timeout,
            client: super::http_client(timeout),
        }
    }

    async fn start(&self, req: LlmRequest) -> Result<EventStream, LlmError> {
        // Anthropic takes the system prompt apart and wants turns to
        // alternate starting with the user; merge neighbours of one role.
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        let mut turns: Vec<(&str, String, Vec<&Image>)> = vec![];
        for m in req.messages.iter().filter(|m| m.role != "system") {
            match turns.last_mut() {
                Some((role, text, images)) if *role == m.role => {
                    text.push_str("\n\n");
                    text.push_str(&m.content);
                    images.extend(m.images.iter().map(|i| &**i));
                }
                _ => turns.push((
                    m.role,
                    m.content.clone(),
                    m.images.iter().map(|i| &**i).collect(),
                )),
            }
        }
        if turns.first().is_some_and(|(r, _, _)| *r == "assistant") {
            turns.remove(0);
        }
        let messages: Vec<Value> = turns
            .into_iter()
            .map(|(role, content, images)| {
                if images.is_empty() {
                    return json!({"role": role, "content": content});
                }
                // Images first, then the text: what Anthropic recommends.
                let mut blocks: Vec<Value> = images
                    .iter()
                    .map(|i| {
                        json!({"type": "image", "source": {
                            "type": "base64", "media_type": i.media_type, "data": i.base64}})
                    })
                    .collect();
                blocks.push(json!({"type": "text", "text": content}));
                json!({"role": role, "content": blocks})
            })
            .collect();
        let mut body = json!({
            "model": req.model,
            "max_tokens": self.max_tokens.min(req.max_tokens),
            "messages": messages,
            "stream": true,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        let send = self
            .client
            .post(&self.url)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&body)
            .send();
        let res = super::send_with_timeout(send, self.timeout, &self.api_key).await?;
        Ok(upstream_events(
            res,
            self.timeout,
            self.api_key.clone(),
            |ev| {
                let data: Value = match serde_json::from_str(&ev.data) {
                    Ok(v) => v,
                    Err(e) => {
                        return Err(LlmError::upstream(
                            Some(200),
                            format!("unparseable event: {e}"),
                        ))
                    }
                };
                let kind = ev.event.as_deref().or(data["type"].as_str()).unwrap_or("");
                Ok(match kind {
                    "message_start" => Some(vec![StreamEvent::Usage {
                        prompt_tokens: data["message"]["usage"]["input_tokens"].as_i64(),
                        completion_tokens: None,
                    }]),
                    "content_block_delta" => match data["delta"]["text"].as_str() {
                        Some(t) if !t.is_empty() => Some(vec![StreamEvent::Text(t.to_string())]),
                        _ => Some(vec![]),
                    },
                    "message_delta" => Some(vec![StreamEvent::Usage {
                        prompt_tokens: None,
                        completion_tokens: data["usage"]["output_tokens"].as_i64(),
                    }]),
                    "message_stop" => None,
                    "error" => {
                        let status = match data["error"]["type"].as_str() {
                            Some("overloaded_error") => 529,
                            Some("rate_limit_error") => 429,
                            _ => 500,
                        };
                        return Err(LlmError::upstream(
                            Some(status),
                            format!("error event: {}", data["error"]["message"]),
                        ));
                    }
                    _ => Some(vec![]),
                })
            },
        ))
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, req: LlmRequest) -> BoxFuture<'_, Result<EventStream, LlmError>> {
        Box::pin(self.start(req))
    }
}
