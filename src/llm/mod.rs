//! LLM providers behind one trait, and the model -> provider table.

mod echo;
mod openai;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::StatusCode;

use crate::config::LlmConfig;
use crate::error::AppError;

pub use echo::EchoProvider;
pub use openai::OpenAiProvider;

#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Clone)]
pub struct LlmReply {
    pub content: String,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
}

#[derive(Debug)]
pub enum LlmError {
    Timeout,
    /// Connection failures, 429, 5xx, unusable bodies. `detail` is for logs
    /// (already free of the API key), never for clients.
    Upstream {
        status: Option<u16>,
        detail: String,
    },
}

impl LlmError {
    pub fn into_app_error(self, provider: &str) -> AppError {
        match self {
            LlmError::Timeout => {
                tracing::warn!(provider, "upstream timed out");
                AppError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_error",
                    "the model did not answer in time; you were not charged",
                )
            }
            LlmError::Upstream { status, detail } => {
                tracing::warn!(provider, status, detail = %detail, "upstream failed");
                let msg = match status {
                    Some(s) => {
                        format!("the model provider failed (HTTP {s}); you were not charged")
                    }
                    None => "the model provider could not be reached; you were not charged".into(),
                };
                AppError::new(StatusCode::BAD_GATEWAY, "upstream_error", msg)
            }
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    fn complete<'a>(&'a self, req: &'a LlmRequest) -> BoxFuture<'a, Result<LlmReply, LlmError>>;
}

/// Which provider serves which model.
#[derive(Clone)]
pub struct Llm {
    by_model: Arc<HashMap<String, Arc<dyn Provider>>>,
    default_model: String,
}

impl Llm {
    /// Builds the table; returns warnings worth logging at start (echo in use,
    /// providers skipped for lack of a key).
    pub fn from_config(cfg: &LlmConfig) -> (Llm, Vec<String>) {
        let mut warnings = vec![];
        let mut by_model: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        let mut configured_models = vec![cfg.default_model.clone()];
        for p in &cfg.providers {
            configured_models.extend(p.models.iter().cloned());
            let provider: Arc<dyn Provider> = match p.kind.as_str() {
                "echo" => Arc::new(EchoProvider::new(&p.name)),
                "openai" if p.api_key.is_empty() => {
                    warnings.push(format!(
                        "LLM provider {:?} has no api_key and is disabled",
                        p.name
                    ));
                    continue;
                }
                _ => Arc::new(OpenAiProvider::new(p)),
            };
            for m in &p.models {
                by_model
                    .entry(m.clone())
                    .or_insert_with(|| provider.clone());
            }
        }
        if by_model.is_empty() {
            warnings.push(
                "no LLM provider is configured: the echo provider answers every model \
                 (set OPENAI_API_KEY or llm.providers[].api_key for real replies)"
                    .into(),
            );
            let echo: Arc<dyn Provider> = Arc::new(EchoProvider::new("echo"));
            for m in configured_models {
                by_model.insert(m, echo.clone());
            }
        }
        (
            Llm {
                by_model: Arc::new(by_model),
                default_model: cfg.default_model.clone(),
            },
            warnings,
        )
    }

    /// The model to use: the requested one if served, else the default.
    pub fn resolve(
        &self,
        requested: Option<&str>,
    ) -> Result<(String, Arc<dyn Provider>), AppError> {
        let model = requested.unwrap_or(&self.default_model);
        match self.by_model.get(model) {
            Some(p) => Ok((model.to_string(), p.clone())),
            None => {
                let mut known: Vec<&String> = self.by_model.keys().collect();
                known.sort();
                Err(AppError::invalid_request(format!(
                    "model {model:?} is not offered; available: {}",
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_code("unknown_model"))
            }
        }
    }
}
