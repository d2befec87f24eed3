//! What clients see of stored files.

use serde::Serialize;
use utoipa::ToSchema;

use crate::ids::MediaId;

/// A committed file; `url` needs no bearer token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MediaView {
    pub id: MediaId,
    pub content_type: String,
    pub size: i64,
    /// A short-lived signed URL that needs no bearer token
    pub url: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MediaResponse {
    pub media: MediaView,
    /// RFC 3339 UTC
    pub url_expires_at: String,
}
