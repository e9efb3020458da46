//! The netlink writer beside nft, in a real kernel: the same transactions written by Portico
//! over netlink in one namespace and by `nft -f` in another leave the same tables, down to
//! each rule's expressions and registers and each set's elements (`nft --debug=netlink
//! list`), through cold starts, differences, repairs and a large ruleset; a refused
//! transaction names its command and changes nothing. Inside namespaces this test makes and
//! removes; skipped without root, `ip` and `nft`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use portico_kernel::capture::{ProxyPorts, capture};
use portico_kernel::diff::{diff, resync};
use portico_kernel::netlink::encode;
use portico_kernel::ruleset::{Chain, Command, Set, SetDecl, Table, TableId};
use portico_kernel::{
    Applier, CompileOptions, DiffOptions, Family, NetlinkNft, Nft, NftCommand, NftError, Ruleset, SyncKind,
    compile,
};
use portico_plan::mesh::PortRange;
use support::netns::Netns;
use support::{NODE, cluster, compiled, plan, sequence};

fn able() -> bool {
    portico_testkit::root::able(&["ip", "nft"])
}

/// Two namespaces, one written by nft, the other over netlink.
struct Pair {
    by_nft: Netns,
    by_netlink: Netns,
    nft: Applier<NftCommand>,
    netlink: Applier<NetlinkNft>,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let by_nft = Netns::new(&format!("{tag}-nft"));
        let by_netlink = Netns::new(&format!("{tag}-nl"));
        let nft = Applier::new(by_nft.nft(), DiffOptions::default());
        let netlink =
            Applier::new(NetlinkNft::in_namespace(&by_netlink.path()).unwrap(), DiffOptions::default());
        Pair { by_nft, by_netlink, nft, netlink }
    }

    /// Syncs both; they must go the same way and leave the same tables.
    fn sync(&mut self, ruleset: Ruleset, step: &str) -> SyncKind {
        let by_nft = self.nft.sync(ruleset.clone()).unwrap_or_else(|e| panic!("{step}, nft: {e}"));
        let by_netlink = self.netlink.sync(ruleset).unwrap_or_else(|e| panic!("{step}, netlink: {e}"));
        assert_eq!(
            (by_nft.kind, by_nft.chains, by_nft.elements),
            (by_netlink.kind, by_netlink.chains, by_netlink.elements)
        );
        self.same(step);
        by_nft.kind
    }

    fn same(&self, step: &str) {
        let (expected, actual) = (self.by_nft.expressions(), self.by_netlink.expressions());
        assert!(expected.contains("[ "), "{step}: nothing listed:\n{expected}");
        if expected != actual {
            let diff: Vec<String> = expected
                .lines()
                .zip(actual.lines())
                .filter(|(e, a)| e != a)
                .take(10)
                .map(|(e, a)| format!("nft:     {e}\nnetlink: {a}"))
                .collect();
            panic!(
                "{step}: the kernels differ ({} and {} lines):\n{}",
                expected.lines().count(),
                actual.lines().count(),
                diff.join("\n")
            );
        }
        assert_eq!(self.by_nft.listing(), self.by_netlink.listing(), "{step}: nft lists them differently");
    }
}

/// Without a kernel: every command the compiler and the differences produce for the test
/// cluster encodes (a rule form the encoder does not know would be refused in a sync).
#[test]
fn every_command_of_the_test_cluster_encodes() {
    let [p1, p2, p3] = sequence();
    let all = CompileOptions { masquerade_all: true, loopback_node_ports: true };
    let rulesets = [
        compiled().ruleset,
        compile(&plan(&cluster()), NODE, &all).ruleset,
        compile(&plan(&cluster()), "node-b", &CompileOptions::default()).ruleset,
    ];
    let mut updates =
        vec![diff(None, &p1, &DiffOptions::default()), diff(Some(&p1), &p2, &DiffOptions::default())];
    updates.push(diff(Some(&p2), &p3, &DiffOptions::default()));
    updates.extend(rulesets.iter().map(|r| resync(Some(&p3), r)));
    for update in &updates {
        for commands in &update.transactions {
            let batch = encode(commands, 1).unwrap_or_else(|e| panic!("{e}"));
            assert!(batch.bytes.len() > commands.len() * 20);
        }
    }
}

