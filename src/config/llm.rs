use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{bad, check_url, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    pub default_model: String,
    pub system_prompt: String,
    pub context_messages: u32,
    /// The earlier messages sent as context are also bounded by size: the
    /// newest ones whose text adds up to at most this many characters.
    pub context_max_chars: usize,
    /// Reply length cap sent to every provider (`max_tokens`), so one
    /// message's upstream cost is bounded.
    pub max_output_tokens: u32,
    /// Longest user message accepted, in Unicode scalar values.
    pub max_message_chars: usize,
    /// Consecutive failures that take a provider out of rotation.
    pub breaker_failures: u32,
    /// How long a provider stays out (or longer, when it sent Retry-After).
    pub breaker_cooldown_secs: u64,
    pub providers: Vec<ProviderConfig>,
    /// The echo model may answer (no provider with a key, or a provider of
    /// kind echo). Unset: only in a local setup (see `Config::mode`).
    pub allow_echo: Option<bool>,
    /// Explicit failover order per model; entries are "provider" or
    /// "provider:its-model-id".
    pub routes: Vec<RouteConfig>,
    /// Spend caps in the upstream's currency (0 = none); seed the live
    /// settings changed with `mvp28 admin set-budget`.
    pub daily_budget: f64,
    pub monthly_budget: f64,
    /// Fraction of a budget past which a warning is logged.
    pub budget_warn_ratio: f64,
    /// Per-model prices per million tokens, in the upstream's currency.
    pub prices: Vec<PriceConfig>,
    /// Text of one attached PDF (or transcript) sent to the model, at most
    /// this many Unicode scalar values; the rest is cut.
    pub attachment_chars: usize,
    /// Attachments accepted on one chat message.
    pub max_attachments: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PriceConfig {
    /// A model name clients use, or a provider's own model id.
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub model: String,
    pub providers: Vec<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            default_model: "gpt-4o-mini".into(),
            system_prompt: String::new(),
            context_messages: 20,
            context_max_chars: 24_000,
            max_output_tokens: 1024,
            max_message_chars: 8000,
            breaker_failures: 3,
            breaker_cooldown_secs: 30,
            providers: vec![ProviderConfig::default()],
            allow_echo: None,
            routes: vec![],
            daily_budget: 0.0,
            monthly_budget: 0.0,
            budget_warn_ratio: 0.8,
            prices: vec![],
            attachment_chars: 20_000,
            max_attachments: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub name: String,
    /// openai | echo
    pub kind: String,
    pub base_url: String,
    pub api_key: String,
    pub models: Vec<String>,
    pub timeout_secs: u64,
    /// Reply length cap for this provider (anthropic requires one); the
    /// smaller of it and `llm.max_output_tokens` is sent.
    pub max_tokens: u32,
    /// Its models accept images. A model takes image attachments only when
    /// every provider serving it says so (failover never sends an image to
    /// a model that cannot see it).
    pub vision: bool,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            name: "openai".into(),
            kind: "openai".into(),
            base_url: "https://api.openai.com/v1".into(),
            api_key: String::new(),
            models: vec!["gpt-4o-mini".into()],
            timeout_secs: 60,
            max_tokens: 1024,
            vision: false,
        }
    }
}

impl LlmConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.attachment_chars == 0 {
            return Err(bad("llm.attachment_chars", "must be > 0"));
        }
        if self.max_output_tokens == 0 {
            return Err(bad("llm.max_output_tokens", "must be > 0"));
        }
        if self.max_message_chars == 0 {
            return Err(bad("llm.max_message_chars", "must be > 0"));
        }
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |k: &str| format!("llm.providers[{i}].{k}");
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(bad(&key("name"), "must be non-empty and unique"));
            }
            if !matches!(p.kind.as_str(), "openai" | "anthropic" | "echo") {
                return Err(bad(
                    &key("kind"),
                    format!("{:?} is not openai, anthropic or echo", p.kind),
                ));
            }
            if p.kind != "echo" {
                check_url(&key("base_url"), &p.base_url)?;
            }
            if p.timeout_secs == 0 {
                return Err(bad(&key("timeout_secs"), "must be > 0"));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("llm.routes[{i}].{k}");
            if r.model.is_empty() {
                return Err(bad(&key("model"), "must not be empty"));
            }
            if r.providers.is_empty() {
                return Err(bad(&key("providers"), "must list at least one provider"));
            }
            for entry in &r.providers {
                let name = entry.split_once(':').map_or(entry.as_str(), |(n, _)| n);
                if !names.contains(name) {
                    return Err(bad(
                        &key("providers"),
                        format!("{name:?} is not in llm.providers"),
                    ));
                }
            }
        }
        for (k, v) in [
            ("llm.daily_budget", self.daily_budget),
            ("llm.monthly_budget", self.monthly_budget),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(k, "must be a number >= 0 (0 = no budget)"));
            }
        }
        if !(self.budget_warn_ratio > 0.0 && self.budget_warn_ratio <= 1.0) {
            return Err(bad("llm.budget_warn_ratio", "must be in (0, 1]"));
        }
        for (i, p) in self.prices.iter().enumerate() {
            if p.model.is_empty() {
                return Err(bad(&format!("llm.prices[{i}].model"), "must not be empty"));
            }
            for (k, v) in [
                ("input_per_mtok", p.input_per_mtok),
                ("output_per_mtok", p.output_per_mtok),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(bad(
                        &format!("llm.prices[{i}].{k}"),
                        "must be a number >= 0",
                    ));
                }
            }
        }
        if self.default_model.is_empty() {
            return Err(bad("llm.default_model", "must not be empty"));
        }
        Ok(())
    }
}
