//! The built-in `echo` test workload: a tiny server that tells a client where
//! its request landed.
//!
//! It is embedded in-process (one per Pod that asks for it), so it is a plain
//! library: [`Echo::bind`] grabs the sockets up front, so callers learn about
//! port clashes before they spawn anything, and [`Echo::run`] serves until the
//! caller's shutdown future resolves.
//!
//! One port number serves TCP and UDP:
//! - TCP speaks HTTP/1.1 and h2c (prior knowledge) in plain mode, or HTTPS with
//!   ALPN `h2`/`http/1.1` when a [`TlsConfig`] is given. Every request gets a
//!   `200` (or `NNN` for path `/status/NNN`, 100..=599; `413` for bodies over
//!   [`MAX_BODY_BYTES`]) with a JSON object holding `path`, `query`, `host`,
//!   `method`, `proto`, `headers`, `pod`, `namespace`, `service`, `tls`,
//!   `client` and `server`, plus an `x-portico-pod` header when the pod is known.
//!   hyper cannot send a 1xx as a final answer: over HTTP/1.1 it turns
//!   `/status/1xx` into a 500 (and 101 closes the connection).
//! - UDP sends every datagram back to its sender unchanged (UDP stays plain).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portico_tls::pem::{self, PemError};
use portico_tls::server;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

/// Largest request body read before answering 413, so a client cannot make us buffer without end.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long in-flight connections get to finish after shutdown before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A stalled TLS handshake must not pin a task (and a file descriptor) forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Slow clients must not hold a connection open by trickling headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Port-0 binds retry this often when the kernel's TCP pick is taken for UDP.
const SHARED_PORT_ATTEMPTS: u32 = 16;

/// Big enough for any UDP datagram, so echoes are never truncated.
const UDP_BUFFER_BYTES: usize = 65_536;

/// Pause after a failed `accept`/`recv`, so persistent errors (e.g. EMFILE) do not spin a core.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Response header carrying the pod name, so clients can tell backends apart without parsing JSON.
const POD_HEADER: &str = "x-portico-pod";

/// Who this echo instance is, reported in every answer.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// Pod name, so a client can tell which replica answered.
    pub pod: Option<String>,
    /// Namespace of the pod, so same-named pods in different namespaces stay distinct.
    pub namespace: Option<String>,
    /// Service the request was meant for, so routing mistakes are visible.
    pub service: Option<String>,
}

/// TLS material for serving HTTPS (PEM files or bytes).
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Shared by every connection, so the key is parsed once.
    // Certificate and key are checked when this is built, so a bad pair fails before any bind.
    server_config: Arc<rustls::ServerConfig>,
}

impl TlsConfig {
    /// Builds from PEM bytes: a certificate chain (leaf first) and one private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, EchoError> {
        let origin = "PEM bytes";
        let certs = pem::chain(cert_pem).map_err(|error| EchoError::from_pem(error, origin))?;
        let key = pem::key(key_pem).map_err(|error| EchoError::from_pem(error, origin))?;
        Self::build(certs, key, origin.to_owned())
    }

    /// Builds from PEM files: a certificate chain (leaf first) and one private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, EchoError> {
        let cert_origin = cert.display().to_string();
        let certs = std::fs::read(cert)
            .map_err(|e| PemError::Certificate(rustls_pki_types::pem::Error::Io(e)))
            .and_then(|bytes| pem::chain(&bytes))
            .map_err(|error| EchoError::from_pem(error, &cert_origin))?;
        let key_der = std::fs::read(key)
            .map_err(|e| PemError::Key(rustls_pki_types::pem::Error::Io(e)))
            .and_then(|bytes| pem::key(&bytes))
            .map_err(|error| EchoError::from_pem(error, &key.display().to_string()))?;
        let origin = format!("{} and {}", cert.display(), key.display());
        Self::build(certs, key_der, origin)
    }

    /// Shared tail of the constructors, so both get the same provider and ALPN.
    fn build(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        origin: String,
    ) -> Result<Self, EchoError> {
        let server_config =
            server::single_cert_config(certs, key).map_err(|source| EchoError::Tls { origin, source })?;
        Ok(Self { server_config })
    }
}

