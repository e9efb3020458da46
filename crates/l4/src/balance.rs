//! Which endpoint a new connection or flow goes to: round-robin, or the endpoint a client
//! used last while ClientIP affinity holds.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::table::Frontend;

/// How many affinity entries may pile up before expired ones are swept.
const SWEEP_ABOVE: usize = 4096;

/// Per-listener choice state; it outlives configuration swaps so that affinity survives
/// reloads, as kube-proxy's does.
#[derive(Debug, Default)]
pub struct Balancer {
    next: AtomicUsize,
    affinity: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Balancer {
    /// The endpoint for a new connection from `client` at `now`, `None` when there is none.
    ///
    /// With affinity, a client keeps its endpoint while it is still chosen by the frontend
    /// and the client came back within the timeout (counted from its last connection).
    pub fn pick(&self, frontend: &Frontend, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        if frontend.endpoints.is_empty() {
            return None;
        }
        let Some(timeout) = frontend.affinity else { return Some(self.round_robin(&frontend.endpoints)) };
        let mut affinity = self.affinity.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((endpoint, last)) = affinity.get(&client).copied()
            && now.saturating_duration_since(last) <= timeout
            && frontend.endpoints.contains(&endpoint)
        {
            affinity.insert(client, (endpoint, now));
            return Some(endpoint);
        }
        let endpoint = self.round_robin(&frontend.endpoints);
        affinity.insert(client, (endpoint, now));
        if affinity.len() > SWEEP_ABOVE {
            affinity.retain(|_, (_, last)| now.saturating_duration_since(*last) <= timeout);
        }
        Some(endpoint)
    }

    /// Another endpoint than `failed` for a retry after a failed connect, if there is one.
    pub fn other(&self, frontend: &Frontend, failed: SocketAddr) -> Option<SocketAddr> {
        let others: Vec<SocketAddr> = frontend.endpoints.iter().copied().filter(|e| *e != failed).collect();
        (!others.is_empty()).then(|| self.round_robin(&others))
    }

    fn round_robin(&self, endpoints: &[SocketAddr]) -> SocketAddr {
        endpoints[self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frontend(n: u8, affinity: Option<u64>) -> Frontend {
        Frontend {
            service: "default/web".into(),
            port: "http".into(),
            method: "ClusterIP",
            endpoints: (1..=n).map(|i| SocketAddr::from(([127, 98, 0, i], 8080))).collect(),
            affinity: affinity.map(Duration::from_secs),
            source_ranges: Vec::new(),
        }
    }

    #[test]
    fn round_robin_visits_every_endpoint() {
        let b = Balancer::default();
        let f = frontend(10, None);
        let now = Instant::now();
        let mut seen: Vec<SocketAddr> =
            (0..10).filter_map(|_| b.pick(&f, IpAddr::from([127, 0, 0, 1]), now)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn affinity_pins_until_timeout_or_endpoint_leaves() {
        let b = Balancer::default();
        let mut f = frontend(3, Some(10));
        let client = IpAddr::from([127, 0, 0, 5]);
        let t0 = Instant::now();
        let first = b.pick(&f, client, t0).expect("endpoint");
        for s in 1..5 {
            assert_eq!(b.pick(&f, client, t0 + Duration::from_secs(s * 5)), Some(first), "refreshed on use");
        }
        // Another client does not disturb the pin.
        let _ = b.pick(&f, IpAddr::from([127, 0, 0, 6]), t0);
        let later = t0 + Duration::from_secs(20 + 11);
        let after_expiry: Vec<_> =
            (0..3).filter_map(|_| b.pick(&f, IpAddr::from([127, 0, 0, 7]), later)).collect();
        assert_eq!(after_expiry.len(), 3);
        let expired = b.pick(&f, client, later + Duration::from_secs(60));
        assert!(expired.is_some());
        // The pinned endpoint leaving moves the client.
        let pinned = b.pick(&f, client, later + Duration::from_secs(61)).expect("endpoint");
        f.endpoints.retain(|e| *e != pinned);
        assert_ne!(b.pick(&f, client, later + Duration::from_secs(62)), Some(pinned));
    }

    #[test]
    fn no_endpoints_no_pick_and_retry_avoids_the_failed_one() {
        let b = Balancer::default();
        assert_eq!(b.pick(&frontend(0, None), IpAddr::from([127, 0, 0, 1]), Instant::now()), None);
        let f = frontend(2, None);
        let failed = f.endpoints[0];
        assert_eq!(b.other(&f, failed), Some(f.endpoints[1]));
        assert_eq!(b.other(&frontend(1, None), failed), None);
    }
}
