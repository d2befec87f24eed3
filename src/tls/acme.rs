//! ACME mode: obtain a certificate for `acme_domains` from `acme_directory`
//! and renew it 30 days before it expires.
//!
//! instant-acme speaks the protocol (JWS, nonces, orders); this module does
//! the rest: the account and certificates cached on disk (0700 directory,
//! 0600 files), tls-alpn-01 answered by the TLS listener itself (the
//! challenge certificate is handed to the resolver) or http-01 by the
//! `server.http_bind` listener, and a loop that keeps the current
//! certificate on any failure and retries with backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::files::{certified, parse_chain};
use super::redirect::Http01Tokens;
use super::store::{CertStore, Loaded};
use super::{rfc3339, unix_now};
use crate::config::{Config, ConfigError};
use crate::http::AppState;

/// Renew this long before the certificate expires.
pub const RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;
/// First retry after a failed order; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// How long an order may take to be validated, then to be issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// `acme_cache_dir`, else `<data dir>/acme`.
pub fn cache_root(config: &Config) -> PathBuf {
    let t = &config.server.tls;
    if t.acme_cache_dir.is_empty() {
        config.data_dir().join("acme")
    } else {
        PathBuf::from(&t.acme_cache_dir)
    }
}

/// Where the certificate for this directory and these domains is cached:
/// (chain, key).
pub fn cached_paths(config: &Config) -> (PathBuf, PathBuf) {
    let t = &config.server.tls;
    let mut domains = t.acme_domains.clone();
    domains.sort();
    let stem = format!(
        "{}-{}",
        t.acme_domains.first().map(String::as_str).unwrap_or("none"),
        short_hash(&format!("{}\n{}", t.acme_directory, domains.join("\n")))
    );
    let root = cache_root(config);
    (
        root.join(format!("{stem}.crt.pem")),
        root.join(format!("{stem}.key.pem")),
    )
}

/// The certificate manager of one server.
pub struct Acme {
    domains: Vec<String>,
    email: String,
    directory: String,
    /// External account binding: (key id, HMAC key).
    eab: Option<(String, Vec<u8>)>,
    account_path: PathBuf,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Answer http-01 (on `server.http_bind`) rather than tls-alpn-01.
    http01: bool,
    http: reqwest::Client,
    store: Arc<CertStore>,
    tokens: Http01Tokens,
    renew_now: Notify,
}

impl Acme {
    /// Everything that can be checked before listening, each failure naming
    /// its key: the cache directory, the directory CA file, and — unless a
    /// cached certificate is still valid and can be served meanwhile — that
    /// the directory answers.
    pub async fn prepare(
        config: &Config,
        store: Arc<CertStore>,
        tokens: Http01Tokens,
    ) -> Result<Acme, ConfigError> {
        let t = &config.server.tls;
        let root = cache_root(config);
        private_dir(&root).map_err(|e| {
            bad(
                "server.tls.acme_cache_dir",
                format!("cannot create {} (mode 0700): {e}", root.display()),
            )
        })?;
        let http = http_client(&t.acme_directory_ca)?;
        let (cert_path, key_path) = cached_paths(config);
        let acme = Acme {
            domains: t.acme_domains.clone(),
            email: t.acme_email.clone(),
            directory: t.acme_directory.clone(),
            eab: t.eab_hmac_key().map(|key| (t.acme_eab_kid.clone(), key)),
            account_path: root.join(format!("account-{}.json", short_hash(&t.acme_directory))),
            cert_path,
            key_path,
            http01: !config.server.http_bind.is_empty(),
            http,
            store,
            tokens,
            renew_now: Notify::new(),
        };
        match acme.load_cached() {
            Some(loaded) if loaded.not_after > unix_now() => {
                tracing::info!(
                    path = %acme.cert_path.display(),
                    not_after = %rfc3339(loaded.not_after),
                    "ACME: serving the cached certificate"
                );
                acme.store.set(loaded);
            }
            _ => acme.check_directory().await?,
        }
        Ok(acme)
    }

