//! What the Ingress tests share, beyond `portico-testkit`: echo Pods and a proxy on loopback
//! addresses of their own, Services whose EndpointSlices name those Pods, readers of the raw
//! HTTP/1.1 answers a connection carries, TLS Secrets, and an endpoint written by hand that
//! records what it receives.
// Each test binary uses its own part of this.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_dataplane::{DataPlane, drain};
use portico_l7::{IngressProxy, Metrics, Options};
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::echo::Fleet;
use portico_testkit::http::get;
use portico_testkit::manifests::{EndpointSlice, Service};
use portico_testkit::net::{Block, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const POD_PORT: u16 = 18080;

/// Echo Pods and an Ingress proxy, on addresses of their own (127.<net>.x.y).
pub struct Harness {
    pub proxy: IngressProxy,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub generation: u64,
    /// Drains the proxy; taken by the tests of shutdown.
    pub drain: Option<drain::Trigger>,
    registry: prometheus_client::registry::Registry,
    _pods: Fleet,
}

/// The address of pod `i` of Service number `svc`, in the block 127.<net>.0.0/16.
pub fn pod_ip(net: u8, svc: u8, i: u8) -> IpAddr {
    Block::new(net).ip(svc, i + 1)
}

/// A headless Service named `name` (number `svc`) with `pods` echo endpoints given in an
/// EndpointSlice, as manifests.
pub fn service(net: u8, svc: u8, name: &str, pods: u8) -> String {
    let service =
        Service::new(name).headless().port(&format!("{{name: http, port: 80, targetPort: {POD_PORT}}}"));
    let slice = (0..pods).fold(
        EndpointSlice::new(&format!("{name}-1"), name).port(&format!("{{name: http, port: {POD_PORT}}}")),
        |slice, i| slice.address(&pod_ip(net, svc, i).to_string()),
    );
    format!("{service}{slice}")
}

impl Harness {
    /// Starts `pods[svc]` echo Pods for each Service number.
    pub async fn start(net: u8, pods: &[(u8, &str, u8)]) -> Harness {
        Harness::start_with(net, pods, Options::default()).await
    }

    pub async fn start_with(net: u8, pods: &[(u8, &str, u8)], options: Options) -> Harness {
        let pods = Fleet::start(pods.iter().flat_map(|(svc, name, count)| {
            (0..*count).map(move |i| (SocketAddr::new(pod_ip(net, *svc, i), POD_PORT), format!("{name}-{i}")))
        }))
        .await;
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let (trigger, watch) = drain::channel();
        let proxy = IngressProxy::new(options, metrics, watch).expect("proxy");
        Harness { proxy, http, https, generation: 0, drain: Some(trigger), registry, _pods: pods }
    }

    /// The next Plan of `yaml`, its manifests loaded without a word and planned without errors.
    pub fn plan(&mut self, yaml: &str) -> Arc<Plan> {
        let config =
            PlanConfig { ingress_http: self.http, ingress_https: self.https, ..PlanConfig::default() };
        self.generation += 1;
        let planned =
            portico_testkit::plan::planned_with(yaml, &config, &Allocations::default(), self.generation);
        Arc::new(planned.loaded().without_errors().plan)
    }

    /// The proxy's metrics, as `/metrics` shows them.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    pub async fn apply(&mut self, yaml: &str) {
        let plan = self.plan(yaml);
        let errors = self.proxy.apply(&plan).await;
        assert!(errors.is_empty(), "{errors:?}");
    }
}

/// The echo Pod that answered a GET of `path` for `host`.
pub async fn pod_for(addr: SocketAddr, host: &str, path: &str) -> String {
    get(addr, host, path, "").await.pod()
}

pub fn tls_secret(name: &str, host: &str) -> (String, rustls::pki_types::CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    let crt = serde_json::to_string(&generated.cert.pem()).unwrap();
    let key = serde_json::to_string(&generated.signing_key.serialize_pem()).unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {crt}, tls.key: {key}}}\n---\n"
    );
    (yaml, generated.cert.der().clone())
}

/// Reads one head, byte by byte so nothing after it is consumed.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A request as the hand-written endpoint read it: its head exactly as it came, its body
/// (de-chunked) and its trailer lines.
#[derive(Debug, Clone)]
pub struct Seen {
    pub raw_head: Vec<u8>,
    pub head: String,
    pub body: Vec<u8>,
    pub trailers: String,
}

