//! End-to-end tests of the echo workload over real loopback sockets.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_echo::{Echo, EchoError, Identity, TlsConfig};
use portico_testkit::http::{Answer, exchange, send};
use portico_testkit::tls;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any single network step, so a bug hangs no test.
const STEP: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), EchoError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        let result = tokio::time::timeout(STEP, self.task).await.unwrap().unwrap();
        assert!(result.is_ok(), "run failed: {result:?}");
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn identity() -> Identity {
    Identity { pod: Some("web-0".into()), namespace: Some("shop".into()), service: Some("web".into()) }
}

async fn start(identity: Identity, tls: Option<TlsConfig>) -> Running {
    let echo = Echo::bind(loopback(), identity, tls).await.unwrap();
    let addr = echo.local_addr();
    assert_eq!(addr.ip(), loopback().ip());
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(echo.run(async move {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

#[tokio::test]
async fn http1_get_reports_everything_it_saw() {
    let server = start(identity(), None).await;
    let response = send(
        server.addr,
        b"GET /hello/world?a=1&b=2 HTTP/1.1\r\n\
          Host: shop.example.test\r\n\
          X-Multi: one\r\n\
          X-Multi: two\r\n\
          User-Agent: echo-test\r\n\
          Connection: close\r\n\r\n",
    )
    .await;

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-portico-pod"), Some("web-0"));
    let json = response.json();
    assert_eq!(json["path"], "/hello/world");
    assert_eq!(json["query"], "a=1&b=2");
    assert_eq!(json["host"], "shop.example.test");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["proto"], "HTTP/1.1");
    assert_eq!(json["headers"]["host"], "shop.example.test");
    assert_eq!(json["headers"]["x-multi"], "one, two");
    assert_eq!(json["headers"]["user-agent"], "echo-test");
    assert_eq!(json["headers"]["connection"], "close");
    assert_eq!(json["pod"], "web-0");
    assert_eq!(json["namespace"], "shop");
    assert_eq!(json["service"], "web");
    assert_eq!(json["tls"], false);
    assert_eq!(json["server"], server.addr.to_string());
    let client: SocketAddr = json["client"].as_str().unwrap().parse().unwrap();
    assert_eq!(client.ip(), server.addr.ip());
    server.stop().await;
}

#[tokio::test]
async fn http10_without_host_and_identity_reports_nulls() {
    let server = start(Identity::default(), None).await;
    let response = send(server.addr, b"DELETE /thing HTTP/1.0\r\n\r\n").await;

    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-portico-pod"), None);
    let json = response.json();
    assert_eq!(json["path"], "/thing");
    assert_eq!(json["query"], Value::Null);
    assert_eq!(json["host"], Value::Null);
    assert_eq!(json["method"], "DELETE");
    assert_eq!(json["proto"], "HTTP/1.0");
    assert_eq!(json["headers"], serde_json::json!({}));
    assert_eq!(json["pod"], Value::Null);
    assert_eq!(json["namespace"], Value::Null);
    assert_eq!(json["service"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn http1_keep_alive_with_bodies_via_hyper_client() {
    let server = start(identity(), None).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn_task = tokio::spawn(conn);

    for (i, path) in ["/first", "/status/503"].into_iter().enumerate() {
        let request = http::Request::post(path)
            .header("host", "keep.alive")
            .body(Full::new(Bytes::from(vec![b'z'; 1000 * (i + 1)])))
            .unwrap();
        let response = tokio::time::timeout(STEP, sender.send_request(request)).await.unwrap().unwrap();
        let expected = if i == 0 { 200 } else { 503 };
        assert_eq!(response.status().as_u16(), expected);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["path"], path);
        assert_eq!(json["method"], "POST");
        assert_eq!(json["headers"]["content-length"], (1000 * (i + 1)).to_string());
    }
    drop(sender);
    let _ = conn_task.await;
    server.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_reports_http2() {
    let server = start(identity(), None).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let conn_task = tokio::spawn(conn);

    let uri = format!("http://{}/over/h2?x=y", server.addr);
    let request = http::Request::get(&uri).header("x-test", "h2").body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(STEP, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["x-portico-pod"], "web-0");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["proto"], "HTTP/2.0");
    assert_eq!(json["path"], "/over/h2");
    assert_eq!(json["query"], "x=y");
    assert_eq!(json["host"], server.addr.to_string());
    assert_eq!(json["headers"]["x-test"], "h2");
    assert_eq!(json["tls"], false);

    let request = http::Request::get(format!("http://{}/status/504", server.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 504);

    drop(sender);
    let _ = conn_task.await;
    server.stop().await;
}

#[tokio::test]
async fn status_path_sets_the_status_code() {
    let server = start(identity(), None).await;
    let response =
        send(server.addr, b"GET /status/503 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["path"], "/status/503");
    assert_eq!(response.json()["pod"], "web-0");

    let response =
        send(server.addr, b"GET /status/600 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn informational_statuses_do_not_break_the_server() {
    let server = start(identity(), None).await;
    for path in ["/status/100", "/status/101", "/status/204", "/status/304"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let mut stream = stream;
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut buf)).await.unwrap();
        assert!(buf.starts_with(b"HTTP/1.1 "), "{path}: {buf:?}");
    }
    let response = send(server.addr, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["path"], "/after");
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_oversized_bodies_are_survived() {
    let server = start(identity(), None).await;

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"\x00\x01garbage that is not http\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut buf)).await.unwrap();

    let response =
        send(server.addr, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n").await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["path"], "/upload");

    let response = send(server.addr, b"GET /still-up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn udp_datagrams_are_echoed_on_the_tcp_port() {
    let server = start(identity(), None).await;
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.connect(server.addr).await.unwrap();
    for payload in [&b"ping"[..], &[0u8, 255, 7][..], &vec![b'u'; 8000][..]] {
        client.send(payload).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        let (len, from) = tokio::time::timeout(STEP, client.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(from, server.addr);
        assert_eq!(&buf[..len], payload);
    }
    server.stop().await;
}

fn self_signed() -> (TlsConfig, rustls_pki_types::CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let tls = TlsConfig::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    (tls, certified.cert.der().clone())
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(STEP, connector.connect(name, tcp)).await.unwrap().unwrap()
}

#[tokio::test]
async fn tls_http1_reports_tls_true() {
    let (tls, cert) = self_signed();
    let server = start(identity(), Some(tls)).await;
    let connector = tls::client(&[cert], &[b"http/1.1"]);
    let stream = tls_connect(server.addr, &connector).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    let response =
        exchange(stream, b"GET /secure?q=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 200);
    let json = response.json();
    assert_eq!(json["tls"], true);
    assert_eq!(json["proto"], "HTTP/1.1");
    assert_eq!(json["path"], "/secure");
    assert_eq!(json["query"], "q=1");
    assert_eq!(json["host"], "localhost");

    // UDP stays plain even when TCP is TLS.
    let client = UdpSocket::bind(loopback()).await.unwrap();
    client.send_to(b"plain", server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let (len, _) = tokio::time::timeout(STEP, client.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..len], b"plain");
    server.stop().await;
}

#[tokio::test]
async fn tls_alpn_h2_reports_http2() {
    let (tls, cert) = self_signed();
    let server = start(identity(), Some(tls)).await;
    let connector = tls::client(&[cert], &[b"h2"]);
    let stream = tls_connect(server.addr, &connector).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let request = http::Request::get("https://localhost/h2/tls").body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(STEP, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["tls"], true);
    assert_eq!(json["proto"], "HTTP/2.0");
    assert_eq!(json["host"], "localhost");
    drop(sender);
    let _ = conn_task.await;
    server.stop().await;
}

#[tokio::test]
async fn plain_http_to_tls_port_is_survived() {
    let (tls, cert) = self_signed();
    let server = start(identity(), Some(tls)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut buf)).await.unwrap();
    assert!(!buf.starts_with(b"HTTP/"), "plain answer on a TLS port");

    let connector = tls::client(&[cert], &[b"http/1.1"]);
    let stream = tls_connect(server.addr, &connector).await;
    let response =
        exchange(stream, b"GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["tls"], true);
    server.stop().await;
}

#[test]
fn tls_config_errors_name_their_source() {
    let error = TlsConfig::from_pem(b"not pem", b"not pem").unwrap_err();
    assert!(matches!(error, EchoError::NoCertificate { .. }), "{error:?}");

    let first = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    let second = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
    let cert_pem = first.cert.pem();
    let error = TlsConfig::from_pem(cert_pem.as_bytes(), b"").unwrap_err();
    assert!(error.to_string().contains("private key"), "unexpected: {error}");
    let error =
        TlsConfig::from_pem(cert_pem.as_bytes(), second.signing_key.serialize_pem().as_bytes()).unwrap_err();
    assert!(matches!(error, EchoError::Tls { .. }), "{error:?}");

    let missing = std::env::temp_dir().join("portico-echo-test-missing-cert.pem");
    let error = TlsConfig::from_files(&missing, &missing).unwrap_err();
    assert!(error.to_string().contains(&missing.display().to_string()), "unexpected: {error}");
}

#[test]
fn tls_config_from_files_loads() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("portico-echo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let loaded = TlsConfig::from_files(&cert, &key);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}

#[tokio::test]
async fn binding_a_taken_port_names_the_address() {
    let taken = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = Echo::bind(addr, Identity::default(), None).await.unwrap_err();
    assert!(matches!(error, EchoError::Bind { proto: "TCP", addr: a, .. } if a == addr), "{error:?}");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_in_flight_requests() {
    let server = start(identity(), None).await;

    // A request whose body is only half sent is in flight when shutdown starts.
    let mut in_flight = TcpStream::connect(server.addr).await.unwrap();
    in_flight.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello").await.unwrap();
    // Make sure the server has accepted it before shutting down.
    let warm = send(server.addr, b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(warm.status, 200);

    let Running { addr, stop, task } = server;
    stop.send(()).unwrap();

    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "port still accepts after shutdown");
    assert!(!task.is_finished(), "run returned before in-flight finished");

    in_flight.write_all(b"world").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, in_flight.read_to_end(&mut buf)).await.unwrap().unwrap();
    let response = Answer::parse(&buf);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["path"], "/slow");

    let result = tokio::time::timeout(STEP, task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_with_idle_connection_returns_promptly() {
    let server = start(identity(), None).await;
    // An idle keep-alive connection must not hold shutdown for the whole drain timeout.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(STEP, idle.read_exact(&mut first)).await.unwrap().unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let started = std::time::Instant::now();
    let addr = server.addr;
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(TcpStream::connect(addr).await.is_err());
}
