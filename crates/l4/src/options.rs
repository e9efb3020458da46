//! The proxy's settings and their defaults.

use std::time::Duration;

/// How long a UDP flow lives without an answer, as conntrack keeps an unreplied UDP entry.
const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(30);
/// How long a TCP connection lives without a byte either way: conntrack's timeout for an
/// established TCP connection, which kube-proxy sets (24 h).
const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(24 * 3600);
/// UDP flows one listener keeps; past it, the one idle longest makes room.
const DEFAULT_UDP_FLOWS_PER_LISTENER: usize = 4096;
/// UDP flows all listeners keep together (each holds a socket, a file descriptor).
const DEFAULT_UDP_FLOWS: usize = 16384;
/// TCP connections one listener holds; past it, new ones wait in the listen queue.
const DEFAULT_TCP_CONNECTIONS_PER_LISTENER: usize = 8192;
/// TCP connections all listeners hold together (each holds two descriptors).
const DEFAULT_TCP_CONNECTIONS: usize = 16384;
/// Tunables of the proxy.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a UDP flow lives without an answer from its endpoint.
    pub udp_idle: Duration,
    /// How long a TCP connection lives without a byte either way.
    pub tcp_idle: Duration,
    /// Most UDP flows one listener keeps.
    pub udp_flows_per_listener: usize,
    /// Most UDP flows in all.
    pub udp_flows: usize,
    /// Most TCP connections one listener holds.
    pub tcp_connections_per_listener: usize,
    /// Most TCP connections in all.
    pub tcp_connections: usize,
    /// The node served: its NodePorts, and the HostPorts of its Pods.
    pub node: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            udp_idle: DEFAULT_UDP_IDLE,
            tcp_idle: DEFAULT_TCP_IDLE,
            udp_flows_per_listener: DEFAULT_UDP_FLOWS_PER_LISTENER,
            udp_flows: DEFAULT_UDP_FLOWS,
            tcp_connections_per_listener: DEFAULT_TCP_CONNECTIONS_PER_LISTENER,
            tcp_connections: DEFAULT_TCP_CONNECTIONS,
            node: "localhost".to_owned(),
        }
    }
}
