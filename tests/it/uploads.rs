//! Uploads: presign -> PUT -> commit -> download, on local disk and on a
//! real SigV4-verifying S3 server (s3s, in-process), including Supabase's
//! path-prefixed endpoint; refusals (tampered, expired, wrong type, too
//! big, someone else's); the sweep of abandoned uploads; account deletion.

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::s3::{FakeS3, ACCESS_KEY, BUCKET, REGION, SECRET_KEY};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-not-really-a-png-but-bytes-are-bytes";

async fn local_app() -> TestApp {
    TestApp::spawn().await
}

async fn s3_app(fake: &FakeS3) -> TestApp {
    s3_app_with(fake, |_| {}).await
}

async fn s3_app_with(fake: &FakeS3, f: impl FnOnce(&mut mvp28::config::Config)) -> TestApp {
    let s3 = fake.config();
    TestApp::builder()
        .config(|c| {
            c.storage.kind = "s3".into();
            c.storage.s3 = s3;
            f(c);
        })
        .spawn()
        .await
}

/// Local URLs are built on `server.public_url`; the test server listens on
/// a random port, so point them at it.
fn reach(app: &TestApp, url: &str) -> String {
    match url.strip_prefix(&app.config.server.public_url) {
        Some(rest) => app.url(rest),
        None => url.to_string(),
    }
}

