//! GET /api/health: a real query against the database and a storage check.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` (with status 503) when a dependency fails.
    #[schema(example = "ok")]
    status: &'static str,
    version: &'static str,
    /// `ok` or `error`
    db: &'static str,
    /// `ok` or `error`
    storage: &'static str,
    /// `dev` while the dev login or the echo model is on (never silently:
    /// a deployment gets there only by `auth.dev_login` / `llm.allow_echo`),
    /// else `prod`.
    #[schema(example = "prod")]
    mode: &'static str,
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

#[utoipa::path(get, path = "/api/health", tag = "meta",
    responses(
        (status = 200, description = "Every dependency answers", body = Health),
        (status = 503, description = "A dependency failed (`degraded`)", body = Health),
    ))]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.db().run(crate::db::ping).await;
    let storage = state.storage().health().await;
    let db_ok = db.is_ok();
    let storage_ok = storage.is_ok();
    if let Err(e) = &db {
        tracing::warn!(error = %e, "health: database check failed");
    }
    if let Err(e) = &storage {
        tracing::warn!(error = %e, "health: storage check failed");
    }
    let ok = db_ok && storage_ok;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        db: if db_ok { "ok" } else { "error" },
        storage: if storage_ok { "ok" } else { "error" },
        mode: state.config().mode_name(),
    };
    (status, Json(body))
}
