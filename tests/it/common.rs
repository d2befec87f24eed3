//! TestApp: the real server in-process on 127.0.0.1:0 with a temp-file
//! database and a manual clock; plus a runner for the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use mvp28::clock::ManualClock;
use mvp28::config::Config;
use mvp28::db::pg::PgConnector;
use mvp28::db::sql::{Conn, DbResult, Params, Row, Value as SqlValue};
use mvp28::http::AppState;
use mvp28::ops::serve::{self, Server};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

pub const TEST_JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

pub struct TestApp {
    server: Option<Server>,
    pub base: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub config: Config,
    pub dir: TempDir,
}

pub struct Builder {
    config: Config,
    dir: TempDir,
    clock: ManualClock,
}

/// A test config: temp paths, a fixed JWT secret, no rate limits.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.database.path = dir.join("mvp28.db").to_string_lossy().into();
    // The suite's Postgres run (tests/it/postgres.rs): a fresh database each.
    if let Some(admin) = postgres_admin_url() {
        c.database.url = super::pgcluster::create_db(&admin);
    }
    c.storage.local_dir = dir.join("objects").to_string_lossy().into();
    c.auth.jwt_secret = TEST_JWT_SECRET.into();
    c.rate_limit.per_ip_per_minute = 0;
    c.rate_limit.per_user_per_minute = 0;
    c.rate_limit.login_per_ip_per_minute = 0;
    c.rate_limit.location_per_user_per_minute = 0;
    // in-process servers run inside the test binary: PDFs are extracted
    // by the real one
    c.storage.pdf_helper = bin().to_string_lossy().into();
    c
}

impl Builder {
    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Starts the clock at this UTC instant (default 2026-11-25T04:00:00Z,
    /// i.e. noon in UTC+8).
    pub fn at(self, t: chrono::DateTime<Utc>) -> Self {
        self.clock.set(t);
        self
    }

    pub async fn spawn(self) -> TestApp {
        self.config.validate().expect("test config valid");
        let server = serve::start(self.config.clone(), Arc::new(self.clock.clone()))
            .await
            .expect("server starts");
        TestApp {
            base: format!("http://{}", server.addr),
            server: Some(server),
            client: reqwest::Client::new(),
            clock: self.clock,
            config: self.config,
            dir: self.dir,
        }
    }
}

impl TestApp {
    pub fn builder() -> Builder {
        let dir = tempfile::tempdir().expect("tempdir");
        Builder {
            config: test_config(dir.path()),
            dir,
            clock: ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 4, 0, 0).unwrap()),
        }
    }

    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    pub fn state(&self) -> &AppState {
        &self.server.as_ref().expect("running").state
    }

    /// The app clock's time in unix seconds.
    pub fn clock_now(&self) -> i64 {
        use mvp28::clock::Clock;
        self.clock.now().timestamp()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops (graceful) and starts again on the same database and clock.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("clean stop");
        }
        let server = serve::start(self.config.clone(), Arc::new(self.clock.clone()))
            .await
            .expect("server restarts");
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("clean stop");
        }
    }

    /// Dev login; returns (token, user id).
    pub async fn login(&self, name: &str) -> (String, String) {
        let (status, body) = self
            .post(
                "/api/auth/wechat",
                None,
                serde_json::json!({"code": format!("dev:{name}")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login failed: {body}");
        (
            body["token"].as_str().unwrap().to_string(),
            body["user"]["id"].as_str().unwrap().to_string(),
        )
    }

    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)), token).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).json(&body), token)
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.send(self.client.delete(self.url(path)), token).await
    }

    /// The `/metrics` page (from the test's own address, which may read it).
    pub async fn metrics(&self) -> String {
        let res = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert!(res.status().is_success(), "/metrics: {}", res.status());
        res.text().await.unwrap()
    }

    /// Runs the real binary against this app's database.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(
            self.dir.path(),
            args,
            &[
                ("MVP28_DATABASE__PATH", &self.config.database.path),
                ("MVP28_DATABASE__URL", &self.config.database.url),
            ],
        )
    }
}

/// Set when this run of the suite is the Postgres one: the cluster's
/// superuser URL.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("MVP28_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty())
}

