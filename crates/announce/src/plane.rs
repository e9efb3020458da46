//! The announcer as the serve loop sees it: a `DataPlane` that keeps, on this node, the
//! LoadBalancer addresses the Plan's ranking and the live nodes give it. Node agents tell
//! each other they are alive with a UDP heartbeat (`portico-heartbeat NODE`) every
//! `interval` to every address of every other node; every `interval` the agent works out its
//! addresses again, answers ARP and NDP for them, and announces those it takes over.
//!
//! The heartbeat carries no secret: anyone on the LAN who can send datagrams to the port can
//! pretend a node is alive. It runs on the cluster's node network, as MetalLB's memberlist
//! does without its optional key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portico_dataplane::drain::Watch;
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_plan::Plan;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::UdpSocket;
use tracing::{info, warn};

use crate::election::{Duty, mine};
use crate::link::{Link, Responder, links};
use crate::liveness::{Membership, Timing};

/// What a heartbeat starts with.
const HEARTBEAT: &str = "portico-heartbeat ";

/// How the announcer runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// This node's name.
    pub node: String,
    /// The UDP port heartbeats go to and are heard on, on every node.
    pub port: u16,
    /// How often heartbeats go out and addresses are worked out again.
    pub interval: Duration,
    /// When a silent peer is dead, and a returning one alive.
    pub timing: Timing,
}

/// Labels of an announced address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    address: String,
    interface: String,
}

/// Prometheus handles.
struct Metrics {
    announced: Gauge,
    takeovers: Counter,
    /// 1 for each address this node announces, by interface; gone when released.
    announcing: Family<AddressLabels, Gauge>,
}

/// What the tasks share.
struct Shared {
    options: Options,
    /// When this agent started: it announces nothing for `settle`, the time the others take
    /// to count it alive again and give back the addresses it is first for.
    started: Instant,
    plan: Mutex<Option<Arc<Plan>>>,
    members: Mutex<Membership>,
    responders: Mutex<BTreeMap<String, Responder>>,
    /// Why the last attempt to open an interface failed, for readiness.
    problem: Mutex<Option<String>>,
    applied: AtomicBool,
    metrics: Metrics,
}

/// The announcer (`DataPlane` "announce").
pub struct Announcer {
    shared: Arc<Shared>,
}

impl Announcer {
    /// Starts heartbeats and the periodic election; announces nothing until a Plan comes.
    pub async fn start(options: Options, drain: &Watch, registry: &mut Registry) -> std::io::Result<Self> {
        // Both families on one socket; IPv4 alone where IPv6 is off.
        let socket =
            match UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), options.port)).await {
                Ok(socket) => socket,
                Err(_) => {
                    UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), options.port)).await?
                }
            };
        let socket = Arc::new(socket);
        let metrics = Metrics {
            announced: Gauge::default(),
            takeovers: Counter::default(),
            announcing: Family::default(),
        };
        registry.register(
            "announcing",
            "1 for each LoadBalancer address this node announces, and the interface",
            metrics.announcing.clone(),
        );
        registry.register(
            "addresses",
            "LoadBalancer addresses this node announces",
            metrics.announced.clone(),
        );
        registry.register(
            "takeovers",
            "LoadBalancer addresses this node took over",
            metrics.takeovers.clone(),
        );
        let shared = Arc::new(Shared {
            started: Instant::now(),
            members: Mutex::new(Membership::new([], Instant::now(), options.timing)),
            options,
            plan: Mutex::new(None),
            responders: Mutex::new(BTreeMap::new()),
            problem: Mutex::new(None),
            applied: AtomicBool::new(false),
            metrics,
        });
        tokio::spawn(listen(Arc::clone(&shared), Arc::clone(&socket), drain.signaled()));
        tokio::spawn(beat(Arc::clone(&shared), socket, drain.signaled()));
        Ok(Announcer { shared })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hears heartbeats until drained.
async fn listen(shared: Arc<Shared>, socket: Arc<UdpSocket>, stop: impl std::future::Future<Output = ()>) {
    let mut buffer = [0u8; 512];
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            read = socket.recv_from(&mut buffer) => {
                let Ok((len, _)) = read else { continue };
                let Some(node) = std::str::from_utf8(&buffer[..len]).ok().and_then(|t| t.strip_prefix(HEARTBEAT)) else { continue };
                lock(&shared.members).heard(node.trim(), Instant::now());
            }
        }
    }
}

