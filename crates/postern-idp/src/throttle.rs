//! Brute-force protection: failed sign-ins per account and per client IP earn growing delays and
//! then a temporary lockout. A pure policy with time as a parameter; the caller holds the clock.
//!
//! The delay is not slept: an attempt made before it has passed is refused at once with the
//! time left, which costs the edge nothing and tells a real user how long to wait.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The shape of one throttle.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Failures allowed back to back before delays start (typing mistakes).
    pub free_failures: u32,
    /// The first delay; each further failure doubles it, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// After this many failures in a row, attempts are refused for `lockout`.
    pub lockout_after: u32,
    pub lockout: Duration,
    /// Failures older than this are forgotten.
    pub forget_after: Duration,
}

/// Per account: a few typos are free, then 1 s, 2 s, 4 s… and 15 minutes of lockout after 10
/// failures in a row (OWASP's authentication cheat sheet suggests this order of magnitude).
pub const PER_ACCOUNT: Policy = Policy {
    free_failures: 3,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
    lockout_after: 10,
    lockout: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(60 * 60),
};

/// Per client IP: looser, since many people can share one address (NAT), but it stops one
/// address from spraying passwords across many accounts.
pub const PER_IP: Policy = Policy {
    free_failures: 20,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
    lockout_after: 100,
    lockout: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(60 * 60),
};

/// Entries kept at most; past it the oldest are dropped, so a flood of random names cannot grow
/// memory without bound.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
}

/// An attempt refused until `retry_after` has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
    pub locked_out: bool,
}

/// Failures per key (an email, an IP address).
#[derive(Debug)]
pub struct Throttle<K> {
    policy: Policy,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(policy: Policy) -> Throttle<K> {
        Throttle {
            policy,
            entries: HashMap::new(),
        }
    }

    /// Whether an attempt for `key` may be made at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Refused> {
        let Some(e) = self.entries.get(key) else {
            return Ok(());
        };
        let p = &self.policy;
        let since = now.saturating_duration_since(e.last_failure);
        if since >= p.forget_after {
            return Ok(());
        }
        let (wait, locked_out) = if e.failures >= p.lockout_after {
            (p.lockout, true)
        } else if e.failures >= p.free_failures {
            let doublings = (e.failures - p.free_failures).min(16);
            (
                p.base_delay.saturating_mul(1 << doublings).min(p.max_delay),
                false,
            )
        } else {
            (Duration::ZERO, false)
        };
        if since >= wait {
            Ok(())
        } else {
            Err(Refused {
                retry_after: wait - since,
                locked_out,
            })
        }
    }

    pub fn failure(&mut self, key: &K, now: Instant) {
        let forget = self.policy.forget_after;
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(key) {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.last_failure) < forget);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            last_failure: now,
        });
        if now.saturating_duration_since(e.last_failure) >= forget {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
    }

    pub fn success(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Fails `n` times at `t0`, then checks at `t0 + after`.
    fn check(n: u32, after: Duration, expected: Result<(), Refused>) {
        let t0 = Instant::now();
        let mut t = Throttle::new(PER_ACCOUNT);
        for _ in 0..n {
            t.failure(&"ada", t0);
        }
        assert_eq!(
            t.check(&"ada", t0 + after),
            expected,
            "{n} failures, {after:?} later"
        );
        assert_eq!(t.check(&"bob", t0 + after), Ok(()));
    }

    fn refused(secs: u64, locked_out: bool) -> Result<(), Refused> {
        Err(Refused {
            retry_after: Duration::from_secs(secs),
            locked_out,
        })
    }

    #[test]
    fn delays_grow_then_lock_out() {
        check(0, Duration::ZERO, Ok(()));
        check(2, Duration::ZERO, Ok(()));
        check(3, Duration::ZERO, refused(1, false));
        check(3, S, Ok(()));
        check(4, Duration::ZERO, refused(2, false));
        check(5, S, refused(3, false));
        check(9, Duration::ZERO, refused(60, false));
        check(10, Duration::ZERO, refused(900, true));
        check(10, 899 * S, refused(1, true));
        check(10, 900 * S, Ok(()));
        check(50, 3600 * S, Ok(()));
    }

    #[test]
    fn success_clears_and_old_failures_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Throttle::new(PER_ACCOUNT);
        for _ in 0..5 {
            t.failure(&"ada", t0);
        }
        t.success(&"ada");
        assert_eq!(t.check(&"ada", t0), Ok(()));
        for _ in 0..9 {
            t.failure(&"ada", t0);
        }
        t.failure(&"ada", t0 + 3600 * S);
        assert_eq!(t.check(&"ada", t0 + 3600 * S), Ok(()));
    }
}
