//! The certificate the TLS listener presents, swappable while it runs, plus
//! the tls-alpn-01 challenge certificates (RFC 8737) of orders in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of tls-alpn-01 validation connections.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate ready to serve, with its expiry.
#[derive(Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// notAfter of the leaf, unix seconds.
    pub not_after: i64,
}

/// Resolves every handshake to the current certificate (whatever the SNI:
/// one deployment, one certificate), except tls-alpn-01 validations, which
/// get the challenge certificate for their name.
pub struct CertStore {
    /// `file` or `acme`: the `source` label of the expiry metric.
    source: &'static str,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    not_after: AtomicI64,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// tls-alpn-01 handshakes answered with a challenge certificate.
    answered: AtomicU64,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("source", &self.source)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn new(source: &'static str) -> Self {
        Self {
            source,
            current: RwLock::new(None),
            not_after: AtomicI64::new(0),
            challenges: Mutex::new(HashMap::new()),
            answered: AtomicU64::new(0),
        }
    }

    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Swaps the served certificate; handshakes already done keep theirs.
    pub fn set(&self, loaded: Loaded) {
        *self.current.write().expect("cert lock") = Some(loaded.key);
        self.not_after.store(loaded.not_after, Ordering::Relaxed);
    }

    /// notAfter (unix seconds) of the certificate being served, if any.
    pub fn not_after(&self) -> Option<i64> {
        match self.not_after.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// The certificate being served.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().expect("cert lock").clone()
    }

    pub fn set_challenge(&self, domain: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .lock()
            .expect("challenge lock")
            .insert(domain.to_ascii_lowercase(), key);
    }

    /// How many tls-alpn-01 validation handshakes got a challenge certificate.
    pub fn challenges_answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    pub fn clear_challenge(&self, domain: &str) {
        self.challenges
            .lock()
            .expect("challenge lock")
            .remove(&domain.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            let answer = self
                .challenges
                .lock()
                .expect("challenge lock")
                .get(&name)
                .cloned();
            if answer.is_some() {
                self.answered.fetch_add(1, Ordering::Relaxed);
            }
            return answer;
        }
        self.current()
    }
}
