//! `portico run`: load, plan and serve a folder of manifests, and follow every change.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use portico_announce::liveness::Timing;
use portico_announce::{Announcer, Options as AnnounceOptions};
use portico_dataplane::{DataPlane, drain};
use portico_dns::DnsServer;
use portico_healthcheck::HealthChecks;
use portico_kernel::capture::ProxyPorts;
use portico_kernel::{CompileOptions, KernelProxy, Options as KernelOptions, WriterKind};
use portico_l4::{L4Proxy, Metrics as L4Metrics, Options as L4Options};
use portico_l7::{AccessLog, IngressProxy, Metrics as L7Metrics, Options as L7Options};
use portico_mesh::{Mesh, Options as MeshOptions};
use portico_model::{Diagnostic, Severity};
use portico_plan::exposure::{Layer, Method, exposures};
use portico_plan::ingress::{PathKind, RuleHost};
use portico_plan::{Allocations, Plan, PlanConfig, Protocol};
use portico_source::cluster::{Cluster, Snapshot};
use portico_source::{Change, Loader, Watcher};
use portico_status::{Batch, Election, LeaseOptions, Scope, StatusWriter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, error, info, info_span, warn};

use crate::admin::{self, Admin};
use crate::bounds::Bounds;
use crate::local_pods::LocalPods;
use crate::{pipeline, state};

/// Everything `run` needs to know.
pub struct RunConfig {
    /// Manifest folders or files, served and watched.
    pub manifests: Vec<PathBuf>,
    /// Ranges, pools and this node.
    pub plan: PlanConfig,
    /// Where allocations are kept (`None`: nowhere; they start afresh, deterministic, at each
    /// start and are kept in memory while it runs).
    pub state: Option<PathBuf>,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// The L4 proxy's timeouts (its bounds come from `bounds`).
    pub l4: L4Options,
    /// How many connections and flows each kind of listener may hold.
    pub bounds: Bounds,
    /// How long shutdown waits for open connections.
    pub drain: Duration,
    /// Quiet time before a change is applied.
    pub debounce: Duration,
    /// Where the Ingress access log goes, if anywhere.
    pub access_log: Option<AccessLogTarget>,
    /// Which engine reads HTTP/1.x Ingress requests.
    pub http1: portico_l7::Http1Engine,
    /// Where cluster DNS answers (UDP and TCP), if anywhere.
    pub dns: Option<SocketAddr>,
    /// Where it forwards other names; empty: the name servers of /etc/resolv.conf.
    pub dns_upstreams: Vec<SocketAddr>,
    /// One log line per DNS query.
    pub dns_query_log: bool,
    /// Server-side search for Pods.
    pub dns_autopath: bool,
    /// TTL of cluster DNS answers, negative ones included.
    pub dns_ttl: u32,
    /// Whether this process runs the echo workload of this node's Pods.
    pub echo_pods: bool,
    /// With announcement on: the heartbeat port.
    pub announce: Option<u16>,
    /// How Services are proxied.
    pub proxy_mode: ProxyMode,
    /// With nftables: how often every rule is rewritten, bringing back what was changed by hand.
    pub nft_sync_period: Duration,
    /// With nftables: how the rules reach the kernel.
    pub nft_writer: NftWriter,
    /// The mesh's node proxy.
    pub mesh: MeshConfig,
    /// Read the objects from the Kubernetes API server instead of `manifests`.
    pub cluster: Option<ClusterConfig>,
    /// What this process serves.
    pub roles: Roles,
}

/// How to reach the API server, and how replicas elect the one that writes status.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The kubeconfig file; `None`: as kubectl finds one, else the Pod's service account.
    pub kubeconfig: Option<PathBuf>,
    /// The Lease's name.
    pub lease: String,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// This replica's name in the Lease.
    pub identity: String,
    /// The Service whose addresses served Ingresses report.
    pub publish_service: Option<portico_model::ObjectKey>,
}

