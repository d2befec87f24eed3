//! One error type for the whole crate, with a stable code and a status.
//! `AppError::into_response` only marks the response with its parts;
//! `http::envelope` renders the JSON body once, with the request id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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
        StorageQuotaExceeded = "storage_quota_exceeded",
        UnsupportedMediaType = "unsupported_media_type",
        Timeout = "timeout",
        RateLimited = "rate_limited",
        TooManyJobs = "too_many_jobs",
        UpstreamError = "upstream_error",
        GenerationFailed = "generation_failed",
        UpstreamUnavailable = "upstream_unavailable",
        UpstreamBusy = "upstream_busy",
        BudgetExhausted = "budget_exhausted",
        PaymentsDisabled = "payments_disabled",
        VoiceDisabled = "voice_disabled",
        ContentBlocked = "content_blocked",
        ModerationUnavailable = "moderation_unavailable",
        /// An image whose content check has no verdict yet (409, Retry-After).
        ModerationPending = "moderation_pending",
        /// A WeChat message push whose signature is wrong (401).
        InvalidSignature = "invalid_signature",
        Unavailable = "unavailable",
        Internal = "internal",
        /// Admin API: a session's state-changing request without its CSRF token.
        CsrfFailed = "csrf_failed",
        /// Admin API: a debit would take a balance below what is held.
        InsufficientBalance = "insufficient_balance",
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

impl From<crate::db::sql::DbError> for AppError {
    fn from(e: crate::db::sql::DbError) -> Self {
        if e.is_unavailable() {
            let mut err = Self::unavailable(ErrorCode::Unavailable, "database unavailable, retry");
            err.source = Some(e.into());
            return err.with_retry_after(1);
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

/// What an error response carries until `http::envelope` renders it.
#[derive(Clone, Debug)]
pub struct ErrorParts {
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
        res.extensions_mut().insert(ErrorParts {
            code: self.code,
            message: self.message,
            extra: self.extra,
        });
        res
    }
}
