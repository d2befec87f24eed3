//! Location reports (issue 7): validation at every boundary, batches and their
//! atomicity, history pagination and time ranges, isolation between users,
//! erasure, retention on the injectable clock, and the separate rate-limit
//! bucket.

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const REPORT: &str = "/api/location/report";

/// The builder's default start instant: 2026-11-25T04:00:00Z.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 4, 0, 0).unwrap()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn point(lat: f64, lon: f64) -> Value {
    json!({"latitude": lat, "longitude": lon})
}

async fn report(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post(REPORT, Some(token), body).await
}

/// Reports and asserts it was accepted with the given count.
async fn report_ok(app: &TestApp, token: &str, body: Value, n: u64) {
    let (status, res) = report(app, token, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "report {body} refused: {res}");
    assert_eq!(res, json!({"accepted": n}), "report {body}");
}

/// A 422 `validation` naming `field` both in `field` and in the message.
fn assert_validation(status: StatusCode, body: &Value, field: &str) {
    let err = assert_error(status, body, 422, "validation");
    assert_eq!(err["field"], field, "wrong field, body: {body}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(field),
        "message does not name `{field}`: {body}"
    );
}

/// GET /api/location with query pairs.
async fn list(app: &TestApp, token: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
    app.send(
        app.client.get(app.url("/api/location")).query(query),
        Some(token),
    )
    .await
}

fn items(page: &Value) -> Vec<Value> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .clone()
}

/// Every point of the user, following cursors (limit 100).
async fn all_points(app: &TestApp, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut q = vec![("limit", "100".to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, page) = list(app, token, &q).await;
        assert_eq!(status, StatusCode::OK, "list failed: {page}");
        out.extend(items(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page["next_cursor"].is_null(), "bad next_cursor: {page}");
                return out;
            }
        }
    }
    panic!("pagination does not end");
}

async fn count(app: &TestApp, token: &str) -> usize {
    all_points(app, token).await.len()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

// ---------------------------------------------------------------- validation

#[tokio::test]
async fn latitude_bounds_are_inclusive() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("lat").await;

    report_ok(&app, &tok, point(-90.0, 0.0), 1).await;
    report_ok(&app, &tok, json!({"latitude": 90, "longitude": 0}), 1).await;
    for bad in [-90.0001, 90.0001, 180.0, -1e9] {
        let (s, b) = report(&app, &tok, point(bad, 0.0)).await;
        assert_validation(s, &b, "latitude");
    }
    let mut lats: Vec<f64> = all_points(&app, &tok)
        .await
        .iter()
        .map(|p| f(&p["latitude"]))
        .collect();
    lats.sort_by(f64::total_cmp);
    assert_eq!(lats, vec![-90.0, 90.0]);
}

#[tokio::test]
async fn longitude_bounds_are_inclusive() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("lon").await;

    report_ok(&app, &tok, point(0.0, -180.0), 1).await;
    report_ok(&app, &tok, json!({"latitude": 0, "longitude": 180}), 1).await;
    for bad in [-180.0001, 180.0001, 360.0] {
        let (s, b) = report(&app, &tok, point(0.0, bad)).await;
        assert_validation(s, &b, "longitude");
    }
    let mut lons: Vec<f64> = all_points(&app, &tok)
        .await
        .iter()
        .map(|p| f(&p["longitude"]))
        .collect();
    lons.sort_by(f64::total_cmp);
    assert_eq!(lons, vec![-180.0, 180.0]);
}

#[tokio::test]
async fn accuracy_zero_ok_negative_rejected() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("acc").await;

    report_ok(
        &app,
        &tok,
        json!({"latitude": 1, "longitude": 1, "accuracy": 0}),
        1,
    )
    .await;
    report_ok(
        &app,
        &tok,
        json!({"latitude": 2, "longitude": 2, "accuracy": 12.5}),
        1,
    )
    .await;
    report_ok(&app, &tok, json!({"latitude": 3, "longitude": 3}), 1).await;
    for bad in [json!(-0.0001), json!(-1)] {
        let (s, b) = report(
            &app,
            &tok,
            json!({"latitude": 4, "longitude": 4, "accuracy": bad}),
        )
        .await;
        assert_validation(s, &b, "accuracy");
    }
    let pts = all_points(&app, &tok).await;
    assert_eq!(pts.len(), 3);
    let acc_of =
        |lat: f64| pts.iter().find(|p| f(&p["latitude"]) == lat).unwrap()["accuracy"].clone();
    assert_eq!(f(&acc_of(1.0)), 0.0);
    assert_eq!(f(&acc_of(2.0)), 12.5);
    assert!(
        acc_of(3.0).is_null(),
        "omitted accuracy should be null: {pts:?}"
    );
}