/// The parts of Portico this process runs.
#[derive(Clone, Copy, Debug)]
pub struct Roles {
    /// The node agent: Services, HostPorts, health checks, announcement, DNS, the mesh, echo Pods.
    pub agent: bool,
    /// The Ingress controller.
    pub ingress: bool,
}

/// Where the objects come from, and the news that they changed.
enum Objects {
    /// Manifest files, watched.
    Files { _watcher: Watcher, changes: mpsc::Receiver<Change> },
    /// The API server, watched kind by kind.
    Cluster { _cluster: Cluster, snapshots: mpsc::Receiver<Snapshot> },
}

impl Objects {
    /// What to plan next: `Some(None)` to read the files again, `Some(Some(snapshot))` for the
    /// API server's objects; `None` once the source has stopped.
    async fn next(&mut self) -> Option<Option<Snapshot>> {
        match self {
            Objects::Files { changes, .. } => {
                let change = changes.recv().await?;
                info!(paths = ?change.paths, "manifests changed");
                Some(None)
            }
            Objects::Cluster { snapshots, .. } => snapshots.recv().await.map(Some),
        }
    }
}

/// How the mesh's node proxy runs.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Where a Pod's network namespace is (`{namespace}`, `{name}`); `None`: not captured.
    pub pod_netns: Option<String>,
    /// The CA folder.
    pub ca: Option<PathBuf>,
    /// How long a workload certificate is good for.
    pub cert_lifetime: Duration,
    /// In a cluster: the Secret holding the CA every agent shares, copied into `ca`.
    pub ca_secret: Option<String>,
}

/// How the nftables data plane writes to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NftWriter {
    /// nf_tables messages over netlink, from this process (no `nft` process, no table read).
    Netlink,
    /// The `nft` program, given a script for each transaction.
    Nft,
}

impl NftWriter {
    /// As the `--nft-writer` flag writes it.
    pub fn flag(self) -> &'static str {
        match self {
            NftWriter::Netlink => "netlink",
            NftWriter::Nft => "nft",
        }
    }
}

/// How a node agent proxies Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// Listeners in this process, on every service address (no root needed).
    Userspace,
    /// Kernel rules (nftables), as kube-proxy's nftables mode: root, Linux.
    Nftables,
}

impl ProxyMode {
    /// As the `--proxy-mode` flag writes it.
    pub fn flag(self) -> &'static str {
        match self {
            ProxyMode::Userspace => "userspace",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// Destination of the Ingress access log.
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl AccessLogTarget {
    fn open(&self) -> Result<Arc<AccessLog>> {
        let out: Box<dyn std::io::Write + Send> = match self {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the access log {}", path.display()))?,
            ),
        };
        Ok(AccessLog::new(out))
    }
}

/// Labels of the diagnostics gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabel {
    severity: String,
}

/// Metrics of the reload loop.
#[derive(Default)]
struct ReloadMetrics {
    generation: Gauge,
    reloads: Counter,
    failures: Counter,
    files_parsed: Counter,
    diagnostics: Family<SeverityLabel, Gauge>,
}

impl ReloadMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ReloadMetrics::default();
        registry.register(
            "portico_config_generation",
            "Generation of the plan being served",
            m.generation.clone(),
        );
        registry.register("portico_reloads", "Plans applied", m.reloads.clone());
        registry.register(
            "portico_reload_failures",
            "Plans applied with errors (the objects in error keep their last good version)",
            m.failures.clone(),
        );
        registry.register(
            "portico_reload_files_parsed",
            "Manifest files parsed by reloads (files whose bytes did not change are not parsed again)",
            m.files_parsed.clone(),
        );
        registry.register(
            "portico_diagnostics",
            "Problems in the manifests being served",
            m.diagnostics.clone(),
        );
        m
    }
}

/// The serving state carried from one reload to the next.
struct Server {
    config: RunConfig,
    /// Every data plane, in the order each new Plan reaches them: the local Pods first, so
    /// that the proxies' first connections find their endpoints listening.
    planes: Vec<Arc<dyn DataPlane>>,
    pods: Option<Arc<LocalPods>>,
    access_log: Option<Arc<AccessLog>>,
    admin: Arc<Admin>,
    metrics: ReloadMetrics,
    loader: Loader,
    locator: portico_model::locate::Locator,
    /// The diagnostics of the last reload, as hashes of their text: only new ones are logged.
    logged: HashSet<u64>,
    allocations: Allocations,
    generation: u64,
    /// In a cluster: the Lease and the status writer.
    status: Option<StatusWriting>,
}

