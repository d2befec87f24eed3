//! Streaming benchmark (run by scripts/bench.sh):
//! - time to first token through mvp28's SSE endpoint vs. straight from the
//!   fake upstream it proxies (same run, same upstream), and the difference;
//! - the server's memory with N streams held open at once.
//!
//!   cargo run --release --example stream_bench -- <path/to/mvp28> [streams=1000] [samples=200]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;

/// Upstream: the first token at once; the rest after the gate opens (when
/// `hold` is set), so streams can be kept open for the memory figure.
#[derive(Clone)]
struct Upstream {
    hold: Arc<watch::Sender<bool>>,
}

async fn completions(State(u): State<Upstream>) -> Response {
    let mut gate = u.hold.subscribe();
    let first = Bytes::from("data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n");
    let rest = Bytes::from(
        "data: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\n\n\
         data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
    );
    let body = stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(stream::once(
        async move {
            while *gate.borrow_and_update() {
                if gate.changed().await.is_err() {
                    break;
                }
            }
            Ok(rest)
        },
    ));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Time until the first SSE data line carrying text.
async fn ttft(client: &reqwest::Client, req: reqwest::RequestBuilder) -> Duration {
    let _ = client;
    let t0 = Instant::now();
    let mut res = req.send().await.expect("request");
    let mut seen = String::new();
    while let Some(chunk) = res.chunk().await.expect("chunk") {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("hello") {
            return t0.elapsed();
        }
    }
    panic!("no token in {seen}");
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = std::fs::canonicalize(
        args.get(1)
            .expect("usage: stream_bench <mvp28 binary> [streams] [samples]"),
    )
    .expect("mvp28 binary exists");
    let streams: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let samples: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);

    let hold = Arc::new(watch::channel(false).0);
    let upstream = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(Upstream { hold: hold.clone() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n\
             [rate_limit]\nper_user_per_minute = 0\nper_ip_per_minute = 0\nlogin_per_ip_per_minute = 0\n\
             [[llm.providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"http://{up_addr}/v1\"\n\
             api_key = \"bench\"\nmodels = [\"gpt-4o-mini\"]\ntimeout_secs = 600\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let ok = Command::new(&bin)
            .env_clear()
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "{args:?}");
    };
    run(&["migrate"]);
    run(&["admin", "set-free-quota", "1000000000"]);
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    // Only the config file counts: no MVP28_* from the caller's environment.
    let child = Command::new(&bin)
        .env_clear()
        .arg("serve")
        .current_dir(dir.path())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Server(child);
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap();
    for _ in 0..500 {
        if client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let login: serde_json::Value = client
        .post(format!("{base}/api/auth/wechat"))
        .json(&serde_json::json!({"code": "dev:bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let direct = || {
        client
            .post(format!("http://{up_addr}/v1/chat/completions"))
            .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [], "stream": true}))
    };
    let proxied = || {
        client
            .post(format!("{base}/api/chat/stream"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"message": "hi"}))
    };
    // warm up both paths
    for _ in 0..20 {
        ttft(&client, direct()).await;
        ttft(&client, proxied()).await;
    }
    let (mut d, mut p) = (vec![], vec![]);
    for _ in 0..samples {
        d.push(ttft(&client, direct()).await.as_secs_f64() * 1000.0);
        p.push(ttft(&client, proxied()).await.as_secs_f64() * 1000.0);
    }
    let (d50, p50) = (percentile(&mut d, 0.5), percentile(&mut p, 0.5));
    let (d99, p99) = (percentile(&mut d, 0.99), percentile(&mut p, 0.99));
    println!("time to first token, {samples} sequential requests (ms):");
    println!("  upstream direct      p50 {d50:.3}  p99 {d99:.3}");
    println!("  through mvp28 (SSE)  p50 {p50:.3}  p99 {p99:.3}");
    println!(
        "  mvp28 overhead       p50 {:.3} ms (reserve + 2 stored messages + proxy)",
        p50 - d50
    );

    // memory with many streams open at once
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(pid);
    hold.send_replace(true);
    let mut open = vec![];
    for _ in 0..streams {
        let mut res = proxied().send().await.expect("stream opens");
        let mut seen = String::new();
        while !seen.contains("hello") {
            seen.push_str(&String::from_utf8_lossy(
                &res.chunk().await.unwrap().unwrap(),
            ));
        }
        open.push(res);
    }
    let during = rss_kib(pid);
    println!("open streams: {streams} (each past its first token, upstream held)");
    println!(
        "  server RSS before {} KiB, with streams open {} KiB: {:.1} KiB per open stream",
        before,
        during,
        (during.saturating_sub(before)) as f64 / streams as f64
    );
    hold.send_replace(false);
    let mut done = 0;
    for mut res in open {
        while let Ok(Some(_)) = res.chunk().await {}
        done += 1;
    }
    let after: serde_json::Value = client
        .get(format!("{base}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "  all {done} streams completed; replies stored today: {}; peak RSS {} KiB",
        after["quota"]["free_used_today"],
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1).map(String::from))
            .unwrap_or_default()
    );
}