#[tokio::test]
async fn coord_type_stored_as_given_default_wgs84() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("coord").await;

    report_ok(
        &app,
        &tok,
        json!({"latitude": 1, "longitude": 1, "coord_type": "wgs84"}),
        1,
    )
    .await;
    report_ok(
        &app,
        &tok,
        json!({"latitude": 2, "longitude": 2, "coord_type": "gcj02"}),
        1,
    )
    .await;
    report_ok(&app, &tok, json!({"latitude": 3, "longitude": 3}), 1).await;
    for bad in [
        json!("bd09"),
        json!("WGS84"),
        json!(""),
        json!(84),
        json!(["wgs84"]),
    ] {
        let (s, b) = report(
            &app,
            &tok,
            json!({"latitude": 4, "longitude": 4, "coord_type": bad}),
        )
        .await;
        assert_validation(s, &b, "coord_type");
    }
    let pts = all_points(&app, &tok).await;
    assert_eq!(pts.len(), 3, "{pts:?}");
    let coord_of =
        |lat: f64| pts.iter().find(|p| f(&p["latitude"]) == lat).unwrap()["coord_type"].clone();
    assert_eq!(coord_of(1.0), "wgs84");
    assert_eq!(coord_of(2.0), "gcj02");
    // wx.getLocation answers wgs84 unless asked for gcj02
    assert_eq!(coord_of(3.0), "wgs84");
}

#[tokio::test]
async fn recorded_at_rfc3339_unix_ms_and_default_now() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("ts").await;

    // RFC 3339 with an offset: normalised to UTC.
    report_ok(
        &app,
        &tok,
        json!({"latitude": 1, "longitude": 1, "recorded_at": "2026-11-25T11:30:00+08:00"}),
        1,
    )
    .await;
    // Unix milliseconds.
    let ms_at = ms(t0()) - 61_234;
    report_ok(
        &app,
        &tok,
        json!({"latitude": 2, "longitude": 2, "recorded_at": ms_at}),
        1,
    )
    .await;
    // Default: the server's (injected) now.
    app.clock.advance(Duration::milliseconds(1_500));
    report_ok(&app, &tok, json!({"latitude": 3, "longitude": 3}), 1).await;

    let pts = all_points(&app, &tok).await;
    let at =
        |lat: f64| pts.iter().find(|p| f(&p["latitude"]) == lat).unwrap()["recorded_at"].clone();
    assert_eq!(at(1.0), "2026-11-25T03:30:00.000Z");
    assert_eq!(at(2.0), iso(t0() - Duration::milliseconds(61_234)));
    assert_eq!(at(3.0), iso(t0() + Duration::milliseconds(1_500)));
    // The item shape.
    let p = pts.iter().find(|p| f(&p["latitude"]) == 3.0).unwrap();
    for key in [
        "id",
        "latitude",
        "longitude",
        "accuracy",
        "coord_type",
        "recorded_at",
        "created_at",
    ] {
        assert!(p.get(key).is_some(), "item lacks {key}: {p}");
    }
    assert_eq!(p["created_at"], iso(t0() + Duration::milliseconds(1_500)));

    for bad in [
        json!("yesterday"),
        json!("2026-11-25 04:00:00"),
        json!("2026-11-25"),
        json!(ms(t0()).to_string()),
        json!(-1),
        json!(1.5),
        json!(true),
        json!({"ms": 1}),
    ] {
        let (s, b) = report(
            &app,
            &tok,
            json!({"latitude": 4, "longitude": 4, "recorded_at": bad}),
        )
        .await;
        assert_validation(s, &b, "recorded_at");
    }
    assert_eq!(count(&app, &tok).await, 3);
}

