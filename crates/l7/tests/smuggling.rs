//! Request smuggling and routing confusion: what the Ingress refuses (RFC 9110, 9112, 9113), and
//! that what it forwards is exactly what it routed, over HTTP/1.1 (plain and TLS) and HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_testkit::http::get;
use portico_testkit::manifests::ingress;
use portico_testkit::tls;
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod support;
use support::*;

/// The hand-written endpoint behind three hosts: `smug.test`, whose `/admin` only 10.0.0.0/8
/// may reach (loopback clients get 403), and `public.test`, open to all; `tls.test` over HTTPS.
async fn smuggling_harness(net: u8) -> (Harness, Received, CertificateDer<'static>) {
    let mut h = Harness::start(net, &[]).await;
    let (received, _) = framing_endpoint(SocketAddr::new(pod_ip(net, 1, 0), POD_PORT)).await;
    let (secret, cert) = tls_secret("tls", "tls.test");
    let allow = "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8";
    let tls = "  tls: [{hosts: ['tls.test'], secretName: tls}]\n";
    let yaml = [
        service(net, 1, "raw", 1),
        secret,
        ingress("smug", "", Some("smug.test"), &[("/", "Prefix", "raw")], ""),
        ingress("smug-admin", allow, Some("smug.test"), &[("/admin", "Prefix", "raw")], ""),
        ingress("public", "", Some("public.test"), &[("/", "Prefix", "raw")], ""),
        ingress(
            "tls",
            "nginx.ingress.kubernetes.io/ssl-redirect: 'false'",
            Some("tls.test"),
            &[("/", "Prefix", "raw")],
            tls,
        ),
    ]
    .concat();
    h.apply(&yaml).await;
    (h, received, cert)
}

/// The targets the endpoint has received, in order.
fn targets(received: &Received) -> Vec<String> {
    received.lock().unwrap().iter().map(|s| s.target().to_owned()).collect()
}

/// Sends `bytes` over TLS (HTTP/1.1 by ALPN, server name `tls.test`) and reads until the close.
async fn exchange_tls(addr: SocketAddr, cert: &CertificateDer<'static>, bytes: &[u8]) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("tls.test").unwrap();
    let mut tls = tls::client(std::slice::from_ref(cert), &[b"http/1.1"])
        .connect(name, stream)
        .await
        .expect("handshake");
    tls.write_all(bytes).await.unwrap();
    read_until_closed(&mut tls).await
}

