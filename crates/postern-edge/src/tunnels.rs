//! The live tunnel connections of every connector group, and picking one for a request.
//!
//! Reads are lock-free: each group holds an `ArcSwap` of its live tunnels, replaced whole when a
//! tunnel joins or leaves (rare), and read on every request (often). A request takes the less
//! loaded of two random live tunnels (power of two choices) and counts itself in-flight on it
//! until its response body ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::http2::SendRequest;
use postern_proto::limits::TUNNEL_MAX_STREAMS;
use tokio::sync::Notify;

/// The request body type sent down a tunnel: the user's streamed body, or nothing (WebSocket
/// CONNECT streams carry their bytes after the upgrade).
pub type TunnelBody = Either<
    postern_proto::body::Watched<crate::observe::CountedBody<crate::body::UserBody>>,
    Empty<Bytes>,
>;

/// One live tunnel connection from a connector.
pub struct Tunnel {
    pub id: u64,
    pub connector_id: String,
    pub peer: SocketAddr,
    pub opened: Instant,
    sender: SendRequest<TunnelBody>,
    /// Requests on the tunnel now, at most [`TUNNEL_MAX_STREAMS`].
    in_flight: AtomicUsize,
    /// The pool's signal that a full tunnel has room again.
    room: Arc<Notify>,
    /// Requests this tunnel has been given.
    served: AtomicU64,
    /// Signalled to close the tunnel's connection (its connector was revoked).
    close: Notify,
}

impl Tunnel {
    pub fn sender(&self) -> SendRequest<TunnelBody> {
        self.sender.clone()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn usable(&self) -> bool {
        !self.sender.is_closed()
    }

    fn has_room(&self) -> bool {
        self.in_flight() < TUNNEL_MAX_STREAMS as usize
    }

    /// Counts a request on the tunnel, if the connector accepts one more stream on it.
    fn reserve(self: &Arc<Self>) -> Option<InFlight> {
        let max = TUNNEL_MAX_STREAMS as usize;
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.served.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self.clone(), None))
    }

    /// Resolves once the tunnel is told to close; the task serving its connection then drops it.
    pub async fn closed(&self) {
        self.close.notified().await
    }
}

/// Counts a request in flight on a tunnel until dropped, and with it the client address's share.
pub struct InFlight(Arc<Tunnel>, Option<crate::guard::AddressPermit>);

impl InFlight {
    pub fn tunnel(&self) -> &Arc<Tunnel> {
        &self.0
    }

    /// Keeps the client address's permit until the request ends.
    pub fn hold(&mut self, permit: Option<crate::guard::AddressPermit>) {
        self.1 = permit;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == TUNNEL_MAX_STREAMS as usize {
            self.0.room.notify_waiters();
        }
    }
}

#[derive(Default)]
struct Group {
    live: ArcSwap<Vec<Arc<Tunnel>>>,
    joined: Notify,
}

/// Why no tunnel could be had.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTunnel {
    /// None came online within the wait.
    TimedOut,
    /// Too many requests were already waiting.
    QueueFull,
    /// Tunnels were online, but each carried as many requests as its connector accepts.
    Busy,
}

/// Live tunnels per group and per connector.
#[derive(Debug, Default)]
pub struct Census {
    pub per_group: HashMap<String, usize>,
    pub per_connector: HashMap<String, usize>,
}

#[derive(Default)]
pub struct TunnelPool {
    groups: ArcSwap<HashMap<String, Arc<Group>>>,
    /// Serialises changes to `groups` (adding a group); never taken on the request path.
    write: Mutex<()>,
    next_id: AtomicU64,
    queued: AtomicUsize,
    /// Signalled when a full tunnel has room again.
    room: Arc<Notify>,
}

impl TunnelPool {
    fn group(&self, name: &str) -> Arc<Group> {
        if let Some(g) = self.groups.load().get(name) {
            return g.clone();
        }
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = self.groups.load().get(name) {
            return g.clone();
        }
        let mut map = HashMap::clone(&self.groups.load());
        let g = Arc::new(Group::default());
        map.insert(name.to_owned(), g.clone());
        self.groups.store(Arc::new(map));
        g
    }

