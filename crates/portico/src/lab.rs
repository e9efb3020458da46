//! `portico lab`: a small cluster on this host, out of network namespaces (`portico-lab`), with
//! each Pod's echo workload in its own namespace and one Portico node agent per node.
//!
//! What `up` made is written to a state folder under `/run/portico-lab` (gone at reboot, as the
//! namespaces are), so that `exec` and `status` find the namespaces by what they stand for, and
//! `down` finds everything by the namespaces' prefix even when that folder is gone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use portico_lab::addressing::NodeIndex;
use portico_lab::{Layout, netns, nodes_manifest, plan_config};
use portico_model::Severity;
use portico_plan::exposure::{Method, exposures};
use portico_plan::{Plan, PlanConfig};
use serde::{Deserialize, Serialize};

use crate::pipeline::{self, State};
use crate::run::{NftWriter, ProxyMode};

/// What every namespace of the lab a person starts is called by.
pub const DEFAULT_PREFIX: &str = "portico-lab-";
/// Where each lab's state folder lives.
const STATE_ROOT: &str = "/run/portico-lab";
/// How long `up` waits for every agent and echo workload to serve: a first sync of tens of
/// thousands of Services takes a while.
const READY_WITHIN: Duration = Duration::from_secs(300);
/// The node agents' admin address, inside each node's namespace.
const AGENT_ADMIN: &str = "127.0.0.1:9650";

/// What `lab up` is asked for.
pub struct Up {
    /// The manifests the lab runs.
    pub manifests: Vec<PathBuf>,
    /// How many nodes.
    pub nodes: usize,
    /// Namespace name prefix.
    pub prefix: String,
    /// How the node agents proxy.
    pub proxy_mode: ProxyMode,
    /// With nftables: how often the agents rewrite every rule (repairing hand edits).
    pub nft_sync_period: Duration,
    /// With nftables: how the agents write their rules.
    pub nft_writer: NftWriter,
    /// How long the mesh's workload certificates are good for.
    pub mesh_cert_lifetime: Duration,
}

/// What `up` made, kept in the state folder.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    prefix: String,
    manifests: Vec<PathBuf>,
    nodes: usize,
    proxy_mode: ProxyMode,
    /// `outside`, `node/NAME`, `pod/NAMESPACE/NAME` → network namespace.
    targets: BTreeMap<String, String>,
}

/// The mesh CA every agent of the lab issues workload certificates from.
fn mesh_ca(prefix: &str) -> PathBuf {
    state_dir(prefix).join("mesh-ca")
}

fn state_dir(prefix: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(prefix.trim_end_matches('-'))
}

fn record_path(prefix: &str) -> PathBuf {
    state_dir(prefix).join("lab.json")
}

fn read_record(prefix: &str) -> Result<Record> {
    let path = record_path(prefix);
    let text = std::fs::read(&path).with_context(|| {
        format!("no lab {prefix} is up here ({} is missing): `portico lab up` first", path.display())
    })?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not a lab record", path.display()))
}

/// Fails unless this process may make namespaces.
fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!("the lab makes network namespaces: run it as root (sudo portico lab …)");
    }
    Ok(())
}

/// Fails unless the programs the lab runs are installed: `ip` always, `nft` when the agents
/// write their rules with it (they would otherwise never be ready, and `up` would wait).
fn require_tools(mode: ProxyMode, writer: NftWriter) -> Result<()> {
    let needed: &[(&str, &str)] = match (mode, writer) {
        (ProxyMode::Nftables, NftWriter::Nft) => &[("ip", "iproute2"), ("nft", "nftables")],
        _ => &[("ip", "iproute2")],
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let installed = |program: &str| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .any(|dir| dir.join(program).is_file())
    };
    let missing: Vec<String> = needed
        .iter()
        .filter(|(p, _)| !installed(p))
        .map(|(p, package)| format!("{p} (Debian: {package})"))
        .collect();
    if !missing.is_empty() {
        bail!("the lab needs {}: install it first", missing.join(" and "));
    }
    Ok(())
}

/// The configuration every node agent plans with: the lab's ranges, and this node's name.
fn agent_config() -> PlanConfig {
    PlanConfig {
        ingress_http: (IpAddr::from([0, 0, 0, 0]), 80).into(),
        ingress_https: (IpAddr::from([0, 0, 0, 0]), 443).into(),
        ..plan_config()
    }
}

