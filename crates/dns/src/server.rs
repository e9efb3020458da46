//! The DNS server: UDP and TCP on one address, answering from the Plan being served. A new
//! Plan is swapped in atomically, so the very next answer follows it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hickory_proto::op::ResponseCode;
use portico_dataplane::drain::Watch;
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_plan::Plan;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, info};

use crate::answer::{Rcode, Reply, answer};
use crate::cache::{self, AnswerCache};
use crate::forward::Forwarder;
use crate::metrics::{Metrics, qtype_name, question_name, question_type, rcode_name};
use crate::search;
use crate::wire::{
    Response, Settings, error_response, query_type, question, respond, searched, zone_records,
};
use portico_accept::Limits;
use portico_plan::dns::Lookup;

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
    /// One log line per query (client, name, type, code, source, time).
    pub query_log: bool,
    /// Server-side search for Pods ([`crate::search`]): `None` is off; else the host's search
    /// domains, tried after the cluster's.
    pub search: Option<Vec<String>>,
    /// Most TCP clients connected at once; the next wait in the listen queue.
    pub tcp_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttl: 5,
            server_name: "ns.dns".to_owned(),
            upstreams: Vec::new(),
            query_log: false,
            search: None,
            tcp_connections: 1024,
        }
    }
}

/// Answers DNS queries from the Plan it was last given.
pub struct DnsServer {
    served: ArcSwapOption<Served>,
    options: Options,
    forwarder: Forwarder,
    metrics: Arc<Metrics>,
    /// Shutdown: the listeners stop and idle TCP clients are let go when it is signalled.
    drain: Watch,
}

/// The Plan being served, the namespace of each Pod address for server-side search, and the
/// answers already encoded for it.
struct Served {
    plan: Arc<Plan>,
    pods: HashMap<IpAddr, String>,
    answers: AnswerCache,
}

impl DnsServer {
    /// A server with no Plan yet: it answers SERVFAIL until its first Plan is applied. Its
    /// listeners stop once `drain` is signalled.
    pub fn new(options: Options, metrics: Arc<Metrics>, drain: Watch) -> Arc<Self> {
        let forwarder = Forwarder::new(options.upstreams.clone());
        Arc::new(DnsServer { served: ArcSwapOption::empty(), options, forwarder, metrics, drain })
    }

    /// Answers from `plan` from the next query on.
    fn serve_plan(&self, plan: &Arc<Plan>) {
        let pods = match self.options.search {
            Some(_) => {
                plan.pods.iter().flat_map(|p| p.ips.iter().map(|ip| (*ip, p.key.namespace.clone()))).collect()
            }
            None => HashMap::new(),
        };
        let answers = AnswerCache::default();
        self.served.store(Some(Arc::new(Served { plan: Arc::clone(plan), pods, answers })));
    }

    /// The response to one query from the zone, or [`Response::Forward`].
    fn respond(&self, served: Option<&Served>, query: &[u8], udp: bool) -> Response {
        let plan = served.map(|s| &*s.plan);
        let zone = plan.map(|p| &p.dns);
        let settings = Settings {
            ttl: self.options.ttl,
            server_name: match zone {
                Some(zone) => format!("{}.{}", self.options.server_name, zone.apex),
                None => self.options.server_name.clone(),
            },
            serial: plan.map_or(0, |p| u32::try_from(p.generation % u64::from(u32::MAX)).unwrap_or(0)),
        };
        respond(zone, query, &settings, udp)
    }

    /// The zone's answer to `query` (`None`: nothing to send), or `Err` when the name is not
    /// the cluster's; counted.
    fn zone_answer(
        &self,
        client: SocketAddr,
        query: &[u8],
        udp: bool,
        started: Instant,
    ) -> Result<Option<Vec<u8>>, Upstream> {
        if let Some(walk) = self.search_walk(client, query) {
            return Err(Upstream::Search(Box::new(walk)));
        }
        // One load: an answer is kept with the Plan that gave it.
        let served = self.served.load_full();
        let plain = served.as_ref().and_then(|_| cache::plain(query, udp));
        if let (Some(served), Some(plain)) = (&served, &plain)
            && let Some(bytes) = served.answers.get(plain, query)
        {
            self.answered(client, query, &bytes, "zone", started);
            return Ok(Some(bytes));
        }
        match self.respond(served.as_deref(), query, udp) {
            Response::Bytes(bytes) => {
                if let (Some(served), Some(plain)) = (&served, plain) {
                    served.answers.put(plain, &bytes);
                }
                self.answered(client, query, &bytes, "zone", started);
                Ok(Some(bytes))
            }
            Response::Drop => Ok(None),
            Response::Forward => Err(Upstream::Relay),
            Response::Chase(chase) => Err(Upstream::Chase(chase)),
        }
    }

