//! `mvp28 serve`: open everything, recover, listen, shut down cleanly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::billing::budget;
use crate::clock::{to_ms, SharedClock, SystemClock};
use crate::config::Config;
use crate::db::{self, Db};
use crate::http::{self, AppState};
use crate::storage::Storage;
use crate::tls::Tls;

/// A running server (used by `serve` and by the tests).
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The `server.http_bind` listener (redirects, http-01), when set.
    pub http_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<std::io::Result<()>>,
    /// This server owns the database until it is dropped.
    _lock: Option<crate::ops::lock::ServeLock>,
    tls: Option<Tls>,
    http_handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// The accept loop is still running.
    pub fn is_serving(&self) -> bool {
        !self.handle.is_finished()
    }

    /// HTTPS (`[server.tls]`): the served certificate, forced renewals.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Stops accepting, waits for in-flight requests, checkpoints the WAL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.http_handle.take() {
            h.abort();
        }
        if let Some(t) = self.tls.as_mut() {
            t.stop();
        }
        // Batch items in flight are abandoned; the next start re-runs them.
        self.state.jobs().shutdown();
        // Open streams and WebSockets would hold shutdown forever: after the
        // grace period they are cut (their replies still finish and are
        // stored by their own tasks while the process lives).
        let grace = std::time::Duration::from_secs(self.state.config().server.shutdown_grace_secs);
        match tokio::time::timeout(grace, &mut self.handle).await {
            Ok(joined) => joined??,
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "connections still open after the grace period; closing them"
                );
                self.handle.abort();
            }
        }
        if let Err(e) = crate::ops::cluster::leave(self.state.db()).await {
            tracing::warn!(error = %e, "could not mark this instance stopped");
        }
        self.state.db().checkpoint()
    }
}

/// Opens the database (migrating it) and seeds live settings from config.
pub fn open_db(config: &Config, now: i64) -> anyhow::Result<Db> {
    let d = &config.database;
    let db = match d.postgres_url() {
        Some(url) => Db::open_postgres(
            &db::PgSettings {
                url,
                ca_file: Some(d.ca_file.as_str()).filter(|f| !f.is_empty()),
                statement_timeout: std::time::Duration::from_millis(d.statement_timeout_ms),
                connect_timeout: std::time::Duration::from_secs(d.connect_timeout_secs),
            },
            d.pool_size,
        )?,
        None => Db::open_with(Path::new(&d.path), d.pool_size, d.synchronous)?,
    };
    let seeds = [
        (db::billing::FREE_DAILY, config.quota.free_daily),
        (db::billing::PRICE_FEN, config.quota.price_fen),
        (
            budget::DAILY_BUDGET,
            budget::to_nanos(config.llm.daily_budget),
        ),
        (
            budget::MONTHLY_BUDGET,
            budget::to_nanos(config.llm.monthly_budget),
        ),
    ];
    let topups = config.quota.topup_amounts_fen.clone();
    db.write_blocking(move |tx| {
        for (key, value) in seeds {
            db::billing::seed_setting(tx, key, value, now)?;
        }
        db::billing::seed_topups(tx, &topups, now)
    })
    .map_err(|e| anyhow::anyhow!("seeding settings: {e}"))?;
    Ok(db)
}