/// `portico run` flags of the agent of `node`: the same manifests, the lab's Node objects and
/// ranges, so that every agent computes the same Plan; Pods are run by the lab, not by it.
/// The userspace proxy listens on ClusterIPs, so there the Ingress takes the node's own address
/// instead of every address (its port 80 would clash with theirs), and the Plans differ there;
/// cluster DNS too.
fn agent_args(up: &Up, nodes_file: &Path, node: NodeIndex) -> Vec<String> {
    let mut config = agent_config();
    let mut dns = std::net::SocketAddr::from(([0, 0, 0, 0], 53));
    if up.proxy_mode == ProxyMode::Userspace {
        for listener in [&mut config.ingress_http, &mut config.ingress_https, &mut dns] {
            listener.set_ip(node.v4().into());
        }
    }
    let mut args = vec!["run".to_owned()];
    for path in up.manifests.iter().map(|p| p.as_path()).chain([nodes_file]) {
        args.extend(["--manifests".to_owned(), path.display().to_string()]);
    }
    for cidr in &config.service_cidrs {
        args.extend(["--service-cidr".to_owned(), cidr.to_string()]);
    }
    for pool in &config.load_balancer_pools {
        args.extend(["--lb-pool".to_owned(), pool.to_string()]);
    }
    args.extend(
        [
            "--node-name",
            &node.name(),
            "--pod-cidr",
            &config.pod_cidr.to_string(),
            "--state",
            "none",
            "--admin",
            AGENT_ADMIN,
            "--ingress-http",
            &config.ingress_http.to_string(),
            "--ingress-https",
            &config.ingress_https.to_string(),
            "--dns",
            &dns.to_string(),
            "--echo-pods",
            "off",
            "--proxy-mode",
            up.proxy_mode.flag(),
            "--nft-sync-period",
            &format!("{}ms", up.nft_sync_period.as_millis()),
            "--nft-writer",
            up.nft_writer.flag(),
            "--mesh-ca",
            &mesh_ca(&up.prefix).display().to_string(),
            "--pod-netns",
            &format!("/run/netns/{}pod-{{namespace}}-{{name}}", up.prefix),
            "--mesh-cert-lifetime",
            &format!("{}ms", up.mesh_cert_lifetime.as_millis()),
        ]
        .map(String::from),
    );
    if up.proxy_mode == ProxyMode::Nftables {
        // LoadBalancer addresses an L2Advertisement covers are announced on the LAN.
        args.extend(["--announce".to_owned(), "on".to_owned()]);
    }
    args
}

