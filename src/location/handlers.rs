//! POST /api/location/report, GET /api/location, DELETE /api/location.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::validate::{parse_report, parse_time};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::clock::{rfc3339, to_ms};
use crate::db::location::{self as repo, ListFilter};
use crate::error::{ApiJson, AppError, AppResult};
use crate::pagination::{cursor, page, PageQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/location/report", post(report))
        .route("/api/location", get(list).delete(erase))
}

async fn report(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<Value>,
) -> AppResult<Json<Value>> {
    let now = to_ms(state.now());
    let points = parse_report(&body, now)?;
    let accepted = state
        .db()
        .write(move |tx| repo::insert_all(tx, &user.id, &points, now))
        .await?;
    Ok(Json(json!({ "accepted": accepted })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    from: Option<String>,
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

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> AppResult<Json<Value>> {
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
    Ok(Json(page(
        rows,
        limit,
        |r| cursor(r.point.recorded_at, &r.id.to_string()),
        |r| {
            json!({
                "id": r.id,
                "latitude": r.point.latitude,
                "longitude": r.point.longitude,
                "accuracy": r.point.accuracy,
                "coord_type": r.point.coord_type,
                "recorded_at": rfc3339(r.point.recorded_at),
                "created_at": rfc3339(r.created_at),
            })
        },
    )))
}

async fn erase(State(state): State<AppState>, user: AuthUser) -> AppResult<StatusCode> {
    let n = state
        .db()
        .write(move |tx| repo::delete_all(tx, &user.id))
        .await?;
    tracing::info!(deleted = n, "location history erased");
    Ok(StatusCode::NO_CONTENT)
}