/// Status write-back in a cluster: one writer elected by a Lease among the replicas.
struct StatusWriting {
    election: Election,
    writer: StatusWriter,
    scope: Scope,
}

impl StatusWriting {
    /// Campaigns for the Lease and starts the writer; this process writes the statuses of its
    /// roles: LoadBalancer Services' as an agent, Ingresses' as the ingress.
    fn start(
        client: portico_source::cluster::Client,
        cluster: &ClusterConfig,
        config: &RunConfig,
        registry: &mut Registry,
    ) -> Self {
        let options = LeaseOptions::new(&cluster.lease_namespace, &cluster.lease, &cluster.identity);
        info!(lease = %cluster.lease, namespace = %cluster.lease_namespace, identity = %cluster.identity, "campaigning to write status");
        let election = Election::start(client.clone(), options);
        let writer = StatusWriter::start(client, election.leader(), &cluster.identity, registry);
        let scope = Scope {
            services: config.roles.agent,
            ingresses: config.roles.ingress,
            publish_service: cluster.publish_service.clone(),
            node: config.plan.local_node.clone(),
            load_balancer_class_only: config.plan.load_balancer_class_only,
        };
        StatusWriting { election, writer, scope }
    }
}

/// Serves until SIGINT or SIGTERM, then drains.
pub async fn run(config: RunConfig) -> Result<()> {
    // The signal streams live as long as the loop: a signal that comes while a reload runs is
    // kept, and stops the reload too.
    let mut signals = Signals::new()?;
    serve(config, async move { signals.next().await }).await
}

