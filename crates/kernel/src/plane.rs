//! The kernel data plane as the serve loop sees it: each Plan compiled for this node and
//! synced by difference, UDP flows to gone endpoints deleted, and everything rewritten every
//! sync period so that rules deleted by hand come back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portico_dataplane::drain::Watch;
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_model::Diagnostic;
use portico_plan::Plan;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use crate::apply::{Applier, Nft, NftCommand, NftError, SyncKind, SyncReport};
use crate::compile::CompileOptions;
use crate::diff::DiffOptions;
use crate::incremental::{Change, Incremental};
use crate::netlink::NetlinkNft;
use crate::ruleset::Command;
use crate::stale::stale_udp_flows;

/// How the kernel data plane runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node whose rules these are.
    pub node: String,
    /// What the compiler may do beyond the Plan.
    pub compile: CompileOptions,
    /// How often everything is rewritten, repairing what was changed by hand.
    pub sync_period: Duration,
    /// How transactions reach the kernel.
    pub writer: WriterKind,
}

/// How transactions reach the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriterKind {
    /// nf_tables messages over netlink, from this process.
    #[default]
    Netlink,
    /// The `nft` program, given a script.
    Nft,
}

/// The writer a node agent uses, chosen at start.
#[derive(Debug)]
pub enum Writer {
    /// Over netlink.
    Netlink(NetlinkNft),
    /// Through `nft -f -`.
    Program(NftCommand),
}

impl Writer {
    /// The writer of `kind`, in this process's network namespace.
    pub fn new(kind: WriterKind) -> Self {
        match kind {
            WriterKind::Netlink => Writer::Netlink(NetlinkNft::new()),
            WriterKind::Nft => Writer::Program(NftCommand::system()),
        }
    }
}

impl Nft for Writer {
    fn run(&mut self, commands: &[Command<'_>]) -> Result<usize, NftError> {
        match self {
            Writer::Netlink(netlink) => netlink.run(commands),
            Writer::Program(program) => program.run(commands),
        }
    }
}

/// Labels of a sync.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    /// `diff`, `cold`, `resync` or `unchanged`.
    kind: &'static str,
    /// `ok` or `refused`.
    result: &'static str,
}

/// Prometheus handles of the kernel data plane.
struct Metrics {
    syncs: Family<SyncLabels, Counter>,
    seconds: Histogram,
    commands: Counter,
    conntrack_deleted: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            syncs: Family::default(),
            seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            commands: Counter::default(),
            conntrack_deleted: Counter::default(),
        };
        registry.register("syncs", "nftables syncs, by kind and result", metrics.syncs.clone());
        registry.register(
            "sync_seconds",
            "Time from a Plan to its rules in the kernel: compile, difference and nft",
            metrics.seconds.clone(),
        );
        registry.register("changes", "Chains and set elements written", metrics.commands.clone());
        registry.register(
            "conntrack_deleted",
            "UDP conntrack entries deleted because their endpoint is gone",
            metrics.conntrack_deleted.clone(),
        );
        metrics
    }

    fn count(&self, kind: SyncKind, ok: bool, report: Option<&SyncReport>, started: Instant) {
        let kind = match kind {
            SyncKind::Unchanged => "unchanged",
            SyncKind::Diff => "diff",
            SyncKind::Cold => "cold",
            SyncKind::Resync => "resync",
        };
        self.syncs.get_or_create(&SyncLabels { kind, result: if ok { "ok" } else { "refused" } }).inc();
        self.seconds.observe(started.elapsed().as_secs_f64());
        if let Some(report) = report {
            self.commands.inc_by((report.chains + report.elements) as u64);
        }
    }
}

/// What a sync works on; one sync at a time.
struct Kernel<N> {
    applier: Applier<N>,
    compiler: Incremental,
    /// The Plan whose rules are in the kernel.
    served: Option<Arc<Plan>>,
    /// Whether 127.0.0.1 may be DNAT-ed to a Pod here (`route_localnet`), set once needed.
    route_localnet: bool,
}

/// Lets connections from 127.0.0.1 to a HostPort be DNAT-ed to their Pod, as the CNI portmap
/// plugin does: the kernel drops packets from 127.0.0.0/8 routed off the node otherwise.
/// Whether it is on.
fn route_localnet() -> bool {
    const SYSCTL: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";
    if std::fs::read_to_string(SYSCTL).is_ok_and(|v| v.trim() == "1") {
        return true;
    }
    match std::fs::write(SYSCTL, "1") {
        Ok(()) => {
            info!("net.ipv4.conf.all.route_localnet set to 1, for HostPorts reached from 127.0.0.1");
            true
        }
        Err(error) => {
            warn!(%error, "net.ipv4.conf.all.route_localnet cannot be set: HostPorts are not reached from 127.0.0.1");
            false
        }
    }
}

/// What the plane and its repair task share.
struct Shared<N> {
    options: Options,
    kernel: Mutex<Kernel<N>>,
    /// Whether the last Plan's rules are in the kernel, or why not.
    state: Mutex<Option<Result<(), String>>>,
    metrics: Metrics,
}

/// The kernel data plane (`--proxy-mode nftables`): a `DataPlane` keeping this node's nftables
/// tables equal to what the Plan asks.
pub struct KernelProxy<N = Writer> {
    shared: Arc<Shared<N>>,
    applied: AtomicBool,
}

impl KernelProxy<Writer> {
    /// Syncs through `options.writer`, in this process's network namespace; repairs every
    /// `options.sync_period` until `drain` is signalled.
    pub fn new(options: Options, drain: &Watch, registry: &mut Registry) -> Self {
        KernelProxy::with_nft(Writer::new(options.writer), options, drain, registry)
    }
}

