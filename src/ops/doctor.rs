//! `mvp28 doctor`: every check an operator needs before going live, one
//! line each — `ok`, `warn` or `fail` with the key to fix — so the questions
//! of the original setup guide's troubleshooting list (are the variables
//! right, is the database there, are the API keys valid, does the domain
//! resolve) are answered before real users ask them.
//!
//! Nothing is changed: the database is inspected (a write is rolled back,
//! nothing is migrated), storage gets a probe object that is deleted again,
//! WeChat is asked about a code that cannot exist, WeChat Pay about an order
//! that cannot exist. Exit 0 when nothing failed, 1 otherwise.

mod database;
mod models;
mod network;
mod storage;
mod wechat;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::config::dotenv::Environment;
use crate::config::Config;

/// A bound on each probe, beyond the clients' own timeouts.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// config, mode, database, disk, storage, llm, wechat, wechat_pay,
    /// public_url, clock
    pub part: &'static str,
    pub status: Status,
    pub message: String,
    /// The config key to fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(part: &'static str, message: impl Into<String>) -> Check {
        Check {
            part,
            status: Status::Ok,
            message: message.into(),
            key: None,
            fix: None,
        }
    }

    fn warn(
        part: &'static str,
        key: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Warn,
            ..Check::fail(part, key, message, fix)
        }
    }

    fn fail(
        part: &'static str,
        key: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        let fix: String = fix.into();
        Check {
            part,
            status: Status::Fail,
            message: message.into(),
            key: Some(key.to_string()),
            fix: (!fix.is_empty()).then_some(fix),
        }
    }

    fn line(&self) -> String {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        };
        let mut s = format!("{status:<5} {:<11} ", self.part);
        if let Some(k) = &self.key {
            s.push_str(&format!("[{k}] "));
        }
        s.push_str(&self.message);
        if let Some(f) = &self.fix {
            s.push_str(&format!(" -> {f}"));
        }
        s
    }
}

/// Runs every check and prints the report.
pub fn run(config_path: Option<&Path>, env: &Environment, json: bool) -> ExitCode {
    let checks = collect(config_path, env);
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    if json {
        let doc = serde_json::json!({
            "ok": !failed,
            "summary": {"ok": count(Status::Ok), "warn": count(Status::Warn), "fail": count(Status::Fail)},
            "checks": checks,
        });
        println!("{doc}");
    } else {
        for c in &checks {
            println!("{}", c.line());
        }
        println!(
            "doctor: {} ok, {} warn, {} fail",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail)
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn collect(config_path: Option<&Path>, env: &Environment) -> Vec<Check> {
    let mut out = vec![];
    let (cfg, warnings) = match Config::load(config_path, &env.vars, false) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "config",
                &e.key,
                e.message,
                "correct it; `mvp28 config check` prints the effective config",
            ));
            return out;
        }
    };
    out.push(Check::ok(
        "config",
        format!("valid ({})", sources(config_path, env)),
    ));
    for w in warnings {
        out.push(Check::warn(
            "config",
            "environment",
            w,
            "remove the variable or rename it (`mvp28 config check` refuses it)",
        ));
    }
    let (local, payments) = local_checks(&cfg);
    out.extend(local);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.push(Check::fail(
                "doctor",
                "-",
                format!("no async runtime: {e}"),
                "",
            ));
            return out;
        }
    };
    out.extend(runtime.block_on(remote_checks(&cfg, payments.as_ref())));
    out
}

/// The checks of the running server's config, for the operator console
/// (run on demand: the remote probes take seconds): the same checks as the
/// command after loading the config.
pub async fn for_server(state: crate::http::AppState) -> Vec<Check> {
    let st = state.clone();
    let local = tokio::task::spawn_blocking(move || local_checks(st.config())).await;
    let (mut out, payments) = match local {
        Ok(v) => v,
        Err(e) => {
            return vec![Check::fail(
                "doctor",
                "-",
                format!("the checks did not run: {e}"),
                "",
            )]
        }
    };
    out.insert(0, Check::ok("config", "valid (the running server's)"));
    out.extend(remote_checks(state.config(), payments.as_ref()).await);
    out
}

/// Mode, database, disk, certificate and the payment keys: local and quick.
fn local_checks(cfg: &Config) -> (Vec<Check>, Option<crate::pay::Payments>) {
    let mut out = vec![];
    match cfg.mode() {
        Ok(m) if m.is_dev() => out.push(Check::warn(
            "mode",
            if m.dev_login { "auth.dev_login" } else { "llm.allow_echo" },
            format!("dev: {}", m.why),
            "for production set wechat.app_id and an LLM api_key, and leave auth.dev_login / llm.allow_echo unset",
        )),
        Ok(m) => out.push(Check::ok("mode", format!("prod: {}", m.why))),
        Err(e) => out.push(Check::fail(
            "mode",
            &e.key,
            format!("serve would refuse to start: {}", e.message),
            "",
        )),
    }
    out.extend(database::database(cfg));
    out.extend(certificate(cfg));
    let payments = match crate::pay::Payments::from_config(cfg) {
        Ok(p) => p,
        Err(e) => {
            let text = format!("{e:#}");
            let key = text.split(':').next().unwrap_or("wechat_pay").to_string();
            out.push(Check::fail(
                "wechat_pay",
                &key,
                text,
                "point it at a readable PEM file from the merchant platform",
            ));
            None
        }
    };
    (out, payments)
}

/// Storage, models, WeChat, WeChat Pay, the public URL and the clock: each
/// a call over the network, all at once.
async fn remote_checks(cfg: &Config, payments: Option<&crate::pay::Payments>) -> Vec<Check> {
    let (storage, llm, wechat, pay, url, clock) = tokio::join!(
        storage::storage(cfg),
        models::models(cfg),
        wechat::login(cfg),
        wechat::pay(cfg, payments),
        network::public_url(cfg),
        network::clock(cfg),
    );
    [storage, llm, wechat, pay, url, clock]
        .into_iter()
        .flatten()
        .collect()
}

/// HTTPS: warns while the served certificate has under 14 days left.
fn certificate(cfg: &Config) -> Option<Check> {
    const WARN_DAYS: i64 = 14;
    match crate::tls::certificate_expiry(cfg) {
        Ok(None) => None,
        Ok(Some(c)) => {
            let days = c.seconds_left().div_euclid(86_400);
            let what = format!(
                "{} certificate {} has {days} days left",
                c.source,
                c.path.display()
            );
            Some(if days < WARN_DAYS {
                let key = if c.source == "acme" {
                    "server.tls.acme_domains"
                } else {
                    "server.tls.cert_path"
                };
                Check::warn(
                    "tls",
                    key,
                    what,
                    "renew it (ACME renews 30 days ahead: see the log for failed renewals)",
                )
            } else {
                Check::ok("tls", what)
            })
        }
        Err(e) => Some(Check::fail("tls", &e.key, e.message, "")),
    }
}

/// Where the config came from, for the first line.
fn sources(config_path: Option<&Path>, env: &Environment) -> String {
    let mut parts = vec![];
    let named = config_path.map(Path::to_path_buf).or_else(|| {
        env.vars
            .get(crate::config::dotenv::CONFIG_VAR)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    match named {
        Some(p) => parts.push(p.display().to_string()),
        None if Path::new("config.toml").exists() => parts.push("./config.toml".into()),
        None => parts.push("embedded defaults".into()),
    }
    if let Some(f) = &env.file {
        parts.push(format!("env file {}", f.display()));
    }
    parts.push("environment".into());
    parts.join(" + ")
}
