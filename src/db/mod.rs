//! SQLite: pool, pragmas, migrations, and the one helper that runs blocking
//! DB work off the async threads. SQL lives in this module's children only.

pub mod admins;
pub mod billing;
pub mod chat;
pub mod console;
pub mod inspect;
pub mod jobs;
pub mod location;
pub mod media;
pub mod moderation;
pub mod payments;
mod sql_enum;
pub mod usage;
pub mod users;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Transaction};
use tokio::sync::Semaphore;

use crate::config::Synchronous;
use crate::error::{AppError, AppResult, ErrorCode};

mod embedded {
    refinery::embed_migrations!("migrations");
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    /// All writes of this process go through one connection on one thread,
    /// batched into group commits (see `writer`). Other processes (the admin
    /// CLI) still meet busy_timeout.
    writer: writer::Writer,
    pool: Pool<SqliteConnectionManager>,
    /// Requests queue here asynchronously instead of blocking a thread in
    /// `pool.get()`.
    permits: Semaphore,
    path: PathBuf,
    /// Time requests spent queued for a connection (metrics).
    waited_micros: AtomicU64,
    acquisitions: AtomicU64,
}

pub struct MigrationInfo {
    pub version: i32,
    pub name: String,
    pub applied: bool,
}

impl Db {
    /// Opens (creating when absent) the database, checks WAL, refuses a
    /// schema newer than this binary, and applies pending migrations.
    pub fn open(path: &Path, pool_size: u32) -> anyhow::Result<Db> {
        Self::open_with(path, pool_size, Synchronous::Full)
    }

    /// [`open`](Self::open) with `PRAGMA synchronous` as configured
    /// (`database.synchronous`).
    pub fn open_with(path: &Path, pool_size: u32, sync: Synchronous) -> anyhow::Result<Db> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating database directory {}", dir.display()))?;
        }
        // Schema and journal mode are set on the writer's connection, before
        // any reader exists: readers are opened query_only and cannot.
        let mut writer = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        init_connection(&mut writer, sync)?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!(
                "database {} could not be put in WAL mode (got {mode})",
                path.display()
            );
        }
        migrate(&mut writer, path)?;
        // The writer never checkpoints (a checkpoint fsyncs the database file
        // inside the committing call and stalls every queued write); the
        // background checkpointer does it instead (`spawn_checkpointer`).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let manager = SqliteConnectionManager::file(path).with_init(move |c| init_reader(c, sync));
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(15))
            .build(manager)
            .with_context(|| format!("opening database {}", path.display()))?;
        Ok(Db {
            inner: Arc::new(Inner {
                writer: writer::Writer::start(writer)?,
                pool,
                permits: Semaphore::new(pool_size as usize),
                path: path.to_path_buf(),
                waited_micros: AtomicU64::new(0),
                acquisitions: AtomicU64::new(0),
            }),
        })
    }

    /// (connections handed out, total seconds spent waiting for one)
    pub fn pool_waits(&self) -> (u64, f64) {
        (
            self.inner.acquisitions.load(Ordering::Relaxed),
            self.inner.waited_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A pooled (read-only) connection for synchronous callers (CLI, startup).
    pub fn conn(&self) -> anyhow::Result<r2d2::PooledConnection<SqliteConnectionManager>> {
        Ok(self.inner.pool.get()?)
    }

    pub fn migration_status(&self) -> anyhow::Result<Vec<MigrationInfo>> {
        let conn = self.conn()?;
        let applied = applied_versions(&conn)?;
        let mut out: Vec<MigrationInfo> = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| MigrationInfo {
                version: m.version(),
                name: m.name().to_string(),
                applied: applied.contains(&m.version()),
            })
            .collect();
        out.sort_by_key(|m| m.version);
        Ok(out)
    }

    /// Runs `f` with a pooled connection on the blocking pool, carrying the
    /// caller's tracing span. The connection is `query_only`: writes go
    /// through [`write`](Self::write).
    pub async fn run<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> AppResult<T> + Send + 'static,
    {
        let queued = std::time::Instant::now();
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| AppError::unavailable(ErrorCode::Unavailable, "shutting down"))?;
        self.inner
            .waited_micros
            .fetch_add(queued.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.inner.acquisitions.fetch_add(1, Ordering::Relaxed);
        let db = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let conn = db.inner.pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("db task failed: {e}")))?
    }

    /// Like [`run`](Self::run) inside one `BEGIN IMMEDIATE` transaction,
    /// committed when `f` returns Ok.
    pub async fn write<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> AppResult<T> + Send + 'static,
    {
        self.inner.writer.write(f).await
    }

    /// [`write`](Self::write) for synchronous callers (the CLI, outside
    /// any async runtime).
    pub fn write_blocking<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> AppResult<T> + Send + 'static,
    {
        self.inner.writer.write_blocking(f)
    }

    /// (write jobs, group commits, total seconds jobs waited in the queue)
    pub fn write_stats(&self) -> (u64, u64, f64) {
        let s = &self.inner.writer.stats;
        (
            s.jobs.load(Ordering::Relaxed),
            s.batches.load(Ordering::Relaxed),
            s.queued_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }

    /// Copies committed WAL pages into the database file off the write path,
    /// every `every` (PASSIVE: never blocks readers or the writer).
    pub fn spawn_checkpointer(&self, every: Duration) {
        let db = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let db = db.clone();
                let done = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    let conn = db.conn()?;
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                    Ok(())
                })
                .await;
                if let Ok(Err(e)) = done {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        });
    }

    /// Copies the WAL into the main file and truncates it (clean shutdown).
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        let conn = self.conn()?;
        // The background checkpointer or a last reader may hold it a moment.
        for _ in 0..100 {
            let (busy, _, _): (i64, i64, i64) =
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("WAL checkpoint could not complete (database busy)")
    }
}

