//! The bodies the edge streams: the user's request body on its way down a tunnel, and the app's
//! response on its way back to the user.
//!
//! Both are watched for stalls. A user who stops sending a request body is cut off after the
//! stall timeout, and so is one who stops reading a response: a stream whose data waits for the
//! user longer than that is reset, which hands its share of the tunnel's flow-control window back
//! to everyone else. Without it, a few clients that start large downloads and never read would
//! fill the tunnel's connection window and stall every other request of the connector group.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::tunnels::InFlight;

/// Errors of the bodies the edge streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Either the app's streamed response, which keeps its tunnel counted as busy until it ends, or a
/// page the edge wrote itself.
pub enum EdgeBody {
    App {
        body: AppStream,
        in_flight: Option<InFlight>,
    },
    Page(Full<Bytes>),
}

impl EdgeBody {
    pub fn page(bytes: impl Into<Bytes>) -> EdgeBody {
        EdgeBody::Page(Full::new(bytes.into()))
    }

    /// An app's response streamed from a tunnel, watched for a user who stops reading it.
    pub fn app(body: Incoming, in_flight: InFlight, stalls: &Arc<StallWatch>) -> EdgeBody {
        EdgeBody::App {
            body: AppStream::Direct {
                body,
                watch: stalls.clone(),
            },
            in_flight: Some(in_flight),
        }
    }
}

impl Body for EdgeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            EdgeBody::App { body, in_flight } => {
                let polled = body.poll(cx);
                if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = polled {
                    // The stream is over: the tunnel is no longer busy with it.
                    in_flight.take();
                }
                polled
            }
            EdgeBody::Page(full) => match Pin::new(full).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::App { body, .. } => body.is_end_stream(),
            EdgeBody::Page(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::App { body, .. } => body.size_hint(),
            EdgeBody::Page(full) => full.size_hint(),
        }
    }
}

/// An app's response body. Responses that fit in one frame (most of them) stay `Direct` and cost
/// nothing more; a longer one is handed to the [`StallWatch`] once its first frame is out, so the
/// watch can drop it if the user stops reading.
pub enum AppStream {
    Direct {
        body: Incoming,
        watch: Arc<StallWatch>,
    },
    Watched(Arc<WatchedStream>),
    /// Momentarily, while moving from `Direct` to `Watched`.
    Moving,
}

/// A response stream the stall watch can take away from its body.
pub struct WatchedStream {
    body: Mutex<Option<Incoming>>,
    /// Milliseconds (on [`coarse_now`]'s clock) since which the stream's last frame has been
    /// waiting for the user to take it; `u64::MAX` while the stream waits for the app instead.
    waiting_for_user_since: AtomicU64,
}

impl AppStream {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            AppStream::Direct { body, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(_))) = &polled {
                    if !body.is_end_stream() {
                        self.watch();
                    }
                }
                polled.map(|f| f.map(|r| r.map_err(Into::into)))
            }
            AppStream::Watched(w) => {
                let mut slot = w.body.lock().unwrap_or_else(|p| p.into_inner());
                let Some(body) = slot.as_mut() else {
                    return Poll::Ready(Some(Err(StreamStalled.into())));
                };
                let polled = Pin::new(body).poll_frame(cx);
                let since = match &polled {
                    Poll::Ready(Some(Ok(_))) => coarse_now(),
                    _ => u64::MAX,
                };
                w.waiting_for_user_since.store(since, Ordering::Relaxed);
                polled.map(|f| f.map(|r| r.map_err(Into::into)))
            }
            AppStream::Moving => Poll::Ready(None),
        }
    }

    /// Hands the stream to the stall watch: its first frame is out and more are coming.
    fn watch(&mut self) {
        if let AppStream::Direct { body, watch } = std::mem::replace(self, AppStream::Moving) {
            let watched = Arc::new(WatchedStream {
                body: Mutex::new(Some(body)),
                waiting_for_user_since: AtomicU64::new(coarse_now()),
            });
            watch.add(&watched);
            *self = AppStream::Watched(watched);
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AppStream::Direct { body, .. } => body.is_end_stream(),
            AppStream::Watched(w) => w
                .body
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_none_or(Body::is_end_stream),
            AppStream::Moving => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AppStream::Direct { body, .. } => body.size_hint(),
            AppStream::Watched(w) => w
                .body
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map_or_else(SizeHint::default, Body::size_hint),
            AppStream::Moving => SizeHint::with_exact(0),
        }
    }
}

/// The user stopped reading a response; the edge reset its stream.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing of the response within the stall timeout; its stream was reset")]
pub struct StreamStalled;

/// Milliseconds since the process's first call: a clock the watched streams and the watch share.
fn coarse_now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The responses in flight that span more than one frame, checked now and then for a user who
/// stopped reading.
pub struct StallWatch {
    timeout: Duration,
    streams: Mutex<Vec<Weak<WatchedStream>>>,
}

