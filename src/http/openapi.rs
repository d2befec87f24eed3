//! GET /api/openapi.json: the OpenAPI document, generated from the code.
//!
//! Each handler carries its documentation (`#[utoipa::path]`) and each
//! module registers its handlers once, with `routes!` into an
//! `OpenApiRouter` (`fn routes()`), so a route's path, handler and entry in
//! the document are written in one place. `app::Routes` gathers the
//! modules' routes; `app::router` serves them and, from the same
//! registration, the document, completed by [`finish`] with what every
//! operation shares: the bearer scheme and the error envelope. [`document`]
//! builds the same document without a server.

use axum::extract::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// The error envelope: every error the API answers, whatever the route
/// (the payment webhook's answers to WeChat Pay excepted).
// `error::envelope` renders it for HTTP answers (with a code's extra
// fields); the chat stream sends it as its `error` event
// (`chat::stream::error_body`).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Fields beyond these may be added per code (e.g. `allowed_content_types`).
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: `invalid_request`, `unauthorized`, `quota_exhausted`, …
    pub code: crate::error::ErrorCode,
    /// Human readable; may change.
    pub message: String,
    /// The `X-Request-Id` of the request, also on every log line of it.
    pub request_id: String,
    /// 422 `validation`: the field at fault, e.g. `points[3].latitude`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// 402 `quota_exhausted`: the price of one message.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub price_fen: Option<i64>,
    /// 402 `quota_exhausted`: the amounts a top-up may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub topup_amounts_fen: Option<Vec<i64>>,
}

/// The document's root: what no route contributes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mvp28",
        description = "Backend of a WeChat mini-program AI chat product. \
            Authenticated operations take `Authorization: Bearer <token>` from POST /api/auth/wechat. \
            Every error is `{\"error\": {\"code\", \"message\", \"request_id\", …}}`."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The root the app's routes are merged into.
pub fn root() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole document, without a server: the routes `app::router` serves,
/// registered the same way, then [`finish`]ed.
pub fn document() -> utoipa::openapi::OpenApi {
    // Whether payments are on changes what /api/pay/* answers, not the document.
    let crate::http::Routes {
        open,
        limited,
        files,
    } = crate::http::Routes::new(true);
    let mut doc = root();
    for part in [open, limited, files] {
        doc.merge(part.into_openapi());
    }
    finish(doc)
}

/// Completes the routes' document: the version, and what every operation
/// shares (see [`Shared`]).
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    Shared.modify(&mut doc);
    doc
}

/// The served document, rendered once when the router is built and handed
/// to [`openapi_json`] as a request extension (the document includes that
/// route, so it only exists once the routes are registered).
#[derive(Clone)]
pub struct Served(Bytes);

impl Served {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Served {
        Served(
            doc.to_json()
                .expect("the OpenAPI document serializes")
                .into(),
        )
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// The document (rendered once, when the router is built).
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json(Extension(Served(json)): Extension<Served>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json)
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
        // The operator console's admin API (`crate::console`).
        components.add_security_scheme(
            crate::console::handlers::ADMIN_TOKEN,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("mvp28adm_… (mvp28 admin create-token)")
                    .build(),
            ),
        );
        components.add_security_scheme(
            crate::console::handlers::ADMIN_SESSION,
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    crate::console::auth::COOKIE,
                    "Admin session from POST /api/admin/login; state-changing requests also send X-CSRF-Token",
                ),
            )),
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
