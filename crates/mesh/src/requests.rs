//! Connections to a port whose policies name HTTP methods, paths, hosts or headers: read as
//! HTTP/1.1 and decided request by request, as Istio decides them in a waypoint. The path is
//! decided in its normal form (`/a/../admin` is `/admin`); a denied request is answered 403
//! `RBAC: access denied`, as Envoy answers it, and the connection goes on; an allowed one goes
//! to the application on one connection kept for the client's.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use portico_plan::authz::HttpAttributes;
use portico_plan::routes::normalize::normalize_path;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::metrics::ConnectionLabels;
use crate::shared::{Served, Shared, Source, Tally, authorized};
use crate::table::Local;

type Body = BoxBody<Bytes, hyper::Error>;

fn answer(status: StatusCode, text: &'static str) -> Response<Body> {
    let body = Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {}).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// One client connection to a Pod, decided request by request.
pub struct Decided {
    /// The Pod.
    pub served: Arc<Served>,
    /// Its entry in the table, with its policies.
    pub local: Arc<Local>,
    /// The client.
    pub source: Source,
    /// The address and port the client dialled.
    pub target: std::net::SocketAddr,
}

/// Serves `client` as HTTP/1.1, each request decided by the Pod's policies and the allowed
/// ones sent to `app` (the application, already connected).
pub async fn serve<C>(
    shared: Arc<Shared>,
    decided: Decided,
    client: C,
    app: TcpStream,
    labels: ConnectionLabels,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = match client::handshake(TokioIo::new(app)).await {
        Ok(handshake) => handshake,
        Err(e) => {
            return tracing::debug!(pod = %decided.served.pod, error = %e, "mesh: the application's HTTP failed");
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "mesh: the application's connection ended");
        }
    });
    let sender = Arc::new(Mutex::new(sender));
    shared.metrics.opened.get_or_create(&labels).inc();
    let _hold = shared.drain.hold();
    let decided = Arc::new(decided);
    let service = service_fn(|request: Request<Incoming>| {
        let (shared, decided, sender) = (Arc::clone(&shared), Arc::clone(&decided), Arc::clone(&sender));
        async move {
            if let Err((status, text)) = decide(&shared, &decided, &request) {
                return Ok::<_, hyper::Error>(answer(status, text));
            }
            let mut sender = sender.lock().await;
            match sender.send_request(request).await {
                Ok(response) => Ok(response.map(|b| b.boxed())),
                Err(e) => {
                    tracing::debug!(pod = %decided.served.pod, error = %e, "mesh: the application did not answer");
                    Ok(answer(StatusCode::BAD_GATEWAY, "upstream connect error\n"))
                }
            }
        }
    });
    let started = std::time::Instant::now();
    let client = Tally::new(client);
    let counts = Arc::clone(&client.counts);
    let served_connection = server::Builder::new()
        .max_buf_size(MAX_HEAD)
        .header_read_timeout(HEAD_TIMEOUT)
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades();
    let outcome = match served_connection.await {
        Ok(()) => "closed",
        Err(_) => "reset",
    };
    let [sent, received] = [0, 1].map(|i| counts[i].load(std::sync::atomic::Ordering::Relaxed));
    shared.metrics.ended(&labels, sent, received, started.elapsed(), outcome);
}

/// The most bytes a request head may take.
const MAX_HEAD: usize = 64 << 10;
/// How long a request head may take to arrive, once its first byte has.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The verdict on one request; the status and text to answer instead when it is denied or
/// unreadable.
fn decide(
    shared: &Shared,
    decided: &Decided,
    request: &Request<Incoming>,
) -> Result<(), (StatusCode, &'static str)> {
    let Decided { served, local, source, target } = decided;
    let raw = request.uri().path();
    let path = normalize_path(raw).map_err(|_| (StatusCode::BAD_REQUEST, "bad request path\n"))?;
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let headers: Vec<(&str, &str)> =
        request.headers().iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))).collect();
    let http = HttpAttributes { method: request.method().as_str(), path: &path, host, headers: &headers };
    match authorized(shared, served, local, source, *target, Some(http)) {
        true => Ok(()),
        false => Err((StatusCode::FORBIDDEN, "RBAC: access denied")),
    }
}
