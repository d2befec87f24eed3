//! The operator console: HTML pages at `/admin/` (`pages.rs`, assets
//! embedded in the binary) over a JSON admin API at `/api/admin/*`
//! (`handlers.rs`, in the OpenAPI document), both on the same service
//! (`service.rs`) and the console's own admin accounts (`auth.rs`).
//! Every admin action writes an `admin_audit` row in the transaction that
//! does it. Money moves only through `crate::billing`.

pub mod accounts;
pub mod auth;
pub mod handlers;
pub mod pages;
pub mod service;
pub mod views;

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Login attempts allowed per client address and per admin name, a minute.
pub const LOGIN_ATTEMPTS_PER_MINUTE: u32 = 10;

/// What the console keeps in memory: login limits and the start time.
pub struct Console {
    login_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    login_by_name: DefaultKeyedRateLimiter<String>,
    started: std::time::Instant,
    /// The last `doctor` report run from the console.
    doctor: std::sync::Mutex<Option<views::DoctorReport>>,
}

impl Default for Console {
    fn default() -> Self {
        let quota = Quota::per_minute(
            NonZeroU32::new(LOGIN_ATTEMPTS_PER_MINUTE).expect("non-zero login limit"),
        );
        Console {
            login_by_ip: RateLimiter::keyed(quota),
            login_by_name: RateLimiter::keyed(quota),
            started: std::time::Instant::now(),
            doctor: std::sync::Mutex::new(None),
        }
    }
}

impl Console {
    /// Counts a login attempt; Err(seconds to wait) when over the limit.
    pub fn login_attempt(&self, ip: IpAddr, name: &str) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        let wait = |nu: governor::NotUntil<_>| {
            nu.wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        };
        self.login_by_ip.check_key(&ip).map_err(wait)?;
        self.login_by_name
            .check_key(&name.to_ascii_lowercase())
            .map_err(wait)
    }

    pub fn last_doctor(&self) -> Option<views::DoctorReport> {
        self.doctor.lock().expect("doctor lock").clone()
    }

    pub fn keep_doctor(&self, report: views::DoctorReport) {
        *self.doctor.lock().expect("doctor lock") = Some(report);
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
