//! Which node agents are alive, from the heartbeats each sends the others: a peer is dead
//! once it has been silent for `dead_after`, and a dead peer is alive again only after it has
//! been heard without a gap for `settle`, so that a node coming back (or one whose link
//! flickers) takes its addresses back once, not every time it is heard.
//!
//! Pure: time is given, never read, so that tests drive it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long silence and renewed presence must last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Silence after which a peer is dead.
    pub dead_after: Duration,
    /// Unbroken presence after which a dead peer is alive again.
    pub settle: Duration,
}

impl Default for Timing {
    /// Heartbeats every 100 ms: a peer is dead after 600 ms of silence, and alive again after
    /// 2 s of being heard.
    fn default() -> Self {
        Timing { dead_after: Duration::from_millis(600), settle: Duration::from_secs(2) }
    }
}

/// What is known of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// Heard recently.
    Alive { last: Instant },
    /// Silent for `dead_after` at least.
    Dead,
    /// Dead, then heard again since `since`, without a gap.
    Returning { since: Instant, last: Instant },
}

/// The peers of this node agent and what it has heard of them.
#[derive(Clone, Debug)]
pub struct Membership {
    timing: Timing,
    peers: BTreeMap<String, Peer>,
}

impl Membership {
    /// A membership of `peers`, each taken as alive at `now`: a peer dead before this agent
    /// started is found out `dead_after` later, and none is taken over in the meantime.
    pub fn new<'p>(peers: impl IntoIterator<Item = &'p str>, now: Instant, timing: Timing) -> Self {
        let peers = peers.into_iter().map(|p| (p.to_owned(), Peer::Alive { last: now })).collect();
        Membership { timing, peers }
    }

    /// Keeps the peers of `names` (a new Plan's nodes): new ones are alive from `now`, those
    /// gone are forgotten.
    pub fn set_peers<'p>(&mut self, names: impl IntoIterator<Item = &'p str>, now: Instant) {
        let mut peers = BTreeMap::new();
        for name in names {
            let known = self.peers.remove(name).unwrap_or(Peer::Alive { last: now });
            peers.insert(name.to_owned(), known);
        }
        self.peers = peers;
    }

    /// A heartbeat from `peer` at `now`; unknown peers are ignored.
    pub fn heard(&mut self, peer: &str, now: Instant) {
        self.expire(now);
        let Some(state) = self.peers.get_mut(peer) else { return };
        *state = match *state {
            Peer::Alive { .. } => Peer::Alive { last: now },
            Peer::Dead => Peer::Returning { since: now, last: now },
            Peer::Returning { since, .. } if now.saturating_duration_since(since) >= self.timing.settle => {
                Peer::Alive { last: now }
            }
            Peer::Returning { since, .. } => Peer::Returning { since, last: now },
        };
    }

    /// Whether `peer` is alive at `now`.
    pub fn is_alive(&mut self, peer: &str, now: Instant) -> bool {
        self.expire(now);
        matches!(self.peers.get(peer), Some(Peer::Alive { .. }))
    }

    /// Every peer alive at `now`.
    pub fn alive(&mut self, now: Instant) -> Vec<String> {
        self.expire(now);
        self.peers.iter().filter(|(_, p)| matches!(p, Peer::Alive { .. })).map(|(n, _)| n.clone()).collect()
    }

    /// Silent peers die; returning peers silent again die again.
    fn expire(&mut self, now: Instant) {
        let dead_after = self.timing.dead_after;
        for state in self.peers.values_mut() {
            let last = match *state {
                Peer::Alive { last } | Peer::Returning { last, .. } => last,
                Peer::Dead => continue,
            };
            if now.saturating_duration_since(last) >= dead_after {
                *state = Peer::Dead;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_silent_peer_dies_and_comes_back_only_after_settling() {
        let start = Instant::now();
        let mut members = Membership::new(["a", "b"], start, Timing::default());
        assert_eq!(members.alive(start), ["a", "b"]);
        // a beats every 100 ms; b stops.
        for t in (100..=500).step_by(100) {
            members.heard("a", start + ms(t));
        }
        assert!(members.is_alive("b", start + ms(599)));
        members.heard("a", start + ms(600));
        members.heard("a", start + ms(700));
        assert_eq!(members.alive(start + ms(700)), ["a"]);
        // b is heard again: not alive until it has been heard for 2 s without a gap.
        for t in (1000..=2900).step_by(100) {
            members.heard("a", start + ms(t));
            members.heard("b", start + ms(t));
            assert!(!members.is_alive("b", start + ms(t)), "{t} ms");
        }
        members.heard("b", start + ms(3000));
        assert!(members.is_alive("b", start + ms(3000)));
    }

    #[test]
    fn a_flickering_peer_stays_dead() {
        let start = Instant::now();
        let mut members = Membership::new(["b"], start, Timing::default());
        assert!(!members.is_alive("b", start + ms(600)));
        // Heard for 1 s, silent for 700 ms, heard again: the settling starts over.
        for t in (700..=1700).step_by(100) {
            members.heard("b", start + ms(t));
        }
        for t in (2400..=4300).step_by(100) {
            members.heard("b", start + ms(t));
            assert!(!members.is_alive("b", start + ms(t)), "{t} ms");
        }
        members.heard("b", start + ms(4400));
        assert!(members.is_alive("b", start + ms(4400)));
    }

    #[test]
    fn peers_follow_the_plan() {
        let start = Instant::now();
        let mut members = Membership::new(["a"], start, Timing::default());
        members.set_peers(["a", "c"], start + ms(300));
        members.heard("x", start + ms(300));
        assert_eq!(members.alive(start + ms(500)), ["a", "c"]);
        assert_eq!(members.alive(start + ms(700)), ["c"], "a was last heard at the start");
    }
}