/// True (after one line saying why) when a test checks something only
/// SQLite has (its file, WAL, the backup API) and this is the Postgres run.
pub fn sqlite_only(what: &str) -> bool {
    if postgres_admin_url().is_some() {
        eprintln!("skipped on Postgres: {what}");
        return true;
    }
    false
}

/// Asserts our error shape and returns the error object.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) -> Value {
    assert_eq!(
        status.as_u16(),
        want_status,
        "unexpected status, body: {body}"
    );
    let err = &body["error"];
    assert_eq!(err["code"], want_code, "unexpected code, body: {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    assert!(
        err["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "no request_id: {body}"
    );
    err.clone()
}

/// A port free right now on 127.0.0.1, for a server started as a child.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mvp28"))
}

/// The binary with a clean environment (only PATH and the given vars).
pub fn run_cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `mvp28 serve` as a child process in `dir` (config.toml there), killed
/// when dropped.
pub struct ServeGuard(Option<std::process::Child>);

impl ServeGuard {
    pub async fn start(dir: &Path, base: &str) -> ServeGuard {
        Self::start_logged(dir, base, None).await
    }

    /// Like `start`, with the server's log (stderr) written to `log`.
    pub async fn start_logged(dir: &Path, base: &str, log: Option<&Path>) -> ServeGuard {
        let stderr = match log {
            Some(p) => std::process::Stdio::from(std::fs::File::create(p).expect("log file")),
            None => std::process::Stdio::null(),
        };
        let child = Command::new(bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(dir)
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("serve starts");
        let guard = ServeGuard(Some(child));
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/api/health")).send().await {
                if r.status() == 200 {
                    return guard;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server at {base} did not become healthy");
    }

    /// SIGTERM, then the exit status (None if still running after `wait`).
    pub fn terminate(&mut self, wait: std::time::Duration) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut()?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServeGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The app's database opened beside it, on either backend, for checks a
/// user cannot make through HTTP (rows, holds, the ledger).
pub struct TestDb {
    sqlite: Option<rusqlite::Connection>,
    url: String,
}

impl TestDb {
    pub fn of(app: &TestApp) -> TestDb {
        Self::open(&app.config)
    }

    pub fn open(config: &Config) -> TestDb {
        match config.database.postgres_url() {
            Some(url) => TestDb {
                sqlite: None,
                url: url.to_owned(),
            },
            None => TestDb {
                sqlite: Some(rusqlite::Connection::open(&config.database.path).expect("open db")),
                url: String::new(),
            },
        }
    }

    /// Runs `f` on a connection (on Postgres, from a plain thread: the
    /// synchronous client cannot run inside the test's runtime).
    pub fn with<T: Send>(&self, f: impl FnOnce(&Conn<'_>) -> DbResult<T> + Send) -> DbResult<T> {
        match &self.sqlite {
            Some(c) => f(&Conn::sqlite(c)),
            None => std::thread::scope(|s| {
                let url = self.url.as_str();
                s.spawn(move || {
                    let connector = PgConnector::new(
                        url,
                        None,
                        std::time::Duration::from_secs(30),
                        std::time::Duration::from_secs(10),
                    )
                    .expect("postgres url");
                    let pg = connector.connect()?;
                    f(&Conn::postgres(&pg))
                })
                .join()
                .expect("db thread")
            }),
        }
    }

    /// Parameters owned, to cross to the Postgres thread.
    fn owned<P: Params>(params: P) -> Vec<SqlValue> {
        params.values().into_iter().map(|v| v.to_owned()).collect()
    }

    pub fn query_row<T: Send, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> DbResult<T> + Send,
    ) -> DbResult<T> {
        let values = Self::owned(params);
        self.with(|c| c.query_row(sql, values, f))
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> DbResult<usize> {
        let values = Self::owned(params);
        self.with(|c| c.execute(sql, values))
    }

    /// Every row of `sql`, mapped by `f`.
    pub fn query_all<T: Send, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&Row<'_>) -> DbResult<T> + Send,
    ) -> DbResult<Vec<T>> {
        let values = Self::owned(params);
        self.with(|c| c.prepare(sql)?.query_map(values, f)?.collect())
    }
}
