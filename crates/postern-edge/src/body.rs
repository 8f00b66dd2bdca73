//! The bodies the edge streams: the user's request body on its way down a tunnel, and the app's
//! response on its way back to the user.
//!
//! Both are watched for stalls. A user who stops sending a request body is cut off after the
//! stall timeout, and so is one who stops reading a response: a stream whose data waits for the
//! user longer than that is reset, which hands its share of the tunnel's flow-control window back
//! to everyone else. Without it, a few clients that start large downloads and never read would
//! fill the tunnel's connection window and stall every other request of the connector group.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
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
    App(AppStream),
    Page(Full<Bytes>),
}

impl EdgeBody {
    pub fn page(bytes: impl Into<Bytes>) -> EdgeBody {
        EdgeBody::Page(Full::new(bytes.into()))
    }

    /// An app's response streamed from a tunnel, watched for a user who stops reading it.
    pub fn app(
        body: Incoming,
        in_flight: InFlight,
        stalls: &Arc<StallWatch>,
        client: IpAddr,
    ) -> EdgeBody {
        let stream = Arc::new(WatchedStream {
            client,
            streaming: Mutex::new(Some(Streaming {
                body,
                _in_flight: in_flight,
            })),
            // Waiting for the user from the start: a client that never takes the first frame
            // (an HTTP/2 stream with no window) holds tunnel window as surely as one that
            // stops later.
            waiting_for_user_since: AtomicU64::new(coarse_now()),
        });
        stalls.add(&stream);
        EdgeBody::App(AppStream(stream))
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
            EdgeBody::App(stream) => stream.poll(cx),
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
            EdgeBody::App(stream) => stream.is_end_stream(),
            EdgeBody::Page(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::App(stream) => stream.size_hint(),
            EdgeBody::Page(full) => full.size_hint(),
        }
    }
}

/// An app's response body, shared with the [`StallWatch`] so the watch can take it away (reset
/// its tunnel stream, free the tunnel) when the user stops reading.
pub struct AppStream(Arc<WatchedStream>);

/// A response stream the stall watch can take away from its body.
pub struct WatchedStream {
    /// Whose response it is: past the budget, the addresses with the most stalled streams lose
    /// theirs first.
    client: IpAddr,
    /// `None` once the stream ended, failed or was reset by the watch.
    streaming: Mutex<Option<Streaming>>,
    /// Milliseconds (on [`coarse_now`]'s clock) since which the stream has been waiting for the
    /// user to take a frame; `u64::MAX` while it waits for the app instead, or once it is over.
    waiting_for_user_since: AtomicU64,
}

struct Streaming {
    body: Incoming,
    /// The tunnel counts as busy with this stream until it is dropped.
    _in_flight: InFlight,
}

impl AppStream {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let w = &self.0;
        let mut slot = w.streaming.lock().unwrap_or_else(|p| p.into_inner());
        let Some(streaming) = slot.as_mut() else {
            return Poll::Ready(Some(Err(StreamStalled.into())));
        };
        let polled = Pin::new(&mut streaming.body).poll_frame(cx);
        let since = match &polled {
            Poll::Ready(Some(Ok(_))) => coarse_now(),
            Poll::Pending => u64::MAX,
            // The stream is over: the tunnel is no longer busy with it.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                *slot = None;
                u64::MAX
            }
        };
        w.waiting_for_user_since.store(since, Ordering::Relaxed);
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .streaming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|s| s.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .streaming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |s| s.body.size_hint())
    }
}

/// The user stopped reading a response; the edge reset its stream.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing of the response within the stall timeout, or while too many others did not either; its stream was reset")]
pub struct StreamStalled;

/// Milliseconds since the process's first call: a clock the watched streams and the watch share.
fn coarse_now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// How long a response may wait for its user before it counts against the stalled-stream
/// budget: far longer than a reading client takes to drain one frame from its socket buffer.
pub const STALL_GRACE: Duration = Duration::from_secs(2);
/// How often the watch looks, at most (or a quarter of the stall timeout when shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The responses in flight, checked now and then for users who stopped reading: a stream that
/// waited for its user for the stall timeout is reset, and when more than `budget` streams have
/// waited past [`STALL_GRACE`], streams are reset down to it: those of the addresses with the
/// most stalled streams first, the longest-waiting of each first, so one paused reader is not
/// made to pay for someone else's many.
///
/// **Invariant:** with the budget at most the tunnel's connection window over the stream
/// window, stalled clients together never hold more than that share of any tunnel's window,
/// however many addresses they come from.
pub struct StallWatch {
    timeout: Duration,
    /// Streams allowed to wait past the grace at once; 0: no budget.
    budget: usize,
    streams: Mutex<Vec<Weak<WatchedStream>>>,
}

