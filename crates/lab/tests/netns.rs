//! The lab built for real (as root, with iproute2): TCP between Pods on one node and across
//! nodes over IPv4 and IPv6, from `outside` to a node, none from `outside` to a Pod, and a
//! teardown that leaves no namespace and no process. Listeners and clients are this test
//! binary run again inside a namespace (the ignored `helper` test, told what to do by its
//! environment). Each test has its own prefix, `ptl<pid><letter>-`, and tears its lab down
//! even when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use portico_lab::netns::NetnsError;
use portico_lab::{Layout, build, exec, nodes_manifest, plan_config, spawn, status, teardown};
use portico_plan::{Allocations, Plan};
use portico_testkit::manifests::Pod;
use portico_testkit::plan::planned_with;

const PORT: u16 = 7000;

/// Whether this host can build a lab; says why not when it cannot.
fn can_run() -> bool {
    portico_testkit::root::able(&["ip"])
}

/// A lab torn down when dropped, failed test or not.
struct Lab {
    prefix: String,
}

impl Lab {
    fn new(letter: char) -> Lab {
        let prefix = format!("ptl{}{letter}-", std::process::id());
        // A lab of an earlier process with the same id would be in the way.
        teardown(&prefix).expect("no leftovers");
        Lab { prefix }
    }

    /// Where the lab's processes write: a folder removed with the lab.
    fn logs(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}logs", self.prefix))
    }

    fn log(&self, name: &str) -> PathBuf {
        std::fs::create_dir_all(self.logs()).unwrap();
        self.logs().join(format!("{name}.log"))
    }

    /// Starts a listener in `namespace` answering `pong <name>` on port 7000 of every address.
    fn listen(&self, namespace: &str, name: &str) -> u32 {
        spawn(namespace, &run_helper(&[format!("LAB_LISTEN={name}")]), &self.log(name)).expect("listener")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(err) = teardown(&self.prefix) {
            eprintln!("tearing down lab {}: {err}", self.prefix);
        }
        let _ = std::fs::remove_dir_all(self.logs());
    }
}

/// This test binary run again as [`helper`] with the variables `env` (`NAME=value`).
fn run_helper(env: &[String]) -> Vec<String> {
    let exe = std::env::current_exe().unwrap().display().to_string();
    let mut argv = vec!["env".to_owned()];
    argv.extend(env.iter().cloned());
    argv.extend([
        exe,
        "--exact".into(),
        "helper".into(),
        "--ignored".into(),
        "--nocapture".into(),
        "--quiet".into(),
    ]);
    argv
}

/// From `namespace`, connects to `to` and expects `expect`: `pong <name>`, or `unreachable`.
fn check(namespace: &str, to: &str, expect: &str) -> bool {
    // Quiet: the helper's own test summary would read as more tests in this run's.
    let mut argv: Vec<String> = ["sh", "-c", "exec \"$@\" >/dev/null 2>&1", "sh"].map(String::from).to_vec();
    argv.extend(run_helper(&[format!("LAB_CONNECT={to}"), format!("LAB_EXPECT={expect}")]));
    let ok = exec(namespace, &argv).expect("client").success();
    if !ok {
        eprintln!("FAILED: {namespace} → {to}: expected {expect}");
    }
    ok
}

/// The other half of the tests, run inside lab namespaces: a listener (`LAB_LISTEN=<name>`)
/// or a client (`LAB_CONNECT=<address>`, `LAB_EXPECT=pong <name>|unreachable`). Without
/// either it does nothing.
#[test]
#[ignore = "run by the root tests inside lab namespaces"]
fn helper() {
    if let Ok(name) = std::env::var("LAB_LISTEN") {
        // [::] takes IPv4 too: bindv6only is off in a new namespace.
        let listener = TcpListener::bind(("::", PORT)).expect("bind [::]:7000");
        eprintln!("{name}: listening on {:?}", listener.local_addr());
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = writeln!(stream, "pong {name}");
        }
    }
    if let Ok(to) = std::env::var("LAB_CONNECT") {
        let to: SocketAddr = to.parse().expect("LAB_CONNECT is an address and port");
        let expect = std::env::var("LAB_EXPECT").expect("LAB_EXPECT");
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                // The listener may still be starting.
                Err(err) if err.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match (stream, expect.as_str()) {
            (Err(err), "unreachable") => assert!(
                matches!(err.kind(), ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable),
                "{to}: {err}, not unreachable"
            ),
            (Ok(_), "unreachable") => panic!("{to} answered, but should be unreachable"),
            (Err(err), _) => panic!("{to}: {err}"),
            (Ok(stream), expect) => {
                let mut line = String::new();
                BufReader::new(stream).read_line(&mut line).expect("an answer");
                assert_eq!(line.trim_end(), expect, "{to}");
            }
        }
    }
}

