//! The command line: `check`, `explain`, `run`, `echo` and `lab`, their flags, and how each runs.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use portico_plan::PlanConfig;

use crate::bounds::{Bound, Bounds};
use crate::{lab, pipeline, probe, report, run};

#[derive(Parser)]
#[command(name = "portico", version, about = "Every way to expose Kubernetes workloads, in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests: print every error and warning, grouped by object.
    Check(ManifestArgs),
    /// Explain how each workload in the manifests is exposed: method, layer, routing, reach,
    /// addresses, ports, TLS, backends and cost; with the addresses `run` serves (read from
    /// its state folder, never written).
    Explain(ManifestArgs),
    /// Serve every exposure of the manifests on this host (ClusterIP, NodePort,
    /// LoadBalancer, external IPs, HostPort, Ingress, cluster DNS; the echo workload of Pods
    /// that ask for it) and apply every change to them live.
    Run(Box<RunArgs>),
    /// Run the built-in echo workload: answers HTTP/1.1, h2c (and HTTPS with --tls-cert)
    /// with JSON describing the request, and echoes UDP datagrams on the same port.
    Echo {
        /// Address to listen on (TCP and UDP).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Pod name reported in answers.
        #[arg(long)]
        name: Option<String>,
        /// Namespace reported in answers.
        #[arg(long)]
        namespace: Option<String>,
        /// Service reported in answers.
        #[arg(long)]
        service: Option<String>,
        /// PEM certificate chain: serve HTTPS instead of plain HTTP.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Take Portico's rules out of this node (root), as `kube-proxy --cleanup` does: every
    /// nftables table of Portico's in this host's network namespace, and with --pod-netns the
    /// mesh's capture in every Pod namespace under that folder. A node agent leaves its rules
    /// in place when it stops, so that connections live through its restarts; this is for
    /// removing Portico from a node.
    Cleanup {
        /// A folder of Pods' network namespaces (`/run/netns`) whose capture is taken out too.
        #[arg(long)]
        pod_netns: Option<PathBuf>,
        /// Whether this host's own namespace is cleaned (`off`: only the Pods').
        #[arg(long, default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
        host: bool,
    },
    /// A small cluster on this host (root): nodes, Pods and an `outside` client, each in its
    /// own network namespace on a bridged LAN (198.18.0.0/15 and 2001:db8::/32 only), a Portico
    /// node agent per node, to see how each method behaves in a cluster.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
        /// What the lab's namespaces are named by (lowercase, ending in `-`).
        #[arg(long, global = true, default_value = lab::DEFAULT_PREFIX)]
        prefix: String,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build the lab, start each Pod's echo workload and each node's agent, and print what
    /// to try.
    Up {
        /// Manifest folders or files the lab runs (repeatable).
        #[arg(long = "manifests", required = true)]
        manifests: Vec<PathBuf>,
        /// How many nodes (1 to 200).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How the node agents proxy Services.
        #[arg(long, value_enum, default_value_t = run::ProxyMode::Nftables)]
        proxy_mode: run::ProxyMode,
        /// With nftables: how often each agent rewrites every rule, bringing back what was
        /// changed by hand.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        nft_sync_period: Duration,
        /// With nftables: how the agents write their rules (`netlink`, or the `nft` program).
        #[arg(long, value_enum, default_value_t = run::NftWriter::Netlink)]
        nft_writer: run::NftWriter,
        /// How long the mesh's workload certificates are good for (renewed two thirds in).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        mesh_cert_lifetime: Duration,
    },
    /// Run a command in `outside`, `node/NAME` or `pod/NAMESPACE/NAME`.
    Exec {
        /// Where: `outside`, `node/lab-node-1`, `pod/default/web-0`.
        target: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// The lab's namespaces, their processes and addresses, and whether each agent is ready.
    Status,
    /// Remove everything the lab made (its namespaces and the processes in them), also after
    /// a crash.
    Down,
    /// A client that needs nothing installed: `tcp ADDR`, `udp ADDR [PAYLOAD]` or `http URL`;
    /// prints `ok` and the answer, `refused`, `timeout` or `unreachable`; exits 0 for an answer
    /// (for `http`, one with a 2xx or 3xx status).
    Probe {
        /// `tcp`, `udp` or `http`.
        kind: String,
        /// `ADDR:PORT`, or a URL for `http`.
        target: String,
        /// The datagram `udp` sends.
        #[arg(default_value = "hello")]
        payload: String,
        /// How long to wait for an answer.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
        /// The local port `udp` sends from (default: any), to send again on one flow.
        #[arg(long)]
        source_port: Option<u16>,
    },
}

/// What the one-shot commands read and how they print.
#[derive(Args)]
struct ManifestArgs {
    /// Manifest files or folders (searched recursively for .yaml, .yml, .json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    plan: PlanArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// What `run` serves and how.
#[derive(Args)]
struct RunArgs {
    /// Manifest folder or file to serve and watch (repeatable).
    #[arg(long = "manifests", required_unless_present = "cluster")]
    manifests: Vec<PathBuf>,
    /// Read the objects from the Kubernetes API server instead of manifests, watching
    /// Services, EndpointSlices, Pods, Nodes, Ingresses, IngressClasses, TLS Secrets, MetalLB
    /// pools and AuthorizationPolicies; the server is found with --kubeconfig, else as kubectl
    /// finds it (KUBECONFIG, ~/.kube/config), else from the Pod's service account.
    #[arg(long, conflicts_with = "manifests")]
    cluster: bool,
    /// With --cluster: the kubeconfig file.
    #[arg(long, requires = "cluster")]
    kubeconfig: Option<PathBuf>,
    /// What this process serves, comma-separated: `agent` (Services, HostPorts, health-check
    /// ports, announcement, cluster DNS, the mesh's node proxy, this node's echo Pods) and
    /// `ingress` (the Ingress controller). Both by default; in a cluster the DaemonSet runs
    /// `agent` and the ingress Deployment `ingress`.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["agent", "ingress"])]
    role: Vec<Role>,
    /// With --cluster: the Lease electing one status writer among the replicas that share it.
    #[arg(long, default_value = "portico")]
    lease: String,
    /// With --cluster: the Lease's namespace (default: $POD_NAMESPACE, else portico-system).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// With --cluster: the Service (NAMESPACE/NAME) whose addresses served Ingresses report in
    /// their status, as ingress-nginx's --publish-service.
    #[arg(long, value_parser = parse_object_key)]
    publish_service: Option<portico_model::ObjectKey>,
    #[command(flatten)]
    plan: PlanArgs,
    /// Admin HTTP address: /healthz, /readyz, /metrics, /plan.
    #[arg(long, default_value = "127.0.0.1:9650")]
    admin: SocketAddr,
    /// This host's addresses, where NodePorts and HostPorts listen (repeatable).
    #[arg(long = "node-address", default_value = "127.0.0.1")]
    node_addresses: Vec<IpAddr>,
    /// How long a UDP flow lives without an answer from its endpoint.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    udp_idle: Duration,
    /// How long a TCP connection through the L4 proxy lives without a byte either way.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    tcp_idle: Duration,
    /// Most UDP flows in all; when full, the flow idle longest makes room (`auto`: an eighth
    /// of the open-file limit, at most 16384).
    #[arg(long, default_value = "auto")]
    udp_flows: Bound,
    /// Most UDP flows of one listener (`auto`: a quarter of --udp-flows).
    #[arg(long, default_value = "auto")]
    udp_flows_per_listener: Bound,
    /// Most TCP connections through the L4 proxy; when reached, new ones wait in the listen
    /// queue (`auto`: a quarter of the open-file limit, at most 65536).
    #[arg(long, default_value = "auto")]
    tcp_connections: Bound,
    /// Most TCP connections of one L4 listener (`auto`: half of --tcp-connections).
    #[arg(long, default_value = "auto")]
    tcp_connections_per_listener: Bound,
    /// Most Ingress client connections; when reached, new ones wait in the listen queue
    /// (`auto`: an eighth of the open-file limit, at most 16384).
    #[arg(long, default_value = "auto")]
    ingress_connections: Bound,
    /// Most client connections of one Ingress listener (`auto`: half of
    /// --ingress-connections).
    #[arg(long, default_value = "auto")]
    ingress_connections_per_listener: Bound,
    /// How long shutdown waits for open connections to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// Quiet time after a change before it is applied.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    debounce: Duration,
    /// Ingress access log, one JSON line per request: `-` for stdout, a file path, or `off`.
    #[arg(long, default_value = "-")]
    access_log: String,
    /// Which engine reads HTTP/1.x Ingress requests.
    #[arg(long, value_enum, default_value = "portico")]
    http1_engine: Http1EngineArg,
    /// Cluster DNS address, UDP and TCP (`off`: no DNS).
    #[arg(long, default_value = "127.0.0.1:10053", value_parser = parse_optional_address)]
    dns: OptionalAddress,
    /// Where cluster DNS forwards other names (repeatable; default: the name servers of
    /// /etc/resolv.conf, on port 53).
    #[arg(long = "dns-upstream")]
    dns_upstreams: Vec<SocketAddr>,
    /// Log one line per DNS query (client, name, type, response code, time).
    #[arg(long)]
    dns_query_log: bool,
    /// Server-side search for Pods (CoreDNS autopath): a Pod's miss under its own namespace
    /// is searched on the server. Leave off when clients reach DNS through SNAT.
    #[arg(long)]
    dns_autopath: bool,
    /// TTL of cluster DNS answers, in seconds; negative answers (NXDOMAIN, NODATA) use it too.
    #[arg(long, default_value_t = 5)]
    dns_ttl: u32,
    /// How Services are proxied: `userspace` (listeners in this process; no root needed) or
    /// `nftables` (kernel rules, as kube-proxy's nftables mode; root, Linux).
    #[arg(long, value_enum, default_value_t = run::ProxyMode::Userspace)]
    proxy_mode: run::ProxyMode,
    /// With `--proxy-mode nftables`: how often every rule is rewritten in one transaction,
    /// bringing back rules changed or deleted by hand (changes are applied at once anyway).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    nft_sync_period: Duration,
    /// With `--proxy-mode nftables`: how rules reach the kernel: `netlink` (nf_tables messages
    /// from this process) or `nft` (the nft program, given a script per transaction).
    #[arg(long, value_enum, default_value_t = run::NftWriter::Netlink)]
    nft_writer: run::NftWriter,
    /// Run the built-in echo workload of this node's Pods that ask for it, in this process
    /// (`off`: something else runs them, as the lab does in each Pod's namespace).
    #[arg(long, default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    echo_pods: bool,
    /// Announce the LoadBalancer addresses L2Advertisements cover by ARP and NDP, from the node
    /// the Plan ranks first among those alive (root: raw sockets).
    #[arg(long, default_value = "off", value_parser = parse_switch, action = clap::ArgAction::Set)]
    announce: bool,
    /// With `--announce on`: the UDP port node agents send each other heartbeats on.
    #[arg(long, default_value_t = 9651)]
    announce_port: u16,
    /// Where a meshed Pod's network namespace is: a path with `{namespace}` and `{name}`
    /// standing for the Pod's (`/run/netns/pl-pod-{namespace}-{name}` in the lab), or a folder
    /// searched for the namespace that holds the Pod's address (`/run/netns` on a node, where
    /// containerd and CRI-O keep them); without it meshed Pods are listed but their traffic is
    /// not captured.
    #[arg(long)]
    pod_netns: Option<String>,
    /// The mesh CA's folder, in the layout of Istio's cacerts (ca-cert.pem, ca-key.pem,
    /// cert-chain.pem, root-cert.pem; or only root-cert.pem and root-key.pem: your own root);
    /// made when empty. Default: mesh-ca in the state folder.
    #[arg(long)]
    mesh_ca: Option<PathBuf>,
    /// How long a workload certificate is good for; it is renewed two thirds into its life.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    mesh_cert_lifetime: Duration,
    /// With --cluster and --pod-netns: the Secret, in the Lease's namespace, that holds the mesh CA every node
    /// agent shares (Istio's cacerts keys); made by the first agent when absent, then copied
    /// into --mesh-ca. `none`: each agent keeps the CA of its own folder.
    #[arg(long, default_value = "portico-mesh-ca")]
    mesh_ca_secret: String,
}

/// `on` or `off`.
fn parse_switch(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

/// An address, or `off`.
#[derive(Clone, Copy)]
struct OptionalAddress(Option<SocketAddr>);

fn parse_optional_address(s: &str) -> Result<OptionalAddress, String> {
    if s == "off" {
        return Ok(OptionalAddress(None));
    }
    s.parse()
        .map(|addr| OptionalAddress(Some(addr)))
        .map_err(|e| format!("{s:?}: {e} (an address such as 127.0.0.1:10053, or off)"))
}

impl RunArgs {
    fn into_config(self) -> run::RunConfig {
        let mut plan = self.plan.config();
        // The API server admitted every Service: its ClusterIPs are its ranges' to know.
        plan.admitted = self.cluster;
        if self.cluster && self.plan.lb_pools.is_empty() {
            // A loopback pool has no place in a cluster: its addresses would go in Services'
            // status for every client to see.
            plan.load_balancer_pools.clear();
        }
        plan.local_node_addresses = self.node_addresses;
        plan.dns_records = self.dns.0.is_some();
        let state = match self.plan.state.as_deref() {
            Some(dir) if dir == Path::new("none") => None,
            Some(dir) => Some(dir.to_owned()),
            None => Some(default_state_dir()),
        };
        run::RunConfig {
            cluster: self.cluster.then(|| run::ClusterConfig {
                kubeconfig: self.kubeconfig.clone(),
                lease: self.lease.clone(),
                lease_namespace: self.lease_namespace.clone().unwrap_or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|n| !n.is_empty())
                        .unwrap_or("portico-system".into())
                }),
                identity: lease_identity(),
                publish_service: self.publish_service.clone(),
            }),
            roles: run::Roles {
                agent: self.role.contains(&Role::Agent),
                ingress: self.role.contains(&Role::Ingress),
            },
            mesh: run::MeshConfig {
                pod_netns: self.pod_netns,
                ca: self.mesh_ca.or_else(|| state.as_ref().map(|s| s.join("mesh-ca"))),
                cert_lifetime: self.mesh_cert_lifetime,
                ca_secret: (self.mesh_ca_secret != "none").then_some(self.mesh_ca_secret),
            },
            state,
            manifests: self.manifests,
            plan,
            admin: self.admin,
            l4: portico_l4::Options {
                udp_idle: self.udp_idle,
                tcp_idle: self.tcp_idle,
                ..portico_l4::Options::default()
            },
            bounds: Bounds {
                tcp_connections: self.tcp_connections,
                tcp_connections_per_listener: self.tcp_connections_per_listener,
                udp_flows: self.udp_flows,
                udp_flows_per_listener: self.udp_flows_per_listener,
                ingress_connections: self.ingress_connections,
                ingress_connections_per_listener: self.ingress_connections_per_listener,
            },
            drain: self.drain,
            debounce: self.debounce,
            dns: self.dns.0,
            dns_upstreams: self.dns_upstreams,
            dns_query_log: self.dns_query_log,
            dns_autopath: self.dns_autopath,
            dns_ttl: self.dns_ttl,
            echo_pods: self.echo_pods,
            announce: self.announce.then_some(self.announce_port),
            proxy_mode: self.proxy_mode,
            nft_sync_period: self.nft_sync_period,
            nft_writer: self.nft_writer,
            http1: match self.http1_engine {
                Http1EngineArg::Portico => portico_l7::Http1Engine::Portico,
                Http1EngineArg::Hyper => portico_l7::Http1Engine::Hyper,
            },
            access_log: match self.access_log.as_str() {
                "off" => None,
                "-" => Some(run::AccessLogTarget::Stdout),
                path => Some(run::AccessLogTarget::File(PathBuf::from(path))),
            },
        }
    }
}

