//! Deterministic offline provider: streams `echo: <last user message>` word
//! by word.

use futures_util::stream;

use super::{BoxFuture, EventStream, LlmError, LlmRequest, Provider, StreamEvent};

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

/// Splits after each space so the pieces concatenate to the input exactly.
fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(String::from).collect()
}

impl Provider for EchoProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, req: LlmRequest) -> BoxFuture<'_, Result<EventStream, LlmError>> {
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
            let mut events: Vec<Result<StreamEvent, LlmError>> = words(&content)
                .into_iter()
                .map(|w| Ok(StreamEvent::Text(w)))
                .collect();
            events.push(Ok(StreamEvent::Usage {
                prompt_tokens: Some(prompt as i64),
                completion_tokens: Some(content.split_whitespace().count() as i64),
            }));
            Ok(Box::pin(stream::iter(events)) as EventStream)
        })
    }
}
