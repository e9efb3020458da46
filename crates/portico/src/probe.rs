//! `portico lab probe`: a client that needs nothing installed, for any namespace of the lab
//! (`portico lab exec outside -- portico lab probe http http://…`). It tells apart the ways a
//! connection can fail, which is what the kernel data plane's rules are about: an answer, a
//! refusal (a TCP RST or an ICMP unreachable: no endpoints), silence (dropped: a Local policy
//! without local endpoints, a source range) and no route at all.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// What to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection, closed at once.
    Tcp(SocketAddr),
    /// An HTTP/1.1 GET of `path` for `host`, its answer read to the end.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// The `Host` field.
        host: String,
        /// The request target.
        path: String,
    },
    /// One UDP datagram, from this source port if given (so that a conntrack entry is
    /// reused), and the first datagram that comes back.
    Udp {
        /// Where to send.
        addr: SocketAddr,
        /// What to send.
        payload: String,
        /// The local port to send from (any when `None`).
        source_port: Option<u16>,
    },
}

/// How it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected; with what came back (empty for a TCP probe).
    Answer(String),
    /// Refused: a TCP RST, or ICMP port unreachable for UDP.
    Refused,
    /// Nothing came back within the time.
    Timeout,
    /// No route, or the network said it is unreachable.
    Unreachable(String),
}

impl Outcome {
    /// Whether it answered, and for HTTP with a 2xx or 3xx status (`/readyz` answers 503 while
    /// not ready).
    pub fn succeeded(&self) -> bool {
        match self {
            Outcome::Answer(body) if body.starts_with("HTTP/") => body
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse::<u16>().ok())
                .is_some_and(|code| code < 400),
            Outcome::Answer(_) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Answer(body) => write!(f, "ok\n{body}"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// Reads `http://HOST[:PORT]/PATH` (HOST an address) into a [`Probe::Http`].
pub fn http(url: &str) -> Result<Probe, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url:?}: only http:// URLs"));
    }
    let authority = uri.authority().ok_or_else(|| format!("{url:?}: no host"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr =
        host.parse().map_err(|_| format!("{url:?}: the host must be an IP address"))?;
    let addr = SocketAddr::new(ip, authority.port_u16().unwrap_or(80));
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok(Probe::Http { addr, host: authority.as_str().to_owned(), path })
}

/// Reads `ADDR:PORT`; names are not resolved, so a probe never asks a name server.
pub fn address(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|e| format!("{s:?}: {e} (an address and port such as 198.18.128.10:53 or [2001:db8::1]:53)"))
}

/// Tries `probe`, giving up after `timeout`.
pub fn run(probe: &Probe, timeout: Duration) -> Outcome {
    let result = match probe {
        Probe::Tcp(addr) => TcpStream::connect_timeout(addr, timeout).map(|_| String::new()),
        Probe::Http { addr, host, path } => get(*addr, host, path, timeout),
        Probe::Udp { addr, payload, source_port } => datagram(*addr, payload, *source_port, timeout),
    };
    match result {
        Ok(body) => Outcome::Answer(body),
        Err(err) => match err.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => Outcome::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Timeout,
            _ => Outcome::Unreachable(err.to_string()),
        },
    }
}

fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    // The status line, then the body: what a person (or a test) wants to see.
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(format!("{status}\n{body}"))
}

fn datagram(
    addr: SocketAddr,
    payload: &str,
    source_port: Option<u16>,
    timeout: Duration,
) -> io::Result<String> {
    let port = source_port.unwrap_or(0);
    let local: SocketAddr =
        if addr.is_ipv4() { ([0, 0, 0, 0], port).into() } else { ([0u16; 8], port).into() };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(payload.as_bytes())?;
    let mut buf = [0u8; 64 * 1024];
    let n = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_answer_succeeds_only_below_400() {
        assert!(Outcome::Answer("HTTP/1.1 200 OK\n{}".into()).succeeded());
        assert!(!Outcome::Answer("HTTP/1.1 503 Service Unavailable\nnot ready".into()).succeeded());
        assert!(Outcome::Answer("hello".into()).succeeded(), "a datagram");
        assert!(!Outcome::Refused.succeeded() && !Outcome::Timeout.succeeded());
    }

    #[test]
    fn urls_and_addresses_read_as_written() {
        assert_eq!(
            http("http://[2001:db8::b]:30080/x?y=1"),
            Ok(Probe::Http {
                addr: "[2001:db8::b]:30080".parse().expect("address"),
                host: "[2001:db8::b]:30080".into(),
                path: "/x?y=1".into()
            })
        );
        assert!(http("https://198.18.0.11/").is_err());
        assert!(http("http://example.test/").is_err(), "names are not resolved");
        assert_eq!(address("198.18.128.10:53"), Ok("198.18.128.10:53".parse().expect("address")));
        assert!(address("198.18.128.10").is_err());
        assert!(address("localhost:53").is_err(), "names are not resolved");
    }

    #[test]
    fn refusal_silence_and_answers_are_told_apart() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let refused = run(&Probe::Tcp(([127, 0, 0, 1], port).into()), Duration::from_secs(1));
        assert_eq!(refused, Outcome::Refused);
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let quiet = Probe::Udp {
            addr: silent.local_addr().expect("address"),
            payload: "x".into(),
            source_port: None,
        };
        let quiet = run(&quiet, Duration::from_millis(200));
        assert_eq!(quiet, Outcome::Timeout);
        let echo = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let at = echo.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let (n, peer) = echo.recv_from(&mut buf).expect("datagram");
            echo.send_to(&buf[..n], peer).expect("send");
        });
        let probe =
            Probe::Udp { addr: at, payload: "hello".into(), source_port: Some(crate_free_udp_port()) };
        assert_eq!(run(&probe, Duration::from_secs(2)), Outcome::Answer("hello".into()));
        server.join().expect("echo");
    }

    fn crate_free_udp_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("a free port")
    }
}
