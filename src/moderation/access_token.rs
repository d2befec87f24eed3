//! The mini-program's `access_token` for WeChat's server APIs, one per
//! process: fetched with `POST /cgi-bin/stable_token`, cached until shortly
//! before `expires_in`, and refreshed once — however many callers saw it
//! rejected at the same moment — when an API answers errcode 40001/42001.
//!
//! Not specific to content security: any WeChat server API (subscribe
//! messages, URL links, …) can take its token from here. The token is a
//! credential: it is never logged, never in an error, and `Debug` hides it.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::WechatConfig;

/// Refreshed this long before WeChat says it expires.
const EARLY: Duration = Duration::from_secs(300);

/// errcodes meaning "this access_token is invalid or expired": refresh once.
pub fn is_token_rejected(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

/// An access token. Compared by value; printed as `AccessToken(…)`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// For building the request URL only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(…)")
    }
}

/// Why no token could be had (safe to log: holds neither secret nor token).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("stable_token could not be reached ({0})")]
    Unreachable(String),
    #[error("stable_token refused: errcode {errcode} ({errmsg})")]
    Refused { errcode: i64, errmsg: String },
    #[error("stable_token answered an unusable body")]
    Unusable,
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

pub struct AccessTokens {
    client: reqwest::Client,
    url: String,
    app_id: String,
    app_secret: String,
    /// Held across the fetch: concurrent callers wait for the one fetch
    /// instead of each starting their own (single flight).
    current: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct StableToken {
    access_token: Option<String>,
    expires_in: Option<u64>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

impl AccessTokens {
    pub fn new(cfg: &WechatConfig) -> AccessTokens {
        AccessTokens {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(cfg.timeout_secs))
                .build()
                .expect("reqwest client"),
            url: format!(
                "{}/cgi-bin/stable_token",
                cfg.api_base.trim_end_matches('/')
            ),
            app_id: cfg.app_id.clone(),
            app_secret: cfg.app_secret.clone(),
            current: Mutex::new(None),
        }
    }

    /// The cached token, fetching one when there is none or it is about to
    /// expire.
    pub async fn get(&self) -> Result<AccessToken, TokenError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cur = Some(fresh);
        Ok(token)
    }

    /// `rejected` was refused by an API (40001/42001): fetches a new token,
    /// unless another caller already replaced it, in which case that one is
    /// returned. However many callers see the same rejection, one fetch.
    pub async fn refresh(&self, rejected: &AccessToken) -> Result<AccessToken, TokenError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref().filter(|c| c.token != *rejected) {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        *cur = None;
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cur = Some(fresh);
        Ok(token)
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        // Normal mode (force_refresh false): WeChat answers the token that
        // is valid now, so another holder of the app's credentials (a second
        // deployment) is not invalidated by us and vice versa.
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": self.app_id,
            "secret": self.app_secret,
            "force_refresh": false,
        });
        let res = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(kind(&e)))?;
        let bytes = res
            .bytes()
            .await
            .map_err(|e| TokenError::Unreachable(kind(&e)))?;
        let parsed: StableToken =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Unusable)?;
        match (parsed.errcode.unwrap_or(0), parsed.access_token) {
            (0, Some(t)) if !t.is_empty() => {
                let ttl = Duration::from_secs(parsed.expires_in.unwrap_or(7200));
                // never cache for less than half its life (a short expires_in)
                let keep = ttl.saturating_sub(EARLY).max(ttl / 2);
                tracing::info!(expires_in = ttl.as_secs(), "WeChat access token fetched");
                Ok(Cached {
                    token: AccessToken(t),
                    refresh_at: Instant::now() + keep,
                })
            }
            (0, _) => Err(TokenError::Unusable),
            (errcode, _) => {
                let errmsg = parsed.errmsg.unwrap_or_default();
                tracing::warn!(errcode, errmsg = %errmsg, "stable_token refused");
                Err(TokenError::Refused { errcode, errmsg })
            }
        }
    }
}

/// What went wrong with a request, without its URL or body.
pub(crate) fn kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_decode() || e.is_body() {
        "unreadable answer".into()
    } else {
        "request failed".into()
    }
}
