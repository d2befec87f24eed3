//! Streaming benchmark (run by scripts/bench.sh):
//! - time to first token through mvp28 (SSE and WebSocket) vs. straight from
//!   the fake upstream it proxies (same run, same upstream), and the
//!   difference;
//! - the server's memory with N streams held open at once, SSE then
//!   WebSocket, against an upstream that sends its first token and then
//!   holds every stream until the benchmark releases it.
//!
//!   cargo run --release --example stream_bench -- <path/to/mvp28> [streams=10000] [samples=200]
//!
//! Besides the human-readable report, prints `RESULT <key> <value>` lines
//! for scripts/bench.sh. Opening stops at the first stream that fails (file
//! descriptors, ports, memory): the count reached is reported, not hidden.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use futures_util::SinkExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Streams opened at once while ramping up to N.
const OPEN_CONCURRENCY: usize = 64;
/// A stream not past its first token by then counts as failed to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

async fn within<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(OPEN_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(format!("no first token within {OPEN_TIMEOUT:?}")))
}

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

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Reads SSE until the first data line carrying text.
async fn sse_first_token(mut res: reqwest::Response) -> Result<reqwest::Response, String> {
    if !res.status().is_success() {
        return Err(format!("status {}", res.status()));
    }
    let mut seen = String::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("hello") {
                    return Ok(res);
                }
            }
            Ok(None) => return Err(format!("ended before a token: {seen}")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Connects, asks, and reads frames until the first delta.
async fn ws_first_token(url: &str) -> Result<Ws, String> {
    // Small buffers on the bench's side too: it holds N sockets as well.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::text(r#"{"type":"chat","message":"hi"}"#))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("hello") => return Ok(ws),
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"error\"") => {
                return Err(t.as_str().to_string())
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before a token".into()),
        }
    }
}

/// Reads frames until the reply is done (or the socket ends).
async fn ws_finish(mut ws: Ws) -> bool {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if t.as_str().contains("\"done\"") {
                let _ = ws.close(None).await;
                return true;
            }
            if t.as_str().contains("\"error\"") {
                return false;
            }
        }
    }
    false
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
    let streams: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
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
        .pool_max_idle_per_host(64)
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
    let ws_url = format!("ws://127.0.0.1:{port}/api/chat/ws?token={token}");
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
    let timed_sse = |req: reqwest::RequestBuilder| async move {
        let t0 = Instant::now();
        let res = sse_first_token(req.send().await.expect("request"))
            .await
            .expect("first token");
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        drop(res);
        ms
    };
    // A WebSocket turn includes its handshake, as a mini-program's would.
    let timed_ws = || async {
        let t0 = Instant::now();
        let ws = ws_first_token(&ws_url).await.expect("first token");
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        ws_finish(ws).await;
        ms
    };
    // warm up every path
    for _ in 0..20 {
        timed_sse(direct()).await;
        timed_sse(proxied()).await;
        timed_ws().await;
    }
    let (mut d, mut p, mut w) = (vec![], vec![], vec![]);
    for _ in 0..samples {
        d.push(timed_sse(direct()).await);
        p.push(timed_sse(proxied()).await);
        w.push(timed_ws().await);
    }
    let (d50, p50, w50) = (
        percentile(&mut d, 0.5),
        percentile(&mut p, 0.5),
        percentile(&mut w, 0.5),
    );
    let (d99, p99, w99) = (
        percentile(&mut d, 0.99),
        percentile(&mut p, 0.99),
        percentile(&mut w, 0.99),
    );
    println!("time to first token, {samples} sequential requests (ms):");
    println!("  upstream direct            p50 {d50:.3}  p99 {d99:.3}");
    println!("  through mvp28 (SSE)        p50 {p50:.3}  p99 {p99:.3}");
    println!(
        "  through mvp28 (WebSocket)  p50 {w50:.3}  p99 {w99:.3}  (connect + handshake included)"
    );
    println!(
        "  mvp28 overhead (SSE)       p50 {:.3} ms (reserve + 2 stored messages + proxy)",
        p50 - d50
    );
    println!("RESULT ttft_direct_p50_ms {d50:.3}");
    println!("RESULT ttft_sse_p50_ms {p50:.3}");
    println!("RESULT ttft_ws_p50_ms {w50:.3}");
    println!("RESULT ttft_overhead_sse_p50_ms {:.3}", p50 - d50);
    println!("RESULT ttft_overhead_ws_p50_ms {:.3}", w50 - d50);

    // Memory with many streams open at once: SSE, then WebSocket.
    for kind in ["sse", "ws"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = status_kib(pid, "VmRSS:");
        hold.send_replace(true);
        let t0 = Instant::now();
        let mut first_error = None;
        let (mut sse_open, mut ws_open) = (vec![], vec![]);
        if kind == "sse" {
            let mut opening = stream::iter(0..streams)
                .map(|_| {
                    within(async {
                        sse_first_token(proxied().send().await.map_err(|e| e.to_string())?).await
                    })
                })
                .buffer_unordered(OPEN_CONCURRENCY);
            while let Some(r) = opening.next().await {
                match r {
                    Ok(res) => sse_open.push(res),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        } else {
            let mut opening = stream::iter(0..streams)
                .map(|_| within(ws_first_token(&ws_url)))
                .buffer_unordered(OPEN_CONCURRENCY);
            while let Some(r) = opening.next().await {
                match r {
                    Ok(ws) => ws_open.push(ws),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let open = sse_open.len() + ws_open.len();
        let ramp = t0.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = status_kib(pid, "VmRSS:");
        let label = if kind == "sse" { "SSE" } else { "WebSocket" };
        println!(
            "{label} streams open at once: {open} of {streams} (each past its first token, upstream held; opened in {:.1} s)",
            ramp.as_secs_f64()
        );
        if let Some(e) = &first_error {
            println!("  {} failed to open; the first: {e}", streams - open);
        }
        println!(
            "  server RSS before {before} KiB, with streams open {during} KiB: {:.1} KiB per open stream",
            during.saturating_sub(before) as f64 / open.max(1) as f64
        );
        hold.send_replace(false);
        let finished = if kind == "sse" {
            stream::iter(sse_open)
                .map(|mut res| async move { while let Ok(Some(_)) = res.chunk().await {} })
                .buffer_unordered(1024)
                .count()
                .await
        } else {
            stream::iter(ws_open)
                .map(ws_finish)
                .buffer_unordered(1024)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await
        };
        println!("  {finished} of them then completed");
        println!("RESULT {kind}_open {open}");
        println!("RESULT {kind}_rss_kib {during}");
        println!(
            "RESULT {kind}_kib_per_stream {:.1}",
            during.saturating_sub(before) as f64 / open.max(1) as f64
        );
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
    let peak = status_kib(pid, "VmHWM:");
    println!(
        "replies stored today: {}; server peak RSS {peak} KiB",
        after["quota"]["free_used_today"]
    );
    println!("RESULT streams_peak_rss_kib {peak}");
}
