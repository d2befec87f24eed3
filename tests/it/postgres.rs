//! The Postgres backend: the whole integration suite once more on a
//! throwaway cluster, and what only several instances on one database can
//! show.

use std::process::Command;

use super::pgcluster::Cluster;

/// Re-runs this test binary with every test on a fresh Postgres database
/// (see `common::test_config`); tests of SQLite-only things skip there.
#[test]
fn the_integration_suite_passes_on_postgres() {
    if super::common::postgres_admin_url().is_some() {
        return; // this is the Postgres run itself
    }
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .env("MVP28_TEST_PG", cluster.url("postgres"))
        .args(["--skip", "postgres::", "--test-threads", "4"])
        .output()
        .expect("the suite runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("test result") || l.contains("FAILED") || l.contains("panicked"))
        .collect();
    eprintln!("Postgres run: {}", summary.join("\n"));
    assert!(
        out.status.success(),
        "the suite failed on Postgres:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------ several instances

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::chat::{admin, assert_audit_clean, quota};
use super::common::TestApp;
use super::fakes::openai::{Behavior, FakeOpenAi};
use super::fakes::wechatpay::FakeWechatPay;

/// A cluster and one fresh database on it, or None (skipped loudly).
fn database() -> Option<(Cluster, String)> {
    let cluster = Cluster::start()?;
    let url = super::pgcluster::create_db(&cluster.url("postgres"));
    Some((cluster, url))
}

/// Two instances on one fresh database, with their fake model.
struct Pair {
    _cluster: Cluster,
    fake: FakeOpenAi,
    a: TestApp,
    b: TestApp,
}

async fn pair() -> Option<Pair> {
    let (cluster, url) = database()?;
    let fake = FakeOpenAi::start().await;
    let a = instance(&fake, &url).await;
    let b = instance(&fake, &url).await;
    Some(Pair {
        _cluster: cluster,
        fake,
        a,
        b,
    })
}

/// An in-process server on the shared database (its own port, pool,
/// writer and instance id).
async fn instance(fake: &FakeOpenAi, url: &str) -> TestApp {
    let provider = fake.provider(10);
    let url = url.to_owned();
    TestApp::builder()
        .config(move |c| {
            c.llm.providers = vec![provider];
            c.llm.breaker_failures = 1000;
            c.database.url = url;
        })
        .spawn()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_keep_the_money_rule_exactly() {
    let Some((_cluster, url)) = database() else {
        return;
    };
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Slow(Duration::from_millis(50)));
    let a = Arc::new(instance(&fake, &url).await);
    let b = Arc::new(instance(&fake, &url).await);
    let (token, uid) = a.login("alice").await;
    admin(&a, &["admin", "set-free-quota", "2"]);
    admin(&a, &["admin", "grant", "--user", &uid, "--fen", "500"]);
    // k = 2 free + 5 paid = 7 messages left, 20 asked for over both
    let mut tasks = vec![];
    for i in 0..20 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            app.post(
                "/api/chat",
                Some(&token),
                json!({"message": format!("c{i}")}),
            )
            .await
            .0
        }));
    }
    let mut statuses = vec![];
    for t in tasks {
        statuses.push(t.await.unwrap().as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((ok, refused), (7, 13), "{statuses:?}");
    for app in [&a, &b] {
        let q = quota(app, &token).await;
        assert_eq!(q["balance_fen"], 0, "{q}");
        assert_eq!(q["free_remaining"], 0, "{q}");
    }
    assert_eq!(fake.count(), 7);
    assert_audit_clean(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_notification_ten_times_over_two_instances_credits_once() {
    let Some((_cluster, url)) = database() else {
        return;
    };
    let fake = FakeWechatPay::start().await;
    let (u1, u2) = (url.clone(), url.clone());
    let a = Arc::new(super::pay::pay_app_at(&fake, None, move |c| c.database.url = u1).await);
    let b = Arc::new(super::pay::pay_app_at(&fake, None, move |c| c.database.url = u2).await);
    let (token, _) = a.login("alice").await;
    let no = super::pay::checkout_ok(&a, &token, 1000).await;
    let n = fake.notification(&fake.pay(&no), a.clock_now());
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let n = n.clone();
            tokio::spawn(async move { super::pay::deliver(&app, &n).await })
        })
        .collect();
    for t in tasks {
        let (s, body) = t.await.unwrap();
        assert!(s.is_success(), "{s} {body}");
    }
    assert_eq!(super::pay::balance(&a, &token).await, 1000);
    assert_eq!(super::pay::balance(&b, &token).await, 1000);
    assert_eq!(super::pay::topups(&a, &no), 1);
    assert_audit_clean(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_on_the_other_instance_is_answered_from_the_stored_reply() {
    let Some(Pair {
        _cluster,
        fake,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    let (token, _) = a.login("alice").await;
    let body = json!({"message": "hello", "client_msg_id": "retry-1"});
    let (s, first) = a.post("/api/chat", Some(&token), body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let (s, again) = b.post("/api/chat", Some(&token), body).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["message"]["id"], first["message"]["id"]);
    assert_eq!(again["message"]["content"], first["message"]["content"]);
    assert_eq!(fake.count(), 1, "the retry did not reach the model again");
    let q = quota(&b, &token).await;
    assert_eq!(q["free_used_today"], 1, "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_changed_by_the_cli_are_seen_by_every_instance_at_once() {
    let Some(Pair {
        _cluster,
        fake: _fake,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    let (token, _) = a.login("alice").await;
    admin(&a, &["admin", "set-price", "250"]);
    admin(&a, &["admin", "set-free-quota", "3"]);
    for app in [&a, &b] {
        let q = quota(app, &token).await;
        assert_eq!(q["price_fen"], 250, "{q}");
        assert_eq!(q["free_limit"], 3, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_starting_instance_leaves_a_live_instances_holds_alone() {
    let Some((_cluster, url)) = database() else {
        return;
    };
    let fake = FakeOpenAi::start().await;
    fake.set(Behavior::Slow(Duration::from_millis(1500)));
    let a = Arc::new(instance(&fake, &url).await);
    let (token, uid) = a.login("alice").await;
    admin(&a, &["admin", "set-free-quota", "0"]);
    admin(&a, &["admin", "grant", "--user", &uid, "--fen", "100"]);
    let turn = {
        let (a, token) = (a.clone(), token.clone());
        tokio::spawn(async move {
            a.post("/api/chat", Some(&token), json!({"message": "slow"}))
                .await
        })
    };
    // the turn holds the user's only paid message (nothing spendable)...
    let mut held = false;
    for _ in 0..100 {
        if quota(&a, &token).await["balance_fen"] == 0 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held, "the turn never held its message");
    // ...when another instance starts (and runs its crash recovery)
    let c = instance(&fake, &url).await;
    let q = quota(&c, &token).await;
    assert_eq!(
        q["balance_fen"], 0,
        "a live instance's hold was released: {q}"
    );
    let (s, reply) = turn.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{reply}");
    // charged exactly once: released by mistake, it would be free again
    let q = quota(&c, &token).await;
    assert_eq!(q["balance_fen"], 0, "{q}");
    assert_audit_clean(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_resume_on_the_other_instance_gets_the_rest_once_stored() {
    use super::streaming::{ws_connect, ws_next, ws_send, ws_until_end};
    let Some(Pair {
        _cluster,
        fake,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    let (token, _) = a.login("alice").await;
    fake.set(Behavior::Gated);
    let mut ws = ws_connect(&a, &token, false).await;
    ws_send(
        &mut ws,
        json!({"type": "chat", "message": "a longer reply please"}),
    )
    .await;
    let first = ws_next(&mut ws).await;
    assert_eq!(first["type"], "delta", "{first}");
    let got = first["text"].as_str().unwrap().to_string();
    let message_id = first["message_id"].as_str().unwrap().to_string();
    drop(ws);
    // the client reconnects through the load balancer and lands on B
    let mut ws2 = ws_connect(&b, &token, true).await;
    ws_send(
        &mut ws2,
        json!({"type": "resume", "message_id": message_id, "offset": got.chars().count()}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.open_gate();
    let (rest, done) = ws_until_end(&mut ws2).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(format!("{got}{rest}"), "reply to: a longer reply please");
    assert_eq!(done["message"]["id"], message_id.as_str());
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = super::common::free_port(); // nothing listens there
    let started = std::time::Instant::now();
    let out = super::common::run_cli(
        dir.path(),
        &["serve"],
        &[
            (
                "DATABASE_URL",
                &format!("postgres://app:s3cret-pw@127.0.0.1:{port}/app"),
            ),
            ("MVP28_DATABASE__CONNECT_TIMEOUT_SECS", "3"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        super::common::stderr(&out)
    );
    let err = super::common::stderr(&out);
    assert!(err.contains("cannot reach the database"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("s3cret"), "the password is echoed: {err}");
    assert!(started.elapsed() < Duration::from_secs(30), "it retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_goes_away_is_503_and_service_comes_back_with_it() {
    let Some((cluster, url)) = database() else {
        return;
    };
    let fake = FakeOpenAi::start().await;
    let a = instance(&fake, &url).await;
    let (token, _) = a.login("alice").await;
    let (s, b) = a
        .post("/api/chat", Some(&token), json!({"message": "one"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    cluster.stop();
    for body in [json!({"message": "two"}), json!({"message": "three"})] {
        let (s, b) = a.post("/api/chat", Some(&token), body).await;
        super::common::assert_error(s, &b, 503, "unavailable");
    }
    let (s, b) = a.get("/api/me", Some(&token)).await;
    super::common::assert_error(s, &b, 503, "unavailable");

    cluster.restart();
    let mut back = None;
    for _ in 0..50 {
        let (s, b) = a
            .post("/api/chat", Some(&token), json!({"message": "four"}))
            .await;
        if s == StatusCode::OK {
            back = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back.is_some(), "no recovery after the database came back");
    // nothing half-written: two replies stored, two free messages used
    let stored = super::common::TestDb::of(&a)
        .query_row(
            "SELECT count(*) FROM messages WHERE status = 'complete'",
            [] as [&dyn mvp28::db::sql::ToValue; 0],
            |r| r.get::<i64>(0),
        )
        .unwrap();
    assert_eq!(stored, 4, "one and four, question and reply each");
    let q = quota(&a, &token).await;
    assert_eq!(q["free_used_today"], 2, "{q}");
    assert_audit_clean(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn periodic_work_runs_on_one_instance_at_a_time() {
    use mvp28::ops::cluster::lease;
    let Some(Pair {
        _cluster,
        fake: _fake,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    let (da, db) = (a.state().db(), b.state().db());
    let ttl = Duration::from_millis(800);
    assert!(lease(da, "sweep", ttl).await.unwrap());
    assert!(
        !lease(db, "sweep", ttl).await.unwrap(),
        "two holders at once"
    );
    assert!(lease(da, "sweep", ttl).await.unwrap(), "the holder renews");
    assert!(
        lease(db, "other", ttl).await.unwrap(),
        "leases are per name"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        lease(db, "sweep", ttl).await.unwrap(),
        "an expired lease passes on"
    );
    assert!(!lease(da, "sweep", ttl).await.unwrap());
}
