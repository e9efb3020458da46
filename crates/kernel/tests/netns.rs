//! The rulesets in a real kernel, inside network namespaces this test makes and removes
//! (`portico-test-kernel-<pid>-…`): they load, diffs end where a cold start does, a repair
//! undoes hand edits, and packets reach a backend through a ClusterIP. Nothing is added to
//! the host's own namespace, and no namespace has a route out. Skipped without root and nft.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use portico_kernel::{Applier, CompileOptions, DiffOptions, SyncKind, compile};
use support::netns::Netns;
use support::{NODE, cluster, compiled, plan, sequence, table_of};

/// Whether this test can run: root, `ip` and `nft`.
fn able() -> bool {
    portico_testkit::root::able(&["ip", "nft"])
}

#[test]
fn every_compiled_ruleset_loads() {
    if !able() {
        return;
    }
    let ns = Netns::new("load");
    let plan = plan(&cluster());
    let mut rulesets = vec![
        compiled().ruleset,
        compile(&plan, "node-b", &CompileOptions::default()).ruleset,
        compile(&plan, NODE, &CompileOptions { masquerade_all: true, loopback_node_ports: true }).ruleset,
    ];
    rulesets.extend(sequence());
    for (i, ruleset) in rulesets.into_iter().enumerate() {
        // A fresh applier each time: a cold start over whatever the last one left.
        let mut applier = Applier::new(ns.nft(), DiffOptions::default());
        let report = applier.sync(ruleset).unwrap_or_else(|e| panic!("ruleset {i}: {e}"));
        assert_eq!(report.kind, SyncKind::Cold);
        assert!(report.chains > 20 && report.elements > 10 && report.bytes > 1000, "{report:?}");
    }
    let listing = ns.listing();
    assert!(listing.contains("numgen random mod 3 0 meta l4proto tcp dnat to"), "{listing}");
}

#[test]
fn removing_everything_leaves_no_table_of_portico_and_keeps_others() {
    if !able() {
        return;
    }
    let ns = Netns::new("remove");
    let mut applier = Applier::new(ns.nft(), DiffOptions::default());
    applier.sync(compiled().ruleset).unwrap();
    ns.exec(&["nft", "add", "table", "inet", "someone-else"]);
    assert!(ns.exec(&["nft", "list", "tables"]).stdout.len() > 100, "Portico's tables are in");
    let mut nft = portico_kernel::NetlinkNft::in_namespace(&ns.path()).unwrap();
    portico_kernel::remove_all(&mut nft).unwrap();
    let tables = String::from_utf8(ns.exec(&["nft", "list", "tables"]).stdout).unwrap();
    assert_eq!(tables.trim(), "table inet someone-else", "only the other's table is left");
    // Again, with nothing of Portico's left: nothing fails.
    portico_kernel::remove_all(&mut nft).unwrap();
}

#[test]
fn diffs_in_a_row_list_as_a_cold_start_and_a_repair_undoes_hand_edits() {
    if !able() {
        return;
    }
    let [p1, p2, p3] = sequence();
    let by_diffs = Netns::new("diffs");
    let cold = Netns::new("cold");
    let mut applier = Applier::new(by_diffs.nft(), DiffOptions::default());
    assert_eq!(applier.sync(p1.clone()).unwrap().kind, SyncKind::Cold);
    let first = by_diffs.listing();
    for ruleset in [p2, p3.clone()] {
        let report = applier.sync(ruleset).unwrap();
        assert_eq!(report.kind, SyncKind::Diff, "{report:?}");
    }
    let mut other = Applier::new(cold.nft(), DiffOptions::default());
    let web = table_of(&p3, "service-ips", "198.19.96.10 . tcp . 80").name();
    other.sync(p3).unwrap();
    let wanted = cold.listing();
    assert_ne!(first, wanted, "the Plans differ");
    assert_eq!(by_diffs.listing(), wanted);

    // Rules deleted by hand, an element deleted, a rule added: a repair puts back the ruleset.
    by_diffs.exec(&["nft", "flush", "chain", "ip", &web, "services"]);
    by_diffs.exec(&["nft", "delete", "element", "ip", &web, "service-ips", "{ 198.19.96.10 . tcp . 80 }"]);
    by_diffs.exec(&["nft", "add", "rule", "ip", "portico", "filter-input", "counter"]);
    assert_ne!(by_diffs.listing(), wanted);
    assert_eq!(applier.repair().unwrap().kind, SyncKind::Resync);
    assert_eq!(by_diffs.listing(), wanted);
}

