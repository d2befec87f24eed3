//! POST /api/upload/presign, POST /api/upload/commit, GET /api/media/{id}
//! (bearer, JSON) and the local backend's token routes
//! PUT /api/upload/local/{token}, GET /api/media/local/{token} (no bearer:
//! the signed token is the authorization).

use axum::body::Body;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::service::{self, PresignRequest};
use super::token::Grant;
use super::views::MediaResponse;
use super::{Storage, WriteError};
use crate::auth::AuthUser;
use crate::clock::{rfc3339, to_ms};
use crate::db;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::openapi::ErrorBody;
use crate::http::ApiJson;
use crate::http::AppState;
use crate::ids::MediaId;

/// Bearer routes; mounted under the rate-limited router.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(presign))
        .routes(routes!(commit))
        .routes(routes!(media))
}

/// The local backend's token routes. They carry file bodies: `app::router`
/// mounts them outside the JSON API's body limit, with their own.
pub fn file_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(local_put))
        .routes(routes!(local_get))
}

/// Room for a multipart form's framing and small fields beyond the file
/// itself, in the file routes' body limit.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// `wx.uploadFile`'s form, for the document.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct UploadForm {
    /// The file (`wx.uploadFile`'s `name`, default `file`)
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(post, path = "/api/upload", tag = "uploads", security(("bearer" = [])),
    description = "multipart/form-data as `wx.uploadFile` sends it: the file in the part named `file` \
        (its Content-Type, or the file name's extension when that is missing or `application/octet-stream`); \
        other form fields are allowed and ignored. Streamed to storage, checked like a presign, committed in one step.",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored media", body = MediaResponse),
        (status = 413, description = "`payload_too_large`: over `storage.max_upload_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not multipart, or a type not allowed", body = ErrorBody),
        (status = 422, description = "`validation`: no `file` part, or an empty one", body = ErrorBody),
    ))]
async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    form: Result<Multipart, MultipartRejection>,
) -> AppResult<Json<MediaResponse>> {
    let mut form = form.map_err(|e| {
        AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "expected multipart/form-data with a `file` part: {}",
                e.body_text()
            ),
        )
    })?;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(AppError::validation(
                    "file",
                    "is required (a form part named `file`)",
                ))
            }
            Err(e) => return Err(multipart_error(e)),
        };
        // wx.uploadFile's formData fields come as parts without a file
        // name; they are allowed and not needed.
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("upload").to_string();
        let content_type = service::part_content_type(field.content_type(), &filename);
        let mut field = field;
        let stored =
            service::upload_stream(&state, &user, &filename, &content_type, &mut field).await;
        if stored.is_err() {
            // Read what is left (bounded by the body limit) before answering:
            // a client still sending when the answer comes (wx.uploadFile,
            // fetch) sees a broken connection instead of our error.
            while let Ok(Some(_)) = field.chunk().await {}
            drop(field);
            while let Ok(Some(mut rest)) = form.next_field().await {
                while let Ok(Some(_)) = rest.chunk().await {}
            }
        }
        return Ok(Json(stored?));
    }
}

fn multipart_error(e: MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the upload is larger than allowed",
        )
    } else {
        AppError::invalid_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PresignBody {
    filename: String,
    /// One of `storage.allowed_content_types`
    #[schema(example = "image/png")]
    content_type: String,
    /// Bytes, 1..=`storage.max_upload_bytes`
    #[schema(minimum = 1)]
    size: i64,
}

/// Where and how to PUT the file.
#[derive(Serialize, ToSchema)]
pub struct PresignResponse {
    upload_id: MediaId,
    /// Always `PUT`
    method: &'static str,
    url: String,
    /// Headers the PUT must carry
    headers: Map<String, Value>,
    expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct Received {
    /// Bytes stored
    received: u64,
}

#[utoipa::path(post, path = "/api/upload/presign", tag = "uploads", security(("bearer" = [])),
    request_body = PresignBody,
    responses(
        (status = 200, description = "An upload URL", body = PresignResponse),
        (status = 403, description = "`storage_quota_exceeded`: past `storage.max_bytes_per_user` or `storage.max_pending_uploads_per_user`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `storage.max_upload_bytes`", body = ErrorBody),
    ))]