impl StallWatch {
    /// A watch that resets streams stalled for `timeout`, checking every quarter of it.
    pub fn start(timeout: Duration) -> Arc<StallWatch> {
        let watch = Arc::new(StallWatch {
            timeout,
            streams: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                let Some(watch) = weak.upgrade() else { return };
                let reset = watch.sweep(coarse_now());
                if reset > 0 {
                    tracing::info!(
                        streams = reset,
                        timeout_secs = watch.timeout.as_secs(),
                        "reset response streams whose clients stopped reading"
                    );
                }
            }
        });
        watch
    }

    fn add(&self, stream: &Arc<WatchedStream>) {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(stream));
    }

    /// Forgets finished streams and drops the bodies of those that waited for their user past
    /// the timeout (at `now`, on [`coarse_now`]'s clock). Returns how many it reset.
    fn sweep(&self, now: u64) -> usize {
        let timeout = self.timeout.as_millis() as u64;
        let mut stalled = Vec::new();
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|weak| {
                let Some(stream) = weak.upgrade() else {
                    return false;
                };
                let since = stream.waiting_for_user_since.load(Ordering::Relaxed);
                if since != u64::MAX && now.saturating_sub(since) >= timeout {
                    stalled.push(stream);
                    return false;
                }
                true
            });
        let reset = stalled.len();
        for stream in stalled {
            // Dropping the tunnel body resets its stream and returns the data it held to the
            // tunnel's window; the user's side sees an error when (if ever) it reads again.
            let body = stream.body.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(body);
        }
        reset
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.streams.lock().unwrap().len()
    }
}

/// What became of a user's request body, for the edge to blame the right side when a stream
/// fails: the tunnel, or the client that sent a malformed or stalled body.
#[derive(Clone, Default)]
pub struct UserBodyOutcome(Arc<AtomicU8>);

/// The request body was malformed or cut short by the client.
const BODY_MALFORMED: u8 = 1;
/// The request body stopped arriving for longer than the stall timeout.
const BODY_STALLED: u8 = 2;

impl UserBodyOutcome {
    /// The refusal the client earned with its body, if it did.
    pub fn refusal(&self, stall_timeout: Duration) -> Option<crate::rescue::Refusal> {
        match self.0.load(Ordering::Relaxed) {
            BODY_MALFORMED => Some(crate::rescue::Refusal::BadRequestBody),
            BODY_STALLED => Some(crate::rescue::Refusal::RequestBodyStalled {
                timeout: stall_timeout,
            }),
            _ => None,
        }
    }
}

/// The user's request body on its way down a tunnel: it fails when the client sends nothing for
/// the stall timeout, and records a client error so the edge answers 400 or 408, not 502.
pub struct UserBody {
    inner: Incoming,
    stall_timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
    outcome: UserBodyOutcome,
}

impl UserBody {
    pub fn new(inner: Incoming, stall_timeout: Duration) -> (UserBody, UserBodyOutcome) {
        let outcome = UserBodyOutcome::default();
        (
            UserBody {
                inner,
                stall_timeout,
                stall: None,
                armed: false,
                outcome: outcome.clone(),
            },
            outcome,
        )
    }
}

/// A request body that stopped arriving.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body for the stall timeout")]
pub struct BodyStalled;

impl Body for UserBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                // Waiting for the client (the tunnel asked for more): start the stall clock.
                let deadline = Instant::now() + this.stall_timeout;
                let sleep = match &mut this.stall {
                    Some(s) => {
                        if !this.armed {
                            s.as_mut().reset(deadline);
                        }
                        s
                    }
                    None => this
                        .stall
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.armed = true;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.outcome.0.store(BODY_STALLED, Ordering::Relaxed);
                        Poll::Ready(Some(Err(BodyStalled.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.outcome.0.store(BODY_MALFORMED, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            ready => {
                this.armed = false;
                ready.map(|f| f.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_forgets_finished_streams_and_resets_stalled_ones() {
        let watch = StallWatch {
            timeout: Duration::from_secs(30),
            streams: Mutex::new(Vec::new()),
        };
        let waiting_for_app = Arc::new(WatchedStream {
            body: Mutex::new(None),
            waiting_for_user_since: AtomicU64::new(u64::MAX),
        });
        let stalled = Arc::new(WatchedStream {
            body: Mutex::new(None),
            waiting_for_user_since: AtomicU64::new(1_000),
        });
        let finished = Arc::new(WatchedStream {
            body: Mutex::new(None),
            waiting_for_user_since: AtomicU64::new(1_000),
        });
        watch.add(&waiting_for_app);
        watch.add(&stalled);
        watch.add(&finished);
        drop(finished);
        // 29 s later: nothing has waited long enough; the finished stream is forgotten.
        assert_eq!(watch.sweep(30_000 - 1), 0);
        assert_eq!(watch.watched(), 2);
        // 30 s: the stalled one is reset; the one waiting for its app is not the user's fault.
        assert_eq!(watch.sweep(31_000), 1);
        assert_eq!(watch.watched(), 1);
        assert!(stalled.body.lock().unwrap().is_none());
    }
}
