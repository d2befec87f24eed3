//! The money rule, in one place.
//!
//! Every message a user sends is paid for by one free message of the day
//! (`quota.free_daily`, counted in `quota.timezone`) or, past those, by
//! `price_fen` of prepaid balance. Work that costs a message (a chat turn, a
//! voice operation) first takes a [`Hold`] in the same transaction that
//! records the work; only [`Hold::settle`] moves money, as one ledger row,
//! when the work is stored; [`Hold::release`] gives the hold back when it
//! fails. So the stored balance always equals the sum of the ledger, even
//! while replies are being generated, and a client that gets an error was
//! never charged.
//!
//! Beside the user's money, the operator's: every upstream call is recorded
//! with tokens and cost ([`calls`]), and new work stops once the day's or
//! month's spend budget is used up ([`budget`]).
//!
//! Nothing outside this module (and its SQL in `db::billing`) touches
//! balances, holds or the ledger.

pub mod budget;
pub mod calls;
mod hold;
pub mod ledger;
pub mod quota;
pub mod report;
pub mod topups;
pub mod types;

use chrono::{DateTime, FixedOffset, Utc};

pub use hold::Hold;
pub use quota::{QuotaView, ReplyQuota};

/// One instant as the money rule reads it: the free quota resets at local
/// midnight and budgets run per local day and month, in `quota.timezone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// Milliseconds since the epoch, as stored.
    pub ms: i64,
    /// The local day, e.g. "2026-11-25".
    pub day: String,
    /// The local month, e.g. "2026-11".
    pub month: String,
}

impl At {
    pub fn new(now: DateTime<Utc>, offset: FixedOffset) -> At {
        let local = now.with_timezone(&offset);
        At {
            ms: now.timestamp_millis(),
            day: local.format("%Y-%m-%d").to_string(),
            month: local.format("%Y-%m").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::At;

    #[test]
    fn the_day_rolls_at_local_midnight() {
        let cst = crate::config::parse_offset("+08:00").unwrap();
        let before = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 15, 59, 59)
            .unwrap();
        let after = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 16, 0, 0)
            .unwrap();
        let b = At::new(before, cst);
        let a = At::new(after, cst);
        assert_eq!(
            (b.day.as_str(), b.month.as_str()),
            ("2026-11-30", "2026-11")
        );
        assert_eq!(
            (a.day.as_str(), a.month.as_str()),
            ("2026-12-01", "2026-12")
        );
        assert_eq!(a.ms - b.ms, 1000);
    }
}
