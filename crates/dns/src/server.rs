//! The DNS server: UDP and TCP on one address, answering from the Plan being served. A new
//! Plan is swapped in atomically, so the very next answer follows it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_proto::op::ResponseCode;
use portico_plan::Plan;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::debug;

use crate::forward::Forwarder;
use crate::wire::{Response, Settings, error_response, respond};

/// Largest DNS message (TCP length prefix).
const MAX_MESSAGE: usize = 65_535;
/// How long a TCP client may stay quiet between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Settings of the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// TTL of answers, negative ones included.
    pub ttl: u32,
    /// The server's name in the apex's SOA and NS records.
    pub server_name: String,
    /// Where names outside the cluster are forwarded (none: they are REFUSED).
    pub upstreams: Vec<SocketAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Options { ttl: 5, server_name: "ns.dns".to_owned(), upstreams: Vec::new() }
    }
}

/// Answers DNS queries from the Plan it was last given.
pub struct DnsServer {
    plan: ArcSwapOption<Plan>,
    options: Options,
    forwarder: Forwarder,
}

impl DnsServer {
    /// A server with no Plan yet: it answers SERVFAIL until [`DnsServer::apply`].
    pub fn new(options: Options) -> Arc<Self> {
        let forwarder = Forwarder::new(options.upstreams.clone());
        Arc::new(DnsServer { plan: ArcSwapOption::empty(), options, forwarder })
    }

    /// Answers from `plan` from the next query on.
    pub fn apply(&self, plan: &Arc<Plan>) {
        self.plan.store(Some(Arc::clone(plan)));
    }

    /// The response to one query from the zone, or [`Response::Forward`].
    fn respond(&self, query: &[u8], udp: bool) -> Response {
        let plan = self.plan.load();
        let zone = plan.as_deref().map(|p| &p.dns);
        let settings = Settings {
            ttl: self.options.ttl,
            server_name: match zone {
                Some(zone) => format!("{}.{}", self.options.server_name, zone.apex),
                None => self.options.server_name.clone(),
            },
            serial: plan
                .as_deref()
                .map_or(0, |p| u32::try_from(p.generation % u64::from(u32::MAX)).unwrap_or(0)),
        };
        respond(zone, query, &settings, udp)
    }

    /// The upstream answer to a query for a name outside the cluster.
    async fn forward(&self, query: &[u8], tcp: bool) -> Response {
        if self.options.upstreams.is_empty() {
            return error_response(query, ResponseCode::Refused);
        }
        match self.forwarder.relay(query, tcp).await {
            Some(answer) => Response::Bytes(answer),
            None => error_response(query, ResponseCode::ServFail),
        }
    }

    /// Serves queries arriving on `socket` until it fails.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) -> io::Result<()> {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (len, client) = socket.recv_from(&mut buf).await?;
            match self.respond(&buf[..len], true) {
                Response::Bytes(bytes) => send(&socket, &bytes, client).await,
                // Upstream answers take a while: the loop goes on meanwhile.
                Response::Forward => {
                    let (server, socket, query) =
                        (Arc::clone(&self), Arc::clone(&socket), buf[..len].to_vec());
                    tokio::spawn(async move {
                        if let Response::Bytes(bytes) = server.forward(&query, false).await {
                            send(&socket, &bytes, client).await;
                        }
                    });
                }
                Response::Drop => {}
            }
        }
    }

    /// Serves the TCP connections arriving on `listener`.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        loop {
            let (stream, client) = listener.accept().await?;
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(err) = server.serve_connection(stream).await {
                    debug!(%client, %err, "DNS TCP connection ended");
                }
            });
        }
    }

    /// Length-prefixed queries on one connection (RFC 1035 §4.2.2), answered in turn.
    async fn serve_connection(&self, mut stream: TcpStream) -> io::Result<()> {
        let mut query = vec![0u8; MAX_MESSAGE];
        loop {
            let mut prefix = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut prefix)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(err)) => return Err(err),
                Err(_) => return Ok(()),
            }
            let len = usize::from(u16::from_be_bytes(prefix));
            stream.read_exact(&mut query[..len]).await?;
            let response = match self.respond(&query[..len], false) {
                Response::Forward => self.forward(&query[..len], true).await,
                other => other,
            };
            if let Response::Bytes(bytes) = response {
                let Ok(size) = u16::try_from(bytes.len()) else { continue };
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                framed.extend_from_slice(&size.to_be_bytes());
                framed.extend_from_slice(&bytes);
                stream.write_all(&framed).await?;
            }
        }
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], client: SocketAddr) {
    if let Err(err) = socket.send_to(bytes, client).await {
        debug!(%client, %err, "DNS answer not sent");
    }
}

/// Binds UDP and TCP on `addr` (the same port for both; port 0 picks one free for both).
pub async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let tcp = TcpListener::bind(addr).await?;
    let udp = UdpSocket::bind(tcp.local_addr()?).await?;
    Ok((udp, tcp))
}
