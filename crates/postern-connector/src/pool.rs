//! Keep-alive HTTP/1.1 connections to one app.
//!
//! Each app of the config holds its own list of connections, so a request finds one without
//! hashing an origin or locking a pool shared by every app. A connection goes back on the list as
//! soon as the app's response head has arrived; it is taken again once its connection task says
//! it is ready for the next request (HTTP/1.1 carries one at a time), which happens when that
//! response's body has been read to its end. A connection whose response was abandoned never
//! becomes ready and is dropped by the next sweep, as are closed ones and those idle too long.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

/// How long an idle connection is kept: beyond most apps' own keep-alive timeout (nginx: 75 s),
/// so the app, which knows when it closes, is usually the one that does.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most connections kept per app; a burst above it opens connections that close after use.
pub const MAX_KEPT: usize = 256;
/// How often idle and closed connections are dropped.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// The connections kept for one app.
pub struct Connections<B> {
    kept: Mutex<Vec<Kept<B>>>,
}

struct Kept<B> {
    sender: SendRequest<B>,
    /// When it was put back: its last response head arrived then.
    since: Instant,
}

impl<B> Default for Connections<B> {
    fn default() -> Self {
        Connections {
            kept: Mutex::new(Vec::new()),
        }
    }
}

impl<B> Connections<B> {
    /// A connection ready for a request, the most recently used first (its socket is the
    /// likeliest to be open at the app's end too).
    pub fn take(&self) -> Option<SendRequest<B>> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let i = kept.iter().rposition(|k| k.sender.is_ready())?;
        Some(kept.swap_remove(i).sender)
    }

    /// Keeps a connection whose response head has arrived, unless it is closed or enough are
    /// kept already (then dropping it closes it once its response ends).
    pub fn put(&self, sender: SendRequest<B>, now: Instant) {
        if sender.is_closed() {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < MAX_KEPT {
            kept.push(Kept { sender, since: now });
        }
    }

    /// Drops the connections that are closed, or were put back longer than [`IDLE_TIMEOUT`] ago:
    /// idle that long, or carrying a response nobody read to its end (dropping the handle lets
    /// a response still streaming finish; the connection then closes).
    pub fn sweep(&self, now: Instant) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|k| {
            !k.sender.is_closed() && now.saturating_duration_since(k.since) < IDLE_TIMEOUT
        });
    }

    /// Connections kept now (ready or not).
    pub fn len(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
