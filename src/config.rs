//! Typed configuration: embedded defaults < config.toml < the original
//! deployment's env names < `MVP28_SECTION__KEY` env vars < `<NAME>_FILE` secrets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::FixedOffset;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub wechat: WechatConfig,
    pub llm: LlmConfig,
    pub quota: QuotaConfig,
    pub storage: StorageConfig,
    pub wechat_pay: WechatPayConfig,
    pub rate_limit: RateLimitConfig,
    pub location: LocationConfig,
    pub metrics: MetricsConfig,
    pub backup: BackupConfig,
    pub voice: VoiceConfig,
}

/// Speech-to-text and text-to-speech through an OpenAI-compatible
/// `/audio/*` API (docs/media.md). Disabled while `api_key` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    pub base_url: String,
    pub api_key: String,
    pub stt_model: String,
    pub tts_model: String,
    /// TTS voice used when a request names none.
    pub voice: String,
    pub timeout_secs: u64,
    /// Messages of quota one transcription or synthesis costs (0 = free).
    pub cost_messages: u32,
    /// Longest text accepted for speech, in Unicode scalar values.
    pub max_speech_chars: usize,
    /// Who transcribes: "openai" (`{base_url}/audio/transcriptions`) or
    /// "assemblyai" (upload, create transcript, poll).
    pub stt_provider: String,
    pub assemblyai_base_url: String,
    pub assemblyai_api_key: String,
    /// Pause between AssemblyAI status polls.
    pub assemblyai_poll_ms: u64,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            api_key: String::new(),
            stt_model: "whisper-1".into(),
            tts_model: "tts-1".into(),
            voice: "alloy".into(),
            timeout_secs: 60,
            cost_messages: 1,
            max_speech_chars: 4096,
            stt_provider: "openai".into(),
            assemblyai_base_url: "https://api.assemblyai.com".into(),
            assemblyai_api_key: String::new(),
            assemblyai_poll_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// `serve` writes a backup this often (0 = never).
    pub every_hours: u32,
    /// Scheduled backups kept in `dir` (older ones are deleted).
    pub keep: u32,
    pub dir: String,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            every_hours: 0,
            keep: 7,
            dir: "data/backups".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Empty: GET /metrics answers loopback clients only. Set: it answers
    /// anyone sending `Authorization: Bearer <token>`.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: String,
    pub public_url: String,
    /// Peers whose X-Forwarded-For is believed (exact IP addresses).
    pub trusted_proxies: Vec<String>,
    pub request_timeout_secs: u64,
    pub max_body_bytes: usize,
    /// On SIGTERM, how long open requests/streams may finish before they are cut.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            trusted_proxies: vec![],
            request_timeout_secs: 120,
            shutdown_grace_secs: 20,
            max_body_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing EnvFilter directive, e.g. "info" or "mvp28=debug,info".
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: String,
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: "data/mvp28.db".into(),
            pool_size: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub jwt_secret: String,
    pub token_ttl_secs: u64,
    /// None: on exactly while `wechat.app_id` is empty.
    pub dev_login: Option<bool>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            token_ttl_secs: 604_800,
            dev_login: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatConfig {
    pub app_id: String,
    pub app_secret: String,
    pub api_base: String,
    pub timeout_secs: u64,
}

impl Default for WechatConfig {
    fn default() -> Self {
        Self {
            app_id: String::new(),
            app_secret: String::new(),
            api_base: "https://api.weixin.qq.com".into(),
            timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    pub default_model: String,
    pub system_prompt: String,
    pub context_messages: u32,
    /// Longest user message accepted, in Unicode scalar values.
    pub max_message_chars: usize,
    /// Consecutive failures that take a provider out of rotation.
    pub breaker_failures: u32,
    /// How long a provider stays out (or longer, when it sent Retry-After).
    pub breaker_cooldown_secs: u64,
    pub providers: Vec<ProviderConfig>,
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
            max_message_chars: 8000,
            breaker_failures: 3,
            breaker_cooldown_secs: 30,
            providers: vec![ProviderConfig::default()],
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
    /// Reply length cap sent to providers that require one (anthropic).
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub free_daily: i64,
    pub price_fen: i64,
    pub timezone: String,
    pub topup_amounts_fen: Vec<i64>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            free_daily: 20,
            price_fen: 100,
            timezone: "+08:00".into(),
            topup_amounts_fen: vec![600, 1000, 3000],
        }
    }
}

