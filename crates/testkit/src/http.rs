//! A raw HTTP/1.1 client: requests sent exactly as written (no clean-up of paths or fields),
//! one answer read back with its status, fields and body.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::assert_loopback;

/// How long an exchange may take before the test fails, so that no bug hangs a test.
pub const STEP: Duration = Duration::from_secs(10);

/// The request [`ask`] sends on a kept-alive connection.
const ASK: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/// An HTTP/1.x answer as a raw client read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code; 0 when the head did not end or its status line could not be read.
    pub status: u16,
    /// The head as it came: the status line and the field lines, without the empty line.
    pub head: String,
    /// The fields by lower-case name, their values trimmed; where a name repeats, the last.
    pub headers: BTreeMap<String, String>,
    /// What followed the head.
    pub body: String,
}

impl Answer {
    /// Reads the bytes a client received as one answer: the head up to the empty line, and
    /// all after it as the body (without an empty line, all is head and the status 0). Panics
    /// when they are not UTF-8.
    pub fn parse(raw: &[u8]) -> Answer {
        let text = std::str::from_utf8(raw)
            .unwrap_or_else(|e| panic!("the answer is not UTF-8 ({e}): {:?}", String::from_utf8_lossy(raw)));
        let (head, body, ended) = match text.split_once("\r\n\r\n") {
            Some((head, body)) => (head, body, true),
            None => (text, "", false),
        };
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok());
        let status = status.filter(|_| ended).unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Answer { status, head: head.to_owned(), headers, body: body.to_owned() }
    }

    /// The first value of field `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as JSON; panics naming the answer when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The echo Pod that answered: the `pod` of the body; panics unless the status is 200 and
    /// the body names a Pod.
    pub fn pod(&self) -> String {
        assert_eq!(self.status, 200, "{self:?}");
        let pod = self.json()["pod"].as_str().map(str::to_owned);
        pod.unwrap_or_else(|| panic!("no pod in {self:?}"))
    }
}

/// Sends `bytes` on `stream` and reads until the peer closes: the answer. Panics when that
/// takes longer than [`STEP`] or reading fails (a TLS peer closing without `close_notify`
/// only ends the answer).
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, bytes: &[u8]) -> Answer {
    let raw = tokio::time::timeout(STEP, async {
        stream.write_all(bytes).await.expect("request written");
        stream.flush().await.expect("request written");
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw).await {
            Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => panic!("reading the answer: {e}"),
            _ => raw,
        }
    })
    .await
    .expect("answer in time");
    Answer::parse(&raw)
}

/// [`exchange`] on a new connection to `addr` (a loopback address).
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> Answer {
    assert_loopback(addr.ip());
    let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} in time"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    exchange(stream, bytes).await
}

/// A GET of `target` for `host` with `Connection: close` and the field lines `extra` (each
/// ending in CRLF), sent exactly as written to `addr`.
pub async fn get(addr: SocketAddr, host: &str, target: &str, extra: &str) -> Answer {
    send(addr, get_request(host, target, extra).as_bytes()).await
}

/// [`get`] without async: `Err` when `addr` cannot be reached in 2 s, or the answer not read
/// in 5 s or not as UTF-8.
pub fn get_blocking(addr: SocketAddr, host: &str, target: &str) -> std::io::Result<Answer> {
    assert_loopback(addr.ip());
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(get_request(host, target, "").as_bytes())?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(Answer::parse(text.as_bytes()))
}

fn get_request(host: &str, target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n")
}

/// The first answer in `received` once it is whole, its body framed by `Content-Length`
/// (which it must have); `None` while more is to come.
pub fn complete(received: &[u8]) -> Option<Answer> {
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = Answer::parse(&received[..head_end]);
    let length: usize = head
        .headers
        .get("content-length")
        .unwrap_or_else(|| panic!("no Content-Length: {head:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("Content-Length: {e}: {head:?}"));
    (received.len() >= head_end + length).then(|| Answer::parse(&received[..head_end + length]))
}

/// Sends `GET /` on an open kept-alive connection and reads exactly one answer, framed by
/// its `Content-Length`; panics when the connection closes first.
pub async fn ask(stream: &mut TcpStream) -> Answer {
    stream.write_all(ASK).await.expect("request written");
    let mut received = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.expect("answer read");
        assert!(n > 0, "connection closed early");
        received.extend_from_slice(&buf[..n]);
        if let Some(answer) = complete(&received) {
            return answer;
        }
    }
}

/// [`ask`] without async.
pub fn ask_blocking(stream: &mut std::net::TcpStream) -> Answer {
    stream.write_all(ASK).expect("request written");
    let mut received = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = stream.read(&mut buf).expect("answer read");
        assert!(n > 0, "connection closed early");
        received.extend_from_slice(&buf[..n]);
        if let Some(answer) = complete(&received) {
            return answer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_from_its_bytes() {
        let answer =
            Answer::parse(b"HTTP/1.1 404 Not Found\r\nX-A: 1\r\nx-a: 2\r\nServer:  portico \r\n\r\nnope");
        assert_eq!((answer.status, answer.body.as_str()), (404, "nope"));
        assert_eq!(answer.header("X-a"), Some("1"), "the first of a repeated field");
        assert_eq!(answer.headers["x-a"], "2", "the last of a repeated field");
        assert_eq!(answer.headers["server"], "portico");
        assert_eq!(Answer::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n").status, 0, "no end of head");
        assert_eq!(Answer::parse(b"").status, 0);
    }

    #[test]
    fn complete_waits_for_the_whole_body_and_stops_there() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n";
        assert_eq!(complete(&two[..20]), None);
        assert_eq!(complete(&two[..40]), None);
        assert_eq!(complete(two).map(|a| a.body), Some("hello".to_owned()));
    }
}
