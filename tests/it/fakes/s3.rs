//! A real S3 server in-process: s3s + s3s-fs with SimpleAuth, so every
//! request's SigV4 signature (header or presigned query) is verified the
//! way S3 does, expiry included. moto-style fakes that accept any
//! signature would prove nothing here.
//!
//! `start_prefixed("/storage/v1/s3")` serves it the way Supabase does, under
//! a path prefix. s3s has no notion of a base path and verifies signatures
//! over the request path exactly as received, so the prefix is *not*
//! stripped: s3s sees the path-style bucket `storage` and the key
//! `v1/s3/<bucket>/<key>`. A client therefore only succeeds if it sends the
//! request to the prefixed path AND signs that full path with the bare
//! host — exactly what Supabase requires. Object operations (PUT, GET,
//! HEAD, DELETE) work that way; bucket operations (list, bulk delete) do
//! not, which is why the prefixed tests stick to the upload flow.
//!
//! `start_session` serves Supabase's session-token authentication: the
//! access key id is the project ref, the secret the anon key, and every
//! request must carry the JWT as `X-Amz-Security-Token` (a signed header,
//! or a query parameter of a presigned URL, which is signed with the rest
//! of the query); s3s itself ignores the token, so it is checked here.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mvp28::config::S3Config;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "AKIAMVP28TESTKEY";
pub const SECRET_KEY: &str = "mvp28-test-secret/0123456789abcdefABCDEF";
pub const REGION: &str = "ap-southeast-1";
pub const BUCKET: &str = "media";

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub host: String,
    pub status: u16,
}

pub struct FakeS3 {
    /// What to configure as `storage.s3.endpoint`.
    pub endpoint: String,
    access_key: String,
    secret_key: String,
    token: Option<String>,
    /// `http://127.0.0.1:port`, without any prefix.
    pub origin: String,
    pub prefix: String,
    root: TempDir,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeS3 {
    pub async fn start() -> FakeS3 {
        Self::start_prefixed("").await
    }

    pub async fn start_prefixed(prefix: &str) -> FakeS3 {
        Self::start_with(prefix, ACCESS_KEY, SECRET_KEY, None).await
    }

    /// Supabase's session-token mode under its `/storage/v1/s3` prefix.
    pub async fn start_session(project_ref: &str, anon_key: &str, token: &str) -> FakeS3 {
        Self::start_with("/storage/v1/s3", project_ref, anon_key, Some(token)).await
    }

    /// Session-token mode without the prefix (a fake under a prefix cannot
    /// list, which /api/health does).
    pub async fn start_session_unprefixed(
        project_ref: &str,
        anon_key: &str,
        token: &str,
    ) -> FakeS3 {
        Self::start_with("", project_ref, anon_key, Some(token)).await
    }

    async fn start_with(
        prefix: &str,
        access_key: &str,
        secret_key: &str,
        token: Option<&str>,
    ) -> FakeS3 {
        let root = tempfile::tempdir().unwrap();
        // The path-style bucket s3s will see first in the path.
        let first = if prefix.is_empty() {
            BUCKET
        } else {
            prefix.trim_start_matches('/').split('/').next().unwrap()
        };
        std::fs::create_dir_all(root.path().join(first)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(access_key, secret_key));
        let s3 = b.build();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, prefix2) = (seen.clone(), prefix.to_string());
        let token2 = token.map(str::to_string);
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (s3, seen, prefix) = (s3.clone(), seen2.clone(), prefix2.clone());
                let token = token2.clone();
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let (s3, seen, prefix) = (s3.clone(), seen.clone(), prefix.clone());
                    let token_refusal = token.as_deref().and_then(|t| check_token(&req, t));
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let res = if let Some(code) = token_refusal {
                            Ok(hyper::Response::builder()
                                .status(403)
                                .header("content-type", "application/xml")
                                .body(s3s::Body::from(format!(
                                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                                     <Message>security token refused</Message></Error>"
                                )))
                                .unwrap())
                        } else if !prefix.is_empty() && !path.starts_with(&format!("{prefix}/")) {
                            // Like Supabase: nothing is served outside the prefix.
                            Ok(hyper::Response::builder()
                                .status(404)
                                .body(s3s::Body::empty())
                                .unwrap())
                        } else {
                            s3.call(req.map(s3s::Body::from)).await
                        };
                        let status = res.as_ref().map(|r| r.status().as_u16()).unwrap_or(500);
                        seen.lock().unwrap().push(Seen {
                            method,
                            path,
                            host,
                            status,
                        });
                        res
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        FakeS3 {
            endpoint: format!("{origin}{prefix}"),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            token: token.map(str::to_string),
            origin,
            prefix: prefix.to_string(),
            root,
            seen,
        }
    }

    /// `[storage.s3]` pointing at this server.
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: self.endpoint.clone(),
            region: REGION.into(),
            bucket: BUCKET.into(),
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: self.token.clone().unwrap_or_default(),
        }
    }

    /// Where s3s-fs keeps the bytes of `key`.
    pub fn file_of(&self, key: &str) -> PathBuf {
        let mut p = self.root.path().to_path_buf();
        for part in self.prefix.split('/').filter(|s| !s.is_empty()) {
            p.push(part);
        }
        p.push(BUCKET);
        p.push(key);
        p
    }

    /// Files stored under the bucket (s3s-fs keeps one per object).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = vec![];
        walk(&self.file_of(""), &mut out);
        out
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// None when the request carries `token` signed (a header listed in the
/// SigV4 SignedHeaders, or the presigned query parameter); else the S3
/// error code to refuse it with.
fn check_token(req: &hyper::Request<Incoming>, token: &str) -> Option<&'static str> {
    let header = req
        .headers()
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    let query: Vec<(String, String)> = reqwest::Url::parse(&format!("http://fake{}", req.uri()))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let in_query = query
        .iter()
        .find(|(k, _)| k == "X-Amz-Security-Token")
        .map(|(_, v)| v.as_str());
    let signed_header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("SignedHeaders=").nth(1))
        .is_some_and(|h| {
            h.split([',', ' '])
                .next()
                .unwrap_or("")
                .split(';')
                .any(|n| n == "x-amz-security-token")
        });
    match (header, in_query) {
        (Some(t), _) if t == token && signed_header => None,
        (None, Some(t)) if t == token => None,
        (None, None) => Some("AccessDenied"),
        _ => Some("InvalidToken"),
    }
}
