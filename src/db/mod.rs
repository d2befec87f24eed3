//! The storage layer: SQLite (embedded default) or Postgres
//! (`database.url`), each with a pool of read connections and one writer
//! (see `writer`), migrations, and the helpers that run blocking DB work off
//! the async threads. SQL lives in this module's children only, written once
//! against [`sql::Conn`] / [`sql::Tx`].

pub mod admins;
pub mod billing;
pub mod chat;
pub mod console;
pub mod copy;
pub mod inspect;
pub mod instances;
pub mod jobs;
pub mod location;
pub mod media;
pub mod moderation;
pub mod payments;
pub mod pg;
pub mod sql;
mod sql_enum;
pub mod usage;
pub mod users;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension as _};
use tokio::sync::Semaphore;

pub use sql::{Backend, Conn, DbError, DbResult, OptionalExtension, Tx};
pub use writer::Durability;

use crate::config::Synchronous;
use crate::error::{AppError, AppResult, ErrorCode};

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

mod embedded_pg {
    refinery::embed_migrations!("migrations/postgres");
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

enum Readers {
    Sqlite(Pool<SqliteConnectionManager>),
    Postgres(Pool<pg::PgManager>),
}

struct Inner {
    /// All writes of this process go through one connection on one thread,
    /// batched into group commits (see `writer`). Other processes (the admin
    /// CLI, other instances on Postgres) meet a lock.
    writer: writer::Writer,
    readers: Readers,
    /// Requests queue here asynchronously instead of blocking a thread in
    /// `pool.get()`.
    permits: Semaphore,
    /// The SQLite file; empty on Postgres.
    path: PathBuf,
    /// Where the database is, without secrets (messages, console).
    location: String,
    /// Time requests spent queued for a connection (metrics).
    waited_micros: AtomicU64,
    acquisitions: AtomicU64,
}

pub struct MigrationInfo {
    pub version: i32,
    pub name: String,
    pub applied: bool,
}

/// A pooled read connection for synchronous callers (CLI, startup).
#[allow(clippy::large_enum_variant)] // short-lived, on the stack of one call
pub enum ReadConn {
    Sqlite(PooledConnection<SqliteConnectionManager>),
    Postgres(PooledConnection<pg::PgManager>),
}

impl ReadConn {
    pub fn conn(&self) -> Conn<'_> {
        match self {
            ReadConn::Sqlite(c) => Conn::sqlite(c),
            ReadConn::Postgres(c) => Conn::postgres(c),
        }
    }
}

/// Postgres connection settings (`[database]` with a `postgres://` url).
pub struct PgSettings<'a> {
    pub url: &'a str,
    pub ca_file: Option<&'a str>,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
}

impl PgSettings<'_> {
    fn connector(&self) -> anyhow::Result<pg::PgConnector> {
        pg::PgConnector::new(
            self.url,
            self.ca_file,
            self.statement_timeout,
            self.connect_timeout,
        )
    }
}

/// Runs `f` on a plain thread: the synchronous Postgres client runs its
/// own small runtime, which cannot start inside an async context.
fn off_runtime<T: Send>(
    what: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{what} panicked")))
    })
}

