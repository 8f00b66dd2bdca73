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

/// Entries kept at most; past it the forgotten ones go, then the quarter with the oldest
/// failures, so a flood of random names cannot grow memory without bound and cannot wipe the
/// counts of the accounts under attack either. A key is an email (at most 254 bytes) or an
/// address, so this is a few megabytes at most.
const MAX_ENTRIES: usize = 50_000;

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

    /// Reserves an attempt: refused as [`Throttle::check`] would, otherwise counted as a failure
    /// at once, before the work it stands for (a password hash) starts. Attempts made at the
    /// same instant therefore see each other, so a burst gets no more through than attempts
    /// made one by one. [`Throttle::success`] or [`Throttle::release`] take it back.
    pub fn attempt(&mut self, key: &K, now: Instant) -> Result<(), Refused> {
        self.check(key, now)?;
        self.failure(key, now);
        Ok(())
    }

    pub fn failure(&mut self, key: &K, now: Instant) {
        let forget = self.policy.forget_after;
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(key) {
            self.make_room(now);
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

    /// Gives back one reserved attempt that was not a failure after all: a success at a key many
    /// people share (an address), or work that never happened (the hashing queue was full).
    pub fn release(&mut self, key: &K) {
        if let Some(e) = self.entries.get_mut(key) {
            e.failures = e.failures.saturating_sub(1);
            if e.failures == 0 {
                self.entries.remove(key);
            }
        }
    }

    /// Clears the key's failures (a success on the account).
    pub fn success(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops the entries whose failures are forgotten at `now`, giving their memory back.
    pub fn sweep(&mut self, now: Instant) {
        let forget = self.policy.forget_after;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_failure) < forget);
    }

    /// How many keys have failures on record.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        self.sweep(now);
        if self.entries.len() < MAX_ENTRIES {
            return;
        }
        // The quarter with the oldest failures goes: the accounts under attack now stay.
        let mut times: Vec<Instant> = self.entries.values().map(|e| e.last_failure).collect();
        let cut = times.len() / 4;
        let (_, cutoff, _) = times.select_nth_unstable(cut);
        let cutoff = *cutoff;
        self.entries.retain(|_, e| e.last_failure > cutoff);
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
    fn a_burst_gets_no_more_attempts_than_one_by_one() {
        // Attempts that all arrive before any of them is judged: only the free failures pass,
        // however many there are.
        for (policy, expected) in [(PER_ACCOUNT, 3), (PER_IP, 20)] {
            let t0 = Instant::now();
            let mut t = Throttle::new(policy);
            let passed = (0..300).filter(|_| t.attempt(&"k", t0).is_ok()).count();
            assert_eq!(passed, expected);
            assert_eq!(
                t.check(&"k", t0),
                refused(1, false),
                "the next waits for the first delay"
            );
        }
    }

    #[test]
    fn a_released_attempt_is_given_back_and_a_success_clears() {
        let t0 = Instant::now();
        let mut t = Throttle::new(PER_ACCOUNT);
        for _ in 0..3 {
            t.attempt(&"ada", t0).unwrap();
        }
        assert!(t.attempt(&"ada", t0).is_err());
        t.release(&"ada");
        assert_eq!(t.attempt(&"ada", t0), Ok(()), "one given back");
        t.success(&"ada");
        assert!(t.is_empty());
        t.release(&"nobody");
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_keeps_the_newest_failures() {
        let t0 = Instant::now();
        let mut t = Throttle::new(PER_ACCOUNT);
        for _ in 0..10 {
            t.failure(&u64::MAX, t0 + 10 * S);
        }
        for i in 0..MAX_ENTRIES as u64 {
            t.failure(&i, t0);
        }
        assert!(t.len() <= MAX_ENTRIES);
        assert!(
            t.check(&u64::MAX, t0 + 11 * S).is_err(),
            "a lockout survives a flood of new names"
        );
        t.sweep(t0 + 3600 * S);
        assert_eq!(t.len(), 1);
        t.sweep(t0 + 3610 * S);
        assert!(t.is_empty());
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
