//! Deterministic offline provider: answers `echo: <last user message>`.

use super::{BoxFuture, LlmError, LlmReply, LlmRequest, Provider};

pub struct EchoProvider {
    name: String,
}

impl EchoProvider {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }
}

impl Provider for EchoProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete<'a>(&'a self, req: &'a LlmRequest) -> BoxFuture<'a, Result<LlmReply, LlmError>> {
        Box::pin(async move {
            let last = req
                .messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| m.content.as_str())
                .unwrap_or("");
            let content = format!("echo: {last}");
            let prompt: usize = req
                .messages
                .iter()
                .map(|m| m.content.split_whitespace().count())
                .sum();
            Ok(LlmReply {
                completion_tokens: Some(content.split_whitespace().count() as i64),
                prompt_tokens: Some(prompt as i64),
                content,
            })
        })
    }
}
