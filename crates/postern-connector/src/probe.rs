//! The connector's `/readyz` (a config applied and at least one tunnel up) and the gauges read at
//! each scrape: its live tunnels and its certificate's expiry.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::credentials::Credentials;

pub struct ConnectorProbe {
    pub connector_id: String,
    /// The config version applied; 0 until the first.
    pub applied: watch::Receiver<u64>,
    pub live: Arc<AtomicUsize>,
    pub credentials: Arc<ArcSwap<Credentials>>,
}

impl postern_obs::listener::Probe for ConnectorProbe {
    fn ready(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        let verdict = if *self.applied.borrow() == 0 {
            Err("no config from the edge applied yet".to_owned())
        } else if self.live.load(Ordering::Relaxed) == 0 {
            Err("no tunnel to the edge is up".to_owned())
        } else {
            Ok(())
        };
        Box::pin(std::future::ready(verdict))
    }

    fn refresh(&self) {
        postern_obs::metrics::tunnels_of_connector(
            &self.connector_id,
            self.live.load(Ordering::Relaxed),
        );
        let not_after = self.credentials.load().not_after;
        let left = match not_after.duration_since(SystemTime::now()) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        postern_obs::metrics::certificate_expiry(&format!("connector:{}", self.connector_id), left);
    }
}