impl QuotaConfig {
    pub fn offset(&self) -> FixedOffset {
        parse_offset(&self.timezone).expect("validated at load")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: String,
    pub local_dir: String,
    pub max_upload_bytes: u64,
    pub allowed_content_types: Vec<String>,
    /// Lifetime of presigned upload and download URLs.
    pub presign_ttl_secs: u64,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            local_dir: "data/objects".into(),
            max_upload_bytes: 20 * 1024 * 1024,
            allowed_content_types: [
                "image/jpeg",
                "image/png",
                "image/webp",
                "audio/mpeg",
                "audio/mp4",
                "audio/wav",
                "application/pdf",
            ]
            .map(String::from)
            .to_vec(),
            presign_ttl_secs: 900,
            s3: S3Config::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatPayConfig {
    pub mch_id: String,
    pub app_id: String,
    pub serial_no: String,
    pub private_key_path: String,
    pub api_v3_key: String,
    pub platform_public_key_path: String,
    pub platform_public_key_id: String,
    /// Platform certificates (PEM), the older key mode: each is trusted for
    /// the serial number it carries. Both modes may be configured at once
    /// while WeChat Pay switches a merchant from certificates to a public key.
    pub platform_cert_paths: Vec<String>,
    pub api_base: String,
    pub notify_url: String,
    /// Shown to the payer in WeChat (JSAPI `description`, 1-127 chars).
    pub description: String,
    pub timeout_secs: u64,
}

impl Default for WechatPayConfig {
    fn default() -> Self {
        Self {
            mch_id: String::new(),
            app_id: String::new(),
            serial_no: String::new(),
            private_key_path: String::new(),
            api_v3_key: String::new(),
            platform_public_key_path: String::new(),
            platform_public_key_id: String::new(),
            platform_cert_paths: vec![],
            api_base: "https://api.mch.weixin.qq.com".into(),
            notify_url: String::new(),
            description: "余额充值".into(),
            timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_user_per_minute: u32,
    pub per_ip_per_minute: u32,
    /// POST /api/auth/* per client IP; stricter because logins cost a WeChat call.
    pub login_per_ip_per_minute: u32,
    /// Location reports have their own per-user bucket so a chatty device
    /// cannot starve chat.
    pub location_per_user_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_user_per_minute: 30,
            per_ip_per_minute: 120,
            login_per_ip_per_minute: 10,
            location_per_user_per_minute: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocationConfig {
    pub retention_days: u32,
}

impl Default for LocationConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
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

/// Every secret: (config key, its `MVP28_` env name, its original env name).
const SECRETS: &[(&str, &str, Option<&str>)] = &[
    (
        "auth.jwt_secret",
        "MVP28_AUTH__JWT_SECRET",
        Some("JWT_SECRET"),
    ),
    (
        "wechat.app_secret",
        "MVP28_WECHAT__APP_SECRET",
        Some("WECHAT_SECRET"),
    ),
    (
        "wechat_pay.api_v3_key",
        "MVP28_WECHAT_PAY__API_V3_KEY",
        Some("WECHAT_PAY_V3KEY"),
    ),
    (
        "storage.s3.access_key_id",
        "MVP28_STORAGE__S3__ACCESS_KEY_ID",
        Some("SUPABASE_S3_ACCESS_KEY_ID"),
    ),
    ("metrics.token", "MVP28_METRICS__TOKEN", None),
    ("voice.api_key", "MVP28_VOICE__API_KEY", None),
    (
        "voice.assemblyai_api_key",
        "MVP28_VOICE__ASSEMBLYAI_API_KEY",
        None,
    ),
    (
        "storage.s3.secret_access_key",
        "MVP28_STORAGE__S3__SECRET_ACCESS_KEY",
        Some("SUPABASE_S3_SECRET_ACCESS_KEY"),
    ),
];

/// Where a config is read from; the environment is passed in so tests need
/// not touch the process environment.
pub struct Source<'a> {
    pub file: Option<&'a Path>,
    pub env: &'a HashMap<String, String>,
}

impl Config {
    /// Loads from `--config PATH` (which must exist), else ./config.toml when
    /// present, plus the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let default_path = Path::new("config.toml");
        let file = match path {
            Some(p) => {
                if !p.exists() {
                    return Err(bad("--config", format!("{} does not exist", p.display())));
                }
                Some(p)
            }
            None => default_path.exists().then_some(default_path),
        };
        Self::from_source(Source { file, env: &env })
    }

    pub fn from_source(src: Source<'_>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = src.file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig = fig.merge(Serialized::defaults(legacy_env(src.env)?));
        fig = fig.merge(EnvFromMap::new(src.env));
        let mut cfg: Config = fig.extract().map_err(figment_error)?;
        cfg.apply_openai_key(src.env);
        cfg.apply_secret_files(src.env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_openai_key(&mut self, env: &HashMap<String, String>) {
        let key = match env.get("OPENAI_API_KEY") {
            Some(k) if !k.is_empty() => k.clone(),
            _ => match env.get("OPENAI_API_KEY_FILE") {
                Some(p) => match std::fs::read_to_string(p) {
                    Ok(s) => s.trim_end_matches(['\n', '\r']).to_string(),
                    Err(_) => return,
                },
                None => return,
            },
        };
        match self.llm.providers.iter_mut().find(|p| p.name == "openai") {
            Some(p) if p.api_key.is_empty() => p.api_key = key,
            Some(_) => {}
            None => self.llm.providers.push(ProviderConfig {
                api_key: key,
                ..ProviderConfig::default()
            }),
        }
    }

    fn apply_secret_files(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for (key, name, legacy) in SECRETS {
            let var = std::iter::once(format!("{name}_FILE"))
                .chain(legacy.map(|l| format!("{l}_FILE")))
                .find_map(|v| env.get(&v).map(|p| (v, p.clone())));
            let Some((var, path)) = var else { continue };
            let value = std::fs::read_to_string(&path)
                .map_err(|e| bad(key, format!("cannot read {var}={path}: {e}")))?;
            *self.secret_mut(key) = value.trim_end_matches(['\n', '\r']).to_string();
        }
        Ok(())
    }

    fn secret_mut(&mut self, key: &str) -> &mut String {
        match key {
            "auth.jwt_secret" => &mut self.auth.jwt_secret,
            "wechat.app_secret" => &mut self.wechat.app_secret,
            "wechat_pay.api_v3_key" => &mut self.wechat_pay.api_v3_key,
            "storage.s3.access_key_id" => &mut self.storage.s3.access_key_id,
            "storage.s3.secret_access_key" => &mut self.storage.s3.secret_access_key,
            "metrics.token" => &mut self.metrics.token,
            "voice.api_key" => &mut self.voice.api_key,
            "voice.assemblyai_api_key" => &mut self.voice.assemblyai_api_key,
            other => unreachable!("unknown secret {other}"),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.bind.parse::<SocketAddr>().map_err(|e| {
            bad(
                "server.bind",
                format!("{:?} is not host:port ({e})", self.server.bind),
            )
        })?;
        for p in &self.server.trusted_proxies {
            p.parse::<IpAddr>().map_err(|_| {
                bad(
                    "server.trusted_proxies",
                    format!("{p:?} is not an IP address"),
                )
            })?;
        }
        if !(self.server.public_url.starts_with("http://")
            || self.server.public_url.starts_with("https://"))
        {
            return Err(bad(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        if self.server.request_timeout_secs == 0 {
            return Err(bad("server.request_timeout_secs", "must be > 0"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(bad("server.max_body_bytes", "must be >= 1024"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(bad("log.format", "must be \"text\" or \"json\""));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| bad("log.level", e.to_string()))?;
        if self.database.path.trim().is_empty() {
            return Err(bad("database.path", "must not be empty"));
        }
        if self.database.pool_size == 0 {
            return Err(bad("database.pool_size", "must be > 0"));
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < 32 {
            return Err(bad(
                "auth.jwt_secret",
                "must be at least 32 bytes (or empty to generate one)",
            ));
        }
        if self.auth.token_ttl_secs < 60 {
            return Err(bad("auth.token_ttl_secs", "must be >= 60"));
        }
        if !self.wechat.app_id.is_empty() && self.wechat.app_secret.is_empty() {
            return Err(bad(
                "wechat.app_secret",
                "required when wechat.app_id is set",
            ));
        }
        check_url("wechat.api_base", &self.wechat.api_base)?;
        self.validate_llm()?;
        if self.quota.free_daily < 0 {
            return Err(bad("quota.free_daily", "must be >= 0"));
        }
        if self.quota.price_fen < 0 {
            return Err(bad("quota.price_fen", "must be >= 0"));
        }
        parse_offset(&self.quota.timezone)
            .ok_or_else(|| bad("quota.timezone", "must be a UTC offset like \"+08:00\""))?;
        if self.quota.topup_amounts_fen.iter().any(|a| *a <= 0) {
            return Err(bad("quota.topup_amounts_fen", "amounts must be > 0"));
        }
        self.validate_storage()?;
        if self.backup.every_hours > 0 && self.backup.keep == 0 {
            return Err(bad(
                "backup.keep",
                "must be >= 1 when backups are scheduled",
            ));
        }
        if self.location.retention_days == 0 {
            return Err(bad("location.retention_days", "must be >= 1"));
        }
        self.validate_wechat_pay()?;
        self.validate_voice()?;
        Ok(())
    }

    /// Only checked once payments are enabled (mch_id set); the key files
    /// themselves are read by `pay::Payments::from_config` at start.
    fn validate_wechat_pay(&self) -> Result<(), ConfigError> {
        let p = &self.wechat_pay;
        check_url("wechat_pay.api_base", &p.api_base)?;
        if !self.payments_enabled() {
            return Ok(());
        }
        let required = [
            ("wechat_pay.serial_no", &p.serial_no),
            ("wechat_pay.private_key_path", &p.private_key_path),
            ("wechat_pay.api_v3_key", &p.api_v3_key),
        ];
        for (key, value) in required {
            if value.trim().is_empty() {
                return Err(bad(key, "required when wechat_pay.mch_id is set"));
            }
        }
        if p.api_v3_key.len() != 32 {
            return Err(bad(
                "wechat_pay.api_v3_key",
                format!("must be exactly 32 bytes (got {})", p.api_v3_key.len()),
            ));
        }
        if p.platform_public_key_path.is_empty() != p.platform_public_key_id.is_empty() {
            let missing = if p.platform_public_key_path.is_empty() {
                "wechat_pay.platform_public_key_path"
            } else {
                "wechat_pay.platform_public_key_id"
            };
            return Err(bad(
                missing,
                "platform_public_key_path and platform_public_key_id go together",
            ));
        }
        if p.platform_public_key_path.is_empty() && p.platform_cert_paths.is_empty() {
            return Err(bad(
                "wechat_pay.platform_public_key_path",
                "required when wechat_pay.mch_id is set (the WeChat Pay public key), \
                 unless wechat_pay.platform_cert_paths lists platform certificates",
            ));
        }
        if !p.platform_public_key_path.is_empty()
            && !p.platform_public_key_id.starts_with("PUB_KEY_ID_")
        {
            return Err(bad(
                "wechat_pay.platform_public_key_id",
                "must be the key's id as shown by WeChat Pay (PUB_KEY_ID_…)",
            ));
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
        let chars = p.description.chars().count();
        if chars == 0 || chars > 127 {
            return Err(bad("wechat_pay.description", "must be 1-127 characters"));
        }
        if p.timeout_secs == 0 {
            return Err(bad("wechat_pay.timeout_secs", "must be > 0"));
        }
        Ok(())
    }

    /// Payments are on exactly when a merchant id is configured.
    pub fn payments_enabled(&self) -> bool {
        !self.wechat_pay.mch_id.trim().is_empty()
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

    fn validate_storage(&self) -> Result<(), ConfigError> {
        let st = &self.storage;
        match st.kind.as_str() {
            "local" => {
                if st.local_dir.trim().is_empty() {
                    return Err(bad("storage.local_dir", "must not be empty"));
                }
            }
            "s3" => validate_s3(&st.s3)?,
            other => return Err(bad("storage.kind", format!("{other:?} is not local or s3"))),
        }
        if st.max_upload_bytes == 0 {
            return Err(bad("storage.max_upload_bytes", "must be > 0"));
        }
        if st.allowed_content_types.is_empty() {
            return Err(bad("storage.allowed_content_types", "must not be empty"));
        }
        for t in &st.allowed_content_types {
            if !is_plain_mime(t) {
                return Err(bad(
                    "storage.allowed_content_types",
                    format!("{t:?} is not a lowercase type/subtype without parameters"),
                ));
            }
        }
        // Pending uploads are swept after a day; a URL must die well before
        // that, or an upload could land after its row was swept and the
        // object would never be found again.
        if !(1..=43_200).contains(&st.presign_ttl_secs) {
            return Err(bad(
                "storage.presign_ttl_secs",
                "must be between 1 and 43200 (12 hours)",
            ));
        }
        Ok(())
    }

    fn validate_voice(&self) -> Result<(), ConfigError> {
        let v = &self.voice;
        check_url("voice.base_url", &v.base_url)?;
        check_url("voice.assemblyai_base_url", &v.assemblyai_base_url)?;
        if !matches!(v.stt_provider.as_str(), "openai" | "assemblyai") {
            return Err(bad(
                "voice.stt_provider",
                "must be \"openai\" or \"assemblyai\"",
            ));
        }
        if v.assemblyai_poll_ms == 0 {
            return Err(bad("voice.assemblyai_poll_ms", "must be > 0"));
        }
        if v.timeout_secs == 0 {
            return Err(bad("voice.timeout_secs", "must be > 0"));
        }
        if v.max_speech_chars == 0 {
            return Err(bad("voice.max_speech_chars", "must be > 0"));
        }
        if !v.api_key.is_empty() && (v.stt_model.is_empty() || v.tts_model.is_empty()) {
            return Err(bad(
                "voice.stt_model",
                "stt_model and tts_model must be set",
            ));
        }
        Ok(())
    }

    fn validate_llm(&self) -> Result<(), ConfigError> {
        if self.llm.attachment_chars == 0 {
            return Err(bad("llm.attachment_chars", "must be > 0"));
        }
        if self.llm.max_message_chars == 0 {
            return Err(bad("llm.max_message_chars", "must be > 0"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.llm.providers.iter().enumerate() {
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
        for (i, r) in self.llm.routes.iter().enumerate() {
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
            ("llm.daily_budget", self.llm.daily_budget),
            ("llm.monthly_budget", self.llm.monthly_budget),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(k, "must be a number >= 0 (0 = no budget)"));
            }
        }
        if !(self.llm.budget_warn_ratio > 0.0 && self.llm.budget_warn_ratio <= 1.0) {
            return Err(bad("llm.budget_warn_ratio", "must be in (0, 1]"));
        }
        for (i, p) in self.llm.prices.iter().enumerate() {
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
        if self.llm.default_model.is_empty() {
            return Err(bad("llm.default_model", "must not be empty"));
        }
        Ok(())
    }

    /// Dev login is on when set explicitly, else exactly while no WeChat app
    /// is configured.
    pub fn dev_login_enabled(&self) -> bool {
        self.auth.dev_login.unwrap_or(self.wechat.app_id.is_empty())
    }

    /// Directory holding the database; generated files (jwt.secret) live here.
    pub fn data_dir(&self) -> PathBuf {
        Path::new(&self.database.path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The effective config as TOML with every secret replaced.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        for (key, _, _) in SECRETS {
            redact(c.secret_mut(key));
        }
        for p in &mut c.llm.providers {
            redact(&mut p.api_key);
        }
        toml_string(&c)
    }
}

fn toml_string(c: &Config) -> String {
    // figment's toml dependency serializes via its Value type.
    let value = figment::value::Value::serialize(c).expect("config serializes");
    let mut out = String::new();
    write_toml(&mut out, "", &value);
    out
}

/// Minimal TOML writer for the config's own shape (tables, arrays of tables,
/// scalars, arrays of scalars), so `config check` prints a file that can be
/// pasted back as config.toml.
fn write_toml(out: &mut String, prefix: &str, value: &figment::value::Value) {
    use figment::value::Value;
    let Value::Dict(_, dict) = value else { return };
    let is_table = |v: &Value| matches!(v, Value::Dict(..));
    let is_table_array =
        |v: &Value| matches!(v, Value::Array(_, a) if !a.is_empty() && a.iter().all(is_table));
    for (k, v) in dict
        .iter()
        .filter(|(_, v)| !is_table(v) && !is_table_array(v))
    {
        if matches!(v, Value::Empty(..)) {
            // An unset optional key (TOML has no null).
            out.push_str(&format!("# {k} is unset\n"));
            continue;
        }
        out.push_str(&format!("{k} = {}\n", scalar(v)));
    }
    for (k, v) in dict.iter().filter(|(_, v)| is_table(v)) {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push_str(&format!("\n[{name}]\n"));
        write_toml(out, &name, v);
    }
    for (k, v) in dict.iter().filter(|(_, v)| is_table_array(v)) {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Value::Array(_, items) = v {
            for item in items {
                out.push_str(&format!("\n[[{name}]]\n"));
                write_toml(out, &name, item);
            }
        }
    }
}

fn scalar(v: &figment::value::Value) -> String {
    use figment::value::Value;
    match v {
        Value::String(_, s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(_, a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => match (n.to_i128(), n.to_u128()) {
            (Some(i), _) => i.to_string(),
            (None, Some(u)) => u.to_string(),
            (None, None) => n.to_f64().map(|f| f.to_string()).unwrap_or_default(),
        },
        Value::Char(_, c) => format!("\"{c}\""),
        Value::Empty(..) | Value::Dict(..) => "\"\"".into(),
    }
}

fn redact(s: &mut String) {
    if !s.is_empty() {
        *s = "<redacted>".into();
    }
}

fn validate_s3(s3: &S3Config) -> Result<(), ConfigError> {
    if !s3.endpoint.is_empty() {
        check_url("storage.s3.endpoint", &s3.endpoint)?;
        let url = reqwest::Url::parse(&s3.endpoint)
            .map_err(|e| bad("storage.s3.endpoint", format!("not a URL: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad(
                "storage.s3.endpoint",
                "must not carry a query, fragment or credentials",
            ));
        }
    }
    for (key, value) in [
        ("storage.s3.region", &s3.region),
        ("storage.s3.bucket", &s3.bucket),
        ("storage.s3.access_key_id", &s3.access_key_id),
        ("storage.s3.secret_access_key", &s3.secret_access_key),
    ] {
        if value.trim().is_empty() {
            return Err(bad(key, "required when storage.kind = \"s3\""));
        }
    }
    // Path-style addressing puts the bucket in the path: keep it one segment.
    if s3.bucket.contains('/') {
        return Err(bad(
            "storage.s3.bucket",
            "must be a bucket name, not a path",
        ));
    }
    Ok(())
}

/// `type/subtype`, lowercase, no parameters (what the allowlist compares).
fn is_plain_mime(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&-^_.+".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(bad(key, format!("{url:?} is not an http(s) URL")))
    }
}

pub fn parse_offset(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// The original deployment's variable names, as a partial config.
fn legacy_env(env: &HashMap<String, String>) -> Result<serde_json::Value, ConfigError> {
    use serde_json::{json, Map, Value};
    let mut root = Map::new();
    let mut set = |section: &str, key: &str, value: Value| {
        let mut node = &mut root;
        for part in section.split('.') {
            node = node
                .entry(part)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("object");
        }
        node.insert(key.into(), value);
    };
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
    if let Some(url) = get("DATABASE_URL") {
        set("database", "path", json!(database_path(url)?));
    }
    if let Some(v) = get("JWT_SECRET") {
        set("auth", "jwt_secret", json!(v));
    }
    if let Some(v) = get("WECHAT_APPID") {
        set("wechat", "app_id", json!(v));
    }
    if let Some(v) = get("WECHAT_SECRET") {
        set("wechat", "app_secret", json!(v));
    }
    if let Some(v) = get("WECHAT_PAY_MCHID") {
        set("wechat_pay", "mch_id", json!(v));
    }
    if let Some(v) = get("WECHAT_PAY_V3KEY") {
        set("wechat_pay", "api_v3_key", json!(v));
    }
    if let Some(v) = get("WECHAT_PAY_SERIAL_NO") {
        set("wechat_pay", "serial_no", json!(v));
    }
    if let Some(v) = get("APP_BASE_URL") {
        set("server", "public_url", json!(v.trim_end_matches('/')));
    }
    if let Some(v) = get("SUPABASE_URL") {
        let endpoint = format!("{}/storage/v1/s3", v.trim_end_matches('/'));
        set("storage.s3", "endpoint", json!(endpoint));
    }
    if let Some(v) = get("SUPABASE_S3_ACCESS_KEY_ID") {
        set("storage.s3", "access_key_id", json!(v));
    }
    if let Some(v) = get("SUPABASE_S3_SECRET_ACCESS_KEY") {
        set("storage.s3", "secret_access_key", json!(v));
    }
    Ok(Value::Object(root))
}

/// `sqlite:PATH`, `sqlite://PATH` or a plain path; anything else is refused.
pub fn database_path(url: &str) -> Result<String, ConfigError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres:")
        || lower.starts_with("postgresql:")
        || lower.starts_with("mysql:")
    {
        return Err(bad(
            "database.path (DATABASE_URL)",
            "this binary stores data in SQLite; give a sqlite: URL or a file path, not a server URL",
        ));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() {
        return Err(bad("database.path (DATABASE_URL)", "empty path"));
    }
    Ok(path.to_string())
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "config".to_string()
    } else {
        e.path.join(".")
    };
    let message = match &e.kind {
        figment::error::Kind::UnknownField(f, _) => format!("unknown key `{f}`"),
        _ => e.kind.to_string(),
    };
    let message = match &e.metadata {
        Some(md) => format!("{message} (from {})", md.name),
        None => message,
    };
    ConfigError { key, message }
}

/// A figment provider reading `MVP28_*` variables out of a given map rather
/// than the process environment.
struct EnvFromMap {
    dict: figment::value::Dict,
}

impl EnvFromMap {
    fn new(vars: &HashMap<String, String>) -> Self {
        use figment::value::{Dict, Value};
        let defaults = Value::serialize(Config::default()).expect("config serializes");
        let mut dict = Dict::new();
        for (k, v) in vars {
            let Some(rest) = k.strip_prefix("MVP28_") else {
                continue;
            };
            if rest.to_ascii_lowercase().ends_with("_file") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            // String keys take the value verbatim (a numeric mch_id or an
            // all-digit secret stays a string); others are parsed (numbers,
            // booleans, arrays).
            let is_string = matches!(defaults.find_ref(&path.join(".")), Some(Value::String(..)));
            let value: Value = if is_string {
                Value::from(v.clone())
            } else {
                v.parse().unwrap_or_else(|_| Value::from(v.clone()))
            };
            insert_path(&mut dict, &path, value);
        }
        EnvFromMap { dict }
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

impl figment::Provider for EnvFromMap {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("MVP28_ environment variable")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.dict.clone()))
    }
}
