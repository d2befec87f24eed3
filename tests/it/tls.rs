//! HTTPS built in: file mode (rcgen certificates, reload on change and on
//! SIGHUP), ACME end to end against Debian's pebble (real tls-alpn-01 and
//! http-01 validation against our own listeners, DNS answered by
//! pebble-challtestsrv), and bad input.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use futures_util::{SinkExt, StreamExt};
use mvp28::clock::ManualClock;
use mvp28::config::Config;
use mvp28::ops::serve::{self, Server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{free_port, run_cli, stderr, test_config};

// ---------------------------------------------------------------- helpers

/// A test CA and the leaf certificates it signs.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (chain PEM, key PEM) for these names.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn client_config(roots_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A verified TLS connection to `addr` for `name`.
async fn handshake(
    addr: SocketAddr,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(server_name, tcp)
        .await
}

/// The DER of the leaf certificate `addr` presents for `name`.
async fn served_leaf(addr: SocketAddr, name: &str, roots_pem: &str) -> Vec<u8> {
    let tls = handshake(addr, name, client_config(roots_pem, &[b"http/1.1"]))
        .await
        .expect("TLS handshake verifies against the test root");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn first_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// reqwest over HTTPS, trusting only `roots_pem`, with `name` resolved to `addr`.
fn https_client(roots_pem: &str, name: &str, addr: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve(name, addr)
        .redirect(reqwest::redirect::Policy::none());
    for c in reqwest::Certificate::from_pem_bundle(roots_pem.as_bytes()).unwrap() {
        b = b.add_root_certificate(c);
    }
    b.build().unwrap()
}

async fn start(config: Config) -> Server {
    serve::start(
        config,
        Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 25, 4, 0, 0).unwrap(),
        )),
    )
    .await
    .expect("server starts")
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// An HTTP/2 request over a connection that negotiated h2 by ALPN.
async fn h2_health(addr: SocketAddr, name: &str, roots_pem: &str) {
    let tls = handshake(addr, name, client_config(roots_pem, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://{name}:{}/api/health", addr.port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_2);
}

/// Dev login, then one chat over wss:// (echo provider); returns the reply.
async fn wss_chat(
    addr: SocketAddr,
    name: &str,
    roots_pem: &str,
    client: &reqwest::Client,
) -> String {
    let base = format!("https://{name}:{}", addr.port());
    let login: Value = client
        .post(format!("{base}/api/auth/wechat"))
        .json(&json!({"code": "dev:tls"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("token").to_string();
    let tls = handshake(addr, name, client_config(roots_pem, &[b"http/1.1"]))
        .await
        .unwrap();
    let req = format!("wss://{name}:{}/api/chat/ws?token={token}", addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("WebSocket upgrade over TLS");
    ws.send(Message::Text(
        json!({"type": "chat", "message": "hello over tls"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut text = String::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .unwrap()
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let f: Value = serde_json::from_str(t.as_str()).unwrap();
        match f["type"].as_str().unwrap() {
            "delta" => text.push_str(f["text"].as_str().unwrap()),
            "done" => return text,
            other => panic!("unexpected frame {other}: {f}"),
        }
    }
}

async fn metric(client: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn write(path: &Path, data: &str) {
    // Replace as deploy tools do: a new file renamed over the old one.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------- pebble

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// Debian's pebble (the ACME test CA) plus pebble-challtestsrv as its DNS
/// (every name -> 127.0.0.1), on free ports, with an HTTPS certificate made
/// here. Validation is real: pebble connects to `tls_port`/`http_port`.
struct Pebble {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    /// The directory URL.
    directory: String,
    /// PEM of the CA that signed pebble's own HTTPS certificate.
    api_ca_path: PathBuf,
    /// PEM of the root pebble issues under (what clients must trust).
    issuing_root: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Pebble {
    /// None (after one loud line) when the package is not installed; under
    /// CI a missing pebble fails the test (.ci/run installs it).
    async fn start(tls_port: u16, http_port: u16) -> Option<Pebble> {
        Self::start_with(tls_port, http_port, None).await
    }

    /// With `eab = Some((kid, base64url key))` pebble requires external
    /// account binding (as ZeroSSL does).
    async fn start_with(
        tls_port: u16,
        http_port: u16,
        eab: Option<(&str, &str)>,
    ) -> Option<Pebble> {
        let (Some(pebble), Some(dns)) = (which("pebble"), which("pebble-challtestsrv")) else {
            let msg = "pebble/pebble-challtestsrv not found (apt-get install pebble): \
                       ACME end-to-end test NOT RUN";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("pebble API test CA");
        let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key).unwrap();
        let api_ca_path = dir.path().join("api-ca.pem");
        std::fs::write(&api_ca_path, ca.pem()).unwrap();
        let (api, mgmt, dns_port, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab.is_some(),
            "externalAccountMACKeys": eab.map(|(kid, key)| json!({kid: key})).unwrap_or(json!({})),
            "retryAfter": {"authz": 1, "order": 1},
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| Stdio::from(std::fs::File::create(dir.path().join(name)).unwrap());
        let challtestsrv = Command::new(dns)
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new(pebble)
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble starts");
        let mut p = Pebble {
            children: vec![challtestsrv, pebble],
            directory: format!("https://127.0.0.1:{api}/dir"),
            api_ca_path,
            issuing_root: String::new(),
            _dir: dir,
        };
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let root = client
                .get(format!("https://127.0.0.1:{mgmt}/roots/0"))
                .send()
                .await;
            let dir_ok = client.get(&p.directory).send().await;
            if let (Ok(r), Ok(d)) = (root, dir_ok) {
                if r.status() == 200 && d.status() == 200 {
                    p.issuing_root = r.text().await.unwrap();
                    break;
                }
            }
            assert!(Instant::now() < deadline, "pebble did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(p)
    }

    /// Kills pebble and its DNS (their files stay).
    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What pebble printed (stdout and stderr).
    fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self._dir.path().join(f)).unwrap_or_default())
            .collect()
    }
}

fn acme_config(dir: &Path, pebble: &Pebble, domain: &str, tls_port: u16) -> Config {
    let mut c = test_config(dir);
    c.server.bind = format!("127.0.0.1:{tls_port}");
    c.server.tls.acme_domains = vec![domain.to_string()];
    c.server.tls.acme_email = "ops@mvp28.example.com".into();
    c.server.tls.acme_directory = pebble.directory.clone();
    c.server.tls.acme_directory_ca = pebble.api_ca_path.to_string_lossy().into();
    c.server.tls.acme_cache_dir = dir.join("acme").to_string_lossy().into();
    c
}

// ---------------------------------------------------------------- ACME

#[tokio::test]
async fn acme_tls_alpn_01_issues_serves_wss_and_renews_in_place() {
    let port = free_port();
    // http-01 is pointed at a closed port: only tls-alpn-01 can pass.
    let Some(mut pebble) = Pebble::start(port, free_port()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let domain = "api.mvp28.example.com";
    let config = acme_config(dir.path(), &pebble, domain, port);
    let server = start(config.clone()).await;
    let addr = server.addr;
    let tls = server.tls().expect("TLS on");
    eventually(
        "a certificate from pebble",
        Duration::from_secs(60),
        || async { tls.store().not_after().is_some() },
    )
    .await;
    // Pebble validated by connecting to our TLS port with ALPN acme-tls/1
    // (from several "perspectives"); pebble does not log that itself.
    assert!(
        tls.store().challenges_answered() >= 1,
        "no tls-alpn-01 handshake reached the listener: {}",
        pebble.log()
    );

    // A client trusting only pebble's root: TLS, HTTPS, HTTP/2, WSS.
    let roots = &pebble.issuing_root.clone();
    let first = served_leaf(addr, domain, roots).await;
    let client = https_client(roots, domain, addr);
    let base = format!("https://{domain}:{port}");
    let res = client
        .get(format!("{base}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    h2_health(addr, domain, roots).await;
    assert_eq!(
        wss_chat(addr, domain, roots, &client).await,
        "echo: hello over tls"
    );
    let left = metric(
        &client,
        &base,
        "tls_certificate_expiry_seconds{source=\"acme\"}",
    )
    .await
    .expect("expiry metric");
    assert!(left > 30.0 * 86400.0, "seconds left: {left}");

    // A keep-alive connection opened before the renewal...
    let kept = handshake(addr, domain, client_config(roots, &[b"http/1.1"]))
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(kept);
    let (mut kept, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);

    // Forced renewal: a new certificate on the same listener.
    let before = tls.store().current().unwrap();
    tls.renew_now();
    eventually(
        "the renewed certificate",
        Duration::from_secs(60),
        || async { !Arc::ptr_eq(&tls.store().current().unwrap(), &before) },
    )
    .await;
    let second = served_leaf(addr, domain, roots).await;
    assert_ne!(first, second, "a new certificate is served");
    assert_eq!(server.addr, addr);
    // ...still answers after the swap.
    let req = hyper::Request::get("/api/health")
        .header("host", domain)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(kept.send_request(req).await.unwrap().status(), 200);
    assert_eq!(
        metric(
            &client,
            &base,
            "tls_acme_orders_total{kind=\"renewal\",outcome=\"ok\"}"
        )
        .await,
        Some(1.0)
    );
    server.stop().await.unwrap();

    // A restart serves the cached certificate at once, CA or no CA.
    pebble.stop();
    let server = start(config).await;
    assert!(server.tls().unwrap().store().not_after().is_some());
    assert_eq!(served_leaf(server.addr, domain, roots).await, second);
    // The cache is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("acme")), 0o700);
        let (crt, key) = mvp28::tls::acme::cached_paths(server.state.config());
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&crt), 0o600);
        let expiry = mvp28::tls::certificate_expiry(server.state.config())
            .unwrap()
            .unwrap();
        assert_eq!(expiry.source, "acme");
        assert!(expiry.seconds_left() > 0);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn acme_http_01_on_http_bind_which_otherwise_redirects() {
    let (port, http_port) = (free_port(), free_port());
    // tls-alpn-01 is pointed at a closed port: only http-01 can pass.
    // This CA also requires external account binding.
    let eab_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let Some(pebble) = Pebble::start_with(free_port(), http_port, Some(("kid-1", eab_key))).await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let domain = "web.mvp28.example.com";
    let mut config = acme_config(dir.path(), &pebble, domain, port);
    config.server.http_bind = format!("127.0.0.1:{http_port}");
    config.server.tls.acme_eab_kid = "kid-1".into();
    config.server.tls.acme_eab_hmac_key = eab_key.into();
    let server = start(config).await;
    let tls = server.tls().unwrap();
    eventually(
        "a certificate from pebble",
        Duration::from_secs(60),
        || async { tls.store().not_after().is_some() },
    )
    .await;
    assert!(
        pebble.log().contains("validate w/ HTTP"),
        "pebble validated with http-01: {}",
        pebble.log()
    );
    let client = https_client(&pebble.issuing_root, domain, server.addr);
    let res = client
        .get(format!("https://{domain}:{port}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Everything else on the HTTP listener is a redirect to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .post(format!("http://127.0.0.1:{http_port}/api/chat?x=1"))
        .header("host", format!("{domain}:{http_port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("https://{domain}:{port}/api/chat?x=1").as_str()
    );
    let res = plain
        .get(format!(
            "http://127.0.0.1:{http_port}/.well-known/acme-challenge/unknown"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    server.stop().await.unwrap();
}

/// The real binary: a CA that fails validation at runtime is retried (and
/// logged) while the HTTP listener keeps redirecting.
#[tokio::test]
async fn acme_failure_at_runtime_is_logged_and_retried_while_http_runs() {
    let (port, http_port) = (free_port(), free_port());
    // Both validation ports point where nothing listens.
    let Some(pebble) = Pebble::start(free_port(), free_port()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\nhttp_bind = \"127.0.0.1:{http_port}\"\n\
         [server.tls]\nacme_domains = [\"down.mvp28.example.com\"]\n\
         acme_directory = \"{}\"\nacme_directory_ca = \"{}\"\n",
        pebble.directory,
        pebble.api_ca_path.display()
    );
    std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
    let log_path = dir.path().join("serve.log");
    let mut child = Command::new(crate::common::bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    eventually("a logged ACME failure", Duration::from_secs(60), || async {
        log().contains("could not obtain a certificate")
    })
    .await;
    let line = log()
        .lines()
        .find(|l| l.contains("could not obtain a certificate"))
        .unwrap()
        .to_string();
    assert!(line.contains("retry_in_secs=60"), "{line}");
    assert!(child.try_wait().unwrap().is_none(), "serve keeps running");
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{http_port}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    // The account key is in the cache, never in the log.
    let account = std::fs::read_dir(dir.path().join("data/acme"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("account-"))
        .expect("account cached");
    let creds: Value = serde_json::from_slice(&std::fs::read(account.path()).unwrap()).unwrap();
    let key = creds["key_pkcs8"].as_str().unwrap_or("no key field");
    assert!(!log().contains(key));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn acme_mode_public_url_defaults_to_the_first_domain() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let env = std::collections::HashMap::new();
    let load = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        Config::from_source(mvp28::config::Source {
            file: Some(&file),
            env: &env,
        })
        .unwrap()
        .server
        .public_url
    };
    let acme = "[server.tls]\nacme_domains = [\"api.example.com\", \"www.example.com\"]\n";
    assert_eq!(
        load(&format!("[server]\nbind = \"0.0.0.0:443\"\n{acme}")),
        "https://api.example.com"
    );
    assert_eq!(
        load(&format!("[server]\nbind = \"0.0.0.0:8443\"\n{acme}")),
        "https://api.example.com:8443"
    );
    assert_eq!(
        load(&format!(
            "[server]\nbind = \"0.0.0.0:443\"\npublic_url = \"https://chat.example.com\"\n{acme}"
        )),
        "https://chat.example.com"
    );
    // File mode and plain HTTP keep the configured/default URL.
    assert_eq!(load(""), "http://127.0.0.1:8080");
}

// ---------------------------------------------------------------- files

fn file_config(dir: &Path, watch_secs: u64) -> Config {
    let mut c = test_config(dir);
    c.server.tls.cert_path = dir.join("cert.pem").to_string_lossy().into();
    c.server.tls.key_path = dir.join("key.pem").to_string_lossy().into();
    c.server.tls.watch_interval_secs = watch_secs;
    c
}

#[tokio::test]
async fn file_mode_serves_and_reloads_changed_files_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("file mode CA");
    let name = "files.mvp28.example.com";
    let (cert1, key1) = ca.leaf(&[name]);
    write(&dir.path().join("cert.pem"), &cert1);
    write(&dir.path().join("key.pem"), &key1);
    let server = start(file_config(dir.path(), 1)).await;
    let addr = server.addr;
    assert_eq!(served_leaf(addr, name, &ca.pem()).await, first_der(&cert1));
    let client = https_client(&ca.pem(), name, addr);
    let base = format!("https://{name}:{}", addr.port());
    assert_eq!(
        client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    h2_health(addr, name, &ca.pem()).await;
    let left = metric(
        &client,
        &base,
        "tls_certificate_expiry_seconds{source=\"file\"}",
    )
    .await
    .unwrap();
    assert!(left > 86400.0, "{left}");

    // A half-done renewal (new certificate, old key) is refused: the
    // previous pair stays in service.
    let (cert2, key2) = ca.leaf(&[name]);
    write(&dir.path().join("cert.pem"), &cert2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served_leaf(addr, name, &ca.pem()).await, first_der(&cert1));
    // The key arrives: the new pair is served, same listener.
    write(&dir.path().join("key.pem"), &key2);
    eventually("the new certificate", Duration::from_secs(10), || async {
        served_leaf(addr, name, &ca.pem()).await == first_der(&cert2)
    })
    .await;
    assert_eq!(
        client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let expiry = mvp28::tls::certificate_expiry(server.state.config())
        .unwrap()
        .unwrap();
    assert_eq!(expiry.source, "file");
    server.stop().await.unwrap();
}

/// The real binary, polling off: a SIGHUP reloads the files.
#[cfg(unix)]
#[tokio::test]
async fn file_mode_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("sighup CA");
    let name = "hup.mvp28.example.com";
    let (cert1, key1) = ca.leaf(&[name]);
    write(&dir.path().join("cert.pem"), &cert1);
    write(&dir.path().join("key.pem"), &key1);
    let port = free_port();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[server.tls]\ncert_path = \"cert.pem\"\n\
             key_path = \"key.pem\"\nwatch_interval_secs = 0\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(crate::common::bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let roots = ca.pem();
    eventually("https up", Duration::from_secs(20), || async {
        handshake(addr, name, client_config(&roots, &[b"http/1.1"]))
            .await
            .is_ok()
    })
    .await;
    assert_eq!(served_leaf(addr, name, &roots).await, first_der(&cert1));
    let (cert2, key2) = ca.leaf(&[name]);
    write(&dir.path().join("key.pem"), &key2);
    write(&dir.path().join("cert.pem"), &cert2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served_leaf(addr, name, &roots).await,
        first_der(&cert1),
        "no polling: nothing changes before the signal"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually(
        "the reloaded certificate",
        Duration::from_secs(10),
        || async { served_leaf(addr, name, &roots).await == first_der(&cert2) },
    )
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop serve"
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------- bad input

/// `mvp28 serve` in `dir` with `config.toml`: exit code and stderr.
fn serve_fails(dir: &Path, config: &str) -> (Option<i32>, String) {
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let out = run_cli(dir, &["serve"], &[]);
    (out.status.code(), stderr(&out))
}

#[tokio::test]
async fn bad_tls_input_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new("bad input CA");
    let (cert, key) = ca.leaf(&["bad.mvp28.example.com"]);
    let (_, other_key) = ca.leaf(&["bad.mvp28.example.com"]);
    std::fs::write(d.join("cert.pem"), &cert).unwrap();
    std::fs::write(d.join("key.pem"), &key).unwrap();
    std::fs::write(d.join("other-key.pem"), &other_key).unwrap();
    std::fs::write(d.join("garbage.pem"), "not a certificate\n").unwrap();
    std::fs::create_dir(d.join("a-directory")).unwrap();
    let port = free_port();
    let files = |cert: &str, key: &str| {
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[server.tls]\ncert_path = \"{cert}\"\nkey_path = \"{key}\"\n"
        )
    };
    let cases = [
        (files("missing.pem", "key.pem"), "server.tls.cert_path", "missing.pem"),
        (files("garbage.pem", "key.pem"), "server.tls.cert_path", "PEM"),
        (files("cert.pem", "a-directory"), "server.tls.key_path", "cannot read"),
        (files("cert.pem", "garbage.pem"), "server.tls.key_path", "private key"),
        (files("cert.pem", "other-key.pem"), "server.tls.key_path", "does not match"),
        (files("cert.pem", ""), "server.tls.key_path", "required"),
        (
            format!("[server]\nbind = \"127.0.0.1:{port}\"\nhttp_bind = \"127.0.0.1:0\"\n"),
            "server.http_bind",
            "[server.tls]",
        ),
        (
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\n[server.tls]\nacme_domains = [\"api.mvp28.example.com\"]\n\
                 acme_directory = \"https://127.0.0.1:{}/dir\"\n",
                free_port()
            ),
            "server.tls.acme_directory",
            "cannot reach",
        ),
        (
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\n[server.tls]\nacme_domains = [\"api.mvp28.example.com\"]\n\
                 acme_directory_ca = \"missing-ca.pem\"\n"
            ),
            "server.tls.acme_directory_ca",
            "missing-ca.pem",
        ),
        (
            format!("[server]\nbind = \"127.0.0.1:{port}\"\n[server.tls]\nacme_domains = [\"*.mvp28.example.com\"]\n"),
            "server.tls.acme_domains",
            "wildcard",
        ),
    ];
    for (config, key, detail) in cases {
        let (code, err) = serve_fails(d, &config);
        assert_eq!(code, Some(2), "{config}\n{err}");
        assert!(err.contains(key), "names {key}: {err}");
        assert!(err.contains(detail), "says {detail}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // `config check` finds a mismatched pair without serving.
    std::fs::write(d.join("config.toml"), files("cert.pem", "other-key.pem")).unwrap();
    let out = run_cli(d, &["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("server.tls.key_path"));
    // The pair itself is fine.
    std::fs::write(d.join("config.toml"), files("cert.pem", "key.pem")).unwrap();
    let out = run_cli(d, &["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Nothing listened on the HTTPS port meanwhile.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// `mvp28 doctor` reads the served certificate's expiry: a warning under
/// 14 days, naming the key to fix; ok above.
#[tokio::test]
async fn doctor_warns_when_the_certificate_expires_within_14_days() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new("doctor CA");
    let leaf_until = |days: i64| {
        let end = chrono::Utc::now().date_naive() + chrono::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["doctor.mvp28.example.com".to_string()]).unwrap();
        use chrono::Datelike;
        params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    for (days, want) in [(5, "warn"), (90, "ok")] {
        let (cert, key) = leaf_until(days);
        std::fs::write(d.join("cert.pem"), &cert).unwrap();
        std::fs::write(d.join("key.pem"), &key).unwrap();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "[server]\nbind = \"127.0.0.1:{}\"\n[server.tls]\ncert_path = \"cert.pem\"\nkey_path = \"key.pem\"\n",
                free_port()
            ),
        )
        .unwrap();
        let out = run_cli(d, &["doctor", "--json"], &[]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", stderr(&out)));
        let tls = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["part"] == "tls")
            .unwrap_or_else(|| panic!("no tls line: {report}"));
        assert_eq!(tls["status"], want, "{days} days left: {tls}");
        if want == "warn" {
            assert_eq!(tls["key"], "server.tls.cert_path", "{tls}");
        }
    }
}