async fn presign(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<PresignBody>,
) -> AppResult<Json<PresignResponse>> {
    let p = service::presign(
        &state,
        &user,
        PresignRequest {
            filename: body.filename,
            content_type: body.content_type,
            size: body.size,
        },
    )
    .await?;
    let headers: Map<String, Value> = p
        .upload
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(Json(PresignResponse {
        upload_id: p.upload_id,
        method: "PUT",
        url: p.upload.url,
        headers,
        expires_at: rfc3339(to_ms(p.upload.expires_at)),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    upload_id: MediaId,
}

#[utoipa::path(post, path = "/api/upload/commit", tag = "uploads", security(("bearer" = [])),
    request_body = CommitBody,
    responses(
        (status = 200, description = "The committed media (repeatable)", body = MediaResponse),
        (status = 404, description = "`not_found`: not the caller's upload", body = ErrorBody),
        (status = 409, description = "`conflict`: the object is missing or has another size", body = ErrorBody),
    ))]
async fn commit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CommitBody>,
) -> AppResult<Json<MediaResponse>> {
    Ok(Json(service::commit(&state, &user, &body.upload_id).await?))
}

#[utoipa::path(get, path = "/api/media/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "Media id (the upload id)")),
    responses(
        (status = 200, description = "The media with a fresh signed URL", body = MediaResponse),
        (status = 404, description = "`not_found`: not the caller's media", body = ErrorBody),
    ))]
async fn media(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<MediaId>,
) -> AppResult<Json<MediaResponse>> {
    Ok(Json(service::get(&state, &user, &id).await?))
}

fn forbidden(message: &str) -> AppError {
    AppError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

fn too_large(limit: u64) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("this upload is granted {limit} bytes at most"),
    )
}

/// The token's grant; 404 when storage is S3 (no such route there).
fn grant(state: &AppState, token: &str) -> AppResult<Grant> {
    match state.storage().verify_local(token, state.now()) {
        None => Err(AppError::not_found("route")),
        Some(Ok(g)) => Ok(g),
        Some(Err(why)) => Err(forbidden(why)),
    }
}

#[utoipa::path(put, path = "/api/upload/local/{token}", tag = "uploads",
    description = "Local storage only: the `url` of a presign. The signed token is the authorization.",
    params(("token" = String, Path, description = "Signed upload token")),
    request_body(content = String, content_type = "application/octet-stream",
        description = "The file, sent with the declared Content-Type"),
    responses(
        (status = 200, description = "Stored", body = Received),
        (status = 403, description = "`forbidden`: bad or expired token", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
    ))]
async fn local_put(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<Json<Received>> {
    let Grant::Put {
        key,
        size,
        content_type,
        ..
    } = grant(&state, &token)?
    else {
        return Err(forbidden("this link does not grant uploads"));
    };
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    if sent_type.as_deref() != Some(content_type.as_str()) {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("this upload must be sent with Content-Type: {content_type}"),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > size) {
        return Err(too_large(size));
    }
    let k = key.clone();
    let row = state
        .db()
        .run(move |c| db::media::find_by_key(c, &k))
        .await?;
    match row {
        // Swept, or its account deleted: nothing may land there any more.
        None => return Err(AppError::not_found("upload")),
        Some(m) if m.committed => {
            return Err(AppError::conflict(
                "this upload is already committed; request a new one",
            ))
        }
        Some(_) => {}
    }
    match state.storage().write_stream(&key, size, body).await {
        Ok(n) => Ok(Json(Received { received: n })),
        Err(WriteError::TooLarge) => Err(too_large(size)),
        Err(WriteError::Body(e)) => {
            if is_length_limit(&e) {
                Err(too_large(size))
            } else {
                Err(AppError::invalid_request("the upload body was interrupted"))
            }
        }
        Err(WriteError::Store(e)) => Err(AppError::internal(e)),
    }
}

pub(super) fn is_length_limit(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = s.source();
    }
    false
}

#[utoipa::path(get, path = "/api/media/local/{token}", tag = "uploads",
    description = "Local storage only: a media `url`. The signed token is the authorization.",
    params(("token" = String, Path, description = "Signed download token")),
    responses(
        (status = 200, description = "The file, with its stored Content-Type", content_type = "application/octet-stream", body = String),
        (status = 403, description = "`forbidden`: bad or expired token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn local_get(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let Grant::Get {
        key, content_type, ..
    } = grant(&state, &token)?
    else {
        return Err(forbidden("this link does not grant downloads"));
    };
    // A link handed out before content security blocked the image stops
    // working too.
    let k = key.clone();
    if let Some(m) = state
        .db()
        .run(move |c| db::media::find_by_key(c, &k))
        .await?
    {
        crate::moderation::images::check_download(&state, &m)?;
    }
    let object = match state.storage().read(&key).await {
        Ok(o) => o,
        Err(super::StoreError::NotFound { .. }) => return Err(AppError::not_found("media")),
        Err(e) => return Err(AppError::internal(e)),
    };
    let len = object.meta.size;
    let mut res = Storage::body_of(object).into_response();
    let h = res.headers_mut();
    // The type was allowlisted at upload; never let a browser sniff
    // another one or run the file as a page of our origin.
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    Ok(res)
}
