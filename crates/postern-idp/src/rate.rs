//! Token buckets per key (an address, or one for everyone): how often something may happen,
//! with a burst. A pure structure with time as a parameter, bounded in entries: a full bucket is
//! the same as no bucket, so only keys that spent something recently take memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// `burst` at once, then one more every `every`.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

/// Buckets kept at most; past it the full ones go, then the quarter least recently used (which
/// start again with a full burst: a bounded gift, against unbounded memory).
const MAX_BUCKETS: usize = 20_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets per key.
#[derive(Debug)]
pub struct Budget<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    pub fn new(rate: Rate) -> Budget<K> {
        Budget {
            rate,
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let per = self.rate.every.as_secs_f64().max(f64::MIN_POSITIVE);
        let gained = now.saturating_duration_since(b.at).as_secs_f64() / per;
        (b.tokens + gained).min(f64::from(self.rate.burst))
    }

    /// Spends one token of `key` at `now`, or says how long until one is there.
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(key) {
            self.make_room(now);
        }
        let full = Bucket {
            tokens: f64::from(self.rate.burst),
            at: now,
        };
        let b = self.buckets.get(key).copied().unwrap_or(full);
        let tokens = self.refilled(&b, now);
        if tokens < 1.0 {
            let wait = self.rate.every.mul_f64(1.0 - tokens);
            return Err(wait.max(Duration::from_secs(1)));
        }
        self.buckets.insert(
            key.clone(),
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Drops the buckets that have refilled: they are the same as none.
    pub fn sweep(&mut self, now: Instant) {
        let burst = f64::from(self.rate.burst);
        let per = self.rate.every.as_secs_f64().max(f64::MIN_POSITIVE);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / per < burst
        });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        self.sweep(now);
        if self.buckets.len() < MAX_BUCKETS {
            return;
        }
        let mut times: Vec<Instant> = self.buckets.values().map(|b| b.at).collect();
        let cut = times.len() / 4;
        let (_, cutoff, _) = times.select_nth_unstable(cut);
        let cutoff = *cutoff;
        self.buckets.retain(|_, b| b.at > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut b = Budget::new(Rate {
            burst: 3,
            every: 10 * S,
        });
        let taken = (0..100).filter(|_| b.take(&"a", t0).is_ok()).count();
        assert_eq!(taken, 3);
        assert_eq!(b.take(&"a", t0), Err(10 * S));
        let wait = b.take(&"a", t0 + 4 * S).unwrap_err();
        assert!(wait > 5 * S && wait <= 6 * S, "{wait:?}");
        assert_eq!(b.take(&"a", t0 + 10 * S), Ok(()));
        assert!(b.take(&"a", t0 + 10 * S).is_err());
        assert_eq!(b.take(&"b", t0), Ok(()), "keys are apart");
    }

    #[test]
    fn refilled_buckets_are_swept_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let mut b = Budget::new(Rate { burst: 2, every: S });
        for i in 0..(MAX_BUCKETS as u64 + 10) {
            let _ = b.take(&i, t0);
        }
        assert!(b.len() <= MAX_BUCKETS);
        b.sweep(t0 + S);
        assert!(b.is_empty(), "one token back each: all full again");
    }
}
