use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub jwt_secret: String,
    pub token_ttl_secs: u64,
    /// None: on exactly while `wechat.app_id` is empty.
    pub dev_login: Option<bool>,
    /// Absolute session lifetime from login: refresh cannot pass it.
    pub session_max_days: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            token_ttl_secs: 604_800,
            dev_login: None,
            session_max_days: 30,
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            return Err(bad(
                "auth.jwt_secret",
                "must be at least 32 bytes (or empty to generate one)",
            ));
        }
        if self.token_ttl_secs < 60 {
            return Err(bad("auth.token_ttl_secs", "must be >= 60"));
        }
        if self.session_max_days == 0 || self.session_max_days > 3650 {
            return Err(bad("auth.session_max_days", "must be 1-3650"));
        }
        Ok(())
    }
}
