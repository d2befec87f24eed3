use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// `[jobs]`: batch jobs over a user's media.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Unfinished jobs one user may have; past it, 429 `too_many_jobs`.
    pub max_pending_per_user: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_pending_per_user: 3,
        }
    }
}

impl JobsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_pending_per_user == 0 {
            return Err(bad("jobs.max_pending_per_user", "must be > 0"));
        }
        Ok(())
    }
}
