//! Each configured model: a tiny real completion, failures told apart (bad
//! key, unknown model, refused region, network).

use super::{Check, PROBE_TIMEOUT};
use crate::config::Config;

pub async fn models(cfg: &Config) -> Vec<Check> {
    let mut out = vec![];
    if cfg.echo_in_use() {
        out.push(Check::warn(
            "llm",
            "llm.allow_echo",
            "the echo model answers (no provider has an api_key, or one is of kind echo)",
            "set OPENAI_API_KEY or llm.providers[].api_key for real replies",
        ));
    }
    let mut probes = vec![];
    for (i, p) in cfg.llm.providers.iter().enumerate() {
        if p.kind == "echo" {
            continue;
        }
        let Some(provider) = crate::llm::provider_from_config(p) else {
            out.push(Check::warn(
                "llm",
                &format!("llm.providers[{i}].api_key"),
                format!("provider {:?} is disabled: no api_key", p.name),
                "set its api_key (OPENAI_API_KEY for the one named openai) or remove it",
            ));
            continue;
        };
        let mut ids: Vec<String> = p.models.clone();
        for r in &cfg.llm.routes {
            for entry in &r.providers {
                if let Some((name, id)) = entry.split_once(':') {
                    if name == p.name && !ids.iter().any(|m| m == id) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        for model in ids {
            let provider = provider.clone();
            let name = p.name.clone();
            probes.push(async move {
                let r = tokio::time::timeout(PROBE_TIMEOUT, crate::llm::probe(&*provider, &model))
                    .await;
                (i, name, model, r)
            });
        }
    }
    for (i, name, model, r) in futures_util::future::join_all(probes).await {
        let what = format!("{name} / {model}");
        out.push(match r {
            Ok(Ok(())) => Check::ok("llm", format!("{what}: answers")),
            Ok(Err(e)) => model_fault(i, &what, &e),
            Err(_) => Check::fail(
                "llm",
                &format!("llm.providers[{i}].base_url"),
                format!(
                    "{what}: no first token within {} s",
                    PROBE_TIMEOUT.as_secs()
                ),
                "check that the API is reachable from this machine",
            ),
        });
    }
    out
}

/// Tells a bad key, an unknown model, a refused region and a network
/// failure apart.
fn model_fault(i: usize, what: &str, e: &crate::llm::LlmError) -> Check {
    use crate::llm::LlmError;
    let key = |k: &str| format!("llm.providers[{i}].{k}");
    match e {
        LlmError::Timeout => Check::fail(
            "llm",
            &key("base_url"),
            format!("{what}: timed out"),
            "check network access to the API (or raise timeout_secs)",
        ),
        LlmError::Upstream {
            status: None,
            detail,
            ..
        } => Check::fail(
            "llm",
            &key("base_url"),
            format!("{what}: network failure ({detail})"),
            "check the base_url and that this machine can reach it (DNS, firewall, proxy)",
        ),
        LlmError::Upstream {
            status: Some(s),
            detail,
            ..
        } => {
            let lower = detail.to_ascii_lowercase();
            let region = ["region", "country", "territory", "location"]
                .iter()
                .any(|w| lower.contains(w));
            match s {
                401 => Check::fail(
                    "llm",
                    &key("api_key"),
                    format!("{what}: the API key is refused (401)"),
                    "set a valid key (OPENAI_API_KEY for the provider named openai)",
                ),
                403 if region => Check::fail(
                    "llm",
                    &key("base_url"),
                    format!(
                        "{what}: the provider refuses requests from this server's region (403)"
                    ),
                    "use a provider or gateway that serves this region (set base_url and models)",
                ),
                403 => Check::fail(
                    "llm",
                    &key("api_key"),
                    format!("{what}: forbidden (403): {detail}"),
                    "check the key's permissions and the organisation/project it belongs to",
                ),
                404 => Check::fail(
                    "llm",
                    &key("models"),
                    format!("{what}: unknown model (404)"),
                    "use a model id this provider offers",
                ),
                429 if lower.contains("quota") || lower.contains("billing") => Check::fail(
                    "llm",
                    &key("api_key"),
                    format!("{what}: the account has no quota left (429)"),
                    "add credit or a payment method at the provider",
                ),
                429 => Check::warn(
                    "llm",
                    &key("api_key"),
                    format!("{what}: rate limited right now (429)"),
                    "retry later; raise the account's limits before launch",
                ),
                s => Check::fail(
                    "llm",
                    &key("base_url"),
                    format!("{what}: HTTP {s}: {detail}"),
                    "check the base_url points at an OpenAI-compatible (or Anthropic) API",
                ),
            }
        }
    }
}
