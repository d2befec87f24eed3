//! The original deployment's Supabase variables, as storage settings.
//!
//! `SUPABASE_URL` means "files live in this project's Storage", so it
//! selects the S3 backend (endpoint = URL + `/storage/v1/s3`); leaving
//! storage on local disk without a word would lose the operator's intent.
//! Credentials come either from S3 access keys
//! (`SUPABASE_S3_ACCESS_KEY_ID`/`_SECRET_ACCESS_KEY`) or, as the original
//! deployment had them, from `SUPABASE_ANON_KEY` + `SUPABASE_SERVICE_KEY`:
//! Supabase's session-token authentication, where the access key id is the
//! project ref, the secret is the anon key and `X-Amz-Security-Token`
//! carries a JWT (the service key: full access, no row-level security).

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Value};

/// Storage keys set by the Supabase variables: (key under `storage`, value).
pub(super) fn storage_settings(env: &HashMap<String, String>) -> Vec<(&'static str, Value)> {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
    let mut out = vec![];
    // The S3 key pair also serves `admin backup --to s3://` without a URL.
    if let Some(v) = get("SUPABASE_S3_ACCESS_KEY_ID") {
        out.push(("s3.access_key_id", json!(v)));
    }
    if let Some(v) = get("SUPABASE_S3_SECRET_ACCESS_KEY") {
        out.push(("s3.secret_access_key", json!(v)));
    }
    let Some(url) = get("SUPABASE_URL") else {
        return out;
    };
    let url = url.trim_end_matches('/');
    out.push(("kind", json!("s3")));
    out.push(("s3.endpoint", json!(format!("{url}/storage/v1/s3"))));
    let has_s3_keys = get("SUPABASE_S3_ACCESS_KEY_ID").is_some()
        || get("SUPABASE_S3_SECRET_ACCESS_KEY").is_some();
    let service = get("SUPABASE_SERVICE_KEY").or_else(|| get("SUPABASE_SERVICE_ROLE_KEY"));
    if let (false, Some(anon), Some(service)) = (has_s3_keys, get("SUPABASE_ANON_KEY"), service) {
        if let Some(r) = project_ref(url, anon) {
            out.push(("s3.access_key_id", json!(r)));
        }
        out.push(("s3.secret_access_key", json!(anon)));
        out.push(("s3.session_token", json!(service)));
    }
    out
}

/// The project ref: the first label of `<ref>.supabase.co`, else the `ref`
/// claim of the anon key (a JWT; read, not verified — Supabase verifies it).
fn project_ref(url: &str, anon_key: &str) -> Option<String> {
    let host = reqwest::Url::parse(url)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    if let Some(r) = host
        .strip_suffix(".supabase.co")
        .or_else(|| host.strip_suffix(".supabase.in"))
        .filter(|r| !r.is_empty() && !r.contains('.'))
    {
        return Some(r.to_string());
    }
    let payload = anon_key.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["ref"]
        .as_str()
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn the_project_ref_comes_from_the_host_or_the_anon_key() {
        assert_eq!(
            project_ref("https://abcdefghijklmnopqrst.supabase.co", "x").as_deref(),
            Some("abcdefghijklmnopqrst")
        );
        let anon = jwt(json!({"iss": "supabase", "ref": "fromthekey", "role": "anon"}));
        assert_eq!(
            project_ref("https://files.example.com", &anon).as_deref(),
            Some("fromthekey")
        );
        assert_eq!(project_ref("https://files.example.com", "not-a-jwt"), None);
    }

    #[test]
    fn anon_and_service_keys_select_session_token_auth() {
        let env: HashMap<String, String> = [
            ("SUPABASE_URL", "https://abcdefghijklmnopqrst.supabase.co/"),
            ("SUPABASE_ANON_KEY", "anon"),
            ("SUPABASE_SERVICE_KEY", "service"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got: HashMap<_, _> = storage_settings(&env).into_iter().collect();
        assert_eq!(got["kind"], "s3");
        assert_eq!(
            got["s3.endpoint"],
            "https://abcdefghijklmnopqrst.supabase.co/storage/v1/s3"
        );
        assert_eq!(got["s3.access_key_id"], "abcdefghijklmnopqrst");
        assert_eq!(got["s3.secret_access_key"], "anon");
        assert_eq!(got["s3.session_token"], "service");
    }
}