#[tokio::test]
async fn recorded_at_at_most_five_minutes_ahead() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("future").await;
    let limit = t0() + Duration::minutes(5);
    let over = limit + Duration::milliseconds(1);

    report_ok(
        &app,
        &tok,
        json!({"latitude": 1, "longitude": 1, "recorded_at": ms(limit)}),
        1,
    )
    .await;
    report_ok(
        &app,
        &tok,
        json!({"latitude": 2, "longitude": 2, "recorded_at": iso(limit)}),
        1,
    )
    .await;
    let (s, b) = report(
        &app,
        &tok,
        json!({"latitude": 3, "longitude": 3, "recorded_at": ms(over)}),
    )
    .await;
    assert_validation(s, &b, "recorded_at");
    let (s, b) = report(
        &app,
        &tok,
        json!({"latitude": 3, "longitude": 3, "recorded_at": iso(over)}),
    )
    .await;
    assert_validation(s, &b, "recorded_at");
    assert_eq!(count(&app, &tok).await, 2);

    // "Now" is the injected clock: a millisecond later the same instant is fine.
    app.clock.advance(Duration::milliseconds(1));
    report_ok(
        &app,
        &tok,
        json!({"latitude": 3, "longitude": 3, "recorded_at": ms(over)}),
        1,
    )
    .await;
    assert_eq!(count(&app, &tok).await, 3);
}

#[tokio::test]
async fn non_numbers_and_missing_coordinates_rejected() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("types").await;

    for bad in [
        json!("31.2"),
        json!(true),
        json!([31.2]),
        json!({"v": 31.2}),
    ] {
        let (s, b) = report(&app, &tok, json!({"latitude": bad, "longitude": 1})).await;
        assert_validation(s, &b, "latitude");
        let (s, b) = report(&app, &tok, json!({"latitude": 1, "longitude": bad})).await;
        assert_validation(s, &b, "longitude");
        let (s, b) = report(
            &app,
            &tok,
            json!({"latitude": 1, "longitude": 1, "accuracy": bad}),
        )
        .await;
        assert_validation(s, &b, "accuracy");
    }
    let (s, b) = report(&app, &tok, json!({"longitude": 1})).await;
    assert_validation(s, &b, "latitude");
    let (s, b) = report(&app, &tok, json!({"latitude": null, "longitude": 1})).await;
    assert_validation(s, &b, "latitude");
    let (s, b) = report(&app, &tok, json!({"latitude": 1})).await;
    assert_validation(s, &b, "longitude");
    let (s, b) = report(&app, &tok, json!({})).await;
    assert_validation(s, &b, "latitude");
    assert_eq!(count(&app, &tok).await, 0);
}

#[tokio::test]
async fn unknown_fields_and_bad_bodies_are_400() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("unknown").await;

    let (s, b) = report(
        &app,
        &tok,
        json!({"latitude": 1, "longitude": 1, "heading": 5}),
    )
    .await;
    let err = assert_error(s, &b, 400, "invalid_request");
    assert!(err["message"].as_str().unwrap().contains("heading"), "{b}");

    let (s, b) = report(
        &app,
        &tok,
        json!({"points": [point(1.0, 1.0), {"latitude": 1, "longitude": 1, "bearing": 3}]}),
    )
    .await;
    let err = assert_error(s, &b, 400, "invalid_request");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("points[1].bearing"),
        "{b}"
    );

    let (s, b) = report(
        &app,
        &tok,
        json!({"points": [point(1.0, 1.0)], "latitude": 1}),
    )
    .await;
    assert_error(s, &b, 400, "invalid_request");

    let (s, b) = report(&app, &tok, json!([point(1.0, 1.0)])).await;
    assert_error(s, &b, 400, "invalid_request");

    let (s, b) = app
        .send(
            app.client
                .post(app.url(REPORT))
                .header("content-type", "application/json")
                .body("{\"latitude\": 1, "),
            Some(&tok),
        )
        .await;
    assert_error(s, &b, 400, "invalid_request");

    assert_eq!(count(&app, &tok).await, 0);
}

// ------------------------------------------------------------------- batches

fn batch(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "latitude": (i as f64) * 0.5 - 25.0,
                "longitude": 120.0 + (i as f64) * 0.01,
                "accuracy": 5,
                "recorded_at": ms(t0()) - (i as i64) * 1000,
            })
        })
        .collect()
}

