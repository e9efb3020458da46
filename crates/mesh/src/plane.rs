//! The mesh as a data plane: the node proxy of this node's meshed Pods. For each, it enters
//! the Pod's network namespace, puts the capture in, and listens there on the outbound, inbound
//! and tunnel ports, as ztunnel does for the Pods of its node; leaves are issued per identity
//! and renewed in the background. A Pod that leaves the mesh gets its capture taken out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use portico_accept::{Counters, Limits};
use portico_dataplane::drain::Watch;
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_kernel::capture::{ProxyPorts, capture};
use portico_kernel::{Applier, DiffOptions, NetlinkNft, Ruleset};
use portico_model::{Diagnostic, ObjectKey, ObjectRef};
use portico_plan::Plan;
use portico_plan::mesh::PortRange;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::authority;
use crate::certs::Certificates;
use crate::inbound;
use crate::metrics::Metrics;
use crate::netns::{self, PodNetns};
use crate::outbound;
use crate::shared::{Served, Shared};
use crate::table::{Local, table};
use crate::tunnel::Pool;

/// How the node proxy runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// This node's name: the meshed Pods on it are served here.
    pub node: String,
    /// Where a Pod's network namespace is: a path with `{namespace}` and `{name}` standing for
    /// the Pod's, or a folder whose namespaces are searched for the one holding the Pod's address;
    /// `None` where Pods have none Portico can enter (standalone).
    pub pod_netns: Option<String>,
    /// The CA folder ([`authority`]).
    pub ca_dir: Option<PathBuf>,
    /// How long a workload certificate is good for.
    pub cert_lifetime: Duration,
    /// The proxy's ports inside each Pod.
    pub ports: ProxyPorts,
    /// How many connections the proxy's listeners hold in all (plain and tunnels).
    pub connections: usize,
    /// How many each listener holds.
    pub connections_per_listener: usize,
    /// How long a relayed connection may pass no byte.
    pub idle: Duration,
}

/// The node proxy.
pub struct Mesh {
    inner: Arc<Inner>,
    retry: JoinHandle<()>,
}

/// What the data plane and its background tasks share.
struct Inner {
    options: Options,
    shared: Arc<Shared>,
    pods: tokio::sync::Mutex<HashMap<ObjectKey, Pod>>,
    readiness: Mutex<Readiness>,
    renewal: OnceLock<JoinHandle<()>>,
}

/// How often meshed Pods that could not be captured are tried again (their namespace may not
/// be there yet).
const RETRY: Duration = Duration::from_secs(2);

/// One served Pod.
struct Pod {
    served: Arc<Served>,
    capture: (Vec<PortRange>, Vec<PortRange>),
    applier: Option<Applier<NetlinkNft>>,
    loops: Vec<JoinHandle<()>>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for task in &self.loops {
            task.abort();
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.retry.abort();
        if let Some(renewal) = self.inner.renewal.get() {
            renewal.abort();
        }
    }
}

impl Mesh {
    /// A node proxy serving nothing yet; metrics in `registry`. Starts a task, so it is made
    /// inside the runtime.
    pub fn new(options: Options, drain: Watch, registry: &mut Registry) -> Self {
        let shared = Shared {
            ports: options.ports,
            table: ArcSwap::default(),
            certs: OnceLock::new(),
            pool: Pool::default(),
            metrics: Metrics::register(registry),
            drain,
            limits: Limits::new(
                "mesh",
                options.connections,
                options.connections_per_listener,
                Counters::register(registry),
            ),
            idle: options.idle,
        };
        let inner = Arc::new(Inner {
            options,
            shared: Arc::new(shared),
            pods: tokio::sync::Mutex::new(HashMap::new()),
            readiness: Mutex::new(Readiness::NotReady("no plan applied yet".into())),
            renewal: OnceLock::new(),
        });
        let retry = tokio::spawn(retry(Arc::downgrade(&inner)));
        Mesh { inner, retry }
    }
}

/// Tries again, every [`RETRY`], to serve the meshed Pods not served yet, while the data plane
/// lives.
async fn retry(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(RETRY).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.shared.drain.is_draining() {
            return;
        }
        if !inner.readiness().is_ready() && inner.shared.certs.get().is_some() {
            inner.reconcile().await;
        }
    }
}

