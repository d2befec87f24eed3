//! Field-ready (issue 16): a deployment is never a toy by accident, the
//! original Next.js deployment's `.env` works as it is, `mvp28 doctor`
//! names what is broken, the systemd unit fails fast and is fed by a
//! watchdog, trusted proxies take CIDR ranges. Mostly through the real
//! binary, against the fakes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::*;
use crate::fakes::openai::FakeOpenAi;
use crate::fakes::s3::{FakeS3, BUCKET, REGION};
use crate::fakes::wechat::{self as wx, FakeWechat};
use crate::fakes::wechatpay::{self as wxpay, FakeWechatPay};

// ------------------------------------------------------------------ helpers

/// A Supabase-style JWT (unsigned here: only its claims are read).
fn jwt(claims: Value) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes()),
        b64(b"not-a-real-signature-0123456789")
    )
}

const PROJECT_REF: &str = "qwertyuiopasdfghjklz";

fn anon_key() -> String {
    jwt(
        json!({"iss": "supabase", "ref": PROJECT_REF, "role": "anon", "iat": 1700000000, "exp": 2000000000}),
    )
}

fn service_key() -> String {
    jwt(
        json!({"iss": "supabase", "ref": PROJECT_REF, "role": "service_role", "iat": 1700000000, "exp": 2000000000}),
    )
}

/// `run_cli` off the runtime thread, so in-process fakes keep answering.
async fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_cli(&dir, &args, &env)
    })
    .await
    .unwrap()
}

/// The one line a refused start prints.
fn one_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err}");
    lines[0].to_string()
}

/// `mvp28 serve` as a child with a clean environment plus `env`, its
/// stderr in a file; killed when dropped.
struct Serving {
    child: Child,
    log: PathBuf,
    base: String,
}

