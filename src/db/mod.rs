//! SQLite: pool, pragmas, migrations, and the one helper that runs blocking
//! DB work off the async threads. SQL lives in this module's children only.

pub mod chat;
pub mod jobs;
pub mod location;
pub mod media;
pub mod payments;
pub mod quota;
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
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::error::{AppError, AppResult};

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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating database directory {}", dir.display()))?;
        }
        let manager = SqliteConnectionManager::file(path).with_init(init_connection);
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(15))
            .build(manager)
            .with_context(|| format!("opening database {}", path.display()))?;
        {
            let conn = pool.get()?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                bail!(
                    "database {} could not be put in WAL mode (got {mode})",
                    path.display()
                );
            }
        }
        let mut writer = Connection::open(path)?;
        init_connection(&mut writer)?;
        // The writer never checkpoints (a checkpoint fsyncs the database file
        // inside the committing call and stalls every queued write); the
        // background checkpointer does it instead (`spawn_checkpointer`).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let db = Db {
            inner: Arc::new(Inner {
                writer: writer::Writer::start(writer)?,
                pool,
                permits: Semaphore::new(pool_size as usize),
                path: path.to_path_buf(),
                waited_micros: AtomicU64::new(0),
                acquisitions: AtomicU64::new(0),
            }),
        };
        db.migrate()?;
        Ok(db)
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

    /// A pooled connection for synchronous callers (CLI, startup).
    pub fn conn(&self) -> anyhow::Result<r2d2::PooledConnection<SqliteConnectionManager>> {
        Ok(self.inner.pool.get()?)
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.conn()?;
        let newest = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .max()
            .unwrap_or(0);
        let applied = applied_versions(&conn)?;
        if let Some(v) = applied.iter().copied().max().filter(|v| *v > newest) {
            bail!(
                "database {} has schema version {v}, newer than this binary's {newest}; \
                 it was written by a newer mvp28 — upgrade the binary instead",
                self.inner.path.display()
            );
        }
        embedded::migrations::runner()
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .run(&mut *conn)
            .context("applying migrations")?;
        Ok(())
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
    /// caller's tracing span.
    pub async fn run<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> AppResult<T> + Send + 'static,
    {
        let queued = std::time::Instant::now();
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| AppError::unavailable("unavailable", "shutting down"))?;
        self.inner
            .waited_micros
            .fetch_add(queued.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.inner.acquisitions.fetch_add(1, Ordering::Relaxed);
        let db = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let mut conn = db.inner.pool.get()?;
            f(&mut conn)
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

fn init_connection(c: &mut Connection) -> rusqlite::Result<()> {
    c.busy_timeout(BUSY_TIMEOUT)?;
    c.set_prepared_statement_cache_capacity(64);
    c.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;",
    )
}

/// A synchronous `BEGIN IMMEDIATE` transaction (used by the CLI too).
pub fn write_tx<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> AppResult<T>,
) -> AppResult<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
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

/// True for SQLite's UNIQUE/PRIMARY KEY constraint violations.
pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}
