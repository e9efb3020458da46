//! Sockets made inside a Pod's network namespace by a process outside it, as ztunnel does
//! for the Pods of its node: a socket belongs to the namespace it was made in, so one thread
//! per Pod enters that namespace once and makes sockets on request; the proxy uses them from
//! its own runtime. Outbound sockets carry the proxy's mark, so that the Pod's capture lets
//! them pass. `SO_ORIGINAL_DST` reads where a captured connection was going.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use portico_kernel::capture::PROXY_MARK;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// What the thread in the namespace is asked to make.
enum Request {
    Listener(SocketAddr, oneshot::Sender<io::Result<std::net::TcpListener>>),
    Socket(IpAddr, oneshot::Sender<io::Result<Socket>>),
    Holds(IpAddr, oneshot::Sender<bool>),
}

/// The namespace under `dir` that holds `ip` as its own address, entered: how a node agent
/// finds a Pod's namespace where the container runtime names it (containerd and CRI-O keep
/// each Pod sandbox's under `/run/netns`, named `cni-…`), knowing only the Pod's address.
pub async fn find(dir: &Path, ip: IpAddr) -> io::Result<Option<(PathBuf, PodNetns)>> {
    let dir = dir.to_owned();
    let (reply, searched) = oneshot::channel();
    // One thread of its own goes through the namespaces in turn and ends there, so that no
    // thread of the runtime is left in a Pod's namespace.
    std::thread::Builder::new().name("mesh-netns-find".into()).spawn(move || {
        let _ = reply.send(search(&dir, ip));
    })?;
    let Some(path) = searched.await.map_err(|_| gone())?? else { return Ok(None) };
    PodNetns::open(&path).map(|netns| Some((path, netns)))
}

/// Enters each namespace under `dir` in turn, from this thread, until one holds `ip`.
fn search(dir: &Path, ip: IpAddr) -> io::Result<Option<PathBuf>> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        // A namespace that cannot be entered (gone meanwhile, not a namespace) is not the one.
        let Ok(namespace) = std::fs::File::open(&path) else { continue };
        if move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network)).is_ok()
            && holds_here(ip)
        {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Whether `ip` is one of this thread's namespace's own addresses (a socket can be bound to it).
fn holds_here(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// A Pod's network namespace, with the thread that makes sockets in it.
#[derive(Debug, Clone)]
pub struct PodNetns {
    requests: mpsc::Sender<Request>,
}

impl PodNetns {
    /// Enters the namespace at `path` (a file under `/run/netns`, or `/proc/PID/ns/net`).
    pub fn open(path: &Path) -> io::Result<PodNetns> {
        let namespace = std::fs::File::open(path)?;
        let (requests, incoming) = mpsc::channel::<Request>();
        let (entered, entering) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new().name("mesh-netns".into()).spawn(move || {
            let moved = move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network));
            let ok = moved.is_ok();
            let _ = entered.send(moved.map_err(io::Error::from));
            if !ok {
                return;
            }
            // Ends when the last sender (the last handle) is dropped.
            for request in incoming {
                match request {
                    Request::Listener(addr, reply) => {
                        let _ = reply.send(listener(addr));
                    }
                    Request::Socket(ip, reply) => {
                        let _ = reply.send(marked(ip));
                    }
                    Request::Holds(ip, reply) => {
                        let _ = reply.send(holds_here(ip));
                    }
                }
            }
        })?;
        entering.recv().map_err(|_| io::Error::other("the namespace thread ended"))??;
        Ok(PodNetns { requests })
    }

    /// A listener on `addr` inside the namespace.
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let (reply, made) = oneshot::channel();
        self.ask(Request::Listener(addr, reply))?;
        let listener = made.await.map_err(|_| gone())??;
        TcpListener::from_std(listener)
    }

    /// A connection to `to` from inside the namespace, marked as the proxy's.
    pub async fn connect(&self, to: SocketAddr) -> io::Result<TcpStream> {
        let (reply, made) = oneshot::channel();
        self.ask(Request::Socket(to.ip(), reply))?;
        let socket = made.await.map_err(|_| gone())??;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        socket.connect(to).await
    }

    /// Whether `ip` is one of the namespace's own addresses (a socket can be bound to it).
    pub async fn holds(&self, ip: IpAddr) -> io::Result<bool> {
        let (reply, made) = oneshot::channel();
        self.ask(Request::Holds(ip, reply))?;
        made.await.map_err(|_| gone())
    }

    fn ask(&self, request: Request) -> io::Result<()> {
        self.requests.send(request).map_err(|_| gone())
    }
}

fn gone() -> io::Error {
    io::Error::other("the namespace thread ended")
}

fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn marked(ip: IpAddr) -> io::Result<Socket> {
    let domain = if ip.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(PROXY_MARK)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket)
}

/// Where a connection the capture redirected was going.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    match stream.local_addr()? {
        SocketAddr::V4(_) => Ok(SocketAddr::V4(rustix::net::sockopt::ip_original_dst(stream)?)),
        SocketAddr::V6(_) => Ok(SocketAddr::V6(rustix::net::sockopt::ipv6_original_dst(stream)?)),
    }
}
