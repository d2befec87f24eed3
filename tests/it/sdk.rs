//! The mini-program JS SDK (sdk/miniprogram/) under Node's own test runner,
//! against the real binary (`mvp28 serve` as a child) with fakes for the
//! model (paced, so replies stream in pieces) and WeChat Pay.
//!
//! Needs Node 20+ (fetch, FormData, WebSocket; Node 20 behind
//! `--experimental-websocket`). Without it the test skips with one loud line.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rsa::pkcs8::{EncodePublicKey, LineEnding};

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi};
use crate::fakes::wechatpay::{self as wxpay, FakeWechatPay};

const FREE_DAILY: u32 = 5;

/// `node` and the flags that give it a WebSocket, or why not.
fn node() -> Result<Vec<String>, String> {
    let probe = |flags: &[&str]| {
        Command::new("node")
            .args(flags)
            .args([
                "-e",
                "const [maj]=process.versions.node.split('.').map(Number);\
                 process.exit(maj>=20&&typeof WebSocket==='function'&&typeof fetch==='function'?0:3)",
            ])
            .output()
    };
    match probe(&[]) {
        Err(e) => return Err(format!("node not found ({e})")),
        Ok(o) if o.status.success() => return Ok(vec![]),
        Ok(_) => {}
    }
    match probe(&["--experimental-websocket"]) {
        Ok(o) if o.status.success() => Ok(vec!["--experimental-websocket".into()]),
        _ => Err("node is older than 20 or has no WebSocket".into()),
    }
}

fn write_config(dir: &Path, port: u16, llm: &FakeOpenAi, pay: &FakeWechatPay) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut c = mvp28::config::Config::default();
    pay.configure(&mut c, &keys);
    let p = &c.wechat_pay;
    let config = format!(
        r#"[server]
bind = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[database]
path = "data/mvp28.db"

[auth]
jwt_secret = "{secret}"
dev_login = true

[llm]
default_model = "gpt-4o-mini"

[[llm.providers]]
name = "openai"
kind = "openai"
base_url = "{llm_base}"
api_key = "{llm_key}"
models = ["gpt-4o-mini"]
timeout_secs = 10

[quota]
free_daily = {FREE_DAILY}

[storage]
local_dir = "data/objects"

[wechat_pay]
mch_id = "{mch}"
app_id = "{app}"
serial_no = "{serial}"
private_key_path = "{key}"
api_v3_key = "{v3}"
platform_public_key_path = "{pubkey}"
platform_public_key_id = "{pubkey_id}"
api_base = "{pay_base}"
notify_url = "https://example.com/api/pay/wechat/webhook"

[rate_limit]
per_user_per_minute = 0
per_ip_per_minute = 0
login_per_ip_per_minute = 0
location_per_user_per_minute = 0
"#,
        secret = TEST_JWT_SECRET,
        llm_base = llm.base_url,
        llm_key = crate::fakes::openai::API_KEY,
        mch = p.mch_id,
        app = p.app_id,
        serial = p.serial_no,
        key = p.private_key_path,
        v3 = p.api_v3_key,
        pubkey = p.platform_public_key_path,
        pubkey_id = p.platform_public_key_id,
        pay_base = p.api_base,
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

#[tokio::test]
async fn miniprogram_sdk_under_node_test() {
    let flags = match node() {
        Ok(f) => f,
        Err(why) => {
            eprintln!("!!!!! SKIPPED miniprogram_sdk_under_node_test: {why}; install Node 20+ (.ci/run does) !!!!!");
            return;
        }
    };
    let llm = FakeOpenAi::start().await;
    llm.set(Behavior::Paced(Duration::from_millis(15)));
    let pay = FakeWechatPay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, &llm, &pay);
    let merchant_pem = dir.path().join("merchant_pub.pem");
    std::fs::write(
        &merchant_pem,
        wxpay::merchant_public()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("serve.log");
    let _server = ServeGuard::start_logged(dir.path(), &base, Some(&log)).await;

    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/miniprogram");
    let out = tokio::process::Command::new("node")
        .args(&flags)
        .args(["--test", "--test-reporter=spec", "test/sdk.test.js"])
        .current_dir(&sdk)
        .env("MVP28_BASE_URL", &base)
        .env("MVP28_MERCHANT_PUBLIC_KEY", &merchant_pem)
        .env("MVP28_APP_ID", wxpay::APP_ID)
        .env("MVP28_JWT_SECRET", TEST_JWT_SECRET)
        .env("MVP28_FREE_DAILY", FREE_DAILY.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("node --test finishes in time")
        .expect("node runs");
    let report = format!(
        "{}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(out.status.success(), "node --test failed:\n{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pass 7") && stdout.contains("skipped 0"),
        "every SDK test ran:\n{report}"
    );
}
