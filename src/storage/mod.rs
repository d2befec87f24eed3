//! Object storage through `object_store`: S3 (Supabase or any S3) or the
//! local disk, plus the URLs clients upload to and download from.
//!
//! Clients never send object bytes through our JSON API: they get a
//! short-lived URL. On S3 that is a SigV4 presigned URL the store checks;
//! on local disk it is this binary's own `/api/upload/local/{token}` and
//! `/api/media/local/{token}` routes with an HMAC-signed grant.

pub mod handlers;
pub mod service;
pub mod sigv4;
pub mod token;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::body::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetResult, ObjectStore, ObjectStoreExt, PutPayloadMut, RetryConfig,
};
use reqwest::Url;

use crate::config::Config;
use token::{Grant, TokenKey};

pub use object_store::Error as StoreError;

/// Local writes go to disk in blocks of this size: memory stays bounded
/// without a blocking write per small network chunk.
const WRITE_BLOCK: usize = 256 * 1024;
/// S3 multipart parts must be at least 5 MiB (all but the last).
const S3_PART: usize = 5 * 1024 * 1024;

pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    ttl: Duration,
}

enum Backend {
    Local {
        tokens: TokenKey,
        public_url: String,
        root: std::path::PathBuf,
    },
    S3 {
        s3: Arc<AmazonS3>,
        creds: sigv4::Credentials,
        /// `{endpoint}/{bucket}`: path-style, endpoint prefix included.
        bucket_url: String,
    },
}