/// Serves until `stop` resolves, then drains: what `run` does, with the stop in the caller's
/// hands (tests run the whole serve loop in process).
pub async fn serve(mut config: RunConfig, stop: impl Future<Output = ()>) -> Result<()> {
    let bounds = config.bounds.resolve(raise_open_files_limit());
    info!(
        tcp_connections = bounds.tcp_connections,
        tcp_connections_per_listener = bounds.tcp_connections_per_listener,
        udp_flows = bounds.udp_flows,
        udp_flows_per_listener = bounds.udp_flows_per_listener,
        ingress_connections = bounds.ingress_connections,
        ingress_connections_per_listener = bounds.ingress_connections_per_listener,
        dns_tcp_connections = bounds.dns_tcp_connections,
        "bounds"
    );
    config.l4.tcp_connections = bounds.tcp_connections;
    config.l4.tcp_connections_per_listener = bounds.tcp_connections_per_listener;
    config.l4.udp_flows = bounds.udp_flows;
    config.l4.udp_flows_per_listener = bounds.udp_flows_per_listener;
    config.l4.node.clone_from(&config.plan.local_node);
    let (trigger, drain) = drain::channel();
    let mut registry = Registry::default();
    let l4_metrics = Arc::new(L4Metrics::register(&mut registry));
    let l7_metrics = Arc::new(L7Metrics::register(&mut registry));
    let dns_metrics = Arc::new(portico_dns::metrics::Metrics::register(&mut registry));
    let metrics = ReloadMetrics::register(&mut registry);
    let health_checks = Arc::new(HealthChecks::new(
        config.plan.local_node.clone(),
        drain.clone(),
        registry.sub_registry_with_prefix("portico_healthcheck"),
    ));
    let admin_listener =
        TcpListener::bind(config.admin).await.with_context(|| format!("admin address {}", config.admin))?;
    let mut status = None;
    let mut objects = match &config.cluster {
        None => {
            let (watcher, changes) = Watcher::start(&config.manifests, config.debounce)
                .with_context(|| format!("watching {:?}", config.manifests))?;
            Objects::Files { _watcher: watcher, changes }
        }
        Some(cluster) => {
            let client = portico_source::cluster::client(cluster.kubeconfig.as_deref()).await?;
            // The CA is needed only where meshed Pods are captured.
            if config.roles.agent && config.mesh.pod_netns.is_some() {
                shared_mesh_ca(&client, cluster, &mut config.mesh).await;
            }
            status = Some(StatusWriting::start(
                client.clone(),
                cluster,
                &config,
                registry.sub_registry_with_prefix("portico_status"),
            ));
            // Without the mesh's capture, a node needs only its own Pods.
            let mesh = config.roles.agent && config.mesh.pod_netns.is_some();
            let node = (!mesh).then_some(config.plan.local_node.as_str());
            let (cluster, snapshots) = Cluster::start_with(client, node);
            Objects::Cluster { _cluster: cluster, snapshots }
        }
    };
    let allocations = match &config.state {
        Some(dir) => state::load(dir)?,
        None => Allocations::default(),
    };
    let access_log = config.access_log.as_ref().map(AccessLogTarget::open).transpose()?;
    if let Some(log) = &access_log {
        tokio::spawn(flush_every_second(Arc::clone(log)));
    }
    let ingress = IngressProxy::new(
        L7Options {
            access_log: access_log.clone(),
            http1: config.http1,
            connections: bounds.ingress_connections,
            connections_per_listener: bounds.ingress_connections_per_listener,
            ..L7Options::default()
        },
        l7_metrics,
        drain.clone(),
    )?;
    let agent = config.roles.agent;
    let pods = (agent && config.echo_pods).then(|| Arc::new(LocalPods::new(config.plan.local_node.clone())));
    let mut planes: Vec<Arc<dyn DataPlane>> = Vec::new();
    planes.extend(pods.iter().map(|p| Arc::clone(p) as _));
    if agent {
        let agent_planes = AgentPlanes { l4: l4_metrics, dns: dns_metrics, health_checks };
        planes.extend(agent_planes.start(&config, &bounds, &drain, &mut registry).await?);
    }
    if config.roles.ingress {
        planes.push(Arc::new(ingress));
    }
    let admin = Arc::new(Admin::new(registry, planes.clone(), drain));
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, Arc::clone(&admin), until(admin_stopped)));
    let mut server = Server {
        config,
        planes,
        pods,
        access_log,
        admin,
        metrics,
        loader: Loader::default(),
        locator: Default::default(),
        logged: HashSet::new(),
        allocations,
        generation: 0,
        status,
    };
    tokio::pin!(stop);
    // Files are read at once; the API server's objects once every kind is listed.
    let first = match &mut objects {
        Objects::Files { .. } => Some(None),
        Objects::Cluster { .. } => {
            info!("listing the API server's objects");
            tokio::select! {
                first = objects.next() => first,
                () = stop.as_mut() => return server.stop(trigger, stop_admin, admin_task).await,
            }
        }
    };
    let Some(first) = first else {
        error!("the source stopped before the first plan");
        return server.stop(trigger, stop_admin, admin_task).await;
    };
    tokio::select! {
        served = server.reload(first) => {
            if let Some(plan) = served {
                print_entry_points(&plan, &server.config);
            }
        }
        () = stop.as_mut() => return server.stop(trigger, stop_admin, admin_task).await,
    }
    loop {
        let next = tokio::select! {
            next = objects.next() => next,
            () = stop.as_mut() => break,
        };
        let Some(next) = next else {
            error!("the source stopped; serving the last plan until told to stop");
            stop.as_mut().await;
            break;
        };
        tokio::select! {
            _ = server.reload(next) => {}
            () = stop.as_mut() => break,
        }
    }
    server.stop(trigger, stop_admin, admin_task).await
}

/// What the node agent's data planes share with the rest of the process.
struct AgentPlanes {
    l4: Arc<L4Metrics>,
    dns: Arc<portico_dns::metrics::Metrics>,
    health_checks: Arc<HealthChecks>,
}

