//! tracing output: text or JSON, every line within a request carrying its id.

use std::collections::HashMap;

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// `env`: the environment as the config saw it (the dotenv file included),
/// where `MVP28_LOG`, then `RUST_LOG`, win over `log.level`.
pub fn init(cfg: &LogConfig, env: &HashMap<String, String>) {
    let filter = [crate::config::dotenv::LOG_VAR, "RUST_LOG"]
        .iter()
        .filter_map(|k| env.get(*k))
        .find_map(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if cfg.format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}