/// Where and how a client sends (or fetches) the bytes.
#[derive(Debug, Clone)]
pub struct SignedUrl {
    pub url: String,
    /// Headers the client must send exactly as given.
    pub headers: Vec<(&'static str, String)>,
    pub expires_at: DateTime<Utc>,
}

/// Why a local upload was refused.
#[derive(Debug)]
pub enum WriteError {
    /// More bytes than granted; nothing was stored.
    TooLarge,
    /// The client's body failed (disconnect, body limit).
    Body(axum::Error),
    Store(StoreError),
}

impl Storage {
    pub fn from_config(config: &Config, jwt_secret: &[u8]) -> anyhow::Result<Storage> {
        let st = &config.storage;
        let ttl = Duration::from_secs(st.presign_ttl_secs);
        match st.kind.as_str() {
            "s3" => {
                let s3 = &st.s3;
                let endpoint = if s3.endpoint.is_empty() {
                    format!("https://s3.{}.amazonaws.com", s3.region)
                } else {
                    s3.endpoint.trim_end_matches('/').to_string()
                };
                // A dead store must not hold a request for object_store's
                // default retry budget (minutes).
                let options = ClientOptions::new()
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(30));
                let retry = RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                    ..RetryConfig::default()
                };
                let mut builder = AmazonS3Builder::new()
                    .with_endpoint(&endpoint)
                    .with_region(&s3.region)
                    .with_bucket_name(&s3.bucket)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key);
                let session_token =
                    (!s3.session_token.is_empty()).then(|| s3.session_token.clone());
                if let Some(token) = &session_token {
                    builder = builder.with_token(token);
                }
                let store = builder
                    // Path-style: Supabase (and most S3-compatibles) do not
                    // serve buckets as subdomains.
                    .with_virtual_hosted_style_request(false)
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .context("configuring S3 storage")?;
                let store = Arc::new(store);
                Ok(Storage {
                    store: store.clone(),
                    backend: Backend::S3 {
                        s3: store,
                        creds: sigv4::Credentials {
                            access_key_id: s3.access_key_id.clone(),
                            secret_access_key: s3.secret_access_key.clone(),
                            region: s3.region.clone(),
                            session_token,
                        },
                        bucket_url: format!("{endpoint}/{}", s3.bucket),
                    },
                    ttl,
                })
            }
            _ => {
                let dir = std::path::Path::new(&st.local_dir);
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating storage directory {}", dir.display()))?;
                // Cleanup removes the empty u/{user}/… directories a deleted
                // object leaves behind: a deleted account leaves no trace.
                let store = LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("opening storage directory {}", dir.display()))?
                    .with_automatic_cleanup(true);
                Ok(Storage {
                    store: Arc::new(store),
                    backend: Backend::Local {
                        tokens: TokenKey::derive(jwt_secret),
                        public_url: config.server.public_url.trim_end_matches('/').to_string(),
                        root: dir.to_path_buf(),
                    },
                    ttl,
                })
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Local { .. } => "local",
            Backend::S3 { .. } => "s3",
        }
    }

    /// A cheap check that the store answers: one list request on a prefix
    /// that holds nothing (a missing bucket or bad credentials fail it,
    /// unlike a HEAD of a missing key).
    pub async fn health(&self) -> Result<(), String> {
        if let Backend::Local { root, .. } = &self.backend {
            // Listing a missing directory is just empty: check the root.
            let md = tokio::fs::metadata(root)
                .await
                .map_err(|e| format!("{}: {e}", root.display()))?;
            if !md.is_dir() || md.permissions().readonly() {
                return Err(format!("{} is not a writable directory", root.display()));
            }
        }
        let probe = ObjectPath::from("health-probe");
        match self.store.list(Some(&probe)).next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    /// The object's size, or None when it does not exist.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes one object; a missing one is already deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes many objects (one bulk request per 1000 on S3); returns the
    /// keys that could not be deleted. A missing object counts as deleted.
    pub async fn delete_all(&self, keys: &[String]) -> Vec<String> {
        if keys.is_empty() {
            return vec![];
        }
        let paths: Vec<object_store::Result<ObjectPath>> = keys
            .iter()
            .map(|k| Ok(ObjectPath::from(k.as_str())))
            .collect();
        let results: Vec<_> = self
            .store
            .delete_stream(futures_util::stream::iter(paths).boxed())
            .collect()
            .await;
        let mut failed = vec![];
        let mut any_error = false;
        for (key, r) in keys.iter().zip(&results) {
            match r {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not delete object");
                    any_error = true;
                    failed.push(key.clone());
                }
            }
        }
        // A failed bulk request yields one error for its whole chunk, so
        // results no longer line up with keys: count them all as failed.
        if any_error && results.len() != keys.len() {
            return keys.to_vec();
        }
        failed
    }

    /// A URL the client PUTs the bytes to, bound to this key, size and type.
    pub fn upload_url(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<SignedUrl> {
        let headers = vec![("Content-Type", content_type.to_string())];
        match &self.backend {
            Backend::Local {
                tokens, public_url, ..
            } => {
                let expires_at = now + self.ttl;
                let token = tokens.sign(&Grant::Put {
                    key: key.into(),
                    size,
                    content_type: content_type.into(),
                    exp: expires_at.timestamp(),
                });
                Ok(SignedUrl {
                    url: format!("{public_url}/api/upload/local/{token}"),
                    headers,
                    expires_at,
                })
            }
            Backend::S3 {
                creds, bucket_url, ..
            } => {
                // The store checks expiry against its own clock, so S3 URLs
                // are dated by the wall clock, not the app's clock.
                let now = Utc::now();
                let url = Url::parse(&format!("{bucket_url}/{}", sigv4::uri_encode(key, false)))?;
                // Content-Length is signed too: the store refuses a body of
                // any other size, so nobody can park gigabytes on our URL.
                let signed = [
                    ("content-length", size.to_string()),
                    ("content-type", content_type.to_string()),
                ];
                let url = sigv4::presign(creds, "PUT", &url, &signed, now, self.ttl.as_secs());
                Ok(SignedUrl {
                    url: url.to_string(),
                    headers,
                    expires_at: now + self.ttl,
                })
            }
        }
    }

    /// A short-lived URL that downloads the object without a bearer token.
    pub async fn download_url(
        &self,
        key: &str,
        content_type: &str,
        now: DateTime<Utc>,
    ) -> Result<SignedUrl, StoreError> {
        self.download_url_for(key, content_type, now, self.ttl)
            .await
    }

    /// [`download_url`](Self::download_url) valid for `ttl` (e.g. the URL
    /// WeChat's content check fetches later). Local storage: a URL of
    /// `server.public_url`, so that must be reachable by whoever fetches it.
    pub async fn download_url_for(
        &self,
        key: &str,
        content_type: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<SignedUrl, StoreError> {
        match &self.backend {
            Backend::Local {
                tokens, public_url, ..
            } => {
                let expires_at = now + ttl;
                let token = tokens.sign(&Grant::Get {
                    key: key.into(),
                    content_type: content_type.into(),
                    exp: expires_at.timestamp(),
                });
                Ok(SignedUrl {
                    url: format!("{public_url}/api/media/local/{token}"),
                    headers: vec![],
                    expires_at,
                })
            }
            Backend::S3 { s3, .. } => {
                let url = s3
                    .signed_url(reqwest::Method::GET, &ObjectPath::from(key), ttl)
                    .await?;
                Ok(SignedUrl {
                    url: url.to_string(),
                    headers: vec![],
                    expires_at: Utc::now() + ttl,
                })
            }
        }
    }

    /// The grant of a local-route token; None on S3 (the route does not exist
    /// there).
    pub fn verify_local(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Option<Result<Grant, &'static str>> {
        match &self.backend {
            Backend::Local { tokens, .. } => Some(tokens.verify(token, now.timestamp())),
            Backend::S3 { .. } => None,
        }
    }

    /// Streams `body` into the object at `key`: written to a staging file
    /// and renamed into place only when complete, so a reader never sees a
    /// partial object; more than `limit` bytes aborts and stores nothing.
    pub async fn write_stream(&self, key: &str, limit: u64, body: Body) -> Result<u64, WriteError> {
        self.write_chunks(key, limit, body.into_data_stream()).await
    }

    /// [`write_stream`](Self::write_stream) from any stream of chunks (a
    /// multipart form's file part): local disk or S3 multipart upload, a
    /// block at a time, never the whole object in memory.
    pub async fn write_chunks<S, E>(
        &self,
        key: &str,
        limit: u64,
        stream: S,
    ) -> Result<u64, WriteError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send,
        E: Into<axum::BoxError>,
    {
        let mut upload = self
            .store
            .put_multipart(&ObjectPath::from(key))
            .await
            .map_err(WriteError::Store)?;
        let block_size = match self.backend {
            Backend::Local { .. } => WRITE_BLOCK,
            Backend::S3 { .. } => S3_PART,
        };
        let mut stream = std::pin::pin!(stream);
        let mut block = PutPayloadMut::new();
        let mut total: u64 = 0;
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk: Bytes = chunk.map_err(|e| WriteError::Body(axum::Error::new(e)))?;
                total += chunk.len() as u64;
                if total > limit {
                    return Err(WriteError::TooLarge);
                }
                block.push(chunk);
                if block.content_length() >= block_size {
                    let full = std::mem::take(&mut block).freeze();
                    upload.put_part(full).await.map_err(WriteError::Store)?;
                }
            }
            if !block.is_empty() {
                upload
                    .put_part(std::mem::take(&mut block).freeze())
                    .await
                    .map_err(WriteError::Store)?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                upload.complete().await.map_err(WriteError::Store)?;
                Ok(total)
            }
            Err(e) => {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(error = %abort, "could not remove a partial upload");
                }
                Err(e)
            }
        }
    }

    /// Opens an object for streaming out.
    pub async fn read(&self, key: &str) -> Result<GetResult, StoreError> {
        self.store.get(&ObjectPath::from(key)).await
    }

    /// The whole object in memory, refused (None) past `max` bytes so a
    /// stored object can never take unbounded memory.
    pub async fn read_all(&self, key: &str, max: u64) -> Result<Option<Bytes>, StoreError> {
        let got = self.read(key).await?;
        if got.meta.size > max {
            return Ok(None);
        }
        got.bytes().await.map(Some)
    }

    /// Stores bytes the server produced itself (e.g. text-to-speech audio).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.store
            .put(&ObjectPath::from(key), bytes.into())
            .await
            .map(|_| ())
    }

    /// The object's bytes as a body stream.
    pub fn body_of(result: GetResult) -> Body {
        Body::from_stream(result.into_stream().map_err(std::io::Error::other))
    }
}
