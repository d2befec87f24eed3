//! File mode: a PEM chain and key from disk, checked at start (a bad pair
//! names its key, exit 2) and reloaded when the files change or on SIGHUP,
//! so a renewal by certbot or a cloud console needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::store::{CertStore, Loaded};
use crate::config::{ConfigError, TlsConfig};

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| bad(key, format!("cannot read {path}: {e}")))
}

/// The leaf's notAfter in unix seconds.
pub fn not_after(leaf: &CertificateDer<'_>) -> Result<i64, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let t = cert.tbs_certificate.validity.not_after.to_unix_duration();
    Ok(t.as_secs() as i64)
}

/// Every certificate in a PEM text, leaf first.
pub fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no CERTIFICATE block (expected a PEM certificate chain)".into());
    }
    Ok(chain)
}

/// A chain and its key, checked to belong together.
pub fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Loaded, rustls::Error> {
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider)?;
    let leaf = key.end_entity_cert()?;
    let not_after =
        not_after(leaf).map_err(|e| rustls::Error::General(format!("certificate: {e}")))?;
    Ok(Loaded {
        key: Arc::new(key),
        not_after,
    })
}

/// Reads and checks the configured pair; every failure names its key.
pub fn load(tls: &TlsConfig) -> Result<Loaded, ConfigError> {
    let (ck, kk) = ("server.tls.cert_path", "server.tls.key_path");
    let chain = parse_chain(&read(ck, &tls.cert_path)?)
        .map_err(|e| bad(ck, format!("{}: {e}", tls.cert_path)))?;
    let key = PrivateKeyDer::from_pem_slice(&read(kk, &tls.key_path)?).map_err(|e| {
        bad(
            kk,
            format!(
                "{}: no usable private key (expected PEM: PKCS#8, RSA or EC): {e}",
                tls.key_path
            ),
        )
    })?;
    not_after(&chain[0]).map_err(|e| bad(ck, format!("{}: {e}", tls.cert_path)))?;
    certified(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => bad(
            kk,
            format!(
                "{} does not match the certificate in {}",
                tls.key_path, tls.cert_path
            ),
        ),
        other => bad(kk, format!("{}: unusable key: {other}", tls.key_path)),
    })
}

/// What decides that the files changed: their mtime and size (the target's,
/// when they are symlinks, as certbot's `live/` files are).
fn stamp(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

/// Reloads the pair into `store` when the files change (checked every
/// `watch_interval_secs`) or on SIGHUP. A pair that fails to load (a half
/// written renewal, a key not matching) is logged and the current
/// certificate is kept; the next change or SIGHUP tries again.
pub fn spawn_watcher(tls: TlsConfig, store: Arc<CertStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let paths = [PathBuf::from(&tls.cert_path), PathBuf::from(&tls.key_path)];
        let mut seen = stamp(&paths);
        let interval = Duration::from_secs(tls.watch_interval_secs);
        let mut hup = hangups();
        loop {
            let by_signal = tokio::select! {
                _ = tick(interval) => false,
                got = next_hangup(&mut hup) => got,
            };
            let now = stamp(&paths);
            if !by_signal && now == seen {
                continue;
            }
            seen = now;
            reload(
                &tls,
                &store,
                if by_signal { "SIGHUP" } else { "file change" },
            );
        }
    })
}

fn reload(tls: &TlsConfig, store: &CertStore, why: &str) {
    match load(tls) {
        Ok(loaded) => {
            let not_after = loaded.not_after;
            store.set(loaded);
            tracing::info!(
                cert_path = %tls.cert_path,
                not_after = %super::rfc3339(not_after),
                trigger = why,
                "TLS certificate reloaded"
            );
        }
        Err(e) => tracing::warn!(
            error = %e,
            trigger = why,
            "TLS certificate not reloaded; still serving the previous one"
        ),
    }
}

async fn tick(interval: Duration) {
    if interval.is_zero() {
        std::future::pending::<()>().await
    } else {
        tokio::time::sleep(interval).await
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate files are only polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

/// True when a SIGHUP arrived; never returns when there is no handler.
#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) -> bool {
    if let Some(s) = h {
        if s.recv().await.is_some() {
            return true;
        }
    }
    std::future::pending().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> bool {
    std::future::pending().await
}

/// The certificate at `path`'s leaf notAfter (for `doctor` and the cache).
pub fn file_not_after(path: &Path) -> Result<i64, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = parse_chain(&pem)?;
    not_after(&chain[0])
}
