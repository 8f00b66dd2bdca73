//! Steady request load against one URL, counting every answer, for tests that change things
//! under traffic and must show that no request failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Workers sending GETs back to back until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What a load run saw.
#[derive(Debug)]
pub struct Tally {
    pub ok: u64,
    pub failures: Vec<String>,
}

impl Load {
    pub fn start(client: reqwest::Client, url: String, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                                Ok(_) => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => failures.lock().unwrap().push(format!("body: {e}")),
                            },
                            Ok(resp) => {
                                let status = resp.status();
                                let body = resp.text().await.unwrap_or_default();
                                failures.lock().unwrap().push(format!(
                                    "{status}: {}",
                                    body.chars().take(300).collect::<String>()
                                ));
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            workers,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more requests have succeeded (the load is really flowing).
    pub async fn wait_for_more(&self, n: u64) {
        let target = self.ok() + n;
        let wait = async {
            while self.ok() < target {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(super::READY_TIMEOUT, wait)
            .await
            .expect("the load stopped making progress");
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        Tally {
            ok: self.ok.load(Ordering::Relaxed),
            failures,
        }
    }
}
