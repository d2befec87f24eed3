//! The one JSON error shape: `AppError::into_response` only marks the
//! response; this middleware renders the body once, with the request id,
//! for our errors and for every framework error (404, 405, 413, timeouts,
//! panics) alike.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Map};

use crate::error::{ErrorCode, ErrorParts};

/// Middleware: gives every error response our JSON shape.
pub async fn envelope(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut res = next.run(req).await;
    let body = match res.extensions_mut().remove::<ErrorParts>() {
        Some(b) => b,
        None => {
            let status = res.status();
            let is_json = res
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            if !(status.is_client_error() || status.is_server_error()) || is_json {
                return res;
            }
            let (code, message) = framework_error(status);
            ErrorParts {
                code,
                message: message.into(),
                extra: Map::new(),
            }
        }
    };
    let mut error = Map::new();
    error.insert("code".into(), json!(body.code));
    error.insert("message".into(), json!(body.message));
    error.insert("request_id".into(), json!(request_id));
    error.extend(body.extra);
    let json = serde_json::to_vec(&json!({ "error": error })).expect("json");
    let (mut parts, _) = res.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(json))
}

fn framework_error(status: StatusCode) -> (ErrorCode, &'static str) {
    match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "request body too large"),
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (ErrorCode::UnsupportedMediaType, "unsupported content type")
        }
        StatusCode::UNAUTHORIZED => (ErrorCode::Unauthorized, "authentication required"),
        StatusCode::TOO_MANY_REQUESTS => (ErrorCode::RateLimited, "too many requests"),
        s if s.is_server_error() => (ErrorCode::Internal, "internal error"),
        _ => (ErrorCode::InvalidRequest, "invalid request"),
    }
}
