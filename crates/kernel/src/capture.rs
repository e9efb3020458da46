//! The mesh's capture of a meshed Pod's TCP traffic, in the Pod's own network namespace, as
//! Istio ambient's in-Pod redirection does: connections the Pod makes go to the outbound
//! listener, connections made to it go to the inbound one (the tunnel port excepted), and the
//! proxy's own sockets, marked, pass untouched. The proxy reads each connection's original
//! destination back from conntrack (`SO_ORIGINAL_DST`). Pure: the rules as a [`Ruleset`].

use portico_plan::mesh::PortRange;

use crate::ruleset::{Chain, Family, Hook, Ruleset, Table, TableId};

/// The mark the proxy puts on its own sockets (Istio's), so that they are not captured again.
pub const PROXY_MARK: u32 = 0x539;

/// Where the proxy listens inside the Pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyPorts {
    /// Connections the Pod makes.
    pub outbound: u16,
    /// Plain connections made to the Pod.
    pub inbound: u16,
    /// Tunnels from other proxies (HBONE), never captured.
    pub tunnel: u16,
}

impl Default for ProxyPorts {
    /// Istio ambient's ports.
    fn default() -> Self {
        ProxyPorts { outbound: 15001, inbound: 15006, tunnel: 15008 }
    }
}

/// The capture of one Pod, for both families; `exclude_inbound` and `exclude_outbound` are
/// ports left alone.
pub fn capture(ports: ProxyPorts, exclude_inbound: &[PortRange], exclude_outbound: &[PortRange]) -> Ruleset {
    let excluded = |ranges: &[PortRange]| -> Vec<String> {
        ranges
            .iter()
            .map(|r| match r.first == r.last {
                true => format!("tcp dport {} return", r.first),
                false => format!("tcp dport {}-{} return", r.first, r.last),
            })
            .collect()
    };
    let mut output = vec![
        format!("meta mark & 0x{PROXY_MARK:x} == 0x{PROXY_MARK:x} return"),
        // To the Pod itself (its own addresses and loopback): not a connection to capture.
        "fib daddr type local return".to_owned(),
    ];
    output.extend(excluded(exclude_outbound));
    output.push(format!("meta l4proto tcp redirect to :{}", ports.outbound));
    let mut prerouting = vec![format!("tcp dport {} return", ports.tunnel)];
    prerouting.extend(excluded(exclude_inbound));
    prerouting.push(format!("meta l4proto tcp redirect to :{}", ports.inbound));
    // As the compiler writes them: nft lists the output hook's priority as a number.
    let chain = |hook, priority, rules| Chain { hook: Some(Hook { kind: "nat", hook, priority }), rules };
    let table = Table {
        chains: [
            ("mesh-output".to_owned(), chain("output", "-100", output)),
            ("mesh-prerouting".to_owned(), chain("prerouting", "dstnat", prerouting)),
        ]
        .into(),
        sets: Default::default(),
    };
    Ruleset { tables: [Family::Ip, Family::Ip6].map(|f| (TableId::main(f), table.clone())).into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::linearize;

    #[test]
    fn every_rule_is_one_the_netlink_writer_encodes() {
        let ranges = [PortRange { first: 9090, last: 9090 }, PortRange { first: 9000, last: 9010 }];
        let ruleset = capture(ProxyPorts::default(), &ranges, &ranges[..1]);
        for (id, table) in &ruleset.tables {
            for chain in table.chains.values() {
                for rule in &chain.rules {
                    assert!(linearize(id.family, rule).is_ok(), "{rule}");
                }
            }
        }
        let ip = &ruleset.tables[&TableId::main(Family::Ip)];
        let pre = &ip.chains["mesh-prerouting"].rules;
        assert_eq!(pre[0], "tcp dport 15008 return", "the tunnel port is never captured");
        assert_eq!(pre[1..3], ["tcp dport 9090 return", "tcp dport 9000-9010 return"]);
        assert_eq!(pre.last().map(String::as_str), Some("meta l4proto tcp redirect to :15006"));
        let out = &ip.chains["mesh-output"].rules;
        assert_eq!(out[0], "meta mark & 0x539 == 0x539 return", "the proxy's own sockets come first");
        assert_eq!(out[2], "tcp dport 9090 return");
        assert_eq!(out.last().map(String::as_str), Some("meta l4proto tcp redirect to :15001"));
    }
}
