//! Closing TCP connections through which no byte has moved for the idle time (conntrack's
//! 24 h for an established connection, by default). One sweep every quarter of that time
//! looks at every open connection's count of reads, instead of a timer per connection: a
//! timer polled at each of a short connection's wakes cost it a sixth more work.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tracing::debug;

/// The open TCP connections, by a key of their own.
#[derive(Default)]
pub(crate) struct Connections {
    open: Mutex<HashMap<u64, Open, BuildHasherDefault<Spread>>>,
    next: AtomicU64,
}

/// Hashes the keys, consecutive numbers, with one multiplication (Fibonacci hashing): a keyed
/// hash of the usual kind cost each connection more than everything else here.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// One open connection as the sweeps see it.
struct Open {
    /// Reads done by the connection's two directions.
    moved: Arc<AtomicU64>,
    /// `moved` at the last sweep.
    seen: u64,
    /// Sweeps in a row that found `moved` as before.
    quiet: u8,
    /// The connection's task: aborting it closes both sockets.
    task: AbortHandle,
}

/// Sweeps without a read after which a connection closes: the idle time is four sweeps.
const QUIET_SWEEPS: u8 = 4;

impl Connections {
    /// A key for a connection about to start.
    pub(crate) fn key(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Follows the connection `key`, whose task is `task` and whose reads count into `moved`.
    pub(crate) fn add(&self, key: u64, moved: Arc<AtomicU64>, task: AbortHandle) {
        // A task that has already ended (it may, on another thread) is dropped by the next sweep.
        self.lock().insert(key, Open { moved, seen: 0, quiet: 0, task });
    }

    /// Forgets the connection `key`, which has ended.
    pub(crate) fn remove(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// Closes the connections that moved nothing for [`QUIET_SWEEPS`] sweeps; forgets ended
    /// ones.
    fn sweep(&self) {
        self.lock().retain(|_, open| {
            if open.task.is_finished() {
                return false;
            }
            let moved = open.moved.load(Ordering::Relaxed);
            open.quiet = if moved == open.seen { open.quiet + 1 } else { 0 };
            open.seen = moved;
            if open.quiet >= QUIET_SWEEPS {
                debug!("TCP connection idle; closed");
                open.task.abort();
                return false;
            }
            true
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open, BuildHasherDefault<Spread>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sweeps `connections` every quarter of `idle` (so a connection closes after between `idle`
/// and 1.25 × `idle` without a read), until they are gone.
pub(crate) async fn sweep(connections: Weak<Connections>, idle: Duration) {
    let mut every = tokio::time::interval(idle / u32::from(QUIET_SWEEPS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match connections.upgrade() {
            Some(connections) => connections.sweep(),
            None => return,
        }
    }
}

/// Forgets a connection when its task ends, however it ends.
pub(crate) struct Registered<'a> {
    pub(crate) connections: &'a Connections,
    pub(crate) key: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.connections.remove(self.key);
    }
}
