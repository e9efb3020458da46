//! Connections to a meshed Pod: tunnels from other proxies on its tunnel port (mutual TLS,
//! the client's identity proved by its certificate) and plain connections captured on its
//! inbound port (no identity). Each is decided by the policies that apply to the Pod before
//! it reaches the application; a denied tunnel stream is answered 401, as ztunnel answers it,
//! and a denied plain connection is reset.

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
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_plan::authz::{Attributes, Verdict};
use portico_tls::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::metrics::{ConnectionLabels, DenialLabels, HandshakeLabels, UNKNOWN};
use crate::netns::original_destination;
use crate::shared::{Served, Shared, accept, relay, reset};
use crate::table::Local;
use crate::tunnel::{CONNECTION_WINDOW, STREAM_WINDOW};

/// Serves the Pod's tunnel port until the drain.
pub async fn serve_tunnels(shared: Arc<Shared>, served: Arc<Served>, listener: TcpListener) {
    let handle = |stream, from| tunnel_connection(Arc::clone(&shared), Arc::clone(&served), stream, from);
    accept(&shared, listener, handle).await;
}

/// Serves the Pod's inbound port (plain connections the capture sent there) until the drain.
pub async fn serve_plain(shared: Arc<Shared>, served: Arc<Served>, listener: TcpListener) {
    let handle = |stream, from| plain(Arc::clone(&shared), Arc::clone(&served), stream, from);
    accept(&shared, listener, handle).await;
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
    let tls = match TlsAcceptor::from(Arc::clone(&credentials.server)).accept(stream).await {
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
    if !allowed(&shared, &served, &local, Some(peer), from, target) {
        return answer(StatusCode::UNAUTHORIZED);
    }
    let mut app = match served.netns.connect(target).await {
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
            Ok(tunnel) => relay(&shared, &mut TokioIo::new(tunnel), &mut app, &labels).await,
            Err(e) => tracing::debug!(error = %e, "mesh: a tunnel stream did not open"),
        }
    });
    answer(StatusCode::OK)
}

async fn plain(shared: Arc<Shared>, served: Arc<Served>, stream: TcpStream, from: SocketAddr) {
    let Ok(target) = original_destination(&stream) else { return reset(stream) };
    let Some(local) = shared.local(&served.pod) else { return reset(stream) };
    // Redirected here but meant for the proxy itself: never looped back into it.
    if is_proxy_port(&shared, target.port()) || !allowed(&shared, &served, &local, None, from, target) {
        return reset(stream);
    }
    let mut app = match served.netns.connect(target).await {
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
    relay(&shared, &mut stream, &mut app, &labels).await;
}

fn is_proxy_port(shared: &Shared, port: u16) -> bool {
    let ports = shared.ports;
    [ports.outbound, ports.inbound, ports.tunnel].contains(&port)
}

/// Whether the policies of the Pod let `peer` (none over plaintext) from `from` reach
/// `target`; a denial is counted and logged.
fn allowed(
    shared: &Shared,
    served: &Served,
    local: &Local,
    peer: Option<&SpiffeId>,
    from: SocketAddr,
    target: SocketAddr,
) -> bool {
    let principal = peer.map(|p| p.to_string());
    let attributes = Attributes {
        source_principal: principal.as_deref().map(|p| p.trim_start_matches("spiffe://")),
        source_namespace: peer.and_then(|p| p.service_account_of()).map(|(namespace, _)| namespace),
        source_ip: from.ip(),
        destination_ip: target.ip(),
        destination_port: target.port(),
        http: None,
    };
    let Verdict::Deny { by } = local.policy.evaluate(&attributes) else { return true };
    let policy = by.map_or_else(|| "no ALLOW policy matched".to_owned(), |key| key.to_string());
    let labels = DenialLabels {
        destination_workload: served.pod.to_string(),
        source_principal: principal.clone().unwrap_or_else(|| UNKNOWN.into()),
        policy: policy.clone(),
    };
    shared.metrics.denied.get_or_create(&labels).inc();
    tracing::info!(
        target: "portico::mesh::access",
        pod = %served.pod,
        source = %from,
        source_principal = principal.as_deref().unwrap_or(UNKNOWN),
        destination = %target,
        %policy,
        "denied"
    );
    false
}
