//! Stale conntrack entries deleted over netlink, as kube-proxy does for UDP.
//!
//! A UDP "connection" through a Service is a conntrack entry that NAT rules act on only when
//! it is created; while packets keep coming, the entry keeps sending them where it first did.
//! So when a UDP endpoint goes away, or a Service port that had no endpoints gets some, the
//! entries made before must be deleted, or the client keeps talking to nothing.
//!
//! The socket is `netlink-sys`'s (rust-netlink, MIT): it opens, binds and reads a netlink socket
//! without `unsafe` here. The messages are built and read in [`wire`] rather than with a
//! ctnetlink crate: `netlink-packet-netfilter` had no released deletion of conntrack entries,
//! the `conntrack` crate only dumps (into one `Vec` of every flow), and `nlink` is async and
//! far larger than two message types need.

mod wire;

use std::io;
use std::net::IpAddr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

pub use wire::Malformed;
use wire::{Body, Entry};

/// The transport protocol of the entries a [`Filter`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP, IP protocol 6.
    Tcp,
    /// UDP, IP protocol 17.
    Udp,
    /// SCTP, IP protocol 132.
    Sctp,
}

impl Protocol {
    /// The IP protocol number conntrack keys entries by.
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

/// Which conntrack entries to delete: those of `protocol` whose every given field matches.
///
/// The original tuple is the client's first packet before DNAT (destination: the Service's
/// address and port); the reply tuple is what answers are expected from after DNAT (source:
/// the endpoint). A filter with only a protocol matches every entry of that protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Filter {
    /// The entry's transport protocol.
    pub protocol: Protocol,
    /// The destination of the original direction: a ClusterIP, LoadBalancer IP or externalIP.
    pub orig_dst: Option<IpAddr>,
    /// The destination port of the original direction: the Service port or the NodePort.
    pub orig_dst_port: Option<u16>,
    /// The source of the reply direction: the endpoint's address.
    pub reply_src: Option<IpAddr>,
    /// The source port of the reply direction: the endpoint's port.
    pub reply_src_port: Option<u16>,
}

impl Filter {
    /// Whether `entry` is one this filter deletes.
    fn matches(&self, entry: &Entry) -> bool {
        entry.orig.protocol == self.protocol.number()
            && self.orig_dst.is_none_or(|ip| ip == entry.orig.dst())
            && self.orig_dst_port.is_none_or(|port| Some(port) == entry.orig.dst_port)
            && self.reply_src.is_none_or(|ip| ip == entry.reply.src())
            && self.reply_src_port.is_none_or(|port| Some(port) == entry.reply.src_port)
    }
}

