use serde::{Deserialize, Serialize};

use super::{bad, check_url, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatConfig {
    pub app_id: String,
    pub app_secret: String,
    pub api_base: String,
    pub timeout_secs: u64,
    /// The Token of the mini-program's message push (消息推送) settings:
    /// verifies the signature of every push (`/api/wechat/callback`). A
    /// secret: from the config or environment only, never defaulted.
    pub push_token: String,
    /// The EncodingAESKey of the message push settings (43 characters):
    /// needed for the safe (encrypted) mode only.
    pub push_aes_key: String,
}

impl Default for WechatConfig {
    fn default() -> Self {
        Self {
            app_id: String::new(),
            app_secret: String::new(),
            api_base: "https://api.weixin.qq.com".into(),
            timeout_secs: 5,
            push_token: String::new(),
            push_aes_key: String::new(),
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
        // WeChat's own rule for the Token: 3-32 letters or digits.
        if !self.push_token.is_empty()
            && (!(3..=32).contains(&self.push_token.len())
                || !self.push_token.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(bad(
                "wechat.push_token",
                "must be 3-32 letters or digits (the Token of the message push settings)",
            ));
        }
        if !self.push_aes_key.is_empty()
            && crate::moderation::push::AesKey::parse(&self.push_aes_key).is_none()
        {
            return Err(bad(
                "wechat.push_aes_key",
                "must be the 43-character EncodingAESKey of the message push settings",
            ));
        }
        if !self.push_aes_key.is_empty() && self.push_token.is_empty() {
            return Err(bad(
                "wechat.push_token",
                "required with wechat.push_aes_key (the safe mode is signed with the Token too)",
            ));
        }
        Ok(())
    }
}