    /// What the upstream servers contribute: the whole answer to a name outside the cluster,
    /// or the records of an ExternalName's target; counted.
    async fn upstream_answer(
        &self,
        client: SocketAddr,
        query: &[u8],
        tcp: bool,
        started: Instant,
        work: Upstream,
    ) -> Option<Vec<u8>> {
        let (response, source) = match work {
            Upstream::Relay => (self.forward(query, tcp).await, "upstream"),
            Upstream::Chase(chase) => {
                let upstream = match chase.query() {
                    Some(target) if !self.options.upstreams.is_empty() => {
                        self.forwarder.relay(&target, tcp).await
                    }
                    _ => None,
                };
                (chase.finish(upstream.as_deref()), "zone")
            }
            Upstream::Search(walk) => (self.search(query, tcp, *walk).await, "zone"),
        };
        match response {
            Response::Bytes(bytes) => {
                self.answered(client, query, &bytes, source, started);
                Some(bytes)
            }
            _ => None,
        }
    }

    /// The search to run for `query`, when server-side search is on, the client is a Pod, and
    /// it asks for a name under its namespace that does not exist.
    fn search_walk(&self, client: SocketAddr, query: &[u8]) -> Option<Walk> {
        let domains = self.options.search.as_ref()?;
        let served = self.served.load_full()?;
        let namespace = served.pods.get(&client.ip())?;
        let request = hickory_proto::op::Message::from_vec(query).ok()?;
        let [asked] = request.queries.as_slice() else { return None };
        let name = asked.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        if !matches!(served.plan.dns.lookup(&name), Lookup::Missing) {
            return None;
        }
        let candidates = search::candidates(&name, namespace, &served.plan.dns.apex, domains)?;
        Some(Walk { candidates, qtype: asked.query_type, id: request.metadata.id, served })
    }

    /// Walks the search path: a CNAME to the first name with records of the type asked, and
    /// those records; the plain answer (NXDOMAIN) when none has any.
    async fn search(&self, query: &[u8], tcp: bool, walk: Walk) -> Response {
        let zone = &walk.served.plan.dns;
        for name in &walk.candidates {
            let records = if zone.is_under_apex(name) {
                match answer(Some(zone), name, query_type(walk.qtype)) {
                    Reply::Zone(Rcode::NoError, found) if !found.answers.is_empty() => {
                        zone_records(&found.answers, self.options.ttl)
                    }
                    _ => continue,
                }
            } else {
                let Some(upstream_query) = question(walk.id, name, walk.qtype) else { continue };
                if self.options.upstreams.is_empty() {
                    continue;
                }
                let Some(bytes) = self.forwarder.relay(&upstream_query, tcp).await else { continue };
                match hickory_proto::op::Message::from_vec(&bytes) {
                    Ok(found)
                        if found.metadata.response_code == ResponseCode::NoError
                            && !found.answers.is_empty() =>
                    {
                        found.answers
                    }
                    _ => continue,
                }
            };
            return searched(query, name, records, self.options.ttl, !tcp);
        }
        self.respond(Some(&walk.served), query, !tcp)
    }

    /// Counts an answered query and, with the query log on, logs it.
    fn answered(
        &self,
        client: SocketAddr,
        query: &[u8],
        answer: &[u8],
        source: &'static str,
        started: Instant,
    ) {
        let took = started.elapsed();
        self.metrics.record(query, answer, source, took);
        if self.options.query_log {
            let name = question_name(query).unwrap_or_default();
            let (qtype, rcode) = (qtype_name(question_type(query)), rcode_name(answer));
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            info!(target: "portico_dns::query", %client, name, qtype, rcode, source, micros, "DNS query");
        }
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

    /// Serves queries arriving on `socket` until it fails or the drain is signalled.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) -> io::Result<()> {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; MAX_MESSAGE];
        let drained = self.drain.signaled();
        tokio::pin!(drained);
        loop {
            let (len, client) = tokio::select! {
                biased;
                () = drained.as_mut() => return Ok(()),
                received = socket.recv_from(&mut buf) => received?,
            };
            let started = Instant::now();
            match self.zone_answer(client, &buf[..len], true, started) {
                Ok(Some(bytes)) => send(&socket, &bytes, client).await,
                Ok(None) => {}
                // Upstream answers take a while: the loop goes on meanwhile.
                Err(work) => {
                    let (server, socket, query) =
                        (Arc::clone(&self), Arc::clone(&socket), buf[..len].to_vec());
                    let hold = self.drain.hold();
                    tokio::spawn(async move {
                        let _hold = hold;
                        if let Some(bytes) =
                            server.upstream_answer(client, &query, false, started, work).await
                        {
                            send(&socket, &bytes, client).await;
                        }
                    });
                }
            }
        }
    }

