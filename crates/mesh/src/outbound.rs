//! Connections a meshed Pod makes, captured on its outbound port: a Service address becomes
//! one of its endpoints; an endpoint that is a meshed workload is reached through a tunnel to
//! its proxy, as this Pod's identity, verifying the peer's; any other destination is reached
//! as it is, from the Pod's namespace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::metrics::{ConnectionLabels, HandshakeLabels, UNKNOWN};
use crate::netns::original_destination;
use crate::shared::{Served, Shared, accept, connect, relay, reset};
use crate::tunnel::TunnelError;

/// Serves the Pod's outbound port until the drain.
pub async fn serve(shared: Arc<Shared>, served: Arc<Served>, listener: tokio::net::TcpListener) {
    let handle = |stream, from| outbound(Arc::clone(&shared), Arc::clone(&served), stream, from);
    accept(&shared, listener, format!("mesh outbound of {}", served.pod), handle).await;
}

async fn outbound(shared: Arc<Shared>, served: Arc<Served>, mut stream: TcpStream, from: SocketAddr) {
    // Only the Pod's own connections come here through the capture; anyone else dialling the
    // port would borrow the Pod's identity.
    let from_pod = from.ip().is_loopback() || served.ips.contains(&from.ip().to_canonical());
    let Some(local) = shared.local(&served.pod).filter(|_| from_pod) else { return reset(stream) };
    let Ok(original) = original_destination(&stream) else { return reset(stream) };
    let table = shared.table.load_full();
    let Some((endpoint, service)) = table.resolve(original) else {
        tracing::debug!(pod = %served.pod, %original, "mesh: the Service has no endpoint");
        return reset(stream);
    };
    let mut labels = ConnectionLabels {
        reporter: "source",
        source_workload: served.pod.to_string(),
        source_principal: local.identity.to_string(),
        destination_workload: UNKNOWN.into(),
        destination_principal: UNKNOWN.into(),
        destination_service: service.map_or_else(|| UNKNOWN.into(), ToString::to_string),
        security_policy: "none",
    };
    let Some(peer) = table.peers.get(&endpoint.ip()) else {
        match connect(&served, endpoint).await {
            Ok(mut server) => relay(&shared, &mut stream, &mut server, &labels).await,
            Err(e) => {
                tracing::debug!(pod = %served.pod, %endpoint, error = %e, "mesh: connecting failed");
                reset(stream);
            }
        }
        return;
    };
    labels.destination_workload = peer.pod.to_string();
    labels.destination_principal = peer.identity.to_string();
    labels.security_policy = "mutual_tls";
    let tls = shared.certs().and_then(|certs| {
        let credentials = certs.get(&local.identity, SystemTime::now()).map_err(std::io::Error::other)?;
        let tls = certs.client(&credentials, &peer.identity).map_err(std::io::Error::other)?;
        Ok((credentials, tls))
    });
    let (credentials, tls) = match tls {
        Ok(both) => both,
        Err(e) => {
            tracing::warn!(pod = %served.pod, error = %e, "mesh: no certificate to dial with");
            return reset(stream);
        }
    };
    let through = SocketAddr::new(endpoint.ip(), shared.ports.tunnel);
    let local = (&credentials.identity, credentials.serial);
    match shared.pool.open(&served.netns, local, tls, through, endpoint).await {
        Ok(tunnel) => relay(&shared, &mut stream, &mut TokioIo::new(tunnel), &labels).await,
        Err(e) => {
            if matches!(e, TunnelError::Handshake(..)) {
                let labels = HandshakeLabels { reporter: "source", workload: served.pod.to_string() };
                shared.metrics.handshake_failures.get_or_create(&labels).inc();
            }
            tracing::info!(pod = %served.pod, peer = %peer.identity, %endpoint, error = %e, "mesh: no tunnel");
            reset(stream);
        }
    }
}