/// The configuration `portico run ARGS` serves, from the same flags and checks as the command
/// line (`args` without the program name and `run`): for running the serve loop in process.
pub fn run_config<I, T>(args: I) -> Result<run::RunConfig>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = ["portico".into(), "run".into()].into_iter().chain(args.into_iter().map(Into::into));
    match Cli::try_parse_from(with_flag_files(argv).map_err(anyhow::Error::msg)?)?.command {
        Command::Run(args) => {
            args.plan.check()?;
            Ok(args.into_config())
        }
        _ => anyhow::bail!("not the run command"),
    }
}

/// The arguments with each `@FILE` replaced by the flags in the file: words split on white
/// space, `#` starting a comment to the end of its line. The image has no shell, so a
/// ConfigMap of flags reaches the binary this way (`portico run @/etc/portico/flags`).
fn with_flag_files<I, T>(args: I) -> Result<Vec<std::ffi::OsString>, String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    let mut out = Vec::new();
    for arg in args.into_iter().map(Into::into) {
        match arg.to_str().and_then(|a| a.strip_prefix('@')) {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("the flags file {path}: {e}"))?;
                let words =
                    text.lines().flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace());
                out.extend(words.map(std::ffi::OsString::from));
            }
            None => out.push(arg),
        }
    }
    Ok(out)
}

