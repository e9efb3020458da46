//! One timer per connection for the successive deadlines of its waits (the next request head,
//! an endpoint's answer, the next body bytes). Arming a tokio timer for each wait costs as much
//! as routing a small request, so the timer is only moved when a wait's deadline is earlier
//! than the one it holds; when it fires before the current wait's deadline, it is moved there.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// A connection's timer.
#[derive(Default)]
pub(crate) struct Alarm {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Alarm {
    /// Resolves once `deadline` has passed.
    pub(crate) async fn at(&mut self, deadline: Instant) {
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn fires_at_each_deadline_whether_earlier_or_later_than_the_last() {
        let mut alarm = Alarm::default();
        for wait in [60, 20, 80, 20] {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(wait);
            alarm.at(deadline).await;
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(wait), "{wait} ms wait took {took:?}");
            assert!(took < Duration::from_millis(wait + 500), "{wait} ms wait took {took:?}");
        }
        // A wait that ends before its deadline leaves the timer armed for a later one.
        let outer = Instant::now() + Duration::from_millis(40);
        let early =
            tokio::time::timeout(Duration::from_millis(5), alarm.at(outer + Duration::from_secs(5))).await;
        assert!(early.is_err(), "the far deadline has not passed");
        alarm.at(outer).await;
        assert!(Instant::now() >= outer);
    }
}
