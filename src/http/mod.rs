//! HTTP: the router with its middleware stack, and the plumbing every
//! route shares (state, error envelope, JSON extraction, rate limits,
//! metrics, health, the OpenAPI document, pagination).

pub mod envelope;
pub mod health;
mod json;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod ratelimit;
mod state;

pub use json::ApiJson;
pub use state::AppState;

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

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
/// [`crate::http::openapi::document`] describes exactly what the app serves.
/// Adding a route: annotate the handler with `#[utoipa::path]` and register
/// it with `routes!` in its module's `routes()`.
pub struct Routes {
    /// Outside the rate limits: health, the document, metrics, the
    /// payment webhook (WeChat Pay calling, authenticated by its signature),
    /// the WeChat message push (`/api/wechat/callback`, signed likewise),
    /// and the operator console's HTML pages (`/admin/`).
    pub open: OpenApiRouter<AppState>,
    /// The API, under the per-IP and per-user rate limits.
    pub limited: OpenApiRouter<AppState>,
    /// The routes that carry file bodies (`POST /api/upload`, the local
    /// backend's token routes): their body limit is `storage.max_upload_bytes`
    /// (plus room for a multipart form's framing) instead of the JSON API's
    /// `server.max_body_bytes`; rate limited like every `/api/*` call.
    pub files: OpenApiRouter<AppState>,
}

impl Routes {
    /// `payments`: whether WeChat Pay is on. Off, every `/api/pay/*` path
    /// answers 503 `payments_disabled`; the document is the same.
    pub fn new(payments: bool) -> Routes {
        Routes {
            open: OpenApiRouter::new()
                .merge(crate::http::health::routes())
                .merge(crate::http::openapi::routes())
                .merge(crate::http::metrics::routes())
                .merge(crate::pay::handlers::webhook_routes(payments))
                .merge(crate::moderation::handlers::routes())
                .merge(crate::console::pages::routes()),
            limited: OpenApiRouter::new()
                .merge(crate::auth::handlers::routes())
                .merge(crate::chat::handlers::routes())
                .merge(crate::chat::stream::routes())
                .merge(crate::chat::ws::routes())
                .merge(crate::location::handlers::routes())
                .merge(crate::pay::handlers::routes(payments))
                .merge(crate::storage::handlers::routes())
                .merge(crate::voice::handlers::routes())
                .merge(crate::jobs::handlers::routes())
                .merge(crate::console::handlers::routes()),
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
    let upload_limit = usize::try_from(
        cfg.storage
            .max_upload_bytes
            .saturating_add(crate::storage::handlers::MULTIPART_OVERHEAD),
    )
    .unwrap_or(usize::MAX);
    let (router, doc) = OpenApiRouter::with_openapi(crate::http::openapi::root())
        .merge(open)
        .merge(limited.route_layer(rate_limit.clone()))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http::metrics::track,
        ))
        .route_layer(middleware::from_fn(record_route))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state.clone())
        .layer(RequestBodyLimitLayer::new(cfg.server.max_body_bytes))
        // File bodies: merged after the JSON body limit, with their own.
        .merge(
            files
                .layer(RequestBodyLimitLayer::new(upload_limit))
                // the Multipart extractor's own 2 MB default would cut
                // uploads short of storage.max_upload_bytes
                .layer(axum::extract::DefaultBodyLimit::disable())
                .route_layer(rate_limit)
                .route_layer(middleware::from_fn(record_route))
                .with_state(state.clone()),
        )
        .split_for_parts();
    let doc = crate::http::openapi::finish(doc);
    let timeout = Duration::from_secs(cfg.server.request_timeout_secs);
    router
        // GET /api/openapi.json serves the document of these very routes.
        .layer(Extension(crate::http::openapi::Served::new(&doc)))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(envelope::envelope))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // The route template, recorded once routing matched it
                    // (`record_route`): never the path, whose segments may be
                    // signed-URL tokens, nor the query. Methods outside the
                    // standard set are logged as "other".
                    tracing::info_span!("request", request_id = %id,
                        method = crate::http::metrics::method_label(req.method()),
                        route = tracing::field::Empty, user_id = tracing::field::Empty)
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

/// Records the matched route template (`/api/upload/local/{token}`, never
/// the token) on the request's span, for the access log.
async fn record_route(req: Request, next: axum::middleware::Next) -> Response {
    if let Some(p) = req.extensions().get::<axum::extract::MatchedPath>() {
        tracing::Span::current().record("route", p.as_str());
    }
    next.run(req).await
}

fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
