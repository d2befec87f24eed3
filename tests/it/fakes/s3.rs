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
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = b.build();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, prefix2) = (seen.clone(), prefix.to_string());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (s3, seen, prefix) = (s3.clone(), seen2.clone(), prefix2.clone());
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let (s3, seen, prefix) = (s3.clone(), seen.clone(), prefix.clone());
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let res = if !prefix.is_empty() && !path.starts_with(&format!("{prefix}/"))
                        {
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
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
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

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}
