//! Answering for addresses on one interface: ARP through an AF_PACKET channel
//! (`pnet_datalink`, which keeps the raw socket's unsafe code out of this workspace) and
//! neighbour discovery through a raw ICMPv6 socket that has joined each address's
//! solicited-node group. Each runs on a thread of its own, blocking with a short timeout, and
//! stops when the [`Responder`] is dropped.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pnet_datalink::{Channel, Config, DataLinkSender, NetworkInterface};
use socket2::{Domain, Protocol, Socket, Type};

use crate::wire::{
    Mac, arp_reply, gratuitous_arp, neighbor_advertisement, read_arp_request, read_neighbor_solicitation,
    solicited_node_group,
};

/// How long a blocked read waits before looking at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// `ff02::1`: every node of the link, where unsolicited advertisements go.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An interface that can announce: up, not loopback, with a link-layer address.
#[derive(Clone, Debug)]
pub struct Link {
    interface: NetworkInterface,
    /// Its link-layer address.
    pub mac: Mac,
}

impl Link {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.interface.name
    }
}

/// The interfaces of this network namespace that can announce.
pub fn links() -> Vec<Link> {
    pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| i.is_up() && !i.is_loopback())
        .filter_map(|interface| {
            let mac = interface.mac?.octets();
            (mac != [0; 6]).then_some(Link { interface, mac })
        })
        .collect()
}

/// What the threads of one interface share.
struct Shared {
    link: Link,
    /// The addresses answered for.
    addresses: Mutex<BTreeSet<IpAddr>>,
    stop: AtomicBool,
    arp: Mutex<Box<dyn DataLinkSender>>,
    /// The raw ICMPv6 socket, seen as a datagram socket: `recvfrom` and `sendto` are the same
    /// calls, and std reads them into initialized buffers.
    icmp: UdpSocket,
}

/// Answers ARP requests and neighbour solicitations for a set of addresses on one interface.
pub struct Responder {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Opens the interface's sockets (CAP_NET_RAW) and starts answering for nothing.
    pub fn start(link: Link) -> io::Result<Responder> {
        let config = Config { read_timeout: Some(POLL), ..Config::default() };
        let (tx, rx) = match pnet_datalink::channel(&link.interface, config)? {
            Channel::Ethernet(tx, rx) => (tx, rx),
            _ => return Err(io::Error::other("not an Ethernet channel")),
        };
        let icmp = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        icmp.bind_device(Some(link.name().as_bytes()))?;
        // RFC 4861: neighbour discovery messages carry a hop limit of 255, and receivers
        // drop any other.
        icmp.set_unicast_hops_v6(255)?;
        icmp.set_multicast_hops_v6(255)?;
        icmp.set_multicast_if_v6(link.interface.index)?;
        icmp.set_read_timeout(Some(POLL))?;
        let icmp = UdpSocket::from(icmp);
        let shared = Arc::new(Shared {
            link,
            addresses: Mutex::new(BTreeSet::new()),
            stop: AtomicBool::new(false),
            arp: Mutex::new(tx),
            icmp,
        });
        let arp = Arc::clone(&shared);
        let ndp = Arc::clone(&shared);
        let threads = vec![
            std::thread::Builder::new().name("portico-arp".into()).spawn(move || answer_arp(&arp, rx))?,
            std::thread::Builder::new().name("portico-ndp".into()).spawn(move || answer_ndp(&ndp))?,
        ];
        Ok(Responder { shared, threads })
    }

    /// The addresses it answers for.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.shared.addresses.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Answers for `addresses` from now on, and announces those it did not have.
    pub fn set(&self, addresses: BTreeSet<IpAddr>) -> io::Result<()> {
        let added: Vec<IpAddr> = {
            let mut held = self.shared.addresses.lock().unwrap_or_else(PoisonError::into_inner);
            for gone in held.difference(&addresses) {
                if let IpAddr::V6(v6) = gone {
                    let _ = self.shared.icmp.leave_multicast_v6(&solicited_node_group(*v6), self.index());
                }
            }
            let added = addresses.difference(&held).copied().collect();
            *held = addresses;
            added
        };
        for address in added {
            if let IpAddr::V6(v6) = address {
                // Joined by every address apart: leaving one must not leave a group another
                // address of the same group still needs, and the kernel counts joins.
                self.shared.icmp.join_multicast_v6(&solicited_node_group(v6), self.index())?;
            }
            self.announce(address)?;
        }
        Ok(())
    }

    /// Says unasked that `address` is here: a gratuitous ARP, or an unsolicited neighbour
    /// advertisement to every node.
    pub fn announce(&self, address: IpAddr) -> io::Result<()> {
        let mac = self.shared.link.mac;
        match address {
            IpAddr::V4(v4) => send_frame(&self.shared, &gratuitous_arp(v4, mac)),
            IpAddr::V6(v6) => {
                let to = SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 0, 0, self.index()));
                self.shared.icmp.send_to(&neighbor_advertisement(v6, mac, false), to).map(drop)
            }
        }
    }

    fn index(&self) -> u32 {
        self.shared.link.interface.index
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn send_frame(shared: &Shared, frame: &[u8]) -> io::Result<()> {
    let mut tx = shared.arp.lock().unwrap_or_else(PoisonError::into_inner);
    tx.send_to(frame, None).unwrap_or_else(|| Err(io::Error::other("the frame was not sent")))
}

fn holds(shared: &Shared, address: IpAddr) -> bool {
    shared.addresses.lock().unwrap_or_else(PoisonError::into_inner).contains(&address)
}

/// Answers the ARP requests for held addresses until stopped.
fn answer_arp(shared: &Shared, mut rx: Box<dyn pnet_datalink::DataLinkReceiver>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let request = match rx.next() {
            Ok(frame) => read_arp_request(frame),
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(interface = shared.link.name(), error = %e, "ARP: the interface cannot be read");
                return;
            }
        };
        let Some(request) = request else { continue };
        if holds(shared, IpAddr::V4(request.target_ip)) {
            let reply = arp_reply(&request, request.target_ip, shared.link.mac);
            if let Err(e) = send_frame(shared, &reply) {
                tracing::debug!(interface = shared.link.name(), error = %e, "ARP reply not sent");
            }
        }
    }
}

/// Answers the neighbour solicitations for held addresses until stopped.
fn answer_ndp(shared: &Shared) {
    let mut buffer = [0u8; 1500];
    while !shared.stop.load(Ordering::Relaxed) {
        let (len, from) = match shared.icmp.recv_from(&mut buffer) {
            Ok(read) => read,
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(interface = shared.link.name(), error = %e, "NDP: the interface cannot be read");
                return;
            }
        };
        let Some(solicitation) = read_neighbor_solicitation(&buffer[..len]) else { continue };
        if !holds(shared, IpAddr::V6(solicitation.target)) {
            continue;
        }
        // Duplicate address detection asks from `::`: the answer goes to every node.
        let to = match from {
            SocketAddr::V6(source) if !source.ip().is_unspecified() => from,
            _ => SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 0, 0, shared.link.interface.index)),
        };
        let answer = neighbor_advertisement(solicitation.target, shared.link.mac, true);
        if let Err(e) = shared.icmp.send_to(&answer, to) {
            tracing::debug!(interface = shared.link.name(), error = %e, "neighbour advertisement not sent");
        }
    }
}
