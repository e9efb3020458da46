//! The lab's address plan. Every address comes from the benchmarking range 198.18.0.0/15
//! (RFC 2544) or the documentation range 2001:db8::/32 (RFC 3849), which no real network
//! routes, so a lab can never be mistaken for, or leak into, the host's networks.
//!
//! | what | IPv4 | IPv6 |
//! |---|---|---|
//! | LAN (a bridge) | 198.18.0.0/24 | 2001:db8::/64 |
//! | `outside` | 198.18.0.2 | 2001:db8::2 |
//! | node i (1 ≤ i ≤ 200) | 198.18.0.(10+i) | 2001:db8::(10+i) |
//! | node i's Pods | 198.19.i.0/24 | 2001:db8:1:i::/64 |
//! | ClusterIPs | 198.18.128.0/20 | 2001:db8:ffff::/112 |
//! | LoadBalancer IPs | 198.18.1.0/24 | 2001:db8:1b::/120 |
//!
//! IPv6 groups are written with the same digits as the IPv4 octet they stand beside, so that
//! one address can be read off the other: node 1 is 198.18.0.11 and 2001:db8::11, node 12's
//! Pods are 198.19.12.0/24 and 2001:db8:1:12::/64 (the groups are hexadecimal 0x11 and 0x12).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portico_plan::PlanConfig;

/// Every IPv4 address of the lab lies in this range (RFC 2544 benchmarking).
pub const ALLOWED_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);
/// Every IPv6 address of the lab lies in this range (RFC 3849 documentation), apart from the
/// link-local ones every link has.
pub const ALLOWED_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32);
/// The LAN the nodes and `outside` share, IPv4.
pub const LAN_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 24);
/// The LAN the nodes and `outside` share, IPv6.
pub const LAN_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 64);
/// `outside`'s IPv4 address: a client that is on the LAN but in no node.
pub const OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// `outside`'s IPv6 address.
pub const OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The IPv4 service CIDR ClusterIPs come from.
pub const SERVICE_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 128, 0), 20);
/// The IPv6 service CIDR: /112, within the /108 the API server allows at most.
pub const SERVICE_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0), 112);
/// The IPv4 LoadBalancer pool.
pub const LB_POOL_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 1, 0), 24);
/// The IPv6 LoadBalancer pool.
pub const LB_POOL_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0x1b, 0, 0, 0, 0, 0), 120);
/// The gateway every Pod's IPv6 default route goes through: on the node's side of each Pod's
/// link, where a link-local address needs no room in the Pod CIDR.
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The most nodes a lab has: node 200 is 198.18.0.210, below the LoadBalancer pool's octet.
pub const MAX_NODES: u8 = 200;
/// What every lab node's name starts with; the node's number follows.
pub const NODE_NAME_PREFIX: &str = "lab-node-";

/// A lab node's number, 1 to [`MAX_NODES`]: every address function of a node is total on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIndex(u8);

/// A lab cannot have that many nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a lab has 1 to {MAX_NODES} nodes, not {0}")]
pub struct TooManyNodes(pub usize);

impl NodeIndex {
    /// Node `i`, when 1 ≤ i ≤ [`MAX_NODES`].
    pub fn new(i: usize) -> Option<NodeIndex> {
        u8::try_from(i).ok().filter(|i| (1..=MAX_NODES).contains(i)).map(NodeIndex)
    }

    /// Nodes 1 to `n`.
    pub fn first(n: usize) -> Result<Vec<NodeIndex>, TooManyNodes> {
        match n {
            1.. if n <= usize::from(MAX_NODES) => Ok((1..=n).filter_map(NodeIndex::new).collect()),
            _ => Err(TooManyNodes(n)),
        }
    }

    /// The node a name such as `lab-node-3` stands for; `None` for any other name (and for
    /// `lab-node-03`, so that one node has one name).
    pub fn of_name(name: &str) -> Option<NodeIndex> {
        let number = name.strip_prefix(NODE_NAME_PREFIX)?;
        let index = number.parse().ok().and_then(NodeIndex::new)?;
        (index.name() == name).then_some(index)
    }

    /// Its number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Its Node name, `lab-node-<i>`.
    pub fn name(self) -> String {
        format!("{NODE_NAME_PREFIX}{}", self.0)
    }

    /// Its IPv4 address on the LAN.
    pub fn v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + self.0)
    }

    /// Its IPv6 address on the LAN: the last group has the digits of the IPv4 address's last
    /// octet.
    pub fn v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, same_digits(10 + self.0))
    }

    /// Its addresses, IPv4 first: the Node's InternalIPs.
    pub fn addresses(self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4()), IpAddr::V6(self.v6())]
    }

    /// Its Pods' IPv4 range.
    pub fn pod_cidr_v4(self) -> Ipv4Net {
        Ipv4Net::new_assert(Ipv4Addr::new(198, 19, self.0, 0), 24)
    }

    /// Its Pods' IPv6 range.
    pub fn pod_cidr_v6(self) -> Ipv6Net {
        Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 1, same_digits(self.0), 0, 0, 0, 0), 64)
    }

    /// Its Pods' ranges, IPv4 first, as in `spec.podCIDRs`.
    pub fn pod_cidrs(self) -> [IpNet; 2] {
        [IpNet::V4(self.pod_cidr_v4()), IpNet::V6(self.pod_cidr_v6())]
    }

    /// The gateway of its Pods' IPv4 default route: the first address of its IPv4 Pod CIDR,
    /// which no Pod may have.
    pub fn pod_gateway_v4(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pod_cidr_v4().network()) + 1)
    }
}

