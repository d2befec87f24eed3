//! Group commit: every write of this process runs on one writer thread,
//! which takes all the write jobs queued at that moment (up to a bound) and
//! runs them in ONE `BEGIN IMMEDIATE` transaction, each inside its own
//! savepoint. A job that fails rolls back to its savepoint alone; the others
//! commit together, and nobody hears back before the commit is done.
//!
//! Why: under load, each commit rewrites the same hot pages (indexes,
//! quotas, sessions) into the WAL; committing a batch writes them once, and
//! writers never meet SQLITE_BUSY inside the process (no busy-handler
//! sleeps). Semantics stay those of running the jobs one after another.
//!
//! Durability on SQLite with `synchronous = FULL` is pipelined: the writer
//! commits without syncing (`NORMAL`) and hands the batch's replies to a
//! syncer thread, which fsyncs the WAL and only then answers them. The
//! next batch runs meanwhile, and one fsync answers every batch committed
//! before it began. The WAL is append-only (a checkpoint syncs it first),
//! so an answered write is on disk exactly as with FULL.
//!
//! A [`Durability::Relaxed`] job is answered at its commit, without
//! waiting for the disk (on Postgres an all-relaxed batch commits with
//! `synchronous_commit = off`). Both logs are written in order, so the
//! next durable commit puts it on disk too: a power failure can lose a
//! relaxed write, never a durable one that came after it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::oneshot;

use super::pg::{PgConn, PgConnector};
use super::sql::{Conn, DbError, Tx};

use crate::config::Synchronous;
use crate::error::{AppError, AppResult, ErrorCode};

/// Jobs per transaction at most: bounds the latency a batch adds.
const MAX_BATCH: usize = 64;

/// When a write's caller hears back: after the commit is on disk, or as
/// soon as it is visible (on disk with the next durable commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Durable,
    /// For writes whose loss in a power failure loses nothing anybody was
    /// told is kept: a chat turn's start (its hold and messages) is made
    /// durable by the turn's end, and a turn lost with the machine was
    /// neither answered nor charged.
    Relaxed,
}

trait Job: Send {
    fn run(self: Box<Self>, tx: &Tx<'_>) -> Box<dyn Finish>;
    fn fail(self: Box<Self>, e: AppError);
    fn enqueued(&self) -> Instant;
    fn durability(&self) -> Durability;
}

trait Finish: Send {
    fn failed(&self) -> bool;
    /// Delivers the result; `commit_error` when the batch did not commit.
    fn finish(self: Box<Self>, commit_error: Option<&str>);
}

/// Where a job's result goes: an async waiter or a blocked thread.
type Reply<T> = Box<dyn FnOnce(AppResult<T>) + Send>;

struct TypedJob<T, F> {
    f: F,
    reply: Reply<T>,
    enqueued: Instant,
    durability: Durability,
    span: tracing::Span,
}

struct TypedFinish<T> {
    result: AppResult<T>,
    reply: Reply<T>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
{
    fn run(self: Box<Self>, tx: &Tx<'_>) -> Box<dyn Finish> {
        let this = *self;
        let _enter = this.span.enter();
        let f = this.f;
        let result = catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|_| {
            Err(AppError::internal(anyhow::anyhow!(
                "a database write panicked"
            )))
        });
        Box::new(TypedFinish {
            result,
            reply: this.reply,
        })
    }

    fn fail(self: Box<Self>, e: AppError) {
        (self.reply)(Err(e));
    }

    fn enqueued(&self) -> Instant {
        self.enqueued
    }

    fn durability(&self) -> Durability {
        self.durability
    }
}

impl<T: Send + 'static> Finish for TypedFinish<T> {
    fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn finish(self: Box<Self>, commit_error: Option<&str>) {
        let result = match (commit_error, self.result) {
            // Nothing of the batch was written: the caller may retry.
            (Some(e), Ok(_)) => Err(unavailable(&format!("commit failed: {e}"))),
            (_, r) => r,
        };
        (self.reply)(result);
    }
}

#[derive(Default)]
pub struct WriterStats {
    pub jobs: AtomicU64,
    pub batches: AtomicU64,
    pub queued_micros: AtomicU64,
    /// fsyncs of the WAL by the syncer (SQLite, `synchronous = FULL`)
    pub syncs: AtomicU64,
}

pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    pub instance: Arc<str>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// Starts the writer thread, which owns `conn` until every handle is gone.
    pub fn start(conn: WriterConn, instance: Arc<str>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let me = instance.clone();
        let syncer = match conn.wal() {
            Some(wal) => Some(Syncer::start(wal, stats.clone())?),
            None => None,
        };
        std::thread::Builder::new()
            .name("mvp28-db-writer".into())
            .spawn(move || run(conn, rx, syncer, &thread_stats, &me))?;
        Ok(Writer {
            jobs: tx,
            stats,
            instance,
        })
    }

    pub async fn write<T, F>(&self, durability: Durability, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(f, durability, reply_to(move |r| drop(reply.send(r))))?;
        rx.await.map_err(|_| dropped())?
    }

    /// [`write`](Self::write) for synchronous callers (the CLI): blocks the
    /// calling thread until the job has committed or failed.
    pub fn write_blocking<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        let (reply, rx) = mpsc::sync_channel(1);
        self.send(
            f,
            Durability::Durable,
            reply_to(move |r| drop(reply.send(r))),
        )?;
        rx.recv().map_err(|_| dropped())?
    }

    fn send<T, F>(&self, f: F, durability: Durability, reply: Reply<T>) -> AppResult<()>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        let job = Box::new(TypedJob {
            f,
            reply,
            enqueued: Instant::now(),
            durability,
            span: tracing::Span::current(),
        });
        self.jobs.send(job).map_err(|_| {
            AppError::unavailable(ErrorCode::Unavailable, "the database writer has stopped")
        })
    }
}

fn reply_to<T>(f: impl FnOnce(AppResult<T>) + Send + 'static) -> Reply<T> {
    Box::new(f)
}

fn dropped() -> AppError {
    AppError::internal(anyhow::anyhow!("the database writer dropped a job"))
}

/// The writer's own connection. On Postgres it is re-opened when it was
/// lost (the database restarted): a batch that meets a lost connection
/// fails as 503 `unavailable` and the next one reconnects.
#[allow(clippy::large_enum_variant)] // one per process
pub enum WriterConn {
    Sqlite {
        conn: rusqlite::Connection,
        /// The WAL to fsync before durable writes are answered; None when
        /// `synchronous` is NORMAL (commits are answered unsynced).
        wal: Option<PathBuf>,
    },
    Postgres {
        connector: PgConnector,
        conn: Option<PgConn>,
    },
}

/// Serialises writers across every instance sharing one Postgres database,
/// so the money rules hold exactly as with SQLite's single writer.
const PG_WRITE_LOCK: i64 = 0x6d76_7032_3800;

impl WriterConn {
    /// The writer over `conn`; with `synchronous = FULL` its commits are
    /// synced by the syncer thread instead of inside COMMIT.
    pub fn sqlite(
        conn: rusqlite::Connection,
        synchronous: Synchronous,
    ) -> rusqlite::Result<WriterConn> {
        let wal = match (synchronous, conn.path()) {
            (Synchronous::Full, Some(p)) if !p.is_empty() => {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                Some(PathBuf::from(format!("{p}-wal")))
            }
            _ => None,
        };
        Ok(WriterConn::Sqlite { conn, wal })
    }

    /// Where durable commits are synced before they are answered.
    fn wal(&self) -> Option<PathBuf> {
        match self {
            WriterConn::Sqlite { wal, .. } => wal.clone(),
            WriterConn::Postgres { .. } => None,
        }
    }

    /// Opens the transaction; the connection it runs on.
    fn begin(&mut self, durability: Durability) -> Result<Conn<'_>, DbError> {
        match self {
            WriterConn::Sqlite { conn, .. } => {
                conn.execute_batch("BEGIN IMMEDIATE")?;
                Ok(Conn::sqlite(conn))
            }
            WriterConn::Postgres { connector, conn } => {
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    *conn = None;
                    *conn = Some(connector.connect()?);
                }
                let c = conn.as_ref().expect("connected above");
                let relax = match durability {
                    Durability::Durable => "",
                    Durability::Relaxed => "SET LOCAL synchronous_commit = off;",
                };
                if let Err(e) = c.batch(&format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; {relax} SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})"
                )) {
                    let _ = c.batch("ROLLBACK");
                    return Err(e);
                }
                Ok(Conn::postgres(c))
            }
        }
    }
}

