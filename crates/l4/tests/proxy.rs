//! The proxy over real loopback sockets: spread, refusal, affinity, reloads, UDP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_dataplane::{DataPlane, drain};
use portico_l4::{Frontend, L4Proxy, ListenKey, Metrics, Options, Table};
use portico_plan::Protocol;
use portico_testkit::echo::Fleet;
use portico_testkit::http;
use portico_testkit::net::free_port_on;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// Starts `n` echo backends on 127.0.0.1, for as long as the test runs, and returns their
/// addresses.
async fn backends(n: usize) -> Vec<SocketAddr> {
    Fleet::on_localhost(n).await.detach()
}

fn frontend(endpoints: Vec<SocketAddr>, affinity: Option<Duration>) -> Frontend {
    Frontend {
        service: "default/web".into(),
        port: "http".into(),
        method: "ClusterIP",
        endpoints,
        affinity,
        source_ranges: Vec::new(),
    }
}

fn table(key: ListenKey, frontend: Frontend) -> Table {
    let mut t = Table::default();
    t.frontends.insert(key, frontend);
    t
}

fn tcp_key(last: u8) -> ListenKey {
    let ip = IpAddr::from([127, 96, 200, last]);
    ListenKey { addr: SocketAddr::new(ip, free_port_on(ip)), protocol: Protocol::Tcp }
}

fn proxy() -> L4Proxy {
    proxy_with(Options { udp_idle: Duration::from_millis(500), ..Options::default() }).0
}

/// A proxy with `options`, and the registry of its metrics; it is never drained.
fn proxy_with(options: Options) -> (L4Proxy, prometheus_client::registry::Registry) {
    let mut registry = prometheus_client::registry::Registry::default();
    let proxy = L4Proxy::new(options, Arc::new(Metrics::register(&mut registry)), drain::channel().1);
    (proxy, registry)
}

/// The metrics as `/metrics` shows them.
fn metrics_text(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

/// One HTTP request on `stream`, kept open; returns the pod that answered.
async fn ask(stream: &mut TcpStream) -> String {
    http::ask(stream).await.pod()
}

async fn connect_from(client: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(client, 0))?;
    socket.connect(to).await
}

#[tokio::test]
async fn spreads_over_ten_endpoints() {
    let endpoints = backends(10).await;
    let key = tcp_key(1);
    let proxy = proxy();
    assert!(proxy.apply_table(&table(key, frontend(endpoints, None))).await.is_empty());
    let mut pods = BTreeSet::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(key.addr).await.unwrap();
        pods.insert(ask(&mut s).await);
    }
    assert_eq!(pods.len(), 10, "{pods:?}");
}