/// `$XDG_STATE_HOME/portico`, else `~/.local/state/portico`, else `.portico-state`.
fn default_state_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match (std::env::var_os("XDG_STATE_HOME"), home) {
        (Some(state), _) if !state.is_empty() => PathBuf::from(state).join("portico"),
        (_, Some(home)) => home.join(".local/state/portico"),
        _ => PathBuf::from(".portico-state"),
    }
}

/// `250ms`, `30s`, `5m` or `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 30s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}

/// A part of what `run` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    /// The node agent.
    Agent,
    /// The Ingress controller.
    Ingress,
}

/// `NAMESPACE/NAME`.
fn parse_object_key(s: &str) -> Result<portico_model::ObjectKey, String> {
    match s.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(portico_model::ObjectKey::new(namespace, name))
        }
        _ => Err(format!("{s:?}: NAMESPACE/NAME, such as portico-system/portico-ingress")),
    }
}

/// This replica's name in the Lease: the Pod's name, else the host's name and the process id.
fn lease_identity() -> String {
    match std::env::var("POD_NAME") {
        Ok(name) if !name.is_empty() => name,
        _ => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}_{}", host.trim(), std::process::id())
        }
    }
}

/// The engines that can read HTTP/1.x Ingress requests.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Http1EngineArg {
    /// Portico's own: each head parsed once and checked, ordinary requests relayed.
    Portico,
    /// hyper's HTTP/1 server for every request: slower; the same rules and answers.
    Hyper,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned text for a terminal.
    Text,
    /// JSON for programs.
    Json,
}