/// `n` lab nodes and `pods` (name, node number, last octet and group of its addresses).
fn plan(nodes: usize, pods: &[(&str, u8, u8)]) -> Plan {
    let mut yaml = nodes_manifest(nodes).unwrap();
    for &(name, node, host) in pods {
        let pod = Pod::new(name)
            .spec(&format!("  nodeName: lab-node-{node}\n"))
            .ip(&format!("198.19.{node}.{host}"))
            .ip(&format!("2001:db8:1:{node}::{host}"));
        yaml.push_str(&pod.to_string());
    }
    planned_with(&yaml, &plan_config(), &Allocations::default(), 1).clean().plan
}

/// Whether process `pid` is gone (or a zombie that nothing runs any more).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Waits up to two seconds for every process of `pids` to be gone.
fn all_gone(pids: &[u32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if pids.iter().all(|&p| gone(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn pods_reach_each_other_on_a_node_and_across_nodes_and_outside_reaches_only_nodes() {
    if !can_run() {
        return;
    }
    let lab = Lab::new('a');
    let plan = plan(2, &[("a", 1, 2), ("b", 1, 3), ("c", 2, 2)]);
    let layout = Layout::from_plan(&lab.prefix, &plan).unwrap();
    assert_eq!(layout.skipped, []);
    let started = Instant::now();
    build(&layout).unwrap();
    eprintln!("built 2 nodes and 3 Pods in {:?}", started.elapsed());
    let ns = |name: &str| format!("{}{name}", lab.prefix);

    let pids = [
        lab.listen(&ns("pod-default-a"), "a"),
        lab.listen(&ns("pod-default-b"), "b"),
        lab.listen(&ns("pod-default-c"), "c"),
        lab.listen(&ns("node-1"), "node-1"),
    ];
    let a = ns("pod-default-a");
    let c = ns("pod-default-c");
    let outside = ns("outside");
    let checks = [
        (&a, "198.19.1.3:7000", "pong b"),
        (&a, "[2001:db8:1:1::3]:7000", "pong b"),
        (&a, "198.19.2.2:7000", "pong c"),
        (&a, "[2001:db8:1:2::2]:7000", "pong c"),
        (&c, "198.19.1.2:7000", "pong a"),
        (&c, "[2001:db8:1:1::2]:7000", "pong a"),
        (&c, "198.18.0.11:7000", "pong node-1"),
        (&outside, "198.18.0.11:7000", "pong node-1"),
        (&outside, "[2001:db8::11]:7000", "pong node-1"),
        (&outside, "198.19.1.2:7000", "unreachable"),
        (&outside, "[2001:db8:1:1::2]:7000", "unreachable"),
        (&outside, "198.19.2.2:7000", "unreachable"),
    ];
    let failed: Vec<_> = checks.iter().filter(|(from, to, expect)| !check(from, to, expect)).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");

    let now = status(&lab.prefix).unwrap();
    assert_eq!(now.len(), layout.namespaces.len());
    let pod_a = now.iter().find(|s| s.name == a).unwrap();
    assert_eq!(pod_a.pids, [pids[0]]);
    let eth0 = pod_a.interfaces.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(eth0.state, "UP");
    assert_eq!(eth0.addresses[..2], ["198.19.1.2/32", "2001:db8:1:1::2/128"]);
    assert!(now.iter().find(|s| s.name == outside).unwrap().pids.is_empty());

    let started = Instant::now();
    let removed = teardown(&lab.prefix).unwrap();
    eprintln!("tore down 2 nodes and 3 Pods with 4 processes in {:?}", started.elapsed());
    assert_eq!(removed.len(), layout.namespaces.len());
    assert!(status(&lab.prefix).unwrap().is_empty(), "no namespace of the lab is left");
    assert!(all_gone(&pids), "every process of the lab has ended: {pids:?}");
    assert_eq!(teardown(&lab.prefix).unwrap(), Vec::<String>::new(), "a second teardown has nothing to do");
}

#[test]
fn three_nodes_and_ten_pods_are_built_and_torn_down_within_seconds() {
    if !can_run() {
        return;
    }
    let lab = Lab::new('b');
    let names: Vec<String> = (0..10).map(|k| format!("p{k}")).collect();
    let pods: Vec<(&str, u8, u8)> =
        names.iter().enumerate().map(|(k, name)| (name.as_str(), k as u8 % 3 + 1, k as u8 + 2)).collect();
    let layout = Layout::from_plan(&lab.prefix, &plan(3, &pods)).unwrap();
    assert_eq!(layout.namespaces.len(), 1 + 1 + 3 + 10);
    let started = Instant::now();
    build(&layout).unwrap();
    let built = started.elapsed();
    // The last Pod of node 3 reaches the first of node 1 over both families.
    let p9 = format!("{}pod-default-p9", lab.prefix);
    let pid = lab.listen(&format!("{}pod-default-p0", lab.prefix), "p0");
    assert!(check(&p9, "198.19.1.2:7000", "pong p0"));
    assert!(check(&p9, "[2001:db8:1:1::2]:7000", "pong p0"));
    let started = Instant::now();
    teardown(&lab.prefix).unwrap();
    let torn = started.elapsed();
    eprintln!("3 nodes and 10 Pods: built in {built:?}, torn down (one process) in {torn:?}");
    assert!(built < Duration::from_secs(5), "built in {built:?}");
    assert!(all_gone(&[pid]));
}

#[test]
fn teardown_removes_what_a_crashed_or_partial_build_left() {
    if !can_run() {
        return;
    }
    let lab = Lab::new('c');
    // What a build that stopped after its first namespaces leaves: namespaces, one of them
    // with a process that ignores SIGTERM.
    for name in ["lan", "node-1"] {
        let namespace = format!("{}{name}", lab.prefix);
        let out = Command::new("ip").args(["netns", "add", &namespace]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let node = format!("{}node-1", lab.prefix);
    let stubborn =
        spawn(&node, &["bash", "-c", "trap '' TERM; while :; do sleep 0.1; done"], &lab.log("stubborn"))
            .unwrap();
    let layout = Layout::from_plan(&lab.prefix, &plan(1, &[("a", 1, 2)])).unwrap();
    match build(&layout) {
        Err(NetnsError::Leftovers { names, .. }) => assert_eq!(names.len(), 2, "{names:?}"),
        other => panic!("a lab is not built over leftovers: {other:?}"),
    }
    let started = Instant::now();
    let removed = teardown(&lab.prefix).unwrap();
    let took = started.elapsed();
    assert_eq!(removed, [format!("{}lan", lab.prefix), node.clone()]);
    assert!(took >= Duration::from_secs(1), "SIGKILL comes after a second of SIGTERM: {took:?}");
    assert!(all_gone(&[stubborn]), "the process that ignored SIGTERM is gone");
    assert!(status(&lab.prefix).unwrap().is_empty());
    // And the lab builds now.
    build(&layout).unwrap();
    assert_eq!(teardown(&lab.prefix).unwrap().len(), layout.namespaces.len());
}

#[test]
fn running_in_a_namespace_the_lab_lacks_is_an_error() {
    if !can_run() {
        return;
    }
    let lab = Lab::new('d');
    let missing = format!("{}pod-default-none", lab.prefix);
    assert!(matches!(exec(&missing, &["true"]), Err(NetnsError::NoNamespace(n)) if n == missing));
    assert!(matches!(spawn(&missing, &["true"], &lab.log("none")), Err(NetnsError::NoNamespace(_))));
    assert!(matches!(teardown("ptl"), Err(NetnsError::Prefix(_))), "a prefix must end in a hyphen");
}