impl AgentPlanes {
    /// The node agent's data planes, in the order each Plan reaches them: Services (userspace
    /// or nftables), health-check ports, the announcer, cluster DNS, the mesh's node proxy.
    async fn start(
        self,
        config: &RunConfig,
        bounds: &crate::bounds::Resolved,
        drain: &drain::Watch,
        registry: &mut Registry,
    ) -> Result<Vec<Arc<dyn DataPlane>>> {
        let services: Arc<dyn DataPlane> = match config.proxy_mode {
            ProxyMode::Userspace => Arc::new(L4Proxy::new(config.l4.clone(), self.l4, drain.clone())),
            ProxyMode::Nftables => Arc::new(KernelProxy::new(
                KernelOptions {
                    node: config.plan.local_node.clone(),
                    compile: CompileOptions::default(),
                    sync_period: config.nft_sync_period,
                    writer: match config.nft_writer {
                        NftWriter::Netlink => WriterKind::Netlink,
                        NftWriter::Nft => WriterKind::Nft,
                    },
                },
                drain,
                registry.sub_registry_with_prefix("portico_nftables"),
            )),
        };
        let mut planes: Vec<Arc<dyn DataPlane>> = vec![services, self.health_checks];
        if let Some(port) = config.announce {
            let options = AnnounceOptions {
                node: config.plan.local_node.clone(),
                port,
                interval: Duration::from_millis(100),
                timing: Timing::default(),
            };
            let registry = registry.sub_registry_with_prefix("portico_announce");
            let announcer = Announcer::start(options, drain, registry)
                .await
                .with_context(|| format!("announcing: the heartbeat port {port} cannot be opened"))?;
            planes.push(Arc::new(announcer));
        }
        if let Some(addr) = config.dns {
            planes.push(start_dns(config, addr, bounds.dns_tcp_connections, self.dns, drain.clone()).await?);
        }
        let mesh = MeshOptions {
            node: config.plan.local_node.clone(),
            pod_netns: config.mesh.pod_netns.clone(),
            ca_dir: config.mesh.ca.clone(),
            cert_lifetime: config.mesh.cert_lifetime,
            ports: ProxyPorts::default(),
            connections: bounds.tcp_connections,
            connections_per_listener: bounds.tcp_connections_per_listener,
            idle: config.l4.tcp_idle,
        };
        planes.push(Arc::new(Mesh::new(
            mesh,
            drain.clone(),
            registry.sub_registry_with_prefix("portico_mesh"),
        )));
        Ok(planes)
    }
}

/// In a cluster, the mesh CA every agent shares: the Secret's files copied into the CA folder
/// (the Secret made first when there is none). When that cannot be done the mesh has no CA
/// and says so, rather than making one of its own that no other node trusts.
async fn shared_mesh_ca(
    client: &portico_source::cluster::Client,
    cluster: &ClusterConfig,
    mesh: &mut MeshConfig,
) {
    let (Some(name), Some(dir)) = (mesh.ca_secret.clone(), mesh.ca.clone()) else { return };
    let make = || {
        let files = portico_mesh::authority::new_files()?;
        Ok(files.into_iter().map(|(name, text)| (name.to_owned(), text.into_bytes())).collect())
    };
    let namespace = &cluster.lease_namespace;
    // The API server may not answer yet while the node starts: a few tries, 2 s apart.
    let mut shared = portico_status::secret::shared_secret(client.clone(), namespace, &name, make).await;
    for _ in 1..5 {
        let Err(err) = &shared else { break };
        warn!(secret = %name, %err, "mesh: the shared CA; trying again");
        tokio::time::sleep(Duration::from_secs(2)).await;
        shared = portico_status::secret::shared_secret(client.clone(), namespace, &name, make).await;
    }
    let stored = shared
        .map_err(|e| e.to_string())
        .and_then(|files| portico_mesh::authority::store(&dir, &files).map_err(|e| e.to_string()));
    match stored {
        Ok(()) => info!(secret = %name, dir = %dir.display(), "mesh: the shared CA is in place"),
        Err(err) => {
            error!(secret = %name, %err, "mesh: the shared CA cannot be had; meshed Pods are not served");
            mesh.ca = None;
        }
    }
}