#[tokio::test]
async fn batch_size_bounds() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("batch").await;

    let (s, b) = report(&app, &tok, json!({"points": []})).await;
    assert_validation(s, &b, "points");
    let (s, b) = report(&app, &tok, json!({"points": batch(101)})).await;
    assert_validation(s, &b, "points");
    let (s, b) = report(&app, &tok, json!({"points": "many"})).await;
    assert_validation(s, &b, "points");
    assert_eq!(count(&app, &tok).await, 0);

    report_ok(&app, &tok, json!({"points": batch(100)}), 100).await;
    let pts = all_points(&app, &tok).await;
    assert_eq!(pts.len(), 100);
    // Every point made it, with its own values.
    let lats: HashSet<String> = pts.iter().map(|p| p["latitude"].to_string()).collect();
    let want: HashSet<String> = batch(100)
        .iter()
        .map(|p| p["latitude"].to_string())
        .collect();
    assert_eq!(lats, want);

    report_ok(&app, &tok, json!({"points": batch(1)}), 1).await;
    assert_eq!(count(&app, &tok).await, 101);
}

#[tokio::test]
async fn batch_errors_name_the_index_and_store_nothing() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("atomic").await;

    let cases: Vec<(usize, &str, Value, String)> = vec![
        (3, "latitude", json!(90.0001), "points[3].latitude".into()),
        (
            0,
            "longitude",
            json!(-180.0001),
            "points[0].longitude".into(),
        ),
        (7, "accuracy", json!(-1), "points[7].accuracy".into()),
        (
            42,
            "coord_type",
            json!("bd09"),
            "points[42].coord_type".into(),
        ),
        (
            99,
            "recorded_at",
            json!(ms(t0() + Duration::minutes(5)) + 1),
            "points[99].recorded_at".into(),
        ),
        (50, "latitude", json!("1"), "points[50].latitude".into()),
    ];
    for (idx, key, value, field) in cases {
        let mut pts = batch(100);
        pts[idx][key] = value;
        let (s, b) = report(&app, &tok, json!({"points": pts})).await;
        assert_validation(s, &b, &field);
        assert_eq!(
            count(&app, &tok).await,
            0,
            "batch with a bad {field} stored something"
        );
    }

    let mut pts = batch(10);
    pts[5].as_object_mut().unwrap().remove("latitude");
    let (s, b) = report(&app, &tok, json!({"points": pts})).await;
    assert_validation(s, &b, "points[5].latitude");

    let mut pts = batch(10);
    pts[2] = json!(17);
    let (s, b) = report(&app, &tok, json!({"points": pts})).await;
    assert_validation(s, &b, "points[2]");

    // Unknown field late in a batch: 400, and still nothing stored.
    let mut pts = batch(10);
    pts[9]["heading"] = json!(90);
    let (s, b) = report(&app, &tok, json!({"points": pts})).await;
    assert_error(s, &b, 400, "invalid_request");

    assert_eq!(count(&app, &tok).await, 0);
    // The same batch, fixed, is stored whole.
    report_ok(&app, &tok, json!({"points": batch(10)}), 10).await;
    assert_eq!(count(&app, &tok).await, 10);
}

// ---------------------------------------------------------------- pagination

