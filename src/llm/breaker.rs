//! Circuit breaker per provider: after `threshold` consecutive failures (or
//! an explicit Retry-After) the provider is skipped for a cool-down, then
//! exactly one probe request is let through; its outcome closes or reopens.

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
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown,
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

    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    pub fn on_failure(&mut self, now: DateTime<Utc>, retry_after_secs: Option<u64>) {
        let open_for = |cooldown: Duration| match retry_after_secs {
            Some(s) => cooldown.max(Duration::seconds(s as i64)),
            None => cooldown,
        };
        self.state = match self.state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.threshold || retry_after_secs.is_some() {
                    State::Open {
                        until: now + open_for(self.cooldown),
                    }
                } else {
                    State::Closed { failures }
                }
            }
            State::HalfOpen { .. } => State::Open {
                until: now + open_for(self.cooldown),
            },
            State::Open { until } => State::Open {
                until: until.max(now + open_for(Duration::zero())),
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
    fn retry_after_opens_at_once_for_at_least_that_long() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut b = Breaker::new(5, Duration::seconds(10));
        b.on_failure(t0, Some(120));
        assert!(!b.try_acquire(t0 + Duration::seconds(119)));
        assert!(b.try_acquire(t0 + Duration::seconds(120)));
    }
}
