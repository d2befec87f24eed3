//! GET /api/openapi.json: the OpenAPI document, generated from the code.
//!
//! Each handler module annotates its handlers with `#[utoipa::path]` and
//! lists them in a `Doc` of its own (`#[derive(OpenApi)]`), so a module
//! owns its part of the document; [`document`] merges the parts and adds
//! what every operation shares: the bearer scheme and the error envelope.
//! `tests/it/openapi.rs` fails when the document and `app::ROUTES` (and the
//! router) disagree.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::app::AppState;

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// The error envelope: every error the API answers, whatever the route
/// (the payment webhook's answers to WeChat Pay excepted).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: `error::envelope` renders the body
pub struct ErrorBody {
    error: ErrorDetail,
}

/// Fields beyond these may be added per code (e.g. `allowed_content_types`).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ErrorDetail {
    /// Stable, snake_case: `invalid_request`, `unauthorized`, `quota_exhausted`, …
    code: String,
    /// Human readable; may change.
    message: String,
    /// The `X-Request-Id` of the request, also on every log line of it.
    request_id: String,
    /// 422 `validation`: the field at fault, e.g. `points[3].latitude`.
    #[schema(nullable = false)]
    field: Option<String>,
    /// 402 `quota_exhausted`: the price of one message.
    #[schema(nullable = false)]
    price_fen: Option<i64>,
    /// 402 `quota_exhausted`: the amounts a top-up may have.
    #[schema(nullable = false)]
    topup_amounts_fen: Option<Vec<i64>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mvp28",
        description = "Backend of a WeChat mini-program AI chat product. \
            Authenticated operations take `Authorization: Bearer <token>` from POST /api/auth/wechat. \
            Every error is `{\"error\": {\"code\", \"message\", \"request_id\", …}}`."
    ),
    paths(openapi_json),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The whole document: every module's part, plus the shared parts.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for part in [
        crate::health::Doc::openapi(),
        crate::metrics::Doc::openapi(),
        crate::auth::handlers::Doc::openapi(),
        crate::chat::handlers::Doc::openapi(),
        crate::chat::stream::Doc::openapi(),
        crate::chat::ws::Doc::openapi(),
        crate::location::handlers::Doc::openapi(),
        crate::storage::handlers::Doc::openapi(),
        crate::pay::handlers::Doc::openapi(),
        crate::voice::handlers::Doc::openapi(),
        crate::jobs::handlers::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    Shared.modify(&mut doc);
    doc
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(openapi_json))
}

/// The document (built once: it only depends on the code).
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        document()
            .to_json()
            .expect("the OpenAPI document serializes")
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}

/// Adds the bearer scheme, a 401 to every operation that requires it, and
/// the error envelope as the `default` answer of every operation that does
/// not document one of its own, so handlers only list the errors that are
/// specific to them.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut op.responses.responses;
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    responses.entry("401".into()).or_insert_with(|| {
                        error("`unauthorized`: missing, invalid or expired token").into()
                    });
                }
                responses
                    .entry("default".into())
                    .or_insert_with(|| error("An error (see the README's table of codes)").into());
            }
        }
    }
}