#[tokio::test]
async fn pages_newest_first_cover_every_point_once() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("pages").await;

    // 25 points in scrambled time order, with groups sharing a recorded_at so
    // the id tie-break matters at page boundaries.
    let base = ms(t0()) - 3_600_000;
    let pts: Vec<Value> = (0..25)
        .map(|i: i64| {
            let slot = (i * 7) % 25 / 3; // 0..=8, several points per slot
            json!({"latitude": i as f64, "longitude": 0, "recorded_at": base + slot * 60_000})
        })
        .collect();
    report_ok(&app, &tok, json!({"points": pts[..12]}), 12).await;
    report_ok(&app, &tok, json!({"points": pts[12..]}), 13).await;

    // Default limit is 20.
    let (s, first) = list(&app, &tok, &[]).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(items(&first).len(), 20);
    assert!(first["next_cursor"].is_string(), "{first}");

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "7")];
        if let Some(c) = &cursor {
            q.push(("cursor", c.as_str()));
        }
        let (s, page) = list(&app, &tok, &q).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let its = items(&page);
        sizes.push(its.len());
        seen.extend(its);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![7, 7, 7, 4]);

    let ids: Vec<i64> = seen.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        25,
        "duplicates: {ids:?}"
    );
    let lats: HashSet<i64> = seen.iter().map(|p| f(&p["latitude"]) as i64).collect();
    assert_eq!(lats, (0..25).collect::<HashSet<_>>(), "missing points");

    // Newest first: (recorded_at, id) strictly decreasing.
    let keys: Vec<(String, i64)> = seen
        .iter()
        .map(|p| {
            (
                p["recorded_at"].as_str().unwrap().to_string(),
                p["id"].as_i64().unwrap(),
            )
        })
        .collect();
    for w in keys.windows(2) {
        assert!(w[0] > w[1], "not newest first: {:?} then {:?}", w[0], w[1]);
    }
    // And the first page of the default listing is the same order.
    let first_ids: Vec<i64> = items(&first)
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(first_ids, ids[..20].to_vec());

    // An exact fit: limit == remaining leaves no next page.
    let (_, p) = list(&app, &tok, &[("limit", "25")]).await;
    assert_eq!(items(&p).len(), 25);
    assert!(p["next_cursor"].is_null(), "{p}");
}

#[tokio::test]
async fn limit_and_cursor_are_validated() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("limits").await;
    report_ok(&app, &tok, json!({"points": batch(3)}), 3).await;

    let (s, p) = list(&app, &tok, &[("limit", "1")]).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(items(&p).len(), 1);
    let (s, p) = list(&app, &tok, &[("limit", "100")]).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(items(&p).len(), 3);
    assert!(p["next_cursor"].is_null());

    for bad in ["0", "101"] {
        let (s, b) = list(&app, &tok, &[("limit", bad)]).await;
        assert_validation(s, &b, "limit");
    }
    for bad in ["nope", "123.abc", "abc.1", "1.2.3", "."] {
        let (s, b) = list(&app, &tok, &[("cursor", bad)]).await;
        assert_validation(s, &b, "cursor");
    }
    // Unparseable numbers / unknown parameters: 4xx in our shape, never 500.
    let (s, b) = list(&app, &tok, &[("limit", "-1")]).await;
    assert!(s.is_client_error(), "{s} {b}");
    assert!(b["error"]["code"].is_string(), "{b}");
    let (s, b) = list(&app, &tok, &[("bogus", "1")]).await;
    assert_error(s, &b, 400, "invalid_request");
}

#[tokio::test]
async fn time_range_filter() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("range").await;
    let at = |min: i64| t0() - Duration::minutes(min);
    let pts: Vec<Value> = [60, 30, 20, 10, 0]
        .iter()
        .map(|&m| json!({"latitude": m, "longitude": 0, "recorded_at": ms(at(m))}))
        .collect();
    report_ok(&app, &tok, json!({"points": pts}), 5).await;

    let lats = |page: &Value| -> Vec<i64> {
        items(page)
            .iter()
            .map(|p| f(&p["latitude"]) as i64)
            .collect()
    };

    // Inclusive bounds, RFC 3339 and unix ms mixed, newest first.
    let from = iso(at(30));
    let to = ms(at(10)).to_string();
    let (s, p) = list(&app, &tok, &[("from", &from), ("to", &to)]).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(lats(&p), vec![10, 20, 30]);

    // An offset in the query string (properly encoded '+').
    let from8 = (at(20))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339();
    let (_, p) = list(&app, &tok, &[("from", &from8)]).await;
    assert_eq!(lats(&p), vec![0, 10, 20]);

    let (_, p) = list(
        &app,
        &tok,
        &[("to", &iso(at(30) - Duration::milliseconds(1)))],
    )
    .await;
    assert_eq!(lats(&p), vec![60]);

    // Range + pagination.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("from", from.as_str()), ("to", to.as_str()), ("limit", "1")];
        if let Some(c) = &cursor {
            q.push(("cursor", c.as_str()));
        }
        let (s, p) = list(&app, &tok, &q).await;
        assert_eq!(s, StatusCode::OK, "{p}");
        got.extend(lats(&p));
        match p["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(got.len() < 10, "pagination does not end");
    }
    assert_eq!(got, vec![10, 20, 30]);

    for (key, bad) in [("from", "last week"), ("to", "2026-13-01T00:00:00Z")] {
        let (s, b) = list(&app, &tok, &[(key, bad)]).await;
        assert_validation(s, &b, key);
    }
}

