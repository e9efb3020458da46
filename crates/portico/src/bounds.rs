//! How many connections and flows each kind of listener may hold: given on the command line,
//! or derived from the open-file limit so that together they leave room for the listeners,
//! admin, DNS and the manifests themselves (every connection, flow and listener is a
//! descriptor; a proxied TCP connection is two).

use std::fmt;
use std::str::FromStr;

/// One bound: a number, or `auto` (a share of the open-file limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bound {
    /// Derived from the open-file limit.
    #[default]
    Auto,
    /// This many.
    At(usize),
}

impl FromStr for Bound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Bound::Auto);
        }
        match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("{s:?}: a bound is a number of at least 1, or auto")),
            Ok(n) => Ok(Bound::At(n)),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Auto => f.write_str("auto"),
            Bound::At(n) => write!(f, "{n}"),
        }
    }
}

/// The bounds as given.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bounds {
    /// TCP connections through the L4 proxy, in all.
    pub tcp_connections: Bound,
    /// TCP connections of one L4 listener.
    pub tcp_connections_per_listener: Bound,
    /// UDP flows, in all.
    pub udp_flows: Bound,
    /// UDP flows of one listener.
    pub udp_flows_per_listener: Bound,
    /// Ingress client connections, in all.
    pub ingress_connections: Bound,
    /// Ingress client connections of one listener (HTTP or HTTPS).
    pub ingress_connections_per_listener: Bound,
}

/// The bounds in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// TCP connections through the L4 proxy, in all.
    pub tcp_connections: usize,
    /// TCP connections of one L4 listener.
    pub tcp_connections_per_listener: usize,
    /// UDP flows, in all.
    pub udp_flows: usize,
    /// UDP flows of one listener.
    pub udp_flows_per_listener: usize,
    /// Ingress client connections, in all.
    pub ingress_connections: usize,
    /// Ingress client connections of one listener.
    pub ingress_connections_per_listener: usize,
    /// DNS over TCP clients (not configurable).
    pub dns_tcp_connections: usize,
}

/// Shares of the open-file limit, as divisors, and ceilings that keep memory in bounds when
/// the limit is very high. L4 TCP takes half the descriptors (two per connection), the
/// Ingress a quarter (a client and, mostly, an endpoint connection), UDP flows an eighth,
/// DNS over TCP a sixty-fourth; the rest is left to listeners, admin and files.
const TCP_SHARE: u64 = 4;
const TCP_CEILING: usize = 65_536;
const INGRESS_SHARE: u64 = 8;
const INGRESS_CEILING: usize = 16_384;
const UDP_SHARE: u64 = 8;
const UDP_CEILING: usize = 16_384;
const DNS_TCP_SHARE: u64 = 64;
const DNS_TCP_CEILING: usize = 1024;

impl Bounds {
    /// The bounds in force under an open-file limit of `open_files`. A listener's bound left
    /// `auto` is half the total (a quarter for UDP, whose listeners are many small ones), so
    /// that one busy listener leaves room for the others.
    pub fn resolve(&self, open_files: u64) -> Resolved {
        let share = |divisor: u64, ceiling: usize| {
            usize::try_from(open_files / divisor).unwrap_or(usize::MAX).clamp(1, ceiling)
        };
        let total = |bound: Bound, divisor, ceiling| match bound {
            Bound::At(n) => n,
            Bound::Auto => share(divisor, ceiling),
        };
        let each = |bound: Bound, total: usize, parts: usize| match bound {
            Bound::At(n) => n.min(total),
            Bound::Auto => (total / parts).max(1),
        };
        let tcp = total(self.tcp_connections, TCP_SHARE, TCP_CEILING);
        let udp = total(self.udp_flows, UDP_SHARE, UDP_CEILING);
        let ingress = total(self.ingress_connections, INGRESS_SHARE, INGRESS_CEILING);
        Resolved {
            tcp_connections: tcp,
            tcp_connections_per_listener: each(self.tcp_connections_per_listener, tcp, 2),
            udp_flows: udp,
            udp_flows_per_listener: each(self.udp_flows_per_listener, udp, 4),
            ingress_connections: ingress,
            ingress_connections_per_listener: each(self.ingress_connections_per_listener, ingress, 2),
            dns_tcp_connections: share(DNS_TCP_SHARE, DNS_TCP_CEILING),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_bounds_share_the_open_file_limit_and_leave_room() {
        let resolved = Bounds::default().resolve(20_000);
        assert_eq!(resolved.tcp_connections, 5_000);
        assert_eq!(resolved.tcp_connections_per_listener, 2_500);
        assert_eq!(resolved.udp_flows, 2_500);
        assert_eq!(resolved.udp_flows_per_listener, 625);
        assert_eq!(resolved.ingress_connections, 2_500);
        assert_eq!(resolved.ingress_connections_per_listener, 1_250);
        assert_eq!(resolved.dns_tcp_connections, 312);
        let descriptors = 2 * resolved.tcp_connections
            + resolved.udp_flows
            + 2 * resolved.ingress_connections
            + resolved.dns_tcp_connections;
        assert!(descriptors < 19_000, "{descriptors} descriptors leave too little for the rest");
    }

    #[test]
    fn a_high_limit_is_held_to_the_ceilings_and_a_tiny_one_still_serves() {
        let high = Bounds::default().resolve(1 << 20);
        assert_eq!(high.tcp_connections, TCP_CEILING);
        assert_eq!(high.udp_flows, UDP_CEILING);
        assert_eq!(high.dns_tcp_connections, DNS_TCP_CEILING);
        let tiny = Bounds::default().resolve(8);
        assert_eq!(tiny.dns_tcp_connections, 1);
        assert_eq!(tiny.tcp_connections_per_listener, 1);
    }

    #[test]
    fn given_bounds_are_kept_and_a_listener_never_exceeds_the_total() {
        let bounds = Bounds {
            tcp_connections: Bound::At(10),
            tcp_connections_per_listener: Bound::At(50),
            ingress_connections_per_listener: Bound::At(7),
            ..Bounds::default()
        };
        let resolved = bounds.resolve(20_000);
        assert_eq!(resolved.tcp_connections, 10);
        assert_eq!(resolved.tcp_connections_per_listener, 10);
        assert_eq!(resolved.ingress_connections_per_listener, 7);
    }

    #[test]
    fn bounds_parse_as_numbers_or_auto() {
        assert_eq!("auto".parse::<Bound>(), Ok(Bound::Auto));
        assert_eq!("12".parse::<Bound>(), Ok(Bound::At(12)));
        assert!("0".parse::<Bound>().is_err());
        assert!("-3".parse::<Bound>().is_err());
        assert_eq!(Bound::At(12).to_string(), "12");
    }
}