impl<N: Nft + Send + 'static> KernelProxy<N> {
    /// Syncs through `nft`.
    pub fn with_nft(nft: N, options: Options, drain: &Watch, registry: &mut Registry) -> Self {
        let shared = Arc::new(Shared {
            kernel: Mutex::new(Kernel {
                applier: Applier::new(nft, DiffOptions::default()),
                compiler: Incremental::new(options.node.clone(), options.compile.clone()),
                served: None,
                route_localnet: false,
            }),
            state: Mutex::new(None),
            metrics: Metrics::register(registry),
            options,
        });
        tokio::spawn(repair_every_period(Arc::clone(&shared), drain.signaled()));
        KernelProxy { shared, applied: AtomicBool::new(false) }
    }
}

impl<N> Shared<N> {
    fn set_state(&self, state: Result<(), String>) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }
}

impl<N: Nft> Shared<N> {
    /// Compiles what `plan` changes, syncs it, and deletes the UDP flows it leaves without an
    /// endpoint.
    fn sync(&self, plan: Arc<Plan>) -> Vec<Diagnostic> {
        let started = Instant::now();
        let node = &self.options.node;
        let mut guard = self.kernel.lock().unwrap_or_else(PoisonError::into_inner);
        let kernel = &mut *guard;
        let mut diagnostics = Vec::new();
        let change = kernel.compiler.update(&plan, kernel.applier.kernel());
        let compiled = started.elapsed();
        let (result, kind, services) = match change {
            Change::Unchanged => (Ok(SyncReport::default()), SyncKind::Unchanged, 0),
            Change::Full(compiled) => {
                diagnostics.extend(compiled.conflicts.iter().map(|(destination, conflict)| {
                    Diagnostic::warning(format!("{destination}: {conflict}; not served"))
                }));
                let kind = kernel.applier.next_kind();
                (kernel.applier.sync(compiled.ruleset), kind, plan.services.len())
            }
            Change::Parts { old, new, services } => {
                (kernel.applier.sync_parts(&old, new), SyncKind::Diff, services)
            }
        };
        match result {
            Ok(report) => {
                self.metrics.count(report.kind, true, Some(&report), started);
                info!(
                    generation = plan.generation,
                    kind = ?report.kind,
                    services,
                    chains = report.chains,
                    elements = report.elements,
                    bytes = report.bytes,
                    compiled = ?compiled,
                    elapsed = ?started.elapsed(),
                    "nftables synced"
                );
                let stale = stale_udp_flows(kernel.served.as_deref(), &plan, node);
                if !stale.is_empty() {
                    match crate::conntrack::delete(&stale) {
                        Ok(deleted) => {
                            self.metrics.conntrack_deleted.inc_by(deleted as u64);
                            debug!(deleted, filters = stale.len(), "stale UDP flows deleted");
                        }
                        Err(error) => warn!(%error, "stale UDP flows could not be deleted"),
                    }
                }
                if !kernel.route_localnet && plan.host_ports.iter().any(|h| &h.node == node) {
                    kernel.route_localnet = route_localnet();
                }
                kernel.served = Some(plan);
                self.set_state(Ok(()));
            }
            Err(error) => {
                kernel.compiler.forget();
                self.metrics.count(kind, false, None, started);
                let message =
                    format!("nftables rules not applied (retried at the next change or repair): {error}");
                diagnostics.push(Diagnostic::error(message.clone()));
                self.set_state(Err(message));
            }
        }
        diagnostics
    }

    /// Rewrites everything once, bringing back what was changed by hand.
    fn repair(&self) {
        let started = Instant::now();
        let mut kernel = self.kernel.lock().unwrap_or_else(PoisonError::into_inner);
        match kernel.applier.repair() {
            Ok(report) => {
                self.metrics.count(report.kind, true, Some(&report), started);
                debug!(chains = report.chains, elements = report.elements, elapsed = ?started.elapsed(), "nftables repaired");
                self.set_state(Ok(()));
            }
            Err(error) => {
                self.metrics.count(SyncKind::Resync, false, None, started);
                warn!(%error, "nftables repair refused");
                self.set_state(Err(format!("nftables repair refused: {error}")));
            }
        }
    }
}

async fn repair_every_period<N: Nft + Send + 'static>(
    shared: Arc<Shared<N>>,
    drain: impl Future<Output = ()> + Send + 'static,
) {
    let mut tick = tokio::time::interval(shared.options.sync_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tokio::pin!(drain);
    loop {
        tokio::select! {
            () = &mut drain => return,
            _ = tick.tick() => {}
        }
        let shared = Arc::clone(&shared);
        if tokio::task::spawn_blocking(move || shared.repair()).await.is_err() {
            warn!("the nftables repair stopped unexpectedly");
        }
    }
}

impl<N: Nft + Send + 'static> DataPlane for KernelProxy<N> {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        Box::pin(async move {
            let shared = Arc::clone(&self.shared);
            let plan = Arc::clone(plan);
            // nft runs as a process and a cold start of tens of thousands of Services takes
            // seconds: off the async workers.
            let diagnostics = match tokio::task::spawn_blocking(move || shared.sync(plan)).await {
                Ok(diagnostics) => diagnostics,
                Err(error) => vec![Diagnostic::error(format!("nftables sync stopped unexpectedly: {error}"))],
            };
            self.applied.store(true, Ordering::Release);
            diagnostics
        })
    }

    fn readiness(&self) -> Readiness {
        if !self.applied.load(Ordering::Acquire) {
            return Readiness::after_first_plan(false);
        }
        match &*self.shared.state.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(Err(why)) => Readiness::NotReady(why.clone()),
            _ => Readiness::Ready,
        }
    }
}