    fn load_cached(&self) -> Option<Loaded> {
        let (Ok(chain), Ok(key)) = (
            std::fs::read(&self.cert_path),
            std::fs::read(&self.key_path),
        ) else {
            return None;
        };
        let loaded = parse_chain(&chain)
            .map_err(|e| e.to_string())
            .and_then(|chain| {
                let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| e.to_string())?;
                certified(chain, key).map_err(|e| e.to_string())
            });
        match loaded {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(path = %self.cert_path.display(), error = %e, "ACME: ignoring an unusable cached certificate");
                None
            }
        }
    }

    /// The directory must answer (an ACME directory document) before the
    /// server starts without a certificate to serve.
    async fn check_directory(&self) -> Result<(), ConfigError> {
        let key = "server.tls.acme_directory";
        let res = self
            .http
            .get(&self.directory)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| {
                bad(
                    key,
                    format!("cannot reach {}: {}", self.directory, error_chain(&e)),
                )
            })?;
        let status = res.status();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        if !status.is_success() || body.get("newOrder").is_none() {
            return Err(bad(
                key,
                format!(
                    "{} answered {status} without an ACME directory (no newOrder)",
                    self.directory
                ),
            ));
        }
        Ok(())
    }

    /// Asks for a new certificate now, due or not.
    pub fn renew_now(&self) {
        self.renew_now.notify_one();
    }

    /// Obtains and renews forever; a failure keeps the current certificate
    /// and retries with backoff (60 s doubling up to 6 h).
    pub fn spawn(self: Arc<Self>, state: AppState) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                self.until_due().await;
                let kind = if self.store.not_after().is_some() {
                    "renewal"
                } else {
                    "issuance"
                };
                tracing::info!(domains = ?self.domains, directory = %self.directory, kind, "ACME: ordering a certificate");
                match self.obtain().await {
                    Ok(loaded) => {
                        failures = 0;
                        tracing::info!(
                            domains = ?self.domains,
                            kind,
                            not_after = %rfc3339(loaded.not_after),
                            "ACME: certificate obtained and now served"
                        );
                        self.store.set(loaded);
                        count(&state, kind, "ok");
                    }
                    Err(e) => {
                        failures += 1;
                        let delay = backoff(failures);
                        let serving = self.store.not_after().map(rfc3339);
                        tracing::warn!(
                            domains = ?self.domains,
                            kind,
                            error = %format!("{e:#}"),
                            retry_in_secs = delay.as_secs(),
                            serving_until = serving.as_deref().unwrap_or("none"),
                            "ACME: could not obtain a certificate; keeping the current one and retrying"
                        );
                        count(&state, kind, "failed");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.renew_now.notified() => {}
                        }
                    }
                }
            }
        })
    }

    /// Returns when the certificate is due for renewal (or missing), or
    /// when a renewal is asked for.
    async fn until_due(&self) {
        loop {
            let due = self
                .store
                .not_after()
                .map_or(0, |t| t.saturating_sub(RENEW_BEFORE_SECS));
            let now = unix_now();
            if now >= due {
                return;
            }
            // Wake hourly: wall-clock time may jump (suspend, NTP).
            let wait = Duration::from_secs((due - now).min(3600) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.renew_now.notified() => return,
            }
        }
    }

    async fn account(&self) -> anyhow::Result<Account> {
        let builder = || Account::builder_with_http(Box::new(ReqwestHttp(self.http.clone())));
        if let Ok(bytes) = std::fs::read(&self.account_path) {
            match serde_json::from_slice::<AccountCredentials>(&bytes) {
                Ok(creds) => return Ok(builder().from_credentials(creds).await?),
                Err(e) => {
                    tracing::warn!(path = %self.account_path.display(), error = %e, "ACME: unreadable account file; registering a new account")
                }
            }
        }
        let contact = (!self.email.is_empty()).then(|| format!("mailto:{}", self.email));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = self
            .eab
            .as_ref()
            .map(|(kid, key)| instant_acme::ExternalAccountKey::new(kid.clone(), key));
        let (account, creds) = builder()
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                eab.as_ref(),
            )
            .await?;
        write_private(&self.account_path, &serde_json::to_vec(&creds)?)?;
        tracing::info!(directory = %self.directory, "ACME: account registered");
        Ok(account)
    }

    async fn obtain(&self) -> anyhow::Result<Loaded> {
        let account = self.account().await?;
        let result = self.order(&account).await;
        if let Err(e) = &result {
            // The CA forgot the account (a test CA restarted, or it was
            // deactivated): register anew next time.
            if format!("{e:#}").contains("accountDoesNotExist") {
                let _ = std::fs::remove_file(&self.account_path);
            }
        }
        result
    }

    async fn order(&self, account: &Account) -> anyhow::Result<Loaded> {
        let ids: Vec<Identifier> = self
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut pending = Pending {
            store: &self.store,
            tokens: &self.tokens,
            domains: vec![],
            tokens_set: vec![],
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => anyhow::bail!("the authorization for {} is {other:?}", authz.identifier()),
            }
            let domain = authz.identifier().to_string();
            let offers_http01 = authz
                .challenges
                .iter()
                .any(|c| c.r#type == ChallengeType::Http01);
            let kind = if self.http01 && offers_http01 {
                ChallengeType::Http01
            } else {
                ChallengeType::TlsAlpn01
            };
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                anyhow::anyhow!("the CA offers no {kind:?} challenge for {domain}")
            })?;
            let key_authorization = challenge.key_authorization();
            if kind == ChallengeType::Http01 {
                pending.tokens.lock().expect("tokens lock").insert(
                    challenge.token.clone(),
                    key_authorization.as_str().to_string(),
                );
                pending.tokens_set.push(challenge.token.clone());
            } else {
                let cert = alpn_challenge_cert(&domain, key_authorization.digest().as_ref())?;
                pending.store.set_challenge(&domain, cert);
                pending.domains.push(domain.clone());
            }
            challenge.set_ready().await?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
            .await?;
        if status != OrderStatus::Ready {
            let mut why = vec![];
            let mut authorizations = order.authorizations();
            while let Some(Ok(authz)) = authorizations.next().await {
                for c in authz.challenges.iter() {
                    if let Some(p) = &c.error {
                        why.push(format!("{}: {p}", authz.identifier()));
                    }
                }
            }
            anyhow::bail!("the order is {status:?}: {}", why.join("; "));
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
            .await?;
        drop(pending);
        let chain = parse_chain(chain_pem.as_bytes()).map_err(anyhow::Error::msg)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("the generated key: {e}"))?;
        let loaded = certified(chain, key)?;
        write_private(&self.key_path, key_pem.as_bytes())?;
        write_private(&self.cert_path, chain_pem.as_bytes())?;
        Ok(loaded)
    }
}