#[tokio::test]
async fn no_endpoints_resets_at_once() {
    let key = tcp_key(2);
    let proxy = proxy();
    assert!(proxy.apply_table(&table(key, frontend(Vec::new(), None))).await.is_empty());
    let started = Instant::now();
    let mut s = TcpStream::connect(key.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let outcome = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("no hang");
    match outcome {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => assert_eq!(n, 0),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn client_ip_affinity_pins_and_expires() {
    let endpoints = backends(3).await;
    let key = tcp_key(3);
    let proxy = proxy();
    proxy.apply_table(&table(key, frontend(endpoints, Some(Duration::from_millis(800))))).await;
    let a = IpAddr::from([127, 0, 0, 11]);
    let b = IpAddr::from([127, 0, 0, 12]);
    let mut first = connect_from(a, key.addr).await.unwrap();
    let pinned = ask(&mut first).await;
    for _ in 0..5 {
        let mut again = connect_from(a, key.addr).await.unwrap();
        assert_eq!(ask(&mut again).await, pinned);
        let mut other = connect_from(b, key.addr).await.unwrap();
        ask(&mut other).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut after: BTreeSet<String> = BTreeSet::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let mut s = connect_from(a, key.addr).await.unwrap();
        after.insert(ask(&mut s).await);
    }
    assert!(after.len() > 1, "affinity did not expire: {after:?}");
}

#[tokio::test]
async fn reload_keeps_established_connections_and_moves_new_ones() {
    let endpoints = backends(2).await;
    let key = tcp_key(4);
    let proxy = proxy();
    proxy.apply_table(&table(key, frontend(vec![endpoints[0]], None))).await;
    let mut long_lived = TcpStream::connect(key.addr).await.unwrap();
    assert_eq!(ask(&mut long_lived).await, "pod-0");
    // The endpoint the stream uses leaves; a new one arrives.
    proxy.apply_table(&table(key, frontend(vec![endpoints[1]], None))).await;
    for _ in 0..3 {
        assert_eq!(ask(&mut long_lived).await, "pod-0", "the established stream keeps its endpoint");
        let mut fresh = TcpStream::connect(key.addr).await.unwrap();
        assert_eq!(ask(&mut fresh).await, "pod-1", "new connections go to the new endpoint");
    }
    // Removing the listener closes the port but not the stream.
    proxy.apply_table(&Table::default()).await;
    assert!(TcpStream::connect(key.addr).await.is_err());
    assert_eq!(ask(&mut long_lived).await, "pod-0");
    assert_eq!(proxy.active(), 1);
}

#[tokio::test]
async fn a_taken_port_is_reported_and_the_rest_is_served() {
    let endpoints = backends(1).await;
    let taken = std::net::TcpListener::bind("127.96.201.1:0").unwrap();
    let busy = ListenKey { addr: taken.local_addr().unwrap(), protocol: Protocol::Tcp };
    let fine = tcp_key(5);
    let mut t = table(fine, frontend(endpoints.clone(), None));
    t.frontends.insert(busy, frontend(endpoints, None));
    let proxy = proxy();
    let errors = proxy.apply_table(&t).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, busy);
    assert!(errors[0].to_string().contains("ClusterIP default/web"), "{}", errors[0]);
    let mut s = TcpStream::connect(fine.addr).await.unwrap();
    assert_eq!(ask(&mut s).await, "pod-0");
}

#[tokio::test]
async fn source_ranges_filter_clients() {
    let endpoints = backends(1).await;
    let key = tcp_key(6);
    let mut f = frontend(endpoints, None);
    f.method = "LoadBalancer";
    f.source_ranges = vec!["127.0.0.20/32".parse().unwrap()];
    let proxy = proxy();
    proxy.apply_table(&table(key, f)).await;
    let mut allowed = connect_from(IpAddr::from([127, 0, 0, 20]), key.addr).await.unwrap();
    assert_eq!(ask(&mut allowed).await, "pod-0");
    let mut denied = connect_from(IpAddr::from([127, 0, 0, 21]), key.addr).await.unwrap();
    let mut buf = [0u8; 8];
    denied.write_all(b"GET / HTTP/1.1\r\n\r\n").await.ok();
    let read = tokio::time::timeout(Duration::from_secs(2), denied.read(&mut buf)).await.expect("no hang");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// A UDP server answering every datagram with its own name.
async fn named_udp(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(name.as_bytes(), from).await;
        }
    });
    addr
}

