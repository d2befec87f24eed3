//! POST /api/location/report, GET /api/location, DELETE /api/location.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::service::{self, ListQuery};
use super::views::{Accepted, LocationPage};
use crate::auth::AuthUser;
use crate::error::AppResult;
use crate::http::ApiJson;
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .routes(routes!(list, erase))
}

// The report body is parsed by `validate::parse_report` (to name the
// index at fault); these types document it.

/// One point: ours, or `wx.getLocation`'s success object as it is (its
/// `speed`, `altitude`, `verticalAccuracy`, `horizontalAccuracy` are stored,
/// `errMsg` ignored). Any other field is refused.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct PointIn {
    #[schema(minimum = -90, maximum = 90)]
    latitude: f64,
    #[schema(minimum = -180, maximum = 180)]
    longitude: f64,
    /// Metres, >= 0
    #[schema(nullable = false, minimum = 0)]
    accuracy: Option<f64>,
    /// `wgs84` (default, what `wx.getLocation` returns unless asked) or `gcj02`
    #[schema(nullable = false)]
    coord_type: Option<String>,
    /// RFC 3339 or unix milliseconds; default: now
    #[schema(value_type = Object, nullable = false)]
    recorded_at: Option<Value>,
    /// m/s (wx.getLocation); negative means unknown
    #[schema(nullable = false)]
    speed: Option<f64>,
    /// metres (wx.getLocation)
    #[schema(nullable = false)]
    altitude: Option<f64>,
    /// metres (wx.getLocation); negative means unknown
    #[schema(nullable = false)]
    #[serde(rename = "verticalAccuracy")]
    vertical_accuracy: Option<f64>,
    /// metres (wx.getLocation); negative means unknown
    #[schema(nullable = false)]
    #[serde(rename = "horizontalAccuracy")]
    horizontal_accuracy: Option<f64>,
    /// wx.getLocation's status text; ignored
    #[schema(nullable = false)]
    #[serde(rename = "errMsg")]
    err_msg: Option<String>,
}

/// 1-100 points, stored all or nothing.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct PointBatch {
    #[schema(min_items = 1, max_items = 100)]
    points: Vec<PointIn>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
#[serde(untagged)]
pub enum LocationReport {
    One(PointIn),
    Batch(PointBatch),
}

#[utoipa::path(post, path = "/api/location/report", tag = "location", security(("bearer" = [])),
    request_body = LocationReport,
    responses((status = 200, description = "Stored", body = Accepted)))]
async fn report(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<Json<Accepted>> {
    Ok(Json(service::report(&state, &user.id, &body).await?))
}

#[utoipa::path(get, path = "/api/location", tag = "location", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "The caller's points", body = LocationPage)))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<LocationPage>> {
    Ok(Json(service::list(&state, &user.id, q).await?))
}

#[utoipa::path(delete, path = "/api/location", tag = "location", security(("bearer" = [])),
    responses((status = 204, description = "Every point of the caller erased")))]
async fn erase(State(state): State<AppState>, user: AuthUser) -> AppResult<StatusCode> {
    service::erase(&state, &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
