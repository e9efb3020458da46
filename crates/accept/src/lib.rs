//! Accepting TCP connections within bounds. Every listener holds at most so many connections
//! of its own, and the listeners of one kind (the L4 proxy, the Ingress, DNS, admin) so many
//! together, so that one kind of client cannot take the descriptors everything else needs.
//!
//! A listener that reaches a bound stops accepting until one of its connections ends, as
//! HAProxy's `maxconn` does: the next clients wait in the kernel's listen queue instead of
//! being accepted and dropped. A listener whose accept fails (out of descriptors) backs off
//! and tries again, so it recovers once descriptors free up.
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// How long a listener waits after a failed accept before it tries again.
const BACKOFF: Duration = Duration::from_millis(50);
/// How often a listener that keeps hitting a bound or failing says so, at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Which bound made a connection wait.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BoundLabel {
    bound: &'static str,
}

/// The counters of one kind of listener.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    waited: Family<BoundLabel, Counter>,
    failed: Counter,
}

impl Counters {
    /// Registers `connections_waited` (by `bound`: `listener` or `total`) and
    /// `accept_errors` in `registry`, under its prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let counters = Counters::default();
        registry.register(
            "connections_waited",
            "Connections that waited in the listen queue because a bound was reached (bound: listener or total)",
            counters.waited.clone(),
        );
        registry.register(
            "accept_errors",
            "Accepts that failed (usually out of file descriptors); the listener backs off and tries again",
            counters.failed.clone(),
        );
        counters
    }
}

/// The bounds of one kind of listener: connections in all, and per listener.
#[derive(Debug)]
pub struct Limits {
    what: &'static str,
    total: Arc<Semaphore>,
    per_listener: usize,
    counters: Counters,
    log: Throttle,
}

impl Limits {
    /// At most `total` connections for all listeners of `what` (for logs: `L4`, `Ingress`),
    /// at most `per_listener` for each; zero is taken as one.
    pub fn new(what: &'static str, total: usize, per_listener: usize, counters: Counters) -> Arc<Self> {
        Arc::new(Limits {
            what,
            total: Arc::new(Semaphore::new(total.clamp(1, Semaphore::MAX_PERMITS))),
            per_listener: per_listener.clamp(1, Semaphore::MAX_PERMITS),
            counters,
            log: Throttle::default(),
        })
    }

    /// The gate of a new listener, `name`d in logs.
    pub fn gate(self: &Arc<Self>, name: impl Display) -> Gate {
        Gate {
            limits: Arc::clone(self),
            own: Arc::new(Semaphore::new(self.per_listener)),
            name: name.to_string(),
            log: Throttle::default(),
        }
    }

    /// Connections that can still be accepted by all listeners together.
    pub fn room(&self) -> usize {
        self.total.available_permits()
    }
}

/// One listener's way in: takes a seat, then accepts.
#[derive(Debug)]
pub struct Gate {
    limits: Arc<Limits>,
    own: Arc<Semaphore>,
    name: String,
    log: Throttle,
}

/// A connection's place within the bounds, given back when dropped.
#[derive(Debug)]
pub struct Seat {
    _own: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Gate {
    /// Waits until the listener has room for one more connection, accepts it, then waits
    /// for room in the total if there is none. Cancel-safe: a seat taken for a connection
    /// not yet accepted is given back.
    ///
    /// The listener's own seat is taken before accepting, so that a full listener stops
    /// accepting; the total's only after, so that idle listeners do not hold seats of it.
    /// A connection accepted when the total is full waits unserved, and its listener accepts
    /// nothing more meanwhile: at most one such connection per listener.
    pub async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, Seat) {
        let own = match Arc::clone(&self.own).try_acquire_owned() {
            Ok(own) => own,
            Err(_) => {
                self.limits.counters.waited.get_or_create(&BoundLabel { bound: "listener" }).inc();
                if let Some(times) = self.log.note() {
                    warn!(listener = %self.name, limit = self.limits.per_listener, times, "{} listener full: new connections wait until one ends", self.limits.what);
                }
                wait(&self.own).await
            }
        };
        let (stream, peer) = self.accept_one(listener).await;
        let total = match Arc::clone(&self.limits.total).try_acquire_owned() {
            Ok(total) => total,
            Err(_) => {
                self.limits.counters.waited.get_or_create(&BoundLabel { bound: "total" }).inc();
                if let Some(times) = self.limits.log.note() {
                    warn!(
                        times,
                        "{} connections at their total bound: new connections wait until one ends",
                        self.limits.what
                    );
                }
                wait(&self.limits.total).await
            }
        };
        (stream, peer, Seat { _own: own, _total: total })
    }

