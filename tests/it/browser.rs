//! The operator console in a real browser: Debian's headless Chromium,
//! driven over the DevTools protocol (a WebSocket, with the
//! tokio-tungstenite the tests already use), at a phone's screen size.
//! A machine without Chromium skips these tests with one loud line
//! (`.ci/run` installs it). Every page visited is saved as a screenshot
//! under `target/console-shots/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::console::create_admin;
use crate::fakes::openai::{Behavior, FakeOpenAi};
use crate::fakes::wechatpay::FakeWechatPay;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn chromium_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

struct Browser {
    child: std::process::Child,
    ws: Ws,
    next_id: u64,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    shot_no: u32,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Chromium, headless, with one page connected; None (after one loud
    /// line) when Chromium is not installed.
    async fn launch(test: &str) -> Option<Browser> {
        let Some(exe) = chromium_path() else {
            eprintln!(
                "SKIPPED {test}: no Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)"
            );
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=390,844",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium starts");
        let port_file = profile.path().join("DevToolsActivePort");
        let mut port = None;
        for _ in 0..300 {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                if let Some(p) = s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()) {
                    port = Some(p);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let port = port.expect("chromium opened its DevTools port");
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("console-shots")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
            _profile: profile,
            shots,
            shot_no: 0,
        };
        b.cmd("Page.enable", json!({})).await;
        // a phone's screen
        b.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
        )
        .await;
        Some(b)
    }

    /// One DevTools command; its result (events in between are skipped).
    async fn cmd(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg.into())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer"))
                .expect("devtools open")
                .unwrap();
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .cmd(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is true (30 s at most: Chromium on a loaded
    /// 2-core machine can take seconds to render a page).
    async fn wait_for(&mut self, expr: &str) {
        for _ in 0..300 {
            if self.eval(expr).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = self
            .eval("document.body ? document.body.innerText : ''")
            .await;
        panic!("timed out waiting for {expr}; page: {body}");
    }

    /// Marks the current document, so a new one (navigation, redirect,
    /// reload) can be told apart from it.
    async fn mark(&mut self) {
        self.eval("window.__old = true").await;
    }

    /// Waits for a new document (after [`mark`](Self::mark)) to finish loading.
    async fn wait_new_page(&mut self) {
        self.wait_for("!window.__old && document.readyState === 'complete'")
            .await;
    }

    async fn goto(&mut self, url: &str) {
        self.mark().await;
        self.cmd("Page.navigate", json!({"url": url})).await;
        self.wait_new_page().await;
    }

    async fn screenshot(&mut self, name: &str) {
        let r = self
            .cmd(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        self.shot_no += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.shot_no));
        std::fs::write(&path, png).unwrap();
    }

    /// Sets an input's value (as typing would).
    async fn fill(&mut self, selector: &str, value: &str) {
        let (s, v) = (
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(value).unwrap(),
        );
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.value = {v}; return true; }})()"
            ))
            .await;
        assert_eq!(found, json!(true), "no {selector}");
    }

    async fn click(&mut self, selector: &str) {
        let s = serde_json::to_string(selector).unwrap();
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.click(); return true; }})()"
            ))
            .await;
        assert_eq!(found, json!(true), "no {selector}");
    }
}

