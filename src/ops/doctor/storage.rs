//! Storage: a probe object put, read, deleted; on S3 also a presigned PUT
//! through the real endpoint, the way clients upload.

use axum::body::Bytes;
use chrono::Utc;

use super::{http, Check, PROBE_TIMEOUT};
use crate::config::Config;
use crate::storage::Storage;

pub async fn storage(cfg: &Config) -> Vec<Check> {
    let s3 = cfg.storage.kind == "s3";
    let where_ = if s3 {
        format!("s3 {}/{}", cfg.storage.s3.endpoint, cfg.storage.s3.bucket)
    } else {
        format!("local {}", cfg.storage.local_dir)
    };
    // Local grants are not issued here, so any key will do.
    let store = match Storage::from_config(cfg, b"mvp28 doctor: no grants are issued") {
        Ok(s) => s,
        Err(e) => {
            let key = if s3 {
                "storage.s3.endpoint"
            } else {
                "storage.local_dir"
            };
            return vec![Check::fail("storage", key, format!("{where_}: {e:#}"), "")];
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, round_trip(&store, s3)).await {
        Ok(Ok(done)) => vec![Check::ok("storage", format!("{where_}: {done}"))],
        Ok(Err(e)) => {
            let (key, fix) = storage_fault(cfg, &e);
            vec![Check::fail("storage", key, format!("{where_}: {e}"), fix)]
        }
        Err(_) => vec![Check::fail(
            "storage",
            if s3 {
                "storage.s3.endpoint"
            } else {
                "storage.local_dir"
            },
            format!("{where_}: no answer within {} s", PROBE_TIMEOUT.as_secs()),
            "check that the endpoint is reachable from this machine",
        )],
    }
}

/// Put, get, delete a probe object; on S3 also a PUT to a presigned URL
/// through the real endpoint (what clients do).
async fn round_trip(store: &Storage, s3: bool) -> Result<String, String> {
    let body = Bytes::from_static(b"mvp28 doctor probe\n");
    let key = format!("doctor/probe-{}.txt", crate::ids::random_hex(8));
    store
        .put(&key, body.clone())
        .await
        .map_err(|e| format!("put failed: {e}"))?;
    let got = store
        .read_all(&key, 1024)
        .await
        .map_err(|e| format!("get failed: {e}"))?;
    if got.as_ref() != Some(&body) {
        return Err("get returned other bytes than were put".into());
    }
    store
        .delete(&key)
        .await
        .map_err(|e| format!("delete failed: {e}"))?;
    if store
        .size_of(&key)
        .await
        .map_err(|e| format!("head after delete failed: {e}"))?
        .is_some()
    {
        return Err("the probe object is still there after delete".into());
    }
    if !s3 {
        return Ok("put, get and delete work".into());
    }
    let key = format!("doctor/presigned-{}.txt", crate::ids::random_hex(8));
    let url = store
        .upload_url(&key, "text/plain", body.len() as u64, Utc::now())
        .map_err(|e| format!("presign failed: {e}"))?;
    let mut req = http().put(&url.url).body(body.clone());
    for (k, v) in &url.headers {
        req = req.header(*k, v);
    }
    let res = req
        .send()
        .await
        .map_err(|e| format!("presigned PUT failed: {}", e.without_url()))?;
    let status = res.status();
    if !status.is_success() {
        let text = res.text().await.unwrap_or_default();
        return Err(format!(
            "presigned PUT refused ({status}): {}",
            s3_error_code(&text)
        ));
    }
    let size = store
        .size_of(&key)
        .await
        .map_err(|e| format!("head of the presigned upload failed: {e}"))?;
    let _ = store.delete(&key).await;
    if size != Some(body.len() as u64) {
        return Err("the presigned upload did not arrive".into());
    }
    Ok("put, get, delete and a presigned PUT work".into())
}

/// `<Code>…</Code>` of an S3 error body.
fn s3_error_code(xml: &str) -> String {
    xml.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string())
        .unwrap_or_else(|| xml.chars().take(120).collect())
}

fn storage_fault(cfg: &Config, error: &str) -> (&'static str, String) {
    if cfg.storage.kind != "s3" {
        return (
            "storage.local_dir",
            "make the directory writable by the service user".into(),
        );
    }
    let has = |s: &str| error.contains(s);
    if has("NoSuchBucket") {
        return (
            "storage.s3.bucket",
            "create the bucket (private) or correct its name".into(),
        );
    }
    let refused = [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "403",
    ];
    if refused.iter().any(|s| has(s)) {
        return if cfg.storage.s3.session_token.is_empty() {
            (
                "storage.s3.secret_access_key",
                "the S3 access key pair (SUPABASE_S3_ACCESS_KEY_ID / SUPABASE_S3_SECRET_ACCESS_KEY) \
                 must be a current pair for this endpoint, and storage.s3.region the store's region"
                    .into(),
            )
        } else {
            (
                "storage.s3.session_token",
                "SUPABASE_ANON_KEY and SUPABASE_SERVICE_KEY must be this project's anon and \
                 service_role keys, storage.s3.access_key_id its project ref and \
                 storage.s3.region its region"
                    .into(),
            )
        };
    }
    (
        "storage.s3.endpoint",
        "check the endpoint URL (SUPABASE_URL) and that it is reachable from this machine".into(),
    )
}