impl Serving {
    fn spawn(dir: &Path, port: u16, env: &[(&str, &str)]) -> Serving {
        let log = dir.join(format!("serve-{port}.log"));
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(dir)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Serving {
            child: cmd.spawn().expect("serve spawns"),
            log,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for /api/health to answer 200; returns its body.
    async fn healthy(&mut self) -> Value {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = client.get(format!("{}/api/health", self.base)).send().await {
                let s = r.status();
                let body: Value = r.json().await.unwrap();
                assert_eq!(s, StatusCode::OK, "{body}\n{}", self.log());
                return body;
            }
            assert!(Instant::now() < deadline, "never healthy:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_env(dir: &Path, name: &str, vars: &[(&str, String)]) -> PathBuf {
    let mut text = String::from("# the Next.js deployment's .env\n");
    for (k, v) in vars {
        // Quoted as such files often are.
        text.push_str(&format!("{k}=\"{v}\"\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A production setup against the fakes: the original deployment's `.env`
/// (its names, real-looking values) plus the config.toml the README's
/// "Moving from the Next.js deployment" section asks for.
struct Deployment {
    dir: TempDir,
    port: u16,
    wx: FakeWechat,
    ai: FakeOpenAi,
    s3: FakeS3,
    pay: FakeWechatPay,
    keys: (String, String),
}

impl Deployment {
    async fn start() -> Deployment {
        // The fake serves Supabase's session-token mode without the
        // /storage/v1/s3 prefix: under a prefix it cannot list (/api/health)
        // nor bulk-delete (object_store's delete); the prefixed signing is
        // covered by uploads.rs and the test below.
        let s3 = FakeS3::start_session_unprefixed(PROJECT_REF, &anon_key(), &service_key()).await;
        let dir = tempfile::tempdir().unwrap();
        let keys = wxpay::write_key_files(dir.path());
        Deployment {
            port: free_port(),
            wx: FakeWechat::start().await,
            ai: FakeOpenAi::start().await,
            pay: FakeWechatPay::start().await,
            s3,
            keys,
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The variables of the original deployment, as its .env had them.
    fn original_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NODE_ENV", "production".into()),
            ("DATABASE_URL", "postgresql://postgres:Zq8%23pW2x@db.qwertyuiopasdfghjklz.supabase.co:5432/postgres".into()),
            ("NEXT_PUBLIC_SUPABASE_URL", self.s3.origin.clone()),
            ("SUPABASE_URL", self.s3.origin.clone()),
            ("SUPABASE_ANON_KEY", anon_key()),
            ("SUPABASE_SERVICE_KEY", service_key()),
            ("OPENAI_API_KEY", crate::fakes::openai::API_KEY.into()),
            ("WECHAT_APPID", wx::APP_ID.into()),
            ("WECHAT_SECRET", wx::APP_SECRET.into()),
            ("WECHAT_PAY_MCHID", wxpay::MCH_ID.into()),
            ("WECHAT_PAY_V3KEY", wxpay::API_V3_KEY.into()),
            ("WECHAT_PAY_SERIAL_NO", wxpay::MERCHANT_SERIAL.into()),
            ("JWT_SECRET", "b3f1c9e2a7d84f6e9c0b1a2d3e4f5a6b7c8d9e0f".into()),
            ("APP_BASE_URL", format!("http://127.0.0.1:{}", self.port)),
        ]
    }

    /// The .env after the move: DATABASE_URL now a SQLite path (README),
    /// and (tests only) the endpoint of the unprefixed fake.
    fn moved_env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.original_env();
        for (k, v) in &mut env {
            if *k == "DATABASE_URL" {
                *v = "sqlite:data/mvp28.db".into();
            }
        }
        env.push(("MVP28_STORAGE__S3__ENDPOINT", self.s3.origin.clone()));
        env
    }

    /// What the operator adds in config.toml: where the keys live, the
    /// bucket and region, and (tests only) the fakes' base URLs.
    fn config_toml(&self) -> String {
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n\
             [rate_limit]\nper_ip_per_minute = 0\nper_user_per_minute = 0\nlogin_per_ip_per_minute = 0\n\
             [wechat]\napi_base = \"{wx}\"\n\
             [[llm.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{ai}\"\nmodels = [\"gpt-4o-mini\"]\ntimeout_secs = 10\n\
             [storage.s3]\nregion = \"{REGION}\"\nbucket = \"{BUCKET}\"\n\
             [wechat_pay]\nprivate_key_path = \"{key}\"\nplatform_public_key_path = \"{pubkey}\"\n\
             platform_public_key_id = \"{id}\"\napi_base = \"{pay}\"\ntimeout_secs = 5\n",
            port = self.port,
            wx = self.wx.base_url,
            ai = self.ai.base_url,
            key = self.keys.0,
            pubkey = self.keys.1,
            id = wxpay::PUB_KEY_ID,
            pay = self.pay.base_url,
        )
    }

    fn write(&self, env: &[(&str, String)]) {
        std::fs::write(self.path().join("config.toml"), self.config_toml()).unwrap();
        write_env(self.path(), ".env", env);
    }
}

// ------------------------------------------------------------------ never a toy by accident

#[tokio::test]
async fn serve_on_a_public_bind_without_a_wechat_app_id_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let public = [("MVP28_SERVER__BIND", "0.0.0.0:8080")];
    for cmd in [&["serve"][..], &["config", "check"][..]] {
        let out = cli(dir.path(), cmd, &public).await;
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", stderr(&out));
        let line = one_line(&out);
        assert!(line.contains("wechat.app_id"), "{line}");
        assert!(line.contains("auth.dev_login"), "{line}");
        assert!(line.contains("0.0.0.0:8080 is not loopback"), "{line}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the refusal"
    );

    // A WeChat app but no model key: the echo model would answer.
    let out = cli(
        dir.path(),
        &["serve"],
        &[("WECHAT_APPID", "wx-real"), ("WECHAT_SECRET", "s")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out);
    assert!(line.contains("llm.allow_echo"), "{line}");
    assert!(line.contains("OPENAI_API_KEY"), "{line}");

    // WeChat Pay on, loopback, no app id: still a deployment.
    let keys = wxpay::write_key_files(dir.path());
    let pay = [
        ("WECHAT_PAY_MCHID", wxpay::MCH_ID),
        ("WECHAT_PAY_SERIAL_NO", wxpay::MERCHANT_SERIAL),
        ("WECHAT_PAY_V3KEY", wxpay::API_V3_KEY),
        ("MVP28_WECHAT_PAY__APP_ID", wxpay::APP_ID),
        ("MVP28_WECHAT_PAY__PRIVATE_KEY_PATH", keys.0.as_str()),
        (
            "MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_PATH",
            keys.1.as_str(),
        ),
        (
            "MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_ID",
            wxpay::PUB_KEY_ID,
        ),
    ];
    let out = cli(dir.path(), &["serve"], &pay).await;
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out);
    assert!(
        line.contains("wechat.app_id") && line.contains("WeChat Pay is on"),
        "{line}"
    );

    // The local defaults stay a usable toy, and say so.
    let out = cli(dir.path(), &["config", "check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("config ok: dev mode"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn explicit_dev_flags_serve_in_dev_mode_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let env = [
        ("MVP28_SERVER__BIND", bind.as_str()),
        ("WECHAT_APPID", "wx-real"),
        ("WECHAT_SECRET", "s"),
        ("MVP28_AUTH__DEV_LOGIN", "true"),
        ("MVP28_LLM__ALLOW_ECHO", "true"),
    ];
    let out = cli(dir.path(), &["config", "check"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dev mode (auth.dev_login = true and llm.allow_echo = true although wechat.app_id is set)"),
        "{}",
        stderr(&out)
    );
    let mut s = Serving::spawn(dir.path(), port, &env);
    let health = s.healthy().await;
    assert_eq!(health["mode"], "dev", "{health}");
    let log = s.log();
    assert!(log.contains("DEV MODE ON A DEPLOYMENT"), "{log}");
    assert!(
        log.contains("dev:<name>") && log.contains("echo model"),
        "{log}"
    );
}

#[tokio::test]
async fn health_says_dev_or_prod() {
    let app = TestApp::spawn().await;
    let (s, h) = app.get("/api/health", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["mode"], "dev", "local defaults: dev login and echo");
    let fake = FakeOpenAi::start().await;
    let wechat = FakeWechat::start().await;
    let provider = fake.provider(5);
    let app = TestApp::builder()
        .config(|c| {
            c.wechat.app_id = wx::APP_ID.into();
            c.wechat.app_secret = wx::APP_SECRET.into();
            c.wechat.api_base = wechat.base_url.clone();
            c.llm.providers = vec![provider];
        })
        .spawn()
        .await;
    let (_, h) = app.get("/api/health", None).await;
    assert_eq!(h["mode"], "prod", "{h}");
    // and the dev login really is off there: the code goes to WeChat
    let (s, b) = app
        .post("/api/auth/wechat", None, json!({"code": "dev:alice"}))
        .await;
    assert_error(s, &b, 401, "invalid_code");
    assert_eq!(wechat.calls().len(), 1);
}

// ------------------------------------------------------------------ the original .env

#[tokio::test]
async fn the_original_env_file_as_it_is_refuses_with_one_clear_line() {
    let d = Deployment::start().await;
    // Exactly the old deployment's .env, nothing added.
    write_env(d.path(), ".env", &d.original_env());
    // Its postgres DATABASE_URL now selects the Postgres backend; what is
    // missing first is the bucket's region, named in one line.
    let out = cli(d.path(), &["serve"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out);
    assert!(line.contains("storage.s3."), "{line}");
    assert!(
        !line.contains("Zq8"),
        "the database password is not echoed: {line}"
    );

    // With DATABASE_URL moved but nothing else added: the bucket (Supabase
    // storage is now used, not silently left on local disk).
    write_env(d.path(), ".env", &d.moved_env());
    let out = cli(d.path(), &["serve"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out);
    assert!(line.contains("storage.s3."), "{line}");
    assert!(line.contains("SUPABASE_URL selects it"), "{line}");
}

#[tokio::test]
async fn the_original_env_file_serves_in_production_mode() {
    let d = Deployment::start().await;
    d.write(&d.moved_env());
    let out = cli(d.path(), &["config", "check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("kind = \"s3\""), "{printed}");
    for secret in [anon_key(), service_key()] {
        assert!(!printed.contains(&secret), "a Supabase key was printed");
    }
    assert!(
        stderr(&out).contains("config ok: prod mode"),
        "{}",
        stderr(&out)
    );

    let mut s = Serving::spawn(d.path(), d.port, &[]);
    let health = s.healthy().await;
    assert_eq!(health["mode"], "prod", "{health}");
    assert_eq!(health["storage"], "ok", "{health}");
    assert!(s.log().contains("environment file read"), "{}", s.log());

    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/api/auth/wechat", s.base))
        .json(&json!({"code": "ok-openid-alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"]
        .as_str()
        .expect("WeChat login works")
        .to_string();
    let dev = client
        .post(format!("{}/api/auth/wechat", s.base))
        .json(&json!({"code": "dev:mallory"}))
        .send()
        .await
        .unwrap();
    assert_ne!(dev.status(), StatusCode::OK, "no dev login in production");

    let chat: Value = client
        .post(format!("{}/api/chat", s.base))
        .bearer_auth(&token)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chat["message"]["content"], "reply to: hello", "{chat}");

    // Uploads go to Supabase S3 with session-token authentication.
    let body = b"\x89PNG-bytes".to_vec();
    let p: Value = client
        .post(format!("{}/api/upload/presign", s.base))
        .bearer_auth(&token)
        .json(&json!({"filename": "a.png", "content_type": "image/png", "size": body.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = p["url"].as_str().expect("presigned").to_string();
    assert!(url.contains("X-Amz-Security-Token="), "{url}");
    let put = client
        .put(&url)
        .header("content-type", "image/png")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let commit = client
        .post(format!("{}/api/upload/commit", s.base))
        .bearer_auth(&token)
        .json(&json!({"upload_id": p["upload_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(commit.status(), StatusCode::OK);
}

#[tokio::test]
async fn env_file_choice_and_the_real_environment_winning() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_env(
        p,
        ".env",
        &[("APP_BASE_URL", "https://from-dotenv.example".into())],
    );
    write_env(
        p,
        "other.env",
        &[("APP_BASE_URL", "https://from-other.example".into())],
    );
    let url_of = |o: &Output| {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
        stdout(o)
            .lines()
            .find(|l| l.starts_with("public_url = "))
            .unwrap()
            .to_string()
    };
    let out = cli(p, &["config", "check"], &[]).await;
    assert!(url_of(&out).contains("from-dotenv"));
    let out = cli(
        p,
        &["config", "check"],
        &[("APP_BASE_URL", "https://from-env.example")],
    )
    .await;
    assert!(
        url_of(&out).contains("from-env"),
        "the real environment wins"
    );
    let out = cli(p, &["config", "check", "--env-file", "other.env"], &[]).await;
    assert!(url_of(&out).contains("from-other"));
    let out = cli(p, &["config", "check"], &[("MVP28_ENV_FILE", "other.env")]).await;
    assert!(url_of(&out).contains("from-other"));
    let out = cli(p, &["migrate", "--env-file", "missing.env"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&out).contains("--env-file"));

    // MVP28_CONFIG names the config file; it, MVP28_ENV_FILE and MVP28_LOG
    // are the binary's own variables, never taken for config keys.
    std::fs::write(
        p.join("custom.toml"),
        "[server]\nbind = \"127.0.0.1:9777\"\n",
    )
    .unwrap();
    let out = cli(
        p,
        &["config", "check"],
        &[
            ("MVP28_CONFIG", "custom.toml"),
            ("MVP28_ENV_FILE", "other.env"),
            ("MVP28_LOG", "debug"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("bind = \"127.0.0.1:9777\""));
}

#[tokio::test]
async fn an_unknown_mvp28_variable_is_a_warning_for_serve_and_an_error_for_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let stray = [("MVP28_SERVER__BINDD", "127.0.0.1:1")];
    let out = cli(dir.path(), &["config", "check"], &stray).await;
    assert_eq!(out.status.code(), Some(2));
    let line = one_line(&out);
    assert!(
        line.contains("MVP28_SERVER__BINDD") && line.contains("did you mean MVP28_SERVER__BIND"),
        "{line}"
    );
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut s = Serving::spawn(dir.path(), port, &[("MVP28_SERVER__BIND", &bind), stray[0]]);
    s.healthy().await;
    let log = s.log();
    assert!(
        log.contains("unknown variable MVP28_SERVER__BINDD")
            && log.contains("MVP28_SERVER__BIND, i.e. server.bind"),
        "{log}"
    );
}

/// Supabase's session-token authentication against an S3 server that
/// requires the token: uploads, commits and downloads work with it, and
/// the same store without it refuses.
#[tokio::test]
async fn supabase_anon_and_service_keys_store_objects_with_a_session_token() {
    let fake = FakeS3::start_session(PROJECT_REF, &anon_key(), &service_key()).await;
    let env: HashMap<String, String> = [
        ("SUPABASE_URL", fake.origin.clone()),
        ("SUPABASE_ANON_KEY", anon_key()),
        ("SUPABASE_SERVICE_KEY", service_key()),
        ("MVP28_STORAGE__S3__REGION", REGION.into()),
        ("MVP28_STORAGE__S3__BUCKET", BUCKET.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let loaded = mvp28::config::Config::from_source(mvp28::config::Source {
        file: None,
        env: &env,
    })
    .unwrap();
    let s3 = loaded.storage.clone();
    assert_eq!(s3.kind, "s3");
    assert_eq!(
        s3.s3.endpoint, fake.endpoint,
        "SUPABASE_URL + /storage/v1/s3"
    );
    assert_eq!(s3.s3.access_key_id, PROJECT_REF);
    assert_eq!(s3.s3.secret_access_key, anon_key());
    assert_eq!(s3.s3.session_token, service_key());

    let app = TestApp::builder()
        .config(|c| c.storage = s3.clone())
        .spawn()
        .await;
    let (token, _) = app.login("s").await;
    let body = b"bytes through a session token".to_vec();
    let (st, p) = app
        .post(
            "/api/upload/presign",
            Some(&token),
            json!({"filename": "a.png", "content_type": "image/png", "size": body.len()}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    let url = p["url"].as_str().unwrap().to_string();
    assert!(url.contains("X-Amz-Security-Token="), "{url}");
    // The token is part of the signature: the URL without it is refused.
    let mut stripped = reqwest::Url::parse(&url).unwrap();
    let pairs: Vec<(String, String)> = stripped
        .query_pairs()
        .filter(|(k, _)| k != "X-Amz-Security-Token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    stripped.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = app
        .client
        .put(stripped)
        .header("content-type", "image/png")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let put = app
        .client
        .put(&url)
        .header("content-type", "image/png")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    assert_eq!(fake.stored_files().len(), 1);
    let (st, c) = app
        .post(
            "/api/upload/commit",
            Some(&token),
            json!({"upload_id": p["upload_id"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let got = reqwest::get(c["media"]["url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        got.status(),
        StatusCode::OK,
        "download URL carries the token"
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());

    // The server's own calls without the token: refused by the store.
    let mut no_token = s3;
    no_token.s3.session_token.clear();
    let app = TestApp::builder()
        .config(|c| c.storage = no_token)
        .spawn()
        .await;
    let (token, _) = app.login("t").await;
    let (st, p) = app
        .post(
            "/api/upload/presign",
            Some(&token),
            json!({"filename": "a.png", "content_type": "image/png", "size": 3}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let put = app
        .client
        .put(p["url"].as_str().unwrap())
        .header("content-type", "image/png")
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN);
}

// ------------------------------------------------------------------ doctor

async fn doctor(d: &Deployment, env: &[(&str, &str)]) -> (i32, Value) {
    let out = cli(d.path(), &["doctor", "--json"], env).await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}\n{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), report)
}

fn failures(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["part"].as_str().unwrap().to_string(),
                c["key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn doctor_passes_on_a_correct_setup_against_the_fakes() {
    let d = Deployment::start().await;
    d.write(&d.moved_env());
    let (code, report) = doctor(&d, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    assert!(failures(&report).is_empty(), "{report:#}");
    let line = |part: &str| -> Vec<Value> {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["part"] == part)
            .cloned()
            .collect()
    };
    let ok_with = |part: &str, text: &str| {
        assert!(
            line(part)
                .iter()
                .any(|c| c["status"] == "ok" && c["message"].as_str().unwrap().contains(text)),
            "no ok {part} line containing {text:?}: {report:#}"
        )
    };
    ok_with("config", "env file");
    ok_with("mode", "prod");
    ok_with("database", "does not exist yet");
    ok_with("disk", "MiB free");
    ok_with("storage", "a presigned PUT work");
    ok_with("llm", "openai / gpt-4o-mini: answers");
    ok_with("wechat", "errcode 40029");
    ok_with(
        "wechat_pay",
        "ORDER_NOT_EXIST with a valid platform signature",
    );
    ok_with("clock", "within");
    // http on loopback: fine for a test, said as a warning
    assert_eq!(line("public_url")[0]["status"], "warn");
    // the probes left nothing behind in the bucket
    assert!(d.s3.seen().iter().any(|s| s.method == "PUT"));
    assert_eq!(d.s3.stored_files(), Vec::<PathBuf>::new());

    // Once migrated, the database line says so; the text output is one
    // line per check.
    let out = cli(d.path(), &["migrate"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(d.path(), &["doctor"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("WAL on, migrations current"), "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("doctor: "),
        "{text}"
    );
    for l in text.lines() {
        assert!(
            ["ok ", "warn ", "fail ", "doctor: "]
                .iter()
                .any(|p| l.starts_with(p)),
            "{l}"
        );
    }
}

#[tokio::test]
async fn doctor_fails_naming_the_part_and_key_of_each_broken_setup() {
    let d = Deployment::start().await;
    d.write(&d.moved_env());
    // Mismatched WeChat Pay keys, made from the fake's two key pairs.
    let wrong_merchant_key = d.path().join("wrong_apiclient_key.pem");
    {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        std::fs::write(
            &wrong_merchant_key,
            wxpay::keys()
                .platform
                .to_pkcs8_pem(LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        std::fs::write(
            d.path().join("wrong_pub_key.pem"),
            wxpay::merchant_public()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
    }
    let wrong_key = wrong_merchant_key.to_string_lossy().into_owned();
    let wrong_pub = d
        .path()
        .join("wrong_pub_key.pem")
        .to_string_lossy()
        .into_owned();
    let other_anon = jwt(json!({"iss": "supabase", "ref": PROJECT_REF, "role": "anon", "iat": 1}));
    let other_service = jwt(json!({"ref": PROJECT_REF, "role": "service_role", "iat": 2}));
    // (what is broken, real environment over the .env, the part, the key)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong WeChat secret",
            vec![("WECHAT_SECRET", "not-the-secret")],
            "wechat",
            "wechat.app_secret",
        ),
        (
            "wrong WeChat app id",
            vec![
                ("WECHAT_APPID", "wx-not-ours"),
                ("MVP28_WECHAT_PAY__APP_ID", wxpay::APP_ID),
            ],
            "wechat",
            "wechat.app_id",
        ),
        (
            "model provider answers 401",
            vec![("OPENAI_API_KEY", "sk-wrong-key")],
            "llm",
            "llm.providers[0].api_key",
        ),
        (
            "S3 refuses the signature",
            vec![("SUPABASE_ANON_KEY", &other_anon)],
            "storage",
            "storage.s3.session_token",
        ),
        (
            "S3 refuses the session token",
            vec![("SUPABASE_SERVICE_KEY", &other_service)],
            "storage",
            "storage.s3.session_token",
        ),
        (
            "merchant key does not match the serial",
            vec![("MVP28_WECHAT_PAY__PRIVATE_KEY_PATH", &wrong_key)],
            "wechat_pay",
            "wechat_pay.private_key_path",
        ),
        (
            "platform key does not match",
            vec![("MVP28_WECHAT_PAY__PLATFORM_PUBLIC_KEY_PATH", &wrong_pub)],
            "wechat_pay",
            "wechat_pay.platform_public_key_path",
        ),
    ];
    for (what, env, part, key) in cases {
        let (code, report) = doctor(&d, &env).await;
        assert_eq!(code, 1, "{what}: {report:#}");
        assert_eq!(report["ok"], false);
        assert_eq!(
            failures(&report),
            vec![(part.to_string(), key.to_string())],
            "{what}: {report:#}"
        );
    }
    // The text form names the part and key on the failing line.
    let out = cli(
        d.path(),
        &["doctor"],
        &[("WECHAT_SECRET", "not-the-secret")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let fail = text.lines().find(|l| l.starts_with("fail")).unwrap();
    assert!(
        fail.contains("wechat")
            && fail.contains("[wechat.app_secret]")
            && fail.contains("errcode 40125"),
        "{fail}"
    );
    assert!(
        !text.contains(wx::APP_SECRET) && !text.contains("not-the-secret"),
        "secrets stay out: {text}"
    );

    // A config that does not load is one failing line, exit 1.
    let (code, report) = doctor(&d, &[("MVP28_SERVER__BIND", "nonsense")]).await;
    assert_eq!(code, 1);
    assert_eq!(
        failures(&report),
        vec![("config".to_string(), "server.bind".to_string())]
    );
}

// ------------------------------------------------------------------ systemd

#[test]
fn systemd_is_told_ready_fed_by_the_watchdog_and_told_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let sock_s = sock_path.to_string_lossy().into_owned();
    let mut s = Serving::spawn(
        dir.path(),
        port,
        &[
            ("MVP28_SERVER__BIND", &bind),
            ("NOTIFY_SOCKET", &sock_s),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.contains("READY=1"), "{first}");
    assert!(
        first.contains(&format!("STATUS=listening on {bind}")),
        "{first}"
    );
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let m = next();
        assert!(m.contains("WATCHDOG=1"), "{m}");
        pings += 1;
    }
    // half the period (100 ms), so three pings well within 2 s
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    loop {
        let m = next();
        if m.contains("STOPPING=1") {
            break;
        }
        assert!(m.contains("WATCHDOG=1"), "{m}");
    }
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", s.log());
}

#[test]
fn the_unit_fails_fast_reads_the_env_file_and_points_at_the_readme() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mvp28.service"),
    )
    .unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "RestartPreventExitStatus=2",
        "EnvironmentFile=-/etc/mvp28/mvp28.env",
        "Restart=on-failure",
    ] {
        assert!(lines.contains(&want), "unit lacks {want}");
    }
    assert!(lines.iter().any(|l| l.starts_with("WatchdogSec=")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("Documentation=") && l.contains("README")));
}

#[test]
fn setup_env_writes_the_unit_env_file_from_the_original_env() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("old.env"),
        "NODE_ENV=production\n\
         DATABASE_URL=\"postgresql://postgres:Zq8%23pW2x@db.example.supabase.co:5432/postgres\"\n\
         WECHAT_APPID=wx1234567890abcdef\nWECHAT_SECRET=0123456789abcdef0123456789abcdef\n\
         OPENAI_API_KEY=sk-proj-abc123\nJWT_SECRET=short\n\
         export APP_BASE_URL='https://api.example.com'\n",
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-env.sh");
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(&script)
            .args(args)
            .current_dir(p)
            .output()
            .unwrap()
    };
    let out = run(&["--env-file", "--from", "old.env", "mvp28.env"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(p.join("mvp28.env")).unwrap();
    assert!(text.contains("WECHAT_APPID=wx1234567890abcdef"), "{text}");
    assert!(
        text.contains("APP_BASE_URL=https://api.example.com"),
        "{text}"
    );
    assert!(!text.contains("Zq8"), "no PostgreSQL URL: {text}");
    assert!(text.contains("left out: NODE_ENV"), "{text}");
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("JWT_SECRET="))
        .unwrap();
    assert_eq!(secret.len(), 64, "a short secret is replaced");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains(secret) && !printed.contains("sk-proj"),
        "{printed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.join("mvp28.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private: {mode:o}");
    }
    assert!(
        !run(&["--env-file", "--from", "old.env", "mvp28.env"])
            .status
            .success(),
        "no overwrite without --force"
    );
    // The binary reads what the script wrote.
    let out = run_cli(p, &["--env-file", "mvp28.env", "config", "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("app_id = \"wx1234567890abcdef\""));
    assert!(stderr(&out).contains("prod mode"), "{}", stderr(&out));
}

// ------------------------------------------------------------------ behind a load balancer

#[tokio::test]
async fn trusted_proxies_take_cidr_ranges() {
    let app = TestApp::builder()
        .config(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".into()])
        .spawn()
        .await;
    let metrics = |xff: Option<&'static str>| {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(metrics(None).await, StatusCode::OK);
    // the peer is in the trusted range: the forwarded client counts
    assert_eq!(metrics(Some("203.0.113.7")).await, StatusCode::FORBIDDEN);
    // Which address counts, for ranges of either family.
    let limits = mvp28::http::ratelimit::RateLimits::new(
        &Default::default(),
        &["10.0.0.0/8".into(), "2400:cb00::/32".into()],
    );
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let xff = Some("198.51.100.9, 203.0.113.7, 10.200.0.1");
    assert_eq!(limits.client_ip(ip("10.1.2.3"), xff), ip("203.0.113.7"));
    assert_eq!(
        limits.client_ip(ip("2400:cb00:2::1"), xff),
        ip("203.0.113.7")
    );
    assert_eq!(
        limits.client_ip(ip("192.0.2.1"), xff),
        ip("192.0.2.1"),
        "an untrusted peer's header is ignored"
    );
    let env: HashMap<String, String> = [(
        "MVP28_SERVER__TRUSTED_PROXIES".to_string(),
        r#"["10.0.0.0/33"]"#.to_string(),
    )]
    .into();
    let e = mvp28::config::Config::from_source(mvp28::config::Source {
        file: None,
        env: &env,
    })
    .unwrap_err();
    assert_eq!(e.key, "server.trusted_proxies");
}
