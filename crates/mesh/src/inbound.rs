//! Connections to a meshed Pod: tunnels from other proxies on its tunnel port (mutual TLS,
//! the client's identity proved by its certificate) and plain connections captured on its
//! inbound port (no identity). Each is decided by the policies that apply to the Pod before
//! it reaches the application; a denied tunnel stream is answered 401, as ztunnel answers it,
//! and a denied plain connection is reset. A port whose policies name HTTP fields is decided
//! request by request instead ([`requests`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_tls::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::metrics::{ConnectionLabels, HandshakeLabels, UNKNOWN};
use crate::netns::original_destination;
use crate::requests;
use crate::shared::{Served, Shared, Source, accept, authorized, connect, relay, reset};
use crate::tunnel::{CONNECTION_WINDOW, HANDSHAKE, KEEPALIVE, STREAM_WINDOW, STREAMS_PER_CONNECTION};

/// The most header bytes a CONNECT request may carry (it needs a few dozen).
const MAX_HEADERS: u32 = 16 << 10;

/// Serves the Pod's tunnel port until the drain.
pub async fn serve_tunnels(shared: Arc<Shared>, served: Arc<Served>, listener: TcpListener) {
    let handle = |stream, from| tunnel_connection(Arc::clone(&shared), Arc::clone(&served), stream, from);
    accept(&shared, listener, format!("mesh tunnels of {}", served.pod), handle).await;
}

/// Serves the Pod's inbound port (plain connections the capture sent there) until the drain.
pub async fn serve_plain(shared: Arc<Shared>, served: Arc<Served>, listener: TcpListener) {
    let handle = |stream, from| plain(Arc::clone(&shared), Arc::clone(&served), stream, from);
    accept(&shared, listener, format!("mesh inbound of {}", served.pod), handle).await;
}

async fn tunnel_connection(shared: Arc<Shared>, served: Arc<Served>, stream: TcpStream, from: SocketAddr) {
    let Some(local) = shared.local(&served.pod) else { return reset(stream) };
    let Ok(certs) = shared.certs() else { return reset(stream) };
    let credentials = match certs.get(&local.identity, SystemTime::now()) {
        Ok(credentials) => credentials,
        Err(e) => {
            tracing::warn!(pod = %served.pod, error = %e, "mesh: no certificate to serve with");
            return reset(stream);
        }
    };
    let failed = || {
        let labels = HandshakeLabels { reporter: "destination", workload: served.pod.to_string() };
        shared.metrics.handshake_failures.get_or_create(&labels).inc();
    };
    let accepting = TlsAcceptor::from(Arc::clone(&credentials.server)).accept(stream);
    let handshake = tokio::time::timeout(HANDSHAKE, accepting).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no handshake within {HANDSHAKE:?}")))
    });
    let tls = match handshake {
        Ok(tls) => tls,
        Err(e) => {
            failed();
            tracing::info!(pod = %served.pod, %from, error = %e, "mesh: a tunnel's handshake failed");
            return;
        }
    };
    let peer = match portico_tls::mesh::peer_identity(tls.get_ref().1.peer_certificates()) {
        Ok(peer) => peer,
        Err(e) => {
            failed();
            tracing::info!(pod = %served.pod, %from, error = %e, "mesh: a tunnel without an identity");
            return;
        }
    };
    let service = service_fn(move |request| {
        let (shared, served, peer) = (Arc::clone(&shared), Arc::clone(&served), peer.clone());
        async move { Ok::<_, Infallible>(stream_request(shared, served, &peer, from, request).await) }
    });
    let served_connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADERS)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .serve_connection(TokioIo::new(tls), service);
    if let Err(e) = served_connection.await {
        tracing::debug!(%from, error = %e, "mesh: a tunnel connection ended");
    }
}

fn answer(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
}

