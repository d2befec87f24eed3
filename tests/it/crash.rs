//! Crash safety: the real binary is killed with SIGKILL, cycle after cycle,
//! while chats, top-up notifications and uploads are in flight. Afterwards
//! the ledger audits clean, every notification WeChat Pay would have been
//! told was received (a 2xx) is credited exactly once, and every chat reply
//! and upload the server acknowledged is still there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi, API_KEY};
use crate::fakes::wechatpay::{FakeWechatPay, Notify};

const CYCLES: usize = 3;
const USERS: usize = 3;
/// Load before each kill (ms, per cycle); the kill lands in the middle of it.
const LOAD_MS: [u64; CYCLES] = [400, 700, 1000];

#[derive(Default)]
struct Acked {
    /// (reply message id, its content)
    replies: Vec<(String, String)>,
    /// out_trade_no of notifications answered 2xx
    notified: Vec<String>,
    /// media ids of commits answered 200
    uploads: Vec<String>,
    requests: usize,
}

struct Order {
    user: usize,
    out_trade_no: String,
    amount_fen: i64,
    notify: Notify,
}

fn config_toml(port: u16, wx: &FakeWechatPay, ai: &FakeOpenAi, keys: &std::path::Path) -> String {
    let mut c = mvp28::config::Config::default();
    wx.configure(&mut c, keys);
    let p = &c.wechat_pay;
    format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\ndev_login = true\n\
         [rate_limit]\nper_user_per_minute = 0\nper_ip_per_minute = 0\n\
         login_per_ip_per_minute = 0\nlocation_per_user_per_minute = 0\n\
         [[llm.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key = \"{API_KEY}\"\nmodels = [\"gpt-4o-mini\"]\ntimeout_secs = 30\n\
         [wechat_pay]\nmch_id = \"{}\"\napp_id = \"{}\"\nserial_no = \"{}\"\n\
         private_key_path = \"{}\"\napi_v3_key = \"{}\"\nplatform_public_key_path = \"{}\"\n\
         platform_public_key_id = \"{}\"\napi_base = \"{}\"\ntimeout_secs = 5\n",
        ai.base_url,
        p.mch_id,
        p.app_id,
        p.serial_no,
        p.private_key_path,
        p.api_v3_key,
        p.platform_public_key_path,
        p.platform_public_key_id,
        p.api_base,
    )
}

async fn deliver(client: &reqwest::Client, base: &str, n: &Notify) -> Option<StatusCode> {
    let mut req = client
        .post(format!("{base}/api/pay/wechat/webhook"))
        .body(n.body.clone());
    for (k, v) in &n.headers {
        req = req.header(k, v);
    }
    req.send().await.ok().map(|r| r.status())
}

/// One chat; Some((id, content)) when the server answered 200.
async fn chat(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    msg: &str,
) -> Option<(String, String)> {
    let res = client
        .post(format!("{base}/api/chat"))
        .bearer_auth(token)
        .json(&json!({"message": msg, "client_msg_id": msg}))
        .send()
        .await
        .ok()?;
    if res.status() != StatusCode::OK {
        return None;
    }
    let b: Value = res.json().await.ok()?;
    Some((
        b["message"]["id"].as_str()?.to_string(),
        b["message"]["content"].as_str()?.to_string(),
    ))
}

/// presign -> PUT -> commit; Some(media id) when the commit answered 200.
async fn upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: Vec<u8>,
) -> Option<String> {
    let p: Value = client
        .post(format!("{base}/api/upload/presign"))
        .bearer_auth(token)
        .json(&json!({"filename": "a.png", "content_type": "image/png", "size": body.len()}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let put = client
        .put(p["url"].as_str()?)
        .header("content-type", "image/png")
        .body(body)
        .send()
        .await
        .ok()?;
    if !put.status().is_success() {
        return None;
    }
    let c = client
        .post(format!("{base}/api/upload/commit"))
        .bearer_auth(token)
        .json(&json!({"upload_id": p["upload_id"]}))
        .send()
        .await
        .ok()?;
    if c.status() != StatusCode::OK {
        return None;
    }
    let v: Value = c.json().await.ok()?;
    Some(v["media"]["id"].as_str()?.to_string())
}

#[tokio::test]
async fn sigkill_loop_loses_nothing_acknowledged() {
    let ai = FakeOpenAi::start().await;
    // Replies take a while, so each kill lands on generations in flight
    // (holds that the next start must release).
    ai.set(Behavior::Slow(Duration::from_millis(60)));
    let wx = FakeWechatPay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("config.toml"),
        config_toml(port, &wx, &ai, keys.path()),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let cli = |args: &[&str]| {
        let out = run_cli(dir.path(), args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };

    let mut server = ServeGuard::start(dir.path(), &base).await;
    let mut tokens = vec![];
    for u in 0..USERS {
        let b: Value = client
            .post(format!("{base}/api/auth/wechat"))
            .json(&json!({"code": format!("dev:crash{u}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let uid = b["user"]["id"].as_str().unwrap().to_string();
        // Past two free messages, replies are paid: charges and top-ups
        // interleave in the ledger.
        cli(&["admin", "grant", "--user", &uid, "--fen", "100000"]);
        tokens.push(b["token"].as_str().unwrap().to_string());
    }
    cli(&["admin", "set-free-quota", "2"]);

    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut orders: Vec<Order> = vec![];
    let mut first_deliveries = 0;
    for (cycle, load_ms) in LOAD_MS.into_iter().enumerate() {
        if cycle > 0 {
            server = ServeGuard::start(dir.path(), &base).await;
        }
        // Orders to be paid during this cycle's load.
        let first = orders.len();
        for (u, token) in tokens.iter().enumerate() {
            for amount in [600, 1000, 3000] {
                let b: Value = client
                    .post(format!("{base}/api/pay/checkout"))
                    .bearer_auth(token)
                    .json(&json!({ "amount_fen": amount }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let no = b["out_trade_no"].as_str().expect("checkout").to_string();
                let tx = wx.pay(&no);
                orders.push(Order {
                    user: u,
                    notify: wx.notification(&tx, chrono::Utc::now().timestamp()),
                    out_trade_no: no,
                    amount_fen: amount,
                });
            }
        }
        first_deliveries += orders.len() - first;
        let notes: Arc<Vec<(String, Notify)>> = Arc::new(
            orders[first..]
                .iter()
                .map(|o| (o.out_trade_no.clone(), o.notify.clone()))
                .collect(),
        );

        let mut tasks = vec![];
        for (u, token) in tokens.iter().enumerate() {
            // chats
            let (c, b, t, a) = (client.clone(), base.clone(), token.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let msg = format!("c{cycle}-u{u}-m{i}");
                    let r = chat(&c, &b, &t, &msg).await;
                    let mut g = a.lock().unwrap();
                    g.requests += 1;
                    match r {
                        Some(reply) => g.replies.push(reply),
                        None => return,
                    }
                }
            }));
            // uploads
            let (c, b, t, a) = (client.clone(), base.clone(), token.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0usize.. {
                    let body = vec![(i % 251) as u8; 1000 + i];
                    let r = upload(&c, &b, &t, body).await;
                    let mut g = a.lock().unwrap();
                    g.requests += 1;
                    match r {
                        Some(id) => g.uploads.push(id),
                        None => return,
                    }
                }
            }));
        }
        // notifications, each sent twice (WeChat Pay repeats them)
        for half in 0..2 {
            let (c, b, a, n) = (client.clone(), base.clone(), acked.clone(), notes.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..2 {
                    for (no, note) in n.iter().skip(half).step_by(2) {
                        // Paced to outlast the load: some are cut by the kill.
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        let s = deliver(&c, &b, note).await;
                        let mut g = a.lock().unwrap();
                        g.requests += 1;
                        match s {
                            Some(s) if s.is_success() => {
                                if round == 0 {
                                    g.notified.push(no.clone());
                                }
                            }
                            Some(s) => panic!("notification refused: {s}"),
                            None => return,
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
    }

    // WeChat Pay retries until it is answered: every notification again.
    let _server = ServeGuard::start(dir.path(), &base).await;
    for o in &orders {
        let s = deliver(&client, &base, &o.notify).await.expect("server up");
        assert!(s.is_success(), "redelivery of {}: {s}", o.out_trade_no);
    }

    let audit = run_cli(dir.path(), &["admin", "audit"], &[]);
    assert!(
        audit.status.success(),
        "audit: {}{}",
        stdout(&audit),
        stderr(&audit)
    );

    let db = rusqlite::Connection::open(dir.path().join("data/mvp28.db")).unwrap();
    let acked = acked.lock().unwrap();
    for o in &orders {
        let credits: i64 = db
            .query_row(
                "SELECT count(*) FROM ledger WHERE kind = 'topup' AND reference = ?1 AND delta_fen = ?2",
                rusqlite::params![o.out_trade_no, o.amount_fen],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(credits, 1, "order {} of user {}", o.out_trade_no, o.user);
    }
    let topups: i64 = db
        .query_row(
            "SELECT count(*) FROM ledger WHERE kind = 'topup'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(topups as usize, orders.len());
    for (id, content) in &acked.replies {
        let (status, stored): (String, String) = db
            .query_row(
                "SELECT status, content FROM messages WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("acknowledged reply {id} is missing: {e}"));
        assert_eq!(
            (status.as_str(), stored.as_str()),
            ("complete", content.as_str())
        );
    }
    for id in &acked.uploads {
        let (state, key, size): (String, String, i64) = db
            .query_row(
                "SELECT state, object_key, size FROM media WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or_else(|e| panic!("acknowledged upload {id} is missing: {e}"));
        assert_eq!(state, "committed");
        let file = dir.path().join("data/objects").join(&key);
        let len = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("object of {id} missing at {file:?}: {e}"))
            .len();
        assert_eq!(len as i64, size, "{id}");
    }
    assert!(!acked.replies.is_empty() && !acked.uploads.is_empty());
    let held: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE status = 'generating'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(held, 0, "replies left generating after restart");
    let cut: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE status = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!(
        "crash loop: {CYCLES} SIGKILL cycles, {} requests sent, {} acknowledged \
         ({} chat replies, {} uploads, {} of {first_deliveries} notifications before the kills); \
         {cut} replies cut by a kill marked failed; {} orders, each credited exactly once \
         after redelivery; admin audit clean",
        acked.requests,
        acked.replies.len() + acked.uploads.len() + acked.notified.len(),
        acked.replies.len(),
        acked.uploads.len(),
        acked.notified.len(),
        orders.len(),
    );
}