// ------------------------------------------------------- isolation, erasure

#[tokio::test]
async fn users_never_see_or_erase_each_others_points() {
    let app = TestApp::spawn().await;
    let (a, _) = app.login("iso-a").await;
    let (b, _) = app.login("iso-b").await;

    report_ok(&app, &a, json!({"points": batch(5)}), 5).await;
    report_ok(
        &app,
        &b,
        json!({"points": [point(11.0, 11.0), point(12.0, 12.0)]}),
        2,
    )
    .await;

    let a_pts = all_points(&app, &a).await;
    let b_pts = all_points(&app, &b).await;
    assert_eq!(a_pts.len(), 5);
    assert_eq!(b_pts.len(), 2);
    let a_ids: HashSet<i64> = a_pts.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert!(b_pts
        .iter()
        .all(|p| !a_ids.contains(&p["id"].as_i64().unwrap())));
    let mut b_lats: Vec<f64> = b_pts.iter().map(|p| f(&p["latitude"])).collect();
    b_lats.sort_by(f64::total_cmp);
    assert_eq!(b_lats, vec![11.0, 12.0]);

    // A cursor taken from A's listing does not open A's points to B.
    let (_, a_page) = list(&app, &a, &[("limit", "1")]).await;
    let a_cursor = a_page["next_cursor"].as_str().unwrap().to_string();
    let (s, p) = list(&app, &b, &[("cursor", &a_cursor)]).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert!(
        items(&p)
            .iter()
            .all(|x| !a_ids.contains(&x["id"].as_i64().unwrap())),
        "{p}"
    );

    // B erases: only B's points go.
    let (s, body) = app.delete("/api/location", Some(&b)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert!(body.is_null(), "204 with a body: {body}");
    assert_eq!(count(&app, &b).await, 0);
    assert_eq!(all_points(&app, &a).await, a_pts);
}

#[tokio::test]
async fn delete_erases_everything_of_the_caller() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("erase").await;
    report_ok(&app, &tok, json!({"points": batch(100)}), 100).await;
    report_ok(&app, &tok, json!({"points": batch(50)}), 50).await;
    report_ok(&app, &tok, point(1.0, 2.0), 1).await;
    assert_eq!(count(&app, &tok).await, 151);

    let (s, body) = app.delete("/api/location", Some(&tok)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (s, p) = list(&app, &tok, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p, json!({"items": [], "next_cursor": null}));

    // Idempotent, and reporting works again afterwards.
    let (s, _) = app.delete("/api/location", Some(&tok)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    report_ok(&app, &tok, point(3.0, 4.0), 1).await;
    assert_eq!(count(&app, &tok).await, 1);
}

#[tokio::test]
async fn requires_a_bearer_token() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/api/location"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let body: Value = res.json().await.unwrap();
    assert_error(StatusCode::UNAUTHORIZED, &body, 401, "unauthorized");

    let (s, b) = app.post(REPORT, None, point(1.0, 1.0)).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app.delete("/api/location", None).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app.get("/api/location", Some("not-a-jwt")).await;
    assert_error(s, &b, 401, "unauthorized");
}

// ----------------------------------------------------------------- retention

// RETENTION_NOTE: the server also runs a sweep of its own right after start
// (a spawned task that reads the clock when it first runs, at the test's
// first await). Tests therefore only store points that are within retention
// at the start instant and move the clock afterwards, so that start-up sweep
// can never delete (and so "steal" from the count of) the points under test.

#[tokio::test]
async fn retention_purges_points_older_than_configured_days() {
    let app = TestApp::builder()
        .config(|c| c.location.retention_days = 30)
        .spawn()
        .await;
    let (a, _) = app.login("ret-a").await;
    let (b, _) = app.login("ret-b").await;
    let day = |d: i64| ms(t0() - Duration::days(d));

    report_ok(
        &app,
        &a,
        json!({"points": [
            {"latitude": 10, "longitude": 0, "recorded_at": day(10)},
            {"latitude": 5, "longitude": 0, "recorded_at": day(5)},
            {"latitude": 0, "longitude": 0},
        ]}),
        3,
    )
    .await;
    report_ok(
        &app,
        &b,
        json!({"latitude": 10, "longitude": 0, "recorded_at": day(10)}),
        1,
    )
    .await;

    // Nothing is old yet.
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        0
    );

    // Exactly 30 days after the oldest points: still kept.
    app.clock.set(t0() + Duration::days(20));
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        0
    );

    // One millisecond more: both users' oldest points go, and only those.
    app.clock.advance(Duration::milliseconds(1));
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        2
    );
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        0
    );

    // Tokens from 20 days ago have expired; log in again (same users).
    let (a, _) = app.login("ret-a").await;
    let (b, _) = app.login("ret-b").await;
    let mut lats: Vec<f64> = all_points(&app, &a)
        .await
        .iter()
        .map(|p| f(&p["latitude"]))
        .collect();
    lats.sort_by(f64::total_cmp);
    assert_eq!(lats, vec![0.0, 5.0]);
    assert_eq!(count(&app, &b).await, 0);

    // 25 days later the 5-day-old point expires, the newest stays.
    app.clock.advance(Duration::days(5));
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        1
    );
    let (a, _) = app.login("ret-a").await;
    let pts = all_points(&app, &a).await;
    assert_eq!(pts.len(), 1);
    assert_eq!(f(&pts[0]["latitude"]), 0.0);
}

