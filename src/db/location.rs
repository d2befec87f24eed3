//! location_logs: reports, listing, erasure, retention.

use crate::db::sql::{params, Conn, Tx};

use crate::error::AppResult;
use crate::ids::UserId;

#[derive(Debug, Clone)]
pub struct Point {
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy: Option<f64>,
    pub coord_type: &'static str,
    pub recorded_at: i64,
    /// m/s, as wx.getLocation reports it
    pub speed: Option<f64>,
    /// metres
    pub altitude: Option<f64>,
    pub vertical_accuracy: Option<f64>,
    pub horizontal_accuracy: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct PointRow {
    pub id: i64,
    pub point: Point,
    pub created_at: i64,
}

pub fn insert_all(tx: &Tx<'_>, user_id: &UserId, points: &[Point], now: i64) -> AppResult<usize> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO location_logs (user_id, latitude, longitude, accuracy, coord_type, recorded_at,
                                    created_at, speed, altitude, vertical_accuracy, horizontal_accuracy)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for p in points {
        stmt.execute(params![
            user_id,
            p.latitude,
            p.longitude,
            p.accuracy,
            p.coord_type,
            p.recorded_at,
            now,
            p.speed,
            p.altitude,
            p.vertical_accuracy,
            p.horizontal_accuracy
        ])?;
    }
    Ok(points.len())
}

pub struct ListFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// (recorded_at, id) of the last item of the previous page
    pub after: Option<(i64, i64)>,
    pub limit: u32,
}

/// Newest first.
pub fn list(conn: &Conn, user_id: &UserId, f: &ListFilter) -> AppResult<Vec<PointRow>> {
    let (ts, id) = f.after.unwrap_or((i64::MAX, i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT id, latitude, longitude, accuracy, coord_type, recorded_at, created_at,
                speed, altitude, vertical_accuracy, horizontal_accuracy FROM location_logs
         WHERE user_id = ?1 AND recorded_at >= ?2 AND recorded_at <= ?3
           AND (recorded_at < ?4 OR (recorded_at = ?4 AND id < ?5))
         ORDER BY recorded_at DESC, id DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![
            user_id,
            f.from.unwrap_or(i64::MIN),
            f.to.unwrap_or(i64::MAX),
            ts,
            id,
            f.limit
        ],
        |r| {
            let coord: String = r.get(4)?;
            Ok(PointRow {
                id: r.get(0)?,
                point: Point {
                    latitude: r.get(1)?,
                    longitude: r.get(2)?,
                    accuracy: r.get(3)?,
                    coord_type: if coord == "wgs84" { "wgs84" } else { "gcj02" },
                    recorded_at: r.get(5)?,
                    speed: r.get(7)?,
                    altitude: r.get(8)?,
                    vertical_accuracy: r.get(9)?,
                    horizontal_accuracy: r.get(10)?,
                },
                created_at: r.get(6)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete_all(tx: &Tx<'_>, user_id: &UserId) -> AppResult<usize> {
    Ok(tx
        .prepare_cached("DELETE FROM location_logs WHERE user_id = ?1")?
        .execute([user_id])?)
}

/// Deletes up to `limit` points recorded before `cutoff`; returns how many.
pub fn purge_batch(tx: &Tx<'_>, cutoff: i64, limit: u32) -> AppResult<usize> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM location_logs WHERE id IN
               (SELECT id FROM location_logs WHERE recorded_at < ?1 LIMIT ?2)",
        )?
        .execute(crate::db::sql::params![cutoff, limit])?)
}
