//! `mvp28 migrate-data`: a deployment populated through the real API moves
//! from SQLite to Postgres and back with the real binary; the same users
//! (same tokens) see the same balances, quotas, conversations, points and
//! uploads on every backend, and can go on using it.

use std::path::Path;

use mvp28::db::sql::Value as SqlValue;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::common::*;
use super::pgcluster::{self, Cluster};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-an-upload-that-moves-with-its-deployment";
const PASSWORD: &str = "s3cret-pg-password";

/// True (after one line) on the suite's Postgres run: these tests start
/// their own cluster and cover both backends already.
fn skipped_on_postgres_run() -> bool {
    if postgres_admin_url().is_some() {
        eprintln!("skipped on the Postgres run: migrate-data tests cover both backends themselves");
        return true;
    }
    false
}

/// An app on the SQLite file `db` (or the Postgres `url`), storing objects
/// under `objects`; the default test clock, so quotas read the same day.
async fn app_on(db: &Path, url: &str, objects: &Path) -> TestApp {
    let (db, url, objects) = (
        db.to_string_lossy().into_owned(),
        url.to_owned(),
        objects.to_string_lossy().into_owned(),
    );
    TestApp::builder()
        .config(move |c| {
            c.database.path = db;
            c.database.url = url;
            c.storage.local_dir = objects;
        })
        .spawn()
        .await
}

struct Users {
    alice: (String, String),
    bob: (String, String),
    admin_token: String,
}

