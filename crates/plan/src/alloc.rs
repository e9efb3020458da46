//! The API server's allocation duties: ClusterIPs, NodePorts and Pod IPs (LoadBalancer IPs are
//! `lb`'s), and every allocation's persisted [`Allocations`].
//!
//! Allocation is a pure function of the claims and the previous [`Allocations`]: an object
//! keeps what it had as long as it exists, explicit requests are honoured when free, and
//! fresh values are chosen from a position hashed from the owner's name, so that adding or
//! removing unrelated objects never moves anything and even a lost state file gives mostly
//! the same answers.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Everything handed out, by owner ("namespace/name", plus a port key for NodePorts).
/// This is what the state folder persists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Allocations {
    /// Service → ClusterIPs.
    pub cluster_ips: BTreeMap<String, Vec<IpAddr>>,
    /// Service → port key ("name" or "port/PROTOCOL") → NodePort.
    pub node_ports: BTreeMap<String, BTreeMap<String, u16>>,
    /// Service → health-check NodePort (LoadBalancer with externalTrafficPolicy Local).
    pub health_check_node_ports: BTreeMap<String, u16>,
    /// Service → LoadBalancer IPs.
    pub load_balancer_ips: BTreeMap<String, Vec<IpAddr>>,
    /// Pod → Pod IPs (one per family of its node's pod CIDRs), for Pods without
    /// `status.podIP`. A state file of a release that kept one address per Pod reads too.
    #[serde(deserialize_with = "one_or_many")]
    pub pod_ips: BTreeMap<String, Vec<IpAddr>>,
    /// Pod → the node it was placed on, for Pods without `spec.nodeName`: a Pod stays where
    /// it runs while that node still fits it, as a scheduled Pod does.
    pub pod_nodes: BTreeMap<String, String>,
}

/// Reads `owner → [address]` also where an older state file has `owner → address`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<IpAddr>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(IpAddr),
        Many(Vec<IpAddr>),
    }
    let read: BTreeMap<String, OneOrMany> = BTreeMap::deserialize(d)?;
    Ok(read
        .into_iter()
        .map(|(owner, ips)| match ips {
            OneOrMany::One(ip) => (owner, vec![ip]),
            OneOrMany::Many(ips) => (owner, ips),
        })
        .collect())
}

/// One owner's wish for one value.
#[derive(Clone, Debug)]
pub struct Claim<V> {
    /// Who asks, e.g. "default/web".
    pub owner: String,
    /// A value named in the manifest, if any.
    pub requested: Option<V>,
    /// What the owner held before, if anything.
    pub previous: Option<V>,
}

/// Why a claim got nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The requested value is held by another owner.
    #[error("{value} is already allocated to {holder}")]
    Taken {
        /// The value asked for.
        value: String,
        /// Who has it.
        holder: String,
    },
    /// The requested value lies outside the range.
    #[error("{value} is outside the allowed range {range}")]
    OutOfRange {
        /// The value asked for.
        value: String,
        /// The range, as a person writes it.
        range: String,
    },
    /// Nothing is left.
    #[error("no free value left in {range}")]
    Exhausted {
        /// The range that is full.
        range: String,
    },
}

/// A set of values to hand out from, each addressable by an index.
pub trait Pool {
    /// The values handed out.
    type Value: Copy + Eq + Hash + std::fmt::Display;
    /// Number of usable values.
    fn size(&self) -> u64;
    /// The value at `index` (< size).
    fn at(&self, index: u64) -> Self::Value;
    /// Whether `value` belongs to this pool.
    fn contains(&self, value: Self::Value) -> bool;
    /// How a person writes this pool.
    fn describe(&self) -> String;
    /// Indices tried, in order, for a fresh value for `owner`.
    fn order(&self, owner: &str) -> Box<dyn Iterator<Item = u64> + '_>;
}

