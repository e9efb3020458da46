//! HBONE tunnels between proxies, as Istio ambient's ztunnel makes them: HTTP/2 over mutual
//! TLS to the peer Pod's port 15008, one `CONNECT` stream per connection, its authority the
//! destination address and port. Connections are pooled by local identity (and leaf), so a
//! renewed leaf makes new connections while the old ones finish their streams.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_tls::SpiffeId;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::netns::PodNetns;

/// How long a TLS handshake, or a connection to an application or a peer, may take.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// The flow-control windows of a tunnel connection and of each stream: large enough that a
/// stream is not held back by round trips on a LAN.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// The flow-control window of one stream.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// How often an idle tunnel connection is pinged, and how long an answer may take before the
/// connection is given up (a peer gone without a word).
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// How many streams a tunnel connection carries at once: each is a connection to an
/// application.
pub const STREAMS_PER_CONNECTION: u32 = 256;

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The peer's tunnel port could not be reached.
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The mutual TLS handshake failed.
    #[error("mutual TLS with {0}: {1}")]
    Handshake(SocketAddr, std::io::Error),
    /// HTTP/2 failed.
    #[error("HTTP/2 with {0}: {1}")]
    Http(SocketAddr, hyper::Error),
    /// The peer answered the CONNECT with something else than 200.
    #[error("the peer answered {0}")]
    Refused(StatusCode),
}

/// Which connection a tunnel may ride on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    local: SpiffeId,
    serial: u64,
    peer: IpAddr,
}

/// Open tunnel connections.
#[derive(Default)]
pub struct Pool {
    connections: Mutex<HashMap<Key, SendRequest<Empty<Bytes>>>>,
}

impl Pool {
    /// A stream to `target` through the proxy at `peer`, as `local` (its leaf `serial`), on a
    /// pooled connection or a new one made from `netns` with `tls`.
    pub async fn open(
        &self,
        netns: &PodNetns,
        (local, serial): (&SpiffeId, u64),
        tls: Arc<ClientConfig>,
        peer: SocketAddr,
        target: SocketAddr,
    ) -> Result<Upgraded, TunnelError> {
        let key = Key { local: local.clone(), serial, peer: peer.ip() };
        let pooled = { self.connections().get(&key).filter(|s| !s.is_closed()).cloned() };
        if let Some(sender) = pooled {
            match connect(sender, target).await {
                // The pooled connection went away: a new one is made.
                Err(TunnelError::Http(..)) => {}
                other => return other,
            }
        }
        let sender = dial(netns, tls, peer).await?;
        {
            let mut connections = self.connections();
            // Connections made with an older leaf take no new streams; theirs go on to the end.
            let older = |k: &Key| k.local == key.local && k.serial < serial;
            connections.retain(|k, s| !s.is_closed() && !older(k));
            connections.insert(key, sender.clone());
        }
        connect(sender, target).await
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<Key, SendRequest<Empty<Bytes>>>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new tunnel connection to `peer`.
async fn dial(
    netns: &PodNetns,
    tls: Arc<ClientConfig>,
    peer: SocketAddr,
) -> Result<SendRequest<Empty<Bytes>>, TunnelError> {
    let late =
        |what| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} took over {HANDSHAKE:?}"));
    let tcp = match tokio::time::timeout(HANDSHAKE, netns.connect(peer)).await {
        Ok(connected) => connected.map_err(|e| TunnelError::Connect(peer, e))?,
        Err(_) => return Err(TunnelError::Connect(peer, late("connecting"))),
    };
    let name = ServerName::IpAddress(peer.ip().into());
    let tls = match tokio::time::timeout(HANDSHAKE, TlsConnector::from(tls).connect(name, tcp)).await {
        Ok(handshake) => handshake.map_err(|e| TunnelError::Handshake(peer, e))?,
        Err(_) => return Err(TunnelError::Handshake(peer, late("the handshake"))),
    };
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| TunnelError::Http(peer, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%peer, error = %e, "tunnel connection ended");
        }
    });
    Ok(sender)
}

/// One CONNECT stream to `target`.
async fn connect(mut sender: SendRequest<Empty<Bytes>>, target: SocketAddr) -> Result<Upgraded, TunnelError> {
    let peer = target;
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(target.to_string())
        .body(Empty::new())
        .map_err(|_| TunnelError::Refused(StatusCode::BAD_REQUEST))?;
    let mut response = sender.send_request(request).await.map_err(|e| TunnelError::Http(peer, e))?;
    if response.status() != StatusCode::OK {
        return Err(TunnelError::Refused(response.status()));
    }
    hyper::upgrade::on(&mut response).await.map_err(|e| TunnelError::Http(peer, e))
}
