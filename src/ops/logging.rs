//! tracing output: text or JSON, every line within a request carrying its id.
//!
//! Lines are formatted on the calling thread and handed to one writer thread
//! (tracing-appender's non-blocking writer) that writes them to stderr in
//! batches: a request costs a channel send, not a `write(2)`. The channel
//! blocks instead of dropping when full, and the returned guard flushes every
//! queued line when dropped, so keep it alive until the process exits.

use std::collections::HashMap;
use std::io::BufWriter;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Lines queued before a logging thread blocks (a burst, not a steady state).
/// The queue is allocated, and every slot written, when logging starts: at
/// 32 bytes a slot, 64 Ki lines were 2 MiB of the idle server's memory;
/// 8 Ki lines are 256 KiB, and the writer thread drains a batch at a time.
const QUEUE_LINES: usize = 8 * 1024;

/// `env`: the environment as the config saw it (the dotenv file included),
/// where `MVP28_LOG`, then `RUST_LOG`, win over `log.level`.
///
/// The returned guard owns the writer thread: dropping it writes out every
/// queued line (waiting up to a second) and stops the thread.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(cfg: &LogConfig, env: &HashMap<String, String>) -> WorkerGuard {
    let filter = [crate::config::dotenv::LOG_VAR, "RUST_LOG"]
        .iter()
        .filter_map(|k| env.get(*k))
        .find_map(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("mvp28-log")
        // The writer thread drains every queued line into the buffer, then
        // flushes: one write(2) a batch, and nothing held back while idle.
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if cfg.format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    guard
}
