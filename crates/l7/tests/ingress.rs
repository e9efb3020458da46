//! The Ingress data plane end to end: Plans built by the planner from manifests, served by
//! `IngressProxy` on loopback, in front of echo Pods, reached by real clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portico_dataplane::DataPlane;
use portico_l7::Options;
use portico_testkit::http::{Answer, get};
use portico_testkit::manifests::ingress;
use portico_testkit::tls;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::*;

#[tokio::test]
async fn hosts_paths_default_backend_and_normalisation() {
    let pods = [
        (1, "default", 1),
        (2, "exact", 1),
        (3, "prefix", 1),
        (4, "wild", 1),
        (5, "admin", 1),
        (6, "any", 1),
    ];
    let mut h = Harness::start(71, &pods).await;
    let yaml = [
        service(71, 1, "default", 1),
        service(71, 2, "exact", 1),
        service(71, 3, "prefix", 1),
        service(71, 4, "wild", 1),
        service(71, 5, "admin", 1),
        service(71, 6, "any", 1),
        ingress(
            "site",
            "",
            Some("a.example.test"),
            &[("/foo", "Exact", "exact"), ("/foo", "Prefix", "prefix"), ("/dir/", "Prefix", "prefix")],
            "  defaultBackend: {service: {name: default, port: {number: 80}}}\n",
        ),
        ingress("wild", "", Some("*.wild.test"), &[("/", "Prefix", "wild")], ""),
        ingress(
            "admin",
            "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8",
            Some("b.example.test"),
            &[("/admin", "Prefix", "admin")],
            "",
        ),
        ingress("public", "", Some("b.example.test"), &[("/public", "Prefix", "prefix")], ""),
        ingress("any", "", None, &[("/anyhost", "Exact", "any")], ""),
    ]
    .concat();
    h.apply(&yaml).await;
    let a = "a.example.test";
    // Exact beats Prefix on the same path; Prefix is element-wise; trailing slashes ignored.
    assert_eq!(pod_for(h.http, a, "/foo").await, "exact-0");
    assert_eq!(pod_for(h.http, "A.Example.TEST:8080", "/foo/").await, "prefix-0");
    assert_eq!(pod_for(h.http, a, "/foo/bar?x=1").await, "prefix-0");
    assert_eq!(pod_for(h.http, a, "/dir").await, "prefix-0");
    assert_eq!(pod_for(h.http, a, "/foobar").await, "default-0", "no match: the default backend");
    // The query string reaches the endpoint untouched.
    let echoed = get(h.http, a, "/foo/x?b=2&a=%2F1", "").await.json();
    assert_eq!(echoed["query"], "b=2&a=%2F1");
    // Wildcards match one label only; other hosts fall to host-less rules, then the default.
    assert_eq!(pod_for(h.http, "x.wild.test", "/").await, "wild-0");
    assert_eq!(pod_for(h.http, "x.y.wild.test", "/").await, "default-0");
    assert_eq!(pod_for(h.http, "wild.test", "/").await, "default-0");
    assert_eq!(pod_for(h.http, "whatever.test", "/anyhost").await, "any-0");
    assert_eq!(pod_for(h.http, "whatever.test", "/other").await, "default-0");
    // Spellings of /admin are /admin: its allow-list applies, /public's backend never sees them.
    let b = "b.example.test";
    assert_eq!(pod_for(h.http, b, "/public/x").await, "prefix-0");
    for sneaky in [
        "/admin",
        "/public/../admin",
        "//admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/./admin",
    ] {
        assert_eq!(get(h.http, b, sneaky, "").await.status, 403, "{sneaky}");
    }
    // An encoded slash is not a separator: this is neither /public/.. nor /admin.
    assert_eq!(pod_for(h.http, b, "/public%2F..%2Fadmin").await, "default-0");
    assert_eq!(get(h.http, b, "/../admin", "").await.status, 400);
    assert_eq!(get(h.http, b, "/a%zz", "").await.status, 400);
    // The endpoint sees the normalised path and the forwarding headers.
    let seen = get(h.http, a, "/dir//x/./y", "X-Forwarded-For: 203.0.113.9\r\n").await;
    let seen = seen.json();
    assert_eq!(seen["path"], "/dir/x/y");
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], a);
    assert_eq!(seen["headers"]["x-request-id"].as_str().map(str::len), Some(32));
    let answer = get(h.http, a, "/foo", "Connection: close, X-Secret\r\nX-Secret: 1\r\n").await;
    assert!(answer.json()["headers"].get("x-secret").is_none(), "hop-by-hop headers are dropped");
    assert_eq!(answer.headers.get("server").map(String::as_str), Some("portico"));
    // Without a default backend, what no rule matches is 404.
    h.apply(&yaml.replace("  defaultBackend: {service: {name: default, port: {number: 80}}}\n", "")).await;
    assert_eq!(get(h.http, a, "/foobar", "").await.status, 404);
    assert_eq!(get(h.http, "x.y.wild.test", "/", "").await.status, 404);
    assert_eq!(get(h.http, b, "/public%2F..%2Fadmin", "").await.status, 404);
}