/// `portico lab up`.
pub fn up(up: &Up) -> Result<()> {
    require_root()?;
    require_tools(up.proxy_mode, up.nft_writer)?;
    let started = Instant::now();
    let indices = NodeIndex::first(up.nodes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = state_dir(&up.prefix);
    if !netns::status(&up.prefix)?.is_empty() {
        bail!("lab {} is up already: `portico lab down` first", up.prefix);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let nodes_file = dir.join("nodes.yaml");
    std::fs::write(&nodes_file, nodes_manifest(up.nodes)?).context("writing the lab's Node objects")?;
    let mut paths = up.manifests.clone();
    paths.push(nodes_file.clone());
    let outcome = pipeline::load_and_plan(&paths, &agent_config(), State::Fresh)?;
    let errors = outcome.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    if errors > 0 {
        eprintln!("{errors} error(s) in the manifests (`portico check` lists them); the rest runs");
    }
    let layout = Layout::from_plan(&up.prefix, &outcome.plan)?;
    for skipped in &layout.skipped {
        eprintln!("not in the lab: {}: {}", skipped.what, skipped.reason);
    }
    // Made before the agents start, so that every node trusts the same root.
    let authority = portico_mesh::authority::load_or_create(&mesh_ca(&up.prefix))?;
    tracing::debug!(origin = ?authority.origin, "the lab's mesh CA");
    netns::build(&layout).context("building the lab's network")?;
    let exe = std::env::current_exe().context("finding the portico binary")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut echoes = Vec::new();
    for pod in &outcome.plan.pods {
        let Some(namespace) = layout.namespace_of(&pod.key) else { continue };
        let mut ports: Vec<u16> =
            pod.containers.iter().filter(|c| c.echo).flat_map(|c| &c.ports).map(|p| p.port).collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            // One socket pair on [::] takes the Pod's IPv4 and IPv6 addresses alike.
            let argv = [
                exe.display().to_string(),
                "echo".into(),
                "--listen".into(),
                format!("[::]:{port}"),
                "--name".into(),
                pod.key.name.clone(),
                "--namespace".into(),
                pod.key.namespace.clone(),
            ];
            let log = logs.join(format!("pod-{}-{}-{port}.log", pod.key.namespace, pod.key.name));
            netns::spawn(namespace, &argv, &log)?;
            echoes.push((namespace.to_owned(), port));
        }
    }
    let mut targets = BTreeMap::from([("outside".to_owned(), layout.outside_namespace())]);
    for &node in &indices {
        let Some(namespace) = layout.node_namespace(node) else { continue };
        service_routes(namespace, up.proxy_mode)?;
        let mut argv = vec![exe.display().to_string()];
        argv.extend(agent_args(up, &nodes_file, node));
        netns::spawn(namespace, &argv, &logs.join(format!("{}.log", node.name())))?;
        targets.insert(format!("node/{}", node.name()), namespace.to_owned());
    }
    for (key, namespace) in &layout.pods {
        targets.insert(format!("pod/{}/{}", key.namespace, key.name), namespace.clone());
    }
    let record = Record {
        prefix: up.prefix.clone(),
        manifests: up.manifests.clone(),
        nodes: up.nodes,
        proxy_mode: up.proxy_mode,
        targets,
    };
    std::fs::write(record_path(&up.prefix), serde_json::to_vec_pretty(&record)?)?;
    wait_ready(&exe, &record, &echoes)?;
    println!(
        "lab {} is up: {} nodes, {} Pods, {} proxy, ready in {:.1} s (logs: {})",
        up.prefix,
        up.nodes,
        layout.pods.len(),
        up.proxy_mode.flag(),
        started.elapsed().as_secs_f64(),
        logs.display()
    );
    print!("{}", guide(&outcome.plan, &record));
    Ok(())
}

/// Routes on each node for the service CIDRs and LoadBalancer pools. With nftables, a route
/// through the LAN, so that the node's own connections get as far as the rules that rewrite
/// them (the lab has no default route). In userspace mode the agent listens on service
/// addresses, so they are local to the node (as kube-proxy's IPVS mode puts them on a dummy
/// interface).
fn service_routes(namespace: &str, mode: ProxyMode) -> Result<()> {
    let config = agent_config();
    if mode == ProxyMode::Userspace {
        // IPv6 binds only addresses on an interface, whatever the routes say.
        let argv = ["sysctl", "-q", "-w", "net.ipv6.ip_nonlocal_bind=1"];
        if !netns::exec(namespace, &argv)?.success() {
            bail!("`{}` failed in {namespace}", argv.join(" "));
        }
    }
    for net in config.service_cidrs.iter().chain(&config.load_balancer_pools) {
        let net = net.to_string();
        let argv: &[&str] = match mode {
            ProxyMode::Nftables => &["ip", "route", "add", &net, "dev", "eth0"],
            ProxyMode::Userspace => &["ip", "route", "add", "local", &net, "dev", "lo"],
        };
        if !netns::exec(namespace, argv)?.success() {
            bail!("`{}` failed in {namespace}", argv.join(" "));
        }
    }
    Ok(())
}

/// Waits until every node agent says it is ready and every echo workload accepts.
fn wait_ready(exe: &Path, record: &Record, echoes: &[(String, u16)]) -> Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    let agents: Vec<&String> =
        record.targets.iter().filter(|(t, _)| t.starts_with("node/")).map(|(_, ns)| ns).collect();
    for namespace in agents {
        let url = format!("http://{AGENT_ADMIN}/readyz");
        wait_for(
            deadline,
            || probe_ok(exe, namespace, &["http", &url]),
            &format!("the node agent in {namespace}"),
        )?;
    }
    for (namespace, port) in echoes {
        let addr = format!("127.0.0.1:{port}");
        wait_for(
            deadline,
            || probe_ok(exe, namespace, &["tcp", &addr]),
            &format!("the echo workload in {namespace}"),
        )?;
    }
    Ok(())
}

fn wait_for(deadline: Instant, mut ready: impl FnMut() -> bool, what: &str) -> Result<()> {
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} is not ready after {} s; see its log", READY_WITHIN.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs `portico lab probe ARGS` quietly in `namespace`; true when it got an answer.
fn probe_ok(exe: &Path, namespace: &str, args: &[&str]) -> bool {
    let mut command = std::process::Command::new("ip");
    command
        .args(["netns", "exec", namespace])
        .arg(exe)
        .args(["lab", "probe", "--timeout", "200ms"])
        .args(args);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    command.status().is_ok_and(|s| s.success())
}