/// Flags that shape planning: where state lives and what ranges to allocate from.
#[derive(Args, Clone)]
struct PlanArgs {
    /// State folder keeping allocations (ClusterIPs, NodePorts, LB and Pod IPs) stable across
    /// runs. `run` defaults to $XDG_STATE_HOME/portico (or ~/.local/state/portico);
    /// `explain` reads that same folder without writing it, so it shows the addresses `run`
    /// serves; `check` keeps none. Given here, the folder is read and kept; `none`: no state
    /// (allocations start afresh and are deterministic).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Service CIDR for ClusterIPs (repeat for dual stack); with --cluster the API server's
    /// ClusterIPs and families are taken as they are and this is not used.
    #[arg(long = "service-cidr", default_values_t = PlanConfig::default().service_cidrs)]
    service_cidrs: Vec<IpNet>,
    /// Proxy only the Services labelled service.kubernetes.io/service-proxy-name=NAME, leaving
    /// the others to kube-proxy (which leaves labelled ones alone): Portico beside kube-proxy.
    #[arg(long)]
    service_proxy_name: Option<String>,
    /// Give LoadBalancer addresses only to Services of spec.loadBalancerClass
    /// portico.dev/loadbalancer, leaving those without a class to MetalLB or a cloud.
    #[arg(long)]
    load_balancer_class_only: bool,
    /// LoadBalancer IP pool (repeatable), used while no MetalLB IPAddressPool exists. Default:
    /// 127.97.0.0/24 with manifests; none with --cluster, where the pools are IPAddressPools.
    #[arg(long = "lb-pool")]
    lb_pools: Vec<IpNet>,
    /// Pod CIDR for Pods without status.podIP.
    #[arg(long, default_value_t = PlanConfig::default().pod_cidr)]
    pod_cidr: IpNet,
    /// NodePort range, as FIRST-LAST.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    node_port_range: std::ops::RangeInclusive<u16>,
    /// Name of this node (Pods without spec.nodeName run here).
    #[arg(long, default_value_t = PlanConfig::default().local_node)]
    node_name: String,
    /// Extra IngressClass name to serve without an IngressClass object (repeatable).
    #[arg(long = "ingress-class")]
    ingress_classes: Vec<String>,
    /// Where Ingresses are served over plain HTTP.
    #[arg(long, default_value_t = PlanConfig::default().ingress_http)]
    ingress_http: SocketAddr,
    /// Where Ingresses are served over HTTPS.
    #[arg(long, default_value_t = PlanConfig::default().ingress_https)]
    ingress_https: SocketAddr,
    /// The cluster DNS zone.
    #[arg(long, default_value_t = PlanConfig::default().cluster_domain, value_parser = parse_domain)]
    cluster_domain: String,
    /// The mesh's trust domain: workloads are spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT.
    #[arg(long, default_value_t = PlanConfig::default().trust_domain, value_parser = parse_trust_domain)]
    trust_domain: String,
    /// The namespace whose AuthorizationPolicies apply to every meshed workload.
    #[arg(long, default_value_t = PlanConfig::default().mesh_root_namespace)]
    mesh_root_namespace: String,
}