/// Raises the soft limit on open files to the hard one, as nginx and HAProxy do: every
/// connection, UDP flow and listener is a descriptor. Says which limit is in force, and returns it.
fn raise_open_files_limit() -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => {
            info!(limit = now, raised_from = before, "open files");
            now
        }
        Err(err) => {
            warn!(limit = before, %err, "open files: the limit could not be raised");
            before
        }
    }
}

/// SIGINT and SIGTERM, each listened for from start to end.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

impl Server {
    /// Stops serving: the drain closes every data plane's listeners and gives open
    /// connections the drain time, then the Pods and the admin endpoints stop.
    async fn stop(
        self,
        trigger: drain::Trigger,
        stop_admin: watch::Sender<bool>,
        admin: tokio::task::JoinHandle<std::io::Result<()>>,
    ) -> Result<()> {
        info!(drain = ?self.config.drain, "shutting down");
        let left = trigger.drain(self.config.drain).await;
        if left > 0 {
            warn!(connections = left, "the drain time is over; closing what is still open");
        }
        if let Some(log) = &self.access_log {
            log.flush();
        }
        if let Some(pods) = &self.pods {
            pods.stop_all().await;
        }
        if let Some(status) = self.status {
            drop(status.writer);
            // An API server that does not answer does not hold up the stop: the Lease then
            // passes after its duration.
            let _ = tokio::time::timeout(Duration::from_secs(2), status.election.release()).await;
        }
        let _ = stop_admin.send(true);
        let _ = admin.await;
        Ok(())
    }
}

/// Binds cluster DNS as `config` says (UDP and TCP; one UDP socket per worker thread) and
/// serves it; it answers SERVFAIL until the first Plan.
async fn start_dns(
    config: &RunConfig,
    addr: SocketAddr,
    tcp_connections: usize,
    metrics: Arc<portico_dns::metrics::Metrics>,
    drain: drain::Watch,
) -> Result<Arc<DnsServer>> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let (udp, tcp) = portico_dns::bind(addr, workers).await.with_context(|| format!("DNS address {addr}"))?;
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams = if config.dns_upstreams.is_empty() {
        portico_dns::forward::resolv_conf_servers(&resolv_conf, Some(addr))
    } else {
        config.dns_upstreams.clone()
    };
    info!(?upstreams, "cluster DNS forwards other names");
    let search = config.dns_autopath.then(|| portico_dns::search::resolv_conf_domains(&resolv_conf));
    let options = portico_dns::Options {
        upstreams,
        query_log: config.dns_query_log,
        search,
        ttl: config.dns_ttl,
        tcp_connections,
        ..portico_dns::Options::default()
    };
    let dns = DnsServer::new(options, metrics, drain);
    tokio::spawn(Arc::clone(&dns).serve_tcp(tcp));
    for socket in udp {
        let task = tokio::spawn(Arc::clone(&dns).serve_udp(socket));
        tokio::spawn(async move {
            if let Ok(Err(err)) = task.await {
                error!(%addr, %err, "cluster DNS over UDP stopped serving");
            }
        });
    }
    info!(%addr, "cluster DNS listening");
    Ok(dns)
}

async fn flush_every_second(log: Arc<AccessLog>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        log.flush();
    }
}

async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

impl Server {
    /// Loads, plans and applies; a broken object keeps its last good version. Returns the
    /// plan now served (`None` only if planning itself failed before any plan was served).
    async fn reload(&mut self, snapshot: Option<Snapshot>) -> Option<Arc<Plan>> {
        self.generation += 1;
        let span = info_span!("reload", generation = self.generation);
        self.apply(snapshot).instrument(span).await
    }