/// What to try: for each method, up to three of its entry points, from where its clients
/// are (ClusterIPs from a Pod, the rest from `outside`), as commands to paste.
fn guide(plan: &Plan, record: &Record) -> String {
    let program = std::env::args().next().unwrap_or_else(|| "portico".to_owned());
    let mut out = String::new();
    let client_pod = record.targets.keys().find(|t| t.starts_with("pod/")).cloned();
    let first_node = plan.nodes.first().and_then(|n| n.addresses.first()).copied();
    let _ = writeln!(
        out,
        "try ({program} lab exec TARGET -- CMD runs CMD in outside, node/NAME or pod/NS/NAME):"
    );
    let rows = exposures(plan);
    for method in [
        Method::ClusterIP,
        Method::NodePort,
        Method::LoadBalancer,
        Method::ExternalIP,
        Method::HostPort,
        Method::Ingress,
    ] {
        let target = match (method, &client_pod) {
            (Method::ClusterIP, Some(pod)) => pod.as_str(),
            (Method::ClusterIP, None) => continue,
            _ => "outside",
        };
        for row in rows.iter().filter(|r| r.method == method).take(3) {
            let (address, port) = match (method, first_node) {
                // The Ingress listens on every node; its rows name the listener's address.
                (Method::Ingress, Some(node)) => (node, "80/TCP".to_owned()),
                _ => {
                    let (Some(address), Some(port)) = (row.addresses.first(), row.ports.first()) else {
                        continue;
                    };
                    let Ok(address) = address.parse::<IpAddr>() else { continue };
                    (address, port.clone())
                }
            };
            let (number, protocol) = port.split_once('/').unwrap_or((port.as_str(), "TCP"));
            let host = match address {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            };
            let command = if protocol.starts_with("UDP") {
                format!("{program} lab probe udp {host}:{number}")
            } else {
                format!("curl -s http://{host}:{number}/")
            };
            let _ = writeln!(
                out,
                "  {program} lab exec {target} -- {command}   # {:?} {}",
                row.method, row.object
            );
        }
    }
    let _ = writeln!(
        out,
        "  {program} lab exec node/lab-node-1 -- curl -s http://{AGENT_ADMIN}/plan   # all of it; then {program} lab status, {program} lab down"
    );
    out
}

/// `portico lab exec TARGET -- ARGV`.
pub fn exec(prefix: &str, target: &str, argv: &[String]) -> Result<ExitStatus> {
    require_root()?;
    let record = read_record(prefix)?;
    let Some(namespace) = record.targets.get(target) else {
        let known: Vec<&str> = record.targets.keys().map(String::as_str).collect();
        bail!("no {target} in lab {prefix}; there are: {}", known.join(", "));
    };
    Ok(netns::exec(namespace, argv)?)
}

/// `portico lab status`.
pub fn status(prefix: &str) -> Result<()> {
    require_root()?;
    let namespaces = netns::status(prefix)?;
    if namespaces.is_empty() {
        println!("no lab {prefix} is up");
        return Ok(());
    }
    let record = read_record(prefix).ok();
    let exe = std::env::current_exe()?;
    for ns in namespaces {
        let target = record
            .as_ref()
            .and_then(|r| r.targets.iter().find(|(_, n)| **n == ns.name))
            .map_or(String::new(), |(t, _)| t.clone());
        // A node's gateway address sits on each of its Pods' links: shown once.
        let addresses: std::collections::BTreeSet<&str> = ns
            .interfaces
            .iter()
            .filter(|i| i.name != "lo")
            .flat_map(|i| &i.addresses)
            .map(String::as_str)
            .filter(|a| !a.starts_with("fe80"))
            .collect();
        let addresses: Vec<&str> = addresses.into_iter().collect();
        let mut line =
            format!("{:<28} {:<26} {:>3} processes  {}", ns.name, target, ns.pids.len(), addresses.join(" "));
        if target.starts_with("node/") {
            let ready = probe_ok(&exe, &ns.name, &["http", &format!("http://{AGENT_ADMIN}/readyz")]);
            line.push_str(if ready { "  agent ready" } else { "  agent NOT ready" });
        }
        println!("{}", line.trim_end());
    }
    Ok(())
}

/// `portico lab down`: everything with the prefix goes, the state folder too.
pub fn down(prefix: &str) -> Result<()> {
    require_root()?;
    let removed = netns::teardown(prefix)?;
    let dir = state_dir(prefix);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    println!("lab {prefix}: {} namespaces removed", removed.len());
    Ok(())
}
