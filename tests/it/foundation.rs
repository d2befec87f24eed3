//! Foundation: default boot, migrations, the error model, configuration
//! precedence, `config check`, config.toml.example, panics.

use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use figment::providers::{Format, Toml};
use figment::value::Value as FigValue;
use mvp28::clock::{Clock, ManualClock};
use mvp28::config::{Config, ConfigError, Source};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::*;

// ---------------------------------------------------------------- helpers

/// The real binary running `serve`; killed and reaped when dropped.
struct ServeProcess {
    child: Child,
    stderr_path: PathBuf,
    base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// SIGTERM, then the exit, which must be a clean one (0); its stderr.
    async fn stop_cleanly(&mut self) -> String {
        self.sigterm();
        let status = self.wait_exit().await;
        let stderr = self.stderr();
        assert_eq!(
            status.code(),
            Some(0),
            "serve did not exit 0 on SIGTERM; stderr:\n{stderr}"
        );
        stderr
    }

    /// Waits (generously) for the process to exit.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit in time; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `mvp28 serve` in `dir` with a clean environment plus `env`;
/// stdout/stderr go to files in `logs` (so `dir` stays untouched).
fn spawn_serve(dir: &Path, logs: &Path, bind: &str, env: &[(&str, &str)]) -> ServeProcess {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let stderr_path = logs.join(format!("serve-{n}.stderr"));
    let stdout_path = logs.join(format!("serve-{n}.stdout"));
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MVP28_SERVER__BIND", bind)
        .current_dir(dir)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("binary spawns");
    ServeProcess {
        child,
        stderr_path,
        base: format!("http://{bind}"),
    }
}

/// Starts `serve` on a free port and waits until /api/health answers 200;
/// retries on another port if the chosen one was taken in the meantime.
async fn start_serving(dir: &Path, logs: &Path) -> (ServeProcess, Value) {
    let client = reqwest::Client::new();
    for _attempt in 0..5 {
        let bind = format!("127.0.0.1:{}", free_port());
        let mut p = spawn_serve(dir, logs, &bind, &[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = p.child.try_wait().expect("try_wait") {
                let err = p.stderr();
                if err.contains("binding") && err.to_lowercase().contains("in use") {
                    break; // port stolen between probe and bind: try another
                }
                panic!("serve exited early with {status}; stderr:\n{err}");
            }
            if let Ok(res) = client.get(format!("{}/api/health", p.base)).send().await {
                if res.status() == StatusCode::OK {
                    let body: Value = res.json().await.expect("health JSON");
                    return (p, body);
                }
            }
            assert!(
                Instant::now() < deadline,
                "server never became healthy; stderr:\n{}",
                p.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("could not find a free port for serve");
}

async fn dev_login(client: &reqwest::Client, base: &str, name: &str) -> String {
    let res = client
        .post(format!("{base}/api/auth/wechat"))
        .json(&json!({"code": format!("dev:{name}")}))
        .send()
        .await
        .expect("login request");
    assert_eq!(res.status(), StatusCode::OK, "dev login failed");
    let body: Value = res.json().await.unwrap();
    body["token"].as_str().expect("token").to_string()
}

async fn get_me(client: &reqwest::Client, base: &str, token: &str) -> StatusCode {
    client
        .get(format!("{base}/api/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me request")
        .status()
}

fn file_len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_cli(dir, args, env)
}

/// `Config::from_source` with an optional TOML file body and an explicit env.
fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("config.toml");
    if let Some(body) = toml {
        std::fs::write(&path, body).unwrap();
    }
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_source(Source {
        file: toml.map(|_| path.as_path()),
        env: &env,
    })
}

fn load_ok(toml: Option<&str>, env: &[(&str, &str)]) -> Config {
    load(toml, env).unwrap_or_else(|e| panic!("config should load: {e}"))
}

fn load_err(toml: Option<&str>, env: &[(&str, &str)]) -> ConfigError {
    match load(toml, env) {
        Ok(_) => panic!("config should be rejected (file {toml:?}, env {env:?})"),
        Err(e) => e,
    }
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every SQLite migration file of the repository (migrations/sqlite/*.sql).
fn migration_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_path("migrations/sqlite"))
        .expect("migrations dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no migrations found");
    names
}

/// refinery's naming rule: V{n}__{name}.sql with name made of word characters.
fn is_refinery_name(file: &str) -> bool {
    let Some(stem) = file.strip_suffix(".sql") else {
        return false;
    };
    let Some(rest) = stem.strip_prefix('V') else {
        return false;
    };
    let Some((version, name)) = rest.split_once("__") else {
        return false;
    };
    !version.is_empty()
        && version.chars().all(|c| c.is_ascii_digit())
        && !name.is_empty()
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Reads a response: status, X-Request-Id header, JSON body (must be JSON).
async fn read(res: reqwest::Response) -> (StatusCode, String, Value) {
    let status = res.status();
    let id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("non-JSON body ({status}, {ct}): {text}"));
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?} for {status}: {text}"
    );
    (status, id, body)
}

/// Asserts the error shape and that the header's request id is the body's.
async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    let (st, id, body) = read(res).await;
    let err = assert_error(st, &body, status, code);
    assert!(!id.is_empty(), "no X-Request-Id header");
    assert_eq!(
        err["request_id"], id,
        "X-Request-Id header differs from error.request_id"
    );
    err
}

// ---------------------------------------------------------------- serve with defaults

/// A SIGTERM sent as soon as the server takes connections (a deploy
/// script, an orchestrator) stops it cleanly: the handlers used to be
/// registered only after startup had finished, and such a SIGTERM killed
/// the process (exit by signal, nothing flushed).
#[tokio::test]
async fn a_sigterm_as_soon_as_the_port_is_open_stops_cleanly() {
    let dir = TempDir::new().unwrap();
    let logs = TempDir::new().unwrap();
    for _ in 0..3 {
        let bind = format!("127.0.0.1:{}", free_port());
        let mut p = spawn_serve(dir.path(), logs.path(), &bind, &[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&bind).is_err() {
            assert!(Instant::now() < deadline, "never listened: {}", p.stderr());
            std::thread::yield_now();
        }
        p.stop_cleanly().await;
    }
}

#[tokio::test]
async fn defaults_boot_answer_health_keep_jwt_secret_and_shut_down_cleanly() {
    let dir = TempDir::new().unwrap();
    let logs = TempDir::new().unwrap();
    let client = reqwest::Client::new();

    let (mut p, health) = start_serving(dir.path(), logs.path()).await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["db"], "ok", "{health}");
    assert_eq!(health["storage"], "ok", "{health}");
    assert!(
        health["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{health}"
    );

    let data = dir.path().join("data");
    assert!(data.join("mvp28.db").is_file(), "./data/mvp28.db missing");
    assert!(data.join("objects").is_dir(), "./data/objects missing");
    let secret_path = data.join("jwt.secret");
    let mode = std::fs::metadata(&secret_path)
        .expect("./data/jwt.secret")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "jwt.secret mode is {:o}", mode & 0o777);
    let secret = std::fs::read_to_string(&secret_path).unwrap();
    assert!(secret.trim().len() >= 32, "generated secret too short");

    // Dev login and the echo provider are on by default, with warnings.
    let token = dev_login(&client, &p.base, "alice").await;
    assert_eq!(get_me(&client, &p.base, &token).await, StatusCode::OK);
    let wal = data.join("mvp28.db-wal");
    assert!(
        file_len(&wal).is_some_and(|n| n > 0),
        "expected a non-empty WAL while serving after a write"
    );

    let stderr = p.stop_cleanly().await;
    assert!(
        file_len(&wal).is_none_or(|n| n == 0),
        "WAL not checkpointed at shutdown ({:?} bytes)",
        file_len(&wal)
    );
    let warn_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warn_lines
            .iter()
            .any(|l| l.to_lowercase().contains("dev login")),
        "no dev-login warning; stderr:\n{stderr}"
    );
    assert!(
        warn_lines.iter().any(|l| l.to_lowercase().contains("echo")),
        "no echo-provider warning; stderr:\n{stderr}"
    );
    assert!(!stderr.contains(secret.trim()), "the JWT secret was logged");
    drop(p);

    // Restart: the same secret is reused, so the earlier token still works.
    let (mut p, health) = start_serving(dir.path(), logs.path()).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(
        std::fs::read_to_string(&secret_path).unwrap(),
        secret,
        "jwt.secret changed on restart"
    );
    assert_eq!(
        std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        get_me(&client, &p.base, &token).await,
        StatusCode::OK,
        "token from before the restart rejected"
    );
    p.stop_cleanly().await;
    assert!(
        file_len(&wal).is_none_or(|n| n == 0),
        "WAL not checkpointed after restart"
    );
}

/// The access log goes through a writer thread (no write(2) on the request
/// path); SIGTERM right after a burst must still leave every line in stderr.
#[tokio::test]
async fn a_burst_then_sigterm_leaves_every_access_line_in_stderr() {
    use futures_util::StreamExt;
    let dir = TempDir::new().unwrap();
    let logs = TempDir::new().unwrap();
    let (mut p, _) = start_serving(dir.path(), logs.path()).await;
    let client = reqwest::Client::new();
    const N: usize = 2000;
    let answered = futures_util::stream::iter(0..N)
        .map(|i| {
            let (client, base) = (client.clone(), p.base.clone());
            async move {
                // 404, or 429 once the per-IP limit is reached: logged alike
                client
                    .get(format!("{base}/api/burst-{i}"))
                    .send()
                    .await
                    .expect("request");
            }
        })
        .buffer_unordered(64)
        .count()
        .await;
    assert_eq!(answered, N);
    let stderr = p.stop_cleanly().await;
    // The access log names route templates, not paths (a path may carry a
    // signed-URL token), so the burst's lines are counted: its requests are
    // the only ones answered 404 (or 429 past the per-IP limit).
    let logged = stderr
        .lines()
        .filter(|l| {
            l.contains("response") && (l.contains("status=404") || l.contains("status=429"))
        })
        .count();
    assert_eq!(
        logged,
        N,
        "{} of {N} access lines missing after SIGTERM",
        N.saturating_sub(logged)
    );
}

// ---------------------------------------------------------------- migrations

#[test]
fn migrate_is_idempotent_and_applies_every_migration_file() {
    let files = migration_files();
    for f in &files {
        assert!(
            is_refinery_name(f),
            "migration {f:?} is not named V{{n}}__{{name}}.sql; refinery would skip it"
        );
    }
    let dir = TempDir::new().unwrap();
    let first = run(dir.path(), &["migrate"], &[]);
    assert!(first.status.success(), "migrate failed: {}", stderr(&first));
    assert!(dir.path().join("data/mvp28.db").is_file());
    let second = run(dir.path(), &["migrate"], &[]);
    assert!(
        second.status.success(),
        "second migrate failed: {}",
        stderr(&second)
    );
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "second migrate changed something"
    );

    let st = run(dir.path(), &["migrate", "--status"], &[]);
    assert!(
        st.status.success(),
        "migrate --status failed: {}",
        stderr(&st)
    );
    let out = stdout(&st);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        files.len(),
        "status lists {} migrations, repo has {}:\n{out}",
        lines.len(),
        files.len()
    );
    for f in &files {
        let stem = f.trim_end_matches(".sql");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(stem) && l.ends_with("applied")),
            "{stem} not listed as applied:\n{out}"
        );
    }
    assert!(!out.contains("pending"), "{out}");

    let conn = rusqlite::Connection::open(dir.path().join("data/mvp28.db")).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM refinery_schema_history", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        n as usize,
        files.len(),
        "each migration recorded exactly once"
    );
}

#[tokio::test]
async fn a_newer_database_is_refused_by_migrate_and_serve() {
    let dir = TempDir::new().unwrap();
    let logs = TempDir::new().unwrap();
    let out = run(dir.path(), &["migrate"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    {
        let conn = rusqlite::Connection::open(dir.path().join("data/mvp28.db")).unwrap();
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (99999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
            [],
        )
        .unwrap();
    }

    let out = run(dir.path(), &["migrate"], &[]);
    assert!(!out.status.success(), "migrate accepted a newer database");
    assert!(stderr(&out).contains("newer"), "stderr: {}", stderr(&out));

    let mut p = spawn_serve(dir.path(), logs.path(), "127.0.0.1:0", &[]);
    let status = p.wait_exit().await;
    assert!(!status.success(), "serve accepted a newer database");
    assert!(p.stderr().contains("newer"), "stderr: {}", p.stderr());

    let conn = rusqlite::Connection::open(dir.path().join("data/mvp28.db")).unwrap();
    let max: i64 = conn
        .query_row(
            "SELECT max(version) FROM refinery_schema_history",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(max, 99999, "the refused database was modified");
}

// ---------------------------------------------------------------- error model

#[tokio::test]
async fn framework_and_body_errors_all_use_the_json_error_shape() {
    let app = TestApp::builder()
        .config(|c| c.server.max_body_bytes = 2048)
        .spawn()
        .await;
    let c = &app.client;
    let login = app.url("/api/auth/wechat");

    // 404, inside and outside /api.
    expect_error(
        c.get(app.url("/api/no-such-route")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        c.get(app.url("/nowhere")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;

    // 405.
    expect_error(
        c.get(&login).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(
        c.delete(app.url("/api/health")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;

    // Malformed JSON.
    let res = c
        .post(&login)
        .header("content-type", "application/json")
        .body(r#"{"code": "#)
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_request").await;

    // Unknown field.
    let res = c
        .post(&login)
        .json(&json!({"code": "dev:a", "sneaky": 1}))
        .send()
        .await
        .unwrap();
    let err = expect_error(res, 400, "invalid_request").await;
    assert!(err["message"].as_str().unwrap().contains("sneaky"), "{err}");

    // Wrong type: 422 naming the field.
    let res = c
        .post(&login)
        .json(&json!({"code": 5}))
        .send()
        .await
        .unwrap();
    let err = expect_error(res, 422, "validation").await;
    assert_eq!(err["field"], "code", "{err}");
    assert!(err["message"].as_str().unwrap().contains("code"), "{err}");

    // Missing field: 422 naming it.
    let res = c.post(&login).json(&json!({})).send().await.unwrap();
    let err = expect_error(res, 422, "validation").await;
    assert_eq!(err["field"], "code", "{err}");

    // Oversized, with a Content-Length ...
    let big = json!({"code": "x".repeat(4096)});
    let res = c.post(&login).json(&big).send().await.unwrap();
    expect_error(res, 413, "payload_too_large").await;
    // ... and streamed without one.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"code\": \"".to_vec()),
        Ok(vec![b'x'; 4096]),
        Ok(b"\"}".to_vec()),
    ];
    let res = c
        .post(&login)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    expect_error(res, 413, "payload_too_large").await;

    // Wrong / missing content type.
    let res = c
        .post(&login)
        .header("content-type", "text/plain")
        .body(r#"{"code":"dev:a"}"#)
        .send()
        .await
        .unwrap();
    expect_error(res, 415, "unsupported_media_type").await;
    let res = c
        .post(&login)
        .body(r#"{"code":"dev:a"}"#)
        .send()
        .await
        .unwrap();
    expect_error(res, 415, "unsupported_media_type").await;

    // Request ids are per request.
    let a = expect_error(c.get(app.url("/x")).send().await.unwrap(), 404, "not_found").await;
    let b = expect_error(c.get(app.url("/x")).send().await.unwrap(), 404, "not_found").await;
    assert_ne!(a["request_id"], b["request_id"]);

    // A body under the limit still works, and successes carry a request id too.
    let res = c
        .post(&login)
        .json(&json!({"code": "dev:alice"}))
        .send()
        .await
        .unwrap();
    let (status, id, body) = read(res).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!id.is_empty());
    app.stop().await;
}

/// A clock that panics once when armed: the one way to make a real handler
/// panic without a test-only route.
struct PanicClock {
    inner: ManualClock,
    armed: AtomicBool,
}

impl Clock for PanicClock {
    fn now(&self) -> DateTime<Utc> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("test clock exploded: do-not-leak-this");
        }
        self.inner.now()
    }
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

// current_thread runtime: the server's tasks run on this thread, so the
// thread-local subscriber sees their logs.
#[tokio::test(flavor = "current_thread")]
async fn a_handler_panic_is_a_logged_500_and_the_server_stays_up() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // With exactly one dispatcher registered, tracing-core computes a new
    // callsite's interest from the default of whichever thread hits it
    // first, so a span first created by another test's thread would be
    // cached "never" for this subscriber too. A second, inert dispatcher
    // makes it ask every registered dispatcher instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = TempDir::new().unwrap();
    let clock = Arc::new(PanicClock {
        inner: ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 4, 0, 0).unwrap()),
        armed: AtomicBool::new(false),
    });
    let server = mvp28::ops::serve::start(test_config(dir.path()), clock.clone())
        .await
        .expect("server starts");
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    // Other tests' threads (no subscriber) may have registered the request
    // span's callsite while this thread's subscriber was being set: a
    // tracing-core race that caches it as disabled. Recompute the cache.
    tracing::callsite::rebuild_interest_cache();

    // Login reads the clock inside the handler. A background task could
    // consume the armed panic first, so re-arm a few times.
    let mut panicked = None;
    for _ in 0..5 {
        clock.armed.store(true, Ordering::SeqCst);
        let res = client
            .post(format!("{base}/api/auth/wechat"))
            .json(&json!({"code": "dev:bob"}))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::INTERNAL_SERVER_ERROR {
            panicked = Some(res);
            break;
        }
    }
    let res = panicked.expect("the armed clock never panicked inside a handler");
    let (status, id, body) = read(res).await;
    let err = assert_error(status, &body, 500, "internal");
    assert_eq!(err["request_id"], id);
    assert!(
        !body.to_string().contains("do-not-leak-this"),
        "panic message leaked: {body}"
    );

    // Still serving.
    let res = client
        .get(format!("{base}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let token = dev_login(&client, &base, "bob").await;
    assert_eq!(get_me(&client, &base, &token).await, StatusCode::OK);

    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("panicked") && l.contains(&id)),
        "no ERROR log line with the request id for the panic:\n{logged}"
    );
    server.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------- config: precedence (in-process)

const SECRET_A: &str = "file-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SECRET_B: &str = "legacy-secret-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SECRET_C: &str = "mvp28-secret-ccccccccccccccccccccccccccccccccc";

fn precedence_file() -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:9001"
public_url = "https://file.example"
[database]
path = "file.db"
[auth]
jwt_secret = "{SECRET_A}"
[wechat]
app_id = "wx-file"
app_secret = "file-app-secret"
[quota]
free_daily = 7
"#
    )
}

#[test]
fn config_defaults_then_file_then_legacy_env_then_mvp28_env() {
    let d = load_ok(None, &[]);
    assert_eq!(d.server.bind, "127.0.0.1:8080");
    assert_eq!(d.database.path, "data/mvp28.db");
    assert_eq!(d.server.max_body_bytes, 1024 * 1024);
    assert_eq!(d.quota.free_daily, 20);
    assert!(d.auth.jwt_secret.is_empty());
    assert!(
        d.dev_login_enabled(),
        "dev login defaults on without a WeChat app id"
    );

    let file = precedence_file();
    let f = load_ok(Some(&file), &[]);
    assert_eq!(f.server.bind, "127.0.0.1:9001");
    assert_eq!(f.server.public_url, "https://file.example");
    assert_eq!(f.database.path, "file.db");
    assert_eq!(f.auth.jwt_secret, SECRET_A);
    assert_eq!(f.wechat.app_id, "wx-file");
    assert_eq!(f.wechat.app_secret, "file-app-secret");
    assert_eq!(f.quota.free_daily, 7);
    assert_eq!(
        f.server.max_body_bytes,
        1024 * 1024,
        "keys absent from the file keep defaults"
    );
    assert!(
        !f.dev_login_enabled(),
        "dev login off once a WeChat app id is configured"
    );

    let legacy = [
        ("DATABASE_URL", "sqlite:legacy.db"),
        ("JWT_SECRET", SECRET_B),
        ("WECHAT_APPID", "wx-legacy"),
        ("WECHAT_SECRET", "legacy-app-secret"),
        ("APP_BASE_URL", "https://legacy.example/"),
    ];
    let l = load_ok(Some(&file), &legacy);
    assert_eq!(l.database.path, "legacy.db");
    assert_eq!(l.auth.jwt_secret, SECRET_B);
    assert_eq!(l.wechat.app_id, "wx-legacy");
    assert_eq!(l.wechat.app_secret, "legacy-app-secret");
    assert_eq!(l.server.public_url, "https://legacy.example");
    assert_eq!(
        l.server.bind, "127.0.0.1:9001",
        "file values not overridden stay"
    );

    let mut both = legacy.to_vec();
    both.extend([
        ("MVP28_DATABASE__PATH", "mvp28.db"),
        ("MVP28_AUTH__JWT_SECRET", SECRET_C),
        ("MVP28_WECHAT__APP_ID", "wx-mvp28"),
        ("MVP28_WECHAT__APP_SECRET", "mvp28-app-secret"),
        ("MVP28_SERVER__PUBLIC_URL", "https://mvp28.example"),
        ("MVP28_SERVER__BIND", "0.0.0.0:9003"),
        ("MVP28_QUOTA__FREE_DAILY", "3"),
        ("MVP28_AUTH__DEV_LOGIN", "true"),
    ]);
    let m = load_ok(Some(&file), &both);
    assert_eq!(m.database.path, "mvp28.db");
    assert_eq!(m.auth.jwt_secret, SECRET_C);
    assert_eq!(m.wechat.app_id, "wx-mvp28");
    assert_eq!(m.wechat.app_secret, "mvp28-app-secret");
    assert_eq!(m.server.public_url, "https://mvp28.example");
    assert_eq!(m.server.bind, "0.0.0.0:9003");
    assert_eq!(m.quota.free_daily, 3);
    assert_eq!(m.auth.dev_login, Some(true));
    assert!(m.dev_login_enabled(), "explicit auth.dev_login = true wins");

    // MVP28_ beats the file without any legacy name involved, too.
    let only = load_ok(Some(&file), &[("MVP28_SERVER__BIND", "127.0.0.1:9004")]);
    assert_eq!(only.server.bind, "127.0.0.1:9004");
    assert_eq!(only.database.path, "file.db");
}

/// What payments need besides the merchant id (paths are not read by
/// `Config::from_source`).
const PAY_REST: &[(&str, &str)] = &[
    (
        "WECHAT_PAY_SERIAL_NO",
        "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
    ),
    ("WECHAT_PAY_V3KEY", "0123456789abcdefghijklmnopqrstuv"),
    ("MVP28_WECHAT_PAY__APP_ID", "wx-pay-app"),
    ("MVP28_WECHAT_PAY__PRIVATE_KEY_PATH", "apiclient_key.pem"),
    ("MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_PATH", "pub_key.pem"),
    ("MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_ID", "PUB_KEY_ID_01"),
];

#[test]
fn config_env_values_keep_their_types() {
    // String keys stay strings even when they look like numbers or booleans.
    let digits = "1234567890123456789012345678901234567890";
    let c = load_ok(
        None,
        &[
            ("MVP28_WECHAT_PAY__MCH_ID", "1900000109"),
            ("MVP28_AUTH__JWT_SECRET", digits),
            ("MVP28_LLM__SYSTEM_PROMPT", "true"),
            ("MVP28_SERVER__MAX_BODY_BYTES", "4096"),
            ("MVP28_AUTH__DEV_LOGIN", "false"),
            ("MVP28_SERVER__TRUSTED_PROXIES", r#"["10.0.0.1", "::1"]"#),
        ]
        .iter()
        .chain(PAY_REST)
        .copied()
        .collect::<Vec<_>>(),
    );
    assert_eq!(c.wechat_pay.mch_id, "1900000109");
    assert_eq!(c.auth.jwt_secret, digits);
    assert_eq!(c.llm.system_prompt, "true");
    assert_eq!(c.server.max_body_bytes, 4096);
    assert_eq!(c.auth.dev_login, Some(false));
    assert!(!c.dev_login_enabled());
    assert_eq!(
        c.server.trusted_proxies,
        vec!["10.0.0.1".to_string(), "::1".to_string()]
    );
    // The original name for the merchant id is a string as well.
    assert_eq!(
        load_ok(
            None,
            &[&[("WECHAT_PAY_MCHID", "1900000109")], PAY_REST].concat()
        )
        .wechat_pay
        .mch_id,
        "1900000109"
    );
}

#[test]
fn config_database_url_forms() {
    for (url, want) in [
        ("sqlite:data/app.db", "data/app.db"),
        ("sqlite://data/app.db", "data/app.db"),
        ("sqlite:///var/lib/mvp28/app.db", "/var/lib/mvp28/app.db"),
        ("sqlite:app.db?mode=rwc", "app.db"),
        ("/srv/mvp28/app.db", "/srv/mvp28/app.db"),
        ("relative/app.db", "relative/app.db"),
    ] {
        let c = load_ok(None, &[("DATABASE_URL", url)]);
        assert_eq!(c.database.path, want, "DATABASE_URL={url}");
        let dir = if want.contains('/') {
            want.rsplit_once('/').unwrap().0
        } else {
            "."
        };
        assert_eq!(
            c.data_dir(),
            PathBuf::from(dir),
            "data dir for DATABASE_URL={url}"
        );
    }
    // postgres URLs choose the Postgres backend (docs/postgres.md)
    for url in [
        "postgres://app:hunter2-pw@db.example:5432/app",
        "postgresql://app:hunter2-pw@db.example/app",
    ] {
        let c = load_ok(None, &[("DATABASE_URL", url)]);
        assert_eq!(c.database.postgres_url(), Some(url));
        assert_eq!(c.database.path, "data/mvp28.db", "the SQLite default stays");
    }
    {
        let url = "mysql://app:hunter2-pw@db.example/app";
        let e = load_err(None, &[("DATABASE_URL", url)]);
        assert!(
            e.key.contains("database.path") && e.key.contains("DATABASE_URL"),
            "key: {}",
            e.key
        );
        assert!(
            !e.to_string().contains("hunter2"),
            "error echoes the URL's password: {e}"
        );
    }
}

#[test]
fn config_secret_files() {
    let dir = TempDir::new().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().into_owned()
    };
    let mvp = write("mvp28-jwt", &format!("{SECRET_C}\n"));
    let legacy = write("legacy-jwt", &format!("{SECRET_B}\r\n"));
    let wx = write("wx-secret", "wx-secret-from-file\n");

    let c = load_ok(None, &[("MVP28_AUTH__JWT_SECRET_FILE", &mvp)]);
    assert_eq!(c.auth.jwt_secret, SECRET_C, "trailing newline trimmed");
    let c = load_ok(None, &[("JWT_SECRET_FILE", &legacy)]);
    assert_eq!(c.auth.jwt_secret, SECRET_B);
    // The MVP28_ file wins over the original name's file and plain value.
    let c = load_ok(
        Some(&precedence_file()),
        &[
            ("MVP28_AUTH__JWT_SECRET_FILE", &mvp),
            ("JWT_SECRET_FILE", &legacy),
            ("JWT_SECRET", SECRET_A),
        ],
    );
    assert_eq!(c.auth.jwt_secret, SECRET_C);
    let c = load_ok(
        None,
        &[("WECHAT_APPID", "wx1"), ("WECHAT_SECRET_FILE", &wx)],
    );
    assert_eq!(c.wechat.app_secret, "wx-secret-from-file");

    let missing = dir.path().join("nope").to_string_lossy().into_owned();
    let e = load_err(None, &[("MVP28_AUTH__JWT_SECRET_FILE", &missing)]);
    assert_eq!(e.key, "auth.jwt_secret");
    assert!(e.message.contains("MVP28_AUTH__JWT_SECRET_FILE"), "{e}");
    // A secret read from a file is validated like any other.
    let short = write("short", "tooshort\n");
    let e = load_err(None, &[("JWT_SECRET_FILE", &short)]);
    assert_eq!(e.key, "auth.jwt_secret");
    assert!(
        !e.to_string().contains("tooshort"),
        "error echoes the secret: {e}"
    );
}

/// (config file, env, the key the error must name)
type InvalidCase = (
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn config_invalid_values_name_their_key() {
    let cases: &[InvalidCase] = &[
        (None, &[("MVP28_SERVER__BIND", "nonsense")], "server.bind"),
        (
            Some("[quota]\ntimezone = \"Mars\"\n"),
            &[],
            "quota.timezone",
        ),
        (
            Some("[server]\nmax_body_bytes = 10\n"),
            &[],
            "server.max_body_bytes",
        ),
        (
            Some("[server]\npublic_url = \"ftp://x\"\n"),
            &[],
            "server.public_url",
        ),
        (Some("[log]\nformat = \"xml\"\n"), &[], "log.format"),
        (
            None,
            &[("MVP28_AUTH__JWT_SECRET", "short")],
            "auth.jwt_secret",
        ),
        (None, &[("WECHAT_APPID", "wx1")], "wechat.app_secret"),
        (
            Some("[[llm.providers]]\nname = \"x\"\nkind = \"nope\"\n"),
            &[],
            "llm.providers[0].kind",
        ),
        (Some("[storage]\nkind = \"ftp\"\n"), &[], "storage.kind"),
        (Some("[server]\nbind = 8080\n"), &[], "server.bind"),
        (
            None,
            &[("MVP28_QUOTA__FREE_DAILY", "lots")],
            "quota.free_daily",
        ),
    ];
    for (file, env, key) in cases {
        let e = load_err(*file, env);
        assert!(e.key.contains(key), "expected key {key}, got {e}");
    }
    // Unknown keys (typos) are refused, naming the key.
    let e = load_err(Some("[server]\nbindd = \"127.0.0.1:1\"\n"), &[]);
    assert!(e.to_string().contains("bindd"), "{e}");
    let e = load_err(None, &[("MVP28_SERVER__BINDD", "x")]);
    assert!(e.to_string().contains("bindd"), "{e}");
}

// ---------------------------------------------------------------- config check (binary)

#[test]
fn config_check_redacts_every_secret() {
    let dir = TempDir::new().unwrap();
    let jwt = "jwt-9f1c2d7e4b6a8c0d1e2f3a4b5c6d7e8f9a0b";
    let wx = "wxsecret-7c5e3a1f9d8b";
    let v3 = "v3key-3e8d1c9b7a6f5e4d0a1b2c3d4e";
    let s3_secret = "s3secret-5b4a3c2d1e0f";
    let s3_key_id = "s3keyid-0a9b8c7d6e5f";
    let openai = "sk-openai-1f2e3d4c5b6a";
    let env = [
        ("MVP28_AUTH__JWT_SECRET", jwt),
        ("WECHAT_APPID", "wx-visible-appid"),
        ("WECHAT_SECRET", wx),
        ("WECHAT_PAY_MCHID", "1900000109"),
        ("WECHAT_PAY_V3KEY", v3),
        ("MVP28_STORAGE__S3__SECRET_ACCESS_KEY", s3_secret),
        ("SUPABASE_S3_ACCESS_KEY_ID", s3_key_id),
        ("OPENAI_API_KEY", openai),
        (
            "WECHAT_PAY_SERIAL_NO",
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        ),
        ("MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_ID", "PUB_KEY_ID_01"),
        ("MVP28_WECHAT_PAY__PRIVATE_KEY_PATH", "apiclient_key.pem"),
        ("MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_PATH", "pub_key.pem"),
    ];
    // `config check` reads the key files (relative to its working dir).
    crate::fakes::wechatpay::write_key_files(dir.path());
    // The secrets really are loaded (so their absence below means redaction).
    let c = load_ok(None, &env);
    assert_eq!(c.auth.jwt_secret, jwt);
    assert_eq!(c.wechat.app_secret, wx);
    assert_eq!(c.wechat_pay.api_v3_key, v3);
    assert_eq!(c.storage.s3.secret_access_key, s3_secret);
    assert_eq!(c.storage.s3.access_key_id, s3_key_id);
    assert_eq!(c.llm.providers[0].api_key, openai);

    let out = run(dir.path(), &["config", "check"], &env);
    let (so, se) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "stderr: {se}");
    for s in [jwt, wx, v3, s3_secret, s3_key_id, openai] {
        assert!(!so.contains(s) && !se.contains(s), "secret {s} printed");
    }
    assert!(so.matches("<redacted>").count() >= 6, "{so}");
    assert!(
        so.contains("wx-visible-appid"),
        "non-secret values are shown: {so}"
    );
    assert!(so.contains("\"1900000109\""), "{so}");

    // The printed TOML parses back into a Config.
    let parsed: Config = figment::Figment::from(Toml::string(&so))
        .extract()
        .unwrap_or_else(|e| panic!("config check output does not parse back: {e}\n{so}"));
    assert_eq!(parsed.wechat.app_id, "wx-visible-appid");
    assert_eq!(parsed.auth.jwt_secret, "<redacted>");
    assert_eq!(parsed.server.max_body_bytes, c.server.max_body_bytes);
}

#[test]
fn config_check_exit_codes_and_precedence_through_the_binary() {
    let dir = TempDir::new().unwrap();
    let secret_file = dir.path().join("jwt");
    std::fs::write(&secret_file, format!("{SECRET_C}\n")).unwrap();
    let cfg = dir.path().join("custom.toml");
    std::fs::write(&cfg, precedence_file()).unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let secret_s = secret_file.to_string_lossy().into_owned();

    // --config after the subcommand (global flag); file < legacy < MVP28_.
    let out = run(
        dir.path(),
        &["config", "check", "--config", &cfg_s],
        &[
            ("DATABASE_URL", "sqlite://legacy.db"),
            ("APP_BASE_URL", "https://legacy.example"),
            ("MVP28_SERVER__PUBLIC_URL", "https://mvp28.example"),
            ("JWT_SECRET_FILE", &secret_s),
            // a WeChat app id makes this a deployment: real replies needed
            ("OPENAI_API_KEY", "sk-precedence-test"),
        ],
    );
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(so.contains("bind = \"127.0.0.1:9001\""), "{so}");
    assert!(so.contains("path = \"legacy.db\""), "{so}");
    assert!(
        so.contains("public_url = \"https://mvp28.example\""),
        "{so}"
    );
    assert!(so.contains("free_daily = 7"), "{so}");
    assert!(!so.contains(SECRET_C) && !so.contains(SECRET_A), "{so}");

    // ./config.toml is picked up when present.
    std::fs::write(
        dir.path().join("config.toml"),
        "[server]\nbind = \"127.0.0.1:9555\"\n",
    )
    .unwrap();
    let out = run(dir.path(), &["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("bind = \"127.0.0.1:9555\""));
    std::fs::remove_file(dir.path().join("config.toml")).unwrap();

    // Invalid values: exit 2, key named on stderr.
    let out = run(
        dir.path(),
        &["config", "check"],
        &[("MVP28_SERVER__BIND", "nonsense")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("server.bind"), "{}", stderr(&out));
    let mars = dir.path().join("mars.toml");
    std::fs::write(&mars, "[quota]\ntimezone = \"Mars\"\n").unwrap();
    let out = run(
        dir.path(),
        &["--config", &mars.to_string_lossy(), "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("quota.timezone"), "{}", stderr(&out));
    let out = run(
        dir.path(),
        &["config", "check"],
        &[("DATABASE_URL", "mysql://u:pw@h/db")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));
    let out = run(
        dir.path(),
        &["--config", "/definitely/not/here.toml", "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    // serve refuses an invalid config the same way, before binding anything.
    let out = run(
        dir.path(),
        &["serve"],
        &[("MVP28_SERVER__BIND", "nonsense")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("server.bind"));
}

#[test]
fn config_check_output_round_trips() {
    let dir = TempDir::new().unwrap();
    let custom = dir.path().join("custom.toml");
    std::fs::write(
        &custom,
        r#"
[server]
bind = "0.0.0.0:9000"
trusted_proxies = ["10.0.0.1"]
max_body_bytes = 65536
[log]
format = "json"
[auth]
dev_login = true
token_ttl_secs = 3600
[llm]
allow_echo = true
system_prompt = "You are \"helpful\".\nBe brief."
[[llm.providers]]
name = "local"
kind = "echo"
models = ["echo-1", "echo-2"]
[[llm.providers]]
name = "openai"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
models = ["gpt-4o-mini"]
[quota]
timezone = "-05:30"
topup_amounts_fen = [100]
[wechat_pay]
mch_id = "1900000109"
app_id = "wx-pay-app"
serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
private_key_path = "apiclient_key.pem"
platform_public_key_path = "pub_key.pem"
platform_public_key_id = "PUB_KEY_ID_01"
"#,
    )
    .unwrap();
    // Payments need their key files; the APIv3 key is a secret, printed
    // redacted, so it comes from the environment on both runs.
    crate::fakes::wechatpay::write_key_files(dir.path());
    let v3 = [("WECHAT_PAY_V3KEY", "0123456789abcdefghijklmnopqrstuv")];
    let first = run(
        dir.path(),
        &["--config", &custom.to_string_lossy(), "config", "check"],
        &v3,
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &first.stdout).unwrap();
    let second = run(
        dir.path(),
        &["--config", &printed.to_string_lossy(), "config", "check"],
        &v3,
    );
    assert_eq!(
        second.status.code(),
        Some(0),
        "printed config rejected: {}\n{}",
        stderr(&second),
        stdout(&first)
    );
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "round trip changed the config"
    );

    let a = load_ok(Some(&std::fs::read_to_string(&custom).unwrap()), &v3);
    let b = load_ok(Some(&stdout(&first)), &v3);
    assert_eq!(a.redacted_toml(), b.redacted_toml());
    assert_eq!(b.llm.providers.len(), 2);
    assert_eq!(b.llm.system_prompt, "You are \"helpful\".\nBe brief.");
    assert_eq!(b.auth.dev_login, Some(true));
    assert_eq!(b.llm.allow_echo, Some(true));
    assert_eq!(b.server.max_body_bytes, 65536);
}

// ---------------------------------------------------------------- config.toml.example

/// Dotted paths of every key with a value (arrays of tables: their first item).
fn key_paths(prefix: &str, v: &FigValue, out: &mut BTreeSet<String>) {
    let FigValue::Dict(_, dict) = v else { return };
    for (k, v) in dict {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            FigValue::Dict(..) => key_paths(&path, v, out),
            FigValue::Array(_, items) if items.iter().any(|i| matches!(i, FigValue::Dict(..))) => {
                key_paths(&path, &items[0], out)
            }
            FigValue::Empty(..) => {}
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn config_example_documents_every_key_with_its_default() {
    let example = repo_path("config.toml.example");
    let text = std::fs::read_to_string(&example).expect("config.toml.example at the repo root");

    // Accepted by the binary.
    let dir = TempDir::new().unwrap();
    let out = run(
        dir.path(),
        &["--config", &example.to_string_lossy(), "config", "check"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "example rejected: {}",
        stderr(&out)
    );

    // Its values are the embedded defaults.
    let env = HashMap::new();
    let with = Config::from_source(Source {
        file: Some(&example),
        env: &env,
    })
    .expect("example loads");
    let without = Config::from_source(Source {
        file: None,
        env: &env,
    })
    .unwrap();
    assert_eq!(
        with.redacted_toml(),
        without.redacted_toml(),
        "example values differ from the defaults"
    );
    assert_eq!(stdout(&out), without.redacted_toml());

    // Every key is present (not just defaulted).
    let mut want = BTreeSet::new();
    key_paths(
        "",
        &FigValue::serialize(Config::default()).unwrap(),
        &mut want,
    );
    let doc: FigValue = figment::Figment::from(Toml::file_exact(&example))
        .extract()
        .unwrap();
    let mut have = BTreeSet::new();
    key_paths("", &doc, &mut have);
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "config.toml.example lacks keys: {missing:?}"
    );
    assert!(want.len() > 40, "key walk found too few keys: {want:?}");
    assert!(
        text.contains("dev_login"),
        "auth.dev_login is not documented"
    );

    // Every key line carries a comment.
    for line in text.lines() {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') && !t.starts_with('[') {
            assert!(
                t.contains(" # ") || t.contains("  #"),
                "undocumented line: {line}"
            );
        }
    }

    // Lines scripts/setup-env.sh rewrites.
    for prefix in [
        "jwt_secret = \"\"",
        "app_id = \"\"",
        "app_secret = \"\"",
        "api_key = \"\"",
        "public_url = \"",
        "bind = \"",
        "path = \"",
        "local_dir = \"",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(prefix)),
            "no line starting with {prefix:?}"
        );
    }
}
