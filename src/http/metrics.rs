//! Prometheus metrics, per server instance (no global recorder, so several
//! servers in one process — the tests — never mix their figures).
//!
//! GET /metrics answers loopback clients only, unless `metrics.token` is set,
//! in which case it answers anyone presenting `Authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{AppError, ErrorCode};
use crate::http::AppState;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

type Key = (&'static str, String);

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
    histograms: Mutex<BTreeMap<Key, Histogram>>,
}

/// `a="x",b="y"` with values escaped as the exposition format requires.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Metrics {
    /// A counter's sum over all its labels.
    pub fn total(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .expect("metrics lock")
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn inc(&self, name: &'static str, labels: String, by: u64) {
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .entry((name, labels))
            .or_default() += by;
    }

    pub fn observe(&self, name: &'static str, labels: String, value: Duration) {
        let secs = value.as_secs_f64();
        let mut h = self.histograms.lock().expect("metrics lock");
        let e = h.entry((name, labels)).or_insert_with(|| Histogram {
            counts: vec![0; BUCKETS.len()],
            ..Default::default()
        });
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                e.counts[i] += 1;
            }
        }
        e.sum += secs;
        e.count += 1;
    }

    /// The exposition text, plus `gauges` computed at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), v) in self.counters.lock().expect("metrics lock").iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
        last = "";
        for ((name, labels), h) in self.histograms.lock().expect("metrics lock").iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} histogram");
                last = name;
            }
            let sep = if labels.is_empty() { "" } else { "," };
            for (b, c) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
        let mut last = "";
        for (name, help, labels, v) in gauges {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
        out
    }
}

/// Middleware: request count and latency per route template and status.
/// A method as a label from a fixed set: hyper accepts any token as a
/// method (hundreds of KB of it), so anything non-standard is "other".
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let m = state.metrics();
    m.inc(
        "http_requests_total",
        labels(&[("route", &route), ("method", method), ("status", &status)]),
        1,
    );
    m.observe(
        "http_request_duration_seconds",
        labels(&[("route", &route), ("method", method)]),
        started.elapsed(),
    );
    if res.status() == StatusCode::PAYMENT_REQUIRED {
        quota_refused(&state, &route).await;
    }
    res
}

/// Counts a 402 `quota_exhausted` (an HTTP answer, or a WebSocket error
/// frame): in /metrics, and per local day in the database for the
/// console's overview (before the answer leaves, so it is never behind
/// it). A lost count is logged, never the request's problem.
pub async fn quota_refused(state: &AppState, route: &str) {
    state
        .metrics()
        .inc("quota_exhausted_total", labels(&[("route", route)]), 1);
    let day = state.at().day;
    if let Err(e) = state
        .db()
        .write(move |tx| crate::db::console::count_quota_refusal(tx, &day))
        .await
    {
        tracing::warn!(error = %e, "could not count a 402");
    }
}

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(scrape))
}

/// GET /metrics
#[utoipa::path(get, path = "/metrics", tag = "meta",
    description = "Prometheus text. Served to loopback peers only, unless `metrics.token` is set \
        (then `Authorization: Bearer <metrics.token>` from anywhere).",
    responses(
        (status = 200, description = "The exposition text", content_type = "text/plain", body = String),
        (status = 401, description = "Wrong metrics token", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not a loopback peer", body = crate::http::openapi::ErrorBody),
    ))]
pub async fn scrape(State(state): State<AppState>, req: Request) -> Response {
    if let Err(e) = authorize(&state, &req) {
        return e.into_response();
    }
    let gauges = match gauges(&state).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(&gauges),
    )
        .into_response()
}

