//! UDP listeners: one flow per client address, each with its own socket towards the
//! chosen endpoint, forgotten after an idle timeout.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::proxy::{Ctx, Current, Slot};

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

struct Flow {
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

/// Relays datagrams on `socket` until its task is aborted.
pub(crate) async fn serve(socket: UdpSocket, slot: Arc<Slot>, ctx: Arc<Ctx>) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
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
            Some(upstream) => upstream,
            None => {
                current.counters(&slot.key, &ctx.metrics).no_endpoint.inc();
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

/// The client's flow: kept while its endpoint is still chosen, else a new one.
async fn flow_for(
    flows: &Flows,
    client: SocketAddr,
    current: &Current,
    slot: &Arc<Slot>,
    ctx: &Arc<Ctx>,
    listener: &Arc<UdpSocket>,
) -> Option<Arc<UdpSocket>> {
    {
        let mut flows = flows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(flow) = flows.get(&client) {
            // A removed endpoint loses its flows at once, as kube-proxy clears conntrack.
            if current.frontend.endpoints.contains(&flow.endpoint) {
                return Some(Arc::clone(&flow.upstream));
            }
            flows.remove(&client);
        }
    }
    let endpoint = slot.balancer.pick(&current.frontend, client.ip(), Instant::now())?;
    let local: SocketAddr = match endpoint.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let upstream = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(err) => {
            warn!(listener = %slot.key, %err, "no socket for a UDP flow");
            return None;
        }
    };
    if let Err(err) = upstream.connect(endpoint).await {
        current.counters(&slot.key, &ctx.metrics).connect_errors.inc();
        debug!(listener = %slot.key, %endpoint, %err, "UDP connect failed");
        return None;
    }
    let upstream = Arc::new(upstream);
    flows
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(client, Flow { endpoint, upstream: Arc::clone(&upstream) });
    tokio::spawn(replies(
        Arc::clone(&upstream),
        client,
        Arc::clone(listener),
        Arc::clone(flows),
        Arc::clone(slot),
        Arc::clone(ctx),
    ));
    Some(upstream)
}

/// Sends the endpoint's answers back to the client from the service address, until the
/// flow has been idle for the idle timeout or was replaced.
async fn replies(
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    listener: Arc<UdpSocket>,
    flows: Flows,
    slot: Arc<Slot>,
    ctx: Arc<Ctx>,
) {
    let counters = slot.current.load_full().counters(&slot.key, &ctx.metrics).clone();
    let _active = ctx.track(&counters);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match tokio::time::timeout(ctx.options.udp_idle, upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                if let Ok(sent) = listener.send_to(&buf[..len], client).await {
                    counters.to_clients.inc_by(sent as u64);
                }
            }
            Ok(Err(err)) => {
                debug!(listener = %slot.key, %client, %err, "endpoint unreachable");
                break;
            }
            Err(_) => break,
        }
        if !same_flow(&flows, client, &upstream) {
            return;
        }
    }
    let mut flows = flows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if flows.get(&client).is_some_and(|f| Arc::ptr_eq(&f.upstream, &upstream)) {
        flows.remove(&client);
    }
}

fn same_flow(flows: &Flows, client: SocketAddr, upstream: &Arc<UdpSocket>) -> bool {
    flows
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&client)
        .is_some_and(|f| Arc::ptr_eq(&f.upstream, upstream))
}