/// A client and a backend namespace joined through a node namespace that holds the ruleset.
const PACKETS: &str = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  clusterIPs: [198.19.96.10, '2001:db8:96::10']
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-4, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [198.18.2.2], nodeName: node-a}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-6, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ['2001:db8:2::2'], nodeName: node-a}]
---
apiVersion: v1
kind: Service
metadata: {name: none}
spec:
  clusterIP: 198.19.96.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
";

/// Answers every connection with the address it came from, on both backend addresses.
const BACKEND: &str = r#"
import socket, threading
def serve(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, 8080))
    s.listen(16)
    return s
def loop(s):
    while True:
        c, peer = s.accept()
        c.sendall(("from " + peer[0] + "\n").encode())
        c.close()
listeners = [serve(socket.AF_INET, "198.18.2.2"), serve(socket.AF_INET6, "2001:db8:2::2")]
for s in listeners:
    threading.Thread(target=loop, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Connects to each `address port` argument and prints what happened, one line each.
const CLIENT: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(" ", 1)
    try:
        c = socket.create_connection((host, int(port)), timeout=3)
        print("answer " + c.recv(100).decode().strip())
    except ConnectionRefusedError:
        print("refused")
    except OSError as e:
        print("error " + type(e).__name__)
"#;

#[test]
fn packets_reach_a_backend_through_a_cluster_ip_and_a_node_port() {
    if !able() {
        return;
    }
    if !Command::new("python3").arg("-c").arg("pass").output().is_ok_and(|o| o.status.success()) {
        println!("skipping: needs python3 for the client and backend");
        return;
    }
    let node = Netns::new("node");
    let client = Netns::new("client");
    let backend = Netns::new("backend");
    // Links are made inside the node namespace, their far ends moved straight to the others.
    node.exec(&["ip", "link", "add", "c0", "type", "veth", "peer", "name", "c1", "netns", &client.name]);
    node.exec(&["ip", "link", "add", "b0", "type", "veth", "peer", "name", "b1", "netns", &backend.name]);
    for (ns, link, v4, v6) in [
        (&node, "c0", "198.18.1.1/24", "2001:db8:1::1/64"),
        (&node, "b0", "198.18.2.1/24", "2001:db8:2::1/64"),
        (&client, "c1", "198.18.1.2/24", "2001:db8:1::2/64"),
        (&backend, "b1", "198.18.2.2/24", "2001:db8:2::2/64"),
    ] {
        ns.exec(&["ip", "addr", "add", v4, "dev", link]);
        ns.exec(&["ip", "-6", "addr", "add", v6, "dev", link, "nodad"]);
        ns.exec(&["ip", "link", "set", link, "up"]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
    }
    // Routes only between these namespaces: the client reaches the Service ranges through the
    // node; the backend has no route back to the client, so answers need the masquerading.
    client.exec(&["ip", "route", "add", "198.19.96.0/20", "via", "198.18.1.1"]);
    client.exec(&["ip", "-6", "route", "add", "2001:db8:96::/112", "via", "2001:db8:1::1"]);
    node.exec(&["ip", "route", "add", "198.19.96.0/20", "dev", "b0"]);
    node.exec(&["ip", "-6", "route", "add", "2001:db8:96::/112", "dev", "b0"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);

    let config = portico_plan::PlanConfig {
        local_node_addresses: vec!["198.18.1.1".parse().unwrap(), "2001:db8:1::1".parse().unwrap()],
        pod_cidr: "198.18.2.0/24".parse().unwrap(),
        ..support::config()
    };
    let plan =
        portico_testkit::plan::planned_with(PACKETS, &config, &portico_plan::Allocations::default(), 1)
            .clean()
            .plan;
    let compiled = compile(&plan, NODE, &CompileOptions::default());
    Applier::new(node.nft(), DiffOptions::default()).sync(compiled.ruleset).unwrap();

    let mut server = Command::new("ip")
        .args(["netns", "exec", &backend.name, "python3", "-c", BACKEND])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let targets = ["198.19.96.10 80", "2001:db8:96::10 80", "198.18.1.1 30080", "198.19.96.20 80"];
    let mut argv = vec!["python3", "-c", CLIENT];
    argv.extend(targets);
    let output = client.exec(&argv);
    let _ = server.kill();
    let _ = server.wait();
    let lines: Vec<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            // Masqueraded to the node's address on the backend's link.
            "answer from 198.18.2.1",
            "answer from 2001:db8:2::1",
            "answer from 198.18.2.1",
            // No endpoints: a TCP reset.
            "refused",
        ]
    );
}
