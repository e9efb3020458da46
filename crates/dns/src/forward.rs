//! Names outside the cluster: the query is relayed as it came to the upstream servers, each in
//! turn until one answers, with a cap on the queries in flight.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::debug;

/// How long one upstream may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries relayed at once; beyond that, SERVFAIL at once rather than a growing queue.
const MAX_IN_FLIGHT: usize = 1024;

/// The upstream servers and the state of relaying to them.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
    in_flight: Semaphore,
}

impl Forwarder {
    /// Relays to `upstreams` (none: nothing is forwarded).
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Forwarder { upstreams, next: AtomicUsize::new(0), in_flight: Semaphore::new(MAX_IN_FLIGHT) }
    }

    /// The upstream answer to `query`, over TCP when `tcp`, else UDP; `None` when no upstream
    /// answered in time (or too many queries are in flight).
    pub async fn relay(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let _permit = self.in_flight.try_acquire().ok()?;
        let id = query.get(..2)?;
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.upstreams.len() {
            let upstream = self.upstreams[(first + i) % self.upstreams.len()];
            let attempt =
                if tcp { over_tcp(upstream, query).await } else { over_udp(upstream, query, id).await };
            match attempt {
                Ok(answer) => return Some(answer),
                Err(err) => debug!(%upstream, %err, "upstream DNS server did not answer"),
            }
        }
        None
    }
}

async fn over_udp(upstream: SocketAddr, query: &[u8], id: &[u8]) -> io::Result<Vec<u8>> {
    let local: IpAddr =
        if upstream.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    within(async {
        loop {
            let n = socket.recv(&mut buf).await?;
            // Only the answer to this query: same id (a stray datagram is dropped).
            if buf.get(..2) == Some(id) {
                return Ok(buf[..n].to_vec());
            }
        }
    })
    .await
}

async fn over_tcp(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    within(async {
        let mut stream = TcpStream::connect(upstream).await?;
        let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    })
    .await
}

async fn within<T>(step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(UPSTREAM_TIMEOUT, step)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// The name servers of a resolv.conf text, on port 53, except `own` (this server).
pub fn resolv_conf_servers(text: &str, own: Option<SocketAddr>) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|addr| Some(*addr) != own)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_servers_of_resolv_conf() {
        let text = "# comment\nsearch example.test\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver  10.0.0.2 \noptions ndots:5\nnameserver bogus\n";
        let own: SocketAddr = "10.0.0.2:53".parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let servers = resolv_conf_servers(text, Some(own));
        let expected: Vec<SocketAddr> =
            ["127.0.0.53:53", "[fe80::1]:53"].iter().filter_map(|s| s.parse().ok()).collect();
        assert_eq!(servers, expected);
    }
}
