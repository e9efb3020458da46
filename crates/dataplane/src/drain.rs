//! One drain signal for every data plane. When it is given, listeners stop accepting and
//! idle connections close; shutdown then waits, up to its grace time, for what is still held
//! (a connection in the middle of a request, a query being answered) instead of polling
//! each data plane's counters.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// A new drain: the serve loop keeps the [`Trigger`], every data plane gets a [`Watch`].
pub fn channel() -> (Trigger, Watch) {
    let (signal, watched) = watch::channel(false);
    let shared = Arc::new(Shared::default());
    (Trigger { signal, shared: Arc::clone(&shared) }, Watch { signal: watched, shared })
}

#[derive(Default)]
struct Shared {
    /// [`Hold`]s alive.
    holds: AtomicUsize,
    /// The signal was given: the last hold to go wakes the trigger.
    draining: AtomicBool,
    released: Notify,
}

/// Gives the drain signal and waits for the holds to go.
pub struct Trigger {
    signal: watch::Sender<bool>,
    shared: Arc<Shared>,
}

impl Trigger {
    /// Signals every watch, then waits up to `grace` until no [`Hold`] is left. Returns how
    /// many were still held when the grace time ran out (0: everything finished).
    pub async fn drain(self, grace: Duration) -> usize {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.signal.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Registered before the count is read, so that a release in between still wakes it.
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let held = self.shared.holds.load(Ordering::SeqCst);
            if held == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.shared.holds.load(Ordering::SeqCst);
            }
        }
    }
}

/// Sees the drain signal and takes holds; cheap to clone, and not itself waited for.
#[derive(Clone)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    shared: Arc<Shared>,
}

impl Watch {
    /// Resolves once the drain signal is given (never, if its trigger is dropped without it).
    pub fn signaled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut signal = self.signal.clone();
        async move {
            if signal.wait_for(|draining| *draining).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether the drain signal was given.
    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Makes the drain wait for the returned hold to be dropped (or for its grace time).
    pub fn hold(&self) -> Hold {
        self.shared.holds.fetch_add(1, Ordering::SeqCst);
        Hold { shared: Arc::clone(&self.shared) }
    }
}

/// Something the drain waits for: held by an open connection or a query in progress.
pub struct Hold {
    shared: Arc<Shared>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.shared.holds.fetch_sub(1, Ordering::SeqCst) == 1
            && self.shared.draining.load(Ordering::SeqCst)
        {
            self.shared.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_signal_reaches_every_watch_and_clone() {
        let (trigger, watch) = channel();
        let clone = watch.clone();
        let waiting = tokio::spawn(clone.signaled());
        tokio::task::yield_now().await;
        assert!(!watch.is_draining());
        assert!(!waiting.is_finished());
        assert_eq!(trigger.drain(Duration::from_secs(1)).await, 0, "nothing held");
        assert!(watch.is_draining());
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the signal reached the clone")
            .expect("the task ran");
    }

    #[tokio::test]
    async fn drain_waits_for_the_holds_and_no_longer() {
        let (trigger, watch) = channel();
        let hold = watch.hold();
        let later = watch.clone();
        tokio::spawn(async move {
            later.signaled().await;
            // One taken after the signal counts too, until it goes.
            let second = later.hold();
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop((hold, second));
        });
        let started = tokio::time::Instant::now();
        assert_eq!(trigger.drain(Duration::from_secs(5)).await, 0);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(90) && took < Duration::from_secs(4), "{took:?}");
    }

    #[tokio::test]
    async fn the_grace_time_ends_the_wait_and_says_what_is_held() {
        let (trigger, watch) = channel();
        let _held = [watch.hold(), watch.hold()];
        let started = tokio::time::Instant::now();
        assert_eq!(trigger.drain(Duration::from_millis(100)).await, 2);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_dropped_trigger_is_not_a_signal() {
        let (trigger, watch) = channel();
        drop(trigger);
        let waited = tokio::time::timeout(Duration::from_millis(50), watch.signaled()).await;
        assert!(waited.is_err(), "listeners must not stop because a trigger went away");
        assert!(!watch.is_draining());
    }
}