/// An HTTP/2 connection with prior knowledge to the plain listener.
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Sends an HTTP/2 request; returns its status, body and trailers.
async fn h2_send(
    client: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, Bytes, Option<http::HeaderMap>) {
    let answer = client.send_request(req).await.unwrap();
    let status = answer.status().as_u16();
    let collected = answer.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn a_connection_field_naming_framing_or_host_is_refused() {
    let (h, received, cert) = smuggling_harness(85).await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: smug.test\r\n\r\n";
    assert_eq!(smuggled.len(), 40);
    let cases = [
        format!(
            "POST / HTTP/1.1\r\nHost: smug.test\r\nConnection: Content-Length\r\nContent-Length: 40\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: smug.test\r\nConnection: keep-alive, content-length\r\nContent-Length: 40\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: smug.test\r\nConnection: Host\r\nContent-Length: 40\r\n\r\n{smuggled}"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: smug.test\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n28\r\n{smuggled}\r\n0\r\n\r\n"
        ),
        format!("GET / HTTP/1.1\r\nHost: smug.test\r\nConnection: host\r\n\r\n{smuggled}"),
    ];
    for case in &cases {
        for tls in [false, true] {
            let answer = if tls {
                exchange_tls(h.https, &cert, case.replace("smug.test", "tls.test").as_bytes()).await
            } else {
                exchange(h.http, case.as_bytes()).await
            };
            assert_eq!(statuses(&answer), [400], "{case:?} (TLS: {tls}): {answer}");
        }
    }
    assert_eq!(targets(&received), Vec::<String>::new(), "nothing reaches the endpoint");
}

#[tokio::test]
async fn an_answer_naming_its_framing_or_with_two_lengths_is_a_bad_gateway() {
    let (h, received, _) = smuggling_harness(86).await;
    let paths = ["/names-length", "/names-encoding", "/two-lengths", "/length-list"];
    for path in paths {
        let answer = get(h.http, "public.test", path, "").await;
        assert_eq!(answer.status, 502, "HTTP/1.1 {path}: {answer:?}");
    }
    let mut client = h2_client(h.http).await;
    for path in paths {
        let req = http::Request::get(format!("http://public.test{path}")).body(Full::default()).unwrap();
        let (status, body, _) = h2_send(&mut client, req).await;
        assert_eq!(status, 502, "HTTP/2 {path}: {body:?}");
    }
    // The endpoint was asked each time: the answers, not the requests, were refused.
    assert_eq!(targets(&received).len(), 2 * paths.len());
}

#[tokio::test]
async fn the_authority_of_the_target_is_routed_and_forwarded() {
    let (h, received, _) = smuggling_harness(87).await;
    // HTTP/1.1 absolute form: the target's authority replaces Host.
    let answer = exchange(
        h.http,
        b"GET http://public.test/admin HTTP/1.1\r\nHost: smug.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let answer = exchange(
        h.http,
        b"GET http://smug.test/admin HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), [403], "{answer}");
    // Without Host, the absolute form is refused all the same.
    let answer = exchange(h.http, b"GET http://public.test/ HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses(&answer), [400], "{answer}");
    // HTTP/2: `:authority` wins over `host`.
    let mut client = h2_client(h.http).await;
    let req = |authority: &str, host: &str| {
        http::Request::get(format!("http://{authority}/admin"))
            .header("host", host)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(h2_send(&mut client, req("public.test", "smug.test")).await.0, 200);
    assert_eq!(h2_send(&mut client, req("smug.test", "public.test")).await.0, 403);
    let seen = received.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert_eq!(request.target(), "/admin");
        assert_eq!(request.fields("host"), ["public.test"], "{}", request.head);
    }
}

#[tokio::test]
async fn fragments_backslashes_and_unreadable_fields_are_refused() {
    let (h, received, _) = smuggling_harness(88).await;
    for target in [
        "/admin#x",
        "/#/../admin",
        "/public\\..\\admin",
        "/public\\admin",
        "/public/..;/admin",
        "/x/.;/admin",
    ] {
        let answer = exchange(
            h.http,
            format!("GET {target} HTTP/1.1\r\nHost: smug.test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(statuses(&answer), [400], "{target}: {answer}");
    }
    // After a request the HTTP/1.1 path hands on (a chunked body), the same rules hold.
    let after_chunked = "POST /up HTTP/1.1\r\nHost: smug.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /admin#x HTTP/1.1\r\nHost: smug.test\r\n\r\n";
    let answer = exchange(h.http, after_chunked.as_bytes()).await;
    assert_eq!(statuses(&answer), [200, 400], "{answer}");
    // A framing or routing field that is not text cannot be read: 400, and the connection closes.
    for head in [
        &b"POST / HTTP/1.1\r\nHost: smug.test\r\nContent-Length: 5\xa0\r\n\r\nhello"[..],
        b"POST / HTTP/1.1\r\nHost: smug.test\r\nContent-Length: 5\r\nContent-Length: 5\xa0\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: smug.test\r\nTransfer-Encoding: chunked\xa0\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: smug.test\xa0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: smug.test\r\nConnection: close\xa0, x\r\n\r\n",
    ] {
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"GET /admin HTTP/1.1\r\nHost: smug.test\r\n\r\n");
        let answer = exchange(h.http, &bytes).await;
        assert_eq!(statuses(&answer), [400], "{:?}: {answer}", String::from_utf8_lossy(head));
    }
    // Two Host fields, or a Host that is not a host: 400.
    for head in [
        "GET /admin HTTP/1.1\r\nHost: public.test\r\nHost: smug.test\r\n\r\n",
        "GET /admin HTTP/1.1\r\nHost: public.test\r\nhost: public.test\r\n\r\n",
        "GET /admin HTTP/1.1\r\nHost: public.test/admin\r\n\r\n",
        "GET /admin HTTP/1.1\r\nHost: user@public.test\r\n\r\n",
        "GET /admin HTTP/1.1\r\nHost: public.test smug.test\r\n\r\n",
    ] {
        let answer = exchange(h.http, head.as_bytes()).await;
        assert_eq!(statuses(&answer), [400], "{head:?}: {answer}");
    }
    let mut client = h2_client(h.http).await;
    let mut two_hosts = http::Request::get("/x").body(Full::default()).unwrap();
    two_hosts.headers_mut().append("host", http::HeaderValue::from_static("public.test"));
    two_hosts.headers_mut().append("host", http::HeaderValue::from_static("smug.test"));
    assert_eq!(h2_send(&mut client, two_hosts).await.0, 400);
    assert_eq!(targets(&received), ["/up"], "only the chunked upload reached the endpoint");
}

#[tokio::test]
async fn trailers_cookies_versions_prefaces_chunks_and_raw_utf8() {
    let (h, received, _) = smuggling_harness(89).await;
    // Request trailers that must not be trailers are dropped; others go on.
    let upload = "POST /t1 HTTP/1.1\r\nHost: public.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 5\r\nContent-Length: 99\r\nHost: evil.test\r\nAuthorization: x\r\n\r\n";
    assert_eq!(statuses(&exchange(h.http, upload.as_bytes()).await), [200]);
    let mut client = h2_client(h.http).await;
    let (feed, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
    let req = http::Request::post("http://public.test/t2").body(body).unwrap();
    let stream = TcpStream::connect(h.http).await.unwrap();
    let (mut streaming, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let sending = tokio::spawn(async move { streaming.send_request(req).await.map(|a| a.status().as_u16()) });
    let mut feed = feed;
    feed.send_data(Bytes::from_static(b"hello")).await.unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-sum", http::HeaderValue::from_static("5"));
    trailers.insert("content-length", http::HeaderValue::from_static("99"));
    trailers.insert("host", http::HeaderValue::from_static("evil.test"));
    feed.send_trailers(trailers).await.unwrap();
    drop(feed);
    assert_eq!(sending.await.unwrap().unwrap(), 200);
    for seen in received.lock().unwrap().iter() {
        let trailers = seen.trailers.to_ascii_lowercase();
        assert!(trailers.contains("x-sum: 5"), "{}: {trailers:?}", seen.target());
        for gone in ["content-length", "host", "authorization"] {
            assert!(!trailers.contains(gone), "{} {gone}: {trailers:?}", seen.target());
        }
    }
    // Answer trailers likewise, to HTTP/1.1 and to HTTP/2 clients.
    let answer = get(h.http, "public.test", "/bad-trailers", "TE: trailers\r\n").await;
    let trailers = answer.body.to_ascii_lowercase();
    assert!(trailers.contains("x-sum: 5"), "{answer:?}");
    for gone in ["content-length", "host", "transfer-encoding"] {
        assert!(!trailers.contains(gone), "{gone}: {answer:?}");
    }
    let req = http::Request::get("http://public.test/bad-trailers")
        .header("te", "trailers")
        .body(Full::default())
        .unwrap();
    let (status, body, trailers) = h2_send(&mut client, req).await;
    assert_eq!((status, &body[..]), (200, &b"hello"[..]));
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers.get("x-sum").map(|v| v.as_bytes()), Some(&b"5"[..]));
    for gone in ["content-length", "host", "transfer-encoding"] {
        assert!(trailers.get(gone).is_none(), "{gone}: {trailers:?}");
    }
    // Two HTTP/2 cookie fields reach an HTTP/1.1 endpoint as one line.
    let mut req = http::Request::get("http://public.test/cookies").body(Full::default()).unwrap();
    req.headers_mut().append("cookie", http::HeaderValue::from_static("a=1"));
    req.headers_mut().append("cookie", http::HeaderValue::from_static("b=2"));
    assert_eq!(h2_send(&mut client, req).await.0, 200);
    let cookies = received.lock().unwrap().last().unwrap().fields("cookie");
    assert_eq!(cookies, ["a=1; b=2"]);
    // HTTP/1.2 is read as HTTP/1.1 (RFC 9112 §2.3).
    let answer =
        exchange(h.http, b"GET /v12 HTTP/1.2\r\nHost: public.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert!(received.lock().unwrap().last().unwrap().head.starts_with("GET /v12 HTTP/1.1\r\n"));
    // The HTTP/2 preface is one only at the start of a connection.
    let preface = b"GET /first HTTP/1.1\r\nHost: public.test\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let answer = exchange(h.http, preface).await;
    assert_eq!(statuses(&answer), [200, 400], "{answer}");
    // A malformed chunked request body is the client's fault: 400.
    let answer = exchange(h.http, b"POST /bad HTTP/1.1\r\nHost: public.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").await;
    assert_eq!(statuses(&answer), [400], "{answer}");
    // A raw UTF-8 path reaches the endpoint as the same bytes, also once normalised.
    let before = received.lock().unwrap().len();
    let answer =
        exchange(h.http, "GET //é HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n".as_bytes())
            .await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let req = http::Request::get("http://public.test/é").body(Full::default()).unwrap();
    assert_eq!(h2_send(&mut client, req).await.0, 200);
    let seen = received.lock().unwrap()[before..].to_vec();
    assert_eq!(seen.len(), 2);
    for request in seen {
        assert!(request.raw_head.starts_with("GET /é HTTP/1.1\r\n".as_bytes()), "{:?}", request.head);
    }
}

#[tokio::test]
async fn fields_an_endpoint_could_take_for_the_forwarding_or_the_route_are_not_passed_on() {
    let (h, received, _) = smuggling_harness(94).await;
    let sneaky = "X_Forwarded_For: 10.0.0.1\r\nX_Real_IP: 10.0.0.1\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n";
    assert_eq!(get(h.http, "public.test", "/", sneaky).await.status, 200);
    let mut client = h2_client(h.http).await;
    let mut req = http::Request::get("http://public.test/").body(Full::default()).unwrap();
    for name in ["x_forwarded_for", "x_real_ip", "x-original-url", "x-rewrite-url"] {
        req.headers_mut().insert(name, http::HeaderValue::from_static("/admin"));
    }
    assert_eq!(h2_send(&mut client, req).await.0, 200);
    let seen = received.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for request in seen {
        for gone in ["x_forwarded_for", "x_real_ip", "x-original-url", "x-rewrite-url"] {
            assert!(request.fields(gone).is_empty(), "{gone} in {}", request.head);
        }
        assert_eq!(request.fields("x-forwarded-for"), ["127.0.0.1"], "{}", request.head);
    }
}

#[tokio::test]
async fn interim_answers_and_http10_framing_on_the_engines_exchange() {
    let (h, received, cert) = smuggling_harness(95).await;
    // 100 Continue once the endpoint takes the body; none when the answer is made here.
    let upload = b"POST /up HTTP/1.1\r\nHost: public.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(statuses(&exchange(h.http, upload).await), [100, 200]);
    // The same over TLS, with a chunked body and a keep-alive request after it.
    let chunked = b"POST /up-tls HTTP/1.1\r\nHost: tls.test\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n";
    let answer = exchange_tls(h.https, &cert, chunked).await;
    let answered: Vec<(u16, String)> = answers(&answer).into_iter().map(|(s, _, b)| (s, b)).collect();
    assert_eq!(answered, [(100, String::new()), (200, "/up-tls".to_owned()), (200, "/after".to_owned())]);
    let refused =
        b"POST /admin HTTP/1.1\r\nHost: smug.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(statuses(&exchange(h.http, refused).await), [403]);
    let old =
        b"POST /old HTTP/1.0\r\nHost: public.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(statuses(&exchange(h.http, old).await), [200], "no interim answer to HTTP/1.0");
    // HTTP/1.0: a chunked answer goes until the close; keep-alive when asked for and framed.
    let answer = exchange(h.http, b"GET /chunked HTTP/1.0\r\nHost: public.test\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{answer}");
    assert_eq!(body, "hello world");
    let two = b"GET /a HTTP/1.0\r\nHost: public.test\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nHost: public.test\r\n\r\n";
    let answer = exchange(h.http, two).await;
    assert_eq!(
        answers(&answer).into_iter().map(|(s, _, b)| (s, b)).collect::<Vec<_>>(),
        [(200, "/a".to_owned()), (200, "/b".to_owned())]
    );
    assert!(answer.to_ascii_lowercase().contains("connection: keep-alive"), "{answer}");
    let targets: Vec<String> = received.lock().unwrap().iter().map(|s| s.target().to_owned()).collect();
    assert_eq!(targets, ["/up", "/up-tls", "/after", "/old", "/chunked", "/a", "/b"]);
    assert_eq!(received.lock().unwrap()[1].body, b"hello");
}