/// A trust domain as the SPIFFE ID specification allows it (lower-case letters, digits, `.`,
/// `-` and `_`).
fn parse_trust_domain(s: &str) -> Result<String, String> {
    portico_tls::spiffe::SpiffeId::service_account(s, "default", "default")
        .map(|id| id.trust_domain().to_owned())
        .map_err(|e| format!("{s:?} is not a SPIFFE trust domain: {e}"))
}

/// A DNS name of letters, digits and hyphens, as a cluster domain must be; a final dot is
/// dropped and letters are lowered.
fn parse_domain(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(name)
    } else {
        Err(format!("{s:?} is not a DNS name (labels of letters, digits and hyphens, such as cluster.local)"))
    }
}

impl PlanArgs {
    /// Flags that contradict each other: a cluster has one service CIDR per IP family.
    fn check(&self) -> Result<()> {
        for (i, cidr) in self.service_cidrs.iter().enumerate() {
            if let Some(first) =
                self.service_cidrs[..i].iter().find(|c| c.addr().is_ipv4() == cidr.addr().is_ipv4())
            {
                anyhow::bail!(
                    "--service-cidr {first} and {cidr} are of the same IP family: give one per family (an IPv4 and an IPv6 one for dual stack)"
                );
            }
        }
        Ok(())
    }

