use serde::{Deserialize, Serialize};

use super::{bad, check_url, ConfigError};

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

impl WechatConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.app_id.is_empty() && self.app_secret.is_empty() {
            return Err(bad(
                "wechat.app_secret",
                "required when wechat.app_id is set",
            ));
        }
        check_url("wechat.api_base", &self.api_base)?;
        Ok(())
    }
}
