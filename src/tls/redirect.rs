//! `server.http_bind`: the plain-HTTP listener beside HTTPS. It answers ACME
//! http-01 challenges (`/.well-known/acme-challenge/{token}`) and redirects
//! every other request to the same path over HTTPS (308, method kept).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// http-01 tokens of orders in flight: token -> key authorization.
pub type Http01Tokens = Arc<Mutex<HashMap<String, String>>>;

#[derive(Clone)]
struct Redirect {
    tokens: Http01Tokens,
    https_port: u16,
}

pub fn router(tokens: Http01Tokens, https_port: u16) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(redirect)
        .with_state(Redirect { tokens, https_port })
}

async fn challenge(State(r): State<Redirect>, Path(token): Path<String>) -> Response {
    let answer = r.tokens.lock().expect("tokens lock").get(&token).cloned();
    match answer {
        Some(key_authorization) => {
            tracing::info!("answered an ACME http-01 validation");
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                key_authorization,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such challenge\n").into_response(),
    }
}

async fn redirect(State(r): State<Redirect>, headers: HeaderMap, uri: Uri) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_only);
    let Some(host) = host else {
        return (
            StatusCode::BAD_REQUEST,
            "a Host header is required (use https://)\n",
        )
            .into_response();
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = match r.https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
        "use https://\n",
    )
        .into_response()
}

/// The host of a Host header without its port; None when it is not a
/// plausible host name or IP literal.
fn host_only(h: &str) -> Option<&str> {
    let host = if h.starts_with('[') {
        &h[..=h.find(']')?]
    } else {
        h.rsplit_once(':').map_or(h, |(host, _)| host)
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_only;

    #[test]
    fn hosts() {
        assert_eq!(host_only("api.example.com"), Some("api.example.com"));
        assert_eq!(host_only("api.example.com:80"), Some("api.example.com"));
        assert_eq!(host_only("[::1]:8080"), Some("[::1]"));
        assert_eq!(host_only("evil.com/x"), None);
        assert_eq!(host_only(""), None);
        assert_eq!(host_only("[::1"), None);
    }
}
