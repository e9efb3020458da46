//! The DNS server: UDP and TCP on one address, answering from the Plan being served. A new
//! Plan is swapped in atomically, so the very next answer follows it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_proto::op::{Message, ResponseCode};
use portico_plan::Plan;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::debug;

use crate::wire::{Response, Settings, respond};

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
}

impl Default for Options {
    fn default() -> Self {
        Options { ttl: 5, server_name: "ns.dns".to_owned() }
    }
}

/// Answers DNS queries from the Plan it was last given.
pub struct DnsServer {
    plan: ArcSwapOption<Plan>,
    options: Options,
}

impl DnsServer {
    /// A server with no Plan yet: it answers SERVFAIL until [`DnsServer::apply`].
    pub fn new(options: Options) -> Arc<Self> {
        Arc::new(DnsServer { plan: ArcSwapOption::empty(), options })
    }

    /// Answers from `plan` from the next query on.
    pub fn apply(&self, plan: &Arc<Plan>) {
        self.plan.store(Some(Arc::clone(plan)));
    }

    /// The response to one query.
    pub fn respond(&self, query: &[u8], udp: bool) -> Response {
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
        match respond(zone, query, &settings, udp) {
            // Forwarding to upstream servers is not built yet: refuse rather than stay silent.
            Response::Forward => refused(query),
            other => other,
        }
    }

    /// Serves queries arriving on `socket` until it fails.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (len, client) = socket.recv_from(&mut buf).await?;
            if let Response::Bytes(bytes) = self.respond(&buf[..len], true)
                && let Err(err) = socket.send_to(&bytes, client).await
            {
                debug!(%client, %err, "DNS answer not sent");
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
            if let Response::Bytes(bytes) = self.respond(&query[..len], false) {
                let Ok(size) = u16::try_from(bytes.len()) else { continue };
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                framed.extend_from_slice(&size.to_be_bytes());
                framed.extend_from_slice(&bytes);
                stream.write_all(&framed).await?;
            }
        }
    }
}

/// REFUSED for a name the server does not answer for.
fn refused(query: &[u8]) -> Response {
    match Message::from_vec(query) {
        Ok(request) => {
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            response.metadata.response_code = ResponseCode::Refused;
            response.add_queries(request.queries);
            response.to_vec().map_or(Response::Drop, Response::Bytes)
        }
        Err(_) => Response::Drop,
    }
}

/// Binds UDP and TCP on `addr` (the same port for both; port 0 picks one free for both).
pub async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let tcp = TcpListener::bind(addr).await?;
    let udp = UdpSocket::bind(tcp.local_addr()?).await?;
    Ok((udp, tcp))
}