async fn udp_ask(client: &UdpSocket, to: SocketAddr) -> String {
    client.send_to(b"hi", to).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
        .await
        .expect("answer")
        .unwrap();
    assert_eq!(from, to, "answers come from the service address");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn udp_flows_spread_stick_and_follow_endpoint_changes() {
    let a = named_udp("a").await;
    let b = named_udp("b").await;
    let ip = IpAddr::from([127, 96, 202, 1]);
    let key = ListenKey { addr: SocketAddr::new(ip, free_port_on(ip)), protocol: Protocol::Udp };
    let proxy = proxy();
    proxy.apply_table(&table(key, frontend(vec![a, b], None))).await;
    let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = udp_ask(&c1, key.addr).await;
    let second = udp_ask(&c2, key.addr).await;
    assert_ne!(first, second, "two clients, two endpoints");
    for _ in 0..3 {
        assert_eq!(udp_ask(&c1, key.addr).await, first, "a flow sticks to its endpoint");
    }
    // The endpoint of c1's flow leaves: its next datagram goes to the other one.
    let remaining = if first == "a" { b } else { a };
    proxy.apply_table(&table(key, frontend(vec![remaining], None))).await;
    assert_eq!(udp_ask(&c1, key.addr).await, second);
    // No endpoints: datagrams are dropped, the listener stays.
    proxy.apply_table(&table(key, frontend(Vec::new(), None))).await;
    c1.send_to(b"hi", key.addr).await.unwrap();
    let mut buf = [0u8; 8];
    assert!(tokio::time::timeout(Duration::from_millis(300), c1.recv_from(&mut buf)).await.is_err());
}

#[tokio::test]
async fn the_drain_closes_listeners_and_waits_for_open_connections_within_grace() {
    let endpoints = backends(1).await;
    let key = tcp_key(7);
    let mut registry = prometheus_client::registry::Registry::default();
    let (trigger, watch) = drain::channel();
    let proxy = L4Proxy::new(Options::default(), Arc::new(Metrics::register(&mut registry)), watch);
    assert!(!proxy.readiness().is_ready(), "not ready before a first table");
    proxy.apply_table(&table(key, frontend(endpoints, None))).await;
    assert!(proxy.readiness().is_ready());
    let mut s = TcpStream::connect(key.addr).await.unwrap();
    ask(&mut s).await;
    let started = Instant::now();
    assert_eq!(trigger.drain(Duration::from_millis(300)).await, 1, "the open connection was still held");
    assert!(started.elapsed() >= Duration::from_millis(250), "waited for the open connection");
    assert!(TcpStream::connect(key.addr).await.is_err(), "listener closed");
    drop(s);
}

#[tokio::test]
async fn the_drain_ends_as_soon_as_the_last_connection_closes() {
    let endpoints = backends(1).await;
    let key = tcp_key(8);
    let mut registry = prometheus_client::registry::Registry::default();
    let (trigger, watch) = drain::channel();
    let proxy = L4Proxy::new(Options::default(), Arc::new(Metrics::register(&mut registry)), watch);
    proxy.apply_table(&table(key, frontend(endpoints, None))).await;
    let mut s = TcpStream::connect(key.addr).await.unwrap();
    ask(&mut s).await;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    });
    let started = Instant::now();
    assert_eq!(trigger.drain(Duration::from_secs(10)).await, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drained once the client left: {:?}",
        started.elapsed()
    );
}

/// A TCP server on 127.0.0.1 that runs `handle` for each connection it accepts.
async fn tcp_backend<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = server.accept().await {
            tokio::spawn(handle(s));
        }
    });
    backend
}

#[tokio::test]
async fn half_close_passes_through_both_ways() {
    // A server that answers only once the client has finished sending.
    let backend = tcp_backend(|mut s| async move {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes()).await.unwrap();
    })
    .await;
    let key = tcp_key(8);
    let proxy = proxy();
    proxy.apply_table(&table(key, frontend(vec![backend], None))).await;
    let mut s = TcpStream::connect(key.addr).await.unwrap();
    s.write_all(&[7u8; 100_000]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(answer, "got 100000 bytes");
}

#[tokio::test]
async fn a_refused_endpoint_is_retried_with_the_bytes_the_client_sent_first() {
    let live = backends(1).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let key = tcp_key(9);
    let proxy = proxy();
    assert!(proxy.apply_table(&table(key, frontend(vec![dead, live[0]], None))).await.is_empty());
    for _ in 0..12 {
        // The request is written before the proxy's task runs (this test's runtime has one
        // thread), so the proxy reads it at accept and sends it along with the connect.
        let mut s = TcpStream::connect(key.addr).await.unwrap();
        let pod = tokio::time::timeout(Duration::from_secs(5), ask(&mut s)).await.expect("answered");
        assert_eq!(pod, "pod-0");
    }
}