/// Everything that can go wrong setting up or running an echo server.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The address is taken or not ours, for the protocol named.
    #[error("cannot bind echo {proto} socket at {addr}: {source}")]
    Bind {
        /// "TCP" or "UDP", since one port number serves both.
        proto: &'static str,
        /// Address that was asked for.
        addr: SocketAddr,
        /// Why the kernel said no.
        source: io::Error,
    },
    /// Port 0 was asked for but no TCP port picked by the kernel was also free for UDP.
    #[error("cannot find a port free for both TCP and UDP at {addr} after {attempts} attempts")]
    NoSharedPort {
        /// Address that was asked for.
        addr: SocketAddr,
        /// How many kernel picks were tried.
        attempts: u32,
    },
    /// The bound socket could not report its own address.
    #[error("cannot read the local address of the echo socket bound at {addr}: {source}")]
    LocalAddr {
        /// Address that was asked for.
        addr: SocketAddr,
        /// Underlying error.
        source: io::Error,
    },
    /// A PEM file or buffer could not be read or held nothing usable.
    #[error("cannot read TLS {what} from {origin}: {source}")]
    Pem {
        /// "certificate" or "private key".
        what: &'static str,
        /// File path, or "PEM bytes" for in-memory input.
        origin: String,
        /// Parse or I/O error.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate PEM held no certificate at all.
    #[error("no TLS certificate found in {origin}")]
    NoCertificate {
        /// File path, or "PEM bytes" for in-memory input.
        origin: String,
    },
    /// rustls rejected the certificate/key pair (e.g. unsupported or mismatched key).
    #[error("invalid TLS certificate or key from {origin}: {source}")]
    Tls {
        /// File paths, or "PEM bytes" for in-memory input.
        origin: String,
        /// What rustls complained about.
        source: rustls::Error,
    },
}

impl EchoError {
    /// Names where an unreadable certificate or key came from.
    fn from_pem(error: PemError, origin: &str) -> Self {
        let origin = origin.to_owned();
        match error {
            PemError::Certificate(source) => EchoError::Pem { what: "certificate", origin, source },
            PemError::NoCertificate => EchoError::NoCertificate { origin },
            PemError::Key(source) => EchoError::Pem { what: "private key", origin, source },
        }
    }
}

/// A bound echo server: TCP (HTTP/1.1 + h2c, or HTTPS with ALPN h2/http1.1 when TLS is set) and UDP on the same port number.
pub struct Echo {
    /// Accepts HTTP(S) connections.
    tcp: TcpListener,
    /// Echoes datagrams on the same port number as `tcp`.
    udp: UdpSocket,
    /// Address actually bound (port resolved when 0 was asked).
    local_addr: SocketAddr,
    /// Reported in every answer.
    identity: Arc<Identity>,
    /// Present when TCP connections must be HTTPS.
    tls: Option<TlsConfig>,
}

impl fmt::Debug for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Echo")
            .field("local_addr", &self.local_addr)
            .field("identity", &self.identity)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Echo {
    /// Binds TCP and UDP at `addr`; with port 0 the kernel picks a port free for both.
    pub async fn bind(
        addr: SocketAddr,
        identity: Identity,
        tls: Option<TlsConfig>,
    ) -> Result<Echo, EchoError> {
        let (tcp, udp, local_addr) = if addr.port() == 0 {
            bind_shared_port(addr).await?
        } else {
            let tcp = bind_tcp(addr).await?;
            let udp = bind_udp(addr).await?;
            (tcp, udp, addr)
        };
        Ok(Echo { tcp, udp, local_addr, identity: Arc::new(identity), tls })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests up to 5 s.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), EchoError> {
        let Echo { tcp, udp, local_addr, identity, tls } = self;
        let pod_header = identity.pod.as_deref().and_then(|pod| HeaderValue::from_str(pod).ok());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let shared = Arc::new(Shared {
            identity,
            pod_header,
            local_addr,
            builder,
            tls_acceptor: tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server_config)),
        });

        let pod_name = shared.identity.pod.clone().unwrap_or_default();
        let udp_task = tokio::spawn(
            udp_echo(udp).instrument(tracing::debug_span!("echo_udp", %local_addr, pod = %pod_name)),
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let span = tracing::debug_span!("echo_conn", %peer, pod = %pod_name);
                        let conn = serve_tcp(stream, peer, Arc::clone(&shared), stop_rx.clone());
                        connections.spawn(conn.instrument(span));
                    }
                    Err(error) => {
                        tracing::debug!(%error, %local_addr, "echo accept failed");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                },
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    log_join(done);
                }
            }
        }

        // Closing the listener first makes the port refuse new connections while old ones drain.
        drop(tcp);
        udp_task.abort();
        // Every connection task subscribed before this send, and they use wait_for, so none misses it.
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(done) = connections.join_next().await {
                log_join(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::debug!(
                remaining = connections.len(),
                %local_addr,
                "echo drain timed out; cutting connections"
            );
            connections.shutdown().await;
        }
        let _ = udp_task.await;
        Ok(())
    }
}

