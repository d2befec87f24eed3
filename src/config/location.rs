use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocationConfig {
    pub retention_days: u32,
}

impl Default for LocationConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

impl LocationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.retention_days == 0 {
            return Err(bad("location.retention_days", "must be >= 1"));
        }
        Ok(())
    }
}
