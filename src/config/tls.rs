//! `[server.tls]`: HTTPS from certificate files, or from an ACME CA
//! (Let's Encrypt by default). Off by default: plain HTTP.

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// Let's Encrypt production, the default ACME directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt staging: untrusted certificates, generous rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first); file mode with `key_path`.
    pub cert_path: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
    /// File mode: how often the files are checked for a change (0 = only on SIGHUP).
    pub watch_interval_secs: u64,
    /// ACME mode: the names the certificate is for.
    pub acme_domains: Vec<String>,
    /// Contact address given to the CA (expiry notices); may be empty.
    pub acme_email: String,
    /// The CA's RFC 8555 directory URL.
    pub acme_directory: String,
    /// Account and certificates; empty = `<data dir>/acme`.
    pub acme_cache_dir: String,
    /// PEM file of extra roots trusted for the directory's own HTTPS.
    pub acme_directory_ca: String,
    /// External account binding (CAs that require it, e.g. ZeroSSL): key id...
    pub acme_eab_kid: String,
    /// ...and its HMAC key, base64url as the CA shows it (a secret).
    pub acme_eab_hmac_key: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_path: String::new(),
            key_path: String::new(),
            watch_interval_secs: 30,
            acme_domains: vec![],
            acme_email: String::new(),
            acme_directory: LETS_ENCRYPT.into(),
            acme_cache_dir: String::new(),
            acme_directory_ca: String::new(),
            acme_eab_kid: String::new(),
            acme_eab_hmac_key: String::new(),
        }
    }
}

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP (the default: local development, or behind a proxy).
    Off,
    /// `cert_path` + `key_path`, reloaded when they change or on SIGHUP.
    Files,
    /// Obtained and renewed from `acme_directory`.
    Acme,
}

impl TlsConfig {
    pub fn mode(&self) -> TlsMode {
        if !self.acme_domains.is_empty() {
            TlsMode::Acme
        } else if !self.cert_path.is_empty() || !self.key_path.is_empty() {
            TlsMode::Files
        } else {
            TlsMode::Off
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let files = !self.cert_path.is_empty() || !self.key_path.is_empty();
        if files && !self.acme_domains.is_empty() {
            return Err(bad(
                "server.tls",
                "set either cert_path/key_path (certificate files) or acme_domains (ACME), not both",
            ));
        }
        if files && self.cert_path.is_empty() {
            return Err(bad(
                "server.tls.cert_path",
                "required with server.tls.key_path",
            ));
        }
        if files && self.key_path.is_empty() {
            return Err(bad(
                "server.tls.key_path",
                "required with server.tls.cert_path",
            ));
        }
        for d in &self.acme_domains {
            if !is_dns_name(d) {
                return Err(bad(
                    "server.tls.acme_domains",
                    format!("{d:?} is not a domain name (wildcards need DNS-01, which is not supported)"),
                ));
            }
        }
        if !self.acme_domains.is_empty() {
            if !self.acme_directory.starts_with("https://") {
                return Err(bad(
                    "server.tls.acme_directory",
                    format!("{:?} is not an https:// URL", self.acme_directory),
                ));
            }
            if self.acme_eab_kid.is_empty() != self.acme_eab_hmac_key.is_empty() {
                let missing = if self.acme_eab_kid.is_empty() {
                    "server.tls.acme_eab_kid"
                } else {
                    "server.tls.acme_eab_hmac_key"
                };
                return Err(bad(
                    missing,
                    "external account binding needs both acme_eab_kid and acme_eab_hmac_key",
                ));
            }
            if !self.acme_eab_hmac_key.is_empty() && self.eab_hmac_key().is_none() {
                return Err(bad(
                    "server.tls.acme_eab_hmac_key",
                    "is not base64url (as the CA shows it)",
                ));
            }
            let email = &self.acme_email;
            if !email.is_empty()
                && (email.starts_with("mailto:")
                    || !email.contains('@')
                    || email.contains(char::is_whitespace))
            {
                return Err(bad(
                    "server.tls.acme_email",
                    format!("{email:?} is not an email address"),
                ));
            }
        }
        Ok(())
    }
}

impl TlsConfig {
    /// The decoded EAB HMAC key (base64url, padded or not).
    pub fn eab_hmac_key(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let k = self.acme_eab_hmac_key.trim().trim_end_matches('=');
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(k)
            .ok()
            .filter(|k| !k.is_empty())
    }
}

/// A plain (non-wildcard) DNS name with at least two labels.
fn is_dns_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names() {
        assert!(is_dns_name("api.example.com"));
        assert!(is_dns_name("xn--fiqs8s.example"));
        for bad in [
            "*.example.com",
            "localhost",
            "127.0.0.1",
            "a..b",
            "-a.com",
            "a b.com",
            "",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn modes_and_keys() {
        let mut t = TlsConfig::default();
        assert_eq!(t.mode(), TlsMode::Off);
        t.cert_path = "c.pem".into();
        assert_eq!(t.validate().unwrap_err().key, "server.tls.key_path");
        t.key_path = "k.pem".into();
        assert_eq!(t.mode(), TlsMode::Files);
        t.validate().unwrap();
        t.acme_domains = vec!["api.example.com".into()];
        assert_eq!(t.validate().unwrap_err().key, "server.tls");
        t.cert_path.clear();
        t.key_path.clear();
        assert_eq!(t.mode(), TlsMode::Acme);
        t.validate().unwrap();
        t.acme_directory = "http://ca.example/dir".into();
        assert_eq!(t.validate().unwrap_err().key, "server.tls.acme_directory");
    }
}
