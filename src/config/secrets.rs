//! One table of every secret, shared by `_FILE` loading and `config check`
//! redaction so that a new secret cannot be read from a file yet printed
//! in clear (or the reverse).

use super::Config;

/// Every secret: (config key, its `MVP28_` env name, its original env name).
pub(super) const SECRETS: &[(&str, &str, Option<&str>)] = &[
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
    (
        "storage.s3.session_token",
        "MVP28_STORAGE__S3__SESSION_TOKEN",
        Some("SUPABASE_SERVICE_KEY"),
    ),
    ("metrics.token", "MVP28_METRICS__TOKEN", None),
    // a postgres:// URL carries the database password
    ("database.url", "MVP28_DATABASE__URL", None),
    ("wechat.push_token", "MVP28_WECHAT__PUSH_TOKEN", None),
    ("wechat.push_aes_key", "MVP28_WECHAT__PUSH_AES_KEY", None),
    ("voice.api_key", "MVP28_VOICE__API_KEY", None),
    (
        "voice.assemblyai_api_key",
        "MVP28_VOICE__ASSEMBLYAI_API_KEY",
        None,
    ),
    (
        "server.tls.acme_eab_hmac_key",
        "MVP28_SERVER__TLS__ACME_EAB_HMAC_KEY",
        None,
    ),
    (
        "storage.s3.secret_access_key",
        "MVP28_STORAGE__S3__SECRET_ACCESS_KEY",
        Some("SUPABASE_S3_SECRET_ACCESS_KEY"),
    ),
];

impl Config {
    pub(super) fn secret_mut(&mut self, key: &str) -> &mut String {
        match key {
            "auth.jwt_secret" => &mut self.auth.jwt_secret,
            "wechat.app_secret" => &mut self.wechat.app_secret,
            "wechat_pay.api_v3_key" => &mut self.wechat_pay.api_v3_key,
            "storage.s3.access_key_id" => &mut self.storage.s3.access_key_id,
            "storage.s3.secret_access_key" => &mut self.storage.s3.secret_access_key,
            "storage.s3.session_token" => &mut self.storage.s3.session_token,
            "metrics.token" => &mut self.metrics.token,
            "database.url" => &mut self.database.url,
            "wechat.push_token" => &mut self.wechat.push_token,
            "wechat.push_aes_key" => &mut self.wechat.push_aes_key,
            "voice.api_key" => &mut self.voice.api_key,
            "voice.assemblyai_api_key" => &mut self.voice.assemblyai_api_key,
            "server.tls.acme_eab_hmac_key" => &mut self.server.tls.acme_eab_hmac_key,
            other => unreachable!("unknown secret {other}"),
        }
    }
}
