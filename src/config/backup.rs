use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// `serve` writes a backup this often (0 = never).
    pub every_hours: u32,
    /// Scheduled backups kept in `dir` (older ones are deleted).
    pub keep: u32,
    pub dir: String,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            every_hours: 0,
            keep: 7,
            dir: "data/backups".into(),
        }
    }
}

impl BackupConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.every_hours > 0 && self.keep == 0 {
            return Err(bad(
                "backup.keep",
                "must be >= 1 when backups are scheduled",
            ));
        }
        Ok(())
    }
}