    /// Plans the API server's `snapshot`, or, without one, the manifests read again.
    async fn apply(&mut self, snapshot: Option<Snapshot>) -> Option<Arc<Plan>> {
        // Loading and planning run off the async thread: with one core the proxies keep
        // answering while ten thousand objects are planned.
        let mut loader = std::mem::take(&mut self.loader);
        let mut locator = std::mem::take(&mut self.locator);
        let (manifests, config) = (self.config.manifests.clone(), self.config.plan.clone());
        let (mut previous, generation) = (self.allocations.clone(), self.generation);
        let scope = self.status.as_ref().map(|s| s.scope.clone());
        let work = tokio::task::spawn_blocking(move || {
            let from_api;
            let (store, mut diagnostics) = match snapshot {
                Some(snapshot) => {
                    from_api = snapshot.store;
                    // Every replica plans from the addresses the API server holds (the status
                    // writer's decisions), so that all of them serve the same ones.
                    previous.load_balancer_ips =
                        portico_plan::lb::observed(&from_api, config.load_balancer_class_only);
                    (&from_api, snapshot.diagnostics)
                }
                None => loader.load(&manifests),
            };
            let planned = pipeline::plan(store, &config, &previous, generation);
            diagnostics.extend(planned.diagnostics);
            let batch = scope.map(|scope| Batch {
                statuses: portico_status::statuses(store, &planned.plan, &scope),
                notes: portico_status::notes(store, &planned.plan, &diagnostics, &scope),
            });
            locator.locate(&mut diagnostics);
            (loader, locator, diagnostics, planned.plan, planned.allocations, batch)
        });
        let (loader, locator, mut diagnostics, plan, allocations, batch) = match work.await {
            Ok(done) => done,
            Err(err) => {
                // A panic in the planner is a bug; what was served stays served.
                error!(%err, "reload failed; the previous plan stays");
                self.metrics.failures.inc();
                return self.admin.plan.load_full();
            }
        };
        self.loader = loader;
        self.locator = locator;
        self.metrics.files_parsed.inc_by(self.loader.reparsed() as u64);
        if allocations != self.allocations {
            match self.config.state.as_deref().map_or(Ok(()), |dir| state::save(dir, &allocations)) {
                Ok(()) => self.allocations = allocations,
                Err(err) => diagnostics.push(Diagnostic::error(format!("allocations not saved: {err:#}"))),
            }
        }
        if let (Some(status), Some(batch)) = (&self.status, batch) {
            status.writer.update(batch);
        }
        let plan = Arc::new(plan);
        for plane in &self.planes {
            let span = info_span!("apply", plane = plane.name());
            diagnostics.extend(plane.apply(&plan).instrument(span).await);
        }
        self.report(&diagnostics);
        let previous = self.admin.plan.swap(Some(Arc::clone(&plan)));
        // The last reference to a large old plan may be this one: free it off the async thread.
        drop(tokio::task::spawn_blocking(move || drop(previous)));
        Some(plan)
    }

    /// Logs the diagnostics that are new since the last reload (the others were logged then:
    /// ten thousand warnings are not logged again for a one-line edit), and counts them all.
    fn report(&mut self, diagnostics: &[Diagnostic]) {
        let count = |s: Severity| diagnostics.iter().filter(|d| d.severity == s).count();
        let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
        let hasher = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default();
        let mut logged = HashSet::with_capacity(diagnostics.len());
        for d in diagnostics {
            let text = d.to_string();
            let key = std::hash::BuildHasher::hash_one(&hasher, &text);
            if logged.insert(key) && !self.logged.contains(&key) {
                match d.severity {
                    Severity::Error => warn!("{text}"),
                    Severity::Warning => info!("{text}"),
                }
            }
        }
        let new = logged.difference(&self.logged).count();
        self.logged = logged;
        self.metrics.generation.set(i64::try_from(self.generation).unwrap_or(i64::MAX));
        self.metrics.reloads.inc();
        if errors > 0 {
            self.metrics.failures.inc();
        }
        for (severity, n) in [("error", errors), ("warning", warnings)] {
            self.metrics
                .diagnostics
                .get_or_create(&SeverityLabel { severity: severity.into() })
                .set(n as i64);
        }
        info!(errors, warnings, new, "plan applied");
    }
}

