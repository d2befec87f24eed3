//! Shared state and the router with its middleware stack.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Extension, Router};
use chrono::{DateTime, FixedOffset, Utc};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::jwt::JwtKeys;
use crate::auth::wechat::LoginProviders;
use crate::chat::live::Live;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;
use crate::error;
use crate::llm::Llm;
use crate::ratelimit::{self, RateLimits};
use crate::storage::Storage;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    db: Db,
    clock: SharedClock,
    jwt: JwtKeys,
    login: LoginProviders,
    llm: Llm,
    limits: RateLimits,
    storage: Storage,
    offset: FixedOffset,
    live: Arc<Live>,
    budget_guard: crate::billing::budget::Guard,
    metrics: crate::metrics::Metrics,
    /// Live users seen with a valid token (id -> created_at), so most
    /// requests skip the account lookup. Accounts are only ever deleted
    /// through DELETE /api/me, which forgets the entry.
    known_users: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Set once at start when wechat_pay is configured (see `set_payments`).
    payments: std::sync::OnceLock<crate::pay::Payments>,
    /// Batch jobs' concurrency bound and stop signal.
    jobs: crate::jobs::Runner,
}

impl AppState {
    pub fn new(
        config: Config,
        db: Db,
        clock: SharedClock,
        jwt_secret: &[u8],
        storage: Storage,
    ) -> (AppState, Vec<String>) {
        let (llm, warnings) = Llm::from_config(&config.llm);
        let state = AppState {
            inner: Arc::new(Inner {
                jwt: JwtKeys::new(jwt_secret, config.auth.token_ttl_secs),
                login: LoginProviders::from_config(&config),
                limits: RateLimits::new(&config.rate_limit, &config.server.trusted_proxies),
                offset: config.quota.offset(),
                live: Arc::new(Live::default()),
                budget_guard: Default::default(),
                metrics: Default::default(),
                known_users: Default::default(),
                payments: std::sync::OnceLock::new(),
                jobs: Default::default(),
                llm,
                storage,
                db,
                clock,
                config,
            }),
        };
        (state, warnings)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn db(&self) -> &Db {
        &self.inner.db
    }
    pub fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }
    pub fn login(&self) -> &LoginProviders {
        &self.inner.login
    }
    pub fn llm(&self) -> &Llm {
        &self.inner.llm
    }
    pub fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }
    pub fn known_user(&self, id: &str) -> Option<i64> {
        self.inner
            .known_users
            .lock()
            .expect("users lock")
            .get(id)
            .copied()
    }
    pub fn remember_user(&self, id: &str, created_at: i64) {
        let mut m = self.inner.known_users.lock().expect("users lock");
        if m.len() >= 100_000 {
            m.clear(); // a bound, not an LRU: a miss only costs one query
        }
        m.insert(id.to_string(), created_at);
    }
    pub fn forget_user(&self, id: &str) {
        self.inner
            .known_users
            .lock()
            .expect("users lock")
            .remove(id);
    }
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }
    pub fn budget_guard(&self) -> &crate::billing::budget::Guard {
        &self.inner.budget_guard
    }
    /// Replies being generated right now.
    pub fn live(&self) -> &Arc<Live> {
        &self.inner.live
    }
    pub fn jobs(&self) -> &crate::jobs::Runner {
        &self.inner.jobs
    }
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }
    /// WeChat Pay, when enabled.
    pub fn payments(&self) -> Option<&crate::pay::Payments> {
        self.inner.payments.get()
    }
    /// Installs the loaded payments before the router is built; later
    /// calls are ignored.
    pub fn set_payments(&self, p: crate::pay::Payments) {
        let _ = self.inner.payments.set(p);
    }
    /// Metering for model calls (prices, clock, spend periods).
    pub fn meter(&self) -> crate::billing::calls::Meter<'_> {
        crate::billing::calls::Meter {
            prices: &self.inner.config.llm,
            clock: self.inner.clock.clone(),
            offset: self.inner.offset,
        }
    }
    /// Now, as the money rule reads it (local day and month).
    pub fn at(&self) -> crate::billing::At {
        crate::billing::At::new(self.now(), self.inner.offset)
    }
}

#[derive(Clone, Default)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&crate::ids::random_hex(8))
            .ok()
            .map(RequestId::new)
    }
}

/// Every route, each registered once with its documentation, grouped by the
/// middleware [`router`] gives it. Built without state, so
/// [`crate::openapi::document`] describes exactly what the app serves.
/// Adding a route: annotate the handler with `#[utoipa::path]` and register
/// it with `routes!` in its module's `routes()`.
pub struct Routes {
    /// Outside the rate limits: health, the document, metrics, and the
    /// payment webhook (WeChat Pay calling, authenticated by its signature).
    pub open: OpenApiRouter<AppState>,
    /// The API, under the per-IP and per-user rate limits.
    pub limited: OpenApiRouter<AppState>,
    /// The local backend's token routes: they carry file bodies, so they
    /// get `storage.max_upload_bytes` as their body limit instead of the
    /// JSON API's `server.max_body_bytes`; rate limited like every `/api/*`
    /// call.
    pub files: OpenApiRouter<AppState>,
}

impl Routes {
    /// `payments`: whether WeChat Pay is on. Off, every `/api/pay/*` path
    /// answers 503 `payments_disabled`; the document is the same.
    pub fn new(payments: bool) -> Routes {
        Routes {
            open: OpenApiRouter::new()
                .merge(crate::health::routes())
                .merge(crate::openapi::routes())
                .merge(crate::metrics::routes())
                .merge(crate::pay::handlers::webhook_routes(payments)),
            limited: OpenApiRouter::new()
                .merge(crate::auth::handlers::routes())
                .merge(crate::chat::handlers::routes())
                .merge(crate::chat::stream::routes())
                .merge(crate::chat::ws::routes())
                .merge(crate::location::handlers::routes())
                .merge(crate::pay::handlers::routes(payments))
                .merge(crate::storage::handlers::routes())
                .merge(crate::voice::handlers::routes())
                .merge(crate::jobs::handlers::routes()),
            files: crate::storage::handlers::file_routes(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let cfg = state.config();
    let Routes {
        open,
        limited,
        files,
    } = Routes::new(state.payments().is_some());
    let rate_limit = middleware::from_fn_with_state(state.clone(), ratelimit::limit);
    let upload_limit = usize::try_from(cfg.storage.max_upload_bytes).unwrap_or(usize::MAX);
    let (router, doc) = OpenApiRouter::with_openapi(crate::openapi::root())
        .merge(open)
        .merge(limited.route_layer(rate_limit.clone()))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state.clone())
        .layer(RequestBodyLimitLayer::new(cfg.server.max_body_bytes))
        // File bodies: merged after the JSON body limit, with their own.
        .merge(
            files
                .layer(RequestBodyLimitLayer::new(upload_limit))
                .route_layer(rate_limit)
                .with_state(state.clone()),
        )
        .split_for_parts();
    let doc = crate::openapi::finish(doc);
    let timeout = Duration::from_secs(cfg.server.request_timeout_secs);
    router
        // GET /api/openapi.json serves the document of these very routes.
        .layer(Extension(crate::openapi::Served::new(&doc)))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(error::envelope))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // Path only: query strings may carry tokens.
                    tracing::info_span!("request", request_id = %id, method = %req.method(),
                        path = %req.uri().path(), user_id = tracing::field::Empty)
                })
                .on_request(())
                // 5xx answers are logged once, by the error type, with their cause
                .on_failure(())
                .on_response(|res: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_millis() as u64,
                        "response"
                    );
                }),
        )
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
}

fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