#[test]
fn every_compiled_ruleset_and_every_difference_lists_the_same_through_netlink_as_through_nft() {
    if !able() {
        return;
    }
    let mut pair = Pair::new("diff");
    let [p1, p2, p3] = sequence();
    assert_eq!(pair.sync(p1, "cold start"), SyncKind::Cold);
    assert_eq!(pair.sync(p2, "second"), SyncKind::Diff);
    assert_eq!(pair.sync(p3, "third"), SyncKind::Diff);
    // Every rule form: affinity, Local policies, source ranges, HostPorts, both families.
    assert_eq!(pair.sync(compiled().ruleset, "the whole cluster"), SyncKind::Diff);
    let all = CompileOptions { masquerade_all: true, loopback_node_ports: true };
    pair.sync(compile(&plan(&cluster()), NODE, &all).ruleset, "masquerade all");
    pair.sync(compile(&plan(&cluster()), "node-b", &CompileOptions::default()).ruleset, "the other node");
    // A hand edit, then a repair by each.
    for ns in [&pair.by_nft, &pair.by_netlink] {
        ns.exec(&["nft", "flush", "chain", "ip", "portico-services-01", "services"]);
        ns.exec(&["nft", "flush", "map", "ip", "portico-services-01", "service-ips"]);
        ns.exec(&["nft", "flush", "chain", "ip", "portico", "hostports"]);
    }
    pair.nft.repair().unwrap();
    pair.netlink.repair().unwrap();
    pair.same("repaired");
    // The mesh's capture in a Pod: marks, redirects, single ports and ranges left alone.
    let ranges = [PortRange { first: 9090, last: 9090 }, PortRange { first: 9000, last: 9010 }];
    pair.sync(capture(ProxyPorts::default(), &ranges, &ranges[1..]), "a meshed Pod's capture");
}

#[test]
fn a_large_ruleset_goes_in_batches_past_the_default_socket_buffer_and_lists_the_same() {
    if !able() {
        return;
    }
    let mut pair = Pair::new("large");
    let first = large(3_000, 0);
    assert_eq!(pair.sync(first, "3,000 chains"), SyncKind::Cold);
    // A tenth moved to other endpoints, in one difference.
    assert_eq!(pair.sync(large(3_000, 300), "300 changed"), SyncKind::Diff);
}

/// `n` Service chains of ten endpoint rules each, in a map; the first `changed` with other
/// endpoints.
fn large(n: usize, changed: usize) -> Ruleset {
    let mut table = Table::default();
    let map = SetDecl {
        key: "ipv4_addr . inet_proto . inet_service".into(),
        value: Some("verdict"),
        flags: Vec::new(),
        timeout: None,
    };
    let mut elements = BTreeMap::new();
    for i in 0..n {
        let name = format!("service-{i:05}-bench/svc-{i:05}/tcp/http");
        let third = if i < changed { 200 } else { 128 };
        let rules = (0..10u8)
            .map(|e| {
                let to = format!("meta l4proto tcp dnat to 198.18.{third}.{}:8080", e + 1);
                match 10 - e {
                    1 => to,
                    left => format!("numgen random mod {left} 0 {to}"),
                }
            })
            .collect();
        table.chains.insert(name.clone(), Chain { hook: None, rules });
        let address = format!("198.19.{}.{} . tcp . 80", 64 + i / 250, i % 250 + 1);
        elements.insert(address, Some(format!("goto {name}")));
    }
    table.sets.insert("service-ips".into(), Set { decl: map, elements });
    Ruleset {
        tables: [(TableId::main(Family::Ip), table), (TableId::main(Family::Ip6), Table::default())].into(),
    }
}

#[test]
fn a_refused_transaction_names_its_command_and_changes_nothing() {
    if !able() {
        return;
    }
    let ns = Netns::new("refused");
    let mut netlink = NetlinkNft::in_namespace(&ns.path()).unwrap();
    let ip = TableId::main(Family::Ip);
    let commands = [Command::AddTable(ip), Command::DeleteChain(ip, "absent")];
    match netlink.run(&commands) {
        Err(NftError::Kernel { command, error }) => {
            assert_eq!(command, "delete chain ip portico absent");
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
        }
        other => panic!("{other:?}"),
    }
    let tables = ns.exec(&["nft", "list", "tables"]).stdout;
    assert!(
        tables.is_empty(),
        "the table of the refused transaction is there: {}",
        String::from_utf8_lossy(&tables)
    );
    // The writer goes on after a refusal.
    assert!(netlink.run(&commands[..1]).unwrap() > 0);
    assert_eq!(String::from_utf8(ns.exec(&["nft", "list", "tables"]).stdout).unwrap(), "table ip portico\n");
}
