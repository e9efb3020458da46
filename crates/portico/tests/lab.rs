//! `portico lab` as root: a 3-node lab of network namespaces with the nftables data plane,
//! every method tried through real packets from where a cluster's clients would be. Each test
//! builds its own lab (its own namespace prefix) and removes it, also when it fails; without
//! root, `ip` or `nft` they say that they skip. The mesh's test watches the LAN for plaintext
//! and follows one stream across certificate renewals.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_portico");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether this process can build labs; says so when it cannot.
fn can_build_labs() -> bool {
    portico_testkit::root::able(&["ip", "nft", "conntrack"])
}

/// A lab that is taken down when dropped.
struct Lab {
    prefix: String,
}

/// What a probe saw: `ok`, `refused`, `timeout` or `unreachable`, and the answer.
#[derive(Debug)]
struct Seen {
    outcome: String,
    body: String,
}

impl Seen {
    fn ok(&self) -> bool {
        self.outcome == "ok"
    }

    /// The echo workload's JSON answer to an HTTP probe.
    fn json(&self) -> Value {
        let json = self.body.split_once('\n').map_or("", |(_, body)| body);
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn pod(&self) -> String {
        self.json()["pod"].as_str().unwrap_or_default().to_owned()
    }

    /// The client address the Pod saw, without the port and the IPv4-mapped prefix.
    fn client(&self) -> String {
        let client = self.json()["client"].as_str().unwrap_or_default().to_owned();
        let host = client.rsplit_once(':').map_or(client.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']').trim_start_matches("::ffff:").to_owned()
    }
}

impl Lab {
    fn up(tag: char, manifests: &Path, extra: &[&str]) -> Lab {
        let prefix = format!("pt{}{tag}-", std::process::id() % 1_000_000);
        let lab = Lab { prefix };
        let out = lab.portico(&[&["up", "--manifests", manifests.to_str().unwrap()], extra].concat());
        assert!(out.status.success(), "lab up: {}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    fn portico(&self, args: &[&str]) -> Output {
        Command::new(EXE).arg("lab").args(["--prefix", &self.prefix]).args(args).output().unwrap()
    }

    /// `portico lab exec TARGET -- ARGV`.
    fn exec(&self, target: &str, argv: &[&str]) -> Output {
        self.portico(&[&["exec", target, "--"], argv].concat())
    }

    /// `portico lab probe KIND WHAT` run in `target`.
    fn probe(&self, target: &str, kind: &str, what: &str, extra: &[&str]) -> Seen {
        let out = self.exec(target, &[&[EXE, "lab", "probe", "--timeout", "1s", kind, what], extra].concat());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (first, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let outcome = first.split(':').next().unwrap_or_default().to_owned();
        Seen { outcome, body: body.to_owned() }
    }

    fn get(&self, target: &str, url: &str) -> Seen {
        self.probe(target, "http", url, &[])
    }

    /// The Plan the agent of `node` serves.
    fn plan(&self, node: &str) -> Value {
        let seen = self.get(&format!("node/{node}"), "http://127.0.0.1:9650/plan");
        assert!(seen.ok(), "{node}'s agent: {seen:?}");
        seen.json()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.portico(&["down"]);
        if !out.status.success() {
            eprintln!("lab down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn service<'p>(plan: &'p Value, name: &str) -> &'p Value {
    plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"]["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn ips(service: &Value, field: &str) -> Vec<IpAddr> {
    service[field].as_array().unwrap().iter().map(|ip| ip.as_str().unwrap().parse().unwrap()).collect()
}

/// `http://ADDR:PORT/`, with brackets for IPv6.
fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
    }
}

fn pod_node(plan: &Value, pod: &str) -> String {
    let pods = plan["pods"].as_array().unwrap();
    let found = pods.iter().find(|p| p["key"]["name"] == pod).unwrap_or_else(|| panic!("no Pod {pod}"));
    found["node"].as_str().unwrap().to_owned()
}

fn pod_ip(plan: &Value, pod: &str) -> String {
    let pods = plan["pods"].as_array().unwrap();
    let found = pods.iter().find(|p| p["key"]["name"] == pod).unwrap_or_else(|| panic!("no Pod {pod}"));
    found["ips"][0].as_str().unwrap().to_owned()
}

const CLIENT: &str = "pod/lab/client";
const NODES: [&str; 3] = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];

#[test]
fn every_method_behaves_as_in_a_cluster() {
    if !can_build_labs() {
        return;
    }
    let lab = Lab::up('a', &repo().join("examples/lab"), &[]);
    let mut plan = lab.plan("lab-node-1");
    for node in ["lab-node-2", "lab-node-3"] {
        let mut other = lab.plan(node);
        other["generation"] = plan["generation"].clone();
        assert!(other == plan, "{node} computes another Plan than lab-node-1");
    }
    plan["generation"] = Value::Null;
    let web = service(&plan, "web");
    let web_ip = ips(web, "clusterIps")[0];

    // ClusterIP, from a Pod: spread over Pods on this node and the others, the client's own
    // address kept.
    let client_ip = pod_ip(&plan, "client");
    let mut nodes_reached = BTreeSet::new();
    for _ in 0..30 {
        let seen = lab.get(CLIENT, &url(web_ip, 80));
        assert!(seen.ok(), "{seen:?}");
        assert_eq!(seen.client(), client_ip, "no masquerade inside the cluster");
        nodes_reached.insert(pod_node(&plan, &seen.pod()));
    }
    assert!(nodes_reached.contains("lab-node-1"), "the Pod on the client's node: {nodes_reached:?}");
    assert!(nodes_reached.len() >= 2, "Pods on other nodes: {nodes_reached:?}");

    // UDP and IPv6 ClusterIPs.
    let udp = lab.probe(CLIENT, "udp", &format!("{web_ip}:53"), &["ping"]);
    assert_eq!((udp.outcome.as_str(), udp.body.trim()), ("ok", "ping"));
    let v6 = ips(service(&plan, "web-v6"), "clusterIps");
    assert!(v6.iter().any(IpAddr::is_ipv6), "a dual-stack lab gives web-v6 an IPv6 ClusterIP: {v6:?}");
    for ip in v6 {
        assert!(lab.get(CLIENT, &url(ip, 80)).ok(), "web-v6 at {ip}");
    }

    // NodePort, on every node's addresses of the Service's families (both), from outside.
    for node in 1..=3 {
        for ip in [format!("198.18.0.1{node}"), format!("[2001:db8::1{node}]")] {
            let seen = lab.get("outside", &format!("http://{ip}:30280/"));
            assert!(seen.ok(), "NodePort on {ip}: {seen:?}");
        }
    }

    // LoadBalancer IP and external IP, routed to node 1.
    let lb = ips(service(&plan, "web-lb"), "loadBalancerIps")[0];
    assert!(lab.get("outside", &url(lb, 80)).ok(), "LoadBalancer {lb}");
    assert!(lab.get("outside", "http://198.18.1.200:80/").ok(), "external IP");

    // ClientIP affinity.
    let sticky = ips(service(&plan, "sticky"), "clusterIps")[0];
    let pinned: BTreeSet<String> = (0..10).map(|_| lab.get(CLIENT, &url(sticky, 80)).pod()).collect();
    assert_eq!(pinned.len(), 1, "{pinned:?}");

    // externalTrafficPolicy Local: the edge Pod runs on node 2 only.
    let local = lab.get("outside", "http://198.18.0.12:30282/");
    assert!(local.ok(), "{local:?}");
    assert_eq!(local.client(), "198.18.0.2", "Local keeps the client's address");
    for node in ["198.18.0.11", "198.18.0.13"] {
        let dropped = lab.get("outside", &format!("http://{node}:30282/"));
        assert_eq!(dropped.outcome, "timeout", "no local endpoint on {node}: dropped, {dropped:?}");
    }

    // Its health check, for a cloud load balancer: 200 where a local endpoint is, else 503.
    let health = service(&plan, "web-local")["healthCheckNodePort"].as_u64().unwrap();
    let on_node_2 = lab.get("outside", &format!("http://198.18.0.12:{health}/"));
    assert!(on_node_2.body.starts_with("HTTP/1.1 200"), "{on_node_2:?}");
    assert_eq!(on_node_2.json()["localEndpoints"], 1);
    let on_node_1 = lab.get("outside", &format!("http://198.18.0.11:{health}/"));
    assert!(on_node_1.body.starts_with("HTTP/1.1 503"), "{on_node_1:?}");

    // loadBalancerSourceRanges filter the LoadBalancer address only.
    let allowed = ips(service(&plan, "allowed"), "loadBalancerIps")[0];
    assert!(lab.get("outside", &url(allowed, 80)).ok(), "outside is in the range");
    let denied = service(&plan, "denied");
    let seen = lab.get("outside", &url(ips(denied, "loadBalancerIps")[0], 80));
    assert_eq!(seen.outcome, "timeout", "outside is not in the range: {seen:?}");
    let denied_node_port = denied["ports"][0]["nodePort"].as_u64().unwrap();
    assert!(
        lab.get("outside", &format!("http://{}:{denied_node_port}/", NODES[0])).ok(),
        "NodePorts unfiltered"
    );

    // No endpoints: refused at once.
    let lonely = ips(service(&plan, "lonely"), "clusterIps")[0];
    let started = Instant::now();
    assert_eq!(lab.get(CLIENT, &url(lonely, 80)).outcome, "refused");
    assert!(started.elapsed() < Duration::from_millis(900), "a reset, not a wait");

    // Hairpin: a Pod reaching its own Service, itself included.
    let mut itself = 0;
    for _ in 0..30 {
        let seen = lab.get("pod/lab/web-0", &url(web_ip, 80));
        assert!(seen.ok(), "{seen:?}");
        itself += usize::from(seen.pod() == "web-0");
    }
    assert!(itself > 0, "web-0 never reached itself through its Service");

    // HostPort: only on the node the Pod runs on.
    let edge_node = pod_node(&plan, "edge");
    assert_eq!(edge_node, "lab-node-2");
    let seen = lab.get("outside", "http://198.18.0.12:18080/");
    assert_eq!((seen.outcome.as_str(), seen.pod()), ("ok", "edge".to_owned()));
    assert_eq!(
        lab.get("outside", "http://198.18.0.11:18080/").outcome,
        "refused",
        "node 1 has no such HostPort"
    );
    let from_node = lab.get("node/lab-node-2", "http://127.0.0.1:18080/");
    assert_eq!(
        (from_node.outcome.as_str(), from_node.pod()),
        ("ok", "edge".to_owned()),
        "from 127.0.0.1, as portmap"
    );

    // Ingress on every node.
    let seen = lab.get("outside", "http://198.18.0.13:80/");
    assert!(seen.ok() && seen.pod().starts_with("web-"), "{seen:?}");
}

/// Manifests of a UDP Service over whichever of two Pods is labelled `role: server`.
fn udp_manifests(server: &str) -> String {
    let pod = |name: &str, node: &str| {
        let role = if name == server { "server" } else { "standby" };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: lab, labels: {{role: {role}}}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: echo, image: portico, args: [echo], ports: [{{containerPort: 8080, protocol: UDP}}, {{containerPort: 8080}}]}}]\n---\n"
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: lab}\n---\n".to_owned(),
        pod("a", "lab-node-2"),
        pod("b", "lab-node-3"),
        pod("client", "lab-node-1"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: lab}\nspec:\n  selector: {role: server}\n  ports: [{name: dns, port: 53, targetPort: 8080, protocol: UDP}, {name: tcp, port: 80, targetPort: 8080}]\n".to_owned(),
    ]
    .concat()
}