#[tokio::test]
async fn requests_spread_over_ten_pods_affinity_sticks_and_no_endpoint_is_503() {
    let mut h = Harness::start(72, &[(1, "web", 10), (2, "sticky", 3)]).await;
    let yaml = [
        service(72, 1, "web", 10),
        service(72, 2, "sticky", 3),
        service(72, 3, "empty", 0),
        ingress("web", "", Some("web.test"), &[("/", "Prefix", "web"), ("/none", "Prefix", "empty")], ""),
        ingress(
            "sticky",
            "nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/session-cookie-name: route",
            Some("sticky.test"),
            &[("/", "Prefix", "sticky")],
            "",
        ),
    ]
    .concat();
    h.apply(&yaml).await;
    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        seen.insert(pod_for(h.http, "web.test", "/").await);
    }
    assert_eq!(seen.len(), 10, "{seen:?}");
    let none = get(h.http, "web.test", "/none", "").await;
    assert_eq!(none.status, 503, "{none:?}");
    // The first answer sets the cookie; requests carrying it stay on that Pod.
    let first = get(h.http, "sticky.test", "/", "").await;
    let cookie = first.headers.get("set-cookie").expect("affinity cookie").clone();
    assert!(cookie.starts_with("route=") && cookie.contains("Path=/"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    for _ in 0..10 {
        let again = get(h.http, "sticky.test", "/", &format!("Cookie: {pair}\r\n")).await;
        assert_eq!(again.pod(), first.pod());
        assert!(!again.headers.contains_key("set-cookie"));
    }
}

#[tokio::test]
async fn canary_weight_and_header() {
    let mut h = Harness::start(73, &[(1, "main", 1), (2, "canary", 1)]).await;
    let yaml = [
        service(73, 1, "main", 1),
        service(73, 2, "canary", 1),
        ingress("main", "", Some("c.test"), &[("/", "Prefix", "main")], ""),
        ingress(
            "canary",
            "nginx.ingress.kubernetes.io/canary: 'true', nginx.ingress.kubernetes.io/canary-weight: '30', nginx.ingress.kubernetes.io/canary-by-header: X-Canary",
            Some("c.test"),
            &[("/", "Prefix", "canary")],
            "",
        ),
    ]
    .concat();
    h.apply(&yaml).await;
    let mut canary = 0;
    for _ in 0..400 {
        if pod_for(h.http, "c.test", "/").await == "canary-0" {
            canary += 1;
        }
    }
    assert!((90..=150).contains(&canary), "30% of 400 expected, got {canary}");
    for _ in 0..20 {
        assert_eq!(get(h.http, "c.test", "/", "X-Canary: always\r\n").await.pod(), "canary-0");
        assert_eq!(get(h.http, "c.test", "/", "X-Canary: never\r\n").await.pod(), "main-0");
    }
}

#[tokio::test]
async fn tls_by_sni_http2_and_the_https_redirect() {
    let mut h = Harness::start(74, &[(1, "a", 1), (2, "b", 1)]).await;
    let (secret_a, cert_a) = tls_secret("cert-a", "a.test");
    let (secret_b, cert_b) = tls_secret("cert-b", "b.test");
    let tls = |host: &str, secret: &str| format!("  tls: [{{hosts: ['{host}'], secretName: {secret}}}]\n");
    let yaml = [
        service(74, 1, "a", 1),
        service(74, 2, "b", 1),
        secret_a,
        secret_b,
        ingress("a", "", Some("a.test"), &[("/", "Prefix", "a")], &tls("a.test", "cert-a")),
        ingress(
            "b",
            "nginx.ingress.kubernetes.io/ssl-redirect: 'false'",
            Some("b.test"),
            &[("/", "Prefix", "b")],
            &tls("b.test", "cert-b"),
        ),
    ]
    .concat();
    h.apply(&yaml).await;
    let roots = [cert_a, cert_b];
    // Each name gets its own certificate (the client checks the name), over HTTP/2 via ALPN.
    for (host, pod) in [("a.test", "a-0"), ("b.test", "b-0")] {
        let stream = TcpStream::connect(h.https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
        let tls = tls::client(&roots, &[b"h2", b"http/1.1"]).connect(name, stream).await.expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{host}/x")).body(Empty::<Bytes>::new()).unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echoed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echoed["pod"], pod);
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    }
    // A client offering only HTTP/1.0 by ALPN (`curl --http1.0`) is served over HTTP/1.0.
    let stream = TcpStream::connect(h.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let mut tls = tls::client(&roots, &[b"http/1.0"]).connect(name, stream).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.0"[..]));
    tls.write_all(b"GET /x HTTP/1.0\r\nHost: a.test\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("\"pod\":\"a-0\""), "{answer}");
    // A name no certificate covers gets the default certificate, which the client rejects.
    let stream = TcpStream::connect(h.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("c.test").unwrap();
    let refused = tls::client(&roots, &[]).connect(name, stream).await;
    assert!(refused.is_err(), "an unknown name must not get a.test's or b.test's certificate");
    // Plain HTTP to a TLS host: 308 to https, path and query kept; unless ssl-redirect is off.
    let moved = get(h.http, "a.test", "/p?q=1", "").await;
    assert_eq!(moved.status, 308);
    assert_eq!(moved.headers["location"], format!("https://a.test:{}/p?q=1", h.https.port()));
    assert_eq!(pod_for(h.http, "b.test", "/").await, "b-0");
}

/// Reads one answer with a `Content-Length` body, leaving what follows: its status and its
/// body as JSON.
async fn read_answer<S: tokio::io::AsyncRead + Unpin>(stream: &mut tokio::io::BufReader<S>) -> (u16, Value) {
    use tokio::io::AsyncBufReadExt;
    let (mut status, mut length) = (0, 0);
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut line)).await;
        assert!(read.expect("answer in time").unwrap() > 0, "closed before the head ended");
        if line == "\r\n" {
            break;
        }
        if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
            status = code[..3].parse().unwrap();
        } else if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn https_keep_alive_takes_long_heads_and_pipelined_requests_between_idle_waits() {
    let mut h = Harness::start(84, &[(1, "web", 1)]).await;
    let (secret, cert) = tls_secret("cert-k", "k.test");
    let tls = "  tls: [{hosts: ['k.test'], secretName: cert-k}]\n";
    h.apply(
        &[service(84, 1, "web", 1), secret, ingress("k", "", Some("k.test"), &[("/", "Prefix", "web")], tls)]
            .concat(),
    )
    .await;
    let stream = TcpStream::connect(h.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("k.test").unwrap();
    let tls = tls::client(&[cert], &[b"http/1.1"]).connect(name, stream).await.expect("handshake");
    let mut tls = tokio::io::BufReader::new(tls);
    // A head three times longer than the first read of a waiting connection.
    let pad = "p".repeat(3000);
    let long = format!("GET /long HTTP/1.1\r\nHost: k.test\r\nX-Pad: {pad}\r\n\r\n");
    tls.get_mut().write_all(long.as_bytes()).await.unwrap();
    let (status, echoed) = read_answer(&mut tls).await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["path"], "/long");
    assert_eq!(echoed["headers"]["x-pad"], pad.as_str());
    // The connection waits, then two requests come in one write.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let two = "GET /two HTTP/1.1\r\nHost: k.test\r\n\r\nGET /three?x=1 HTTP/1.1\r\nHost: k.test\r\n\r\n";
    tls.get_mut().write_all(two.as_bytes()).await.unwrap();
    for (path, query) in [("/two", ""), ("/three", "x=1")] {
        let (status, echoed) = read_answer(&mut tls).await;
        assert_eq!(status, 200, "{echoed}");
        assert_eq!(echoed["path"], path);
        assert_eq!(echoed["query"].as_str().unwrap_or_default(), query);
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
        assert_eq!(echoed["pod"], "web-0");
    }
}

/// Opens a WebSocket through the proxy; returns the stream after the 101.
async fn websocket(addr: SocketAddr, host: &str) -> TcpStream {
    upgrade(TcpStream::connect(addr).await.unwrap(), host).await
}

/// Asks for a WebSocket on an open connection; returns it after the 101.
async fn upgrade(mut stream: TcpStream, host: &str) -> TcpStream {
    let head = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    stream
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, message);
}

