//! WeChat login credentials (jscode2session with a made-up code) and WeChat
//! Pay (a signed query of a made-up order; key expiry).

use chrono::Utc;

use super::{Check, PROBE_TIMEOUT};
use crate::config::Config;
use crate::pay::client::SignedError;
use crate::pay::crypto::VerifyError;
use crate::pay::Payments;

pub async fn login(cfg: &Config) -> Vec<Check> {
    let login = crate::auth::wechat::LoginProviders::from_config(cfg);
    let app = &cfg.wechat.app_id;
    let Some(answer) = login.probe_wechat().await else {
        return vec![if cfg.dev_login_enabled() {
            Check::warn(
                "wechat",
                "wechat.app_id",
                "no WeChat app configured: only the dev login works",
                "set WECHAT_APPID and WECHAT_SECRET for real logins",
            )
        } else {
            Check::ok("wechat", "no WeChat app configured")
        }];
    };
    let check = match answer {
        Ok((40029 | 40163, _)) => Check::ok(
            "wechat",
            format!("app id {app} and secret accepted (a made-up code got errcode 40029)"),
        ),
        Ok((40013, msg)) => Check::fail(
            "wechat",
            "wechat.app_id",
            format!("WeChat does not know app id {app:?} (errcode 40013: {msg})"),
            "set WECHAT_APPID / wechat.app_id to the mini-program's AppID (mp.weixin.qq.com: Development settings)",
        ),
        Ok((code @ (40125 | 40001), msg)) => Check::fail(
            "wechat",
            "wechat.app_secret",
            format!("WeChat refuses the app secret of {app} (errcode {code}: {msg})"),
            "set WECHAT_SECRET / wechat.app_secret to the current AppSecret (reset it on mp.weixin.qq.com if unknown)",
        ),
        Ok((code @ (-1 | 45011), msg)) => Check::warn(
            "wechat",
            "wechat.app_id",
            format!("WeChat is busy (errcode {code}: {msg}); credentials not confirmed"),
            "run doctor again in a minute",
        ),
        Ok((0, _)) => Check::warn(
            "wechat",
            "wechat.api_base",
            "jscode2session accepted a made-up code: wechat.api_base is not WeChat",
            "leave wechat.api_base at https://api.weixin.qq.com",
        ),
        Ok((code, msg)) => Check::fail(
            "wechat",
            "wechat.app_id",
            format!("WeChat refused the credentials (errcode {code}: {msg})"),
            "check WECHAT_APPID / WECHAT_SECRET",
        ),
        Err(e) => Check::fail(
            "wechat",
            "wechat.api_base",
            e.message.clone(),
            "check network access to api.weixin.qq.com from this machine",
        ),
    };
    vec![check]
}

pub async fn pay(cfg: &Config, payments: Option<&Payments>) -> Vec<Check> {
    let Some(pay) = payments else {
        if cfg.payments_enabled() {
            return vec![]; // the key files already failed, reported by the caller
        }
        return vec![Check::ok(
            "wechat_pay",
            "off (wechat_pay.mch_id is empty): /api/pay/* answers 503 payments_disabled",
        )];
    };
    let mut out = vec![];
    let p = &cfg.wechat_pay;
    let probe = tokio::time::timeout(PROBE_TIMEOUT, pay.client.probe(Utc::now())).await;
    out.push(match probe {
        Err(_) => Check::fail(
            "wechat_pay",
            "wechat_pay.api_base",
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
            "check network access to api.mch.weixin.qq.com",
        ),
        Ok(Err(e)) => Check::fail(
            "wechat_pay",
            "wechat_pay.api_base",
            e.to_string(),
            "check network access to api.mch.weixin.qq.com",
        ),
        Ok(Ok(pr)) => match (pr.status, pr.code.as_str(), &pr.signature) {
            (404, "ORDER_NOT_EXIST", Ok(())) => Check::ok(
                "wechat_pay",
                format!(
                    "merchant {}: a signed query of a made-up order came back ORDER_NOT_EXIST with a valid platform signature \
                     (mch_id, private key, serial_no and platform key verified; api_v3_key is proven by the first notification)",
                    p.mch_id
                ),
            ),
            (_, _, Err(SignedError::Stale { skew_secs })) => Check::fail(
                "wechat_pay",
                "clock",
                format!("WeChat Pay's answer is {skew_secs} s away from this machine's clock (5 minutes at most)"),
                "enable NTP (timedatectl set-ntp true)",
            ),
            (401, code, _) => Check::fail(
                "wechat_pay",
                "wechat_pay.private_key_path",
                format!(
                    "WeChat Pay refused our request signature ({code}: {}): the merchant private key, \
                     wechat_pay.serial_no and wechat_pay.mch_id do not belong together",
                    pr.message
                ),
                "use the apiclient_key.pem of the merchant certificate whose serial is serial_no \
                 (openssl x509 -in apiclient_cert.pem -noout -serial) and the merchant's mch_id",
            ),
            (404, "ORDER_NOT_EXIST", Err(SignedError::Verify(VerifyError::UnknownSerial(s)))) => {
                Check::fail(
                    "wechat_pay",
                    "wechat_pay.platform_public_key_id",
                    format!("WeChat Pay signed with key {s:?}, which is not configured"),
                    "set platform_public_key_id (PUB_KEY_ID_…) and platform_public_key_path to WeChat Pay's current public key",
                )
            }
            (404, "ORDER_NOT_EXIST", Err(e)) => Check::fail(
                "wechat_pay",
                "wechat_pay.platform_public_key_path",
                format!("the merchant keys work, but WeChat Pay's answer does not verify: {e}"),
                "download WeChat Pay's public key (or platform certificate) again from the merchant platform",
            ),
            (status, code, _) => Check::fail(
                "wechat_pay",
                "wechat_pay.mch_id",
                format!("unexpected answer {status} {code}: {}", pr.message),
                "check mch_id, serial_no and api_base",
            ),
        },
    });
    out.extend(key_expiry(cfg));
    out
}

/// Platform certificates expire; a public key does not.
fn key_expiry(cfg: &Config) -> Vec<Check> {
    let p = &cfg.wechat_pay;
    let mut out = vec![];
    if !p.platform_public_key_path.is_empty() {
        out.push(Check::ok(
            "wechat_pay",
            format!(
                "WeChat Pay public key {} (public keys do not expire)",
                p.platform_public_key_id
            ),
        ));
    }
    let now = Utc::now();
    for path in &p.platform_cert_paths {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| crate::pay::crypto::platform_cert_from_pem(&pem));
        out.push(match parsed {
            Err(e) => Check::fail("wechat_pay", "wechat_pay.platform_cert_paths", format!("{path}: {e}"), ""),
            Ok((serial, _, not_after)) => {
                let days = (not_after - now).num_days();
                let msg = format!("platform certificate {serial} expires {}", not_after.format("%Y-%m-%d"));
                let fix = "download the current platform certificate, or switch to the WeChat Pay public key";
                if not_after < now {
                    Check::fail("wechat_pay", "wechat_pay.platform_cert_paths", format!("{msg}: expired"), fix)
                } else if days < 30 {
                    Check::warn("wechat_pay", "wechat_pay.platform_cert_paths", format!("{msg}: in {days} days"), fix)
                } else {
                    Check::ok("wechat_pay", msg)
                }
            }
        });
    }
    out
}