#[tokio::test]
async fn retention_defaults_to_90_days() {
    let app = TestApp::spawn().await;
    assert_eq!(app.config.location.retention_days, 90);
    let (tok, _) = app.login("ret-default").await;
    let day = |d: i64| ms(t0() - Duration::days(d));
    // Young at start (see RETENTION_NOTE): 80 and 60 days old.
    report_ok(
        &app,
        &tok,
        json!({"points": [
            {"latitude": 1, "longitude": 80, "recorded_at": day(80)},
            {"latitude": 1, "longitude": 60, "recorded_at": day(60)},
        ]}),
        2,
    )
    .await;
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        0
    );
    // The 80-day-old point turns exactly 90 days old: kept; 1 ms later: gone.
    app.clock.set(t0() + Duration::days(10));
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        0
    );
    app.clock.advance(Duration::milliseconds(1));
    assert_eq!(
        mvp28::location::purge_expired(app.state()).await.unwrap(),
        1
    );
    let (tok, _) = app.login("ret-default").await;
    let pts = all_points(&app, &tok).await;
    assert_eq!(pts.len(), 1);
    assert_eq!(f(&pts[0]["longitude"]), 60.0);
}

// ---------------------------------------------------------------- rate limit

#[tokio::test]
async fn location_has_its_own_rate_limit_bucket() {
    let app = TestApp::builder()
        .config(|c| {
            c.rate_limit.location_per_user_per_minute = 5;
            c.rate_limit.per_user_per_minute = 3;
            c.rate_limit.per_ip_per_minute = 0;
        })
        .spawn()
        .await;
    let (tok, _) = app.login("burst").await;
    let (other, _) = app.login("burst-other").await;

    for i in 0..5 {
        report_ok(&app, &tok, point(f64::from(i), 0.0), 1).await;
    }
    let res = app
        .client
        .post(app.url(REPORT))
        .bearer_auth(&tok)
        .json(&point(9.0, 9.0))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = res.json().await.unwrap();
    assert_error(status, &body, 429, "rate_limited");
    let retry = retry.unwrap_or_else(|| panic!("429 without Retry-After: {body}"));
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After not whole seconds: {retry}"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");

    // The burst did not touch the general bucket…
    for _ in 0..3 {
        let (s, b) = app.get("/api/me", Some(&tok)).await;
        assert_eq!(s, StatusCode::OK, "location burst starved /api/me: {b}");
    }
    // …which has its own, smaller limit.
    let (s, b) = app.get("/api/me", Some(&tok)).await;
    assert_error(s, &b, 429, "rate_limited");

    // The bucket is per user: another user still reports.
    report_ok(&app, &other, point(1.0, 1.0), 1).await;
}
