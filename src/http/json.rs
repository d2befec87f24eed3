//! JSON request bodies in our error shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{AppError, ErrorCode};

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