async fn chat(app: &TestApp, token: &str, body: Value) -> Value {
    let (s, b) = app.post("/api/chat", Some(token), body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// Users, free and paid chats in two conversations, a grant, location
/// points, an upload, an admin account with an API token.
async fn populate(app: &TestApp) -> Users {
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    for args in [
        vec!["admin", "set-free-quota", "2"],
        vec!["admin", "set-price", "50"],
        vec![
            "admin", "grant", "--user", &alice.1, "--fen", "500", "--reason", "welcome",
        ],
    ] {
        let out = app.cli(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    chat(app, &alice.0, json!({"message": "hello one"})).await;
    chat(app, &alice.0, json!({"message": "hello two"})).await;
    let paid = chat(
        app,
        &alice.0,
        json!({"message": "a paid one", "new_session": true}),
    )
    .await;
    assert_eq!(paid["quota"]["charged_fen"], 50, "{paid}");
    chat(app, &alice.0, json!({"message": "paid again 汉字"})).await;
    chat(app, &bob.0, json!({"message": "bob here"})).await;
    let (s, b) = app
        .post(
            "/api/location/report",
            Some(&alice.0),
            json!({"points": [
                {"latitude": 31.2304, "longitude": 121.4737, "accuracy": 12.5},
                {"latitude": 39.9042, "longitude": 116.4074, "coord_type": "gcj02"}
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(PNG.to_vec())
            .file_name("photo.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let (s, b) = app
        .send(
            app.client.post(app.url("/api/upload")).multipart(form),
            Some(&alice.0),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let out = app.cli(&["admin", "create-admin", "ops"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = app.cli(&["admin", "create-token", "ops"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let admin_token = stdout(&out).lines().last().unwrap().trim().to_string();
    Users {
        alice,
        bob,
        admin_token,
    }
}

async fn get_ok(app: &TestApp, path: &str, token: &str) -> Value {
    let (s, b) = app.get(path, Some(token)).await;
    assert_eq!(s, StatusCode::OK, "{path}: {b}");
    b
}

/// What the users and the operator see, through HTTP only.
async fn seen(app: &TestApp, users: &Users) -> Value {
    let mut out = serde_json::Map::new();
    for (name, (token, id)) in [("alice", &users.alice), ("bob", &users.bob)] {
        let me = get_ok(app, "/api/me", token).await;
        assert_eq!(me["user"]["id"], *id);
        let sessions = get_ok(app, "/api/sessions?limit=100", token).await;
        let mut messages = vec![];
        for s in sessions["items"].as_array().unwrap() {
            let path = format!(
                "/api/sessions/{}/messages?limit=100",
                s["id"].as_str().unwrap()
            );
            messages.push(get_ok(app, &path, token).await);
        }
        let location = get_ok(app, "/api/location?limit=100", token).await;
        out.insert(
            name.into(),
            json!({"me": me, "sessions": sessions, "messages": messages, "location": location}),
        );
    }
    // the operator: the same admin token, the same trail and user list
    let audit = get_ok(app, "/api/admin/audit", &users.admin_token).await;
    let admin_users = get_ok(app, "/api/admin/users", &users.admin_token).await;
    out.insert(
        "admin".into(),
        json!({"audit": audit["items"], "users": admin_users}),
    );
    Value::Object(out)
}

/// Alice's upload is still hers and its bytes are still served.
async fn check_upload(app: &TestApp, token: &str, media_id: &str) {
    let b = get_ok(app, &format!("/api/media/{media_id}"), token).await;
    assert_eq!(b["media"]["size"], PNG.len());
    let url = b["media"]["url"].as_str().unwrap();
    let path = url
        .strip_prefix(&app.config.server.public_url)
        .unwrap_or(url);
    let got = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), PNG);
}

fn migrate(dir: &Path, from: &str, to: &str) -> std::process::Output {
    run_cli(dir, &["migrate-data", "--from", from, "--to", to], &[])
}

/// Exit 0, both audits clean, every table's counts equal; returns stdout.
fn assert_migrated(out: &std::process::Output) -> String {
    let (text, err) = (stdout(out), stderr(out));
    assert!(out.status.success(), "migrate-data failed:\n{text}\n{err}");
    assert!(text.contains("audit source: ok"), "{text}");
    assert!(text.contains("audit target: ok"), "{text}");
    assert!(text.contains("migrate-data ok: "), "{text}");
    assert!(!text.contains("DIFFERS"), "{text}");
    for table in [
        "users",
        "messages",
        "ledger",
        "location_logs",
        "media",
        "admins",
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no line for {table}: {text}"));
        let n: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(n[0] > 0 && n[0] == n[1], "{line}");
    }
    assert!(
        !text.contains(PASSWORD) && !err.contains(PASSWORD),
        "the password was printed:\n{text}\n{err}"
    );
    text
}

fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_moves_to_postgres_and_back_with_nothing_lost() {
    if skipped_on_postgres_run() {
        return;
    }
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, objects) = (dir.path().join("src.db"), dir.path().join("objects"));
    let app = app_on(&src, "", &objects).await;
    let users = populate(&app).await;
    let before = seen(&app, &users).await;
    let media_id = {
        let db = TestDb::of(&app);
        db.query_row("SELECT id FROM media", Vec::<SqlValue>::new(), |r| {
            r.get::<String>(0)
        })
        .unwrap()
    };
    assert_eq!(before["alice"]["me"]["quota"]["balance_fen"], 400);
    assert_eq!(before["alice"]["me"]["quota"]["free_remaining"], 0);
    app.stop().await;

    // SQLite → Postgres, with a password in the URL that must not be shown
    let pg = with_password(&pgcluster::create_db(&cluster.url("postgres")));
    let from = format!("sqlite:{}", src.display());
    let text = assert_migrated(&migrate(dir.path(), &from, &pg));
    assert!(text.contains("postgres://postgres@127.0.0.1:"), "{text}");

    let app = app_on(&dir.path().join("unused.db"), &pg, &objects).await;
    assert_eq!(seen(&app, &users).await, before, "Postgres shows the same");
    check_upload(&app, &users.alice.0, &media_id).await;
    // and goes on: new ids after the copied ones (messages, ledger, points)
    let paid = chat(&app, &users.alice.0, json!({"message": "on postgres"})).await;
    assert_eq!(paid["quota"]["charged_fen"], 50, "{paid}");
    assert_eq!(paid["quota"]["balance_fen"], 350, "{paid}");
    let (s, b) = app
        .post(
            "/api/location/report",
            Some(&users.bob.0),
            json!({"latitude": 22.5431, "longitude": 114.0579}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let out = app.cli(&["admin", "audit"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let after = seen(&app, &users).await;
    app.stop().await;

    // a target holding rows is refused, and left as it was
    let out = migrate(dir.path(), &from, &pg);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(PASSWORD), "{}", stderr(&out));
    let app = app_on(&dir.path().join("unused.db"), &pg, &objects).await;
    assert_eq!(
        seen(&app, &users).await,
        after,
        "the refused target is unchanged"
    );
    app.stop().await;

    // Postgres → a new SQLite file
    let back = dir.path().join("back").join("mvp28.db");
    let to = format!("sqlite:{}", back.display());
    assert_migrated(&migrate(dir.path(), &pg, &to));
    let app = app_on(&back, "", &objects).await;
    assert_eq!(
        seen(&app, &users).await,
        after,
        "SQLite again shows the same"
    );
    check_upload(&app, &users.alice.0, &media_id).await;
    let paid = chat(&app, &users.alice.0, json!({"message": "back on sqlite"})).await;
    assert_eq!(paid["quota"]["balance_fen"], 300, "{paid}");
    let carol = app.login("carol").await;
    chat(&app, &carol.0, json!({"message": "new here"})).await;
    app.stop().await;

    // and the SQLite target, now holding rows, is refused too
    let out = migrate(dir.path(), &pg, &to);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
}

/// A SQLite database of this binary's schema, then `edit` applied to it.
fn database(path: &Path, edit: &str) {
    drop(mvp28::db::Db::open(path, 1).unwrap());
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(edit).unwrap();
}

#[test]
fn a_source_at_another_schema_version_is_refused() {
    if skipped_on_postgres_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.db");
    let to = format!("sqlite:{}", target.display());

    let older = dir.path().join("older.db");
    database(
        &older,
        "DELETE FROM refinery_schema_history WHERE version = (SELECT max(version) FROM refinery_schema_history)",
    );
    let out = migrate(dir.path(), &format!("sqlite:{}", older.display()), &to);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("schema version") && err.contains("mvp28 migrate"),
        "{err}"
    );

    let newer = dir.path().join("newer.db");
    database(
        &newer,
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'future', '', '0')",
    );
    let out = migrate(dir.path(), &format!("sqlite:{}", newer.display()), &to);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("newer than this binary"), "{err}");

    let out = migrate(dir.path(), "sqlite:missing.db", &to);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no database at"), "{}", stderr(&out));
    assert!(!target.exists(), "nothing was created for a refused source");
    assert!(!dir.path().join("missing.db").exists());
}

#[test]
fn a_non_empty_target_is_refused_and_left_alone() {
    if skipped_on_postgres_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("a.db"), dir.path().join("b.db"));
    database(
        &source,
        "INSERT INTO users (id, openid, created_at, last_login_at) VALUES ('u1', 'dev:a', 1, 1)",
    );
    database(
        &target,
        "INSERT INTO settings (key, value, updated_at) VALUES ('price_fen', 7, 1)",
    );
    let out = migrate(
        dir.path(),
        &format!("sqlite:{}", source.display()),
        &format!("sqlite:{}", target.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("is not empty (settings: 1 rows)"), "{err}");
    let c = rusqlite::Connection::open(&target).unwrap();
    let users: i64 = c
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(users, 0, "nothing was written");

    // the same into an empty file works, SQLite to SQLite as well
    let fresh = dir.path().join("c.db");
    let out = migrate(
        dir.path(),
        &format!("sqlite:{}", source.display()),
        &format!("sqlite:{}", fresh.display()),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let c = rusqlite::Connection::open(&fresh).unwrap();
    let id: String = c
        .query_row("SELECT id FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(id, "u1");
}
