//! HTTPS built in (`[server.tls]`): rustls with the ring provider, the
//! certificate from files (reloaded on change or SIGHUP) or from an ACME CA
//! (obtained and renewed by the server), HTTP/1.1 and HTTP/2 by ALPN, and
//! the optional `server.http_bind` listener for http-01 and redirects.
//!
//! `serve` calls [`Tls::setup`] before anything listens (a bad certificate,
//! key or unreachable directory is a config error naming its key: exit 2),
//! wraps its TCP listener with [`Tls::listener`], then [`Tls::start`]s the
//! reloading or renewing task. [`certificate_expiry`] reads the certificate
//! without a running server (for `mvp28 doctor`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError, TlsConfig, TlsMode};
use crate::http::AppState;

pub mod acme;
pub mod files;
pub mod listener;
pub mod redirect;
pub mod store;

pub use listener::TlsListener;
pub use store::CertStore;

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}

/// The HTTPS side of one server.
pub struct Tls {
    config: TlsConfig,
    store: Arc<CertStore>,
    acme: Option<Arc<acme::Acme>>,
    tokens: redirect::Http01Tokens,
    server_config: Arc<rustls::ServerConfig>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tls {
    /// Loads the certificate files or prepares ACME; None when TLS is off.
    pub async fn setup(config: &Config) -> Result<Option<Tls>, ConfigError> {
        let t = &config.server.tls;
        let tokens: redirect::Http01Tokens = Arc::new(Mutex::new(HashMap::new()));
        let (store, acme) = match t.mode() {
            TlsMode::Off => return Ok(None),
            TlsMode::Files => {
                let store = Arc::new(CertStore::new("file"));
                let loaded = files::load(t)?;
                tracing::info!(
                    cert_path = %t.cert_path,
                    not_after = %rfc3339(loaded.not_after),
                    watch_interval_secs = t.watch_interval_secs,
                    "HTTPS with certificate files (reloaded on change and on SIGHUP)"
                );
                warn_if_expiring(loaded.not_after, &t.cert_path);
                store.set(loaded);
                (store, None)
            }
            TlsMode::Acme => {
                let store = Arc::new(CertStore::new("acme"));
                let acme = acme::Acme::prepare(config, store.clone(), tokens.clone()).await?;
                (store, Some(Arc::new(acme)))
            }
        };
        Ok(Some(Tls {
            config: t.clone(),
            server_config: server_config(store.clone(), acme.is_some()),
            store,
            acme,
            tokens,
            tasks: vec![],
        }))
    }

    /// The HTTPS listener over a bound TCP listener.
    pub fn listener(&self, tcp: tokio::net::TcpListener) -> std::io::Result<TlsListener> {
        TlsListener::new(tcp, self.server_config.clone())
    }

    /// The `server.http_bind` app: http-01 answers and redirects to HTTPS.
    pub fn http_router(&self, https_port: u16) -> axum::Router {
        redirect::router(self.tokens.clone(), https_port)
    }

    /// Starts watching the files or obtaining/renewing the certificate.
    pub fn start(&mut self, state: AppState) {
        state.set_tls(self.store.clone());
        let task = match &self.acme {
            Some(acme) => acme.clone().spawn(state),
            None => files::spawn_watcher(self.config.clone(), self.store.clone()),
        };
        self.tasks.push(task);
    }

    /// The certificate being served and its expiry.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// ACME mode: order a new certificate now, due or not (file mode: no-op).
    pub fn renew_now(&self) {
        if let Some(a) = &self.acme {
            a.renew_now();
        }
    }

    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_config(store: Arc<CertStore>, acme: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        c.alpn_protocols.push(store::ACME_TLS_ALPN.to_vec());
    }
    Arc::new(c)
}

fn warn_if_expiring(not_after: i64, path: &str) {
    let left = not_after - unix_now();
    if left <= 0 {
        tracing::warn!(cert_path = %path, not_after = %rfc3339(not_after), "the TLS certificate has EXPIRED: clients will refuse it");
    } else if left < 14 * 24 * 3600 {
        tracing::warn!(cert_path = %path, not_after = %rfc3339(not_after), "the TLS certificate expires in less than 14 days");
    }
}

/// What `config check` verifies without network: the certificate files
/// (file mode) or the directory CA file (ACME mode).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let t = &config.server.tls;
    match t.mode() {
        TlsMode::Off => Ok(()),
        TlsMode::Files => files::load(t).map(|_| ()),
        TlsMode::Acme if t.acme_directory_ca.is_empty() => Ok(()),
        TlsMode::Acme => {
            let pem = std::fs::read(&t.acme_directory_ca).map_err(|e| ConfigError {
                key: "server.tls.acme_directory_ca".into(),
                message: format!("cannot read {}: {e}", t.acme_directory_ca),
            })?;
            files::parse_chain(&pem)
                .map(|_| ())
                .map_err(|e| ConfigError {
                    key: "server.tls.acme_directory_ca".into(),
                    message: format!("{}: {e}", t.acme_directory_ca),
                })
        }
    }
}

/// The configured certificate's expiry, read from disk.
#[derive(Debug, Clone)]
pub struct CertExpiry {
    /// `file` or `acme`.
    pub source: &'static str,
    pub path: PathBuf,
    /// notAfter, unix seconds.
    pub not_after: i64,
}

impl CertExpiry {
    /// Seconds until expiry (negative once expired).
    pub fn seconds_left(&self) -> i64 {
        self.not_after - unix_now()
    }
}

/// The expiry of the certificate `serve` would present, without starting
/// it (for `mvp28 doctor`, which warns under 14 days): `server.tls.cert_path`
/// in file mode, the ACME cache in ACME mode. `Ok(None)` when TLS is off or
/// no certificate has been obtained yet; `Err` names the key at fault.
pub fn certificate_expiry(config: &Config) -> Result<Option<CertExpiry>, ConfigError> {
    let t = &config.server.tls;
    let (source, path) = match t.mode() {
        TlsMode::Off => return Ok(None),
        TlsMode::Files => ("file", PathBuf::from(&t.cert_path)),
        TlsMode::Acme => {
            let (path, _) = acme::cached_paths(config);
            if !path.exists() {
                return Ok(None);
            }
            ("acme", path)
        }
    };
    let key = if source == "file" {
        "server.tls.cert_path"
    } else {
        "server.tls.acme_cache_dir"
    };
    let not_after = files::file_not_after(&path).map_err(|message| ConfigError {
        key: key.into(),
        message,
    })?;
    Ok(Some(CertExpiry {
        source,
        path,
        not_after,
    }))
}