/// Per-server state every connection reads, so nothing is rebuilt per request.
struct Shared {
    /// Reported in every answer.
    identity: Arc<Identity>,
    /// Precomputed because a pod name that is not a valid header value must just be skipped.
    pod_header: Option<HeaderValue>,
    /// Reported as `server` in every answer.
    local_addr: SocketAddr,
    /// One builder for all connections: HTTP/1.1 and h2c on the same socket.
    builder: auto::Builder<TokioExecutor>,
    /// Present when connections must be TLS.
    tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
}

/// Facts about one connection that every answer on it repeats.
struct ConnInfo {
    /// Who we are and how to label responses.
    shared: Arc<Shared>,
    /// Peer socket address.
    peer: SocketAddr,
    /// Whether this connection is TLS.
    tls: bool,
}

/// Tries kernel-picked TCP ports until the same port number is also free for UDP.
async fn bind_shared_port(addr: SocketAddr) -> Result<(TcpListener, UdpSocket, SocketAddr), EchoError> {
    for _ in 0..SHARED_PORT_ATTEMPTS {
        let tcp = bind_tcp(addr).await?;
        let local = tcp.local_addr().map_err(|source| EchoError::LocalAddr { addr, source })?;
        match UdpSocket::bind(local).await {
            Ok(udp) => return Ok((tcp, udp, local)),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                tracing::debug!(%local, "UDP port taken; picking another TCP port");
            }
            Err(source) => {
                return Err(EchoError::Bind { proto: "UDP", addr: local, source });
            }
        }
    }
    Err(EchoError::NoSharedPort { addr, attempts: SHARED_PORT_ATTEMPTS })
}

/// Binds the TCP listener, naming the address on failure.
async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, EchoError> {
    TcpListener::bind(addr).await.map_err(|source| EchoError::Bind { proto: "TCP", addr, source })
}

/// Binds the UDP socket, naming the address on failure.
async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, EchoError> {
    UdpSocket::bind(addr).await.map_err(|source| EchoError::Bind { proto: "UDP", addr, source })
}

/// Reports connection tasks that panicked; cancelled ones are expected at shutdown.
fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done
        && error.is_panic()
    {
        tracing::debug!(%error, "echo connection task panicked");
    }
}

/// Sends every datagram back to its sender until the task is aborted.
async fn udp_echo(socket: UdpSocket) {
    let mut buf = vec![0u8; UDP_BUFFER_BYTES];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, peer)) => {
                let datagram = buf.get(..len).unwrap_or_default();
                if let Err(error) = socket.send_to(datagram, peer).await {
                    tracing::debug!(%error, %peer, "echo UDP send failed");
                }
            }
            Err(error) => {
                // Often an ICMP error from an earlier send; not fatal for the socket.
                tracing::debug!(%error, "echo UDP receive failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// Runs one accepted TCP connection (TLS or plain) to completion, logging rather than failing.
async fn serve_tcp(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    match shared.tls_acceptor.clone() {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(tls_stream)) => serve_http(tls_stream, peer, true, shared, stop).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
        None => serve_http(stream, peer, false, shared, stop).await,
    }
}

/// Serves HTTP/1.x or HTTP/2 on one connection until it closes or shutdown asks it to finish.
async fn serve_http<I>(io: I, peer: SocketAddr, tls: bool, shared: Arc<Shared>, stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(ConnInfo { shared: Arc::clone(&shared), peer, tls });
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let info = Arc::clone(&info);
        async move {
            if let Some(switching) = upgrade(&req) {
                tunnel_echo(req);
                return Ok::<_, Infallible>(switching);
            }
            Ok::<_, Infallible>(answer(req, &info).await)
        }
    });
    let conn = shared.builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping(stop) => {
            // Lets in-flight requests finish; idle keep-alive connections close at once.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "echo connection ended with an error");
    }
}

