//! Typed configuration: embedded defaults < config.toml < the original
//! deployment's env names < `MVP28_SECTION__KEY` env vars < `<NAME>_FILE` secrets.
//!
//! Each section's file holds its struct, defaults and own checks; checks that
//! read two sections live here. `layering` reads the sources and `render`
//! prints the result for `config check`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod auth;
mod backup;
mod chat;
mod cidr;
mod database;
pub mod dotenv;
mod jobs;
mod layering;
mod llm;
mod location;
mod log;
mod metrics;
mod mode;
mod moderation;
mod quota;
mod rate_limit;
mod render;
mod secrets;
mod server;
mod storage;
mod supabase;
mod tls;
mod unknown_vars;
mod voice;
mod wechat;
mod wechat_pay;

pub use auth::AuthConfig;
pub use backup::BackupConfig;
pub use chat::ChatConfig;
pub use cidr::Cidr;
pub use database::{DatabaseConfig, Synchronous};
pub use jobs::JobsConfig;
pub use layering::{database_path, is_postgres_url};
pub use llm::{LlmConfig, PriceConfig, ProviderConfig, RouteConfig};
pub use location::LocationConfig;
pub use log::LogConfig;
pub use metrics::MetricsConfig;
pub use mode::Mode;
pub use moderation::ModerationConfig;
pub use quota::{parse_offset, QuotaConfig};
pub use rate_limit::RateLimitConfig;
pub use server::ServerConfig;
pub use storage::{S3Config, StorageConfig};
pub use tls::{TlsConfig, TlsMode, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
pub use voice::VoiceConfig;
pub use wechat::WechatConfig;
pub use wechat_pay::WechatPayConfig;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub wechat: WechatConfig,
    pub llm: LlmConfig,
    pub chat: ChatConfig,
    pub quota: QuotaConfig,
    pub storage: StorageConfig,
    pub wechat_pay: WechatPayConfig,
    pub rate_limit: RateLimitConfig,
    pub location: LocationConfig,
    pub metrics: MetricsConfig,
    pub backup: BackupConfig,
    pub voice: VoiceConfig,
    pub moderation: ModerationConfig,
    pub jobs: JobsConfig,
}

/// A config problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(bad(key, format!("{url:?} is not an http(s) URL")))
    }
}

/// Where a config is read from; the environment is passed in so tests need
/// not touch the process environment.
pub struct Source<'a> {
    pub file: Option<&'a Path>,
    pub env: &'a HashMap<String, String>,
}

impl Config {
    /// Loads from `--config PATH` (which must exist), else `MVP28_CONFIG`,
    /// else ./config.toml when present, plus `env` (the process environment
    /// over the dotenv file). Not `strict`: unknown `MVP28_*` variables are
    /// left out and returned as warnings.
    pub fn load(
        path: Option<&Path>,
        env: &HashMap<String, String>,
        strict: bool,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let default_path = Path::new("config.toml");
        let from_env = env
            .get(dotenv::CONFIG_VAR)
            .filter(|v| !v.is_empty())
            .map(Path::new);
        let file = match path
            .map(|p| ("--config", p))
            .or(from_env.map(|p| (dotenv::CONFIG_VAR, p)))
        {
            Some((key, p)) => {
                if !p.exists() {
                    return Err(bad(key, format!("{} does not exist", p.display())));
                }
                Some(p)
            }
            None => default_path.exists().then_some(default_path),
        };
        let src = Source { file, env };
        let (cfg, warnings) = layering::layered(&src, strict)?;
        cfg.validate()?;
        Ok((cfg, warnings))
    }

    /// Strict: an unknown `MVP28_*` variable is an error.
    pub fn from_source(src: Source<'_>) -> Result<Config, ConfigError> {
        let (cfg, _) = layering::layered(&src, true)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Only the first failing check is reported, so the order below decides
    /// which key a config with several mistakes is told about.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.log.validate()?;
        self.database.validate()?;
        self.auth.validate()?;
        self.wechat.validate()?;
        self.llm.validate()?;
        self.chat.validate()?;
        self.quota.validate()?;
        self.storage.validate()?;
        self.backup.validate()?;
        self.location.validate()?;
        self.wechat_pay.validate()?;
        self.validate_pay_fallbacks()?;
        self.voice.validate()?;
        self.moderation.validate()?;
        if self.moderation.enabled && self.wechat.app_id.is_empty() {
            return Err(bad(
                "moderation.enabled",
                "needs wechat.app_id and wechat.app_secret (msgSecCheck uses the app's access token)",
            ));
        }
        if self.moderation.images && !self.moderation.enabled {
            return Err(bad("moderation.images", "needs moderation.enabled = true"));
        }
        if self.moderation.images && self.wechat.push_token.is_empty() {
            return Err(bad(
                "wechat.push_token",
                "required with moderation.images (image verdicts arrive on the message push, signed with this Token)",
            ));
        }
        self.jobs.validate()?;
        Ok(())
    }

    /// The payment AppID and notify URL may come from `wechat` and `server`.
    fn validate_pay_fallbacks(&self) -> Result<(), ConfigError> {
        if !self.payments_enabled() {
            return Ok(());
        }
        if self.pay_app_id().is_empty() {
            return Err(bad(
                "wechat_pay.app_id",
                "required when wechat_pay.mch_id is set (or set wechat.app_id)",
            ));
        }
        let notify = self.pay_notify_url();
        check_url("wechat_pay.notify_url", &notify)?;
        if notify.contains(['?', '#']) {
            return Err(bad(
                "wechat_pay.notify_url",
                "must not carry a query or fragment (WeChat Pay refuses it)",
            ));
        }
        Ok(())
    }

    /// Directory holding the database; generated files (jwt.secret) live here.
    pub fn data_dir(&self) -> PathBuf {
        Path::new(&self.database.path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Payments are on exactly when a merchant id is configured.
    pub fn payments_enabled(&self) -> bool {
        self.wechat_pay.enabled()
    }

    /// The AppID orders are placed for: wechat_pay.app_id, else wechat.app_id.
    pub fn pay_app_id(&self) -> String {
        if self.wechat_pay.app_id.is_empty() {
            self.wechat.app_id.clone()
        } else {
            self.wechat_pay.app_id.clone()
        }
    }

    /// wechat_pay.notify_url, else server.public_url + /api/pay/wechat/webhook.
    pub fn pay_notify_url(&self) -> String {
        if self.wechat_pay.notify_url.is_empty() {
            format!(
                "{}/api/pay/wechat/webhook",
                self.server.public_url.trim_end_matches('/')
            )
        } else {
            self.wechat_pay.notify_url.clone()
        }
    }
}