    fn config(&self) -> PlanConfig {
        let mut config = PlanConfig {
            service_cidrs: self.service_cidrs.clone(),
            load_balancer_pools: if self.lb_pools.is_empty() {
                PlanConfig::default().load_balancer_pools
            } else {
                self.lb_pools.clone()
            },
            pod_cidr: self.pod_cidr,
            service_proxy_name: self.service_proxy_name.clone(),
            load_balancer_class_only: self.load_balancer_class_only,
            node_port_range: self.node_port_range.clone(),
            local_node: self.node_name.clone(),
            ingress_http: self.ingress_http,
            ingress_https: self.ingress_https,
            cluster_domain: self.cluster_domain.clone(),
            trust_domain: self.trust_domain.clone(),
            mesh_root_namespace: self.mesh_root_namespace.clone(),
            ..PlanConfig::default()
        };
        config.ingress_class_names.extend(self.ingress_classes.iter().cloned());
        config
    }
}

impl ManifestArgs {
    /// Loads and plans: `default` is where allocations come from when no `--state` is given.
    fn load_and_plan(&self, default: pipeline::State<'_>) -> Result<pipeline::Outcome> {
        let state = match self.plan.state.as_deref() {
            Some(dir) if dir == Path::new("none") => pipeline::State::Fresh,
            Some(dir) => pipeline::State::Keep(dir),
            None => default,
        };
        pipeline::load_and_plan(&self.paths, &self.plan.config(), state)
    }
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?} is not FIRST-LAST"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is empty or starts at 0"));
    }
    Ok(a..=b)
}

