//! UDP listeners: one flow per client address, each with its own socket towards the
//! chosen endpoint, forgotten after an idle timeout. Flows are bounded per listener and in
//! all: when full, the flow idle longest makes room.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use portico_accept::Throttle;

use crate::listener::{Ctx, Current, Slot};

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    /// Answers are received here, on the thread that relays them: a flow holds no buffer.
    static ANSWER: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_DATAGRAM].into_boxed_slice());
}

struct Flow {
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    /// When a datagram last went either way, in milliseconds since the listener opened.
    last: Arc<AtomicU64>,
    /// The task that relays the endpoint's answers; ending it ends the flow.
    replies: AbortHandle,
}

/// One listener's flows, by client address.
struct Flows {
    by_client: Mutex<HashMap<SocketAddr, Flow>>,
    /// When the listener opened: flows keep time in milliseconds since.
    opened: Instant,
}

impl Flows {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Flow>> {
        // A panic elsewhere leaves the map usable.
        self.by_client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Relays datagrams on `socket` until its task is aborted; its flows end with it.
pub(crate) async fn serve(socket: UdpSocket, slot: Arc<Slot>, ctx: Arc<Ctx>) {
    let socket = Arc::new(socket);
    let flows = Arc::new(Flows { by_client: Mutex::default(), opened: Instant::now() });
    // Aborted with the listener (and so dropped): the flows' tasks go with it, and their
    // sockets, so that the address can be taken again at once.
    let _end = EndFlows(Arc::clone(&flows));
    let drops = Throttle::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(err) => {
                // ICMP errors from earlier sends surface here on Linux; they concern one
                // client, not the listener.
                debug!(listener = %slot.key, %err, "receive failed");
                continue;
            }
        };
        let current = slot.current.load_full();
        if !current.frontend.admits(client.ip()) {
            continue;
        }
        let upstream = match flow_for(&flows, client, &current, &slot, &ctx, &socket).await {
            Ok(Some(upstream)) => upstream,
            Ok(None) => {
                current.counters(&slot.key, &ctx.metrics).no_endpoint.inc();
                continue;
            }
            Err(err) => {
                current.counters(&slot.key, &ctx.metrics).udp_dropped.inc();
                if let Some(dropped) = drops.note() {
                    warn!(listener = %slot.key, dropped, %err, "UDP datagrams dropped: no flow could be made");
                }
                continue;
            }
        };
        match upstream.send(&buf[..len]).await {
            Ok(sent) => {
                current.counters(&slot.key, &ctx.metrics).to_endpoints.inc_by(sent as u64);
            }
            Err(err) => debug!(listener = %slot.key, %client, %err, "send to endpoint failed"),
        }
    }
}

/// Ends a listener's flows when it is dropped.
struct EndFlows(Arc<Flows>);

impl Drop for EndFlows {
    fn drop(&mut self) {
        for (_, flow) in self.0.lock().drain() {
            flow.replies.abort();
        }
    }
}

/// The client's flow: kept while its endpoint is still chosen, else a new one (`None`: no
/// endpoint; `Err`: no socket could be made for it).
async fn flow_for(
    flows: &Arc<Flows>,
    client: SocketAddr,
    current: &Current,
    slot: &Arc<Slot>,
    ctx: &Arc<Ctx>,
    listener: &Arc<UdpSocket>,
) -> std::io::Result<Option<Arc<UdpSocket>>> {
    {
        let mut by_client = flows.lock();
        if let Some(flow) = by_client.get(&client) {
            // A removed endpoint loses its flows at once, as kube-proxy clears conntrack.
            if current.frontend.endpoints.contains(&flow.endpoint) {
                flow.last.store(flows.now(), Ordering::Relaxed);
                return Ok(Some(Arc::clone(&flow.upstream)));
            }
            if let Some(gone) = by_client.remove(&client) {
                gone.replies.abort();
            }
        }
    }
    let Some(endpoint) = slot.balancer.pick(&current.frontend, client.ip(), Instant::now()) else {
        return Ok(None);
    };
    make_room(flows, ctx);
    let local: SocketAddr = match endpoint.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let upstream = UdpSocket::bind(local).await?;
    if let Err(err) = upstream.connect(endpoint).await {
        current.counters(&slot.key, &ctx.metrics).connect_errors.inc();
        debug!(listener = %slot.key, %endpoint, %err, "UDP connect failed");
        return Ok(None);
    }
    let upstream = Arc::new(upstream);
    let last = Arc::new(AtomicU64::new(flows.now()));
    let replies = tokio::spawn(replies(
        Arc::clone(&upstream),
        client,
        Arc::clone(listener),
        Arc::clone(flows),
        Arc::clone(&last),
        Arc::clone(slot),
        Arc::clone(ctx),
    ))
    .abort_handle();
    let flow = Flow { endpoint, upstream: Arc::clone(&upstream), last, replies };
    if let Some(replaced) = flows.lock().insert(client, flow) {
        replaced.replies.abort();
    }
    Ok(Some(upstream))
}

/// Ends the flow of this listener idle longest when the listener, or the proxy, holds as many
/// flows as it may. When the proxy is full and this listener has none, the new flow waits
/// for flows elsewhere to expire: the bound holds either way but for one flow per listener.
fn make_room(flows: &Flows, ctx: &Ctx) {
    let options = &ctx.options;
    let mut by_client = flows.lock();
    let full = by_client.len() >= options.udp_flows_per_listener
        || ctx.flows.load(Ordering::Relaxed) >= options.udp_flows;
    if !full {
        return;
    }
    let oldest =
        by_client.iter().min_by_key(|(_, f)| f.last.load(Ordering::Relaxed)).map(|(client, _)| *client);
    if let Some(flow) = oldest.and_then(|client| by_client.remove(&client)) {
        flow.replies.abort();
    }
}

/// Sends the endpoint's answers back to the client from the service address, until the
/// flow has been idle for the idle timeout, was replaced, or is ended.
async fn replies(
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    listener: Arc<UdpSocket>,
    flows: Arc<Flows>,
    last: Arc<AtomicU64>,
    slot: Arc<Slot>,
    ctx: Arc<Ctx>,
) {
    let counters = slot.current.load_full().counters(&slot.key, &ctx.metrics).clone();
    let _active = ctx.track(&counters);
    let _counted = ctx.count_flow();
    loop {
        match tokio::time::timeout(ctx.options.udp_idle, upstream.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                debug!(listener = %slot.key, %client, %err, "endpoint unreachable");
                break;
            }
            Err(_) => break,
        }
        let relayed = ANSWER.with_borrow_mut(|buf| {
            let len = upstream.try_recv(buf)?;
            // A full send buffer drops the answer, as a router would: UDP promises no more.
            Ok::<_, std::io::Error>(listener.try_send_to(&buf[..len], client).unwrap_or(0))
        });
        match relayed {
            Ok(sent) => {
                counters.to_clients.inc_by(sent as u64);
                last.store(flows.now(), Ordering::Relaxed);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => {
                debug!(listener = %slot.key, %client, %err, "endpoint unreachable");
                break;
            }
        }
    }
    let mut by_client = flows.lock();
    if by_client.get(&client).is_some_and(|f| Arc::ptr_eq(&f.upstream, &upstream)) {
        by_client.remove(&client);
    }
}
