//! A budget for warning lines that strangers can cause: past it, lines are counted, not written,
//! and the next line written says how many were left out. A flood of refusals then costs the log
//! a few lines a second instead of one per request (which would fill a disk, or make journald
//! drop the lines that matter).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lines per second a budget allows, with bursts of five times as many.
pub const REFUSAL_LINES_PER_SECOND: u32 = 20;

pub struct LogBudget {
    limiter: governor::DefaultDirectRateLimiter,
    left_out: AtomicU64,
}

impl LogBudget {
    pub fn per_second(lines: u32) -> LogBudget {
        let rate = NonZeroU32::new(lines).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(lines.saturating_mul(5)).unwrap_or(rate);
        LogBudget {
            limiter: governor::RateLimiter::direct(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one written)` when a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        if self.limiter.check().is_ok() {
            Some(self.left_out.swap(0, Ordering::Relaxed))
        } else {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_burst_lines_are_counted_and_reported_with_the_next() {
        let budget = LogBudget::per_second(1);
        let admitted = (0..5).filter(|_| budget.admit() == Some(0)).count();
        assert_eq!(admitted, 5, "a burst of five times the rate");
        for _ in 0..3 {
            assert_eq!(budget.admit(), None);
        }
        assert_eq!(budget.left_out.load(Ordering::Relaxed), 3);
    }
}