/// Refuses a schema newer than this binary, then applies what is pending.
fn migrate(conn: &mut Connection, path: &Path) -> anyhow::Result<()> {
    let newest = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    let applied = applied_versions(conn)?;
    if let Some(v) = applied.iter().copied().max().filter(|v| *v > newest) {
        bail!(
            "database {} has schema version {v}, newer than this binary's {newest}; \
             it was written by a newer mvp28 — upgrade the binary instead",
            path.display()
        );
    }
    embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run(conn)
        .context("applying migrations")?;
    Ok(())
}

fn init_reader(c: &mut Connection, sync: Synchronous) -> rusqlite::Result<()> {
    init_connection(c, sync)?;
    c.pragma_update(None, "query_only", true)
}

fn init_connection(c: &mut Connection, sync: Synchronous) -> rusqlite::Result<()> {
    c.busy_timeout(BUSY_TIMEOUT)?;
    c.set_prepared_statement_cache_capacity(64);
    c.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = {}; PRAGMA temp_store = MEMORY;",
        sync.pragma()
    ))
}

fn applied_versions(conn: &Connection) -> anyhow::Result<Vec<i32>> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(vec![]);
    }
    let mut stmt = conn.prepare("SELECT version FROM refinery_schema_history")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A read that proves the schema is there (health checks).
pub fn ping(conn: &Connection) -> AppResult<()> {
    conn.prepare_cached("SELECT count(*) FROM settings")?
        .query_row([], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// True for SQLite's UNIQUE/PRIMARY KEY constraint violations.
pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_cannot_write_and_writes_go_through_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let refused = db
            .run(|c| {
                Ok(c.execute(
                    "INSERT INTO settings (key, value, updated_at) VALUES ('x', 1, 0)",
                    [],
                )?)
            })
            .await;
        assert!(refused.is_err(), "a read connection wrote: {refused:?}");
        db.write(|tx| {
            Ok(tx.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES ('x', 1, 0)",
                [],
            )?)
        })
        .await
        .unwrap();
        let n: i64 = db
            .run(|c| {
                Ok(
                    c.query_row("SELECT value FROM settings WHERE key = 'x'", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap();
        assert_eq!(n, 1);
        // and from synchronous code (the CLI)
        let db2 = db.clone();
        let n = tokio::task::spawn_blocking(move || {
            db2.write_blocking(|tx| {
                Ok(tx.execute("UPDATE settings SET value = 2 WHERE key = 'x'", [])?)
            })
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(n, 1);
    }
}
