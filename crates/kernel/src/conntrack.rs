//! Stale conntrack entries deleted over netlink, as kube-proxy does for UDP.
//!
//! A UDP "connection" through a Service is a conntrack entry that NAT rules act on only when
//! it is created; while packets keep coming, the entry keeps sending them where it first did.
//! So when a UDP endpoint goes away, or a Service port that had no endpoints gets some, the
//! entries made before must be deleted, or the client keeps talking to nothing.
//!
//! The socket is `netlink-sys`'s (rust-netlink, MIT): it opens, binds and reads a netlink socket
//! without `unsafe` here. The two messages needed are built and read in `wire` rather than
//! with a ctnetlink crate: `netlink-packet-netfilter` 0.4 can delete entries, but reads every
//! dumped entry into vectors of attributes (allocations for each of 100,000 entries to
//! delete a few) and has no typed `CTA_ID` or `CTA_ZONE`; the `conntrack` crate only dumps,
//! into one `Vec` of every flow; `nlink` is async and far larger than two messages need.

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
/// then deleted by its original tuple, zone and id. Entries that vanished in between are not
/// errors and not counted. The id narrows what is deleted to the entry dumped, but not
/// always: the kernel hashes it from the entry's tuples and memory address, so an entry made
/// again with the same tuple in the same memory has the same id.
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
                    Body::Done(errno) | Body::Error(errno @ ..0) => return Err(refused("list", errno)),
                    // An acknowledgement, unasked for, ends nothing.
                    Body::Error(_) | Body::Other => {}
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use wire::{Addresses, Tuple};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// An entry from `client:5000` to `service:port` of `protocol`, answered by `endpoint:8053`.
    fn entry(protocol: u8, client: &str, service: &str, port: u16, endpoint: &str) -> Entry {
        let addresses = |src: IpAddr, dst: IpAddr| match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Addresses::V4(src, dst),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Addresses::V6(src, dst),
            _ => panic!("two families"),
        };
        Entry {
            orig: Tuple {
                addresses: addresses(ip(client), ip(service)),
                protocol,
                src_port: Some(5000),
                dst_port: Some(port),
            },
            reply: Tuple {
                addresses: addresses(ip(endpoint), ip(client)),
                protocol,
                src_port: Some(8053),
                dst_port: Some(5000),
            },
            zone: None,
            id: None,
        }
    }

    const ANY_UDP: Filter = Filter {
        protocol: Protocol::Udp,
        orig_dst: None,
        orig_dst_port: None,
        reply_src: None,
        reply_src_port: None,
    };

    #[test]
    fn a_filter_matches_when_every_given_field_does() {
        let udp = entry(17, "198.18.0.1", "198.18.0.100", 53, "198.18.0.7");
        let endpoint_removed = Filter {
            orig_dst: Some(ip("198.18.0.100")),
            orig_dst_port: Some(53),
            reply_src: Some(ip("198.18.0.7")),
            ..ANY_UDP
        };
        assert!(endpoint_removed.matches(&udp));
        assert!(Filter { reply_src_port: Some(8053), ..endpoint_removed }.matches(&udp));
        assert!(ANY_UDP.matches(&udp));

        assert!(!Filter { orig_dst: Some(ip("198.18.0.101")), ..endpoint_removed }.matches(&udp));
        assert!(!Filter { orig_dst_port: Some(54), ..endpoint_removed }.matches(&udp));
        assert!(!Filter { reply_src: Some(ip("198.18.0.8")), ..endpoint_removed }.matches(&udp));
        assert!(!Filter { reply_src_port: Some(53), ..endpoint_removed }.matches(&udp));
        // The reply's source is the endpoint, not the original destination, and the other way.
        assert!(!Filter { reply_src: Some(ip("198.18.0.100")), ..ANY_UDP }.matches(&udp));
        assert!(!Filter { orig_dst: Some(ip("198.18.0.7")), ..ANY_UDP }.matches(&udp));
    }

    #[test]
    fn a_filter_matches_only_its_protocol() {
        let tcp = entry(6, "198.18.0.1", "198.18.0.100", 53, "198.18.0.7");
        let sctp = entry(132, "198.18.0.1", "198.18.0.100", 53, "198.18.0.7");
        assert!(!ANY_UDP.matches(&tcp));
        assert!(Filter { protocol: Protocol::Tcp, ..ANY_UDP }.matches(&tcp));
        assert!(Filter { protocol: Protocol::Sctp, ..ANY_UDP }.matches(&sctp));
        assert!(!Filter { protocol: Protocol::Sctp, ..ANY_UDP }.matches(&tcp));
    }

    #[test]
    fn a_node_port_filter_matches_the_port_on_any_address_and_families_stay_apart() {
        let node_port = Filter { orig_dst_port: Some(30053), reply_src: Some(ip("2001:db8::7")), ..ANY_UDP };
        assert!(node_port.matches(&entry(17, "2001:db8::1", "2001:db8::100", 30053, "2001:db8::7")));
        assert!(node_port.matches(&entry(17, "2001:db8::2", "2001:db8::200", 30053, "2001:db8::7")));
        assert!(!node_port.matches(&entry(17, "2001:db8::1", "2001:db8::100", 53, "2001:db8::7")));
        // An IPv4 address never equals an IPv6 one, mapped or not.
        let v4 = Filter { reply_src: Some(ip("198.18.0.7")), ..node_port };
        assert!(!v4.matches(&entry(
            17,
            "::ffff:198.18.0.1",
            "::ffff:198.18.0.100",
            30053,
            "::ffff:198.18.0.7"
        )));
    }

    #[test]
    fn an_entry_without_ports_matches_no_port_filter() {
        let mut icmp_like = entry(17, "198.18.0.1", "198.18.0.100", 53, "198.18.0.7");
        icmp_like.orig.dst_port = None;
        icmp_like.reply.src_port = None;
        assert!(!Filter { orig_dst_port: Some(53), ..ANY_UDP }.matches(&icmp_like));
        assert!(!Filter { reply_src_port: Some(8053), ..ANY_UDP }.matches(&icmp_like));
    }

    #[test]
    fn refusals_say_whether_a_capability_is_missing() {
        assert!(matches!(refused("list", -1), ConntrackError::Permission("list")));
        assert!(matches!(refused("delete", -13), ConntrackError::Permission("delete")));
        let ConntrackError::Kernel { operation, error } = refused("delete", -2) else { panic!() };
        assert_eq!((operation, error.kind()), ("delete", io::ErrorKind::NotFound));
        // A positive or absurd errno is still an error, never a panic.
        assert!(matches!(refused("list", i32::MIN), ConntrackError::Kernel { .. }));
    }

    #[test]
    fn no_filters_delete_nothing_without_opening_a_socket() {
        assert_eq!(delete(&[]).unwrap(), 0);
    }

    /// `delete` against the kernel, each case in a network namespace of its own.
    ///
    /// A test process cannot enter a namespace without `unsafe` (setns), so each test makes
    /// the namespace and its entries with `ip` and `conntrack`, then runs this test binary
    /// again inside it (`ip netns exec`), where [`netns::inside`] does the case's work.
    /// Nothing here sends a packet: the entries are inserted by hand, with addresses from
    /// 198.18.0.0/15 and 2001:db8::/32, and the namespaces are removed when dropped.
    mod netns {
        use super::*;
        use std::collections::BTreeSet;
        use std::process::{Command, Output};

        /// The variable telling [`inside`] which case to run.
        const CASE: &str = "PORTICO_CONNTRACK_CASE";

        /// A network namespace of this process, removed when dropped.
        struct Namespace(String);

        impl Namespace {
            /// A fresh namespace for `case`, or `None` (after saying so) when not root or
            /// `ip` and `conntrack` are missing.
            fn new(case: &str) -> Option<Namespace> {
                if !portico_testkit::root::able(&["ip", "conntrack"]) {
                    return None;
                }
                let name = format!("portico-test-ct-{}-{case}", std::process::id());
                ok(Command::new("ip").args(["netns", "add", &name]).output().unwrap(), "ip netns add");
                Some(Namespace(name))
            }

            /// `command` run inside the namespace.
            fn exec(&self, command: &str) -> Command {
                let mut exec = Command::new("ip");
                exec.args(["netns", "exec", &self.0, command]);
                exec
            }

            /// Inserts a connection from `client` to `service` answered by `endpoint`
            /// (each `address port`), as conntrack-tools' `-I` takes it.
            fn insert(&self, protocol: &str, client: &str, service: &str, endpoint: &str) {
                let args = insert_args(protocol, client, service, endpoint);
                ok(self.exec("conntrack").args(&args).output().unwrap(), "conntrack -I");
            }

            /// The entries left, as `conntrack -L` prints them without their timeouts.
            fn entries(&self) -> BTreeSet<String> {
                let out = self.exec("conntrack").arg("-L").output().unwrap();
                ok(out.clone(), "conntrack -L");
                String::from_utf8(out.stdout).unwrap().lines().map(tuples_of).collect()
            }

            /// Runs `case` of [`inside`] in the namespace.
            fn run_inside(&self, case: &str) {
                let exe = std::env::current_exe().unwrap();
                let mut command = self.exec(exe.to_str().unwrap());
                self.run(case, &mut command);
            }

            /// Runs `case` of [`inside`] in the namespace as nobody, without capabilities;
            /// false (after saying so) when nobody may not run this test binary.
            fn run_inside_as_nobody(&self, case: &str) -> bool {
                let exe = std::env::current_exe().unwrap();
                let runs = Command::new("setpriv")
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .arg(&exe)
                    .arg("--list")
                    .output()
                    .is_ok_and(|out| out.status.success());
                if !runs {
                    println!("skipping: nobody cannot run {}", exe.display());
                    return false;
                }
                let mut command = self.exec("setpriv");
                command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(exe);
                self.run(case, &mut command);
                true
            }

            /// Runs `command`, this test binary, on `case` of [`inside`].
            fn run(&self, case: &str, command: &mut Command) {
                let out = command
                    .args(["--exact", "conntrack::tests::netns::inside", "--ignored", "--nocapture"])
                    .env(CASE, case)
                    .output()
                    .unwrap();
                // libtest exits 0 when it finds no test by that name: the case says it ran.
                let ran = String::from_utf8_lossy(&out.stdout).contains(&format!("case {case} passed"));
                ok(out.clone(), case);
                for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("inside: "))
                {
                    println!("{line}");
                }
                assert!(ran, "the case did not run: {}", String::from_utf8_lossy(&out.stdout));
            }
        }

        impl Drop for Namespace {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
            }
        }

        /// Panics with its output unless `out` is a success.
        fn ok(out: Output, what: &str) {
            assert!(
                out.status.success(),
                "{what}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// `conntrack -I` arguments for a connection of `protocol` from `client` to `service`
        /// answered by `endpoint`, each `address port`.
        fn insert_args(protocol: &str, client: &str, service: &str, endpoint: &str) -> Vec<String> {
            let split = |pair: &str| pair.split_once(' ').map(|(a, p)| (a.to_owned(), p.to_owned())).unwrap();
            let ((c, cp), (s, sp), (e, ep)) = (split(client), split(service), split(endpoint));
            let mut args: Vec<String> =
                ["-I", "-p", protocol, "-s", &c, "-d", &s, "--sport", &cp, "--dport", &sp]
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
            let reply =
                ["--reply-src", &e, "--reply-dst", &c, "--reply-port-src", &ep, "--reply-port-dst", &cp];
            args.extend(reply.into_iter().map(str::to_owned));
            args.extend(["-t", "120"].map(str::to_owned));
            if protocol == "tcp" {
                args.extend(["--state", "ESTABLISHED"].map(str::to_owned));
            }
            args
        }

        /// A `conntrack -L` line as its protocol and tuples: "udp 198.18.0.1:5000>198.18.0.100:53
        /// 198.18.0.7:53>198.18.0.1:5000".
        fn tuples_of(line: &str) -> String {
            let field = |key: &str, nth: usize| {
                line.split_whitespace().filter_map(|f| f.strip_prefix(key)).nth(nth).unwrap_or("?").to_owned()
            };
            let direction = |nth| {
                format!(
                    "{}:{}>{}:{}",
                    field("src=", nth),
                    field("sport=", nth),
                    field("dst=", nth),
                    field("dport=", nth)
                )
            };
            format!("{} {} {}", line.split_whitespace().next().unwrap_or(""), direction(0), direction(1))
        }

        /// `tuples_of`'s form of a connection.
        fn listed(protocol: &str, client: &str, service: &str, endpoint: &str) -> String {
            let colon = |pair: &str| pair.replace(' ', ":");
            let (c, s, e) = (colon(client), colon(service), colon(endpoint));
            format!("{protocol} {c}>{s} {e}>{c}")
        }

        /// Where each case runs, inside its namespace; does nothing when run otherwise.
        #[test]
        #[ignore = "run by the other tests of this module inside their namespaces"]
        fn inside() {
            let Ok(case) = std::env::var(CASE) else { return };
            match case.as_str() {
                "endpoint" => {
                    let service = Filter {
                        orig_dst: Some(ip("198.18.0.100")),
                        orig_dst_port: Some(53),
                        reply_src: Some(ip("198.18.0.7")),
                        ..ANY_UDP
                    };
                    let node_port = Filter { orig_dst: None, orig_dst_port: Some(30053), ..service };
                    let service_v6 = Filter {
                        orig_dst: Some(ip("2001:db8::100")),
                        reply_src: Some(ip("2001:db8::7")),
                        ..service
                    };
                    assert_eq!(delete(&[service, node_port, service_v6]).unwrap(), 4);
                }
                "first-endpoints" => {
                    let service =
                        Filter { orig_dst: Some(ip("198.18.0.100")), orig_dst_port: Some(53), ..ANY_UDP };
                    assert_eq!(delete(&[service]).unwrap(), 2);
                    assert_eq!(delete(&[service]).unwrap(), 0, "a second pass finds nothing");
                }
                "empty" => assert_eq!(delete(&[ANY_UDP]).unwrap(), 0),
                "vanished" => vanished(),
                "unprivileged" => {
                    let refused = delete(&[ANY_UDP]).unwrap_err();
                    assert!(matches!(refused, ConntrackError::Permission("list")), "{refused:?}");
                }
                "many" => {
                    let start = std::time::Instant::now();
                    let endpoint = Filter { reply_src: Some(ip("198.19.255.7")), ..ANY_UDP };
                    assert_eq!(delete(&[endpoint]).unwrap(), MANY / 10);
                    println!("inside: {MANY} entries dumped, {} deleted in {:?}", MANY / 10, start.elapsed());
                }
                other => panic!("no case {other}"),
            }
            println!("case {case} passed");
        }

        /// An entry that went between the dump and its deletion is not deleted and is no error;
        /// nor is one whose id is not the one dumped.
        fn vanished() {
            let connection = ("udp", "198.18.0.1 5000", "198.18.0.100 53", "198.18.0.7 53");
            let mut netlink = Netlink::open().unwrap();
            let dumped = netlink.dump(|_| true).unwrap();
            let [old] = dumped[..] else { panic!("{dumped:?}") };
            assert!(old.id.is_some(), "the kernel dumps CTA_ID");

            let gone = Command::new("conntrack").args(["-D", "-p", "udp", "-s", "198.18.0.1"]).output();
            ok(gone.unwrap(), "conntrack -D");
            assert!(!netlink.delete(&old).unwrap(), "a vanished entry is not deleted");

            let args = insert_args(connection.0, connection.1, connection.2, connection.3);
            ok(Command::new("conntrack").args(&args).output().unwrap(), "conntrack -I");
            let [new] = netlink.dump(|_| true).unwrap()[..] else { panic!("the new entry is gone") };
            assert_eq!((new.orig, new.reply), (old.orig, old.reply));
            let other = Entry { id: new.id.map(|id| id ^ 1), ..new };
            assert!(!netlink.delete(&other).unwrap(), "another id is another entry");
            assert_eq!(netlink.dump(|_| true).unwrap(), [new]);
            assert!(netlink.delete(&new).unwrap());
            assert!(netlink.dump(|_| true).unwrap().is_empty());
        }

        /// How many entries the large case makes, a tenth of them to delete.
        const MANY: usize = 100_000;

        #[test]
        fn a_removed_endpoint_takes_its_service_and_node_port_entries_of_both_families() {
            let Some(ns) = Namespace::new("endpoint") else { return };
            let deleted = [
                ("udp", "198.18.0.1 5000", "198.18.0.100 53", "198.18.0.7 53"),
                ("udp", "198.18.0.3 5003", "198.18.1.1 30053", "198.18.0.7 53"), // NodePort
                ("udp", "198.18.0.4 5004", "198.18.1.2 30053", "198.18.0.7 53"), // on another address
                ("udp", "2001:db8::1 5000", "2001:db8::100 53", "2001:db8::7 53"),
            ];
            let kept = [
                ("udp", "198.18.0.2 5001", "198.18.0.100 53", "198.18.0.8 53"), // another endpoint
                ("udp", "198.18.0.1 5002", "198.18.0.100 54", "198.18.0.7 54"), // another port
                ("udp", "198.18.0.5 5005", "198.18.1.1 30054", "198.18.0.7 53"), // another NodePort
                ("tcp", "198.18.0.1 5000", "198.18.0.100 53", "198.18.0.7 53"), // TCP
                ("udp", "2001:db8::2 5001", "2001:db8::100 53", "2001:db8::8 53"),
            ];
            for (protocol, client, service, endpoint) in deleted.iter().chain(&kept) {
                ns.insert(protocol, client, service, endpoint);
            }
            assert_eq!(ns.entries().len(), deleted.len() + kept.len());
            ns.run_inside("endpoint");
            let expected = kept.iter().map(|(p, c, s, e)| listed(p, c, s, e)).collect::<BTreeSet<_>>();
            assert_eq!(ns.entries(), expected);
        }

        #[test]
        fn a_service_port_given_its_first_endpoints_loses_the_entries_made_before() {
            let Some(ns) = Namespace::new("first") else { return };
            // Without endpoints there was no DNAT: the replies would come from the ClusterIP.
            let deleted = [
                ("udp", "198.18.0.1 5000", "198.18.0.100 53", "198.18.0.100 53"),
                ("udp", "198.18.0.2 5000", "198.18.0.100 53", "198.18.0.100 53"),
            ];
            let kept = [
                ("udp", "198.18.0.1 5000", "198.18.0.100 54", "198.18.0.100 54"),
                ("udp", "198.18.0.1 5000", "198.18.0.101 53", "198.18.0.101 53"),
                ("tcp", "198.18.0.1 5000", "198.18.0.100 53", "198.18.0.100 53"),
            ];
            for (protocol, client, service, endpoint) in deleted.iter().chain(&kept) {
                ns.insert(protocol, client, service, endpoint);
            }
            ns.run_inside("first-endpoints");
            let expected = kept.iter().map(|(p, c, s, e)| listed(p, c, s, e)).collect::<BTreeSet<_>>();
            assert_eq!(ns.entries(), expected);
        }

        #[test]
        fn without_cap_net_admin_the_error_says_so() {
            let Some(ns) = Namespace::new("unprivileged") else { return };
            ns.insert("udp", "198.18.0.1 5000", "198.18.0.100 53", "198.18.0.7 53");
            if ns.run_inside_as_nobody("unprivileged") {
                assert_eq!(ns.entries().len(), 1);
            }
        }

        #[test]
        fn an_empty_table_deletes_nothing() {
            let Some(ns) = Namespace::new("empty") else { return };
            ns.run_inside("empty");
        }

        #[test]
        fn entries_gone_or_replaced_since_the_dump_are_left_alone() {
            let Some(ns) = Namespace::new("vanished") else { return };
            ns.insert("udp", "198.18.0.1 5000", "198.18.0.100 53", "198.18.0.7 53");
            ns.run_inside("vanished");
        }

        #[test]
        fn a_hundred_thousand_entries_are_dumped_and_a_tenth_deleted() {
            let Some(ns) = Namespace::new("many") else { return };
            let mut commands = String::new();
            let first = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 1));
            for i in 0..MANY {
                // Clients from 198.18.0.1 up to 198.19.134.160, the Service and endpoints above.
                let client = std::net::Ipv4Addr::from(first + i as u32);
                let endpoint = if i % 10 == 0 { "198.19.255.7 53" } else { "198.19.255.8 53" };
                let args = insert_args("udp", &format!("{client} 5000"), "198.19.255.100 53", endpoint);
                commands.push_str(&args.join(" "));
                commands.push('\n');
            }
            let file = std::env::temp_dir().join(format!("{}.conntrack", ns.0));
            std::fs::write(&file, commands).unwrap();
            let loaded = ns.exec("conntrack").arg("-R").arg(&file).output().unwrap();
            let _ = std::fs::remove_file(&file);
            ok(loaded, "conntrack -R");
            ns.run_inside("many");
            let left = ns.exec("conntrack").args(["-C"]).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), (MANY - MANY / 10).to_string());
        }
    }
}
