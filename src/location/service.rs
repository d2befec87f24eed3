//! Location reports: store, list, erase, and the retention sweep.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::validate::{parse_report, parse_time};
use super::views::{Accepted, LocationPage, PointOut};
use crate::clock::{rfc3339, to_ms};
use crate::db;
use crate::db::location::{self as repo, ListFilter};
use crate::error::{AppError, AppResult};
use crate::http::pagination::{cursor, page, PageQuery};
use crate::http::AppState;
use crate::ids::UserId;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1-100, default 20
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page
    pub cursor: Option<String>,
    /// Recorded at or after: RFC 3339 or unix milliseconds
    pub from: Option<String>,
    /// Recorded at or before: RFC 3339 or unix milliseconds
    pub to: Option<String>,
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

/// POST /api/location/report: one point or a batch, all or nothing.
pub async fn report(state: &AppState, user_id: &UserId, body: &Value) -> AppResult<Accepted> {
    let now = to_ms(state.now());
    let points = parse_report(body, now)?;
    let uid = user_id.clone();
    let accepted = state
        .db()
        .write(move |tx| repo::insert_all(tx, &uid, &points, now))
        .await?;
    Ok(Accepted { accepted })
}

/// GET /api/location: the user's points, newest first.
pub async fn list(state: &AppState, user_id: &UserId, q: ListQuery) -> AppResult<LocationPage> {
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
    let uid = user_id.clone();
    let rows = state
        .db()
        .run(move |c| repo::list(c, &uid, &filter))
        .await?;
    let (rows, next_cursor) = page(rows, limit, |r| {
        cursor(r.point.recorded_at, &r.id.to_string())
    });
    Ok(LocationPage {
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
                speed: r.point.speed,
                altitude: r.point.altitude,
                vertical_accuracy: r.point.vertical_accuracy,
                horizontal_accuracy: r.point.horizontal_accuracy,
            })
            .collect(),
        next_cursor,
    })
}

/// DELETE /api/location: every point of the user.
pub async fn erase(state: &AppState, user_id: &UserId) -> AppResult<()> {
    let uid = user_id.clone();
    let n = state
        .db()
        .write(move |tx| repo::delete_all(tx, &uid))
        .await?;
    tracing::info!(deleted = n, "location history erased");
    Ok(())
}

const PURGE_BATCH: u32 = 5000;

/// Deletes points older than `location.retention_days`; returns the count.
pub async fn purge_expired(state: &AppState) -> AppResult<usize> {
    let days = i64::from(state.config().location.retention_days);
    let cutoff = to_ms(state.now() - chrono::Duration::days(days));
    let mut n = 0;
    loop {
        // One bounded write at a time, so a large purge never holds the
        // writer (and every chat turn queued behind it) for long.
        let deleted = state
            .db()
            .write(move |tx| db::location::purge_batch(tx, cutoff, PURGE_BATCH))
            .await?;
        n += deleted;
        if deleted < PURGE_BATCH as usize {
            break;
        }
    }
    tracing::info!(
        deleted = n,
        retention_days = days,
        "location retention sweep"
    );
    Ok(n)
}

/// Runs the retention sweep hourly (the caller runs the first one at start).
pub fn spawn_retention(state: AppState) {
    tokio::spawn(async move {
        let hour = Duration::from_secs(3600);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
        loop {
            tick.tick().await;
            // once cluster-wide: the instance holding the lease sweeps
            match crate::ops::cluster::lease(state.db(), "location_retention", hour / 2).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "location retention lease failed");
                    continue;
                }
            }
            if let Err(e) = purge_expired(&state).await {
                tracing::warn!(error = %e, "location retention sweep failed");
            }
        }
    });
}
