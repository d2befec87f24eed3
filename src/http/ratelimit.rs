//! Per-IP and per-user request limits (governor's GCRA), with the client IP
//! taken from X-Forwarded-For only when the peer is a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Cidr, RateLimitConfig};
use crate::error::{AppError, ErrorCode};
use crate::http::AppState;
use crate::ids::UserId;

type Keyed<K> = Option<DefaultKeyedRateLimiter<K>>;

pub struct RateLimits {
    per_ip: Keyed<IpAddr>,
    per_user: Keyed<UserId>,
    login_per_ip: Keyed<IpAddr>,
    location_per_user: Keyed<UserId>,
    trusted: Vec<Cidr>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Keyed<K> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

/// Which bucket a request counts in besides the per-IP one.
enum Bucket {
    Login,
    Location,
    General,
}

impl RateLimits {
    pub fn new(cfg: &RateLimitConfig, trusted_proxies: &[String]) -> Self {
        Self {
            per_ip: limiter(cfg.per_ip_per_minute),
            per_user: limiter(cfg.per_user_per_minute),
            login_per_ip: limiter(cfg.login_per_ip_per_minute),
            location_per_user: limiter(cfg.location_per_user_per_minute),
            trusted: trusted_proxies
                .iter()
                .filter_map(|p| Cidr::parse(p))
                .collect(),
        }
    }

    /// The client's address: the peer, unless the peer is a trusted proxy,
    /// in which case the right-most untrusted X-Forwarded-For entry.
    pub fn client_ip(&self, peer: IpAddr, xff: Option<&str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        xff.into_iter()
            .flat_map(|h| h.rsplit(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// Drops idle keys so the maps do not grow without bound.
    pub fn shrink(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.per_user {
            l.retain_recent();
        }
        if let Some(l) = &self.login_per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.location_per_user {
            l.retain_recent();
        }
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(l: &Keyed<K>, key: &K) -> Result<(), Duration> {
    match l {
        Some(l) => l
            .check_key(key)
            .map_err(|nu| nu.wait_time_from(DefaultClock::default().now())),
        None => Ok(()),
    }
}

fn limited(wait: Duration) -> Response {
    limited_error(wait).into_response()
}

fn limited_error(wait: Duration) -> AppError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!("too many requests; retry in {} s", secs.max(1)),
    )
    .with_retry_after(secs)
}

impl RateLimits {
    /// Counts one request of `user` in `per_user_per_minute`: what arrives
    /// outside HTTP requests (WebSocket chat frames) is limited alike.
    pub fn check_user(&self, user: &UserId) -> Result<(), AppError> {
        check(&self.per_user, user).map_err(limited_error)
    }
}

/// The connection's peer address and the request's X-Forwarded-For, from
/// which [`RateLimits::client_ip`] judges the client.
pub fn peer_and_forwarded(req: &Request) -> (IpAddr, Option<&str>) {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    (peer, xff)
}

/// Middleware for `/api/*` except health and the payment webhook.
pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let limits = state.limits();
    let (peer, xff) = peer_and_forwarded(&req);
    let ip = limits.client_ip(peer, xff);
    let path = req.uri().path();
    let bucket = if path.starts_with("/api/auth/") && req.method() == Method::POST {
        Bucket::Login
    } else if path.starts_with("/api/location") {
        Bucket::Location
    } else {
        Bucket::General
    };
    // The narrower bucket goes first so a request it refuses does not use up
    // the shared per-IP allowance.
    let user = bearer_user(&state, &mut req);
    let narrow = match (&bucket, &user) {
        (Bucket::Login, _) => check(&limits.login_per_ip, &ip),
        (Bucket::Location, Some(u)) => check(&limits.location_per_user, u),
        (Bucket::General, Some(u)) => check(&limits.per_user, u),
        (_, None) => Ok(()),
    };
    if let Err(wait) = narrow.and_then(|_| check(&limits.per_ip, &ip)) {
        return limited(wait);
    }
    next.run(req).await
}

/// The user of a validly signed bearer token; the auth extractor does the
/// full check (deleted users etc.) later.
fn bearer_user(state: &AppState, req: &mut Request) -> Option<UserId> {
    if let Some(token) = crate::auth::bearer_token(req.headers(), None) {
        let user = state.jwt().verify(token, state.now()).ok()?;
        // The auth extractor takes it from here instead of verifying again.
        req.extensions_mut()
            .insert(crate::auth::VerifiedHeaderToken(user.clone()));
        return Some(user);
    }
    // ?token= (WebSocket clients) counts for limits only; the extractors
    // decide for themselves whether they accept it.
    let token = crate::auth::bearer_token(req.headers(), req.uri().query())?;
    state.jwt().verify(token, state.now()).ok()
}

pub fn spawn_shrinker(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            state.limits().shrink();
        }
    });
}

pub type SharedLimits = Arc<RateLimits>;
