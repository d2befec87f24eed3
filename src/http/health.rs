//! GET /api/health: a real query against the database and a storage check.
//! The deep checks are cached for [`DEEP_CHECK_TTL`]: any probe rate costs
//! at most one database query and one storage call per interval (requests
//! arriving while a check runs wait for it and share its result).

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
    let (db_ok, storage_ok) = state.health_cache().get(&state).await;
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

/// How long a deep check's result is reused.
pub const DEEP_CHECK_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The last deep checks: (when, on the app's clock; database ok, storage ok).
#[derive(Default)]
pub struct Cache {
    last: tokio::sync::Mutex<Option<(chrono::DateTime<chrono::Utc>, bool, bool)>>,
}

impl Cache {
    async fn get(&self, state: &AppState) -> (bool, bool) {
        // Held across the checks: concurrent probes wait and share them.
        let mut last = self.last.lock().await;
        let now = state.now();
        if let Some((at, db, storage)) = *last {
            let age = (now - at).to_std().unwrap_or_default();
            if now >= at && age < DEEP_CHECK_TTL {
                return (db, storage);
            }
        }
        let db = state.db().run(crate::db::ping).await;
        let storage = state.storage().health().await;
        if let Err(e) = &db {
            tracing::warn!(error = %e, "health: database check failed");
        }
        if let Err(e) = &storage {
            tracing::warn!(error = %e, "health: storage check failed");
        }
        let out = (db.is_ok(), storage.is_ok());
        *last = Some((now, out.0, out.1));
        out
    }
}