/// Why conntrack entries could not be listed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netlink socket could not be opened, or sending or receiving on it failed.
    #[error("conntrack netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused: conntrack over netlink needs CAP_NET_ADMIN in the namespace.
    #[error("not permitted to {0} conntrack entries (CAP_NET_ADMIN is needed)")]
    Permission(&'static str),
    /// The kernel answered a request with another error.
    #[error("the kernel refused to {operation} conntrack entries: {error}")]
    Kernel {
        /// What was asked: "list" or "delete".
        operation: &'static str,
        /// The errno the kernel answered.
        #[source]
        error: io::Error,
    },
    /// A reply from the kernel could not be read.
    #[error("malformed conntrack reply: {0}")]
    Malformed(#[from] Malformed),
}

/// Deletes the conntrack entries of the current network namespace that match any of
/// `filters`; returns how many were deleted.
///
/// The table is dumped once (every family), and only the matching entries are kept; each is
/// then deleted by its original tuple, zone and id, so an entry created since with the same
/// tuple is left alone. Entries that vanished in between are not errors and not counted.
///
/// kube-proxy's uses, for UDP (and SCTP) Service ports:
/// - a UDP endpoint removed: entries whose original destination is a Service IP (ClusterIP,
///   LoadBalancer IP, externalIP) and port, or the NodePort on any address, and whose reply
///   source is the removed endpoint;
/// - a UDP Service port going from no endpoints to some: entries to its ClusterIP and port,
///   made before there was a DNAT rule for them (so the packets went nowhere).
///
/// ```no_run
/// use portico_kernel::conntrack::{Filter, Protocol, delete};
///
/// let (cluster_ip, endpoint) = ("198.18.0.100".parse()?, "198.18.0.7".parse()?);
/// let endpoint_removed = Filter {
///     protocol: Protocol::Udp,
///     orig_dst: Some(cluster_ip),
///     orig_dst_port: Some(53),
///     reply_src: Some(endpoint),
///     reply_src_port: None,
/// };
/// let node_port = Filter { orig_dst: None, orig_dst_port: Some(30053), ..endpoint_removed };
/// let first_endpoints = Filter { reply_src: None, ..endpoint_removed };
/// delete(&[endpoint_removed, node_port])?;
/// delete(&[first_endpoints])?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn delete(filters: &[Filter]) -> Result<usize, ConntrackError> {
    if filters.is_empty() {
        return Ok(0);
    }
    let mut netlink = Netlink::open()?;
    let stale = netlink.dump(|entry| filters.iter().any(|filter| filter.matches(entry)))?;
    let mut deleted = 0;
    for entry in &stale {
        if netlink.delete(entry)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The largest datagram read: the kernel sizes a dump's datagrams after the reader's buffer
/// but at most 32 KiB, and a larger datagram is reported rather than read cut.
const DATAGRAM: usize = 64 * 1024;

/// `MSG_TRUNC`: receiving returns a datagram's whole length, even past the buffer.
const MSG_TRUNC: i32 = 0x20;

/// A ctnetlink socket, its next sequence number and its receive buffer.
struct Netlink {
    /// The netlink socket, connected to the kernel.
    socket: Socket,
    /// The sequence number of the next request.
    seq: u32,
    /// The received datagram, reused for each.
    datagram: Vec<u8>,
    /// The request being sent, reused for each.
    request: Vec<u8>,
}

impl Netlink {
    /// A socket for the current network namespace's conntrack table.
    fn open() -> Result<Netlink, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
        socket.bind_auto().map_err(ConntrackError::Socket)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(ConntrackError::Socket)?;
        Ok(Netlink { socket, seq: 0, datagram: Vec::with_capacity(DATAGRAM), request: Vec::new() })
    }

    /// The entries of the table that `keep` accepts; the others are read and dropped, so a
    /// large table costs one datagram of memory beyond the matches.
    fn dump(&mut self, keep: impl Fn(&Entry) -> bool) -> Result<Vec<Entry>, ConntrackError> {
        let seq = self.next_seq();
        self.request = wire::dump_request(seq);
        self.send()?;
        let mut kept = Vec::new();
        loop {
            self.receive()?;
            for message in wire::messages(&self.datagram) {
                let message = message?;
                if message.seq != seq {
                    return Err(Malformed("a dump reply to another request").into());
                }
                match message.body {
                    Body::Entry(payload) => {
                        let entry = wire::parse_entry(payload)?;
                        if keep(&entry) {
                            kept.push(entry);
                        }
                    }
                    Body::Done(0) => return Ok(kept),
                    Body::Done(errno) | Body::Error(errno) => return Err(refused("list", errno)),
                    Body::Other => {}
                }
            }
        }
    }

    /// Deletes `entry`; false when it was gone already.
    fn delete(&mut self, entry: &Entry) -> Result<bool, ConntrackError> {
        let seq = self.next_seq();
        wire::delete_request(&mut self.request, entry, seq);
        self.send()?;
        loop {
            self.receive()?;
            for message in wire::messages(&self.datagram) {
                let message = message?;
                match message.body {
                    _ if message.seq != seq => {
                        return Err(Malformed("an acknowledgement of another request").into());
                    }
                    Body::Error(0) => return Ok(true),
                    Body::Error(errno) => {
                        return match refused("delete", errno) {
                            // Expired, or deleted by someone else, since the dump.
                            ConntrackError::Kernel { error, .. }
                                if error.kind() == io::ErrorKind::NotFound =>
                            {
                                Ok(false)
                            }
                            error => Err(error),
                        };
                    }
                    Body::Done(_) | Body::Entry(_) | Body::Other => {}
                }
            }
        }
    }

    /// A fresh sequence number.
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends the request in `self.request`.
    fn send(&self) -> Result<(), ConntrackError> {
        let sent = self.socket.send(&self.request, 0).map_err(ConntrackError::Socket)?;
        if sent != self.request.len() {
            return Err(ConntrackError::Socket(io::Error::new(
                io::ErrorKind::WriteZero,
                "request sent in part",
            )));
        }
        Ok(())
    }

    /// Receives one datagram into `self.datagram`.
    fn receive(&mut self) -> Result<(), ConntrackError> {
        loop {
            self.datagram.clear();
            match self.socket.recv(&mut self.datagram, MSG_TRUNC) {
                Ok(len) if len > self.datagram.len() => {
                    return Err(Malformed("a datagram larger than 64 KiB").into());
                }
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ConntrackError::Socket(error)),
            }
        }
    }
}

/// The error for a request the kernel refused with `errno` (negative, as netlink sends it).
fn refused(operation: &'static str, errno: i32) -> ConntrackError {
    let error = io::Error::from_raw_os_error(errno.saturating_neg());
    if error.kind() == io::ErrorKind::PermissionDenied {
        ConntrackError::Permission(operation)
    } else {
        ConntrackError::Kernel { operation, error }
    }
}