/// The async runtime: one worker per core this process may use (`TOKIO_WORKER_THREADS`
/// overrides). On one core a current-thread runtime does the same work without the
/// cross-thread hand-offs of the work-stealing scheduler.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        multi.worker_threads(workers);
        multi
    };
    builder.enable_all().build().context("starting the async runtime")
}

/// Parses the command line, runs the command, and says how it ended.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = match with_flag_files(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match run(Cli::parse_from(args)) {
        Ok(code) => code,
        // A closed pipe (`portico check | head`) is the reader's choice, not a failure.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Check(args) | Command::Explain(args) => args.plan.check()?,
        Command::Run(args) => args.plan.check()?,
        Command::Echo { .. } | Command::Lab { .. } | Command::Cleanup { .. } => {}
    }
    match cli.command {
        Command::Check(args) => {
            let outcome = args.load_and_plan(pipeline::State::Fresh)?;
            let errors = report::check(&outcome, args.output == Output::Json, &mut std::io::stdout().lock())?;
            Ok(if errors { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Explain(args) => {
            let served = default_state_dir();
            let outcome = args.load_and_plan(pipeline::State::Read(&served))?;
            report::explain(&outcome, args.output == Output::Json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let config = args.into_config();
            let runtime = runtime()?;
            let served = runtime.block_on(run::run(config));
            // Connections were drained; a reload a signal cut short may still be planning on a
            // blocking thread, and is not waited for.
            runtime.shutdown_background();
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lab { command, prefix } => lab_command(command, &prefix),
        Command::Cleanup { pod_netns, host } => cleanup(pod_netns.as_deref(), host),
        Command::Echo { listen, name, namespace, service, tls_cert, tls_key } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(portico_echo::TlsConfig::from_files(&cert, &key)?),
                _ => None,
            };
            let identity = portico_echo::Identity { pod: name, namespace, service };
            let runtime = runtime()?;
            runtime.block_on(async move {
                let echo = portico_echo::Echo::bind(listen, identity, tls).await?;
                eprintln!("echo listening on {} (TCP and UDP); Ctrl-C stops", echo.local_addr());
                echo.run(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `portico cleanup`: Portico's tables out of this host's namespace (unless `host` is off)
/// and out of every namespace under `pod_netns`; fails if any could not be cleaned.
fn cleanup(pod_netns: Option<&Path>, host: bool) -> Result<ExitCode> {
    use portico_kernel::{NetlinkNft, remove_all};
    let mut failed = 0;
    if host {
        match remove_all(&mut NetlinkNft::new()) {
            Ok(_) => println!("removed Portico's nftables tables from this host's network namespace"),
            Err(err) => {
                eprintln!("error: this host's network namespace: {err}");
                failed += 1;
            }
        }
    }
    if let Some(dir) = pod_netns {
        let entries = std::fs::read_dir(dir).with_context(|| format!("the folder {}", dir.display()))?;
        let mut namespaces: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        namespaces.sort();
        let mut cleaned = 0;
        for path in &namespaces {
            match NetlinkNft::in_namespace(path).and_then(|mut nft| remove_all(&mut nft)) {
                Ok(_) => cleaned += 1,
                Err(err) => {
                    eprintln!("error: {}: {err}", path.display());
                    failed += 1;
                }
            }
        }
        println!("removed the mesh's capture from {cleaned} Pod network namespaces under {}", dir.display());
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn lab_command(command: LabCommand, prefix: &str) -> Result<ExitCode> {
    match command {
        LabCommand::Up { manifests, nodes, proxy_mode, nft_sync_period, nft_writer, mesh_cert_lifetime } => {
            let prefix = prefix.to_owned();
            let up = lab::Up {
                manifests,
                nodes,
                prefix,
                proxy_mode,
                nft_sync_period,
                nft_writer,
                mesh_cert_lifetime,
            };
            lab::up(&up)?;
        }
        LabCommand::Exec { target, argv } => {
            let status = lab::exec(prefix, &target, &argv)?;
            return Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)));
        }
        LabCommand::Status => lab::status(prefix)?,
        LabCommand::Down => lab::down(prefix)?,
        LabCommand::Probe { kind, target, payload, timeout, source_port } => {
            let probe = match kind.as_str() {
                "tcp" => probe::Probe::Tcp(probe::address(&target).map_err(anyhow::Error::msg)?),
                "udp" => {
                    let addr = probe::address(&target).map_err(anyhow::Error::msg)?;
                    probe::Probe::Udp { addr, payload, source_port }
                }
                "http" => probe::http(&target).map_err(anyhow::Error::msg)?,
                other => anyhow::bail!("{other:?}: tcp, udp or http"),
            };
            let outcome = probe::run(&probe, timeout);
            println!("{outcome}");
            if !outcome.succeeded() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_none_keeps_no_state_folder_and_a_path_is_kept() -> Result<()> {
        let none = run_config(["--manifests", "m", "--state", "none"])?;
        assert_eq!(none.state, None, "`none` is no folder, not a folder named none");
        let kept = run_config(["--manifests", "m", "--state", "/tmp/portico-state"])?;
        assert_eq!(kept.state.as_deref(), Some(Path::new("/tmp/portico-state")));
        assert!(run_config(["--manifests", "m"])?.state.is_some(), "a default folder");
        Ok(())
    }

    #[test]
    fn a_flags_file_stands_for_its_words_and_a_missing_one_is_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("flags");
        std::fs::write(
            &file,
            "# the agent's flags\n--cluster --role agent  # a node agent\n\n--lease   portico-agent\n",
        )?;
        let config = run_config([format!("@{}", file.display()), "--publish-service".into(), "a/b".into()])?;
        let cluster = config.cluster.expect("--cluster from the file");
        assert_eq!(cluster.lease, "portico-agent");
        assert_eq!(cluster.publish_service, Some(portico_model::ObjectKey::new("a", "b")));
        assert!(config.roles.agent && !config.roles.ingress);
        let missing = run_config(["@/nonexistent/flags"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.contains("the flags file /nonexistent/flags"), "{missing}");
        assert!(run_config(["--cluster", "--publish-service", "no-slash"]).is_err());
        assert!(config.plan.load_balancer_pools.is_empty(), "no loopback pool in a cluster");
        let files = run_config(["--manifests", "m"])?;
        assert_eq!(files.plan.load_balancer_pools, PlanConfig::default().load_balancer_pools);
        Ok(())
    }

    #[test]
    fn switches_and_proxy_modes_read_as_written() -> Result<()> {
        let config = run_config(["--manifests", "m", "--echo-pods", "off", "--proxy-mode", "nftables"])?;
        assert!(!config.echo_pods);
        assert_eq!(config.proxy_mode, run::ProxyMode::Nftables);
        let defaults = run_config(["--manifests", "m"])?;
        assert!(defaults.echo_pods);
        assert_eq!(defaults.proxy_mode, run::ProxyMode::Userspace);
        assert!(run_config(["--manifests", "m", "--echo-pods", "maybe"]).is_err());
        Ok(())
    }
}
