//! Operations: metrics, object-level authorization, logs.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi};

async fn scrape(app: &TestApp, xff: Option<&str>, token: Option<&str>) -> (StatusCode, String) {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_requests_llm_calls_and_refusals() {
    let fake = FakeOpenAi::start().await;
    let provider = fake.provider(5);
    let app = TestApp::builder()
        .config(|c| {
            c.llm.providers = vec![provider];
            c.server.trusted_proxies = vec!["127.0.0.1".into()];
            c.llm.daily_budget = 5.0;
        })
        .spawn()
        .await;
    let (token, uid) = app.login("m").await;
    app.cli(&["admin", "set-free-quota", "0"]);
    let (s, _) = app
        .post("/api/chat", Some(&token), json!({"message": "b"}))
        .await;
    assert_eq!(s, StatusCode::PAYMENT_REQUIRED);
    let out = app.cli(&["admin", "grant", "--user", &uid, "--fen", "100"]);
    assert!(out.status.success());
    let (s, _) = app
        .post("/api/chat", Some(&token), json!({"message": "a"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    app.cli(&["admin", "set-free-quota", "5"]);
    fake.set(Behavior::Status(500));
    assert_eq!(
        app.post("/api/chat", Some(&token), json!({"message": "c"}))
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );

    let (s, text) = scrape(&app, None, None).await;
    assert_eq!(s, StatusCode::OK);
    for want in [
        "http_requests_total{route=\"/api/chat\",method=\"POST\",status=\"200\"} 1",
        "http_requests_total{route=\"/api/chat\",method=\"POST\",status=\"402\"} 1",
        "http_requests_total{route=\"/api/chat\",method=\"POST\",status=\"502\"} 1",
        "quota_exhausted_total{route=\"/api/chat\"} 1",
        "llm_calls_total{provider=\"openai\",outcome=\"ok\"} 1",
        "llm_calls_total{provider=\"openai\",outcome=\"error\"} 1",
        "llm_tokens_total{provider=\"openai\",model=\"gpt-4o-mini\",kind=\"prompt\"} 11",
        "http_request_duration_seconds_count{route=\"/api/chat\",method=\"POST\"} 3",
        "llm_budget{period=\"day\"} 5",
        "income_fen{kind=\"charge\"} 100",
        "income_fen{kind=\"topup\"} 0",
        "live_generations",
        "db_pool_wait_seconds",
        "# TYPE llm_call_duration_seconds histogram",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // a client behind the (trusted, local) proxy is not loopback
    let (s, _) = scrape(&app, Some("203.0.113.7"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metrics_token_opens_remote_scraping() {
    let app = TestApp::builder()
        .config(|c| c.metrics.token = "metrics-secret-123".into())
        .spawn()
        .await;
    assert_eq!(scrape(&app, None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&app, None, Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, text) = scrape(&app, None, Some("metrics-secret-123")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("db_pool_acquisitions"));
}

/// Every endpoint that takes an id refuses another user's id the same way
/// it refuses an id that does not exist: 404, nothing changed.
#[tokio::test]
async fn object_level_authorization_sweep() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.login("alice").await;
    let (mallory, _) = app.login("mallory").await;
    let (_, chat) = app
        .post("/api/chat", Some(&alice), json!({"message": "private"}))
        .await;
    let sid = chat["session_id"].as_str().unwrap().to_string();
    let mid = chat["message"]["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post(
            "/api/location/report",
            Some(&alice),
            json!({"latitude": 1.0, "longitude": 2.0}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let cases: Vec<(&str, reqwest::Method, String, Option<serde_json::Value>)> = vec![
        (
            "session messages",
            reqwest::Method::GET,
            format!("/api/sessions/{sid}/messages"),
            None,
        ),
        (
            "delete session",
            reqwest::Method::DELETE,
            format!("/api/sessions/{sid}"),
            None,
        ),
        (
            "continue session",
            reqwest::Method::POST,
            "/api/chat".into(),
            Some(json!({"message": "hi", "session_id": sid})),
        ),
        (
            "stream into session",
            reqwest::Method::POST,
            "/api/chat/stream".into(),
            Some(json!({"message": "hi", "session_id": sid})),
        ),
    ];
    for (name, method, path, body) in cases {
        let mut req = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(&mallory);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        assert_eq!(
            res.status(),
            404,
            "{name}: another user's id must look absent"
        );
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{name}");
    }
    // listings only ever show the caller's own objects
    let (_, sessions) = app.get("/api/sessions", Some(&mallory)).await;
    assert!(!sessions.to_string().contains(&sid));
    let (_, points) = app.get("/api/location", Some(&mallory)).await;
    assert_eq!(points["items"].as_array().unwrap().len(), 0);
    // nothing of alice's changed
    let (s, msgs) = app
        .get(&format!("/api/sessions/{sid}/messages"), Some(&alice))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(msgs["items"].as_array().unwrap().len(), 2);
    assert_eq!(msgs["items"][1]["id"], mid.as_str());
    let (_, points) = app.get("/api/location", Some(&alice)).await;
    assert_eq!(points["items"].as_array().unwrap().len(), 1);
    let (_, me) = app.get("/api/me", Some(&mallory)).await;
    assert_eq!(
        me["quota"]["free_used_today"], 0,
        "refused requests cost nothing"
    );
}

/// A full run through the binary with debug logging: the log never holds a
/// secret, a token, a session_key or a full openid.
#[tokio::test]
async fn logs_never_contain_secrets_tokens_or_openids() {
    use crate::fakes::wechat::{FakeWechat, APP_ID, APP_SECRET};
    let wx = FakeWechat::start().await;
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_token = "metrics-token-SHOULD-NOT-LEAK";
    for format in ["text", "json"] {
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\n[log]\nlevel = \"debug\"\nformat = \"{format}\"\n\
                 [auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\n\
                 [wechat]\napp_id = \"{APP_ID}\"\napp_secret = \"{APP_SECRET}\"\napi_base = \"{}\"\n\
                 [metrics]\ntoken = \"{metrics_token}\"\n\
                 [[llm.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"{}\"\n\
                 models = [\"gpt-4o-mini\"]\ntimeout_secs = 5\n",
                wx.base_url,
                fake.base_url,
                crate::fakes::openai::API_KEY
            ),
        )
        .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let log = dir.path().join(format!("server-{format}.log"));
        let server = ServeGuard::start_logged(dir.path(), &base, Some(&log)).await;
        let client = reqwest::Client::new();
        let openid = format!("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o-{format}");
        let login: serde_json::Value = client
            .post(format!("{base}/api/auth/wechat"))
            .json(&json!({"code": format!("ok-{openid}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["token"].as_str().expect("logged in").to_string();
        for (path, body) in [
            ("/api/chat", json!({"message": "hello"})),
            ("/api/chat/stream", json!({"message": "hello again"})),
            (
                "/api/location/report",
                json!({"latitude": 31.2, "longitude": 121.5}),
            ),
            ("/api/auth/refresh", json!({})),
        ] {
            let res = client
                .post(format!("{base}{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{path}: {}", res.status());
            let _ = res.text().await;
        }
        fake.set(Behavior::Status(401)); // the upstream quotes the key back
        let _ = client
            .post(format!("{base}/api/chat"))
            .bearer_auth(&token)
            .json(&json!({"message": "x"}))
            .send()
            .await;
        fake.set(Behavior::Echo);
        let _ = client
            .get(format!("{base}/api/me?token={token}"))
            .send()
            .await;
        let _ = client
            .get(format!("{base}/metrics"))
            .bearer_auth(metrics_token)
            .send()
            .await;
        let _ = client
            .post(format!("{base}/api/auth/wechat"))
            .json(&json!({"code": "err-40029"}))
            .send()
            .await;
        drop(server);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("login") && text.len() > 1000,
            "the log was captured ({format})"
        );
        for (what, secret) in [
            ("jwt secret", TEST_JWT_SECRET),
            ("wechat app secret", APP_SECRET),
            ("openai key", crate::fakes::openai::API_KEY),
            ("metrics token", metrics_token),
            ("session_key", "SESSIONKEY"),
            ("openid", openid.as_str()),
            ("bearer token", token.as_str()),
            ("token signature", token.rsplit('.').next().unwrap()),
        ] {
            assert!(!text.contains(secret), "{what} found in the {format} log");
        }
    }
}

#[tokio::test]
async fn online_backup_is_consistent_and_restorable() {
    if super::common::sqlite_only("the online backup API copies the SQLite file") {
        return;
    }
    let app = TestApp::spawn().await;
    let (token, uid) = app.login("keeper").await;
    let out = app.cli(&["admin", "grant", "--user", &uid, "--fen", "700"]);
    assert!(out.status.success());
    // keep writing while the backup runs
    let writer = {
        let (client, url, token) = (app.client.clone(), app.url("/api/chat"), token.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"message": format!("w{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success() || res.status() == 402);
            }
        })
    };
    let dest = app.dir.path().join("backups/copy.db");
    let out = app.cli(&["admin", "backup", "--to", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("100%"),
        "progress shown: {}",
        stderr(&out)
    );
    writer.await.unwrap();
    // refuses to overwrite
    let again = app.cli(&["admin", "backup", "--to", dest.to_str().unwrap()]);
    assert!(!again.status.success());

    // the copy is a standalone, valid database with the data in it
    let copy = rusqlite::Connection::open(&dest).unwrap();
    let ok: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let balance: i64 = copy
        .query_row(
            "SELECT balance_fen FROM user_quotas WHERE user_id = ?1",
            [&uid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(balance, 700);
    drop(copy);
    assert!(!app.dir.path().join("backups/copy.db-wal").exists());

    // restore = serve from the copy: the same user, balance and audit
    let restored = run_cli(
        app.dir.path(),
        &["admin", "audit"],
        &[("MVP28_DATABASE__PATH", dest.to_str().unwrap())],
    );
    assert!(restored.status.success(), "{}", stdout(&restored));
    let show = run_cli(
        app.dir.path(),
        &["admin", "user", "show", &uid],
        &[("MVP28_DATABASE__PATH", dest.to_str().unwrap())],
    );
    assert!(stdout(&show).contains("700 fen"), "{}", stdout(&show));
}

// multi-thread: the CLI blocks this test's thread while the in-process S3
// server must keep answering
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_uploads_to_s3() {
    if super::common::sqlite_only("the online backup API copies the SQLite file") {
        return;
    }
    let s3 = crate::fakes::s3::FakeS3::start().await;
    let app = TestApp::spawn().await;
    let (_, uid) = app.login("s3backup").await;
    assert!(app
        .cli(&["admin", "grant", "--user", &uid, "--fen", "250"])
        .status
        .success());
    let cfg = s3.config();
    let url = format!("s3://{}/backups/nightly.db", cfg.bucket);
    let out = run_cli(
        app.dir.path(),
        &["admin", "backup", "--to", &url],
        &[
            ("MVP28_DATABASE__PATH", app.config.database.path.as_str()),
            ("MVP28_STORAGE__S3__ENDPOINT", cfg.endpoint.as_str()),
            ("MVP28_STORAGE__S3__REGION", cfg.region.as_str()),
            (
                "MVP28_STORAGE__S3__ACCESS_KEY_ID",
                cfg.access_key_id.as_str(),
            ),
            (
                "MVP28_STORAGE__S3__SECRET_ACCESS_KEY",
                cfg.secret_access_key.as_str(),
            ),
        ],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("uploading"), "{}", stderr(&out));
    // the object on the (signature-checking) S3 server is the database
    let uploaded = s3.file_of("backups/nightly.db");
    let copy = rusqlite::Connection::open(&uploaded).unwrap();
    let balance: i64 = copy
        .query_row(
            "SELECT balance_fen FROM user_quotas WHERE user_id = ?1",
            [&uid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(balance, 250);
    // nothing is left behind locally
    let leftovers = std::fs::read_dir(app.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
        .count();
    assert_eq!(leftovers, 0);
    // wrong keys fail loudly
    let bad = run_cli(
        app.dir.path(),
        &[
            "admin",
            "backup",
            "--to",
            &format!("s3://{}/backups/bad.db", cfg.bucket),
        ],
        &[
            ("MVP28_DATABASE__PATH", app.config.database.path.as_str()),
            ("MVP28_STORAGE__S3__ENDPOINT", cfg.endpoint.as_str()),
            ("MVP28_STORAGE__S3__REGION", cfg.region.as_str()),
            (
                "MVP28_STORAGE__S3__ACCESS_KEY_ID",
                cfg.access_key_id.as_str(),
            ),
            ("MVP28_STORAGE__S3__SECRET_ACCESS_KEY", "wrong-secret"),
        ],
    );
    assert!(!bad.status.success());
}