async fn presign(app: &TestApp, token: &str, ct: &str, size: usize) -> Value {
    let (s, b) = app
        .post(
            "/api/upload/presign",
            Some(token),
            json!({"filename": "photo.png", "content_type": ct, "size": size}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// PUTs `body` to the presigned URL with the given Content-Type.
async fn put(app: &TestApp, p: &Value, ct: &str, body: Vec<u8>) -> (StatusCode, String) {
    put_url(app, p["url"].as_str().unwrap(), ct, body).await
}

async fn put_url(app: &TestApp, url: &str, ct: &str, body: Vec<u8>) -> (StatusCode, String) {
    let res = app
        .client
        .put(reach(app, url))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

async fn commit(app: &TestApp, token: &str, upload_id: &str) -> (StatusCode, Value) {
    app.post(
        "/api/upload/commit",
        Some(token),
        json!({ "upload_id": upload_id }),
    )
    .await
}

/// Downloads without any bearer token.
async fn download(app: &TestApp, url: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let res = reqwest::Client::new()
        .get(reach(app, url))
        .send()
        .await
        .unwrap();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (res.status(), ct, res.bytes().await.unwrap().to_vec())
}

/// Uploads and commits `body` as image/png; returns the commit answer.
async fn upload(app: &TestApp, token: &str, body: &[u8]) -> Value {
    let p = presign(app, token, "image/png", body.len()).await;
    let (s, text) = put(app, &p, "image/png", body.to_vec()).await;
    assert!(s.is_success(), "PUT failed {s}: {text}");
    let (s, c) = commit(app, token, p["upload_id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    c
}

fn local_file(app: &TestApp, key_url_path: &str) -> std::path::PathBuf {
    std::path::Path::new(&app.config.storage.local_dir).join(key_url_path)
}

/// Files (not directories) under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The object key of an upload, read back from its media row.
fn key_of(app: &TestApp, upload_id: &str) -> String {
    let conn = super::common::TestDb::of(app);
    conn.query_row(
        "SELECT object_key FROM media WHERE id = ?1",
        [upload_id],
        |r| r.get(0),
    )
    .unwrap()
}

fn direct_client(fake: &FakeS3) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(&fake.endpoint)
        .with_region(REGION)
        .with_bucket_name(BUCKET)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap()
}

// ------------------------------------------------------------------ local

#[tokio::test]
async fn local_upload_commit_download_round_trip() {
    let app = local_app().await;
    let (token, uid) = app.login("alice").await;
    let p = presign(&app, &token, "image/png", PNG.len()).await;
    let id = p["upload_id"].as_str().unwrap();
    assert!(id.starts_with("med_"), "{p}");
    assert_eq!(p["method"], "PUT");
    assert_eq!(p["headers"], json!({"Content-Type": "image/png"}));
    assert_eq!(p["expires_at"], "2026-11-25T04:15:00.000Z");
    let url = p["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:8080/api/upload/local/"),
        "{url}"
    );

    // The key is the server's: never the client's filename.
    let key = key_of(&app, id);
    assert_eq!(key, format!("u/{uid}/2026/11/{id}.png"));

    let (s, text) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(std::fs::read(local_file(&app, &key)).unwrap(), PNG);

    let (s, c) = commit(&app, &token, id).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let m = &c["media"];
    assert_eq!(m["id"], id);
    assert_eq!(m["content_type"], "image/png");
    assert_eq!(m["size"], PNG.len());
    let (s, ct, bytes) = download(&app, m["url"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("image/png"));
    assert_eq!(bytes, PNG);

    // Idempotent commit; the record is readable by its owner.
    let (s, again) = commit(&app, &token, id).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["media"]["id"], id);
    let (s, got) = app.get(&format!("/api/media/{id}"), Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["media"]["size"], PNG.len());
    let (_, _, bytes) = download(&app, got["media"]["url"].as_str().unwrap()).await;
    assert_eq!(bytes, PNG);

    // A committed upload cannot be overwritten through its old grant.
    let (s, text) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
}

#[tokio::test]
async fn presign_validates_type_size_and_filename() {
    let app = local_app().await;
    let (token, uid) = app.login("alice").await;
    let max = app.config.storage.max_upload_bytes;
    let req = |ct: &str, size: i64| json!({"filename": "a.png", "content_type": ct, "size": size});

    let (s, b) = app
        .post("/api/upload/presign", Some(&token), req("text/html", 10))
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    for size in [0, -5] {
        let (s, b) = app
            .post("/api/upload/presign", Some(&token), req("image/png", size))
            .await;
        let e = assert_error(s, &b, 422, "validation");
        assert_eq!(e["field"], "size");
    }
    let (s, b) = app
        .post(
            "/api/upload/presign",
            Some(&token),
            req("image/png", max as i64 + 1),
        )
        .await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = app
        .post(
            "/api/upload/presign",
            Some(&token),
            json!({"filename": "", "content_type": "image/png", "size": 1}),
        )
        .await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "filename");
    let (s, b) = app
        .post(
            "/api/upload/presign",
            Some(&token),
            json!({"content_type": "image/png", "size": 1}),
        )
        .await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "filename");
    let (s, b) = app
        .post(
            "/api/upload/presign",
            Some(&token),
            json!({"filename": "a", "content_type": "image/png", "size": 1, "key": "x"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = app
        .post("/api/upload/presign", None, req("image/png", 1))
        .await;
    assert_error(s, &b, 401, "unauthorized");

    // Exactly the limit is fine; a hostile filename never reaches the key;
    // the type is matched case-insensitively and stored lowercase.
    let (s, b) = app
        .post(
            "/api/upload/presign",
            Some(&token),
            json!({"filename": "../../etc/passwd.sh", "content_type": "IMAGE/JPEG", "size": max}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["headers"]["Content-Type"], "image/jpeg");
    let id = b["upload_id"].as_str().unwrap();
    assert_eq!(key_of(&app, id), format!("u/{uid}/2026/11/{id}.jpg"));
}

#[tokio::test]
async fn local_tampered_and_expired_links_are_refused() {
    let app = local_app().await;
    let (token, _) = app.login("alice").await;
    let p = presign(&app, &token, "image/png", PNG.len()).await;
    let url = p["url"].as_str().unwrap().to_string();

    // A flipped signature character, and a payload swapped for another
    // grant's (bigger size) under the old signature.
    let mut bad_sig = url.clone();
    let last = bad_sig.pop().unwrap();
    bad_sig.push(if last == 'A' { 'B' } else { 'A' });
    let (s, b) = put_url(&app, &bad_sig, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let big = presign(&app, &token, "image/png", 1000).await;
    let big_payload = big["url"].as_str().unwrap().rsplit('/').next().unwrap();
    let (payload, _) = big_payload.split_once('.').unwrap();
    let (_, sig) = url.rsplit('/').next().unwrap().split_once('.').unwrap();
    let spliced = format!("{}/{payload}.{sig}", url.rsplit_once('/').unwrap().0);
    let (s, b) = put_url(&app, &spliced, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["code"], "forbidden");

    // Expired (the app clock decides for local links).
    app.clock.advance(chrono::Duration::seconds(901));
    let (s, b) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("expired"), "{b}");
    assert!(files_under(std::path::Path::new(&app.config.storage.local_dir)).is_empty());

    // Download links expire too, and a download link cannot upload.
    let c = upload(&app, &token, PNG).await;
    let dl = c["media"]["url"].as_str().unwrap().to_string();
    let up_with_dl = dl.replace("/api/media/local/", "/api/upload/local/");
    let (s, _) = put_url(&app, &up_with_dl, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(download(&app, &dl).await.0, StatusCode::OK);
    app.clock.advance(chrono::Duration::seconds(901));
    let (s, _, body) = download(&app, &dl).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "forbidden");
}

#[tokio::test]
async fn local_wrong_content_type_is_refused() {
    let app = local_app().await;
    let (token, _) = app.login("alice").await;
    let p = presign(&app, &token, "image/png", PNG.len()).await;
    let (s, b) = put(&app, &p, "image/jpeg", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{b}");
    let (s, b) = put(&app, &p, "text/html", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{b}");
    assert!(files_under(std::path::Path::new(&app.config.storage.local_dir)).is_empty());
    let (s, b) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn local_oversize_put_is_cut_off_and_stores_nothing() {
    // A small JSON body limit proves the upload route has its own limit.
    let app = TestApp::builder()
        .config(|c| {
            c.server.max_body_bytes = 1024;
            c.storage.max_upload_bytes = 64 * 1024;
        })
        .spawn()
        .await;
    let (token, _) = app.login("alice").await;
    let root = std::path::PathBuf::from(&app.config.storage.local_dir);

    // Bigger than server.max_body_bytes but within the grant: accepted.
    let body = vec![7u8; 50_000];
    let c = upload(&app, &token, &body).await;
    let (_, _, got) = download(&app, c["media"]["url"].as_str().unwrap()).await;
    assert_eq!(got, body);
    let stored_before = files_under(&root);

    // Declared too big: refused before a byte is read.
    let p = presign(&app, &token, "image/png", 1000).await;
    let (s, b) = put(&app, &p, "image/png", vec![1u8; 1001]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");

    // Streamed without Content-Length: cut off once past the grant.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![2u8; 100])).collect();
    let res = app
        .client
        .put(reach(&app, p["url"].as_str().unwrap()))
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing stored: no object, no staging file left behind.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(files_under(&root), stored_before);
    let (s, b) = commit(&app, &token, p["upload_id"].as_str().unwrap()).await;
    assert_error(s, &b, 409, "upload_incomplete");
}

#[tokio::test]
async fn commit_before_upload_size_mismatch_and_foreign_uploads() {
    let app = local_app().await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let p = presign(&app, &alice, "image/png", PNG.len()).await;
    let id = p["upload_id"].as_str().unwrap();

    // Before the PUT: 409, retryable.
    let (s, b) = commit(&app, &alice, id).await;
    assert_error(s, &b, 409, "upload_incomplete");
    // Pending media is not readable yet.
    let (s, b) = app.get(&format!("/api/media/{id}"), Some(&alice)).await;
    assert_error(s, &b, 404, "not_found");

    // Fewer bytes than declared: 422, the object is deleted, the upload
    // stays pending and may be PUT again.
    let (s, _) = put(&app, &p, "image/png", PNG[..5].to_vec()).await;
    assert_eq!(s, StatusCode::OK);
    let key = key_of(&app, id);
    assert!(local_file(&app, &key).exists());
    let (s, b) = commit(&app, &alice, id).await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "size");
    assert!(!local_file(&app, &key).exists(), "mismatched object kept");

    let (s, _) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK);
    // Someone else's upload and media: 404, as if they did not exist.
    let (s, b) = commit(&app, &bob, id).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = commit(&app, &alice, id).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.get(&format!("/api/media/{id}"), Some(&bob)).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = commit(&app, &alice, "med_doesnotexist").await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn abandoned_uploads_are_swept_after_a_day() {
    let app = local_app().await;
    let (token, _) = app.login("alice").await;
    let root = std::path::PathBuf::from(&app.config.storage.local_dir);
    let kept = upload(&app, &token, PNG).await;
    let never_put = presign(&app, &token, "image/png", 10).await;
    let put_only = presign(&app, &token, "image/png", PNG.len()).await;
    let (s, _) = put(&app, &put_only, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK);
    let put_only_key = key_of(&app, put_only["upload_id"].as_str().unwrap());

    app.clock.advance(chrono::Duration::hours(23));
    let recent = presign(&app, &token, "image/png", 10).await;
    // Nothing is a day old yet.
    assert_eq!(
        mvp28::storage::service::sweep_pending(app.state())
            .await
            .unwrap(),
        0
    );
    app.clock.advance(chrono::Duration::hours(2));
    // Past a day a pending upload can no longer be committed...
    let (s, b) = commit(&app, &token, put_only["upload_id"].as_str().unwrap()).await;
    assert_error(s, &b, 404, "not_found");
    // ...and the sweep removes both stale rows and the stale object.
    assert_eq!(
        mvp28::storage::service::sweep_pending(app.state())
            .await
            .unwrap(),
        2
    );
    assert!(!local_file(&app, &put_only_key).exists());
    let conn = super::common::TestDb::of(&app);
    let ids: Vec<String> = conn
        .query_all(
            "SELECT id FROM media ORDER BY created_at",
            [] as [&dyn mvp28::db::sql::ToValue; 0],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        ids,
        vec![
            kept["media"]["id"].as_str().unwrap().to_string(),
            recent["upload_id"].as_str().unwrap().to_string()
        ]
    );
    assert!(never_put["upload_id"].is_string());
    // The committed object is untouched.
    assert_eq!(files_under(&root).len(), 1);
    let (s, got) = app
        .get(
            &format!("/api/media/{}", kept["media"]["id"].as_str().unwrap()),
            Some(&token),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(
        download(&app, got["media"]["url"].as_str().unwrap())
            .await
            .2,
        PNG
    );
}

#[tokio::test]
async fn deleting_the_account_deletes_its_local_objects() {
    let app = local_app().await;
    let (alice, alice_id) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    upload(&app, &alice, PNG).await;
    upload(&app, &alice, b"second").await;
    let pending = presign(&app, &alice, "image/png", 3).await;
    put(&app, &pending, "image/png", b"abc".to_vec()).await;
    let bobs = upload(&app, &bob, PNG).await;
    let root = std::path::PathBuf::from(&app.config.storage.local_dir);
    assert_eq!(files_under(&root).len(), 4);

    let (s, _) = app.delete("/api/me", Some(&alice)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let left = files_under(&root);
    assert_eq!(left.len(), 1, "{left:?}");
    // Not even the user's directory is left behind.
    assert!(!root.join("u").join(&alice_id).exists());
    assert_eq!(
        download(&app, bobs["media"]["url"].as_str().unwrap())
            .await
            .2,
        PNG
    );
}

// --------------------------------------------------------------------- s3

#[tokio::test]
async fn s3_upload_commit_download_round_trip() {
    let fake = FakeS3::start().await;
    let app = s3_app(&fake).await;
    let (token, uid) = app.login("alice").await;

    let (s, h) = app.get("/api/health", None).await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["storage"], "ok");

    let p = presign(&app, &token, "image/png", PNG.len()).await;
    let id = p["upload_id"].as_str().unwrap();
    let url = reqwest::Url::parse(p["url"].as_str().unwrap()).unwrap();
    let key = format!("u/{uid}/2026/11/{id}.png");
    assert_eq!(url.path(), format!("/{BUCKET}/{key}"));
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["X-Amz-SignedHeaders"], "content-length;content-type;host");
    assert_eq!(q["X-Amz-Expires"], "900");
    assert_eq!(p["headers"], json!({"Content-Type": "image/png"}));

    let (s, b) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(std::fs::read(fake.file_of(&key)).unwrap(), PNG);

    let (s, c) = commit(&app, &token, id).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["media"]["size"], PNG.len());
    let dl = c["media"]["url"].as_str().unwrap();
    assert!(dl.starts_with(&fake.endpoint), "{dl}");
    let (s, ct, bytes) = download(&app, dl).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bytes, PNG);
    assert_eq!(
        ct.as_deref(),
        Some("image/png"),
        "the bound type was stored"
    );

    let (s, again) = commit(&app, &token, id).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    let (s, got) = app.get(&format!("/api/media/{id}"), Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(
        download(&app, got["media"]["url"].as_str().unwrap())
            .await
            .2,
        PNG
    );

    // The local token routes do not exist on S3.
    let (s, _) = put_url(
        &app,
        &app.url("/api/upload/local/abc.def"),
        "image/png",
        PNG.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn s3_refuses_tampered_wrong_type_and_wrong_size_uploads() {
    let fake = FakeS3::start().await;
    let app = s3_app(&fake).await;
    let (token, _) = app.login("alice").await;
    let p = presign(&app, &token, "image/png", PNG.len()).await;
    let url = p["url"].as_str().unwrap().to_string();

    // The signature is the last query value: change one hex digit.
    let mut tampered = url.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let (s, b) = put_url(&app, &tampered, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("SignatureDoesNotMatch"), "{b}");
    // Another object under the same signature.
    let other = url.replace(".png?", "x.png?");
    let (s, b) = put_url(&app, &other, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // Content-Type is bound.
    let (s, b) = put(&app, &p, "text/html", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // So is Content-Length: a bigger (or smaller) body is refused.
    let mut bigger = PNG.to_vec();
    bigger.extend_from_slice(&[0u8; 4096]);
    let (s, b) = put(&app, &p, "image/png", bigger).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = put(&app, &p, "image/png", PNG[..4].to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    // Nothing landed, so the commit says so.
    let (s, b) = commit(&app, &token, p["upload_id"].as_str().unwrap()).await;
    assert_error(s, &b, 409, "upload_incomplete");
    let (s, b) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn s3_presigned_urls_expire() {
    let fake = FakeS3::start().await;
    let app = s3_app_with(&fake, |c| c.storage.presign_ttl_secs = 1).await;
    let (token, _) = app.login("alice").await;
    let p = presign(&app, &token, "image/png", PNG.len()).await;
    // S3 checks expiry against its own (real) clock.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, b) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("expired"), "{b}");

    let p = presign(&app, &token, "image/png", PNG.len()).await;
    let (s, b) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, c) = commit(&app, &token, p["upload_id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _, body) = download(&app, c["media"]["url"].as_str().unwrap()).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn s3_size_mismatch_deletes_the_object_and_foreign_commit_is_404() {
    let fake = FakeS3::start().await;
    let app = s3_app(&fake).await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let p = presign(&app, &alice, "image/png", PNG.len()).await;
    let id = p["upload_id"].as_str().unwrap();
    let key = key_of(&app, id);

    // A store that did not enforce the signed length (or a writer with the
    // bucket's keys) could leave a wrong-sized object: commit must catch it.
    direct_client(&fake)
        .put(
            &ObjectPath::from(key.as_str()),
            PutPayload::from_static(b"short"),
        )
        .await
        .unwrap();
    assert!(fake.file_of(&key).exists());
    let (s, b) = commit(&app, &bob, id).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = commit(&app, &alice, id).await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "size");
    assert!(!fake.file_of(&key).exists(), "mismatched object kept");
}

#[tokio::test]
async fn s3_account_deletion_and_sweep_delete_objects() {
    let fake = FakeS3::start().await;
    let app = s3_app(&fake).await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let a1 = upload(&app, &alice, PNG).await;
    let a2 = upload(&app, &alice, b"two").await;
    let k1 = key_of(&app, a1["media"]["id"].as_str().unwrap());
    let k2 = key_of(&app, a2["media"]["id"].as_str().unwrap());

    // Bob abandons an upload after the PUT.
    let p = presign(&app, &bob, "image/png", PNG.len()).await;
    put(&app, &p, "image/png", PNG.to_vec()).await;
    let kb = key_of(&app, p["upload_id"].as_str().unwrap());
    assert!(fake.file_of(&kb).exists());

    let (s, _) = app.delete("/api/me", Some(&alice)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(!fake.file_of(&k1).exists());
    assert!(!fake.file_of(&k2).exists());
    assert!(fake.file_of(&kb).exists());

    app.clock.advance(chrono::Duration::hours(25));
    let n = mvp28::storage::service::sweep_pending(app.state())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(!fake.file_of(&kb).exists());
}

#[tokio::test]
async fn s3_health_fails_with_bad_credentials_or_bucket() {
    let fake = FakeS3::start().await;
    let app = s3_app_with(&fake, |c| {
        c.storage.s3.secret_access_key = "wrong-secret-wrong-secret".into()
    })
    .await;
    let (s, h) = app.get("/api/health", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{h}");
    assert_eq!(h["storage"], "error");
    assert_eq!(h["db"], "ok");
    let app = s3_app_with(&fake, |c| c.storage.s3.bucket = "no-such-bucket".into()).await;
    let (s, h) = app.get("/api/health", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{h}");
}

// ------------------------------------------------ Supabase-style endpoint

/// Supabase serves S3 under `https://<project>.supabase.co/storage/v1/s3`:
/// the request goes to the prefixed path, the signature covers that full
/// path, and `host` is the bare authority. The fake (see fakes/s3.rs) only
/// answers under the prefix and verifies signatures over the path as sent.
#[tokio::test]
async fn s3_path_prefixed_endpoint_is_signed_over_the_full_path() {
    let fake = FakeS3::start_prefixed("/storage/v1/s3").await;
    let app = s3_app(&fake).await;
    let (token, uid) = app.login("alice").await;

    let p = presign(&app, &token, "image/png", PNG.len()).await;
    let id = p["upload_id"].as_str().unwrap();
    let key = format!("u/{uid}/2026/11/{id}.png");
    let url = reqwest::Url::parse(p["url"].as_str().unwrap()).unwrap();
    assert_eq!(url.path(), format!("/storage/v1/s3/{BUCKET}/{key}"));

    // presigned PUT (ours), HEAD at commit (object_store's header signing),
    // presigned GET (object_store's Signer): all through the prefix.
    let (s, b) = put(&app, &p, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(std::fs::read(fake.file_of(&key)).unwrap(), PNG);
    let (s, c) = commit(&app, &token, id).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let dl = c["media"]["url"].as_str().unwrap();
    assert!(
        dl.starts_with(&format!("{}/storage/v1/s3/{BUCKET}/", fake.origin)),
        "{dl}"
    );
    let (s, _, bytes) = download(&app, dl).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bytes, PNG);

    let seen = fake.seen();
    let host = fake.origin.trim_start_matches("http://");
    assert!(
        seen.iter().any(|r| r.method == "HEAD" && r.status == 200),
        "{seen:?}"
    );
    for r in &seen {
        assert!(r.path.starts_with("/storage/v1/s3/"), "{r:?}");
        assert_eq!(r.host, host, "Host must be the bare authority: {r:?}");
    }

    // The same object, presigned by a client that leaves the prefix out of
    // the signature (the Supabase SignatureDoesNotMatch bug), is refused:
    // this server really checks that the prefix is signed.
    let no_prefix = AmazonS3Builder::new()
        .with_endpoint(&fake.origin)
        .with_region(REGION)
        .with_bucket_name(BUCKET)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap();
    let signed_without = no_prefix
        .signed_url(
            reqwest::Method::GET,
            &ObjectPath::from(key.as_str()),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(signed_without.path(), format!("/{BUCKET}/{key}"));
    let mut sent_with_prefix = signed_without.clone();
    sent_with_prefix.set_path(&format!("/storage/v1/s3{}", signed_without.path()));
    let (s, _, body) = download(&app, sent_with_prefix.as_str()).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
    // And a request that drops the prefix does not reach S3 at all.
    assert_eq!(
        download(&app, signed_without.as_str()).await.0,
        StatusCode::NOT_FOUND
    );

    // Our PUT URL likewise, re-signed over the path without the prefix.
    let p2 = presign(&app, &token, "image/png", PNG.len()).await;
    let u2 = reqwest::Url::parse(p2["url"].as_str().unwrap()).unwrap();
    let creds = mvp28::storage::sigv4::Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        region: REGION.into(),
        session_token: None,
    };
    let mut bare = u2.clone();
    bare.set_query(None);
    bare.set_path(u2.path().trim_start_matches("/storage/v1/s3"));
    let wrong = mvp28::storage::sigv4::presign(
        &creds,
        "PUT",
        &bare,
        &[
            ("content-length", PNG.len().to_string()),
            ("content-type", "image/png".into()),
        ],
        chrono::Utc::now(),
        60,
    );
    let mut wrong_sent = wrong.clone();
    wrong_sent.set_path(u2.path());
    let (s, b) = put_url(&app, wrong_sent.as_str(), "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = put(&app, &p2, "image/png", PNG.to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

// ----------------------------------------------------------------- config

#[test]
fn s3_config_is_validated() {
    use mvp28::config::Config;
    let s3 = |f: fn(&mut Config)| {
        let mut c = Config::default();
        c.storage.kind = "s3".into();
        c.storage.s3 = mvp28::config::S3Config {
            endpoint: "https://proj.supabase.co/storage/v1/s3".into(),
            region: "ap-southeast-1".into(),
            bucket: "media".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            session_token: String::new(),
        };
        f(&mut c);
        c.validate().map_err(|e| e.key)
    };
    assert!(s3(|_| {}).is_ok());
    assert_eq!(
        s3(|c| c.storage.s3.bucket.clear()).unwrap_err(),
        "storage.s3.bucket"
    );
    assert_eq!(
        s3(|c| c.storage.s3.region.clear()).unwrap_err(),
        "storage.s3.region"
    );
    assert_eq!(
        s3(|c| c.storage.s3.secret_access_key.clear()).unwrap_err(),
        "storage.s3.secret_access_key"
    );
    assert_eq!(
        s3(|c| c.storage.s3.endpoint = "ftp://x".into()).unwrap_err(),
        "storage.s3.endpoint"
    );
    assert_eq!(
        s3(|c| c.storage.s3.endpoint = "https://x/?a=b".into()).unwrap_err(),
        "storage.s3.endpoint"
    );
    assert_eq!(
        s3(|c| c.storage.presign_ttl_secs = 0).unwrap_err(),
        "storage.presign_ttl_secs"
    );
    assert_eq!(
        s3(|c| c.storage.allowed_content_types = vec!["image/PNG".into()]).unwrap_err(),
        "storage.allowed_content_types"
    );
}

#[tokio::test]
async fn local_health_checks_the_directory() {
    let app = local_app().await;
    let (s, h) = app.get("/api/health", None).await;
    assert_eq!((s, &h["storage"]), (StatusCode::OK, &json!("ok")), "{h}");
    std::fs::remove_dir_all(&app.config.storage.local_dir).unwrap();
    // the deep checks are cached for an interval
    app.clock.advance(chrono::Duration::seconds(5));
    let (s, h) = app.get("/api/health", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{h}");
    assert_eq!(h["storage"], "error");
}
