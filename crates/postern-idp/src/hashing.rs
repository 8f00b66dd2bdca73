//! Password checks run as a bounded number of Argon2id jobs: each takes 19 MiB and tens of
//! milliseconds of a core, so running every sign-in's hash at once only adds memory (gigabytes
//! under a burst), never throughput. A few run at a time; the rest wait in a queue of bounded
//! length for a bounded time, and past either the caller is told to come back later.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::password;

/// Argon2id jobs running at once. More than the cores of a typical edge only adds memory
/// (19 MiB each) without checking passwords any faster; four keep a four-core edge busy.
pub const MAX_HASH_JOBS: usize = 4;
/// Checks that may wait for a job. At about 50 ms a hash, 64 waiting clear within a second on
/// four cores; more would wait longer than a person at a sign-in form should.
pub const HASH_QUEUE_DEPTH: usize = 64;
/// The longest a check waits for a job before it is refused (503 with `Retry-After`).
pub const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Why a check did not run: the sign-in service is busy; try again after `retry_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the password check queue is {why}; try again in {} s", retry_after.as_secs())]
pub struct Busy {
    pub why: &'static str,
    pub retry_after: Duration,
}

/// The bounded pool of Argon2id jobs.
pub struct Hasher {
    jobs: Arc<Semaphore>,
    waiting: AtomicUsize,
    depth: usize,
    wait: Duration,
}

/// Counts a waiting check for as long as it waits, even if the caller gives up (the request is
/// dropped when its client disconnects).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new(MAX_HASH_JOBS, HASH_QUEUE_DEPTH, HASH_QUEUE_WAIT)
    }
}

impl Hasher {
    pub fn new(jobs: usize, depth: usize, wait: Duration) -> Hasher {
        Hasher {
            jobs: Arc::new(Semaphore::new(jobs.max(1))),
            waiting: AtomicUsize::new(0),
            depth,
            wait,
        }
    }

    /// Checks `password` against `phc`, or against a dummy hash when there is none (an unknown
    /// user costs the same), once a job is free.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Busy> {
        self.run(move || password::verify_or_dummy(&password, phc.as_deref()))
            .await
    }

    /// Runs `work` as one of the bounded jobs, off the async workers.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let busy = |why| Busy {
            why,
            retry_after: self.wait.max(Duration::from_secs(1)),
        };
        // A free job is taken at once, without queueing.
        let permit = match self.jobs.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.depth {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(busy("full"));
                }
                let _waiting = Waiting(&self.waiting);
                match tokio::time::timeout(self.wait, self.jobs.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(busy("closed")),
                    Err(_) => return Err(busy("too slow")),
                }
            }
        };
        // The permit moves into the job: if the request is dropped meanwhile, the job still
        // counts until its hash is done.
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|_| busy("interrupted"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_are_bounded_and_an_overflowing_queue_is_refused() {
        let hasher = Arc::new(Hasher::new(2, 3, Duration::from_secs(30)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        // Each job waits at the gate, so jobs stay running until the test opens it.
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
                let gate = gate.clone();
                tokio::spawn(async move {
                    hasher
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            let (open, opened) = &*gate;
                            let mut open = open.lock().unwrap();
                            while !*open {
                                open = opened.wait(open).unwrap();
                            }
                            drop(open);
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        // Two run, three wait: the queue is full, so the next is refused at once.
        while hasher.waiting.load(Ordering::SeqCst) < 3 || running.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = hasher.run(|| ()).await;
        assert_eq!(refused.map_err(|b| b.why), Err("full"));
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(hasher.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_check_that_waits_too_long_is_refused_with_retry_after() {
        let hasher = Arc::new(Hasher::new(1, 8, Duration::from_millis(1)));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let holder = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(move || gate.recv()).await })
        };
        while hasher.jobs.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = hasher.run(|| ()).await.unwrap_err();
        assert_eq!(refused.why, "too slow");
        assert!(refused.retry_after >= Duration::from_secs(1));
        release.send(()).unwrap();
        assert!(holder.await.unwrap().is_ok());
    }
}