/// Sends heartbeats and works out this node's addresses every interval, until drained; then
/// gives every address up.
async fn beat(shared: Arc<Shared>, socket: Arc<UdpSocket>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(shared.options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let plan = lock(&shared.plan).clone();
        let Some(plan) = plan else { continue };
        let message = format!("{HEARTBEAT}{}", shared.options.node);
        let dual = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        for node in plan.nodes.iter().filter(|n| n.name != shared.options.node) {
            for address in &node.addresses {
                let to = match (dual, address) {
                    // An IPv4 peer reached from the dual-stack socket, as the kernel names it.
                    (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                    (false, IpAddr::V6(_)) => continue,
                    (_, other) => *other,
                };
                let _ = socket.send_to(message.as_bytes(), SocketAddr::new(to, shared.options.port)).await;
            }
        }
        let keep = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || elect(&keep, &plan)).await;
    }
    lock(&shared.responders).clear();
}

/// Works out this node's addresses and puts them on its interfaces.
fn elect(shared: &Shared, plan: &Plan) {
    // Nothing to announce and nothing announced: no interface to look at.
    if plan.announcements.is_empty() && lock(&shared.responders).is_empty() {
        *lock(&shared.problem) = None;
        return;
    }
    let now = Instant::now();
    let settling = now.saturating_duration_since(shared.started) < shared.options.timing.settle;
    let duties: Vec<Duty> = match settling {
        // A restarted agent would otherwise answer at once for addresses another node still
        // holds, and clients would flip between the two.
        true => Vec::new(),
        false => {
            let alive: BTreeSet<String> = lock(&shared.members).alive(now).into_iter().collect();
            mine(&plan.announcements, &shared.options.node, |n| alive.contains(n))
        }
    };
    let available = if duties.is_empty() { Vec::new() } else { links() };
    let mut wanted: BTreeMap<String, (Link, BTreeSet<IpAddr>)> = BTreeMap::new();
    for duty in &duties {
        for link in available
            .iter()
            .filter(|l| duty.interfaces.is_empty() || duty.interfaces.iter().any(|i| i == l.name()))
        {
            wanted
                .entry(link.name().to_owned())
                .or_insert_with(|| (link.clone(), BTreeSet::new()))
                .1
                .insert(duty.address);
        }
    }
    let mut responders = lock(&shared.responders);
    responders.retain(|name, responder| {
        let keep = wanted.contains_key(name);
        if !keep {
            for released in responder.addresses() {
                info!(address = %released, interface = %name, "LoadBalancer address released");
                let labels = AddressLabels { address: released.to_string(), interface: name.clone() };
                shared.metrics.announcing.remove(&labels);
            }
            let _ = responder.set(BTreeSet::new());
        }
        keep
    });
    let mut problem = None;
    for (name, (link, addresses)) in wanted {
        if !responders.contains_key(&name) {
            match Responder::start(link) {
                Ok(responder) => {
                    responders.insert(name.clone(), responder);
                }
                Err(error) => {
                    problem = Some(format!("interface {name} cannot announce: {error}"));
                    continue;
                }
            }
        }
        let Some(responder) = responders.get(&name) else { continue };
        let before = responder.addresses();
        let labels =
            |address: &IpAddr| AddressLabels { address: address.to_string(), interface: name.clone() };
        for taken in addresses.difference(&before) {
            info!(address = %taken, interface = %name, "LoadBalancer address taken over");
            shared.metrics.takeovers.inc();
            shared.metrics.announcing.get_or_create(&labels(taken)).set(1);
        }
        for released in before.difference(&addresses) {
            info!(address = %released, interface = %name, "LoadBalancer address released");
            shared.metrics.announcing.remove(&labels(released));
        }
        if let Err(error) = responder.set(addresses) {
            problem = Some(format!("interface {name}: {error}"));
        }
    }
    shared.metrics.announced.set(i64::try_from(duties.len()).unwrap_or(i64::MAX));
    if let Some(problem) = &problem {
        warn!(%problem, "announcing LoadBalancer addresses");
    }
    *lock(&shared.problem) = problem;
}

impl DataPlane for Announcer {
    fn name(&self) -> &'static str {
        "announce"
    }

    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        Box::pin(async move {
            let peers: Vec<&str> = plan
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .filter(|n| *n != self.shared.options.node)
                .collect();
            lock(&self.shared.members).set_peers(peers, Instant::now());
            *lock(&self.shared.plan) = Some(Arc::clone(plan));
            self.shared.applied.store(true, Ordering::Release);
            Vec::new()
        })
    }

    fn readiness(&self) -> Readiness {
        match lock(&self.shared.problem).clone() {
            Some(problem) => Readiness::NotReady(problem),
            None => Readiness::after_first_plan(self.shared.applied.load(Ordering::Acquire)),
        }
    }
}