/// Hands out values for `claims`, in order of precedence (callers sort oldest first).
///
/// `taken(value, owner)` reports values held elsewhere for that owner (e.g. a NodePort
/// another Service holds on another protocol); `holders` maps held values to their owners,
/// and is updated. What an owner held before is kept first, without consulting `taken`:
/// previous values were consistent when they were handed out.
pub fn assign<P: Pool>(
    pool: &P,
    claims: &[Claim<P::Value>],
    holders: &mut Holders<P::Value>,
    taken: impl Fn(P::Value, &str) -> bool,
) -> Vec<Result<P::Value, AllocError>> {
    let mut results: Vec<Option<Result<P::Value, AllocError>>> = vec![None; claims.len()];
    // Keep what each owner had, unless the manifest now asks for something else.
    for (i, claim) in claims.iter().enumerate() {
        if let Some(prev) = claim.previous
            && claim.requested.is_none_or(|r| r == prev)
            && pool.contains(prev)
            && !holders.contains_key(&prev)
        {
            holders.insert(prev, claim.owner.clone());
            results[i] = Some(Ok(prev));
        }
    }
    for (i, claim) in claims.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        if let Some(want) = claim.requested {
            results[i] = Some(if !pool.contains(want) {
                Err(AllocError::OutOfRange { value: want.to_string(), range: pool.describe() })
            } else if let Some(holder) = holders.get(&want) {
                Err(AllocError::Taken { value: want.to_string(), holder: holder.clone() })
            } else if taken(want, &claim.owner) {
                Err(AllocError::Taken {
                    value: want.to_string(),
                    holder: "another Service on another protocol".into(),
                })
            } else {
                holders.insert(want, claim.owner.clone());
                Ok(want)
            });
        }
    }
    for (i, claim) in claims.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        let fresh = pool
            .order(&claim.owner)
            .map(|i| pool.at(i))
            .find(|v| !holders.contains_key(v) && !taken(*v, &claim.owner));
        results[i] = Some(match fresh {
            Some(v) => {
                holders.insert(v, claim.owner.clone());
                Ok(v)
            }
            None => Err(AllocError::Exhausted { range: pool.describe() }),
        });
    }
    results.into_iter().map(|r| r.unwrap_or(Err(AllocError::Exhausted { range: pool.describe() }))).collect()
}

/// Held values and their owners.
pub type Holders<V> = std::collections::HashMap<V, String>;

/// FNV-1a: a hash that is the same on every machine and every Rust release.
pub(crate) fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Indices of a range split into a low static band and an upper band tried first for fresh
/// values (KEP-3070 for Service IPs, KEP-3668 for NodePorts).
fn banded_order(size: u64, band: u64, owner: &str) -> Box<dyn Iterator<Item = u64>> {
    let band = band.min(size);
    let upper = size - band;
    let start = if upper > 0 { stable_hash(owner) % upper } else { 0 };
    let upper_iter = (0..upper).map(move |i| band + (start + i) % upper);
    Box::new(upper_iter.chain(0..band))
}

/// A CIDR of addresses, without the network and (IPv4) broadcast addresses.
#[derive(Clone, Debug)]
pub struct CidrPool {
    net: IpNet,
    /// Size of the static band kept for explicit choices; 0 for none.
    band: u64,
    /// Addresses after the network address never handed out (a Pod CIDR's gateway).
    skip: u64,
}

impl CidrPool {
    /// A Service CIDR: hashed choice, upper band first.
    pub fn service(net: IpNet) -> Self {
        let mut pool = Self { net, band: 0, skip: 0 };
        pool.band = (pool.size() / 16).clamp(16, 256);
        pool
    }

    /// A Pod CIDR: hashed choice over the range but its first address, which is the node's
    /// gateway for its Pods (as the CNI host-local allocator keeps it).
    pub fn pods(net: IpNet) -> Self {
        Self { net, band: 0, skip: 1 }
    }

    fn host_bits(&self) -> u32 {
        u32::from(self.net.max_prefix_len() - self.net.prefix_len())
    }
}

impl Pool for CidrPool {
    type Value = IpAddr;

    fn size(&self) -> u64 {
        let bits = self.host_bits().min(62);
        let total = 1u64 << bits;
        let reserved = if self.net.addr().is_ipv4() { 2 } else { 1 };
        total.saturating_sub(reserved + self.skip)
    }

    fn at(&self, index: u64) -> IpAddr {
        let base = self.net.network();
        // Index 0 is the first address after the network address and the skipped ones.
        let offset = index + 1 + self.skip;
        match base {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(offset as u32)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(u128::from(offset))).into()),
        }
    }

    fn contains(&self, value: IpAddr) -> bool {
        let first = match self.net.network() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let at = match value {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        self.net.contains(&value)
            && at > first + u128::from(self.skip)
            && !(value.is_ipv4() && value == self.net.broadcast())
    }

    fn describe(&self) -> String {
        self.net.to_string()
    }

    fn order(&self, owner: &str) -> Box<dyn Iterator<Item = u64> + '_> {
        banded_order(self.size(), self.band, owner)
    }
}

