//! Cost control: usage accounting, spend, the budget guard and the report.

use std::time::Duration;

use chrono::TimeZone;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi, API_KEY};

/// gpt-4o-mini at 0.15 / 0.60 per million tokens; the fake reports 11 + 7
/// tokens a call: 11 * 150 + 7 * 600 = 5850 nano-units a call.
const CALL_NANOS: i64 = 5850;

fn priced(c: &mut mvp28::config::Config) {
    c.llm.prices = vec![mvp28::config::PriceConfig {
        model: "gpt-4o-mini".into(),
        input_per_mtok: 0.15,
        output_per_mtok: 0.6,
    }];
}

async fn priced_app(fake: &FakeOpenAi, f: impl FnOnce(&mut mvp28::config::Config)) -> TestApp {
    let provider = fake.provider(5);
    TestApp::builder()
        .config(|c| {
            c.llm.providers = vec![provider];
            priced(c);
            f(c);
        })
        .spawn()
        .await
}

fn db(app: &TestApp) -> super::common::TestDb {
    super::common::TestDb::of(app)
}

fn usage_json(app: &TestApp, by: &str) -> Value {
    let out = app.cli(&["admin", "usage", "--days", "3660", "--by", by, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[tokio::test]
async fn every_call_is_recorded_with_exact_tokens_and_spend() {
    let fake = FakeOpenAi::start().await;
    let app = priced_app(&fake, |_| {}).await;
    let (token, uid) = app.login("u1").await;
    for i in 0..3 {
        let (s, b) = app
            .post(
                "/api/chat",
                Some(&token),
                json!({"message": format!("m{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // a failed call is recorded too, with no tokens and no spend
    fake.set(Behavior::Status(500));
    assert_eq!(
        app.post("/api/chat", Some(&token), json!({"message": "x"}))
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );
    // and a stream without usage is estimated, and marked so
    fake.set(Behavior::NoUsage);
    let (_, b) = app
        .post("/api/chat", Some(&token), json!({"message": "estimate me"}))
        .await;
    let reply = b["message"]["content"].as_str().unwrap().to_string();

    let conn = db(&app);
    let rows: Vec<(String, i64, i64, i64, String, i64, String)> = conn
        .query_all("SELECT provider, prompt_tokens, completion_tokens, estimated, outcome, cost_nanos, COALESCE(user_id, '') FROM llm_calls ORDER BY id", [] as [&dyn mvp28::db::sql::ToValue; 0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap();
    assert_eq!(rows.len(), 5);
    for r in &rows[..3] {
        assert_eq!(
            r,
            &(
                "openai".into(),
                11,
                7,
                0,
                "ok".into(),
                CALL_NANOS,
                uid.clone()
            )
        );
    }
    assert_eq!((rows[3].4.as_str(), rows[3].1, rows[3].5), ("error", 0, 0));
    let est = &rows[4];
    assert_eq!((est.3, est.4.as_str()), (1, "ok"));
    assert_eq!(
        est.2,
        (reply.chars().count() as i64 + 3) / 4,
        "completion estimated from the reply"
    );
    assert!(est.1 > 0);
    let spend: i64 = conn
        .query_row(
            "SELECT cost_nanos FROM llm_spend WHERE period = 'd:2026-11-25'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(spend, 3 * CALL_NANOS + est.5);
    let month: i64 = conn
        .query_row(
            "SELECT cost_nanos FROM llm_spend WHERE period = 'm:2026-11'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(month, spend);
}

#[tokio::test]
async fn usage_report_matches_the_stored_rows() {
    let fake = FakeOpenAi::start().await;
    let app = priced_app(&fake, |_| {}).await;
    let (a, ua) = app.login("a").await;
    let (b, ub) = app.login("b").await;
    admin_ok(&app, &["admin", "set-free-quota", "1"]);
    admin_ok(&app, &["admin", "grant", "--user", &ub, "--fen", "500"]);
    app.post("/api/chat", Some(&a), json!({"message": "1"}))
        .await;
    for i in 0..3 {
        let (s, _) = app
            .post("/api/chat", Some(&b), json!({"message": format!("b{i}")}))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    fake.set(Behavior::Status(503));
    app.post("/api/chat", Some(&b), json!({"message": "fails"}))
        .await;

    let by_model = usage_json(&app, "model");
    let row = &by_model["rows"][0];
    assert_eq!(row["key"], "gpt-4o-mini");
    assert_eq!(row["calls"], 5);
    assert_eq!(row["failures"], 1);
    assert_eq!(row["prompt_tokens"], 44);
    assert_eq!(row["completion_tokens"], 28);
    assert_eq!(row["spend_nanos"], 4 * CALL_NANOS);
    assert_eq!(row["spend"], "0.000023");
    assert_eq!(row["charges_fen"], 200, "b paid for 2 of 3 (1 free)");
    assert_eq!(by_model["total"]["charges_fen"], 200);

    let by_user = usage_json(&app, "user");
    let user_row = |id: &str| {
        by_user["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(user_row(&ua)["calls"], 1);
    assert_eq!(user_row(&ub)["calls"], 4);
    assert_eq!(user_row(&ub)["failures"], 1);
    assert_eq!(user_row(&ub)["charges_fen"], 200);

    // the same numbers straight from the tables
    let conn = db(&app);
    let (calls, tokens, spend): (i64, i64, i64) = conn
        .query_row("SELECT count(*), sum(prompt_tokens + completion_tokens), sum(cost_nanos) FROM llm_calls", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    let charges: i64 = conn
        .query_row(
            "SELECT -sum(delta_fen) FROM ledger WHERE kind = 'charge'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let total = &usage_json(&app, "day")["total"];
    assert_eq!(total["calls"], calls);
    assert_eq!(
        total["prompt_tokens"].as_i64().unwrap() + total["completion_tokens"].as_i64().unwrap(),
        tokens
    );
    assert_eq!(total["spend_nanos"], spend);
    assert_eq!(total["charges_fen"], charges);

    // the table form prints the same totals
    let out = app.cli(&["admin", "usage", "--days", "3660", "--by", "provider"]);
    let text = stdout(&out);
    assert!(
        text.contains("openai")
            && text.contains("TOTAL")
            && text.contains("0.000023")
            && text.contains("2.00"),
        "{text}"
    );
}

fn admin_ok(app: &TestApp, args: &[&str]) {
    let out = app.cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

#[tokio::test]
async fn budget_rolls_over_with_the_period() {
    let fake = FakeOpenAi::start().await;
    // 23:00 local (UTC+8) on the last day of November
    let app = TestApp::builder()
        .at(chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 15, 0, 0)
            .unwrap())
        .config(|c| {
            c.llm.providers = vec![fake.provider(5)];
            priced(c);
            c.llm.daily_budget = 0.00001; // 10_000 nanos: two calls
        })
        .spawn()
        .await;
    let (token, _) = app.login("r").await;
    for _ in 0..2 {
        assert_eq!(
            app.post("/api/chat", Some(&token), json!({"message": "x"}))
                .await
                .0,
            StatusCode::OK
        );
    }
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "x"}))
        .await;
    assert_error(s, &b, 503, "budget_exhausted");
    assert_eq!(fake.count(), 2, "no upstream call past the budget");
    assert_eq!(
        app.get("/api/me", Some(&token)).await.1["quota"]["free_used_today"],
        2,
        "refusal not charged"
    );
    // local midnight: a new day, a new daily budget
    app.clock.advance(chrono::Duration::hours(1));
    assert_eq!(
        app.post("/api/chat", Some(&token), json!({"message": "x"}))
            .await
            .0,
        StatusCode::OK
    );

    // a monthly budget only rolls over with the month
    admin_ok(
        &app,
        &[
            "admin",
            "set-budget",
            "--daily",
            "0",
            "--monthly",
            "0.00001",
        ],
    );
    // December's spend started at local midnight: one call so far, one more fits
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "x"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "x"}))
        .await;
    assert_error(s, &b, 503, "budget_exhausted");
    // a new day does not help a monthly budget; a new month does
    app.clock.advance(chrono::Duration::days(1));
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "x"}))
        .await;
    assert_error(s, &b, 503, "budget_exhausted");
    app.clock.advance(chrono::Duration::days(31));
    let (token, _) = app.login("r").await; // the week-long token expired meanwhile
    let (s, b) = app
        .post("/api/chat", Some(&token), json!({"message": "x"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn soft_threshold_warns_hard_stop_and_live_raise_through_the_binary() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // 12_000 nanos: warn past 9_600 (after 2 calls), stop past 12_000 (after 3)
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\n\
             [llm]\ndaily_budget = 0.000012\n\
             [[llm.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"{API_KEY}\"\n\
             models = [\"gpt-4o-mini\"]\ntimeout_secs = 5\n\
             [[llm.prices]]\nmodel = \"gpt-4o-mini\"\ninput_per_mtok = 0.15\noutput_per_mtok = 0.6\n",
            fake.base_url
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("server.log");
    let _server = ServeGuard::start_logged(dir.path(), &base, Some(&log)).await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/auth/wechat"))
        .json(&json!({"code": "dev:w"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let chat = || {
        client
            .post(format!("{base}/api/chat"))
            .bearer_auth(token)
            .json(&json!({"message": "x"}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(chat().await.unwrap().status(), 200);
    }
    let warned = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap()
            .matches("passed 80% of the daily budget")
            .count()
    };
    assert_eq!(warned(&log), 0);
    assert_eq!(
        chat().await.unwrap().status(),
        200,
        "past the soft threshold, still serving"
    );
    // the log is written by its own thread: the line may follow the answer
    for _ in 0..100 {
        if warned(&log) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(warned(&log), 1);
    let res = chat().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "budget_exhausted"
    );
    assert_eq!(fake.count(), 3);
    // the operator raises the budget live
    let out = run_cli(dir.path(), &["admin", "set-budget", "--daily", "1"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(chat().await.unwrap().status(), 200);
    assert_eq!(fake.count(), 4);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(warned(&log), 1, "warned once per period");
}
