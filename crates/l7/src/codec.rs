//! The HTTP/1.1 pieces both engines read endpoints' answers with: where a head ends, its
//! parsed fields, what its fields say about framing and the connection, and how its body is
//! delimited. The HTTP/1.x engine (`h1`) and the exchange's plain-socket path (`raw`) share
//! them.

use std::mem::MaybeUninit;
use std::sync::LazyLock;

use http::StatusCode;
use memchr::memmem::Finder;

use crate::chunked::Chunks;
use crate::fields::{Connection, Fields, MAX_FIELDS, one_length};

/// How an answer's body is delimited (RFC 9112 §6.3).
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked(Chunks),
    /// Until the endpoint closes.
    Close,
}

/// What forwarding needs from an answer's fields, found in one pass over them.
#[derive(Default)]
pub(crate) struct AnswerFields<'b> {
    /// The last `Transfer-Encoding` field.
    transfer_encoding: Option<&'b [u8]>,
    /// What all `Content-Length` fields say.
    length: Option<u64>,
    /// A `Content-Length` cannot be read, or two disagree.
    length_bad: bool,
    pub connection: Connection,
}

impl<'b> AnswerFields<'b> {
    pub(crate) fn of(fields: &[httparse::Header<'b>]) -> Self {
        let mut known = AnswerFields::default();
        for field in fields {
            let is = |name: &str| field.name.eq_ignore_ascii_case(name);
            match field.name.len() {
                17 if is("transfer-encoding") => known.transfer_encoding = Some(field.value),
                14 if is("content-length") => match one_length(std::iter::once(field.value)) {
                    Ok(Some(n)) if known.length.is_none_or(|seen| seen == n) => known.length = Some(n),
                    _ => known.length_bad = true,
                },
                10 if is("connection") => known.connection.add(field.value),
                _ => {}
            }
        }
        known
    }

    /// Whether the body comes in the chunked coding.
    pub(crate) fn chunked(&self) -> bool {
        self.transfer_encoding.is_some_and(|te| {
            te.rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        })
    }

    /// How the body of an answer with `status` is delimited; `None` when it could be read two
    /// ways: `Content-Length` fields that cannot be read or disagree, or a `Connection` field
    /// naming the framing fields (which, dropped as hop-by-hop, would leave the body unframed).
    /// `head`: the answer to a HEAD request.
    pub(crate) fn framing(&self, status: u16, head: bool) -> Option<Framing> {
        if self.connection.names_framing {
            return None;
        }
        Some(if head || status == 204 || status == 304 {
            Framing::Empty
        } else if self.chunked() {
            Framing::Chunked(Chunks::default())
        } else if self.transfer_encoding.is_some() {
            Framing::Close
        } else {
            match self.length {
                _ if self.length_bad => return None,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        })
    }

    /// Whether the answer carries a `Transfer-Encoding`, which makes any `Content-Length` moot.
    pub(crate) fn encoded(&self) -> bool {
        self.transfer_encoding.is_some()
    }

    /// Whether the endpoint keeps the connection open after the answer.
    pub(crate) fn keep_alive(&self, version: Option<u8>) -> bool {
        version == Some(1) && !self.connection.close
    }
}

/// The parsed header fields of a head.
pub(crate) struct Parsed<'h, 'b>(pub &'h [httparse::Header<'b>]);

impl Fields for Parsed<'_, '_> {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .filter_map(|f| std::str::from_utf8(f.value).ok())
    }
}

/// Parses `head`, a whole answer head, and hands it to `read`; `None` when it is malformed.
/// Both engines read answers through it, with the parser's room for fields on the stack.
pub(crate) fn with_answer_head<T>(
    head: &[u8],
    read: impl FnOnce(&httparse::Response<'_, '_>) -> Option<T>,
) -> Option<T> {
    let mut storage = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        head,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(_)) => read(&parsed),
        _ => None,
    }
}

/// Where the head at the start of `buf` ends: just after its empty line (lines end in CRLF
/// or, tolerated, a bare LF).
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    // Two vectorised searches instead of a stop at every line end: the empty line after a CRLF
    // or a bare LF ("\n\r\n"), and, before it, one of bare LFs ("\n\n").
    static CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static LF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    let crlf = CRLF.find(buf);
    let before = crlf.map_or(buf.len(), |at| at + 1);
    match LF.find(&buf[..before]) {
        Some(at) => Some(at + 2),
        None => crlf.map(|at| at + 3),
    }
}

/// The field names a head's `Connection` fields list (hop-by-hop for this message); looked for
/// only when they name any (`names_fields`, see [`Connection`]).
pub(crate) fn listed_fields<'a>(fields: &'a Parsed<'_, '_>, names_fields: bool) -> Vec<&'a str> {
    if !names_fields {
        return Vec::new();
    }
    fields.all("connection").flat_map(|v| v.split(',')).map(str::trim).collect()
}

/// `HTTP/1.1 <status> <reason>` and its line end.
pub(crate) fn put_status_line(out: &mut Vec<u8>, status: StatusCode, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}
