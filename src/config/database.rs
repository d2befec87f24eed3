use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: String,
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: "data/mvp28.db".into(),
            pool_size: 8,
        }
    }
}

impl DatabaseConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.path.trim().is_empty() {
            return Err(bad("database.path", "must not be empty"));
        }
        if self.pool_size == 0 {
            return Err(bad("database.pool_size", "must be > 0"));
        }
        Ok(())
    }
}