#[tokio::test]
async fn a_server_that_speaks_first_is_reached_without_client_bytes() {
    let backend = tcp_backend(|mut s| async move {
        s.write_all(b"220 ready\r\n").await.unwrap();
        let mut line = [0u8; 6];
        s.read_exact(&mut line).await.unwrap();
        s.write_all(&line).await.unwrap();
    })
    .await;
    let key = tcp_key(10);
    let proxy = proxy();
    assert!(proxy.apply_table(&table(key, frontend(vec![backend], None))).await.is_empty());
    let mut s = TcpStream::connect(key.addr).await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut greeting))
        .await
        .expect("greeted")
        .unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
    s.write_all(b"QUIT\r\n").await.unwrap();
    let mut echoed = [0u8; 6];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"QUIT\r\n");
}

/// Segments a socket has received, as `ss` reports them (`segs_in`), found by its local port.
fn segments_received(local: SocketAddr) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "all", "sport", "=", &format!(":{}", local.port())])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = text.split_whitespace().find_map(|f| f.strip_prefix("segs_in:"));
    field.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no segs_in in `ss` output: {text}"))
}

/// Sends `bytes` corked, then shuts down: they and the FIN leave in one segment.
async fn last_bytes_then_fin(s: &mut TcpStream, bytes: &[u8]) {
    socket2::SockRef::from(&*s).send_with_flags(bytes, libc::MSG_MORE).unwrap();
    s.shutdown().await.unwrap();
}

/// Everything the proxy sends until it closes its side (at most 5 s).
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("closed by the proxy")
        .unwrap();
    got
}

#[tokio::test]
async fn the_last_bytes_before_a_fin_go_out_with_it() {
    // The backend's greeting and its FIN reach the proxy together (corked, then shut down),
    // so the proxy knows, when it forwards the greeting, that nothing follows.
    let backend = tcp_backend(|mut s| async move {
        last_bytes_then_fin(&mut s, b"bye\r\n").await;
        let _ = s.read(&mut [0u8; 1]).await;
    })
    .await;
    let key = tcp_key(11);
    let proxy = proxy();
    assert!(proxy.apply_table(&table(key, frontend(vec![backend], None))).await.is_empty());
    let mut s = TcpStream::connect(key.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut s).await, b"bye\r\n");
    // The SYN-ACK, then the greeting with the FIN: two segments, not three.
    assert_eq!(segments_received(s.local_addr().unwrap()), 2);
}

#[tokio::test]
async fn a_server_that_shuts_down_first_still_hears_the_client() {
    // The server's answer and its FIN arrive together, so the proxy knows the server is done
    // without reading again; the client's direction must stay open all the same.
    let (heard_tx, heard_rx) = tokio::sync::oneshot::channel();
    let heard_tx = std::sync::Mutex::new(Some(heard_tx));
    let backend = tcp_backend(move |mut s| {
        let tx = heard_tx.lock().unwrap().take();
        async move {
            last_bytes_then_fin(&mut s, b"done\r\n").await;
            let mut heard = Vec::new();
            s.read_to_end(&mut heard).await.unwrap();
            if let Some(tx) = tx {
                let _ = tx.send(heard);
            }
        }
    })
    .await;
    let key = tcp_key(12);
    let proxy = proxy();
    assert!(proxy.apply_table(&table(key, frontend(vec![backend], None))).await.is_empty());
    let mut s = TcpStream::connect(key.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut s).await, b"done\r\n");
    s.write_all(b"still here\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    let heard =
        tokio::time::timeout(Duration::from_secs(5), heard_rx).await.expect("server heard the client");
    assert_eq!(heard.unwrap(), b"still here\r\n");
}

/// The byte at `i` of the test stream: a pattern that shows a lost, doubled or reordered
/// chunk anywhere.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