/// The 101 answer to an HTTP/1.1 `Upgrade` request (WebSocket or any other protocol); `None`
/// for ordinary requests.
fn upgrade<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let protocol = req.headers().get(hyper::header::UPGRADE)?;
    let asks = req
        .headers()
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if !asks || req.version() != http::Version::HTTP_11 {
        return None;
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(hyper::header::UPGRADE, protocol.clone());
    headers.insert(hyper::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    if let Some(key) = req.headers().get("sec-websocket-key") {
        let accept = websocket_accept(key.as_bytes());
        if let Ok(value) = http::HeaderValue::from_str(&accept) {
            headers.insert("sec-websocket-accept", value);
        }
    }
    Some(response)
}

/// After a 101, sends back every byte received, until the client closes.
fn tunnel_echo(req: Request<hyper::body::Incoming>) {
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                if let Err(error) = tokio::io::copy(&mut read, &mut write).await {
                    tracing::debug!(%error, "upgraded echo ended");
                }
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2): base64 of SHA-1 of key + GUID.
fn websocket_accept(key: &[u8]) -> String {
    let mut hashed = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    hashed.update(key);
    hashed.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(hashed.finish().as_ref())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Resolves once shutdown has been asked for (or the server is gone).
async fn stopping(mut stop: watch::Receiver<bool>) {
    // The guard returned by wait_for is not Send, so it must not outlive this function.
    let _ = stop.wait_for(|stopping| *stopping).await.is_ok();
}

/// The JSON answer: everything the server could see about the request.
#[derive(Serialize)]
struct EchoBody<'a> {
    /// Request path without the query.
    path: &'a str,
    /// Raw query string, if any.
    query: Option<&'a str>,
    /// Host header, or `:authority` for HTTP/2.
    host: Option<String>,
    /// Request method.
    method: &'a str,
    /// "HTTP/1.0", "HTTP/1.1" or "HTTP/2.0".
    proto: String,
    /// Lowercase header names to values; repeats joined with ", ".
    headers: serde_json::Map<String, serde_json::Value>,
    /// From [`Identity::pod`].
    pod: Option<&'a str>,
    /// From [`Identity::namespace`].
    namespace: Option<&'a str>,
    /// From [`Identity::service`].
    service: Option<&'a str>,
    /// Whether the connection was TLS.
    tls: bool,
    /// Peer socket address.
    client: String,
    /// Local socket address.
    server: String,
}

/// Builds the answer for one request; generic over the body so tests can feed odd bodies.
async fn answer<B>(req: Request<B>, info: &ConnInfo) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let mut status = status_for_path(parts.uri.path());
    match read_body(body).await {
        BodyOutcome::Read => {}
        BodyOutcome::TooLarge => status = StatusCode::PAYLOAD_TOO_LARGE,
        BodyOutcome::Failed(error) => {
            tracing::debug!(%error, "reading request body failed");
            status = StatusCode::BAD_REQUEST;
        }
    }

    let host = parts
        .headers
        .get(HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));
    let identity = &info.shared.identity;
    let echo = EchoBody {
        path: parts.uri.path(),
        query: parts.uri.query(),
        host,
        method: parts.method.as_str(),
        proto: proto_name(parts.version),
        headers: headers_json(&parts.headers),
        pod: identity.pod.as_deref(),
        namespace: identity.namespace.as_deref(),
        service: identity.service.as_deref(),
        tls: info.tls,
        client: info.peer.to_string(),
        server: info.shared.local_addr.to_string(),
    };
    let json = match serde_json::to_vec(&echo) {
        Ok(json) => json,
        Err(error) => {
            // Cannot happen with string-only data, but an answer beats a dropped connection.
            tracing::debug!(%error, "serialising echo body failed");
            status = StatusCode::INTERNAL_SERVER_ERROR;
            b"{}".to_vec()
        }
    };

    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(pod) = &info.shared.pod_header {
        headers.insert(HeaderName::from_static(POD_HEADER), pod.clone());
    }
    response
}

