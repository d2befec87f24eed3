use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::tls::{TlsConfig, TlsMode};
use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: String,
    pub public_url: String,
    /// Peers whose X-Forwarded-For is believed: addresses or CIDR ranges.
    pub trusted_proxies: Vec<String>,
    pub request_timeout_secs: u64,
    pub max_body_bytes: usize,
    /// On SIGTERM, how long open requests/streams may finish before they are cut.
    pub shutdown_grace_secs: u64,
    /// With `[server.tls]`: a plain-HTTP listener (e.g. "0.0.0.0:80") that
    /// answers ACME http-01 challenges and redirects everything else to HTTPS.
    pub http_bind: String,
    /// HTTPS on `bind` (off by default).
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            trusted_proxies: vec![],
            request_timeout_secs: 120,
            shutdown_grace_secs: 20,
            max_body_bytes: 1024 * 1024,
            http_bind: String::new(),
            tls: TlsConfig::default(),
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.bind.parse::<SocketAddr>().map_err(|e| {
            bad(
                "server.bind",
                format!("{:?} is not host:port ({e})", self.bind),
            )
        })?;
        for p in &self.trusted_proxies {
            super::Cidr::parse(p).ok_or_else(|| {
                bad(
                    "server.trusted_proxies",
                    format!("{p:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)"),
                )
            })?;
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(bad(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        if self.request_timeout_secs == 0 {
            return Err(bad("server.request_timeout_secs", "must be > 0"));
        }
        if self.max_body_bytes < 1024 {
            return Err(bad("server.max_body_bytes", "must be >= 1024"));
        }
        self.tls.validate()?;
        if !self.http_bind.is_empty() {
            self.http_bind.parse::<SocketAddr>().map_err(|e| {
                bad(
                    "server.http_bind",
                    format!("{:?} is not host:port ({e})", self.http_bind),
                )
            })?;
            if self.tls.mode() == TlsMode::Off {
                return Err(bad(
                    "server.http_bind",
                    "only redirects to HTTPS and answers ACME challenges: it needs [server.tls]",
                ));
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    /// In ACME mode with `public_url` left at its default, the public URL is
    /// `https://<first domain>` (with the port of `bind` unless 443).
    pub(super) fn apply_tls_defaults(&mut self) {
        if self.tls.mode() != TlsMode::Acme || self.public_url != Self::default().public_url {
            return;
        }
        let port = self
            .bind
            .parse::<SocketAddr>()
            .map(|a| a.port())
            .unwrap_or(443);
        let domain = &self.tls.acme_domains[0];
        self.public_url = match port {
            443 | 0 => format!("https://{domain}"),
            p => format!("https://{domain}:{p}"),
        };
    }
}
