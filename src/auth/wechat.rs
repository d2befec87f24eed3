//! Login providers: WeChat's jscode2session, and `dev:<name>` codes for
//! local development.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use crate::config::Config;
use crate::error::{AppError, ErrorCode};

pub struct Identity {
    pub openid: String,
    pub unionid: Option<String>,
}

pub struct LoginProviders {
    dev: bool,
    wechat: Option<WechatLogin>,
}

struct WechatLogin {
    app_id: String,
    app_secret: String,
    url: String,
    client: reqwest::Client,
}

/// jscode2session answers JSON, sometimes labelled text/plain.
#[derive(Deserialize)]
struct Code2Session {
    openid: Option<String>,
    unionid: Option<String>,
    errcode: Option<i64>,
    errmsg: Option<String>,
    // session_key is deliberately not deserialized: it is never needed,
    // stored, returned or logged.
}

impl LoginProviders {
    pub fn from_config(cfg: &Config) -> Self {
        let wechat = (!cfg.wechat.app_id.is_empty()).then(|| WechatLogin {
            app_id: cfg.wechat.app_id.clone(),
            app_secret: cfg.wechat.app_secret.clone(),
            url: format!(
                "{}/sns/jscode2session",
                cfg.wechat.api_base.trim_end_matches('/')
            ),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(cfg.wechat.timeout_secs))
                .build()
                .expect("reqwest client"),
        });
        Self {
            dev: cfg.dev_login_enabled(),
            wechat,
        }
    }

    pub fn dev_enabled(&self) -> bool {
        self.dev
    }

    /// jscode2session with a code WeChat cannot know (for `mvp28 doctor`):
    /// WeChat's (errcode, errmsg). 40029 means the app id and secret were
    /// accepted and only the code was refused; 40013 / 40125 mean they are
    /// wrong. None when no WeChat app is configured.
    pub async fn probe_wechat(&self) -> Option<Result<(i64, String), AppError>> {
        let w = self.wechat.as_ref()?;
        let code = format!("mvp28-doctor-{}", crate::ids::random_hex(8));
        Some(
            w.fetch(&code)
                .await
                .map(|p| (p.errcode.unwrap_or(0), p.errmsg.unwrap_or_default())),
        )
    }

    pub async fn identify(&self, code: &str) -> Result<Identity, AppError> {
        if let Some(name) = code.strip_prefix("dev:") {
            if self.dev {
                return dev_identity(name);
            }
        }
        match &self.wechat {
            Some(w) => w.code2session(code).await,
            None => Err(invalid_code(
                "dev login expects a code of the form dev:<name>",
            )),
        }
    }
}

fn invalid_code(msg: impl Into<String>) -> AppError {
    AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCode, msg)
}

fn dev_identity(name: &str) -> Result<Identity, AppError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(AppError::validation(
            "code",
            "dev:<name> needs 1-64 of [A-Za-z0-9-_.]",
        ));
    }
    Ok(Identity {
        openid: format!("dev:{name}"),
        unionid: None,
    })
}

impl WechatLogin {
    /// One jscode2session call, its body parsed.
    async fn fetch(&self, code: &str) -> Result<Code2Session, AppError> {
        let res = self
            .client
            .get(&self.url)
            .query(&[
                ("appid", self.app_id.as_str()),
                ("secret", self.app_secret.as_str()),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            .map_err(|e| wechat_unreachable(&e))?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| wechat_unreachable(&e))?;
        serde_json::from_slice(&body).map_err(|_| {
            tracing::warn!(
                http_status = status.as_u16(),
                "jscode2session answered non-JSON"
            );
            AppError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::UpstreamError,
                "WeChat login answered an unreadable body",
            )
        })
    }

    async fn code2session(&self, code: &str) -> Result<Identity, AppError> {
        let parsed = self.fetch(code).await?;
        match parsed.errcode.unwrap_or(0) {
            0 => match parsed.openid.filter(|o| !o.is_empty()) {
                Some(openid) => Ok(Identity {
                    openid,
                    unionid: parsed.unionid.filter(|u| !u.is_empty()),
                }),
                None => Err(AppError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::UpstreamError,
                    "WeChat login answered without an openid",
                )),
            },
            code => {
                let errmsg = parsed.errmsg.unwrap_or_default();
                let msg = format!("WeChat login failed (errcode {code}: {errmsg})");
                tracing::info!(errcode = code, "jscode2session refused");
                Err(match code {
                    40029 | 40163 => invalid_code(msg),
                    45011 => {
                        AppError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, msg)
                            .with_retry_after(60)
                    }
                    40226 => AppError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, msg),
                    -1 => AppError::unavailable(ErrorCode::UpstreamBusy, msg).with_retry_after(1),
                    _ => invalid_code(msg),
                })
            }
        }
    }
}

fn wechat_unreachable(e: &reqwest::Error) -> AppError {
    // The URL carries the app secret: never let it reach a log or a client.
    let kind = if e.is_timeout() {
        "timed out"
    } else {
        "could not be reached"
    };
    tracing::warn!(error = %e.without_url_ref(), "jscode2session {kind}");
    AppError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::UpstreamError,
        format!("WeChat login {kind}"),
    )
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(u) = self.url() {
            s = s.replace(u.as_str(), "<jscode2session>");
        }
        s
    }
}
