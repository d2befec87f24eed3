//! POST /api/location/report, GET /api/location, DELETE /api/location.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::validate::{parse_report, parse_time};
use crate::auth::AuthUser;
use crate::clock::{rfc3339, to_ms};
use crate::db::location::{self as repo, ListFilter};
use crate::error::{AppError, AppResult};
use crate::http::pagination::{cursor, page, PageQuery};
use crate::http::ApiJson;
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .routes(routes!(list, erase))
}

// The report body is parsed by `validate::parse_report` (to name the
// index at fault); these types document it.

/// One point. Unknown fields are refused.
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
    /// `gcj02` (default) or `wgs84`
    #[schema(nullable = false)]
    coord_type: Option<String>,
    /// RFC 3339 or unix milliseconds; default: now
    #[schema(value_type = Object, nullable = false)]
    recorded_at: Option<Value>,
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

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Points stored
    accepted: usize,
}

#[derive(Serialize, ToSchema)]
pub struct PointOut {
    id: i64,
    latitude: f64,
    longitude: f64,
    accuracy: Option<f64>,
    coord_type: &'static str,
    recorded_at: String,
    created_at: String,
}

/// Newest first.
#[derive(Serialize, ToSchema)]
pub struct LocationPage {
    items: Vec<PointOut>,
    next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/api/location/report", tag = "location", security(("bearer" = [])),
    request_body = LocationReport,
    responses((status = 200, description = "Stored", body = Accepted)))]
async fn report(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<Json<Accepted>> {
    let now = to_ms(state.now());
    let points = parse_report(&body, now)?;
    let accepted = state
        .db()
        .write(move |tx| repo::insert_all(tx, &user.id, &points, now))
        .await?;
    Ok(Json(Accepted { accepted }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// 1-100, default 20
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
    /// Recorded at or after: RFC 3339 or unix milliseconds
    from: Option<String>,
    /// Recorded at or before: RFC 3339 or unix milliseconds
    to: Option<String>,
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<i64>, AppError> {
    v.map(|s| {
        let value = s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(s));
        parse_time(&value).ok_or_else(|| {
            AppError::validation(name, "must be an RFC 3339 time or unix milliseconds")
        })
    })
    .transpose()
}

#[utoipa::path(get, path = "/api/location", tag = "location", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "The caller's points", body = LocationPage)))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<LocationPage>> {
    let pq = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let limit = pq.limit()?;
    let after = match pq.cursor_parts()? {
        Some((ts, id)) => Some((
            ts,
            id.parse()
                .map_err(|_| AppError::validation("cursor", "not a cursor this server issued"))?,
        )),
        None => None,
    };
    let filter = ListFilter {
        from: time_param("from", q.from.as_deref())?,
        to: time_param("to", q.to.as_deref())?,
        after,
        limit: limit + 1,
    };
    let rows = state
        .db()
        .run(move |c| repo::list(c, &user.id, &filter))
        .await?;
    let (rows, next_cursor) = page(rows, limit, |r| {
        cursor(r.point.recorded_at, &r.id.to_string())
    });
    Ok(Json(LocationPage {
        items: rows
            .into_iter()
            .map(|r| PointOut {
                id: r.id,
                latitude: r.point.latitude,
                longitude: r.point.longitude,
                accuracy: r.point.accuracy,
                coord_type: r.point.coord_type,
                recorded_at: rfc3339(r.point.recorded_at),
                created_at: rfc3339(r.created_at),
            })
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(delete, path = "/api/location", tag = "location", security(("bearer" = [])),
    responses((status = 204, description = "Every point of the caller erased")))]
async fn erase(State(state): State<AppState>, user: AuthUser) -> AppResult<StatusCode> {
    let n = state
        .db()
        .write(move |tx| repo::delete_all(tx, &user.id))
        .await?;
    tracing::info!(deleted = n, "location history erased");
    Ok(StatusCode::NO_CONTENT)
}
