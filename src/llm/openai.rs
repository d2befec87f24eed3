//! OpenAI-compatible `POST {base_url}/chat/completions` (OpenAI, DeepSeek,
//! Qwen, Moonshot, and any compatible gateway).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{BoxFuture, LlmError, LlmReply, LlmRequest, Provider};
use crate::config::ProviderConfig;

pub struct OpenAiProvider {
    name: String,
    url: String,
    api_key: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
}

impl OpenAiProvider {
    pub fn new(cfg: &ProviderConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs.min(10)))
            .build()
            .expect("reqwest client");
        Self {
            name: cfg.name.clone(),
            url: format!("{}/chat/completions", cfg.base_url.trim_end_matches('/')),
            api_key: cfg.api_key.clone(),
            client,
        }
    }

    /// Upstream text may quote the key back (OpenAI does, masked or not).
    fn scrub(&self, text: &str) -> String {
        let mut t: String = text.chars().take(300).collect();
        if !self.api_key.is_empty() {
            t = t.replace(&self.api_key, "<redacted>");
        }
        t
    }

    async fn call(&self, req: &LlmRequest) -> Result<LlmReply, LlmError> {
        let messages: Vec<_> = req
            .messages
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let body = json!({"model": req.model, "messages": messages, "stream": false});
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            return Err(LlmError::Upstream {
                status: Some(status.as_u16()),
                detail: self.scrub(&String::from_utf8_lossy(&bytes)),
            });
        }
        let parsed: Completion =
            serde_json::from_slice(&bytes).map_err(|e| LlmError::Upstream {
                status: Some(status.as_u16()),
                detail: format!("unparseable completion: {e}"),
            })?;
        let content = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| LlmError::Upstream {
                status: Some(status.as_u16()),
                detail: "completion without choices[0].message.content".into(),
            })?;
        Ok(LlmReply {
            content,
            prompt_tokens: parsed.usage.as_ref().and_then(|u| u.prompt_tokens),
            completion_tokens: parsed.usage.as_ref().and_then(|u| u.completion_tokens),
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout
        } else {
            // without_url: the URL holds no key, but keep logs short.
            LlmError::Upstream {
                status: None,
                detail: self.scrub(&e.without_url().to_string()),
            }
        }
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete<'a>(&'a self, req: &'a LlmRequest) -> BoxFuture<'a, Result<LlmReply, LlmError>> {
        Box::pin(self.call(req))
    }
}