#[tokio::test]
async fn reloads_every_100ms_under_load_lose_no_request_and_keep_a_websocket() {
    let mut h = Harness::start(75, &[(1, "web", 4)]).await;
    let yaml = |pods: u8| {
        [service(75, 1, "web", pods), ingress("web", "", Some("r.test"), &[("/", "Prefix", "web")], "")]
            .concat()
    };
    h.apply(&yaml(4)).await;
    let mut ws = websocket(h.http, "r.test").await;
    round_trip(&mut ws, b"before").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, addr) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed), h.http);
        // Keep-alive clients: one connection each, requests back to back.
        clients.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req =
                    http::Request::get("/").header("host", "r.test").body(Empty::<Bytes>::new()).unwrap();
                let done = match sender.send_request(req).await {
                    Ok(r) if r.status() == 200 => r.into_body().collect().await.is_ok(),
                    _ => false,
                };
                let counter = if done { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for round in 0..20u8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Endpoints come and go (the Pods themselves keep running): 2, 3 or 4 of them.
        h.apply(&yaml(2 + round % 3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    round_trip(&mut ws, b"after twenty reloads").await;
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 100, "load ran: {}", ok.load(Ordering::Relaxed));
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let mut h = Harness::start(76, &[(1, "web", 1)]).await;
    h.apply(
        &[service(76, 1, "web", 1), ingress("web", "", Some("k.test"), &[("/", "Prefix", "web")], "")]
            .concat(),
    )
    .await;
    // The echo Pod reports the address each request came from: the proxy's upstream socket.
    let mut sources = BTreeSet::new();
    for _ in 0..20 {
        let answer = get(h.http, "k.test", "/", "").await;
        sources.insert(answer.json()["client"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(sources.len(), 1, "one pooled connection serves sequential requests: {sources:?}");
}

/// A streamed gRPC-like answer: what the endpoint saw, then a `.` every 100 ms, then trailers.
struct Drip {
    seen: Option<Bytes>,
    dots: u8,
    tick: tokio::time::Interval,
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Some(seen) = self.seen.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(seen))));
        }
        if self.dots == 0 {
            return Poll::Ready(None);
        }
        if self.tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        self.dots -= 1;
        if self.dots == 0 {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b".")))))
    }
}

