use serde::{Deserialize, Serialize};

use super::{bad, check_url, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: String,
    pub local_dir: String,
    pub max_upload_bytes: u64,
    pub allowed_content_types: Vec<String>,
    /// Lifetime of presigned upload and download URLs.
    pub presign_ttl_secs: u64,
    /// PDF text is extracted in a child process of this binary: at most
    /// this much address space (MiB) ...
    pub pdf_max_memory_mib: u64,
    /// ... and this many seconds (CPU and wall clock).
    pub pdf_timeout_secs: u64,
    /// The mvp28 binary run as that child; empty = this executable.
    pub pdf_helper: String,
    /// Bytes one user may store, committed plus pending uploads.
    pub max_bytes_per_user: u64,
    /// Uploads one user may have presigned and not yet committed.
    pub max_pending_uploads_per_user: u32,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            local_dir: "data/objects".into(),
            max_upload_bytes: 20 * 1024 * 1024,
            allowed_content_types: [
                "image/jpeg",
                "image/png",
                "image/webp",
                "audio/mpeg",
                "audio/mp4",
                "audio/wav",
                "application/pdf",
            ]
            .map(String::from)
            .to_vec(),
            presign_ttl_secs: 900,
            pdf_max_memory_mib: 256,
            pdf_timeout_secs: 20,
            pdf_helper: String::new(),
            max_bytes_per_user: 1024 * 1024 * 1024,
            max_pending_uploads_per_user: 20,
            s3: S3Config::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Temporary credentials: sent as `X-Amz-Security-Token` and signed.
    /// Supabase's session-token mode (access key id = project ref, secret
    /// = anon key, token = a JWT such as the service key) uses it.
    pub session_token: String,
}

impl StorageConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes_per_user == 0 {
            return Err(bad("storage.max_bytes_per_user", "must be > 0"));
        }
        if self.max_pending_uploads_per_user == 0 {
            return Err(bad("storage.max_pending_uploads_per_user", "must be > 0"));
        }
        if self.pdf_max_memory_mib < 64 {
            return Err(bad("storage.pdf_max_memory_mib", "must be >= 64"));
        }
        if self.pdf_timeout_secs == 0 || self.pdf_timeout_secs > 600 {
            return Err(bad("storage.pdf_timeout_secs", "must be 1-600"));
        }
        match self.kind.as_str() {
            "local" => {
                if self.local_dir.trim().is_empty() {
                    return Err(bad("storage.local_dir", "must not be empty"));
                }
            }
            "s3" => validate_s3(&self.s3)?,
            other => return Err(bad("storage.kind", format!("{other:?} is not local or s3"))),
        }
        if self.max_upload_bytes == 0 {
            return Err(bad("storage.max_upload_bytes", "must be > 0"));
        }
        if self.allowed_content_types.is_empty() {
            return Err(bad("storage.allowed_content_types", "must not be empty"));
        }
        for t in &self.allowed_content_types {
            if !is_plain_mime(t) {
                return Err(bad(
                    "storage.allowed_content_types",
                    format!("{t:?} is not a lowercase type/subtype without parameters"),
                ));
            }
        }
        // Pending uploads are swept after a day; a URL must die well before
        // that, or an upload could land after its row was swept and the
        // object would never be found again.
        if !(1..=43_200).contains(&self.presign_ttl_secs) {
            return Err(bad(
                "storage.presign_ttl_secs",
                "must be between 1 and 43200 (12 hours)",
            ));
        }
        Ok(())
    }
}

/// Only checked when `storage.kind = "s3"`: a local setup may leave the
/// S3 keys at their empty defaults.
fn validate_s3(s3: &S3Config) -> Result<(), ConfigError> {
    if !s3.endpoint.is_empty() {
        check_url("storage.s3.endpoint", &s3.endpoint)?;
        let url = reqwest::Url::parse(&s3.endpoint)
            .map_err(|e| bad("storage.s3.endpoint", format!("not a URL: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad(
                "storage.s3.endpoint",
                "must not carry a query, fragment or credentials",
            ));
        }
    }
    for (key, value) in [
        ("storage.s3.region", &s3.region),
        ("storage.s3.bucket", &s3.bucket),
        ("storage.s3.access_key_id", &s3.access_key_id),
        ("storage.s3.secret_access_key", &s3.secret_access_key),
    ] {
        if value.trim().is_empty() {
            let env = format!("MVP28_{}", key.replace('.', "__").to_ascii_uppercase());
            return Err(bad(
                key,
                format!(
                    "required when storage.kind = \"s3\" (SUPABASE_URL selects it); set it in \
                     config.toml or as {env}"
                ),
            ));
        }
    }
    // Path-style addressing puts the bucket in the path: keep it one segment.
    if s3.bucket.contains('/') {
        return Err(bad(
            "storage.s3.bucket",
            "must be a bucket name, not a path",
        ));
    }
    Ok(())
}

/// `type/subtype`, lowercase, no parameters (what the allowlist compares).
fn is_plain_mime(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&-^_.+".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}
