//! One error type for every handler. `AppError::into_response` only marks the
//! response; the `envelope` middleware renders the JSON body once, with the
//! request id, for our errors and for every framework error (404, 405, 413,
//! timeouts, panics) alike.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

crate::str_enum!(
    /// The stable `code` of every error the API answers (the README's
    /// table); clients switch on it, so a variant's text never changes.
    pub ErrorCode {
        InvalidRequest = "invalid_request",
        Validation = "validation",
        UnknownModel = "unknown_model",
        Unauthorized = "unauthorized",
        InvalidCode = "invalid_code",
        QuotaExhausted = "quota_exhausted",
        Forbidden = "forbidden",
        NotFound = "not_found",
        MethodNotAllowed = "method_not_allowed",
        Conflict = "conflict",
        UploadIncomplete = "upload_incomplete",
        InProgress = "in_progress",
        PayloadTooLarge = "payload_too_large",
        UnsupportedMediaType = "unsupported_media_type",
        Timeout = "timeout",
        RateLimited = "rate_limited",
        UpstreamError = "upstream_error",
        GenerationFailed = "generation_failed",
        UpstreamUnavailable = "upstream_unavailable",
        UpstreamBusy = "upstream_busy",
        BudgetExhausted = "budget_exhausted",
        PaymentsDisabled = "payments_disabled",
        VoiceDisabled = "voice_disabled",
        Unavailable = "unavailable",
        Internal = "internal",
    }
);

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Extra fields merged into the `error` object (e.g. price_fen on 402).
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
    /// Internal cause: logged, never sent.
    pub source: Option<anyhow::Error>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
            source: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    pub fn validation(field: &str, message: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Validation,
            format!("{field}: {message}"),
        );
        e.extra.insert("field".into(), json!(field));
        e
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        );
        e.source = Some(source.into());
        e
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) {
                let mut err = Self::unavailable(ErrorCode::Unavailable, "database busy, retry");
                err.source = Some(e.into());
                return err.with_retry_after(1);
            }
        }
        Self::internal(e)
    }
}

impl From<r2d2::Error> for AppError {
    fn from(e: r2d2::Error) -> Self {
        let mut err = Self::unavailable(ErrorCode::Unavailable, "database busy, retry");
        err.source = Some(e.into());
        err.with_retry_after(1)
    }
}

/// Rendered into the body by [`envelope`].
#[derive(Clone, Debug)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Some(src) = &self.source {
            tracing::error!(code = %self.code, error = %format!("{src:#}"), "request failed");
        } else if self.status.is_server_error() {
            tracing::warn!(code = %self.code, message = %self.message, "request failed");
        }
        let mut res = self.status.into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res.extensions_mut().insert(ErrorBody {
            code: self.code,
            message: self.message,
            extra: self.extra,
        });
        res
    }
}

/// Middleware: gives every error response our JSON shape.
pub async fn envelope(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut res = next.run(req).await;
    let body = match res.extensions_mut().remove::<ErrorBody>() {
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
            ErrorBody {
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

/// `Json` whose rejections speak our error shape: syntax errors and unknown
/// fields are 400 `invalid_request`; missing or mistyped fields are 422
/// `validation` naming the field.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> AppError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            AppError::invalid_request(format!("malformed JSON: {}", inner_message(&e)))
        }
        JsonRejection::JsonDataError(e) => {
            let msg = inner_message(&e);
            if msg.contains("unknown field") {
                AppError::invalid_request(msg)
            } else {
                let field = field_of(&msg);
                let detail = msg
                    .strip_prefix(&format!("{field}: "))
                    .unwrap_or(&msg)
                    .to_string();
                AppError::validation(&field, detail)
            }
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "request body too large",
            )
        }
        other => AppError::invalid_request(other.body_text()),
    }
}

fn inner_message(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

/// serde_path_to_error style messages start with the path ("points[2].latitude: …");
/// serde's own say "missing field `x`".
fn field_of(msg: &str) -> String {
    if let Some(start) = msg.find("missing field `") {
        let rest = &msg[start + 15..];
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    match msg.split_once(": ") {
        Some((path, _)) if !path.contains(' ') && path != "." => path.to_string(),
        _ => "body".to_string(),
    }
}
