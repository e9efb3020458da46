//! The addresses this node announces: for each announcement of the Plan, the first of its
//! ranked nodes that is alive (this node always is, to itself).

use std::net::IpAddr;

use portico_plan::announce::Announcement;

/// An address this node answers for, on which interfaces (empty: every one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duty {
    /// The address.
    pub address: IpAddr,
    /// The interfaces, or every interface when empty.
    pub interfaces: Vec<String>,
}

/// The addresses `me` announces when `alive` says which other nodes are alive.
pub fn mine(announcements: &[Announcement], me: &str, alive: impl Fn(&str) -> bool) -> Vec<Duty> {
    announcements
        .iter()
        .filter(|a| a.nodes.iter().find(|n| *n == me || alive(n)).is_some_and(|n| n == me))
        .map(|a| Duty { address: a.address, interfaces: a.interfaces.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use portico_model::ObjectKey;

    use super::*;

    fn announcement(address: &str, nodes: &[&str]) -> Announcement {
        Announcement {
            address: address.parse().unwrap(),
            service: ObjectKey::new("default", "web"),
            pool: "p".into(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            interfaces: Vec::new(),
        }
    }

    #[test]
    fn the_first_live_node_announces_and_no_address_has_two() {
        let plan = [announcement("198.18.1.0", &["a", "b", "c"]), announcement("198.18.1.1", &["b", "a"])];
        let nodes = ["a", "b", "c"];
        for dead in [None, Some("a"), Some("b"), Some("c")] {
            let alive = |n: &str| Some(n) != dead;
            let mut held: Vec<IpAddr> = Vec::new();
            for me in nodes.iter().filter(|n| alive(n)) {
                held.extend(mine(&plan, me, alive).iter().map(|d| d.address));
            }
            held.sort();
            let expected: Vec<IpAddr> = vec!["198.18.1.0".parse().unwrap(), "198.18.1.1".parse().unwrap()];
            assert_eq!(held, expected, "each address exactly once with {dead:?} dead");
        }
        let b_dead = |n: &str| n != "b";
        assert_eq!(mine(&plan, "a", b_dead).len(), 2, "a takes b's address");
        // A node not among an address's nodes never announces it.
        assert!(mine(&plan[1..], "c", |_| false).is_empty());
    }
}
