//! systemd's notify protocol (`Type=notify`): READY once listening,
//! STOPPING on shutdown, and `WATCHDOG=1` while the server is really alive.
//!
//! A ping proves two things: the serving loop is still running on this
//! runtime (the task that pings shares it, and checks the accept loop has
//! not ended), and the database writer thread still commits (a no-op write
//! job goes through its queue). A process that hangs in either stops
//! pinging, and systemd restarts it after `WatchdogSec=`. Outside systemd
//! (no NOTIFY_SOCKET) everything here does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::ops::serve::Server;

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Pings the watchdog at half its period while the server is healthy;
/// returns never (it is raced against the shutdown signal).
pub async fn watchdog(server: &Server) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return std::future::pending().await;
    };
    let every = (period / 2).max(Duration::from_millis(50));
    tracing::info!(period_ms = period.as_millis() as u64, "systemd watchdog on");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !server.is_serving() {
            tracing::error!("the serving loop has ended; no longer feeding the watchdog");
            return std::future::pending().await;
        }
        let writer = tokio::time::timeout(every, server.state.db().write(|_| Ok(()))).await;
        match writer {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            Ok(Err(e)) => tracing::warn!(error = %e, "watchdog: the database writer failed"),
            Err(_) => tracing::warn!("watchdog: the database writer did not answer in time"),
        }
    }
}
