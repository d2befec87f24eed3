//! WeChat Pay API v3 (merchant, JSAPI for the mini-program): top-up
//! checkout, notifications that credit exactly once, order queries and
//! reconciliation. Enabled when `wechat_pay.mch_id` is set.

pub mod client;
pub mod crypto;
pub mod handlers;
pub mod reconcile;
pub mod service;
pub mod views;

use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::config::Config;
use client::PayClient;
use crypto::{ApiV3Key, MerchantKey, PlatformKeys};

/// How long a checkout order can be paid (JSAPI `time_expire`).
pub const ORDER_TTL_SECS: i64 = 2 * 3600;

/// Everything payments need, loaded (keys parsed) once at start.
pub struct Payments {
    pub client: PayClient,
    pub mch_id: String,
    pub app_id: String,
    pub notify_url: String,
    pub description: String,
    pub api_v3: ApiV3Key,
}

impl Payments {
    /// None when payments are disabled; an error naming the key when a key
    /// file is missing or unreadable, so a bad deployment fails at start
    /// rather than at the first payment.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Payments>> {
        if !cfg.payments_enabled() {
            return Ok(None);
        }
        let p = &cfg.wechat_pay;
        let key_pem = read("wechat_pay.private_key_path", &p.private_key_path)?;
        let key = MerchantKey::from_pem(&key_pem)
            .map_err(|e| anyhow!("wechat_pay.private_key_path: {}: {e}", p.private_key_path))?;
        let mut platform = PlatformKeys::default();
        if !p.platform_public_key_path.is_empty() {
            let pem = read(
                "wechat_pay.platform_public_key_path",
                &p.platform_public_key_path,
            )?;
            let pk = crypto::public_key_from_pem(&pem).map_err(|e| {
                anyhow!(
                    "wechat_pay.platform_public_key_path: {}: {e}",
                    p.platform_public_key_path
                )
            })?;
            platform.insert(&p.platform_public_key_id, pk);
        }
        for path in &p.platform_cert_paths {
            let pem = read("wechat_pay.platform_cert_paths", path)?;
            let (serial, pk, not_after) = crypto::platform_cert_from_pem(&pem)
                .map_err(|e| anyhow!("wechat_pay.platform_cert_paths: {path}: {e}"))?;
            if not_after < chrono::Utc::now() {
                tracing::warn!(serial = %serial, %not_after, "WeChat Pay platform certificate has expired; download the current one");
            }
            platform.insert(&serial, pk);
        }
        let api_v3 =
            ApiV3Key::new(&p.api_v3_key).map_err(|e| anyhow!("wechat_pay.api_v3_key: {e}"))?;
        Ok(Some(Payments {
            client: PayClient::new(
                &p.api_base,
                &p.mch_id,
                &p.serial_no,
                key,
                platform,
                Duration::from_secs(p.timeout_secs),
            ),
            mch_id: p.mch_id.clone(),
            app_id: cfg.pay_app_id(),
            notify_url: cfg.pay_notify_url(),
            description: p.description.clone(),
            api_v3,
        }))
    }
}

fn read(key: &str, path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{key}: cannot read {path}"))
}

/// The string the mini-program's `paySign` signs:
/// "appId\ntimeStamp\nnonceStr\npackage\n".
pub fn pay_sign_message(app_id: &str, timestamp: &str, nonce: &str, package: &str) -> String {
    format!("{app_id}\n{timestamp}\n{nonce}\n{package}\n")
}
