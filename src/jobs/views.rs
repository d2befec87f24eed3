//! What clients see of batch jobs.

use serde::Serialize;
use utoipa::ToSchema;

use crate::ids::{JobId, MediaId};

/// A batch job and its per-file progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: JobId,
    /// `extract_text` or `describe`
    pub action: String,
    pub state: String,
    /// RFC 3339 UTC
    pub created_at: String,
    /// RFC 3339 UTC, once finished
    pub finished_at: Option<String>,
    pub progress: JobProgress,
    /// In the order of `media_ids`
    pub items: Vec<JobItem>,
}

/// How many items are in each state.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobProgress {
    pub total: u64,
    pub pending: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobItem {
    pub media_id: MediaId,
    pub state: String,
    /// The extracted text or the description, once done
    pub result: Option<String>,
    /// Why the item failed
    pub error: Option<String>,
}
