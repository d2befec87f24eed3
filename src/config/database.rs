use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: String,
    pub pool_size: u32,
    /// `full` (default): a commit is on disk before it is acknowledged, so
    /// a power failure loses no top-up or charge already answered;
    /// `normal` trades the last commits for speed (WAL stays consistent).
    pub synchronous: Synchronous,
}

/// SQLite's `PRAGMA synchronous` on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

impl Synchronous {
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: "data/mvp28.db".into(),
            pool_size: 8,
            synchronous: Synchronous::Full,
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