/// The configured secret, else the one generated into <data dir>/jwt.secret.
pub fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if !config.auth.jwt_secret.is_empty() {
        return Ok(config.auth.jwt_secret.as_bytes().to_vec());
    }
    let path = config.data_dir().join("jwt.secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 bytes; delete it to regenerate",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(config.data_dir())?;
    let secret = crate::ids::random_hex(32);
    write_private(&path, secret.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(path = %path.display(), "generated a JWT secret (auth.jwt_secret is not set)");
    Ok(secret.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

/// Builds the state, recovers from a crash, binds and starts serving.
pub async fn start(config: Config, clock: SharedClock) -> anyhow::Result<Server> {
    // A bad certificate, key or ACME directory is a config error (exit 2),
    // found before anything else is opened.
    let mut tls = Tls::setup(&config).await?;
    let http_bind: Option<SocketAddr> = match config.server.http_bind.as_str() {
        "" => None,
        b => Some(b.parse()?),
    };
    let now = to_ms(clock.now());
    // Before anything touches the database (crash recovery releases holds).
    // SQLite allows one server per file; Postgres is shared by design.
    let lock = match config.database.postgres_url() {
        None => Some(crate::ops::lock::acquire(Path::new(&config.database.path))?),
        Some(_) => None,
    };
    let db = open_db(&config, now)?;
    let secret = jwt_secret(&config)?;
    let storage = Storage::from_config(&config, &secret)?;
    tracing::info!(kind = storage.kind(), "object storage");
    let bind: SocketAddr = config.server.bind.parse()?;
    let dev = config.dev_login_enabled();
    let payments = crate::pay::Payments::from_config(&config)?;
    let pay = payments.is_some();
    let notify_url = config.pay_notify_url();
    let (state, warnings) = AppState::new(config, db, clock, &secret, storage, payments);
    for w in warnings {
        tracing::warn!("{w}");
    }
    if dev {
        tracing::warn!("dev login is ON: anyone can log in with code \"dev:<name>\" (set wechat.app_id, or auth.dev_login = false)");
    }
    if pay {
        tracing::info!("WeChat Pay is enabled");
        if !notify_url.starts_with("https://") {
            tracing::warn!(
                "wechat_pay notify URL is not https: WeChat Pay only notifies https URLs"
            );
        }
    } else {
        tracing::warn!(
            "WeChat Pay is disabled (wechat_pay.mch_id is empty): /api/pay/* answers 503"
        );
    }
    let recovered = crate::chat::service::recover_orphans(state.db(), now)
        .await
        .map_err(|e| anyhow::anyhow!("releasing holds left by a crash: {e}"))?;
    if recovered > 0 {
        tracing::warn!(
            count = recovered,
            "released reservations left by an unclean shutdown"
        );
    }
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr()?;
    let http_listener = match http_bind {
        Some(b) => Some(
            TcpListener::bind(b)
                .await
                .with_context(|| format!("binding server.http_bind {b}"))?,
        ),
        None => None,
    };
    crate::ops::cluster::join(state.db())
        .await
        .map_err(|e| anyhow::anyhow!("registering this instance: {e}"))?;
    crate::ops::cluster::spawn_heartbeat(state.clone());
    crate::http::ratelimit::spawn_shrinker(state.clone());
    if let Err(e) = crate::location::purge_expired(&state).await {
        tracing::warn!(error = %e, "location retention sweep failed");
    }
    crate::location::spawn_retention(state.clone());
    crate::ops::backup::spawn_schedule(state.clone());
    state
        .db()
        .spawn_checkpointer(std::time::Duration::from_millis(500));
    crate::storage::service::spawn_sweeper(state.clone());
    match crate::jobs::service::resume(&state).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "resumed batch jobs interrupted by the last stop"),
        Err(e) => tracing::warn!(error = %e, "could not resume batch jobs"),
    }
    let (tx, rx) = oneshot::channel::<()>();
    let app = http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let (handle, http_handle, http_addr) = match tls.as_mut() {
        None => {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| no_delay(tcp));
            let handle = tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            });
            (handle, None, None)
        }
        Some(t) => {
            use axum::serve::ListenerExt;
            let tls_listener = t
                .listener(listener)?
                .tap_io(|tls| no_delay(tls.get_ref().0));
            let handle = tokio::spawn(async move {
                axum::serve(tls_listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            });
            let (http_handle, http_addr) = match http_listener {
                Some(l) => {
                    let http_addr = l.local_addr()?;
                    let router = t.http_router(addr.port());
                    let h = tokio::spawn(async move { axum::serve(l, router).await });
                    tracing::info!(addr = %http_addr, "plain HTTP: ACME http-01 and redirects to HTTPS");
                    (Some(h), Some(http_addr))
                }
                None => (None, None),
            };
            t.start(state.clone());
            (handle, http_handle, http_addr)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, version = env!("CARGO_PKG_VERSION"), "listening");
    Ok(Server {
        addr,
        state,
        http_addr,
        shutdown: Some(tx),
        handle,
        _lock: lock,
        tls,
        http_handle,
    })
}

/// Small writes leave at once: a streamed reply is one small write per
/// delta, and with Nagle's algorithm each would wait for the ACK of the
/// previous one (up to the peer's delayed-ACK timer, 40 ms on Linux).
fn no_delay(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// `mvp28 serve` until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // The handlers are in place before the first request is answered: a
    // SIGTERM right after a passing health check (an orchestrator, a
    // deploy script) must stop the server cleanly, not kill it.
    let signal = shutdown_signal();
    let server = start(config, Arc::new(SystemClock)).await?;
    crate::ops::systemd::ready(&format!("listening on {}", server.addr));
    crate::ops::memory::release_startup_memory();
    tokio::select! {
        _ = signal => {}
        _ = crate::ops::systemd::watchdog(&server) => {}
    }
    crate::ops::systemd::stopping();
    tracing::info!("shutting down: finishing in-flight requests");
    server.stop().await?;
    tracing::info!("stopped cleanly (WAL checkpointed)");
    Ok(())
}

/// Resolves at SIGTERM or SIGINT; the handlers are registered when this is
/// called, not when it is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let (Ok(mut term), Ok(mut int)) = (term, int) else {
                tracing::warn!("could not listen for SIGTERM/SIGINT; stop the server with SIGKILL");
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