/// Whether node 1's conntrack table has a UDP flow from `port` answered by `ip`.
fn flow_answered_by(lab: &Lab, port: &str, ip: &str) -> bool {
    let out = lab.exec("node/lab-node-1", &["conntrack", "-L", "-p", "udp", "--orig-port-src", port]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains(&format!("src={ip} ")) && l.contains("sport=8080"))
}

#[test]
fn udp_follows_its_new_endpoint_hand_deleted_rules_return_and_down_leaves_nothing() {
    if !can_build_labs() {
        return;
    }
    let links_before = Command::new("ip").args(["-brief", "link"]).output().unwrap().stdout;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("udp.yaml"), udp_manifests("a")).unwrap();
    let lab = Lab::up('b', dir.path(), &["--nft-sync-period", "1s"]);
    let plan = lab.plan("lab-node-1");
    let (a, b) = (pod_ip(&plan, "a"), pod_ip(&plan, "b"));
    let vip = ips(service(&plan, "dns"), "clusterIps")[0].to_string();

    // One flow, from one source port: answered by a.
    let send = || lab.probe(CLIENT, "udp", &format!("{vip}:53"), &["hello", "--source-port", "40053"]);
    assert!(send().ok());
    assert!(flow_answered_by(&lab, "40053", &a), "the flow goes to a");

    // a is replaced by b: the same flow goes to b at once, not to a until it idles out.
    std::fs::write(dir.path().join("udp.yaml"), udp_manifests("b")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while service(&lab.plan("lab-node-1"), "dns")["ports"][0]["endpoints"][0]["address"] != b.as_str() {
        assert!(Instant::now() < deadline, "the agent did not follow the edit");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(send().ok(), "the flow is answered again");
    assert!(flow_answered_by(&lab, "40053", &b), "the flow now goes to b");
    assert!(!flow_answered_by(&lab, "40053", &a), "the flow to a was deleted");

    // A rule deleted by hand comes back with the next repair.
    let tcp = url(vip.parse().unwrap(), 80);
    assert!(lab.get(CLIENT, &tcp).ok());
    // Every Service table's map (`portico-services-NN`): the ClusterIP's is among them.
    let flush = "for t in $(nft list tables ip | cut -d' ' -f3 | grep services); do nft flush map ip $t service-ips || exit 1; done";
    let flushed = lab.exec("node/lab-node-1", &["sh", "-c", flush]);
    assert!(flushed.status.success(), "{}", String::from_utf8_lossy(&flushed.stderr));
    assert!(!lab.get(CLIENT, &tcp).ok(), "the ClusterIP is gone with its map element");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.get(CLIENT, &tcp).ok() {
        assert!(Instant::now() < deadline, "the map element did not come back");
    }

    // Down: no namespace, process or link is left.
    let prefix = lab.prefix.clone();
    let listed = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("ip").args(args).output().unwrap().stdout).into_owned()
    };
    let namespaces: Vec<String> = listed(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(String::from)
        .collect();
    let pids: Vec<String> = namespaces
        .iter()
        .flat_map(|ns| listed(&["netns", "pids", ns]).lines().map(String::from).collect::<Vec<_>>())
        .collect();
    assert!(pids.len() >= 6, "3 agents and 3 echo workloads: {pids:?}");
    drop(lab);
    assert!(!listed(&["netns", "list"]).contains(&prefix), "namespaces left");
    // Ended processes whose parent (`lab up`, long gone) cannot reap them are left to init; a
    // zombie is not running, and some inits (this sandbox's) never reap.
    let running = |pid: &&String| {
        std::fs::read_to_string(Path::new("/proc").join(pid.as_str()).join("status"))
            .is_ok_and(|status| !status.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
    };
    let alive: Vec<&String> = pids.iter().filter(running).collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    let links_after = Command::new("ip").args(["-brief", "link"]).output().unwrap().stdout;
    assert_eq!(
        String::from_utf8_lossy(&links_before),
        String::from_utf8_lossy(&links_after),
        "host links changed"
    );
    assert!(!Path::new("/run/portico-lab").join(prefix.trim_end_matches('-')).exists(), "state folder left");
}

#[test]
fn the_userspace_proxy_serves_the_same_lab() {
    if !can_build_labs() {
        return;
    }
    let lab = Lab::up('c', &repo().join("examples/lab"), &["--proxy-mode", "userspace"]);
    let plan = lab.plan("lab-node-1");
    let readiness = lab.get("node/lab-node-1", "http://127.0.0.1:9650/readyz");
    assert!(readiness.ok() && readiness.body.contains("l4: ready"), "{readiness:?}");
    for ip in ips(service(&plan, "web-v6"), "clusterIps") {
        assert!(lab.get(CLIENT, &url(ip, 80)).ok(), "ClusterIP {ip} through the userspace proxy");
    }
    for node in NODES {
        assert!(lab.get("outside", &format!("http://{node}:30280/")).ok(), "NodePort on {node}");
        assert!(lab.get("outside", &format!("http://{node}:80/")).ok(), "Ingress on {node}");
    }
    assert_eq!(lab.get(CLIENT, &url(ips(service(&plan, "lonely"), "clusterIps")[0], 80)).outcome, "refused");
    let log = std::fs::read_to_string(format!(
        "/run/portico-lab/{}/logs/lab-node-1.log",
        lab.prefix.trim_end_matches('-')
    ))
    .unwrap();
    assert!(!log.contains("error:"), "nothing the agent could not serve: {log}");
}

/// A Deployment of three echo Pods, a dual-stack LoadBalancer Service over them, and a
/// MetalLB pool on the LAN's own subnet with an L2Advertisement for it: the scenario
/// bench/failover.sh measures.
const ANNOUNCED: &str = include_str!("../../../bench/failover/l2.yaml");

/// The nodes that may announce `address`, in the order they take it.
fn announcers(plan: &Value, address: &str) -> Vec<String> {
    let all = plan["announcements"].as_array().unwrap();
    let found =
        all.iter().find(|a| a["address"] == address).unwrap_or_else(|| panic!("{address} not announced"));
    found["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect()
}

/// The link-layer address of `node`'s LAN interface.
fn mac_of(lab: &Lab, node: &str) -> String {
    let link =
        String::from_utf8(lab.exec(&format!("node/{node}"), &["ip", "link", "show", "eth0"]).stdout).unwrap();
    link.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap().to_owned()
}

/// Probes `url` from `outside` every 100 ms until it answers; the time that took.
fn until_answered(lab: &Lab, url: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let out = lab.exec("outside", &[EXE, "lab", "probe", "--timeout", "200ms", "http", url]);
        if String::from_utf8_lossy(&out.stdout).starts_with("ok") {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{url} did not answer within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_load_balancer_address_is_found_by_arp_and_ndp_and_moves_when_its_node_fails() {
    if !can_build_labs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l2.yaml"), ANNOUNCED).unwrap();
    let lab = Lab::up('d', dir.path(), &[]);
    let plan = lab.plan("lab-node-1");
    let web = service(&plan, "web-l2");
    assert_eq!(
        ips(web, "loadBalancerIps"),
        ["198.18.0.240".parse::<IpAddr>().unwrap(), "2001:db8::f0".parse().unwrap()]
    );
    for node in ["lab-node-2", "lab-node-3"] {
        assert_eq!(lab.plan(node)["announcements"], plan["announcements"], "{node} ranks the same");
    }
    let (v4, v6) = ("http://198.18.0.240:80/", "http://[2001:db8::f0]:80/");
    // No route: the addresses are on the LAN's link, found by ARP and NDP.
    for address in ["198.18.0.240", "2001:db8::f0"] {
        let route = String::from_utf8(lab.exec("outside", &["ip", "route", "get", address]).stdout).unwrap();
        assert!(!route.contains(" via "), "{route}");
    }
    until_answered(&lab, v4, Duration::from_secs(5));
    until_answered(&lab, v6, Duration::from_secs(5));

    // The first node alive announces; its agent killed, the next one takes over.
    let ranked = announcers(&plan, "198.18.0.240");
    let first = &ranked[0];
    // The agent is the node namespace's only process (each Pod has a namespace of its own).
    let namespace = format!("{}node-{}", lab.prefix, first.trim_start_matches("lab-node-"));
    let pids = Command::new("ip").args(["netns", "pids", &namespace]).output().unwrap();
    let pids = String::from_utf8(pids.stdout).unwrap();
    assert!(!pids.trim().is_empty(), "no agent in {namespace}");
    for pid in pids.split_whitespace() {
        assert!(Command::new("kill").args(["-KILL", pid]).status().unwrap().success());
    }
    let took = until_answered(&lab, v4, Duration::from_secs(5));
    println!("IPv4 address answered again {took:?} after its node's agent was killed");
    // The node's kernel still forwards with the rules its agent left, but the address moves:
    // `outside` now finds it at the next node's link-layer address.
    let next_mac = mac_of(&lab, &ranked[1]);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let entry =
            String::from_utf8(lab.exec("outside", &["ip", "neigh", "show", "198.18.0.240"]).stdout).unwrap();
        if entry.contains(&next_mac) {
            break;
        }
        assert!(Instant::now() < deadline, "198.18.0.240 did not move to {}: {entry}", ranked[1]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = lab.get(&format!("node/{}", ranked[1]), "http://127.0.0.1:9650/metrics");
    assert!(
        metrics.body.contains("portico_announce_announcing{address=\"198.18.0.240\",interface=\"eth0\"} 1"),
        "{}",
        metrics.body
    );
    let v6_ranked = announcers(&plan, "2001:db8::f0");
    if v6_ranked[0] == *first {
        let took = until_answered(&lab, v6, Duration::from_secs(5));
        println!("IPv6 address answered again {took:?} after its node's agent was killed");
    }

    // The next one's link goes down: the third takes over.
    let second = &ranked[1];
    let down = lab.exec(&format!("node/{second}"), &["ip", "link", "set", "eth0", "down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let took = until_answered(&lab, v4, Duration::from_secs(5));
    println!("IPv4 address answered again {took:?} after its node's link went down");
    let took = until_answered(&lab, v6, Duration::from_secs(5));
    println!("IPv6 address answered {took:?} after the second node's link went down");
}

/// Frames seen on every port of a namespace's links (an `AF_PACKET` socket opened inside it),
/// until `stop`.
fn capture(namespace: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    use std::io::Read;
    std::thread::spawn(move || {
        enter(&namespace);
        const ETH_P_ALL: u16 = 0x0003;
        let protocol = socket2::Protocol::from(i32::from(ETH_P_ALL.to_be()));
        let socket =
            socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::RAW, Some(protocol)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let (mut frames, mut buf) = (Vec::new(), vec![0u8; 65_536]);
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = (&socket).read(&mut buf) {
                frames.push(buf[..n].to_vec());
            }
        }
        frames
    })
}

/// Moves this thread into the network namespace `namespace` (a name under /run/netns).
fn enter(namespace: &str) {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(format!("/run/netns/{namespace}")).unwrap();
    let network = Some(rustix::thread::LinkNameSpaceType::Network);
    rustix::thread::move_into_link_name_space(file.as_fd(), network).unwrap();
}

/// The status line of the answer to `request`, sent as it is from inside `namespace`.
fn status_of(namespace: &str, to: &str, request: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let (namespace, to, request) = (namespace.to_owned(), to.to_owned(), request.to_owned());
    std::thread::spawn(move || {
        enter(&namespace);
        let mut stream = std::net::TcpStream::connect(&to).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        let _ = BufReader::new(stream).read_line(&mut status);
        status.trim_end().to_owned()
    })
    .join()
    .unwrap()
}

/// The TCP ports and payload of an Ethernet frame carrying IPv4 or IPv6.
fn tcp_payload(frame: &[u8]) -> Option<(u16, u16, &[u8])> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let (protocol, header) = match ethertype {
        0x0800 => (*ip.get(9)?, usize::from(ip.first()? & 0x0f) * 4),
        0x86dd => (*ip.get(6)?, 40),
        _ => return None,
    };
    let total = match ethertype {
        0x0800 => usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?])),
        _ => 40 + usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?])),
    };
    let tcp = ip.get(header..total.min(ip.len()))?;
    if protocol != 6 {
        return None;
    }
    let ports =
        (u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]), u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]));
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    Some((ports.0, ports.1, tcp.get(offset..)?))
}