impl fmt::Display for NodeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `n`'s decimal digits read as hexadecimal (11 → 0x11), so that IPv6 groups read as the
/// IPv4 octets beside them.
fn same_digits(n: u8) -> u16 {
    let n = u16::from(n);
    ((n / 100) << 8) | ((n / 10 % 10) << 4) | (n % 10)
}

/// Whether `ip` lies in the lab's ranges ([`ALLOWED_V4`], [`ALLOWED_V6`]).
pub fn in_lab(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ALLOWED_V4.contains(&ip),
        IpAddr::V6(ip) => ALLOWED_V6.contains(&ip),
    }
}

/// The planner's configuration for a lab: its service CIDRs and LoadBalancer pools, with
/// node 1 as the node Pods without `spec.nodeName` run on (so the planner adds no node of its
/// own) and its IPv4 Pod CIDR as where addresses for Pods without `status.podIPs` come from.
pub fn plan_config() -> PlanConfig {
    let first = NodeIndex(1);
    PlanConfig {
        service_cidrs: vec![IpNet::V4(SERVICE_V4), IpNet::V6(SERVICE_V6)],
        load_balancer_pools: vec![IpNet::V4(LB_POOL_V4), IpNet::V6(LB_POOL_V6)],
        pod_cidr: IpNet::V4(first.pod_cidr_v4()),
        local_node: first.name(),
        local_node_addresses: first.addresses().to_vec(),
        ..PlanConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_numbered_1_to_200_by_one_name_each() {
        assert_eq!(NodeIndex::new(0), None);
        assert_eq!(NodeIndex::new(201), None);
        assert_eq!(NodeIndex::new(200).map(NodeIndex::get), Some(200));
        assert_eq!(NodeIndex::first(3).map(|v| v.len()), Ok(3));
        assert_eq!(NodeIndex::first(0), Err(TooManyNodes(0)));
        assert_eq!(NodeIndex::first(201), Err(TooManyNodes(201)));
        assert_eq!(NodeIndex::of_name("lab-node-7"), NodeIndex::new(7));
        for name in ["lab-node-07", "lab-node-0", "lab-node-201", "lab-node-", "node-1", "lab-node-1x"] {
            assert_eq!(NodeIndex::of_name(name), None, "{name}");
        }
    }

    #[test]
    fn node_addresses_follow_the_table() {
        let one = NodeIndex::new(1).expect("node 1");
        assert_eq!(one.name(), "lab-node-1");
        assert_eq!(
            one.addresses(),
            ["198.18.0.11".parse::<IpAddr>().expect("literal"), "2001:db8::11".parse().expect("literal")]
        );
        assert_eq!(
            one.pod_cidrs(),
            [
                "198.19.1.0/24".parse::<IpNet>().expect("literal"),
                "2001:db8:1:1::/64".parse().expect("literal")
            ]
        );
        assert_eq!(one.pod_gateway_v4(), Ipv4Addr::new(198, 19, 1, 1));
        let last = NodeIndex::new(200).expect("node 200");
        assert_eq!(last.v4(), Ipv4Addr::new(198, 18, 0, 210));
        assert_eq!(last.v6(), "2001:db8::210".parse::<Ipv6Addr>().expect("literal"));
        assert_eq!(last.pod_cidr_v6(), "2001:db8:1:200::/64".parse::<Ipv6Net>().expect("literal"));
        let twelve = NodeIndex::new(12).expect("node 12");
        assert_eq!(twelve.pod_cidr_v4(), "198.19.12.0/24".parse::<Ipv4Net>().expect("literal"));
        assert_eq!(twelve.pod_cidr_v6(), "2001:db8:1:12::/64".parse::<Ipv6Net>().expect("literal"));
    }

    #[test]
    fn every_range_is_inside_the_lab_and_none_overlaps_another() {
        let mut ranges: Vec<(String, IpNet)> = vec![
            ("lan v4".into(), LAN_V4.into()),
            ("lan v6".into(), LAN_V6.into()),
            ("services v4".into(), SERVICE_V4.into()),
            ("services v6".into(), SERVICE_V6.into()),
            ("lb v4".into(), LB_POOL_V4.into()),
            ("lb v6".into(), LB_POOL_V6.into()),
        ];
        for i in NodeIndex::first(usize::from(MAX_NODES)).expect("200 nodes") {
            for cidr in i.pod_cidrs() {
                ranges.push((format!("node {i} pods"), cidr));
            }
            for ip in i.addresses() {
                assert!(in_lab(ip), "node {i}: {ip}");
                let lan: IpNet = if ip.is_ipv4() { LAN_V4.into() } else { LAN_V6.into() };
                assert!(lan.contains(&ip), "node {i}: {ip} is on the LAN");
            }
        }
        for (what, net) in &ranges {
            assert!(in_lab(net.network()) && in_lab(net.broadcast()), "{what} {net}");
        }
        for (i, (a, x)) in ranges.iter().enumerate() {
            for (b, y) in &ranges[i + 1..] {
                assert!(!x.contains(y) && !y.contains(x), "{a} {x} overlaps {b} {y}");
            }
        }
        assert!(in_lab(OUTSIDE_V4.into()) && in_lab(OUTSIDE_V6.into()));
        assert!(
            !in_lab("198.20.0.1".parse().expect("literal"))
                && !in_lab("2001:db9::1".parse().expect("literal"))
        );
        assert!(!in_lab(POD_GATEWAY_V6.into()), "the gateway is link-local, outside every range");
    }

    #[test]
    fn the_plan_config_uses_the_lab_ranges() {
        let config = plan_config();
        assert_eq!(config.local_node, "lab-node-1");
        assert!(config.service_cidrs.iter().chain(&config.load_balancer_pools).all(|n| in_lab(n.addr())));
        assert!(config.pod_cidr.contains(&IpAddr::from([198, 19, 1, 5])));
    }
}