#[tokio::test]
async fn a_stream_of_mixed_sizes_arrives_intact_under_back_pressure_then_small_messages_follow() {
    let backend = tcp_backend(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await;
    let key = tcp_key(13);
    let proxy = proxy();
    assert!(proxy.apply_table(&table(key, frontend(vec![backend], None))).await.is_empty());
    let s = TcpStream::connect(key.addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    const TOTAL: usize = 6 << 20;
    let writer = tokio::spawn(async move {
        // Writes from 1 byte to 100 KiB: reads through the proxy are short, full and growing.
        let (mut at, mut size) = (0, 1);
        while at < TOTAL {
            let end = (at + size).min(TOTAL);
            let chunk: Vec<u8> = (at..end).map(pattern).collect();
            w.write_all(&chunk).await.unwrap();
            at = end;
            size = (size * 7 + 13) % 100_000 + 1;
        }
        w
    });
    // A reader that stops now and then, so the proxy's sends find the socket full.
    let mut got = vec![0u8; TOTAL];
    let mut at = 0;
    while at < TOTAL {
        let n = tokio::time::timeout(Duration::from_secs(10), r.read(&mut got[at..]))
            .await
            .expect("the stream keeps moving")
            .unwrap();
        assert!(n > 0, "the stream ended early at {at}");
        if (at + n) / (1 << 20) != at / (1 << 20) {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        at += n;
    }
    let first_bad = got.iter().enumerate().position(|(i, b)| *b != pattern(i));
    assert_eq!(first_bad, None, "the stream differs from what was sent");
    let mut w = writer.await.unwrap();
    for round in 0..20u8 {
        let message = vec![round; 1 + usize::from(round) * 50];
        w.write_all(&message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut echoed))
            .await
            .expect("small message echoed")
            .unwrap();
        assert_eq!(echoed, message);
    }
    w.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut rest)).await.expect("closed").unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn a_udp_port_moved_away_and_back_is_served_again() {
    let a = named_udp("a").await;
    let ip = IpAddr::from([127, 96, 205, 1]);
    let key = ListenKey { addr: SocketAddr::new(ip, free_port_on(ip)), protocol: Protocol::Udp };
    let proxy = proxy();
    let serving = table(key, frontend(vec![a], None));
    proxy.apply_table(&serving).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(udp_ask(&client, key.addr).await, "a");
    // The port leaves the table while the client's flow is open, and comes back at once:
    // the old socket may not be closed yet, and the bind is tried again until it is.
    proxy.apply_table(&Table::default()).await;
    proxy.apply_table(&serving).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(udp_ask(&client, key.addr).await, "a");
    // A port another socket holds is tried again until it is free.
    let other = ListenKey { addr: SocketAddr::new(ip, free_port_on(ip)), protocol: Protocol::Udp };
    let holder = std::net::UdpSocket::bind(other.addr).unwrap();
    let errors = proxy.apply_table(&table(other, frontend(vec![a], None))).await;
    assert_eq!(errors.len(), 1, "reported while it waits");
    drop(holder);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(udp_ask(&client, other.addr).await, "a");
}

#[tokio::test]
async fn series_of_listeners_that_go_are_dropped() {
    let endpoints = backends(1).await;
    let (proxy, registry) = proxy_with(Options::default());
    let keys: Vec<ListenKey> = (1..=3).map(|i| tcp_key(200 + i)).collect();
    let mut all = Table::default();
    for (i, key) in keys.iter().enumerate() {
        let mut f = frontend(endpoints.clone(), None);
        f.service = format!("default/web-{i}");
        all.frontends.insert(*key, f);
    }
    proxy.apply_table(&all).await;
    for key in &keys {
        let mut s = TcpStream::connect(key.addr).await.unwrap();
        assert_eq!(ask(&mut s).await, "pod-0");
    }
    let text = metrics_text(&registry);
    for i in 0..3 {
        assert!(text.contains(&format!("service=\"default/web-{i}\"")), "{text}");
    }
    proxy.apply_table(&table(keys[0], all.frontends[&keys[0]].clone())).await;
    let text = metrics_text(&registry);
    assert!(text.contains("service=\"default/web-0\""), "{text}");
    assert!(
        !text.contains("service=\"default/web-1\"") && !text.contains("service=\"default/web-2\""),
        "{text}"
    );
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let endpoints = backends(1).await;
    let key = tcp_key(210);
    let (proxy, _registry) =
        proxy_with(Options { tcp_idle: Duration::from_millis(400), ..Options::default() });
    proxy.apply_table(&table(key, frontend(endpoints, None))).await;
    let mut busy = TcpStream::connect(key.addr).await.unwrap();
    let mut idle = TcpStream::connect(key.addr).await.unwrap();
    assert_eq!(ask(&mut idle).await, "pod-0");
    // A connection in use stays open past the idle time.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ask(&mut busy).await, "pod-0");
    }
    let mut buf = [0u8; 8];
    let read =
        tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0)), "{read:?}");
    assert_eq!(ask(&mut busy).await, "pod-0");
}