impl Seen {
    /// The request target.
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    /// The values of field `name` (any case), in order.
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// What the hand-written endpoint received, and how many connections it accepted.
pub type Received = Arc<Mutex<Vec<Seen>>>;

/// A hand-written HTTP/1.1 endpoint answering by path with framings the echo Pods never use:
/// chunked with trailers, an interim 103, close-delimited, a close right after an answer that
/// promised keep-alive, and answers whose framing a proxy must refuse. It keeps every request
/// it reads and counts connections; other paths get `200` with the path as body.
pub async fn framing_endpoint(addr: SocketAddr) -> (Received, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (received, connections) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)));
    let (seen, count) = (Arc::clone(&received), Arc::clone(&connections));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        if !read_more(&mut stream, &mut buf).await {
                            return;
                        }
                    };
                    let raw_head: Vec<u8> = buf.drain(..head_end).collect();
                    let head = String::from_utf8_lossy(&raw_head).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if head.starts_with("POST /reject ") {
                        // Answers before the body is in, and never reads it.
                        let early = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!";
                        let _ = stream.write_all(early).await;
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        return;
                    }
                    let (body, trailers) = if head.to_ascii_lowercase().contains("transfer-encoding: chunked")
                    {
                        match read_chunked(&mut stream, &mut buf).await {
                            Some(read) => read,
                            None => return,
                        }
                    } else {
                        while buf.len() < length {
                            if !read_more(&mut stream, &mut buf).await {
                                return;
                            }
                        }
                        (buf.drain(..length).collect(), String::new())
                    };
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let is_head = head.starts_with("HEAD ");
                    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
                    let text = format!("{} {sum}", body.len());
                    seen.lock().unwrap().push(Seen { raw_head, head, body, trailers });
                    let answer = match path.as_str() {
                        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n".to_owned(),
                        "/bad-trailers" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 5\r\nContent-Length: 99\r\nHost: evil.test\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
                        "/early" => "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned(),
                        "/body" => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()),
                        "/close" => "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end".to_owned(),
                        "/drop" => "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndrop".to_owned(),
                        "/names-length" => "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
                        "/names-encoding" => "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_owned(),
                        "/two-lengths" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!".to_owned(),
                        "/length-list" => "HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\nhello!!".to_owned(),
                        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}", path.len(), path),
                    };
                    // A HEAD answer is the head alone, its Content-Length that of the GET's body.
                    let answer = match answer.split_once("\r\n\r\n") {
                        Some((head_only, _)) if is_head => format!("{head_only}\r\n\r\n"),
                        _ => answer,
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err()
                        || matches!(path.as_str(), "/close" | "/drop")
                    {
                        return;
                    }
                }
            });
        }
    });
    (received, connections)
}

/// Reads more of a connection into `buf`; `false` at its end.
pub async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16384];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Reads a chunked body from the front of `buf` and the connection: its data, and its trailer
/// lines as they came.
pub async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Vec<u8>, String)> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            if !read_more(stream, buf).await {
                return None;
            }
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailer lines, then the empty line.
            let mut trailers = String::new();
            loop {
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.drain(..2);
                        return Some((body, trailers));
                    }
                    Some(at) => {
                        trailers.push_str(&String::from_utf8_lossy(&buf.drain(..at + 2).collect::<Vec<u8>>()))
                    }
                    None if !read_more(stream, buf).await => return None,
                    None => {}
                }
            }
        }
        while buf.len() < size + 2 {
            if !read_more(stream, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Sends `bytes` on a new connection to `addr` and reads until the proxy closes it (or 5 s
/// pass): all it answered.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.unwrap();
    read_until_closed(&mut stream).await
}

/// Reads until the peer closes (or 5 s pass), as text.
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// The status codes of the answers in `text`, in order (interim answers included).
pub fn statuses(text: &str) -> Vec<u16> {
    answers(text).into_iter().map(|(status, _, _)| status).collect()
}

/// The answers in `text`, one after the other as a client reads them: status, head and body
/// (bodies by `Content-Length` or chunked; an answer without either runs to the end).
pub fn answers(text: &str) -> Vec<(u16, String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    // hyper answers an HTTP/1.0 request in HTTP/1.0, Portico in HTTP/1.1 (RFC 9110 §6.2).
    let status_of = |r: &str| {
        let line = r.strip_prefix("HTTP/1.1 ").or_else(|| r.strip_prefix("HTTP/1.0 "))?;
        line.get(..3)?.parse::<u16>().ok()
    };
    while let Some(status) = status_of(rest) {
        let Some((head, after)) = rest.split_once("\r\n\r\n") else { break };
        let lower = head.to_ascii_lowercase();
        let length =
            lower.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
        // An answer to HEAD has a length but no body: the next answer follows its head.
        let (body, next) =
            if (100..200).contains(&status) || status == 204 || status == 304 || status_of(after).is_some() {
                ("", after)
            } else if let Some(length) = length {
                after.split_at(length.min(after.len()))
            } else if lower.contains("transfer-encoding: chunked") {
                // The last chunk, then the trailer section up to its empty line.
                let end = after.find("\r\n0\r\n").map_or(after.len(), |at| {
                    after[at + 2..].find("\r\n\r\n").map_or(after.len(), |e| at + 2 + e + 4)
                });
                after.split_at(end.min(after.len()))
            } else {
                (after, "")
            };
        found.push((status, head.to_owned(), body.to_owned()));
        rest = next;
    }
    found
}
