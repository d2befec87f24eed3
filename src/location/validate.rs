//! Turns a report body into points, naming the field and index at fault.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::db::location::Point;
use crate::error::AppError;

pub const MAX_POINTS: usize = 100;
/// Clocks drift; more than this ahead of ours is a bad timestamp, not drift.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

const POINT_FIELDS: &[&str] = &[
    "latitude",
    "longitude",
    "accuracy",
    "coord_type",
    "recorded_at",
    // wx.getLocation's success object, posted as it is: stored…
    "speed",
    "altitude",
    "verticalAccuracy",
    "horizontalAccuracy",
    // …and ignored
    "errMsg",
];

/// One point, or `{points: [...]}` (1..=100 of them).
pub fn parse_report(body: &Value, now: i64) -> Result<Vec<Point>, AppError> {
    let obj = body
        .as_object()
        .ok_or_else(|| AppError::invalid_request("body must be a JSON object"))?;
    if let Some(points) = obj.get("points") {
        if obj.len() > 1 {
            return Err(AppError::invalid_request(
                "give either one point or {\"points\": [...]}, not both",
            ));
        }
        let arr = points
            .as_array()
            .ok_or_else(|| AppError::validation("points", "must be an array"))?;
        if arr.is_empty() || arr.len() > MAX_POINTS {
            return Err(AppError::validation(
                "points",
                format!("must hold 1-{MAX_POINTS} points"),
            ));
        }
        arr.iter()
            .enumerate()
            .map(|(i, p)| {
                let o = p.as_object().ok_or_else(|| {
                    AppError::validation(&format!("points[{i}]"), "must be an object")
                })?;
                parse_point(o, &format!("points[{i}]."), now)
            })
            .collect()
    } else {
        Ok(vec![parse_point(obj, "", now)?])
    }
}

fn parse_point(o: &Map<String, Value>, prefix: &str, now: i64) -> Result<Point, AppError> {
    if let Some(k) = o.keys().find(|k| !POINT_FIELDS.contains(&k.as_str())) {
        return Err(AppError::invalid_request(format!(
            "unknown field `{prefix}{k}`"
        )));
    }
    let field = |name: &str| format!("{prefix}{name}");
    let number = |name: &str| -> Result<Option<f64>, AppError> {
        match o.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64().filter(|f| f.is_finite()) {
                Some(f) => Ok(Some(f)),
                None => Err(AppError::validation(
                    &field(name),
                    "must be a finite number",
                )),
            },
            Some(_) => Err(AppError::validation(&field(name), "must be a number")),
        }
    };
    let latitude = number("latitude")?
        .ok_or_else(|| AppError::validation(&field("latitude"), "is required"))?;
    if !(-90.0..=90.0).contains(&latitude) {
        return Err(AppError::validation(
            &field("latitude"),
            "must be within [-90, 90]",
        ));
    }
    let longitude = number("longitude")?
        .ok_or_else(|| AppError::validation(&field("longitude"), "is required"))?;
    if !(-180.0..=180.0).contains(&longitude) {
        return Err(AppError::validation(
            &field("longitude"),
            "must be within [-180, 180]",
        ));
    }
    let accuracy = number("accuracy")?;
    if accuracy.is_some_and(|a| a < 0.0) {
        return Err(AppError::validation(&field("accuracy"), "must be >= 0"));
    }
    // WeChat reports -1 (or another negative value) when a device cannot
    // measure these: unknown, stored as NULL.
    let measured =
        |name: &str| -> Result<Option<f64>, AppError> { Ok(number(name)?.filter(|v| *v >= 0.0)) };
    let speed = measured("speed")?;
    let altitude = number("altitude")?;
    let vertical_accuracy = measured("verticalAccuracy")?;
    let horizontal_accuracy = measured("horizontalAccuracy")?;
    // wx.getLocation answers wgs84 unless asked for gcj02.
    let coord_type = match o.get("coord_type") {
        None | Some(Value::Null) => "wgs84",
        Some(Value::String(s)) if s == "gcj02" => "gcj02",
        Some(Value::String(s)) if s == "wgs84" => "wgs84",
        Some(_) => {
            return Err(AppError::validation(
                &field("coord_type"),
                "must be \"gcj02\" or \"wgs84\"",
            ))
        }
    };
    let recorded_at = match o.get("recorded_at") {
        None | Some(Value::Null) => now,
        Some(v) => parse_time(v).ok_or_else(|| {
            AppError::validation(
                &field("recorded_at"),
                "must be an RFC 3339 time or unix milliseconds",
            )
        })?,
    };
    if recorded_at > now + MAX_FUTURE_MS {
        return Err(AppError::validation(
            &field("recorded_at"),
            "is more than 5 minutes in the future",
        ));
    }
    Ok(Point {
        latitude,
        longitude,
        accuracy,
        coord_type,
        recorded_at,
        speed,
        altitude,
        vertical_accuracy,
        horizontal_accuracy,
    })
}

/// RFC 3339 string or integer unix milliseconds.
pub fn parse_time(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc).timestamp_millis()),
        Value::Number(n) => n
            .as_i64()
            .filter(|ms| (0..=253_402_300_799_999).contains(ms)),
        _ => None,
    }
}
