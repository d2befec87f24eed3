use serde::{Deserialize, Serialize};

use super::{bad, check_url, ConfigError};

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

impl WechatPayConfig {
    /// Payments are on exactly when a merchant id is configured.
    pub(super) fn enabled(&self) -> bool {
        !self.mch_id.trim().is_empty()
    }

    /// Only checked once payments are enabled (mch_id set); the key files
    /// themselves are read by `pay::Payments::from_config` at start. The
    /// AppID and notify URL fall back to other sections, so `Config`
    /// checks those.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_url("wechat_pay.api_base", &self.api_base)?;
        if !self.enabled() {
            return Ok(());
        }
        let required = [
            ("wechat_pay.serial_no", &self.serial_no),
            ("wechat_pay.private_key_path", &self.private_key_path),
            ("wechat_pay.api_v3_key", &self.api_v3_key),
        ];
        for (key, value) in required {
            if value.trim().is_empty() {
                return Err(bad(key, "required when wechat_pay.mch_id is set"));
            }
        }
        if self.api_v3_key.len() != 32 {
            return Err(bad(
                "wechat_pay.api_v3_key",
                format!("must be exactly 32 bytes (got {})", self.api_v3_key.len()),
            ));
        }
        if self.platform_public_key_path.is_empty() != self.platform_public_key_id.is_empty() {
            let missing = if self.platform_public_key_path.is_empty() {
                "wechat_pay.platform_public_key_path"
            } else {
                "wechat_pay.platform_public_key_id"
            };
            return Err(bad(
                missing,
                "platform_public_key_path and platform_public_key_id go together",
            ));
        }
        if self.platform_public_key_path.is_empty() && self.platform_cert_paths.is_empty() {
            return Err(bad(
                "wechat_pay.platform_public_key_path",
                "required when wechat_pay.mch_id is set (the WeChat Pay public key), \
                 unless wechat_pay.platform_cert_paths lists platform certificates",
            ));
        }
        if !self.platform_public_key_path.is_empty()
            && !self.platform_public_key_id.starts_with("PUB_KEY_ID_")
        {
            return Err(bad(
                "wechat_pay.platform_public_key_id",
                "must be the key's id as shown by WeChat Pay (PUB_KEY_ID_…)",
            ));
        }
        let chars = self.description.chars().count();
        if chars == 0 || chars > 127 {
            return Err(bad("wechat_pay.description", "must be 1-127 characters"));
        }
        if self.timeout_secs == 0 {
            return Err(bad("wechat_pay.timeout_secs", "must be > 0"));
        }
        Ok(())
    }
}
