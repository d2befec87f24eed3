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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::oneshot;

use super::pg::{PgConn, PgConnector};
use super::sql::{Conn, DbError, Tx};

use crate::error::{AppError, AppResult, ErrorCode};

/// Jobs per transaction at most: bounds the latency a batch adds.
const MAX_BATCH: usize = 64;

trait Job: Send {
    fn run(self: Box<Self>, tx: &Tx<'_>) -> Box<dyn Finish>;
    fn fail(self: Box<Self>, e: AppError);
    fn enqueued(&self) -> Instant;
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
        std::thread::Builder::new()
            .name("mvp28-db-writer".into())
            .spawn(move || run(conn, rx, &thread_stats, &me))?;
        Ok(Writer {
            jobs: tx,
            stats,
            instance,
        })
    }

    pub async fn write<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(f, reply_to(move |r| drop(reply.send(r))))?;
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
        self.send(f, reply_to(move |r| drop(reply.send(r))))?;
        rx.recv().map_err(|_| dropped())?
    }

    fn send<T, F>(&self, f: F, reply: Reply<T>) -> AppResult<()>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> AppResult<T> + Send + 'static,
    {
        let job = Box::new(TypedJob {
            f,
            reply,
            enqueued: Instant::now(),
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
    Sqlite(rusqlite::Connection),
    Postgres {
        connector: PgConnector,
        conn: Option<PgConn>,
    },
}

/// Serialises writers across every instance sharing one Postgres database,
/// so the money rules hold exactly as with SQLite's single writer.
const PG_WRITE_LOCK: i64 = 0x6d76_7032_3800;

impl WriterConn {
    /// Opens the transaction; the connection it runs on.
    fn begin(&mut self) -> Result<Conn<'_>, DbError> {
        match self {
            WriterConn::Sqlite(c) => {
                c.execute_batch("BEGIN IMMEDIATE")?;
                Ok(Conn::sqlite(c))
            }
            WriterConn::Postgres { connector, conn } => {
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    *conn = None;
                    *conn = Some(connector.connect()?);
                }
                let c = conn.as_ref().expect("connected above");
                if let Err(e) = c.batch(&format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})"
                )) {
                    let _ = c.batch("ROLLBACK");
                    return Err(e);
                }
                Ok(Conn::postgres(c))
            }
        }
    }
}

fn run(mut conn: WriterConn, rx: mpsc::Receiver<Box<dyn Job>>, stats: &WriterStats, me: &str) {
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
        run_batch(&mut conn, batch, me);
    }
}

fn run_batch(conn: &mut WriterConn, batch: Vec<Box<dyn Job>>, me: &str) {
    let tx = match conn.begin() {
        Ok(c) => Tx::new(c, me),
        Err(e) => {
            let msg = e.to_string();
            tracing::warn!(error = %msg, "could not begin a write transaction");
            for job in batch {
                job.fail(unavailable(&msg));
            }
            return;
        }
    };
    let mut finished = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = tx.execute_batch("SAVEPOINT job") {
            job.fail(AppError::from(e));
            continue;
        }
        let f = job.run(&tx);
        let end = if f.failed() {
            "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"
        } else {
            "RELEASE SAVEPOINT job"
        };
        if let Err(e) = tx.execute_batch(end) {
            // The transaction is in an unknown state: fail everything.
            tracing::error!(error = %e, "savepoint handling failed; rolling the batch back");
            finished.push(f);
            let msg = e.to_string();
            let _ = tx.execute_batch("ROLLBACK");
            for f in finished {
                f.finish(Some(&msg));
            }
            return;
        }
        finished.push(f);
    }
    let commit = tx.execute_batch("COMMIT").err().map(|e| {
        let _ = tx.execute_batch("ROLLBACK");
        e.to_string()
    });
    if let Some(e) = &commit {
        tracing::error!(error = %e, "batch commit failed");
    }
    for f in finished {
        f.finish(commit.as_deref());
    }
}

fn unavailable(msg: &str) -> AppError {
    let mut e = AppError::unavailable(ErrorCode::Unavailable, "database unavailable, retry");
    e.source = Some(anyhow::anyhow!("{msg}"));
    e.with_retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_job_rolls_back_alone_and_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let writer = Arc::new(Writer::start(WriterConn::Sqlite(conn), "test".into()).unwrap());
        let mut tasks = vec![];
        for n in 0..200i64 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                w.write(move |tx| {
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
}
