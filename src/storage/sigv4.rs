//! SigV4 query-string presigning that can bind request headers.
//!
//! object_store's `Signer` signs only `host`, so a URL it presigns would
//! accept any Content-Type and any size. Uploads need both bound: the client
//! must send exactly the Content-Type and Content-Length it was granted, or
//! the store answers 403 SignatureDoesNotMatch. Everything else (HEAD, GET,
//! DELETE, list, and the download URLs) goes through object_store.
//!
//! The canonical URI is the *whole* path of the URL, endpoint prefix
//! included (Supabase serves S3 under `/storage/v1/s3`), while the signed
//! `host` is the bare authority — the pair some S3 clients get wrong.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// Temporary credentials' token (Supabase: a JWT), signed into the URL
    /// as `X-Amz-Security-Token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Presigns `method` on `url` (which must carry no query) for `expires_secs`
/// from `now`; `headers` (lowercase names) must be sent as given.
pub fn presign(
    creds: &Credentials,
    method: &str,
    url: &Url,
    headers: &[(&str, String)],
    now: DateTime<Utc>,
    expires_secs: u64,
) -> Url {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = now.format("%Y%m%d").to_string();
    let scope = format!("{day}/{}/s3/aws4_request", creds.region);
    let host = authority(url);

    let mut signed: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .chain(std::iter::once(("host".to_string(), host)))
        .collect();
    signed.sort();
    let signed_names = signed
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");

    let mut query = vec![
        ("X-Amz-Algorithm".to_string(), ALGORITHM.to_string()),
        (
            "X-Amz-Credential".to_string(),
            format!("{}/{scope}", creds.access_key_id),
        ),
        ("X-Amz-Date".to_string(), amz_date.clone()),
        ("X-Amz-Expires".to_string(), expires_secs.to_string()),
        ("X-Amz-SignedHeaders".to_string(), signed_names.clone()),
    ];
    // With temporary credentials the token is part of the signed query
    // (AWS: "Authenticating Requests: Using Query Parameters").
    if let Some(token) = &creds.session_token {
        query.push(("X-Amz-Security-Token".to_string(), token.clone()));
    }
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, true), uri_encode(v, true)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    // `Url::path` is already percent-encoded; S3 signs it as sent.
    let canonical_request = format!(
        "{method}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_names}\nUNSIGNED-PAYLOAD",
        url.path()
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        day.as_bytes(),
    );
    for part in [creds.region.as_bytes(), b"s3", b"aws4_request"] {
        key = hmac(&key, part);
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));

    let mut out = url.clone();
    out.set_query(Some(&format!(
        "{canonical_query}&X-Amz-Signature={signature}"
    )));
    out
}

/// The Host header a client sends for this URL: host, plus the port only
/// when it is not the scheme's default.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// RFC 3986 percent-encoding as SigV4 wants it (unreserved kept; `/` kept
/// only in paths).
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The presigned-URL example of the AWS S3 SigV4 documentation
    /// ("Authenticating Requests: Using Query Parameters").
    #[test]
    fn matches_the_aws_documentation_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            session_token: None,
        };
        let url = Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let now = Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap();
        let signed = presign(&creds, "GET", &url, &[], now, 86400);
        let sig = signed
            .query_pairs()
            .find(|(k, _)| k == "X-Amz-Signature")
            .unwrap()
            .1
            .into_owned();
        assert_eq!(
            sig,
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn signs_the_endpoint_prefix_and_the_bare_host() {
        let creds = Credentials {
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            region: "r".into(),
            session_token: None,
        };
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let with_prefix = Url::parse("https://p.example/storage/v1/s3/b/key.png").unwrap();
        let without = Url::parse("https://p.example/b/key.png").unwrap();
        let h = [("content-type", "image/png".to_string())];
        let a = presign(&creds, "PUT", &with_prefix, &h, now, 60);
        let b = presign(&creds, "PUT", &without, &h, now, 60);
        assert_eq!(a.path(), "/storage/v1/s3/b/key.png");
        assert_eq!(a.host_str(), Some("p.example"));
        assert_ne!(a.query(), b.query(), "the prefix must be signed");
        assert!(a
            .query()
            .unwrap()
            .contains("X-Amz-SignedHeaders=content-type%3Bhost"));
    }
}