/// A port range (NodePorts), upper band first.
#[derive(Clone, Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    band: u64,
}

impl PortPool {
    /// The NodePort range with its static band.
    pub fn node_ports(range: RangeInclusive<u16>) -> Self {
        let size = u64::from(*range.end()).saturating_sub(u64::from(*range.start())) + 1;
        Self { range, band: (size / 32).clamp(16, 128) }
    }
}

impl Pool for PortPool {
    type Value = u16;

    fn size(&self) -> u64 {
        if self.range.is_empty() { 0 } else { u64::from(*self.range.end() - *self.range.start()) + 1 }
    }

    fn at(&self, index: u64) -> u16 {
        self.range.start() + index as u16
    }

    fn contains(&self, value: u16) -> bool {
        self.range.contains(&value)
    }

    fn describe(&self) -> String {
        format!("{}-{}", self.range.start(), self.range.end())
    }

    fn order(&self, owner: &str) -> Box<dyn Iterator<Item = u64> + '_> {
        banded_order(self.size(), self.band, owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(names: &[&str]) -> Vec<Claim<u16>> {
        names.iter().map(|n| Claim { owner: n.to_string(), requested: None, previous: None }).collect()
    }

    #[test]
    fn pod_ips_of_an_older_state_file_read_as_lists() {
        let old: Allocations =
            serde_json::from_str(r#"{"podIps": {"default/a": "127.98.0.5"}}"#).expect("old form reads");
        assert_eq!(old.pod_ips["default/a"], vec![IpAddr::from([127, 98, 0, 5])]);
        let new: Allocations =
            serde_json::from_str(r#"{"podIps": {"default/a": ["198.19.1.5", "2001:db8:1:1::5"]}}"#)
                .expect("new form reads");
        assert_eq!(new.pod_ips["default/a"].len(), 2);
    }

    #[test]
    fn node_ports_prefer_the_upper_band() {
        let pool = PortPool::node_ports(30000..=32767);
        let mut held = Holders::new();
        let got = assign(&pool, &claims(&["a", "b", "c"]), &mut held, |_, _| false);
        for port in got.into_iter().map(|r| r.expect("free")) {
            assert!(port >= 30086, "{port} is in the static band");
        }
    }

    #[test]
    fn requested_values_clash_and_fall_outside() {
        let pool = PortPool::node_ports(30000..=32767);
        let mut held = Holders::new();
        let mut c = claims(&["a", "b", "c"]);
        c[0].requested = Some(30080);
        c[1].requested = Some(30080);
        c[2].requested = Some(80);
        let got = assign(&pool, &c, &mut held, |_, _| false);
        assert_eq!(got[0], Ok(30080));
        assert_eq!(got[1], Err(AllocError::Taken { value: "30080".into(), holder: "a".into() }));
        assert!(matches!(got[2], Err(AllocError::OutOfRange { .. })));
    }

    #[test]
    fn previous_allocations_win_over_new_requests() {
        let pool = CidrPool::service("127.96.0.0/16".parse().expect("cidr"));
        let ip: IpAddr = "127.96.1.1".parse().expect("ip");
        let mut held = Holders::new();
        let c = vec![
            Claim { owner: "new".into(), requested: Some(ip), previous: None },
            Claim { owner: "old".into(), requested: None, previous: Some(ip) },
        ];
        let got = assign(&pool, &c, &mut held, |_, _| false);
        assert_eq!(got[1], Ok(ip));
        assert!(matches!(got[0], Err(AllocError::Taken { .. })));
    }

    #[test]
    fn pod_cidrs_never_hand_out_their_gateway() {
        let pool = CidrPool::pods("198.19.1.0/29".parse().expect("cidr"));
        let gateway: IpAddr = "198.19.1.1".parse().expect("ip");
        assert!(!pool.contains(gateway));
        assert_eq!(pool.size(), 5, "8 less network, broadcast and gateway");
        let mut held = Holders::new();
        let c: Vec<Claim<IpAddr>> =
            (0..6).map(|i| Claim { owner: format!("p{i}"), requested: None, previous: None }).collect();
        let got = assign(&pool, &c, &mut held, |_, _| false);
        let given: Vec<IpAddr> = got.iter().filter_map(|r| r.clone().ok()).collect();
        assert_eq!(given.len(), 5);
        assert!(!given.contains(&gateway) && given.iter().all(|ip| pool.contains(*ip)), "{given:?}");
        assert!(matches!(got[5], Err(AllocError::Exhausted { .. })));
    }
}