#[tokio::test]
async fn udp_flows_are_bounded_and_the_idlest_makes_room() {
    let a = named_udp("a").await;
    let ip = IpAddr::from([127, 96, 206, 1]);
    let key = ListenKey { addr: SocketAddr::new(ip, free_port_on(ip)), protocol: Protocol::Udp };
    let options = Options { udp_flows_per_listener: 3, udp_flows: 100, ..Options::default() };
    let (proxy, _registry) = proxy_with(options);
    proxy.apply_table(&table(key, frontend(vec![a], None))).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(udp_ask(&client, key.addr).await, "a");
        clients.push(client);
    }
    assert_eq!(proxy.active(), 3);
    // The first two speak again; a fourth client takes the place of the third, idle longest.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for client in &clients[..2] {
        assert_eq!(udp_ask(client, key.addr).await, "a");
    }
    let fourth = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(udp_ask(&fourth, key.addr).await, "a");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(proxy.active(), 3, "still three flows");
    // The third's flow is gone: its next datagram makes a new one, in place of another.
    assert_eq!(udp_ask(&clients[2], key.addr).await, "a");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(proxy.active(), 3);
}

#[tokio::test]
async fn tcp_connections_are_bounded_per_listener_and_in_all() {
    let backend = backends(1).await;
    let (a, b, c) = (tcp_key(31), tcp_key(32), tcp_key(33));
    let options = Options { tcp_connections_per_listener: 2, tcp_connections: 3, ..Options::default() };
    let (proxy, registry) = proxy_with(options);
    let mut t = Table::default();
    for key in [a, b, c] {
        t.frontends.insert(key, frontend(backend.clone(), None));
    }
    assert!(proxy.apply_table(&t).await.is_empty());
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(a.addr).await.unwrap();
        assert_eq!(ask(&mut stream).await, "pod-0");
        held.push(stream);
    }
    // The listener is full: a third client is queued by the kernel, not served.
    let mut waiting = TcpStream::connect(a.addr).await.unwrap();
    waiting.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "a third connection was served past the listener's bound of 2");
    // Another listener still has room, up to the total of 3.
    let mut other = TcpStream::connect(b.addr).await.unwrap();
    assert_eq!(ask(&mut other).await, "pod-0");
    let mut last = TcpStream::connect(c.addr).await.unwrap();
    last.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), last.read(&mut byte)).await;
    assert!(early.is_err(), "a fourth connection was served past the total bound of 3");
    // Seats go to the first in line: one of a's connections ending lets c's in (it waited
    // for the total), and b's ending then lets a's queued one in (it waited for a's own).
    drop(held.remove(0));
    let answer = tokio::time::timeout(Duration::from_secs(5), last.read(&mut byte)).await;
    assert!(matches!(answer, Ok(Ok(1))), "the connection waiting for the total was not served");
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "served past the total bound of 3");
    drop(other);
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut byte)).await;
    assert!(matches!(answer, Ok(Ok(1))), "the queued connection was not served once a seat freed");
    let text = metrics_text(&registry);
    for bound in ["listener", "total"] {
        let series = format!("portico_l4_connections_waited_total{{bound=\"{bound}\"}} ");
        let waited = text.lines().find_map(|l| l.strip_prefix(series.as_str())).unwrap_or("0");
        assert!(waited.parse::<u64>().unwrap() >= 2, "{bound}: {text}");
    }
}