/// A counter's value summed over the series of `name` whose labels include every one of
/// `labels`, from the agent of `node`.
fn counter(lab: &Lab, node: &str, name: &str, labels: &[&str]) -> f64 {
    let seen = lab.get(&format!("node/{node}"), "http://127.0.0.1:9650/metrics");
    assert!(seen.ok(), "{node}'s metrics: {seen:?}");
    seen.body
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// One HTTP/1.1 exchange on a kept-alive connection, from a thread inside a Pod's namespace.
fn keep_asking(
    namespace: String,
    to: String,
    every: Duration,
    for_: Duration,
) -> std::thread::JoinHandle<usize> {
    use std::io::{BufRead, BufReader, Read, Write};
    std::thread::spawn(move || {
        enter(&namespace);
        let stream = std::net::TcpStream::connect(&to).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (started, mut answered) = (Instant::now(), 0);
        while started.elapsed() < for_ {
            (&stream)
                .write_all(format!("GET /long-lived HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
                .unwrap();
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            assert!(status.starts_with("HTTP/1.1 200"), "answer {answered} on the kept stream: {status:?}");
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            answered += 1;
            std::thread::sleep(every);
        }
        answered
    })
}

#[test]
fn meshed_pods_talk_over_mutual_tls_as_their_identities_and_policy_decides_who_may() {
    if !can_build_labs() {
        return;
    }
    // Leaves live 6 s and are renewed 4 s in: a 12 s stream outlives three of them.
    let manifests = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("examples/mesh/mesh.yaml")).unwrap();
    std::fs::write(manifests.path().join("mesh.yaml"), &example).unwrap();
    let lab = Lab::up('m', manifests.path(), &["--mesh-cert-lifetime", "6s"]);
    let plan = lab.plan("lab-node-1");
    let web = service(&plan, "web");
    let cluster_ip = ips(web, "clusterIps")[0];
    let remote =
        ["web-0", "web-1", "web-2"].into_iter().find(|p| pod_node(&plan, p) != "lab-node-1").unwrap();
    let (remote_ip, remote_node) = (pod_ip(&plan, remote), pod_node(&plan, remote));
    let readiness = lab.get("node/lab-node-1", "http://127.0.0.1:9650/readyz");
    assert!(readiness.ok() && readiness.body.contains("mesh: ready"), "{readiness:?}");

    // Between meshed Pods on two nodes, the LAN carries only TLS to the tunnel port.
    let stop = Arc::new(AtomicBool::new(false));
    let sniffer = capture(format!("{}lan", lab.prefix), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));
    let secret = format!("/mesh-secret-{}", std::process::id());
    let seen = lab.get("pod/market/frontend", &format!("http://{remote_ip}:8080{secret}"));
    assert!(seen.ok(), "frontend to {remote} over the mesh: {seen:?}");
    assert_eq!(seen.pod(), remote);
    for _ in 0..6 {
        assert!(lab.get("pod/market/frontend", &url(cluster_ip, 80)).ok(), "frontend through the ClusterIP");
    }
    // The control: plaintext from outside the mesh, which the policy allows on the admin port.
    let plain = format!("/plain-visible-{}", std::process::id());
    let seen = lab.get("pod/legacy/old", &format!("http://{remote_ip}:9090{plain}"));
    assert!(seen.ok(), "legacy/old to {remote}'s admin port, plaintext: {seen:?}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let frames = sniffer.join().unwrap();
    let segments: Vec<(u16, u16, &[u8])> = frames.iter().filter_map(|f| tcp_payload(f)).collect();
    let carries =
        |needle: &[u8]| segments.iter().any(|(_, _, p)| p.windows(needle.len()).any(|w| w == needle));
    assert!(carries(plain.as_bytes()), "the capture sees plaintext ({} frames)", frames.len());
    assert!(!carries(secret.as_bytes()), "the meshed request crossed the LAN in plaintext");
    let tunnel: Vec<&[u8]> = segments
        .iter()
        .filter(|(s, d, p)| (*s == 15008 || *d == 15008) && !p.is_empty())
        .map(|(_, _, p)| *p)
        .collect();
    assert!(!tunnel.is_empty(), "the request went through a tunnel to port 15008");
    assert!(tunnel.iter().all(|p| p[0] == 0x16 || p[0] == 0x17 || p[0] == 0x14), "TLS records only");
    assert!(
        !segments.iter().any(|(_, d, p)| *d == 8080 && !p.is_empty()),
        "nothing meshed reached :8080 in plain"
    );

    // The server's proxy saw the client's SPIFFE identity, and counted it.
    let frontend = "source_principal=\"spiffe://cluster.local/ns/market/sa/frontend\"";
    let opened = "portico_mesh_tcp_connections_opened_total";
    let mtls = [frontend, "reporter=\"destination\"", "security_policy=\"mutual_tls\""];
    assert!(counter(&lab, &remote_node, opened, &mtls) >= 1.0, "{remote_node} counted frontend's connection");
    let log = std::fs::read_to_string(format!(
        "/run/portico-lab/{}/logs/{remote_node}.log",
        lab.prefix.trim_end_matches('-')
    ))
    .unwrap();
    assert!(
        log.lines().any(|l| l.contains("reporter=\"destination\"")
            && l.contains("source_principal=spiffe://cluster.local/ns/market/sa/frontend")
            && l.contains(&format!("destination=market/{remote}"))),
        "the access log names the client's identity"
    );

    // Denied: another identity on the http port, and plaintext there; each counted.
    let before = counter(&lab, &remote_node, "portico_mesh_denied_total", &[]);
    let batch = lab.get("pod/market/batch", &format!("http://{remote_ip}:8080/"));
    assert_eq!(batch.outcome, "refused", "batch is not allowed: {batch:?}");
    let old = lab.get("pod/legacy/old", &format!("http://{remote_ip}:8080/"));
    assert_eq!(old.outcome, "refused", "plaintext is not allowed on the http port: {old:?}");
    let batch_denied = ["source_principal=\"spiffe://cluster.local/ns/market/sa/batch\""];
    assert!(counter(&lab, &remote_node, "portico_mesh_denied_total", &batch_denied) >= 1.0);
    assert!(counter(&lab, &remote_node, "portico_mesh_denied_total", &[]) >= before + 2.0);

    // On the admin port, each request is decided: reads yes, /private/ and writes no, whatever
    // the spelling of the path, for a plaintext client and a meshed one alike.
    let old_ns = format!("{}pod-legacy-old", lab.prefix);
    let admin = format!("{remote_ip}:9090");
    let ask = |method: &str, path: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    };
    assert!(status_of(&old_ns, &admin, &ask("GET", "/metrics")).starts_with("HTTP/1.1 200"));
    for (method, path) in [
        ("GET", "/private/keys"),
        ("GET", "/public/../private/keys"),
        ("GET", "//private/keys"),
        ("DELETE", "/metrics"),
    ] {
        let status = status_of(&old_ns, &admin, &ask(method, path));
        assert!(status.starts_with("HTTP/1.1 403"), "{method} {path}: {status}");
    }
    let private = lab.get("pod/market/frontend", &format!("http://{admin}/private/keys"));
    assert!(
        private.body.starts_with("HTTP/1.1 403") && private.body.contains("RBAC: access denied"),
        "{private:?}"
    );
    let denied_requests = ["policy=\"no ALLOW policy matched\"", "source_principal=\"unknown\""];
    assert!(counter(&lab, &remote_node, "portico_mesh_denied_total", &denied_requests) >= 4.0);

    // Renewals under a running stream drop nothing, and new connections use the new leaves.
    let renewed = counter(&lab, "lab-node-1", "portico_mesh_certificate_renewals_total", &[]);
    let stream = keep_asking(
        format!("{}pod-market-frontend", lab.prefix),
        format!("{remote_ip}:8080"),
        Duration::from_millis(250),
        Duration::from_secs(12),
    );
    let answered = stream.join().unwrap();
    assert!(answered >= 40, "answers on one stream: {answered}");
    let renewals = counter(&lab, "lab-node-1", "portico_mesh_certificate_renewals_total", &[]) - renewed;
    assert!(renewals >= 2.0, "frontend's leaf renewed under the stream: {renewals}");
    assert!(
        lab.get("pod/market/frontend", &format!("http://{remote_ip}:8080/")).ok(),
        "a new connection after renewals"
    );

    // IPv6 goes through the mesh as well.
    let pods = plan["pods"].as_array().unwrap();
    let remote_v6 =
        pods.iter().find(|p| p["key"]["name"] == remote).unwrap()["ips"][1].as_str().unwrap().to_owned();
    let before = counter(&lab, &remote_node, opened, &mtls);
    assert!(lab.get("pod/market/frontend", &format!("http://[{remote_v6}]:8080/")).ok(), "over IPv6");
    assert!(counter(&lab, &remote_node, opened, &mtls) > before, "through a tunnel");

    // Something that is no proxy dialling the tunnel port fails its handshake, and is counted.
    let failures = "portico_mesh_tls_handshake_failures_total";
    let tunnel_port = format!("{remote_ip}:15008");
    let answer = status_of(&old_ns, &tunnel_port, &ask("GET", "/"));
    assert!(!answer.starts_with("HTTP"), "no HTTP on the tunnel port: {answer:?}");
    assert!(counter(&lab, &remote_node, failures, &["reporter=\"destination\""]) >= 1.0);

    // Out of the mesh (the namespace's label off): the capture goes, and traffic is plain again.
    let remote_pod = format!("pod/market/{remote}");
    let rules =
        || String::from_utf8_lossy(&lab.exec(&remote_pod, &["nft", "list", "ruleset"]).stdout).into_owned();
    assert!(rules().contains("redirect to :15006"), "the capture is in {remote}: {}", rules());
    let unmeshed = example.replace("portico.dev/mesh: enabled", "portico.dev/mesh: disabled");
    std::fs::write(manifests.path().join("mesh.yaml"), unmeshed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rules().contains("mesh-prerouting") {
        assert!(Instant::now() < deadline, "the capture is still in {remote}: {}", rules());
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = lab.get("pod/market/batch", &format!("http://{remote_ip}:8080/"));
    assert!(seen.ok(), "outside the mesh no policy applies: {seen:?}");
    assert_eq!(seen.client(), pod_ip(&plan, "batch"), "and the Pod sees the client's own address");
}