    /// How many tunnels are live, per group and per connector (for the metrics).
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for (name, g) in self.groups.load().iter() {
            let live = g.live.load();
            census.per_group.insert(name.clone(), live.len());
            for t in live.iter() {
                *census
                    .per_connector
                    .entry(t.connector_id.clone())
                    .or_default() += 1;
            }
        }
        census
    }

    /// Adds a live tunnel to `group` and wakes requests waiting for one.
    pub fn add(
        &self,
        group: &str,
        connector_id: &str,
        peer: SocketAddr,
        sender: SendRequest<TunnelBody>,
    ) -> Arc<Tunnel> {
        let tunnel = Arc::new(Tunnel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            connector_id: connector_id.to_owned(),
            peer,
            opened: Instant::now(),
            sender,
            in_flight: AtomicUsize::new(0),
            room: self.room.clone(),
            served: AtomicU64::new(0),
            close: Notify::new(),
        });
        let g = self.group(group);
        g.live.rcu(|live| {
            let mut next = Vec::clone(live);
            next.push(tunnel.clone());
            next
        });
        g.joined.notify_waiters();
        tunnel
    }

    /// Removes a tunnel (its connection ended), from whichever group holds it now.
    pub fn remove(&self, tunnel_id: u64) {
        for g in self.groups.load().values() {
            if g.live.load().iter().any(|t| t.id == tunnel_id) {
                g.live.rcu(|live| {
                    live.iter()
                        .filter(|t| t.id != tunnel_id)
                        .cloned()
                        .collect::<Vec<_>>()
                });
            }
        }
    }

    /// Brings every tunnel in line with where its connector belongs now: `group_of` gives the
    /// group of a live connector, `None` for a revoked or unknown one. Tunnels of a moved
    /// connector join its new group (in-flight requests carry on); tunnels of a revoked one are
    /// taken out and told to close. Returns how many tunnels were closed.
    pub fn reconcile(&self, group_of: impl Fn(&str) -> Option<String>) -> usize {
        let mut closed = 0;
        let mut moved = Vec::new();
        for (name, g) in self.groups.load().iter() {
            let live = g.live.load();
            let stray: Vec<Arc<Tunnel>> = live
                .iter()
                .filter(|t| group_of(&t.connector_id).as_deref() != Some(name.as_str()))
                .cloned()
                .collect();
            if stray.is_empty() {
                continue;
            }
            g.live.rcu(|live| {
                live.iter()
                    .filter(|t| !stray.iter().any(|s| s.id == t.id))
                    .cloned()
                    .collect::<Vec<_>>()
            });
            for t in stray {
                match group_of(&t.connector_id) {
                    Some(to) => moved.push((to, t)),
                    None => {
                        t.close.notify_one();
                        closed += 1;
                    }
                }
            }
        }
        for (to, t) in moved {
            tracing::info!(connector = %t.connector_id, tunnel = t.id, group = %to, "tunnel moved to the connector's new group");
            let g = self.group(&to);
            g.live.rcu(|live| {
                let mut next = Vec::clone(live);
                next.push(t.clone());
                next
            });
            g.joined.notify_waiters();
        }
        closed
    }

    /// The live tunnels of every group (for the admin API).
    pub fn snapshot(&self) -> Vec<(String, Arc<Tunnel>)> {
        let groups = self.groups.load();
        let mut out = Vec::new();
        for (name, g) in groups.iter() {
            for t in g.live.load().iter() {
                out.push((name.clone(), t.clone()));
            }
        }
        out
    }

    /// Picks a live tunnel of `group` now, skipping `exclude` (a tunnel that just failed).
    pub fn pick(&self, group: &str, exclude: Option<u64>) -> Option<InFlight> {
        let g = self.groups.load().get(group)?.clone();
        pick_from(&g.live.load(), exclude)
    }

    /// Picks a live tunnel of `group` other than `exclude`, waiting up to `deadline` for one to
    /// come online, or to have room for another request.
    pub async fn acquire(
        &self,
        group: &str,
        exclude: Option<u64>,
        deadline: tokio::time::Instant,
        max_queued: usize,
    ) -> Result<InFlight, NoTunnel> {
        if let Some(t) = self.pick(group, exclude) {
            return Ok(t);
        }
        let g = self.group(group);
        // Counted until dropped: a request whose client gave up (its future dropped mid-wait)
        // leaves the queue too.
        let _queued = Queued::enter(&self.queued, max_queued).ok_or(NoTunnel::QueueFull)?;
        loop {
            let joined = g.joined.notified();
            let room = self.room.notified();
            tokio::pin!(joined, room);
            // Register interest before looking, so a tunnel joining (or a request ending) in
            // between is not missed.
            joined.as_mut().enable();
            room.as_mut().enable();
            if let Some(t) = pick_from(&g.live.load(), exclude) {
                return Ok(t);
            }
            let woken = async {
                tokio::select! {
                    () = joined => {}
                    () = room => {}
                }
            };
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                let full = g
                    .live
                    .load()
                    .iter()
                    .any(|t| t.usable() && Some(t.id) != exclude);
                return Err(if full {
                    NoTunnel::Busy
                } else {
                    NoTunnel::TimedOut
                });
            }
        }
    }

    /// How many requests are waiting for a tunnel.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// One place in the wait queue, given back on drop.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Queued<'a>> {
        if count.fetch_add(1, Ordering::Relaxed) >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Queued(count))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The less loaded of two tunnels drawn at random, among the live ones with room.