/// One `curl` per Ingress rule: `--resolve` points the rule's host at the listener, so
/// that both the Host header and TLS SNI are the rule's.
fn ingress_entry_points(plan: &Plan) -> Vec<(String, String)> {
    let (http, https) = (plan.ingress_addresses.http, plan.ingress_addresses.https);
    let mut out = Vec::new();
    for (rule_host, vhost) in plan.ingress.virtual_hosts() {
        // A name a wildcard rule matches: one label in front of its suffix.
        let host = match rule_host {
            RuleHost::Exact(name) => Some(name.to_owned()),
            RuleHost::Wildcard(suffix) => Some(format!("any.{suffix}")),
            RuleHost::Any => None,
        };
        for route in vhost.routes.iter().filter(|r| r.kind != PathKind::Regex) {
            let listener = if vhost.tls { https } else { http };
            let scheme = if vhost.tls { "https" } else { "http" };
            let command = match &host {
                Some(host) => format!(
                    "curl{} --resolve {host}:{}:{} {scheme}://{host}:{}{}",
                    if vhost.tls { " -k" } else { "" },
                    listener.port(),
                    listener.ip(),
                    listener.port(),
                    route.path
                ),
                None => format!("curl {scheme}://{listener}{}", route.path),
            };
            out.push((command, format!("Ingress {}", route.ingress)));
        }
    }
    out
}

/// Most entry-point lines printed; `portico explain` lists them all.
const MAX_ENTRY_POINTS: usize = 40;

/// The lines a person can paste to reach each workload, printed once serving starts.
fn print_entry_points(plan: &Plan, config: &RunConfig) {
    let manifests: Vec<String> = config.manifests.iter().map(|p| p.display().to_string()).collect();
    let source = match config.cluster {
        Some(_) => "the API server's objects".to_owned(),
        None => manifests.join(", "),
    };
    println!("portico is serving {source} (admin: http://{}/plan)", config.admin);
    let mut lines = Vec::new();
    let mut later = Vec::new();
    for row in exposures(plan) {
        let object = row.object.to_string();
        match (row.method, row.layer) {
            (Method::Ingress, _) => {}
            (_, Layer::Dns) => match config.dns {
                Some(dns) => {
                    for name in &row.addresses {
                        // ExternalName rows read `name → CNAME target`.
                        let name = name.split(' ').next().unwrap_or(name);
                        let command = format!("dig @{} -p {} {name}", dns.ip(), dns.port());
                        lines.push((format!("{:?}", row.method), command, object.clone()));
                    }
                }
                None => {
                    later.push(format!("{object} ({:?}): a DNS name; cluster DNS is off (--dns)", row.method))
                }
            },
            _ => {
                for address in &row.addresses {
                    for port in &row.ports {
                        let (number, protocol) = port.split_once('/').unwrap_or((port, "TCP"));
                        let host = match address.parse::<IpAddr>() {
                            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                            _ => address.clone(),
                        };
                        let command = if protocol.starts_with(&Protocol::Udp.to_string()) {
                            format!("echo hello | nc -u -w1 {address} {number}")
                        } else {
                            format!("curl http://{host}:{number}/")
                        };
                        lines.push((format!("{:?}", row.method), command, object.clone()));
                    }
                }
            }
        }
    }
    lines.extend(ingress_entry_points(plan).into_iter().map(|(c, o)| ("Ingress".to_owned(), c, o)));
    if lines.is_empty() && later.is_empty() {
        println!(
            "  nothing is exposed yet: save a Service, Ingress or Pod with a hostPort under {} and it is served at once (`portico check` says what is wrong with a manifest)",
            manifests.join(", ")
        );
    }
    let total = lines.len();
    for (method, command, object) in lines.into_iter().take(MAX_ENTRY_POINTS) {
        println!("  {method:<13} {command:<48} # {object}");
    }
    if total > MAX_ENTRY_POINTS {
        println!(
            "  … and {} more: `portico explain {}` lists them all",
            total - MAX_ENTRY_POINTS,
            manifests.join(" ")
        );
    }
    later.dedup();
    for line in later {
        println!("  {line}");
    }
}