async fn me(app: &TestApp, token: &str) -> Value {
    let (s, b) = app.get("/api/me", Some(token)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// Logs in, then on Users finds a user made through the API and grants
/// 10 CNY (seen in that user's /api/me); changes the price (seen in
/// /api/me); settles an order the fake WeChat Pay reports paid; sees the
/// provider page show the failing fake provider.
#[tokio::test]
async fn console_in_headless_chromium() {
    let Some(mut browser) = Browser::launch("console_in_headless_chromium").await else {
        return;
    };
    let pay = FakeWechatPay::start().await;
    let llm = FakeOpenAi::start().await;
    let keys = tempfile::tempdir().unwrap();
    let provider = llm.provider(5);
    let app = TestApp::builder()
        .config(|c| {
            pay.configure(c, keys.path());
            // with WeChat Pay on, the dev login must be asked for
            c.auth.dev_login = Some(true);
            c.llm.providers = vec![provider];
        })
        .spawn()
        .await;
    let pw = create_admin(&app, "ops");
    let (user_token, user_id) = app.login("grace").await;
    let (s, b) = app
        .post(
            "/api/pay/checkout",
            Some(&user_token),
            json!({"amount_fen": 3000}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let order = b["out_trade_no"].as_str().unwrap().to_string();
    pay.pay(&order);
    llm.set(Behavior::Status(503));
    let (s, _) = app
        .post("/api/chat", Some(&user_token), json!({"message": "hi"}))
        .await;
    assert_eq!(s.as_u16(), 502);

    // log in
    browser.goto(&app.url("/admin/")).await;
    browser
        .wait_for("location.pathname === '/admin/login'")
        .await;
    browser.screenshot("login").await;
    browser.fill("#login input[name=name]", "ops").await;
    browser.fill("#login input[name=password]", &pw).await;
    browser.mark().await;
    browser.click("#login button").await;
    browser.wait_new_page().await;
    browser
        .wait_for("location.pathname === '/admin/' && !!document.querySelector('svg')")
        .await;
    browser.screenshot("overview").await;

    // Users: find, open, grant 10 CNY
    browser.goto(&app.url("/admin/users")).await;
    browser.fill("#find input[name=q]", &user_id).await;
    browser.mark().await;
    browser.click("#find button").await;
    browser.wait_new_page().await;
    browser
        .wait_for("!!document.querySelector('#only-match')")
        .await;
    browser.screenshot("users-found").await;
    browser.mark().await;
    browser.click("#only-match").await;
    browser.wait_new_page().await;
    browser
        .wait_for(&format!(
            "location.pathname === '/admin/users/{user_id}' && document.readyState === 'complete'"
        ))
        .await;
    browser.fill("#grant input[name=fen]", "10").await;
    browser
        .fill("#grant input[name=reason]", "browser test goodwill")
        .await;
    browser.mark().await;
    browser.click("#grant button").await;
    browser.wait_new_page().await;
    browser
        .wait_for("document.querySelector('#ledger') && document.querySelector('#ledger').innerText.includes('browser test goodwill')")
        .await;
    browser.screenshot("user-granted").await;
    assert_eq!(me(&app, &user_token).await["quota"]["balance_fen"], 1000);

    // Settings: change the price
    browser.goto(&app.url("/admin/settings")).await;
    browser.fill("#settings input[name=price_fen]", "150").await;
    browser.mark().await;
    browser.click("#settings button").await;
    browser.wait_new_page().await;
    browser
        .wait_for("document.querySelector('#settings input[name=price_fen]').value === '150'")
        .await;
    browser.screenshot("settings").await;
    let mut price = 0;
    for _ in 0..50 {
        price = me(&app, &user_token).await["quota"]["price_fen"]
            .as_i64()
            .unwrap();
        if price == 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(price, 150);

    // Payments: settle the order WeChat Pay reports paid
    browser
        .goto(&app.url("/admin/payments?status=pending"))
        .await;
    browser.screenshot("payments-pending").await;
    browser.mark().await;
    browser
        .click(&format!("tr[data-order='{order}'] button.settle"))
        .await;
    browser.wait_new_page().await;
    browser
        .wait_for(&format!(
            "document.readyState === 'complete' && !document.querySelector(\"tr[data-order='{order}']\")"
        ))
        .await;
    browser.goto(&app.url("/admin/payments?status=paid")).await;
    browser
        .wait_for(&format!(
            "!!document.querySelector(\"tr[data-order='{order}'] .status-paid\")"
        ))
        .await;
    browser.screenshot("payments-paid").await;
    assert_eq!(me(&app, &user_token).await["quota"]["balance_fen"], 4000);

    // Providers: the failing fake provider and its failure
    browser.goto(&app.url("/admin/providers")).await;
    browser
        .wait_for("!!document.querySelector(\"[data-provider='openai'] .status-failed\")")
        .await;
    browser
        .wait_for("document.querySelector(\"[data-provider='openai'] .error-text\").innerText.startsWith('HTTP 503')")
        .await;
    browser.click("[data-provider='openai'] button").await;
    browser
        .wait_for("document.getElementById('flash').className === 'error' && document.getElementById('flash').textContent.includes('FAILED')")
        .await;
    browser.screenshot("providers").await;

    // System and the audit trail of what was just done
    browser.goto(&app.url("/admin/system")).await;
    browser
        .wait_for("document.querySelector('#audit').innerText.includes('user.grant') && document.querySelector('#audit').innerText.includes('payment.settle')")
        .await;
    browser.screenshot("system").await;
    drop(browser);
    app.stop().await;
}

/// Logs in as `name` on the login page and waits for the overview.
async fn log_in(browser: &mut Browser, app: &TestApp, name: &str, pw: &str) {
    browser.goto(&app.url("/admin/login")).await;
    browser.fill("#login input[name=name]", name).await;
    browser.fill("#login input[name=password]", pw).await;
    browser.mark().await;
    browser.click("#login button").await;
    browser.wait_new_page().await;
    browser.wait_for("location.pathname === '/admin/'").await;
}

/// On Admins, creates an API token and uses it as `Authorization:
/// Bearer` on the admin API; makes a second admin (one-time password
/// shown once, and it logs in); on Settings edits the top-up amounts and
/// sees a checkout refused and accepted by them; runs the doctor checks on
/// System.
#[tokio::test]
async fn console_tokens_admins_topups_and_doctor_in_headless_chromium() {
    let Some(mut browser) =
        Browser::launch("console_tokens_admins_topups_and_doctor_in_headless_chromium").await
    else {
        return;
    };
    let pay = FakeWechatPay::start().await;
    let keys = tempfile::tempdir().unwrap();
    let app = TestApp::builder()
        .config(|c| {
            pay.configure(c, keys.path());
            c.auth.dev_login = Some(true);
        })
        .spawn()
        .await;
    let pw = create_admin(&app, "ops");
    let (user_token, _) = app.login("hana").await;
    log_in(&mut browser, &app, "ops", &pw).await;

    // Admins: a new API token, shown once
    browser.goto(&app.url("/admin/admins")).await;
    browser.screenshot("admins").await;
    browser
        .fill("#new-token input[name=label]", "nightly report")
        .await;
    browser.click("#new-token button").await;
    browser
        .wait_for("document.getElementById('flash').textContent.includes('mvp28adm_')")
        .await;
    browser.screenshot("token-created").await;
    let token = browser
        .eval("document.getElementById('flash').textContent.match(/mvp28adm_[0-9a-f]+/)[0]")
        .await
        .as_str()
        .unwrap()
        .to_string();
    for path in ["/api/admin/me", "/api/admin/settings"] {
        let res = app
            .client
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        if path == "/api/admin/me" {
            let me: Value = res.json().await.unwrap();
            assert_eq!(me["admin"], "ops");
            assert_eq!(me["via"], "token");
        }
    }
    // listed (never the token itself), revocable from the page
    browser.goto(&app.url("/admin/admins")).await;
    browser
        .wait_for("document.querySelector('#tokens').innerText.includes('nightly report')")
        .await;
    let page = browser.eval("document.body.innerHTML").await;
    assert!(!page.as_str().unwrap().contains(&token));

    // a second admin: the one-time password logs in
    browser.fill("#new-admin input[name=name]", "bea").await;
    browser.click("#new-admin button").await;
    browser
        .wait_for("document.getElementById('flash').textContent.includes('One-time password')")
        .await;
    browser.screenshot("admin-created").await;
    let bea_pw = browser
        .eval("document.getElementById('flash').textContent.split(': ').pop().trim()")
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bea_pw.len(), 20, "{bea_pw}");
    let bea = crate::console::login(&app, "bea", &bea_pw).await;
    assert!(bea.is_ok(), "the shown password does not log in");

    // Settings: new top-up amounts, live at checkout
    browser.goto(&app.url("/admin/settings")).await;
    browser
        .fill("#settings input[name=topup_amounts_fen]", "800, 1600")
        .await;
    browser.mark().await;
    browser.click("#settings button").await;
    browser.wait_new_page().await;
    browser
        .wait_for("document.querySelector('#settings input[name=topup_amounts_fen]').value === '800,1600'")
        .await;
    browser.screenshot("settings-topups").await;
    let (s, b) = app
        .post(
            "/api/pay/checkout",
            Some(&user_token),
            json!({"amount_fen": 600}),
        )
        .await;
    assert_eq!(s.as_u16(), 422, "{b}");
    assert_eq!(b["error"]["topup_amounts_fen"], json!([800, 1600]));
    let (s, b) = app
        .post(
            "/api/pay/checkout",
            Some(&user_token),
            json!({"amount_fen": 1600}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // revoke the token from the page: it stops working
    browser.goto(&app.url("/admin/admins")).await;
    browser.eval("window.confirm = () => true").await;
    browser.mark().await;
    browser.click("#tokens button.revoke").await;
    browser.wait_new_page().await;
    browser
        .wait_for("document.querySelector('#tokens').innerText.includes('revoked')")
        .await;
    let res = app
        .client
        .get(app.url("/api/admin/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // System: doctor on demand
    browser.goto(&app.url("/admin/system")).await;
    browser.mark().await;
    browser.click("#doctor-run").await;
    browser.wait_new_page().await;
    browser
        .wait_for("!!document.querySelector('#doctor') && document.querySelector('#doctor').innerText.includes('database')")
        .await;
    browser.screenshot("system-doctor").await;
    browser.goto(&app.url("/admin/system")).await;
    browser
        .wait_for("['token.create', 'admin.create', 'settings.set', 'token.revoke', 'doctor.run'].every(a => document.querySelector('#audit').innerText.includes(a))")
        .await;
    drop(browser);
    app.stop().await;
}