/// What happened to the request body.
enum BodyOutcome {
    /// Fully read (and discarded) within the limit.
    Read,
    /// Longer than [`MAX_BODY_BYTES`].
    TooLarge,
    /// The client broke off or sent garbage.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads and discards the body, stopping at [`MAX_BODY_BYTES`] so memory stays bounded.
async fn read_body<B>(body: B) -> BodyOutcome
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A declared length over the limit is refused without reading a byte.
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return BodyOutcome::TooLarge;
    }
    let mut limited = std::pin::pin!(Limited::new(body, MAX_BODY_BYTES));
    loop {
        match limited.frame().await {
            None => return BodyOutcome::Read,
            Some(Ok(_frame)) => {}
            Some(Err(error)) if error.is::<LengthLimitError>() => return BodyOutcome::TooLarge,
            Some(Err(error)) => return BodyOutcome::Failed(error),
        }
    }
}

/// Maps `/status/NNN` (100..=599) to that status; everything else is 200.
fn status_for_path(path: &str) -> StatusCode {
    path.strip_prefix("/status/")
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK)
}

/// Names the HTTP version the way Go's `r.Proto` does, which clients of echo servers expect.
fn proto_name(version: Version) -> String {
    match version {
        Version::HTTP_09 => "HTTP/0.9".to_owned(),
        Version::HTTP_10 => "HTTP/1.0".to_owned(),
        Version::HTTP_11 => "HTTP/1.1".to_owned(),
        Version::HTTP_2 => "HTTP/2.0".to_owned(),
        Version::HTTP_3 => "HTTP/3.0".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Flattens headers to one string per name, joining repeats with ", " as HTTP allows.
fn headers_json(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .collect::<Vec<_>>()
            .join(", ");
        map.insert(name.as_str().to_owned(), serde_json::Value::String(joined));
    }
    map
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    #[test]
    fn websocket_accept_matches_rfc_6455() {
        // The example handshake of RFC 6455 §1.3.
        assert_eq!(websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    /// A body with no size hint, so only the streaming limit can catch it.
    struct Chunks {
        left: usize,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(64 * 1024);
            self.left -= n;
            Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![b'x'; n])))))
        }
    }

    fn info() -> ConnInfo {
        let local_addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        ConnInfo {
            shared: Arc::new(Shared {
                identity: Arc::new(Identity { pod: Some("p-1".into()), namespace: None, service: None }),
                pod_header: Some(HeaderValue::from_static("p-1")),
                local_addr,
                builder: auto::Builder::new(TokioExecutor::new()),
                tls_acceptor: None,
            }),
            peer: "127.0.0.1:9999".parse().unwrap(),
            tls: false,
        }
    }

    #[tokio::test]
    async fn streamed_body_over_limit_is_413() {
        let req = Request::post("/x").body(Chunks { left: MAX_BODY_BYTES + 1 }).unwrap();
        let resp = answer(req, &info()).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[POD_HEADER], "p-1");
    }

    #[tokio::test]
    async fn streamed_body_at_limit_is_accepted() {
        let req = Request::post("/status/201").body(Chunks { left: MAX_BODY_BYTES }).unwrap();
        let resp = answer(req, &info()).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["method"], "POST");
        assert_eq!(json["server"], "127.0.0.1:8080");
        assert_eq!(json["client"], "127.0.0.1:9999");
    }

    #[test]
    fn status_paths() {
        assert_eq!(status_for_path("/status/503"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_for_path("/status/100"), StatusCode::CONTINUE);
        assert_eq!(status_for_path("/status/599").as_u16(), 599);
        assert_eq!(status_for_path("/status/600"), StatusCode::OK);
        assert_eq!(status_for_path("/status/099"), StatusCode::OK);
        assert_eq!(status_for_path("/status/+50"), StatusCode::OK);
        assert_eq!(status_for_path("/status/5030"), StatusCode::OK);
        assert_eq!(status_for_path("/status/"), StatusCode::OK);
        assert_eq!(status_for_path("/status/503/x"), StatusCode::OK);
        assert_eq!(status_for_path("/other/503"), StatusCode::OK);
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut headers = http::HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-b", HeaderValue::from_bytes(b"\xff").unwrap());
        let json = headers_json(&headers);
        assert_eq!(json["x-a"], "1, 2");
        assert_eq!(json["x-b"], "\u{fffd}");
    }

    #[test]
    fn proto_names() {
        assert_eq!(proto_name(Version::HTTP_10), "HTTP/1.0");
        assert_eq!(proto_name(Version::HTTP_11), "HTTP/1.1");
        assert_eq!(proto_name(Version::HTTP_2), "HTTP/2.0");
    }
}
