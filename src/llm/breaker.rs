//! Circuit breaker per provider: after `threshold` consecutive failures the
//! provider is skipped for a cool-down, then exactly one probe request is let
//! through; its outcome closes or reopens. An explicit Retry-After rests the
//! provider for exactly as long as it says (not the cool-down).
//!
//! The breaker only orders failover: a provider that is a model's last
//! remaining option is tried anyway ([`Breaker::try_last`]), except while
//! the upstream itself asked for rest with Retry-After.

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: DateTime<Utc> },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct Breaker {
    state: State,
    threshold: u32,
    cooldown: Duration,
    /// Until when the upstream asked (Retry-After) not to be called.
    resting_until: Option<DateTime<Utc>>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown,
            resting_until: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// May a request go to this provider now?
    pub fn try_acquire(&mut self, now: DateTime<Utc>) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probing: true } => false,
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                true
            }
        }
    }

    /// May a request go to this provider when it is the model's last
    /// remaining option? Yes, unless the upstream asked for rest
    /// (Retry-After) that has not yet passed.
    pub fn try_last(&mut self, now: DateTime<Utc>) -> bool {
        if self.try_acquire(now) {
            return true;
        }
        self.resting_until.is_none_or(|t| now >= t)
    }

    /// Seconds left of a Retry-After rest, if any.
    pub fn resting_for(&self, now: DateTime<Utc>) -> Option<u64> {
        self.resting_until
            .filter(|t| *t > now)
            .map(|t| (t - now).num_milliseconds().div_euclid(1000) as u64 + 1)
    }

    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
        self.resting_until = None;
    }

    /// An answer that says nothing about the provider's health (a 4xx that
    /// is the request's fault): a probe slot is given back, counts stay.
    pub fn on_neutral(&mut self) {
        if let State::HalfOpen { probing: true } = self.state {
            self.state = State::HalfOpen { probing: false };
        }
    }

    pub fn on_failure(&mut self, now: DateTime<Utc>, retry_after_secs: Option<u64>) {
        if let Some(s) = retry_after_secs {
            // Honoured exactly: out for as long as it says, not longer.
            let until = now + Duration::seconds(s as i64);
            self.resting_until = Some(until);
            self.state = match self.state {
                State::Open { until: u } if u > until => State::Open { until: u },
                _ => State::Open { until },
            };
            return;
        }
        self.state = match self.state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    State::Open {
                        until: now + self.cooldown,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            State::HalfOpen { .. } => State::Open {
                until: now + self.cooldown,
            },
            State::Open { until } => State::Open {
                until: until.max(now),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn opens_after_threshold_then_probes_once() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut b = Breaker::new(2, Duration::seconds(30));
        assert!(b.try_acquire(t0));
        b.on_failure(t0, None);
        assert!(b.try_acquire(t0), "one failure keeps it closed");
        b.on_failure(t0, None);
        assert!(
            !b.try_acquire(t0 + Duration::seconds(29)),
            "open during cool-down"
        );
        assert!(
            b.try_acquire(t0 + Duration::seconds(30)),
            "half-open lets a probe through"
        );
        assert!(!b.try_acquire(t0 + Duration::seconds(30)), "only one probe");
        b.on_failure(t0 + Duration::seconds(30), None);
        assert!(
            !b.try_acquire(t0 + Duration::seconds(31)),
            "failed probe reopens"
        );
        assert!(b.try_acquire(t0 + Duration::seconds(60)));
        b.on_success();
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn retry_after_opens_at_once_for_exactly_that_long() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut b = Breaker::new(5, Duration::seconds(10));
        b.on_failure(t0, Some(120));
        assert!(!b.try_acquire(t0 + Duration::seconds(119)));
        assert!(!b.try_last(t0 + Duration::seconds(119)), "rest is honoured");
        assert!(b.try_acquire(t0 + Duration::seconds(120)));
        let mut b = Breaker::new(5, Duration::seconds(30));
        b.on_failure(t0, Some(1));
        assert!(
            b.try_acquire(t0 + Duration::seconds(1)),
            "not the cool-down"
        );
    }

    #[test]
    fn the_last_option_is_tried_through_an_open_circuit() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut b = Breaker::new(1, Duration::seconds(30));
        b.on_failure(t0, None);
        assert!(!b.try_acquire(t0));
        assert!(b.try_last(t0));
        b.on_success();
        assert!(b.try_acquire(t0));
    }
}
