//! The public URL (https, resolves) and the clock (against the upstreams'
//! `Date` headers).

use std::time::Duration;

use chrono::Utc;

use super::{http, Check};
use crate::config::Config;

pub async fn public_url(cfg: &Config) -> Vec<Check> {
    let mut out = vec![url_check("server.public_url", &cfg.server.public_url).await];
    if cfg.payments_enabled() && !cfg.wechat_pay.notify_url.is_empty() {
        out.push(url_check("wechat_pay.notify_url", &cfg.pay_notify_url()).await);
    }
    out
}

/// https (WeChat only calls HTTPS/WSS domains) and resolvable. A plain
/// http URL on a loopback host is a local setup: a warning, not a failure.
async fn url_check(key: &str, url: &str) -> Check {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Check::fail("public_url", key, format!("{url:?} is not a URL: {e}"), ""),
    };
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let resolved = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host.clone(), port)),
    )
    .await;
    let addrs: Vec<std::net::SocketAddr> = match resolved {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => {
            return Check::fail(
                "public_url",
                key,
                format!("{host} does not resolve: {e}"),
                "point the domain's DNS at this server (or fix the URL)",
            )
        }
        Err(_) => {
            return Check::fail(
                "public_url",
                key,
                format!("{host}: DNS lookup timed out"),
                "check this machine's DNS resolver",
            )
        }
    };
    let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    let first = addrs
        .first()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    if parsed.scheme() == "https" {
        return Check::ok("public_url", format!("{url} (https) resolves to {first}"));
    }
    let msg = format!("{url} is not https: WeChat only calls HTTPS/WSS domains");
    let fix = "set APP_BASE_URL / server.public_url to the https URL of a domain listed in the \
               mini-program's server domains (TLS in front: see README, Behind a load balancer)";
    if loopback {
        Check::warn(
            "public_url",
            key,
            format!("{msg} (fine for a local test)"),
            fix,
        )
    } else {
        Check::fail("public_url", key, msg, fix)
    }
}

/// Compares this machine's clock with the `Date` header of each configured
/// upstream; WeChat Pay refuses requests more than 5 minutes off.
pub async fn clock(cfg: &Config) -> Vec<Check> {
    let mut targets: Vec<(String, String)> = vec![];
    if !cfg.wechat.app_id.is_empty() {
        targets.push(("WeChat".into(), cfg.wechat.api_base.clone()));
    }
    if cfg.payments_enabled() {
        targets.push(("WeChat Pay".into(), cfg.wechat_pay.api_base.clone()));
    }
    if cfg.storage.kind == "s3" && !cfg.storage.s3.endpoint.is_empty() {
        targets.push(("storage".into(), cfg.storage.s3.endpoint.clone()));
    }
    for p in cfg
        .llm
        .providers
        .iter()
        .filter(|p| p.kind != "echo" && !p.api_key.is_empty())
    {
        targets.push((p.name.clone(), p.base_url.clone()));
    }
    if targets.is_empty() {
        return vec![Check::ok("clock", "no upstream configured to compare with")];
    }
    let client = http();
    let dates = futures_util::future::join_all(targets.iter().map(|(name, url)| {
        let client = client.clone();
        async move {
            let res = client.get(url).send().await.ok()?;
            let date = res
                .headers()
                .get(reqwest::header::DATE)?
                .to_str()
                .ok()?
                .to_string();
            let theirs = chrono::DateTime::parse_from_rfc2822(&date).ok()?;
            Some((name.clone(), (theirs.timestamp() - Utc::now().timestamp())))
        }
    }))
    .await;
    let seen: Vec<(String, i64)> = dates.into_iter().flatten().collect();
    let Some((name, skew)) = seen.iter().max_by_key(|(_, s)| s.abs()).cloned() else {
        return vec![Check::warn(
            "clock",
            "clock",
            "no upstream answered with a Date header: the clock was not compared",
            "check that NTP is on (timedatectl)",
        )];
    };
    let fix = "enable NTP (timedatectl set-ntp true)";
    if skew.abs() > crate::pay::client::MAX_SKEW_SECS {
        vec![Check::fail(
            "clock",
            "clock",
            format!("{skew:+} s off {name}'s clock: WeChat Pay refuses more than 5 minutes"),
            fix,
        )]
    } else if skew.abs() > 60 {
        vec![Check::warn(
            "clock",
            "clock",
            format!("{skew:+} s off {name}'s clock"),
            fix,
        )]
    } else {
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        vec![Check::ok(
            "clock",
            format!("within {} s of {}", skew.abs().max(1), names.join(", ")),
        )]
    }
}