    /// Serves the TCP connections arriving on `listener`, at most
    /// [`Options::tcp_connections`] at once, until the drain is signalled.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        let n = self.options.tcp_connections;
        let name = listener.local_addr().map_or_else(|_| "TCP".to_owned(), |addr| addr.to_string());
        let gate = Limits::new("DNS over TCP", n, n, self.metrics.accept.clone()).gate(name);
        let drained = self.drain.signaled();
        tokio::pin!(drained);
        loop {
            let (stream, client, seat) = tokio::select! {
                biased;
                () = drained.as_mut() => return,
                accepted = gate.accept(&listener) => accepted,
            };
            let server = Arc::clone(&self);
            let hold = self.drain.hold();
            tokio::spawn(async move {
                let _held = (seat, hold);
                if let Err(err) = server.serve_connection(stream, client).await {
                    debug!(%client, %err, "DNS TCP connection ended");
                }
            });
        }
    }

    /// Length-prefixed queries on one connection (RFC 1035 §4.2.2), answered in turn; a
    /// client between queries is let go when the drain is signalled.
    async fn serve_connection(&self, mut stream: TcpStream, client: SocketAddr) -> io::Result<()> {
        let mut query = vec![0u8; MAX_MESSAGE];
        let drained = self.drain.signaled();
        tokio::pin!(drained);
        loop {
            let mut prefix = [0u8; 2];
            tokio::select! {
                biased;
                () = drained.as_mut() => return Ok(()),
                read = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut prefix)) => match read {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(Err(err)) => return Err(err),
                    Err(_) => return Ok(()),
                },
            }
            let len = usize::from(u16::from_be_bytes(prefix));
            stream.read_exact(&mut query[..len]).await?;
            let started = Instant::now();
            let answer = match self.zone_answer(client, &query[..len], false, started) {
                Ok(answer) => answer,
                Err(work) => self.upstream_answer(client, &query[..len], true, started, work).await,
            };
            if let Some(bytes) = answer {
                let Ok(size) = u16::try_from(bytes.len()) else { continue };
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                framed.extend_from_slice(&size.to_be_bytes());
                framed.extend_from_slice(&bytes);
                stream.write_all(&framed).await?;
            }
        }
    }
}

impl DataPlane for DnsServer {
    fn name(&self) -> &'static str {
        "dns"
    }

    /// Answers from `plan` from the next query on; nothing in a Plan can fail to be served.
    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        self.serve_plan(plan);
        Box::pin(std::future::ready(Vec::new()))
    }

    fn readiness(&self) -> Readiness {
        Readiness::after_first_plan(self.served.load().is_some())
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], client: SocketAddr) {
    if let Err(err) = socket.send_to(bytes, client).await {
        debug!(%client, %err, "DNS answer not sent");
    }
}

/// A server-side search under way.
struct Walk {
    candidates: Vec<String>,
    qtype: hickory_proto::rr::RecordType,
    id: u16,
    served: Arc<Served>,
}

/// What is left for the upstream servers.
enum Upstream {
    /// A name outside the cluster: relay the query.
    Relay,
    /// An ExternalName's target: resolve it and append.
    Chase(Box<crate::wire::Chase>),
    /// A Pod's name not found under its namespace: search the rest of its path.
    Search(Box<Walk>),
}

/// Binds TCP and `udp_sockets` UDP sockets on `addr` (the same port for all; port 0 picks a
/// free one). The UDP sockets share the port with SO_REUSEPORT, so that the kernel spreads
/// clients over them and each worker thread serves its own.
pub async fn bind(addr: SocketAddr, udp_sockets: usize) -> io::Result<(Vec<UdpSocket>, TcpListener)> {
    let tcp = TcpListener::bind(addr).await?;
    let addr = tcp.local_addr()?;
    let udp = (0..udp_sockets.max(1))
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            UdpSocket::from_std(socket.into())
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok((udp, tcp))
}