/// One CONNECT stream: the destination must be this Pod, and the policy must allow the peer.
async fn stream_request(
    shared: Arc<Shared>,
    served: Arc<Served>,
    peer: &SpiffeId,
    from: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Empty<Bytes>> {
    if request.method() != Method::CONNECT {
        return answer(StatusCode::METHOD_NOT_ALLOWED);
    }
    let target = request.uri().authority().and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    let Some(target) = target.filter(|t| served.ips.contains(&t.ip()) && !is_proxy_port(&shared, t.port()))
    else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let Some(local) = shared.local(&served.pod) else { return answer(StatusCode::SERVICE_UNAVAILABLE) };
    let source = source_of(peer, from);
    let by_request = local.policy.needs_http(target.port());
    if !by_request && !authorized(&shared, &served, &local, &source, target, None) {
        return answer(StatusCode::UNAUTHORIZED);
    }
    let mut app = match connect(&served, target).await {
        Ok(app) => app,
        Err(e) => {
            tracing::debug!(pod = %served.pod, %target, error = %e, "mesh: the application did not answer");
            return answer(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let table = shared.table.load();
    let labels = ConnectionLabels {
        reporter: "destination",
        source_workload: table.peers.get(&from.ip()).map_or_else(|| UNKNOWN.into(), |p| p.pod.to_string()),
        source_principal: peer.to_string(),
        destination_workload: served.pod.to_string(),
        destination_principal: local.identity.to_string(),
        destination_service: UNKNOWN.into(),
        security_policy: "mutual_tls",
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(tunnel) if by_request => {
                let tunnel = TokioIo::new(tunnel);
                let decided = requests::Decided { served, local, source, target };
                requests::serve(shared, decided, tunnel, app, labels).await;
            }
            Ok(tunnel) => relay(&shared, &mut TokioIo::new(tunnel), &mut app, &labels).await,
            Err(e) => tracing::debug!(error = %e, "mesh: a tunnel stream did not open"),
        }
    });
    answer(StatusCode::OK)
}

async fn plain(shared: Arc<Shared>, served: Arc<Served>, stream: TcpStream, from: SocketAddr) {
    let Ok(target) = original_destination(&stream) else { return reset(stream) };
    let Some(local) = shared.local(&served.pod) else { return reset(stream) };
    let source = Source { principal: None, namespace: None, ip: from.ip().to_canonical() };
    let by_request = local.policy.needs_http(target.port());
    // Redirected here but meant for the proxy itself: never looped back into it.
    if is_proxy_port(&shared, target.port())
        || (!by_request && !authorized(&shared, &served, &local, &source, target, None))
    {
        return reset(stream);
    }
    let mut app = match connect(&served, target).await {
        Ok(app) => app,
        Err(_) => return reset(stream),
    };
    let table = shared.table.load();
    let labels = ConnectionLabels {
        reporter: "destination",
        source_workload: table
            .peers
            .get(&from.ip().to_canonical())
            .map_or_else(|| UNKNOWN.into(), |p| p.pod.to_string()),
        source_principal: UNKNOWN.into(),
        destination_workload: served.pod.to_string(),
        destination_principal: local.identity.to_string(),
        destination_service: UNKNOWN.into(),
        security_policy: "none",
    };
    let mut stream = stream;
    match by_request {
        true => {
            let decided = requests::Decided { served, local, source, target };
            requests::serve(shared, decided, stream, app, labels).await;
        }
        false => relay(&shared, &mut stream, &mut app, &labels).await,
    }
}

fn is_proxy_port(shared: &Shared, port: u16) -> bool {
    let ports = shared.ports;
    [ports.outbound, ports.inbound, ports.tunnel].contains(&port)
}

/// What the policies know of a tunnel's client: its identity, proved by its certificate.
fn source_of(peer: &SpiffeId, from: SocketAddr) -> Source {
    Source {
        principal: Some(peer.to_string()),
        namespace: peer.service_account_of().map(|(namespace, _)| namespace.to_owned()),
        ip: from.ip().to_canonical(),
    }
}