/// What one sweep reset.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Streams that waited for their user for the stall timeout.
    pub timed_out: usize,
    /// Streams reset, longest-waiting first, to bring the stalled ones within the budget.
    pub over_budget: usize,
}

impl StallWatch {
    /// A watch that resets streams stalled for `timeout`, and the longest-stalled beyond
    /// `budget`, checking every second (or every quarter of a shorter timeout).
    pub fn start(timeout: Duration, budget: usize) -> Arc<StallWatch> {
        let watch = Arc::new(StallWatch {
            timeout,
            budget,
            streams: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            let every = (timeout / 4).clamp(Duration::from_millis(100), SWEEP_EVERY);
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(watch) = weak.upgrade() else { return };
                let swept = watch.sweep(coarse_now());
                if swept != Swept::default() {
                    postern_obs::metrics::streams_reset("stall_timeout", swept.timed_out);
                    postern_obs::metrics::streams_reset("stall_budget", swept.over_budget);
                    tracing::info!(
                        timed_out = swept.timed_out,
                        over_budget = swept.over_budget,
                        timeout_secs = watch.timeout.as_secs(),
                        budget = watch.budget,
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

    /// Forgets finished streams, resets those that waited for their user past the timeout, and
    /// then the longest-waiting of those past the grace beyond the budget (at `now`, on
    /// [`coarse_now`]'s clock).
    fn sweep(&self, now: u64) -> Swept {
        let timeout = self.timeout.as_millis() as u64;
        let grace = STALL_GRACE.as_millis() as u64;
        let mut timed_out = Vec::new();
        let mut waiting = Vec::new();
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|weak| {
                let Some(stream) = weak.upgrade() else {
                    return false;
                };
                let since = stream.waiting_for_user_since.load(Ordering::Relaxed);
                if since == u64::MAX {
                    return true;
                }
                let waited = now.saturating_sub(since);
                if waited >= timeout {
                    timed_out.push(stream);
                    return false;
                }
                if waited >= grace {
                    waiting.push((since, stream));
                }
                true
            });
        let mut over_budget = Vec::new();
        if self.budget > 0 && waiting.len() > self.budget {
            let mut per_client: HashMap<IpAddr, usize> = HashMap::new();
            for (_, s) in &waiting {
                *per_client.entry(s.client).or_default() += 1;
            }
            waiting.sort_unstable_by_key(|(since, s)| {
                (std::cmp::Reverse(per_client[&s.client]), *since)
            });
            let excess = waiting.len() - self.budget;
            over_budget.extend(waiting.into_iter().take(excess).map(|(_, s)| s));
        }
        let swept = Swept {
            timed_out: timed_out.len(),
            over_budget: over_budget.len(),
        };
        for stream in timed_out.into_iter().chain(over_budget) {
            // Dropping the tunnel body resets its stream and returns the data it held to the
            // tunnel's window; the user's side sees an error when (if ever) it reads again.
            let streaming = stream
                .streaming
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            stream
                .waiting_for_user_since
                .store(u64::MAX, Ordering::Relaxed);
            drop(streaming);
        }
        swept
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
    /// Frames read ahead by [`UserBody::prefetch`], given out first.
    ready: std::collections::VecDeque<Frame<Bytes>>,
    /// The client's body ended while it was read ahead.
    finished: bool,
}

/// How much of a request body the edge reads before it sends the request down a tunnel: a
/// client that sends its body slowly then ties up only the edge, not one of the app's workers
/// (most request bodies, forms and API calls, fit whole).
pub const PREFETCH_BYTES: usize = 64 * 1024;

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
                ready: std::collections::VecDeque::new(),
                finished: false,
            },
            outcome,
        )
    }

    /// Reads the body ahead, up to its end or `limit` bytes, within `deadline` in all (and the
    /// stall timeout between pieces): past it the client's body is stalled (408).
    pub async fn prefetch(&mut self, limit: usize, deadline: Duration) -> Result<(), BoxError> {
        if self.inner.is_end_stream() {
            return Ok(());
        }
        let outcome = self.outcome.clone();
        let fetch = async {
            let mut buffered = 0;
            while buffered < limit {
                match std::future::poll_fn(|cx| self.poll_client(cx)).await {
                    Some(Ok(frame)) => {
                        buffered += frame.data_ref().map_or(0, Bytes::len);
                        self.ready.push_back(frame);
                    }
                    Some(Err(e)) => return Err(e),
                    None => {
                        self.finished = true;
                        break;
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(deadline, fetch).await {
            Ok(done) => done,
            Err(_) => {
                outcome.0.store(BODY_STALLED, Ordering::Relaxed);
                Err(BodyStalled.into())
            }
        }
    }

    /// The next frame from the client, with the stall clock running while it sends nothing.
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
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
        if let Some(frame) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        this.poll_client(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && (self.finished || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .ready
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        // A whole body read ahead has an exact length, unless it carries trailers: a length
        // would send it to an HTTP/1.1 app with Content-Length, where trailers cannot follow.
        if self.finished && !self.ready.iter().any(Frame::is_trailers) {
            return SizeHint::with_exact(ahead);
        }
        if self.finished {
            let mut hint = SizeHint::new();
            hint.set_lower(ahead);
            return hint;
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + ahead);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(since: u64) -> Arc<WatchedStream> {
        stream_of([192, 0, 2, 1], since)
    }

    fn stream_of(client: [u8; 4], since: u64) -> Arc<WatchedStream> {
        Arc::new(WatchedStream {
            client: IpAddr::from(client),
            streaming: Mutex::new(None),
            waiting_for_user_since: AtomicU64::new(since),
        })
    }

    fn watch(budget: usize) -> StallWatch {
        StallWatch {
            timeout: Duration::from_secs(30),
            budget,
            streams: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn the_watch_forgets_finished_streams_and_resets_stalled_ones() {
        let watch = watch(0);
        let waiting_for_app = stream(u64::MAX);
        let stalled = stream(1_000);
        let finished = stream(1_000);
        watch.add(&waiting_for_app);
        watch.add(&stalled);
        watch.add(&finished);
        drop(finished);
        // 29 s later: nothing has waited long enough; the finished stream is forgotten.
        assert_eq!(watch.sweep(30_000 - 1), Swept::default());
        assert_eq!(watch.watched(), 2);
        // 30 s: the stalled one is reset; the one waiting for its app is not the user's fault.
        assert_eq!(
            watch.sweep(31_000),
            Swept {
                timed_out: 1,
                over_budget: 0
            }
        );
        assert_eq!(watch.watched(), 1);
        assert_eq!(
            stalled.waiting_for_user_since.load(Ordering::Relaxed),
            u64::MAX
        );
    }

    #[test]
    fn past_the_budget_the_longest_stalled_are_reset_first() {
        let watch = watch(3);
        // Five streams stalled for 10 s down to 2 s, one just stalled, one reading.
        let now = 100_000;
        let stalled: Vec<_> = (0..5).map(|i| stream(now - 10_000 + i * 2_000)).collect();
        let just_now = stream(now - 500);
        let reading = stream(u64::MAX);
        for s in stalled.iter().chain([&just_now, &reading]) {
            watch.add(s);
        }
        assert_eq!(
            watch.sweep(now),
            Swept {
                timed_out: 0,
                over_budget: 2
            }
        );
        let reset: Vec<bool> = stalled
            .iter()
            .map(|s| s.waiting_for_user_since.load(Ordering::Relaxed) == u64::MAX)
            .collect();
        assert_eq!(reset, [true, true, false, false, false]);
        // Within the budget now: the next sweep resets nothing more.
        assert_eq!(watch.sweep(now), Swept::default());
        // Without a budget, only the timeout resets.
        let unlimited = self::watch(0);
        let many: Vec<_> = (0..100).map(|_| stream(now - 10_000)).collect();
        for s in &many {
            unlimited.add(s);
        }
        assert_eq!(unlimited.sweep(now), Swept::default());
    }

    #[test]
    fn past_the_budget_the_address_with_the_most_stalled_streams_pays_first() {
        let watch = watch(3);
        let now = 100_000;
        // One reader paused for 20 s; an address with four fresher stalled streams.
        let paused = stream_of([198, 51, 100, 1], now - 20_000);
        let many: Vec<_> = (0..4)
            .map(|i| stream_of([203, 0, 113, 9], now - 5_000 + i * 100))
            .collect();
        watch.add(&paused);
        for s in &many {
            watch.add(s);
        }
        assert_eq!(
            watch.sweep(now),
            Swept {
                timed_out: 0,
                over_budget: 2
            }
        );
        let gone =
            |s: &Arc<WatchedStream>| s.waiting_for_user_since.load(Ordering::Relaxed) == u64::MAX;
        assert!(!gone(&paused));
        assert_eq!(many.iter().filter(|s| gone(s)).count(), 2);
        assert!(
            gone(&many[0]) && gone(&many[1]),
            "the longest-waiting of them first"
        );
    }
}