    /// Accepts one connection, backing off while accepting fails.
    async fn accept_one(&self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => return accepted,
                Err(err) => {
                    self.limits.counters.failed.inc();
                    if let Some(times) = self.log.note() {
                        warn!(listener = %self.name, times, %err, "{} cannot accept a connection; trying again", self.limits.what);
                    }
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
    }
}

/// A permit of `semaphore`, once one is free.
async fn wait(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    match Arc::clone(semaphore).acquire_owned().await {
        Ok(permit) => permit,
        // The semaphores here are never closed.
        Err(_) => std::future::pending().await,
    }
}

/// Lets a repeated event be logged at most once per [`LOG_EVERY`], with how many times it
/// happened since the last line.
#[derive(Debug, Default)]
pub struct Throttle {
    unlogged: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

impl Throttle {
    /// Counts one event; `Some(times)` when it is time to log, `times` counting this one.
    pub fn note(&self) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return None;
        }
        *logged = Some(Instant::now());
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        (listener, addr)
    }

    /// Accepts within `gate` and keeps every accepted connection open with its seat, until
    /// the client closes it.
    fn serve(gate: Gate, listener: TcpListener, accepted: Arc<AtomicU64>) {
        tokio::spawn(async move {
            loop {
                let (mut stream, _, seat) = gate.accept(&listener).await;
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    let _ = stream.read(&mut byte).await;
                    drop(seat);
                });
            }
        });
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_full_listener_accepts_again_when_a_connection_ends() {
        let counters = Counters::default();
        let limits = Limits::new("test", 100, 2, counters.clone());
        let (l, addr) = listener().await;
        let accepted = Arc::new(AtomicU64::new(0));
        serve(limits.gate("one"), l, Arc::clone(&accepted));
        let first = TcpStream::connect(addr).await.expect("connect");
        let _second = TcpStream::connect(addr).await.expect("connect");
        let _third = TcpStream::connect(addr).await.expect("connect: the kernel queues it");
        settle().await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the third waits in the listen queue");
        assert_eq!(counters.waited.get_or_create(&BoundLabel { bound: "listener" }).get(), 1);
        drop(first);
        settle().await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a seat freed lets the third in");
    }

    #[tokio::test]
    async fn the_total_bound_is_shared_and_a_full_listener_leaves_room_for_others() {
        let counters = Counters::default();
        let limits = Limits::new("test", 3, 2, counters.clone());
        let (a, a_addr) = listener().await;
        let (b, b_addr) = listener().await;
        let (on_a, on_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        serve(limits.gate("a"), a, Arc::clone(&on_a));
        serve(limits.gate("b"), b, Arc::clone(&on_b));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(a_addr).await.expect("connect"));
        }
        settle().await;
        assert_eq!(on_a.load(Ordering::SeqCst), 2, "a is at its own bound");
        held.push(TcpStream::connect(b_addr).await.expect("connect"));
        held.push(TcpStream::connect(b_addr).await.expect("connect"));
        settle().await;
        assert_eq!(on_b.load(Ordering::SeqCst), 1, "b gets the one seat left of the total");
        assert_eq!(limits.room(), 0);
        assert_eq!(counters.waited.get_or_create(&BoundLabel { bound: "total" }).get(), 1);
        held.remove(0);
        settle().await;
        assert_eq!(on_a.load(Ordering::SeqCst) + on_b.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_throttle_logs_the_first_event_then_waits() {
        let throttle = Throttle::default();
        assert_eq!(throttle.note(), Some(1));
        assert_eq!(throttle.note(), None);
        assert_eq!(throttle.note(), None);
        *throttle.logged.lock().expect("lock") = Some(Instant::now() - LOG_EVERY);
        assert_eq!(throttle.note(), Some(3), "the line counts the events it stood for");
    }
}