fn run(
    mut conn: WriterConn,
    rx: mpsc::Receiver<Box<dyn Job>>,
    syncer: Option<Syncer>,
    stats: &WriterStats,
    me: &str,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let waited: u64 = batch
            .iter()
            .map(|j| now.duration_since(j.enqueued()).as_micros() as u64)
            .sum();
        stats.queued_micros.fetch_add(waited, Ordering::Relaxed);
        stats.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        let Some(done) = run_batch(&mut conn, batch, me) else {
            continue;
        };
        match &syncer {
            Some(syncer) => syncer.answer(done),
            None => done.into_iter().for_each(|(f, _)| f.finish(None)),
        }
    }
    // Dropping the syncer lets it answer what is queued, then it stops.
}

/// A job's result once its batch committed, and how durable it must be
/// before it is delivered.
type Done = (Box<dyn Finish>, Durability);

/// Runs one batch; what committed, or None when every reply was already
/// delivered (nothing committed).
fn run_batch(conn: &mut WriterConn, batch: Vec<Box<dyn Job>>, me: &str) -> Option<Vec<Done>> {
    let durability = if batch.iter().all(|j| j.durability() == Durability::Relaxed) {
        Durability::Relaxed
    } else {
        Durability::Durable
    };
    let tx = match conn.begin(durability) {
        Ok(c) => Tx::new(c, me),
        Err(e) => {
            let msg = e.to_string();
            tracing::warn!(error = %msg, "could not begin a write transaction");
            for job in batch {
                job.fail(unavailable(&msg));
            }
            return None;
        }
    };
    let mut finished: Vec<Done> = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = tx.execute_batch("SAVEPOINT job") {
            job.fail(AppError::from(e));
            continue;
        }
        let durability = job.durability();
        let f = job.run(&tx);
        let end = if f.failed() {
            "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"
        } else {
            "RELEASE SAVEPOINT job"
        };
        if let Err(e) = tx.execute_batch(end) {
            // The transaction is in an unknown state: fail everything.
            tracing::error!(error = %e, "savepoint handling failed; rolling the batch back");
            finished.push((f, durability));
            let msg = e.to_string();
            let _ = tx.execute_batch("ROLLBACK");
            for (f, _) in finished {
                f.finish(Some(&msg));
            }
            return None;
        }
        finished.push((f, durability));
    }
    if let Err(e) = tx.execute_batch("COMMIT") {
        let _ = tx.execute_batch("ROLLBACK");
        let msg = e.to_string();
        tracing::error!(error = %msg, "batch commit failed");
        for (f, _) in finished {
            f.finish(Some(&msg));
        }
        return None;
    }
    Some(finished)
}

/// Answers durable writes once the WAL holding them is on disk; relaxed
/// and failed ones at once.
struct Syncer {
    queue: mpsc::Sender<Vec<Box<dyn Finish>>>,
}

impl Syncer {
    fn start(wal: PathBuf, stats: Arc<WriterStats>) -> std::io::Result<Syncer> {
        let (queue, rx) = mpsc::channel::<Vec<Box<dyn Finish>>>();
        std::thread::Builder::new()
            .name("mvp28-db-sync".into())
            .spawn(move || sync_loop(&wal, &rx, &stats))?;
        Ok(Syncer { queue })
    }

    fn answer(&self, done: Vec<Done>) {
        let mut waiting = Vec::with_capacity(done.len());
        for (f, durability) in done {
            // A failed job wrote nothing: its answer need not wait either.
            if durability == Durability::Durable && !f.failed() {
                waiting.push(f);
            } else {
                f.finish(None);
            }
        }
        if !waiting.is_empty() {
            if let Err(mpsc::SendError(waiting)) = self.queue.send(waiting) {
                for f in waiting {
                    f.finish(Some("the database sync thread has stopped"));
                }
            }
        }
    }
}

fn sync_loop(wal: &Path, rx: &mpsc::Receiver<Vec<Box<dyn Finish>>>, stats: &WriterStats) {
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = rx.recv() {
        // Every batch queued so far committed before this fsync starts.
        let mut answers = first;
        while let Ok(more) = rx.try_recv() {
            answers.extend(more);
        }
        if let Err(e) = sync_wal(wal, &mut file) {
            // After a failed fsync nothing says what reached the disk
            // (the kernel may have dropped the dirty pages): answering
            // either way would be a guess, so the process stops, as
            // PostgreSQL does, and recovers from the WAL at its next start.
            tracing::error!(error = %e, wal = %wal.display(), "fsync of the database log failed; stopping");
            std::process::exit(74);
        }
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        for f in answers {
            f.finish(None);
        }
    }
}

