//! Jittered exponential backoff for re-dialling the edge.

use std::time::Duration;

const INITIAL: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(30);

pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { next: INITIAL }
    }

    pub fn reset(&mut self) {
        self.next = INITIAL;
    }

    /// The delay before the next attempt: the current step with full jitter over its upper half,
    /// so many connectors restarting together do not dial in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        let half = base / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= MAX);
        }
        assert!(last >= MAX / 2);
        b.reset();
        assert!(b.next_delay() <= INITIAL);
    }
}
