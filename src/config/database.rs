use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The SQLite file (the embedded default), unless `url` is set.
    pub path: String,
    /// `postgres://user:password@host:port/db?sslmode=require`: the Postgres
    /// backend, for several instances on one database (docs/postgres.md).
    /// A secret (it holds the password); empty = SQLite at `path`.
    pub url: String,
    /// PEM file of a CA to trust besides Mozilla's roots (Postgres TLS).
    pub ca_file: String,
    /// Longest a single Postgres statement may run.
    pub statement_timeout_ms: u64,
    /// Longest the first connection may take; an unreachable database at
    /// start is an error (exit 1), never a retry loop.
    pub connect_timeout_secs: u64,
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
            url: String::new(),
            ca_file: String::new(),
            statement_timeout_ms: 5_000,
            connect_timeout_secs: 10,
            pool_size: 8,
            synchronous: Synchronous::Full,
        }
    }
}

impl DatabaseConfig {
    /// The Postgres URL when that backend is chosen.
    pub fn postgres_url(&self) -> Option<&str> {
        Some(self.url.as_str()).filter(|u| !u.is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.path.trim().is_empty() {
            return Err(bad("database.path", "must not be empty"));
        }
        if !self.url.is_empty() && !super::layering::is_postgres_url(&self.url) {
            return Err(bad(
                "database.url",
                "must be a postgres:// or postgresql:// URL (leave it empty for SQLite at database.path)",
            ));
        }
        if self.statement_timeout_ms == 0 || self.connect_timeout_secs == 0 {
            return Err(bad("database.statement_timeout_ms", "timeouts must be > 0"));
        }
        if self.pool_size == 0 {
            return Err(bad("database.pool_size", "must be > 0"));
        }
        Ok(())
    }
}