impl Inner {
    fn readiness(&self) -> Readiness {
        self.readiness.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_readiness(&self, readiness: Readiness) {
        *self.readiness.lock().unwrap_or_else(PoisonError::into_inner) = readiness;
    }

    /// Serves the meshed Pods of the table served, and only them; what could not be served.
    async fn reconcile(&self) -> Vec<Diagnostic> {
        let mut diagnostics = Vec::new();
        let wanted: HashMap<ObjectKey, Arc<Local>> =
            self.shared.table.load().local.iter().map(|(k, l)| (k.clone(), Arc::clone(l))).collect();
        let mut pods = self.pods.lock().await;
        let gone: Vec<ObjectKey> = pods
            .iter()
            .filter(|(key, pod)| {
                wanted.get(*key).is_none_or(|l| {
                    (l.workload.exclude_inbound.clone(), l.workload.exclude_outbound.clone()) != pod.capture
                        || l.workload.ips != pod.served.ips
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if let Some(pod) = pods.remove(&key) {
                release(pod).await;
            }
        }
        if wanted.is_empty() {
            self.set_readiness(Readiness::Ready);
            return diagnostics;
        }
        if self.options.pod_netns.is_none() {
            // Standalone: Pods run as this host's processes, with nothing to capture in.
            for key in wanted.keys() {
                let why = "Portico runs this Pod without a network namespace of its own, so its traffic is not captured here (`portico lab` runs Pods in their own)";
                diagnostics.push(
                    Diagnostic::warning(format!("meshed, but {why}")).on(ObjectRef::new("Pod", key.clone())),
                );
            }
            self.set_readiness(Readiness::Ready);
            return diagnostics;
        }
        if let Err(why) = self.certificates().await {
            self.set_readiness(Readiness::NotReady(format!("the mesh CA: {why}")));
            diagnostics.push(Diagnostic::error(format!("the mesh CA cannot be used: {why}")));
            return diagnostics;
        }
        let mut unserved = Vec::new();
        for (key, local) in &wanted {
            if pods.contains_key(key) {
                continue;
            }
            match self.serve(local).await {
                Ok(pod) => {
                    pods.insert(key.clone(), pod);
                }
                Err(why) => {
                    unserved.push(key.to_string());
                    diagnostics.push(
                        Diagnostic::warning(format!(
                            "meshed, but not captured on node {}: {why}",
                            self.options.node
                        ))
                        .on(ObjectRef::new("Pod", key.clone())),
                    );
                }
            }
        }
        self.set_readiness(match unserved.is_empty() {
            true => Readiness::Ready,
            false => Readiness::NotReady(format!("meshed Pods not captured: {}", unserved.join(", "))),
        });
        diagnostics
    }

    /// Loads the CA on first need, and starts renewing leaves.
    async fn certificates(&self) -> Result<(), String> {
        if self.shared.certs.get().is_some() {
            return Ok(());
        }
        let dir = self
            .options
            .ca_dir
            .clone()
            .ok_or("no folder for the mesh CA (--mesh-ca, or a --state folder)")?;
        let loaded = tokio::task::spawn_blocking(move || authority::load_or_create(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!(origin = ?loaded.origin, "mesh: the CA is loaded");
        let _ = self.shared.certs.set(Certificates::new(loaded.ca, self.options.cert_lifetime));
        let shared = Arc::clone(&self.shared);
        let _ = self.renewal.set(tokio::spawn(renew(shared)));
        Ok(())
    }

    /// The Pod's namespace: where the template puts it, or the one under the folder that holds
    /// the Pod's address.
    async fn pod_netns(&self, local: &Local) -> Result<(PathBuf, PodNetns), String> {
        let given = self.options.pod_netns.as_deref().unwrap_or_default();
        let pod = &local.workload.pod;
        if given.contains("{name}") {
            let path =
                PathBuf::from(given.replace("{namespace}", &pod.namespace).replace("{name}", &pod.name));
            let netns = PodNetns::open(&path)
                .map_err(|e| format!("its network namespace {}: {e}", path.display()))?;
            return Ok((path, netns));
        }
        let ip = *local.workload.ips.first().ok_or("no address yet, so its namespace cannot be found")?;
        let dir = PathBuf::from(given);
        match netns::find(&dir, ip).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(format!("no network namespace under {} holds its address {ip}", dir.display())),
            Err(e) => Err(format!("the network namespaces under {}: {e}", dir.display())),
        }
    }

    /// Serves `local` from its namespace: capture, then listeners.
    async fn serve(&self, local: &Local) -> Result<Pod, String> {
        let pod = &local.workload.pod;
        let (path, netns) = self.pod_netns(local).await?;
        let capture_of = (local.workload.exclude_inbound.clone(), local.workload.exclude_outbound.clone());
        let ruleset = capture(self.options.ports, &capture_of.0, &capture_of.1);
        let in_namespace = path.clone();
        let applier = tokio::task::spawn_blocking(move || {
            let nft = NetlinkNft::in_namespace(&in_namespace).map_err(|e| e.to_string())?;
            let mut applier = Applier::new(nft, DiffOptions::default());
            applier.sync(ruleset).map_err(|e| e.to_string())?;
            Ok::<_, String>(applier)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("its capture: {e}"))?;
        let served = Arc::new(Served { pod: pod.clone(), netns, ips: local.workload.ips.clone() });
        let mut loops = Vec::new();
        let ports = self.options.ports;
        let families: Vec<std::net::IpAddr> = [
            served.ips.iter().any(|ip| ip.is_ipv4()).then_some(std::net::Ipv4Addr::UNSPECIFIED.into()),
            served.ips.iter().any(|ip| ip.is_ipv6()).then_some(std::net::Ipv6Addr::UNSPECIFIED.into()),
        ]
        .into_iter()
        .flatten()
        .collect();
        for any in families {
            let listen = |port| {
                let netns = served.netns.clone();
                async move {
                    let at = std::net::SocketAddr::new(any, port);
                    netns.listen(at).await.map_err(|e| format!("listening on {at} in its namespace: {e}"))
                }
            };
            let (out, plain, tunnels) =
                (listen(ports.outbound).await?, listen(ports.inbound).await?, listen(ports.tunnel).await?);
            let shared = &self.shared;
            loops.push(tokio::spawn(outbound::serve(Arc::clone(shared), Arc::clone(&served), out)));
            loops.push(tokio::spawn(inbound::serve_plain(Arc::clone(shared), Arc::clone(&served), plain)));
            loops.push(tokio::spawn(inbound::serve_tunnels(
                Arc::clone(shared),
                Arc::clone(&served),
                tunnels,
            )));
        }
        tracing::info!(pod = %pod, identity = %local.identity, netns = %path.display(), "mesh: serving the Pod");
        Ok(Pod { served, capture: capture_of, applier: Some(applier), loops })
    }
}

/// Takes `pod`'s capture out of its namespace, if the namespace is still there.
async fn release(mut pod: Pod) {
    let Some(mut applier) = pod.applier.take() else { return };
    let key = pod.served.pod.clone();
    drop(pod);
    let removed = tokio::task::spawn_blocking(move || applier.sync(Ruleset::default())).await;
    if let Ok(Err(e)) = removed {
        tracing::debug!(pod = %key, error = %e, "mesh: the capture could not be taken out (the namespace may be gone)");
    }
}

/// Renews leaves as they come due, every second, until the drain.
async fn renew(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let drained = shared.drain.signaled();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => return,
            _ = tick.tick() => {}
        }
        let Some(certs) = shared.certs.get() else { continue };
        let serving: Vec<_> = shared.table.load().local.values().map(|l| l.identity.clone()).collect();
        match certs.renew(&serving, SystemTime::now()) {
            Ok(renewed) => {
                for (identity, until) in renewed {
                    shared.metrics.renewals.inc();
                    tracing::info!(%identity, until = ?until, "mesh: certificate renewed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "mesh: renewing a certificate failed; trying again"),
        }
        for (identity, until) in certs.held() {
            shared.metrics.expires(&identity.to_string(), until);
        }
    }
}

impl DataPlane for Mesh {
    fn name(&self) -> &'static str {
        "mesh"
    }

    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        Box::pin(async move {
            let (table, mut diagnostics) = table(plan, &self.inner.options.node);
            self.inner.shared.table.store(Arc::new(table));
            diagnostics.extend(self.inner.reconcile().await);
            diagnostics
        })
    }

    fn readiness(&self) -> Readiness {
        self.inner.readiness()
    }
}