fn pick_from(live: &[Arc<Tunnel>], exclude: Option<u64>) -> Option<InFlight> {
    // Another request may take the last place on the chosen tunnel first: then draw again.
    (0..3).find_map(|_| choose(live, exclude)?.reserve())
}

fn choose(live: &[Arc<Tunnel>], exclude: Option<u64>) -> Option<&Arc<Tunnel>> {
    let usable = |t: &&Arc<Tunnel>| t.usable() && t.has_room() && Some(t.id) != exclude;
    match live.len() {
        0 => None,
        1 => live.iter().find(usable),
        n => {
            let a = &live[rand::random::<usize>() % n];
            let b = &live[rand::random::<usize>() % n];
            match (usable(&a), usable(&b)) {
                (true, true) => Some(if b.in_flight() < a.in_flight() { b } else { a }),
                (true, false) => Some(a),
                (false, true) => Some(b),
                // Both samples were dead or excluded: fall back to the least loaded usable one.
                (false, false) => live.iter().filter(usable).min_by_key(|t| t.in_flight()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let pool = TunnelPool::default();
        for _ in 0..10 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            // The client gives up long before the deadline: the wait is dropped mid-way.
            let waited = tokio::time::timeout(
                Duration::from_millis(1),
                pool.acquire("g", None, deadline, 4),
            )
            .await;
            assert!(waited.is_err());
        }
        assert_eq!(pool.queued(), 0);
        let deadline = tokio::time::Instant::now();
        assert_eq!(
            pool.acquire("g", None, deadline, 4).await.err(),
            Some(NoTunnel::TimedOut)
        );
        assert_eq!(
            pool.acquire("g", None, deadline, 0).await.err(),
            Some(NoTunnel::QueueFull)
        );
        assert_eq!(pool.queued(), 0);
    }

    /// A tunnel over an in-memory pipe to an HTTP/2 server that never answers.
    async fn tunnel(pool: &TunnelPool, group: &str) -> Arc<Tunnel> {
        let (edge, connector) = tokio::io::duplex(64 << 10);
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(
                    hyper_util::rt::TokioIo::new(connector),
                    hyper::service::service_fn(|_req| {
                        std::future::pending::<Result<http::Response<Empty<Bytes>>, hyper::Error>>()
                    }),
                ),
        );
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(edge),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        pool.add(group, "c", "127.0.0.1:1".parse().unwrap(), sender)
    }

    #[tokio::test]
    async fn a_full_tunnel_takes_no_more_requests_until_one_ends() {
        let pool = Arc::new(TunnelPool::default());
        let t = tunnel(&pool, "g").await;
        let max = TUNNEL_MAX_STREAMS as usize;
        let mut held: Vec<InFlight> = (0..max).map(|_| pool.pick("g", None).unwrap()).collect();
        assert_eq!(t.in_flight(), max);
        assert!(
            pool.pick("g", None).is_none(),
            "the connector accepts no more"
        );

        // Waiting past the deadline says why: the tunnels are busy, not missing.
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert_eq!(
            pool.acquire("g", None, soon, 4).await.err(),
            Some(NoTunnel::Busy)
        );

        // A request waiting for room gets the place of one that ends.
        let later = tokio::time::Instant::now() + Duration::from_secs(600);
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire("g", None, later, 4).await }
        });
        while pool.queued() == 0 {
            tokio::task::yield_now().await;
        }
        held.pop();
        let got = waiting.await.unwrap().unwrap();
        assert_eq!(got.tunnel().id, t.id);
        assert_eq!(t.in_flight(), max);
        drop((got, held));
        assert_eq!(t.in_flight(), 0);
    }
}