fn authorize(state: &AppState, req: &Request) -> Result<(), AppError> {
    let token = &state.config().metrics.token;
    if !token.is_empty() {
        let given = crate::auth::bearer_token(req.headers(), None).unwrap_or("");
        // constant-time compare: the token is a secret
        let ok = given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        return if ok {
            Ok(())
        } else {
            Err(AppError::unauthorized("metrics need the metrics token"))
        };
    }
    let (peer, xff) = crate::http::ratelimit::peer_and_forwarded(req);
    // Behind a local reverse proxy every peer is loopback: judge the client.
    let client = state.limits().client_ip(peer, xff);
    if client.is_loopback() && (xff.is_none() || client != peer) {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "metrics are served to loopback only (set metrics.token to scrape remotely)",
        ))
    }
}

async fn gauges(
    state: &AppState,
) -> Result<Vec<(&'static str, &'static str, String, f64)>, AppError> {
    let at = state.at();
    let (payments, standing, (charges, topups)) = state
        .db()
        .run(move |c| {
            Ok((
                crate::db::payments::payments_by_status(c)?,
                crate::billing::budget::standing(c, &at)?,
                crate::db::billing::income_totals(c)?,
            ))
        })
        .await?;
    let mut g = vec![];
    for (status, n) in payments {
        g.push((
            "payments",
            "payment orders by state",
            labels(&[("status", &status)]),
            n as f64,
        ));
    }
    let nanos = |n: i64| n as f64 / 1e9;
    g.push((
        "income_fen",
        "income so far in fen (cumulative)",
        labels(&[("kind", "charge")]),
        charges as f64,
    ));
    g.push((
        "income_fen",
        "income so far in fen (cumulative)",
        labels(&[("kind", "topup")]),
        topups as f64,
    ));
    g.push((
        "llm_spend",
        "model spend this period, upstream currency",
        labels(&[("period", "day")]),
        nanos(standing.day_spend),
    ));
    g.push((
        "llm_spend",
        "model spend this period, upstream currency",
        labels(&[("period", "month")]),
        nanos(standing.month_spend),
    ));
    g.push((
        "llm_budget",
        "model budget this period (0 = none)",
        labels(&[("period", "day")]),
        nanos(standing.day_budget),
    ));
    g.push((
        "llm_budget",
        "model budget this period (0 = none)",
        labels(&[("period", "month")]),
        nanos(standing.month_budget),
    ));
    for (period, spent, budget) in [
        ("day", standing.day_spend, standing.day_budget),
        ("month", standing.month_spend, standing.month_budget),
    ] {
        if budget > 0 {
            g.push((
                "llm_budget_used_ratio",
                "spend / budget",
                labels(&[("period", period)]),
                spent as f64 / budget as f64,
            ));
        }
    }
    let (jobs, batches, queued, syncs) = state.db().write_stats();
    g.push((
        "db_write_jobs",
        "write transactions requested (cumulative)",
        String::new(),
        jobs as f64,
    ));
    g.push((
        "db_write_commits",
        "group commits that carried them (cumulative)",
        String::new(),
        batches as f64,
    ));
    g.push((
        "db_wal_syncs",
        "fsyncs of the SQLite WAL that answered durable writes (cumulative)",
        String::new(),
        syncs as f64,
    ));
    g.push((
        "db_write_queue_seconds",
        "time write jobs waited for the writer (cumulative)",
        String::new(),
        queued,
    ));
    let (acq, waited) = state.db().pool_waits();
    g.push((
        "db_pool_acquisitions",
        "database connections handed out (cumulative)",
        String::new(),
        acq as f64,
    ));
    g.push((
        "db_pool_wait_seconds",
        "time spent waiting for a database connection (cumulative)",
        String::new(),
        waited,
    ));
    if let Some(not_after) = state.tls().and_then(|t| t.not_after()) {
        g.push((
            "tls_certificate_expiry_seconds",
            "seconds until the served TLS certificate expires",
            labels(&[("source", state.tls().map_or("", |t| t.source()))]),
            (not_after - crate::tls::unix_now()) as f64,
        ));
    }
    g.push((
        "live_generations",
        "replies being generated (or just finished)",
        String::new(),
        state.live().len() as f64,
    ));
    Ok(g)
}