/// Challenge answers of an order in flight, withdrawn when it ends.
struct Pending<'a> {
    store: &'a CertStore,
    tokens: &'a Http01Tokens,
    domains: Vec<String>,
    tokens_set: Vec<String>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        for d in &self.domains {
            self.store.clear_challenge(d);
        }
        let mut tokens = self.tokens.lock().expect("tokens lock");
        for t in &self.tokens_set {
            tokens.remove(t);
        }
    }
}

fn count(state: &AppState, kind: &str, outcome: &str) {
    state.metrics().inc(
        "tls_acme_orders_total",
        crate::http::metrics::labels(&[("kind", kind), ("outcome", outcome)]),
        1,
    );
}

fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY)
}

/// The self-signed certificate of a tls-alpn-01 answer (RFC 8737 §3): the
/// domain as its only SAN and the key authorization's SHA-256 in a
/// critical acmeIdentifier extension.
fn alpn_challenge_cert(domain: &str, digest: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    // Not `CertifiedKey::from_der`: its key check parses the certificate
    // with webpki, which refuses the critical acmeIdentifier extension.
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

/// The client for the directory: our reqwest (rustls + ring, web PKI roots)
/// plus the roots of `acme_directory_ca`.
fn http_client(ca_path: &str) -> Result<reqwest::Client, ConfigError> {
    let key = "server.tls.acme_directory_ca";
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("mvp28/", env!("CARGO_PKG_VERSION")));
    if !ca_path.is_empty() {
        let pem =
            std::fs::read(ca_path).map_err(|e| bad(key, format!("cannot read {ca_path}: {e}")))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(key, format!("{ca_path}: {e}")))?;
        if roots.is_empty() {
            return Err(bad(key, format!("{ca_path}: no PEM certificate in it")));
        }
        for r in roots {
            b = b.add_root_certificate(r);
        }
    }
    b.build()
        .map_err(|e| bad(key, format!("building the ACME HTTP client: {e}")))
}

/// instant-acme over our reqwest client (its own default would bring
/// hyper-rustls with the platform verifier: a second TLS client setup).
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>,
    > {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(Request::from_parts(parts, body))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let res = client
                .execute(req)
                .await
                .map_err(|e| instant_acme::Error::Other(error_chain(&e).into()))?;
            Ok(BytesResponse::from(Response::from(res)))
        })
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// A directory only the server's user may enter (0700).
fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a 0600 file atomically (temp file, then rename).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(40), MAX_RETRY);
    }

    #[test]
    fn cache_paths_depend_on_directory_and_domains() {
        let mut c = Config::default();
        c.database.path = "/var/lib/mvp28/mvp28.db".into();
        c.server.tls.acme_domains = vec!["api.example.com".into()];
        let (a, _) = cached_paths(&c);
        assert!(a.starts_with("/var/lib/mvp28/acme"), "{}", a.display());
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("api.example.com-"));
        c.server.tls.acme_directory = crate::config::LETS_ENCRYPT_STAGING.into();
        assert_ne!(cached_paths(&c).0, a);
    }
}
