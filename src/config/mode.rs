//! Dev or production: whether the dev login and the echo model may run.
//!
//! Both are conveniences for a laptop. They are on by default only while
//! nothing says "this is a real deployment": no WeChat app id, WeChat Pay
//! off, and a loopback bind address. Anywhere else they must be asked for
//! by name (`auth.dev_login = true`, `llm.allow_echo = true`), or `serve`
//! refuses to start: a server that anyone can log into for free, or whose
//! "model" only echoes while counting replies as real, must never happen by
//! accident.

use std::net::SocketAddr;

use super::{bad, Config, ConfigError};

/// What `serve` will run as, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mode {
    pub dev_login: bool,
    pub echo: bool,
    /// A dev feature is on outside the local defaults because a key asked
    /// for it: worth a loud warning.
    pub explicit_dev: bool,
    /// One line saying why this mode was chosen.
    pub why: String,
}

impl Mode {
    pub fn is_dev(&self) -> bool {
        self.dev_login || self.echo
    }

    pub fn name(&self) -> &'static str {
        if self.is_dev() {
            "dev"
        } else {
            "prod"
        }
    }
}

impl Config {
    /// The reasons this is not a local toy setup (empty: it is one).
    fn deployment_signs(&self) -> Vec<String> {
        let mut signs = vec![];
        if !self.wechat.app_id.is_empty() {
            signs.push("wechat.app_id is set".to_string());
        }
        if self.payments_enabled() {
            signs.push("WeChat Pay is on".to_string());
        }
        if !self.bind_is_loopback() {
            signs.push(format!("server.bind {} is not loopback", self.server.bind));
        }
        signs
    }

    /// True while `server.bind` is a loopback address (an unparsable bind
    /// is refused by `validate`; here it counts as public).
    pub fn bind_is_loopback(&self) -> bool {
        self.server
            .bind
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
    }

    /// Dev login: as set explicitly, else only in a local toy setup.
    pub fn dev_login_enabled(&self) -> bool {
        self.auth
            .dev_login
            .unwrap_or_else(|| self.deployment_signs().is_empty())
    }

    /// The echo model may answer: as set explicitly, else only in a local
    /// toy setup.
    pub fn echo_allowed(&self) -> bool {
        self.llm
            .allow_echo
            .unwrap_or_else(|| self.deployment_signs().is_empty())
    }

    /// True when the echo model would answer some request: a provider of
    /// kind `echo`, or no provider with a key (then echo answers all).
    pub fn echo_in_use(&self) -> bool {
        let providers = &self.llm.providers;
        providers.iter().any(|p| p.kind == "echo")
            || !providers
                .iter()
                .any(|p| p.kind != "echo" && !p.api_key.is_empty())
    }

    /// Dev or production, or the one-line refusal `serve` exits 2 with.
    pub fn mode(&self) -> Result<Mode, ConfigError> {
        let signs = self.deployment_signs();
        let toy = signs.is_empty();
        let because = signs.join(", ");
        if self.wechat.app_id.is_empty() && self.auth.dev_login.is_none() && !toy {
            return Err(bad(
                "wechat.app_id",
                format!(
                    "no login is configured and the dev login is off because {because}: \
                     set wechat.app_id and wechat.app_secret (WECHAT_APPID, WECHAT_SECRET), \
                     or auth.dev_login = true for a test deployment"
                ),
            ));
        }
        let echo = self.echo_in_use();
        if echo && !self.echo_allowed() {
            let why = match self.llm.allow_echo {
                Some(false) => "llm.allow_echo = false".to_string(),
                _ => because.clone(),
            };
            return Err(bad(
                "llm.allow_echo",
                format!(
                    "no model provider has an api_key, so the echo model would answer \
                     (and its replies be counted as real), refused because {why}: \
                     set OPENAI_API_KEY or llm.providers[].api_key, \
                     or llm.allow_echo = true for a test deployment"
                ),
            ));
        }
        let dev_login = self.dev_login_enabled();
        // Outside the local defaults, anything dev was asked for by name
        // (the checks above refused the rest).
        let explicit_dev = !toy && (dev_login || echo);
        let why = if !(dev_login || echo) {
            "WeChat login and real model providers".to_string()
        } else if toy {
            "local defaults (no wechat.app_id, WeChat Pay off, loopback bind)".to_string()
        } else {
            let mut asked = vec![];
            if dev_login {
                asked.push("auth.dev_login = true");
            }
            if echo {
                asked.push("llm.allow_echo = true");
            }
            format!("{} although {because}", asked.join(" and "))
        };
        Ok(Mode {
            dev_login,
            echo,
            explicit_dev,
            why,
        })
    }

    /// `"dev"` when the dev login or the echo model is on, else `"prod"`;
    /// never fails (for /api/health of a server already running).
    pub fn mode_name(&self) -> &'static str {
        if self.dev_login_enabled() || self.echo_in_use() {
            "dev"
        } else {
            "prod"
        }
    }
}