#[tokio::test]
async fn grpc_streams_get_http2_keep_their_trailers_and_outlive_reloads() {
    let mut h = Harness::start(77, &[]).await;
    // A gRPC-like endpoint: HTTP/2 without TLS, streaming its answer for about half a second.
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(pod_ip(77, 1, 0), POD_PORT)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let service =
                hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let te = req.headers().get("te").map(|v| v.to_str().unwrap_or_default().to_owned());
                    let seen = Bytes::from(format!("{:?} te={te:?} ", req.version()));
                    let tick = tokio::time::interval(Duration::from_millis(100));
                    Ok::<_, std::convert::Infallible>(http::Response::new(Drip {
                        seen: Some(seen),
                        dots: 6,
                        tick,
                    }))
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let yaml = |extra: bool| {
        let mut yaml = [
            service(77, 1, "grpc", 1),
            ingress(
                "grpc",
                "nginx.ingress.kubernetes.io/backend-protocol: GRPC",
                Some("g.test"),
                &[("/", "Prefix", "grpc")],
                "",
            ),
        ]
        .concat();
        if extra {
            yaml.push_str(&ingress("other", "", Some("o.test"), &[("/", "Prefix", "grpc")], ""));
        }
        yaml
    };
    h.apply(&yaml(false)).await;
    // The client speaks HTTP/2 without TLS (prior knowledge) to the plain listener.
    let stream = TcpStream::connect(h.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://g.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let streaming = tokio::spawn(async move { response.into_body().collect().await });
    // The route table changes under the open stream.
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.apply(&yaml(round % 2 == 0)).await;
    }
    let collected = streaming.await.unwrap().expect("the stream finished");
    let trailers = collected.trailers().cloned().expect("trailers passed through");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    let seen = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    assert_eq!(seen, "HTTP/2.0 te=Some(\"trailers\") .....");
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_elsewhere_and_limits_apply() {
    let options = Options { header_timeout: Duration::from_millis(300), ..Options::default() };
    let mut h = Harness::start_with(78, &[(1, "live", 1)], options).await;
    // Pod 1 of the Service listens nowhere; pod 0 is a live echo.
    let mut yaml = service(78, 1, "web", 2);
    // An endpoint that accepts and never answers, for the read timeout.
    let silent = tokio::net::TcpListener::bind(SocketAddr::new(pod_ip(78, 2, 0), POD_PORT)).await.unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    yaml.push_str(&service(78, 2, "silent", 1));
    yaml.push_str(&ingress(
        "web",
        "nginx.ingress.kubernetes.io/proxy-body-size: 1k",
        Some("d.test"),
        &[("/", "Prefix", "web")],
        "",
    ));
    yaml.push_str(&ingress(
        "silent",
        "nginx.ingress.kubernetes.io/proxy-read-timeout: '1'",
        Some("s.test"),
        &[("/", "Prefix", "silent")],
        "",
    ));
    h.apply(&yaml).await;
    for _ in 0..10 {
        assert_eq!(
            pod_for(h.http, "d.test", "/").await,
            "live-0",
            "the dead endpoint is retried on the live one"
        );
    }
    // Declared too large: 413 before anything is sent; streamed too large: 413 as well.
    let big = "x".repeat(2048);
    let declared = get(h.http, "d.test", "/", &format!("Content-Length: 2048\r\n\r\n{big}")).await;
    assert_eq!(declared.status, 413, "{declared:?}");
    let chunked = format!("Transfer-Encoding: chunked\r\n\r\n800\r\n{big}\r\n0\r\n");
    let streamed = get(h.http, "d.test", "/", &chunked).await;
    assert_eq!(streamed.status, 413, "{streamed:?}");
    assert_eq!(get(h.http, "d.test", "/", "Content-Length: 5\r\n\r\nsmall").await.status, 200);
    // An endpoint that never answers: 504 after proxy-read-timeout.
    let started = std::time::Instant::now();
    assert_eq!(get(h.http, "s.test", "/", "").await.status, 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Slowloris: headers that never finish are cut off after the header timeout.
    let mut slow = TcpStream::connect(h.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: d.test\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed by the proxy");
}

#[tokio::test]
async fn certificates_rotate_rewrites_apply_and_redirects_can_be_forced() {
    let mut h = Harness::start(79, &[(1, "web", 1)]).await;
    let tls = "  tls: [{hosts: ['a.test'], secretName: cert}]\n";
    let site = |secret: &str| {
        [
            service(79, 1, "web", 1),
            secret.to_owned(),
            ingress("a", "", Some("a.test"), &[("/", "Prefix", "web")], tls),
            ingress(
                "rewrite",
                "nginx.ingress.kubernetes.io/rewrite-target: /$2, nginx.ingress.kubernetes.io/force-ssl-redirect: 'false'",
                Some("r.test"),
                &[("/api(/|$)(.*)", "ImplementationSpecific", "web")],
                "",
            ),
            ingress("forced", "nginx.ingress.kubernetes.io/force-ssl-redirect: 'true'", Some("f.test"), &[("/", "Prefix", "web")], ""),
        ]
        .concat()
    };
    let (first, first_root) = tls_secret("cert", "a.test");
    h.apply(&site(&first)).await;
    let https = h.https;
    let handshake = |root: rustls::pki_types::CertificateDer<'static>| async move {
        let stream = TcpStream::connect(https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        tls::client(&[root], &[]).connect(name, stream).await.is_ok()
    };
    assert!(handshake(first_root.clone()).await);
    let (second, second_root) = tls_secret("cert", "a.test");
    h.apply(&site(&second)).await;
    assert!(handshake(second_root).await, "the new certificate is served without a restart");
    assert!(!handshake(first_root).await, "the old one is gone");
    let seen = get(h.http, "r.test", "/api/v1/items?x=1", "").await.json();
    assert_eq!((seen["path"].as_str(), seen["query"].as_str()), (Some("/v1/items"), Some("x=1")));
    let moved = get(h.http, "f.test", "/x", "").await;
    assert_eq!(
        (moved.status, moved.headers.get("location").cloned()),
        (308, Some(format!("https://f.test:{}/x", h.https.port())))
    );
}

/// Checks the framing endpoint's `/chunked` answer: "hello world" in chunks, then an `x-sum`
/// trailer.
async fn assert_hello_world_with_trailers(answer: http::Response<hyper::body::Incoming>) {
    let collected = answer.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().and_then(|t| t.get("x-sum")).map(|v| v.as_bytes()), Some(&b"11"[..]));
    assert_eq!(collected.to_bytes(), "hello world");
}

#[tokio::test]
async fn http2_requests_reach_http1_endpoints_on_pooled_sockets() {
    let mut h = Harness::start(82, &[]).await;
    let (heads, connections) = framing_endpoint(SocketAddr::new(pod_ip(82, 1, 0), POD_PORT)).await;
    let yaml =
        [service(82, 1, "raw", 1), ingress("raw", "", Some("raw.test"), &[("/", "Prefix", "raw")], "")]
            .concat();
    h.apply(&yaml).await;
    // An HTTP/1.1 request first: its endpoint connection then serves the HTTP/2 ones too.
    assert_eq!(get(h.http, "raw.test", "/body", "").await.body, "0 0");
    // HTTP/2 with prior knowledge on the plain port.
    let stream = TcpStream::connect(h.http).await.unwrap();
    let (mut client, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = |method: &str, path: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("http://raw.test{path}"))
            .header("te", "trailers")
            .body(http_body_util::Either::Left(Empty::<Bytes>::new()))
            .unwrap()
    };
    // A chunked answer reaches the HTTP/2 client decoded, its trailers as trailers.
    let mut req = get("GET", "/chunked");
    for (name, value) in
        [("x-forwarded-for", "203.0.113.9"), ("x-real-ip", "198.51.100.7"), ("x-request-id", "given-1")]
    {
        req.headers_mut().insert(name, http::HeaderValue::from_static(value));
    }
    let chunked = client.send_request(req).await.unwrap();
    assert_eq!(chunked.version(), http::Version::HTTP_2);
    assert!(chunked.headers().get("transfer-encoding").is_none());
    assert_hello_world_with_trailers(chunked).await;
    let forwarded = heads.lock().unwrap()[1].head.to_ascii_lowercase();
    for wanted in [
        "get /chunked http/1.1\r\n",
        "host: raw.test\r\n",
        "te: trailers\r\n",
        "x-request-id: given-1\r\n",
        "x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n",
        "x-real-ip: 127.0.0.1\r\n",
        "x-forwarded-proto: http\r\n",
    ] {
        assert!(forwarded.contains(wanted), "{wanted:?} in {forwarded}");
    }
    // The client's forwarding fields are replaced, not sent as well.
    for field in ["x-forwarded-for", "x-real-ip", "x-request-id"] {
        assert_eq!(forwarded.matches(&format!("{field}: ")).count(), 1, "{field} in {forwarded}");
    }
    // HEAD, and an interim answer before the final one.
    let head = client.send_request(get("HEAD", "/body")).await.unwrap();
    assert_eq!(head.headers().get("content-length").map(|v| v.as_bytes()), Some(&b"3"[..]));
    assert!(head.into_body().collect().await.unwrap().to_bytes().is_empty());
    let early = client.send_request(get("GET", "/early")).await.unwrap();
    assert_eq!(early.into_body().collect().await.unwrap().to_bytes(), "ok");
    // A request body of unknown length goes chunked, streamed as it comes.
    let (feed, body) = tokio::sync::mpsc::channel(1);
    let posted = {
        let req = http::Request::post("http://raw.test/body")
            .body(http_body_util::Either::Right(Fed(body)))
            .unwrap();
        let sending = client.send_request(req);
        let feeding = async move {
            for piece in [&b"abc"[..], b"defg"] {
                feed.send(Bytes::from_static(piece)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::join!(sending, feeding).0.unwrap()
    };
    let sum: u64 = b"abcdefg".iter().map(|b| u64::from(*b)).sum();
    assert_eq!(posted.into_body().collect().await.unwrap().to_bytes(), format!("7 {sum}"));
    assert!(heads.lock().unwrap()[4].head.to_ascii_lowercase().contains("transfer-encoding: chunked\r\n"));
    // All of that went over one endpoint connection, shared with the HTTP/1.1 path and handed
    // back to the pool after each answer.
    for _ in 0..10 {
        let answer = client.send_request(get("GET", "/body")).await.unwrap();
        assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "0 0");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // An endpoint that answers an endless upload early, without reading it: the client gets
    // that answer, not a timeout.
    let (feed, body) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move { while feed.send(Bytes::from(vec![b'x'; 65536])).await.is_ok() {} });
    let req =
        http::Request::post("http://raw.test/reject").body(http_body_util::Either::Right(Fed(body))).unwrap();
    let early = tokio::time::timeout(Duration::from_secs(5), client.send_request(req))
        .await
        .expect("the early answer, in time")
        .unwrap();
    assert_eq!(early.status(), 413);
    assert_eq!(early.into_body().collect().await.unwrap().to_bytes(), "big!");
    // A close-delimited answer ends with the endpoint's close. Neither that connection nor
    // the early answer's (its request body unsent) is kept: each request opens a new one.
    let before_close = connections.load(Ordering::SeqCst);
    let closing = client.send_request(get("GET", "/close")).await.unwrap();
    assert_eq!(closing.into_body().collect().await.unwrap().to_bytes(), "until the end");
    let after = client.send_request(get("GET", "/body")).await.unwrap();
    assert_eq!(after.into_body().collect().await.unwrap().to_bytes(), "0 0");
    assert_eq!(connections.load(Ordering::SeqCst), before_close + 2);
}

#[tokio::test]
async fn an_endpoints_early_answer_to_an_upload_reaches_the_client() {
    let mut h = Harness::start(83, &[]).await;
    let (_, connections) = framing_endpoint(SocketAddr::new(pod_ip(83, 1, 0), POD_PORT)).await;
    // The send timeout stays at its default (60 s): the answer must not wait for it.
    let annotations = "nginx.ingress.kubernetes.io/proxy-body-size: 64m";
    let yaml = [
        service(83, 1, "raw", 1),
        ingress("raw", annotations, Some("raw.test"), &[("/", "Prefix", "raw")], ""),
    ]
    .concat();
    h.apply(&yaml).await;
    // 48 MiB declared, more than the loopback socket buffers hold: the endpoint answers 413
    // at once and never reads, so Portico's writes to it stall.
    let mut stream = TcpStream::connect(h.http).await.unwrap();
    let length = 48 << 20;
    let head = format!("POST /reject HTTP/1.1\r\nHost: raw.test\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut from_proxy, mut to_proxy) = stream.into_split();
    tokio::spawn(async move {
        let piece = vec![b'x'; 65536];
        for _ in 0..length / piece.len() {
            if to_proxy.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    // A clean end, no reset: the proxy reads and drops the rest of the body before closing.
    tokio::time::timeout(Duration::from_secs(10), from_proxy.read_to_end(&mut answer))
        .await
        .expect("the early answer, then the close, in time")
        .expect("a clean close");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nbig!"), "{text}");
    // That endpoint connection is not kept for another request.
    assert_eq!(get(h.http, "raw.test", "/body", "").await.body, "0 0");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// A request body fed frame by frame through a channel, of no declared length.
struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|piece| piece.map(|data| Ok(http_body::Frame::data(data))))
    }
}

#[tokio::test]
async fn http1_answers_keep_their_framing_pipelines_work_and_upgrades_follow_plain_requests() {
    let mut h = Harness::start(81, &[(2, "ws", 1)]).await;
    let (heads, connections) = framing_endpoint(SocketAddr::new(pod_ip(81, 1, 0), POD_PORT)).await;
    let yaml = [
        service(81, 1, "raw", 1),
        service(81, 2, "ws", 1),
        ingress("raw", "", Some("raw.test"), &[("/", "Prefix", "raw")], ""),
        ingress("ws", "", Some("ws.test"), &[("/", "Prefix", "ws")], ""),
    ]
    .concat();
    h.apply(&yaml).await;

    // One keep-alive client connection for several kinds of answer.
    let stream = TcpStream::connect(h.http).await.unwrap();
    let (mut client, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let send = |method: &str, path: &str, body: Vec<u8>| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "raw.test")
            .header("te", "trailers")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap()
    };
    let chunked = client.send_request(send("GET", "/chunked", Vec::new())).await.unwrap();
    assert_eq!(chunked.headers().get("transfer-encoding").map(|v| v.as_bytes()), Some(&b"chunked"[..]));
    assert_hello_world_with_trailers(chunked).await;
    let forwarded = heads.lock().unwrap()[0].head.to_ascii_lowercase();
    for wanted in [
        "get /chunked http/1.1\r\n",
        "host: raw.test\r\n",
        "te: trailers\r\n",
        "x-forwarded-for: 127.0.0.1\r\n",
        "x-forwarded-proto: http\r\n",
        "x-request-id: ",
    ] {
        assert!(forwarded.contains(wanted), "{wanted:?} in {forwarded}");
    }
    for gone in ["x-private", "connection:", "keep-alive"] {
        assert!(!forwarded.contains(gone), "{gone:?} in {forwarded}");
    }
    // HEAD: a Content-Length and no body; the connection goes on.
    let head = client.send_request(send("HEAD", "/body", Vec::new())).await.unwrap();
    assert_eq!(head.headers().get("content-length").map(|v| v.as_bytes()), Some(&b"3"[..]));
    assert!(head.into_body().collect().await.unwrap().to_bytes().is_empty());
    let early = client.send_request(send("GET", "/early", Vec::new())).await.unwrap();
    assert_eq!(early.status(), 200);
    assert_eq!(early.into_body().collect().await.unwrap().to_bytes(), "ok");
    // A body larger than any buffer streams through.
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = big.iter().map(|b| u64::from(*b)).sum();
    let posted = client.send_request(send("POST", "/body", big)).await.unwrap();
    assert_eq!(posted.into_body().collect().await.unwrap().to_bytes(), format!("1048576 {sum}"));
    // A close-delimited answer reaches its end, and then the client connection closes too.
    let closing = client.send_request(send("GET", "/close", Vec::new())).await.unwrap();
    assert_eq!(closing.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    assert_eq!(closing.into_body().collect().await.unwrap().to_bytes(), "until the end");
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "the client connection is closed after a close-delimited answer");

    // An endpoint that closes a kept-alive connection: the next request gets a new one.
    let before = connections.load(Ordering::SeqCst);
    assert_eq!(get(h.http, "raw.test", "/drop", "").await.body, "drop");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_drop = get(h.http, "raw.test", "/body", "").await;
    assert_eq!((after_drop.status, after_drop.body.as_str()), (200, "0 0"), "{after_drop:?}");
    assert_eq!(connections.load(Ordering::SeqCst), before + 2);

    // Pipelined requests are answered in order on one connection.
    let mut pipelined = TcpStream::connect(h.http).await.unwrap();
    pipelined
        .write_all(b"GET /chunked HTTP/1.1\r\nHost: raw.test\r\n\r\nGET /early HTTP/1.1\r\nHost: raw.test\r\n\r\nPOST /body HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), pipelined.read_to_end(&mut raw))
        .await
        .expect("answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let order: Vec<Option<usize>> =
        ["hello\r\n", "103 Early Hints", "\r\n\r\nok", "3 294"].iter().map(|p| text.find(p)).collect();
    assert!(order.iter().all(Option::is_some) && order.is_sorted(), "{order:?} in {text}");

    // A plain request, then an upgrade on the same connection: the two are joined after the 101.
    let mut stream = TcpStream::connect(h.http).await.unwrap();
    stream.write_all(b"GET /first HTTP/1.1\r\nHost: ws.test\r\n\r\n").await.unwrap();
    let head = read_head(&mut stream).await.to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("/first"));
    let mut upgraded = upgrade(stream, "ws.test").await;
    round_trip(&mut upgraded, b"after a plain request").await;
}

#[tokio::test]
async fn request_ids_are_unique_across_proxies_and_default_backends_count_for_their_ingress() {
    let yaml = |net: u8| {
        [
            service(net, 1, "default", 1),
            service(net, 2, "web", 1),
            ingress(
                "site",
                "nginx.ingress.kubernetes.io/whitelist-source-range: 127.0.0.0/8",
                Some("site.test"),
                &[("/app", "Prefix", "web")],
                "  defaultBackend: {service: {name: default, port: {number: 80}}}\n",
            ),
            ingress(
                "closed",
                "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8",
                Some("closed.test"),
                &[("/app", "Prefix", "web")],
                "  defaultBackend: {service: {name: default, port: {number: 80}}}\n",
            ),
        ]
        .concat()
    };
    let mut first = Harness::start(96, &[(1, "default", 1), (2, "web", 1)]).await;
    let mut second = Harness::start(97, &[(1, "default", 1), (2, "web", 1)]).await;
    first.apply(&yaml(96)).await;
    second.apply(&yaml(97)).await;
    // Two proxies, or one restarted, make different ids from their first request on.
    let id =
        |answer: Answer| answer.json()["headers"]["x-request-id"].as_str().unwrap_or_default().to_owned();
    let ids = [
        id(get(first.http, "site.test", "/app", "").await),
        id(get(second.http, "site.test", "/app", "").await),
        id(get(first.http, "site.test", "/app", "").await),
    ];
    assert!(ids.iter().all(|i| i.len() == 32), "{ids:?}");
    assert!(ids[0] != ids[1] && ids[0] != ids[2], "{ids:?}");
    // The default backend serves its Ingress's requests, under that Ingress's annotations.
    assert_eq!(get(first.http, "site.test", "/other", "").await.pod(), "default-0");
    assert_eq!(get(first.http, "closed.test", "/other", "").await.status, 403);
    let metrics = first.metrics();
    let counted =
        r#"portico_ingress_requests_total{ingress="default/site",service="default/default",status="2xx"} 1"#;
    assert!(metrics.contains(counted), "{metrics}");
    assert!(!metrics.contains(r#"ingress="",service="default/default""#), "{metrics}");
}

#[tokio::test]
async fn heads_keep_within_the_documented_limits_also_as_sent_on() {
    let mut h = Harness::start(98, &[(1, "web", 1)]).await;
    h.apply(
        &[service(98, 1, "web", 1), ingress("web", "", Some("l.test"), &[("/", "Prefix", "web")], "")]
            .concat(),
    )
    .await;
    // A head of `size` bytes (`GET /` to `l.test`, one padding field), as the client sends it.
    let padded = |size: usize, version: &str| {
        let start = format!("GET / {version}\r\nHost: l.test\r\nConnection: close\r\nX-Pad: ");
        format!("{start}{}\r\n\r\n", "p".repeat(size - start.len() - 4))
    };
    for (size, status) in [(60_000, 200), (65_450, 431), (70 * 1024, 431)] {
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            let answer = exchange(h.http, padded(size, version).as_bytes()).await;
            assert_eq!(statuses(&answer), [status], "{size} bytes, {version}");
        }
    }
    // Fields: the client's 96 are read; with Portico's six, 100 go on, 101 do not.
    let fields = |pads: usize| (0..pads).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect::<String>();
    assert_eq!(get(h.http, "l.test", "/", &fields(93)).await.status, 200);
    assert_eq!(get(h.http, "l.test", "/", &fields(94)).await.status, 431);
}

#[tokio::test]
async fn http10_requests_without_host_are_routed_to_rules_without_host_as_nginx_does() {
    let mut h = Harness::start(99, &[(1, "named", 1), (2, "any", 1), (3, "default", 1)]).await;
    let yaml = [
        service(99, 1, "named", 1),
        service(99, 2, "any", 1),
        service(99, 3, "default", 1),
        ingress(
            "named",
            "",
            Some("a.test"),
            &[("/", "Prefix", "named")],
            "  defaultBackend: {service: {name: default, port: {number: 80}}}\n",
        ),
        ingress("any", "", None, &[("/free", "Prefix", "any")], ""),
    ]
    .concat();
    h.apply(&yaml).await;
    let hostless = |path: &str| format!("GET {path} HTTP/1.0\r\nUser-Agent: old\r\n\r\n");
    let pod = |answer: &str| {
        serde_json::from_str::<Value>(answer.split_once("\r\n\r\n").unwrap_or_default().1).ok()
    };
    let answer = exchange(h.http, hostless("/free").as_bytes()).await;
    assert_eq!(pod(&answer).map(|v| v["pod"].clone()), Some("any-0".into()), "{answer}");
    let answer = exchange(h.http, hostless("/other").as_bytes()).await;
    assert_eq!(pod(&answer).map(|v| v["pod"].clone()), Some("default-0".into()), "{answer}");
    // HTTP/1.1 still needs its Host.
    let answer = exchange(h.http, b"GET /free HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses(&answer), [400], "{answer}");
}

#[tokio::test]
async fn the_listeners_answer_404_before_any_ingress_is_served() {
    let mut h = Harness::start(100, &[(1, "web", 1)]).await;
    h.apply(&service(100, 1, "web", 1)).await;
    assert!(TcpStream::connect(h.http).await.is_ok(), "the HTTP listener is open without an Ingress");
    assert_eq!(get(h.http, "any.test", "/", "").await.status, 404);
    h.apply(
        &[service(100, 1, "web", 1), ingress("web", "", Some("w.test"), &[("/", "Prefix", "web")], "")]
            .concat(),
    )
    .await;
    assert_eq!(pod_for(h.http, "w.test", "/").await, "web-0");
}

#[tokio::test]
async fn the_drain_stops_accepting_closes_idle_connections_and_finishes_requests_in_flight() {
    let net = 101;
    let mut h = Harness::start(net, &[]).await;
    // An endpoint that answers each request 300 ms after its head.
    let endpoint = tokio::net::TcpListener::bind(SocketAddr::new(pod_ip(net, 1, 0), POD_PORT)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = endpoint.accept().await {
            tokio::spawn(async move {
                read_head(&mut stream).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow").await;
            });
        }
    });
    h.apply(
        &[service(net, 1, "slow", 1), ingress("slow", "", Some("slow.test"), &[("/", "Prefix", "slow")], "")]
            .concat(),
    )
    .await;
    assert!(h.proxy.readiness().is_ready());
    let mut idle = TcpStream::connect(h.http).await.unwrap();
    let in_flight = tokio::spawn(get(h.http, "slow.test", "/", ""));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let trigger = h.drain.take().unwrap();
    let drained = tokio::spawn(trigger.drain(Duration::from_secs(10)));
    // The idle keep-alive connection is closed at once; the request in flight is answered.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0))), "the idle connection was not closed: {closed:?}");
    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "slow"), "{answer:?}");
    assert_eq!(drained.await.unwrap(), 0, "every connection ended within the grace time");
    assert!(TcpStream::connect(h.http).await.is_err(), "the listener is closed");
}