/// fdatasync of the WAL (the file's size included). Whenever the file at
/// `wal` is not the one held open (the first time; a WAL that SQLite
/// deleted and created again), it is opened anew and its directory synced
/// too: NORMAL never syncs the directory entry of a new WAL.
fn sync_wal(wal: &Path, file: &mut Option<std::fs::File>) -> std::io::Result<()> {
    let on_disk = std::fs::metadata(wal)?;
    let current = match file {
        Some(f) => same_file(&f.metadata()?, &on_disk),
        None => false,
    };
    if !current {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(wal)?;
        if let Some(dir) = wal.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *file = Some(f);
    }
    file.as_ref().expect("opened above").sync_data()
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

fn unavailable(msg: &str) -> AppError {
    let mut e = AppError::unavailable(ErrorCode::Unavailable, "database unavailable, retry");
    e.source = Some(anyhow::anyhow!("{msg}"));
    e.with_retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer over the WAL database at `path`, with table `t (n INTEGER
    /// PRIMARY KEY)` (created when missing).
    fn writer_at(path: &Path, synchronous: Synchronous) -> Writer {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)",
        )
        .unwrap();
        Writer::start(
            WriterConn::sqlite(conn, synchronous).unwrap(),
            "test".into(),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_job_rolls_back_alone_and_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = Arc::new(writer_at(&path, Synchronous::Full));
        let mut tasks = vec![];
        for n in 0..200i64 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                w.write(Durability::Durable, move |tx| {
                    tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                    if n % 7 == 0 {
                        return Err(AppError::conflict("refused"));
                    }
                    if n == 13 {
                        panic!("a job that panics");
                    }
                    Ok(n)
                })
                .await
            }));
        }
        let mut ok = 0;
        for (n, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, n as i64);
                    ok += 1;
                }
                Err(e) => assert!(n % 7 == 0 || n == 13, "job {n} failed: {e}"),
            }
        }
        let check = rusqlite::Connection::open(&path).unwrap();
        let stored: i64 = check
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, ok, "exactly the successful jobs are stored");
        let bad: i64 = check
            .query_row(
                "SELECT count(*) FROM t WHERE n % 7 = 0 OR n = 13",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad, 0);
        assert!(writer.stats.batches.load(Ordering::Relaxed) <= 200);
    }

    /// With FULL, a durable write is answered after an fsync of the WAL
    /// (counted), a relaxed one without; the data is there either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_writes_wait_for_an_fsync_and_relaxed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let writer = writer_at(&path, Synchronous::Full);
        let insert = |d, n: i64| {
            writer.write(d, move |tx| {
                tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                Ok(())
            })
        };
        let syncs = || writer.stats.syncs.load(Ordering::Relaxed);
        insert(Durability::Relaxed, 1).await.unwrap();
        assert_eq!(syncs(), 0);
        insert(Durability::Durable, 2).await.unwrap();
        assert_eq!(syncs(), 1, "answered after its fsync");
        insert(Durability::Relaxed, 3).await.unwrap();
        assert_eq!(syncs(), 1);
        let check = rusqlite::Connection::open(&path).unwrap();
        let n: i64 = check
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);

        // NORMAL: nothing waits for an fsync
        let normal = writer_at(&path, Synchronous::Normal);
        normal
            .write(Durability::Durable, |tx| {
                tx.execute("INSERT INTO t (n) VALUES (4)", [])?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(normal.stats.syncs.load(Ordering::Relaxed), 0);
    }

    /// The file synced is always the one at the WAL's path, also after it
    /// was replaced.
    #[cfg(unix)]
    #[test]
    fn the_wal_synced_is_the_one_at_its_path() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("x.db-wal");
        std::fs::write(&wal, b"first").unwrap();
        let mut held = None;
        sync_wal(&wal, &mut held).unwrap();
        let first = held.as_ref().unwrap().metadata().unwrap().ino();
        sync_wal(&wal, &mut held).unwrap();
        assert_eq!(held.as_ref().unwrap().metadata().unwrap().ino(), first);
        let next = dir.path().join("next");
        std::fs::write(&next, b"second").unwrap();
        std::fs::rename(&next, &wal).unwrap();
        sync_wal(&wal, &mut held).unwrap();
        let now = held.as_ref().unwrap().metadata().unwrap().ino();
        assert_eq!(now, std::fs::metadata(&wal).unwrap().ino());
        assert_ne!(now, first);
    }
}