/// A database that cannot be reached, named by its location (never with
/// the password).
fn unreachable(location: &str, e: postgres::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the database at {location}: {}",
        DbError::from(e)
    )
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
        Ok(Db::assemble(
            writer::WriterConn::sqlite(writer, sync)?,
            Readers::Sqlite(pool),
            pool_size,
            path.to_path_buf(),
            path.display().to_string(),
        )?)
    }

    /// Connects to Postgres (once: an unreachable server is an error, not a
    /// retry loop), refuses a schema newer than this binary, applies
    /// pending migrations, and opens the pool.
    pub fn open_postgres(settings: &PgSettings<'_>, pool_size: u32) -> anyhow::Result<Db> {
        off_runtime("opening the database", || {
            Self::open_postgres_here(settings, pool_size)
        })
    }

    fn open_postgres_here(settings: &PgSettings<'_>, pool_size: u32) -> anyhow::Result<Db> {
        let connector = settings.connector()?;
        let location = connector.describe();
        let mut client = connector
            .connect_raw()
            .map_err(|e| unreachable(&location, e))?;
        migrate_pg(&mut client, &location)?;
        drop(client);
        let writer = connector.connect().map_err(|e| unreachable(&location, e))?;
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(5))
            .build(pg::PgManager {
                connector: connector.clone(),
            })
            .with_context(|| format!("opening a pool to {location}"))?;
        Ok(Db::assemble(
            writer::WriterConn::Postgres {
                connector,
                conn: Some(writer),
            },
            Readers::Postgres(pool),
            pool_size,
            PathBuf::new(),
            location,
        )?)
    }

    fn assemble(
        writer: writer::WriterConn,
        readers: Readers,
        pool_size: u32,
        path: PathBuf,
        location: String,
    ) -> std::io::Result<Db> {
        Ok(Db {
            inner: Arc::new(Inner {
                writer: writer::Writer::start(writer, new_instance_id().into())?,
                readers,
                permits: Semaphore::new(pool_size as usize),
                path,
                location,
                waited_micros: AtomicU64::new(0),
                acquisitions: AtomicU64::new(0),
            }),
        })
    }

    /// This process's instance id (`ins_…`): owner of the holds and jobs
    /// it starts, and its row in `instances` while serving.
    pub fn instance_id(&self) -> &str {
        &self.inner.writer.instance
    }

    pub fn backend(&self) -> Backend {
        match self.inner.readers {
            Readers::Sqlite(_) => Backend::Sqlite,
            Readers::Postgres(_) => Backend::Postgres,
        }
    }

    /// (connections handed out, total seconds spent waiting for one)
    pub fn pool_waits(&self) -> (u64, f64) {
        (
            self.inner.acquisitions.load(Ordering::Relaxed),
            self.inner.waited_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }

    /// The SQLite file (empty on Postgres: see [`location`](Self::location)).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Where the database is, without secrets.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// A pooled (read-only) connection for synchronous callers (CLI, startup).
    pub fn conn(&self) -> AppResult<ReadConn> {
        Ok(match &self.inner.readers {
            Readers::Sqlite(p) => ReadConn::Sqlite(p.get()?),
            Readers::Postgres(p) => ReadConn::Postgres(p.get()?),
        })
    }

    pub fn migration_status(&self) -> anyhow::Result<Vec<MigrationInfo>> {
        let (applied, runner) = match &self.inner.readers {
            Readers::Sqlite(p) => (
                applied_versions(&*p.get()?)?,
                embedded::migrations::runner(),
            ),
            Readers::Postgres(p) => (
                applied_versions_pg(&Conn::postgres(&*p.get()?))?,
                embedded_pg::migrations::runner(),
            ),
        };
        let mut out: Vec<MigrationInfo> = runner
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
    /// caller's tracing span. The connection is read-only in spirit (and
    /// `query_only` on SQLite): writes go through [`write`](Self::write).
    pub async fn run<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> AppResult<T> + Send + 'static,
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
            let conn = db.conn()?;
            f(&conn.conn())
        })
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("db task failed: {e}")))?
    }

    /// [`run`](Self::run) for synchronous callers (the CLI).
    pub fn read_blocking<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce(&Conn<'_>) -> AppResult<T>,
    {
        let conn = self.conn()?;
        f(&conn.conn())
    }

    /// Like [`run`](Self::run) inside one write transaction, committed when
    /// `f` returns Ok.
    pub async fn write<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        self.inner.writer.write(Durability::Durable, f).await
    }

    /// [`write`](Self::write) answered as soon as the commit is visible,
    /// before it is on disk: the next durable write makes it durable too
    /// (see [`Durability::Relaxed`] for what may use it).
    pub async fn write_relaxed<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        self.inner.writer.write(Durability::Relaxed, f).await
    }

    /// [`write`](Self::write) for synchronous callers (the CLI, outside
    /// any async runtime).
    pub fn write_blocking<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        self.inner.writer.write_blocking(f)
    }

    /// (write jobs, group commits, total seconds jobs waited in the queue,
    /// WAL fsyncs that answered durable writes)
    pub fn write_stats(&self) -> (u64, u64, f64, u64) {
        let s = &self.inner.writer.stats;
        (
            s.jobs.load(Ordering::Relaxed),
            s.batches.load(Ordering::Relaxed),
            s.queued_micros.load(Ordering::Relaxed) as f64 / 1e6,
            s.syncs.load(Ordering::Relaxed),
        )
    }

    fn sqlite_pool(&self) -> Option<&Pool<SqliteConnectionManager>> {
        match &self.inner.readers {
            Readers::Sqlite(p) => Some(p),
            Readers::Postgres(_) => None,
        }
    }

    /// Copies committed WAL pages into the database file off the write path,
    /// every `every` (PASSIVE: never blocks readers or the writer). SQLite
    /// only: Postgres checkpoints itself.
    pub fn spawn_checkpointer(&self, every: Duration) {
        if self.sqlite_pool().is_none() {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let db = db.clone();
                let done = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    if let Some(pool) = db.sqlite_pool() {
                        pool.get()?
                            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                    }
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
        let Some(pool) = self.sqlite_pool() else {
            return Ok(());
        };
        let conn = pool.get()?;
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

/// The migrations a database has applied, next to the ones this binary
/// carries, read without migrating (or creating) anything.
#[derive(Debug, Clone)]
pub struct SchemaVersions {
    pub applied: Vec<i32>,
    pub known: Vec<i32>,
}

impl SchemaVersions {
    fn new(mut applied: Vec<i32>, runner: &refinery::Runner) -> SchemaVersions {
        let mut known: Vec<i32> = runner
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .collect();
        applied.sort_unstable();
        known.sort_unstable();
        SchemaVersions { applied, known }
    }

    /// Exactly this binary's migrations are applied.
    pub fn is_current(&self) -> bool {
        self.applied == self.known
    }

    /// The highest version applied (0: none).
    pub fn version(&self) -> i32 {
        self.applied.last().copied().unwrap_or(0)
    }

    /// This binary's highest version.
    pub fn binary_version(&self) -> i32 {
        self.known.last().copied().unwrap_or(0)
    }
}

/// [`SchemaVersions`] of a SQLite file; None when there is no such file.
pub fn schema_versions_sqlite(path: &Path) -> anyhow::Result<Option<SchemaVersions>> {
    if !path.is_file() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening database {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(Some(SchemaVersions::new(
        applied_versions(&conn)?,
        &embedded::migrations::runner(),
    )))
}

/// [`SchemaVersions`] of a Postgres database (connecting from a plain
/// thread, as [`Db::open_postgres`] does).
pub fn schema_versions_postgres(settings: &PgSettings<'_>) -> anyhow::Result<SchemaVersions> {
    off_runtime("reading the schema version", || {
        let connector = settings.connector()?;
        let conn = connector
            .connect()
            .map_err(|e| unreachable(&connector.describe(), e))?;
        Ok(SchemaVersions::new(
            applied_versions_pg(&Conn::postgres(&conn))?,
            &embedded_pg::migrations::runner(),
        ))
    })
}

/// Refuses a schema newer than this binary, then applies what is pending.
fn migrate(conn: &mut Connection, path: &Path) -> anyhow::Result<()> {
    let runner = embedded::migrations::runner();
    refuse_newer(
        &runner,
        &applied_versions(conn)?,
        &path.display().to_string(),
    )?;
    runner
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run(conn)
        .context("applying migrations")?;
    Ok(())
}

fn migrate_pg(client: &mut postgres::Client, location: &str) -> anyhow::Result<()> {
    let runner = embedded_pg::migrations::runner();
    let exists: Option<String> = client
        .query_one(
            "SELECT CAST(to_regclass('refinery_schema_history') AS TEXT)",
            &[],
        )?
        .get(0);
    let applied: Vec<i32> = match exists {
        None => {
            // Never share a schema with another application's tables (the
            // Next.js deployment's Prisma schema, say): its `users` is not ours.
            let foreign: i64 = client
                .query_one(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                    &[],
                )?
                .get(0);
            if foreign > 0 {
                bail!(
                    "database {location} already holds {foreign} table(s) that mvp28 did not create \
                     (the old deployment's?): point database.url / DATABASE_URL at a new, empty \
                     database (README: Database)"
                );
            }
            vec![]
        }
        Some(_) => client
            .query("SELECT version FROM refinery_schema_history", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    refuse_newer(&runner, &applied, location)?;
    runner
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run(client)
        .context("applying migrations")?;
    Ok(())
}

fn refuse_newer(runner: &refinery::Runner, applied: &[i32], location: &str) -> anyhow::Result<()> {
    let newest = runner
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    if let Some(v) = applied.iter().copied().max().filter(|v| *v > newest) {
        bail!(
            "database {location} has schema version {v}, newer than this binary's {newest}; \
             it was written by a newer mvp28 — upgrade the binary instead"
        );
    }
    Ok(())
}

fn init_reader(c: &mut Connection, sync: Synchronous) -> rusqlite::Result<()> {
    init_connection(c, sync)?;
    c.pragma_update(None, "query_only", true)
}

fn init_connection(c: &mut Connection, sync: Synchronous) -> rusqlite::Result<()> {
    c.busy_timeout(BUSY_TIMEOUT)?;
    c.set_prepared_statement_cache_capacity(64);
    // Without the query planner stability guarantee, a statement whose
    // plan used a bound value (`LIMIT ?`, a partial index's term) is
    // re-prepared every time that value is bound again: ~4% of the writer
    // thread under chat load. Plans here never need the bound values.
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
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

fn applied_versions_pg(conn: &Conn<'_>) -> anyhow::Result<Vec<i32>> {
    let exists: Option<String> = conn.query_row(
        "SELECT CAST(to_regclass('refinery_schema_history') AS TEXT)",
        sql::params![],
        |r| r.get(0),
    )?;
    if exists.is_none() {
        return Ok(vec![]);
    }
    Ok(conn
        .prepare("SELECT version FROM refinery_schema_history")?
        .query_map(sql::params![], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

fn new_instance_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("ins_{n:016x}")
}

/// A read that proves the schema is there (health checks).
pub fn ping(conn: &Conn<'_>) -> AppResult<()> {
    conn.prepare_cached("SELECT count(*) FROM settings")?
        .query_row(sql::params![], |r| r.get::<i64>(0))?;
    Ok(())
}

/// True for UNIQUE/PRIMARY KEY constraint violations.
pub fn is_unique_violation(e: &DbError) -> bool {
    e.is_unique_violation()
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
