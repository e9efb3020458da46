//! What a valid request is: the rules every request head passes before it is routed, whichever
//! engine read it (RFC 9110, RFC 9112, RFC 9113). A request that Portico and an endpoint could
//! read two ways is refused here, so that what is routed is what is forwarded:
//! - one authority, from the target's (absolute form, `:authority`) or else the one `Host`,
//!   which is routed and then sent as `Host`;
//! - a target of the characters a URI allows, without a fragment or a backslash;
//! - body framing that cannot be misread: `Content-Length` digits only and all alike,
//!   `Transfer-Encoding` ending in one `chunked`, framing and `Host` never named by
//!   `Connection`, and every framing or routing field plain ASCII.

use std::fmt;

use http::StatusCode;

use crate::fields::{Connection, decimal, named};

/// A request head refused, and why. The connection closes after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub why: &'static str,
}

impl Refusal {
    const fn bad(why: &'static str) -> Self {
        Refusal { status: StatusCode::BAD_REQUEST, why }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why)
    }
}

/// The HTTP version a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Http10,
    Http11,
    Http2,
}

/// How a request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// The request target, as an engine has it.
pub(crate) enum Target<'r> {
    /// As it came on an HTTP/1.x request line.
    Line(&'r str),
    /// Already split by hyper (HTTP/2 pseudo-fields, or an HTTP/1 line hyper parsed): the
    /// scheme and authority when there are any, and the path with its query.
    Split { scheme: Option<&'r str>, authority: Option<&'r str>, path_and_query: &'r str },
}

/// A request head to check.
pub(crate) struct Head<'r, F: ?Sized> {
    pub method: &'r str,
    pub version: Version,
    pub target: Target<'r>,
    /// The header fields, in the order they came (hyper's map keeps the order within a name).
    pub fields: &'r F,
}

/// Header fields as bytes, in order.
pub(crate) trait RawFields {
    /// Every field line: its name and its value as it came.
    fn lines(&self) -> impl Iterator<Item = (&str, &[u8])>;
}

impl RawFields for http::HeaderMap {
    fn lines(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.iter().map(|(name, value)| (name.as_str(), value.as_bytes()))
    }
}

impl RawFields for [httparse::Header<'_>] {
    fn lines(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.iter().map(|field| (field.name, field.value))
    }
}

/// What the rules found in a head they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked<'r> {
    /// Routed by and forwarded as `Host`.
    pub authority: &'r str,
    /// The path, as sent (normalised later, by routing).
    pub path: &'r str,
    pub query: Option<&'r str>,
    /// The target was in absolute form: the endpoint gets it in origin form.
    pub absolute: bool,
    pub body: BodyFraming,
    /// `Content-Length` came beside `Transfer-Encoding`: dropped, as the chunked framing wins.
    pub length_dropped: bool,
    /// The connection closes after this request.
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An HTTP/1.1 `Upgrade` the `Connection` field agrees to.
    pub upgrade: bool,
    /// The `Connection` fields name other fields, which are of this hop only.
    pub names_fields: bool,
    /// `TE` lists `trailers`.
    pub te_trailers: bool,
}

impl Checked<'_> {
    /// The body's declared length, if it has one.
    pub(crate) fn length(&self) -> Option<u64> {
        match self.body {
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Empty | BodyFraming::Chunked => None,
        }
    }

    /// Whether a body follows the head.
    pub(crate) fn has_body(&self) -> bool {
        self.body == BodyFraming::Chunked || self.length().is_some_and(|n| n > 0)
    }
}

/// Applies the rules to `head`.
///
/// The order matters where the status differs: what hyper's HTTP/1 parser refuses itself, before
/// any handler sees the request (a target it cannot read, framing it cannot read), comes first,
/// so that both engines give the same answer to the same bytes; then `CONNECT` (405); then the
/// rest (400); and a transfer coding other than chunked (501) last.
pub(crate) fn check<'r, F: RawFields + ?Sized>(head: &Head<'r, F>) -> Result<Checked<'r>, Refusal> {
    let target = split_target(&head.target)?;
    check_path(target.path)?;
    if let Some(query) = target.query {
        check_query(query)?;
    }
    let fields = read_fields(head.fields, head.version)?;
    if head.method == "CONNECT" {
        return Err(Refusal { status: StatusCode::METHOD_NOT_ALLOWED, why: "CONNECT is not proxied" });
    }
    if let Some(refusal) = fields.refusal {
        return Err(refusal);
    }
    // HTTP/1.0 may come without a host: routed as nginx does, to rules without a host, else the
    // default backend.
    let hostless =
        head.version == Version::Http10 && target.authority.is_none() && matches!(fields.host, Hosts::None);
    let authority = match (target.authority, fields.host) {
        _ if hostless => "",
        (_, Hosts::Many) => return Err(Refusal::bad("more than one Host field")),
        (Some(authority), Hosts::One(_)) => authority,
        (Some(authority), Hosts::None) if head.version != Version::Http11 => authority,
        (None, Hosts::One(host)) => host,
        (None, Hosts::None) if head.version == Version::Http2 => return Err(Refusal::bad("no :authority")),
        // An absolute target does not excuse a missing Host (RFC 9112 §3.2).
        _ => return Err(Refusal::bad("no Host field")),
    };
    if !hostless {
        check_authority(authority)?;
    }
    if let Hosts::One(host) = fields.host
        && !std::ptr::eq(host, authority)
    {
        check_authority(host)?;
    }
    let chunked = fields.codings.understood()?;
    let Fields { length, length_dropped, connection, expect_continue, upgrade, te_trailers, .. } = fields;
    let body =
        if chunked { BodyFraming::Chunked } else { length.map_or(BodyFraming::Empty, BodyFraming::Length) };
    let keep_alive = match head.version {
        Version::Http10 => connection.keep_alive,
        Version::Http11 | Version::Http2 => true,
    };
    Ok(Checked {
        authority,
        path: target.path,
        query: target.query,
        absolute: target.authority.is_some() && head.version != Version::Http2,
        body,
        length_dropped,
        close: connection.close || !keep_alive || length_dropped,
        // An HTTP/1.0 client gets no interim answer (RFC 9110 §15.2).
        expect_continue: expect_continue && head.version == Version::Http11,
        upgrade: upgrade && connection.upgrade && head.version == Version::Http11,
        names_fields: connection.names_fields,
        te_trailers,
    })
}

/// A target split into its parts.
struct Split<'r> {
    authority: Option<&'r str>,
    path: &'r str,
    query: Option<&'r str>,
}

fn split_target<'r>(target: &Target<'r>) -> Result<Split<'r>, Refusal> {
    let (scheme, authority, path_and_query) = match *target {
        Target::Line(line) if line.starts_with('/') => (None, None, line),
        Target::Line(line) => {
            let Some((scheme, rest)) = line.split_once("://") else {
                return Err(Refusal::bad("the target is neither a path nor an absolute URI"));
            };
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, path_and_query) = rest.split_at(end);
            (Some(scheme), Some(authority), path_and_query)
        }
        // The authority form, which only CONNECT may use.
        Target::Split { scheme: None, authority: Some(_), .. } => {
            return Err(Refusal::bad("the target is neither a path nor an absolute URI"));
        }
        Target::Split { scheme, authority, path_and_query } => (scheme, authority, path_and_query),
    };
    if let Some(scheme) = scheme
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Err(Refusal::bad("the target's scheme is not http or https"));
    }
    // An absolute URI with an empty path asks for "/" (RFC 9112 §3.2.2).
    let path_and_query = if authority.is_some() && path_and_query.is_empty() { "/" } else { path_and_query };
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    if path.is_empty() && authority.is_some() {
        return Ok(Split { authority, path: "/", query });
    }
    if !path.starts_with('/') {
        return Err(Refusal::bad("the target's path does not start with /"));
    }
    Ok(Split { authority, path, query })
}

/// Which bytes a target may hold: what RFC 3986 allows in a path and a query, plus the few that
/// clients send unencoded and hyper's URI parser takes as they are (`"{}|^[]` in a path, and
/// in a query also `` ` `` and `\`), and UTF-8. Never a fragment (`#`: the endpoint would cut
/// the path there, after routing), nor a backslash in the path (WHATWG URL parsers, Node's and
/// browsers', read it as `/`), nor spaces, controls, `<` or `>`.
fn check_path(path: &str) -> Result<(), Refusal> {
    match path.bytes().find(|b| !PATH_BYTES[usize::from(*b)]) {
        None => Ok(()),
        Some(b'#') => Err(Refusal::bad("a fragment in the target")),
        Some(b'\\') => Err(Refusal::bad("a backslash in the target's path")),
        Some(_) => Err(Refusal::bad("a character the target may not hold")),
    }
}

fn check_query(query: &str) -> Result<(), Refusal> {
    match query.bytes().find(|b| !QUERY_BYTES[usize::from(*b)]) {
        None => Ok(()),
        Some(b'#') => Err(Refusal::bad("a fragment in the target")),
        Some(_) => Err(Refusal::bad("a character the target may not hold")),
    }
}

const PATH_BYTES: [bool; 256] = byte_set(b"!$%&'()*+,-./:;=@_~\"{}|^[]", true);
const QUERY_BYTES: [bool; 256] = byte_set(b"!$%&'()*+,-./:;=@_~{}|^[]?`\\", true);

/// Letters, digits, `extra`, and with `utf8` the bytes 0x80 and up.
const fn byte_set(extra: &[u8], utf8: bool) -> [bool; 256] {
    let mut set = [false; 256];
    let mut b = 0;
    while b < 256 {
        set[b] = (b as u8).is_ascii_alphanumeric() || (utf8 && b >= 0x80);
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        set[extra[i] as usize] = true;
        i += 1;
    }
    set
}

/// An authority as `Host` and targets carry it (RFC 3986 §3.2): a name or an address in
/// brackets, and a port of digits; no user, no path, nothing a name may not hold.
fn check_authority(authority: &str) -> Result<(), Refusal> {
    let bytes = authority.as_bytes();
    // Where the name or the address in brackets ends.
    let host_end = match bytes.first() {
        Some(b'[') => bytes.iter().position(|b| *b == b']').filter(|end| {
            *end > 1 && bytes[1..*end].iter().all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        }),
        _ => Some(bytes.iter().position(|b| !NAME_BYTES[usize::from(*b)]).unwrap_or(bytes.len()))
            .filter(|end| *end > 0),
    };
    let port = host_end.map(|end| &bytes[end + usize::from(bytes[0] == b'[')..]);
    match port {
        Some([] | [b':']) => Ok(()),
        Some([b':', digits @ ..]) if digits.iter().all(u8::is_ascii_digit) => Ok(()),
        _ => Err(Refusal::bad("the Host is not a host name or address")),
    }
}

/// What a host name may hold (RFC 3986 §3.2.2 reg-name: unreserved, sub-delims, `%`).
const NAME_BYTES: [bool; 256] = byte_set(b"-._~%!$&'()*+,;=", false);

/// How many `Host` fields a head has.
#[derive(Clone, Copy)]
enum Hosts<'r> {
    None,
    One(&'r str),
    Many,
}

/// What the fields of a head say about its framing, routing and connection.
struct Fields<'r> {
    host: Hosts<'r>,
    length: Option<u64>,
    length_dropped: bool,
    /// The `Transfer-Encoding` fields; their last coding is `chunked`.
    codings: Codings,
    /// The first problem found that hyper's parser lets through (see [`check`]).
    refusal: Option<Refusal>,
    connection: Connection,
    expect_continue: bool,
    upgrade: bool,
    te_trailers: bool,
}

/// Reads the fields that decide framing, routing and the connection, in order, as hyper's
/// HTTP/1 parser does: a `Content-Length` after `Transfer-Encoding` is not read, one before it
/// is read and then dropped, and the connection closes after such a request. What that parser
/// refuses is an `Err`; what it lets through is kept in `refusal`.
fn read_fields<'r, F: RawFields + ?Sized>(fields: &'r F, version: Version) -> Result<Fields<'r>, Refusal> {
    let mut read = Fields {
        host: Hosts::None,
        length: None,
        length_dropped: false,
        codings: Codings::default(),
        refusal: None,
        connection: Connection::default(),
        expect_continue: false,
        upgrade: false,
        te_trailers: false,
    };
    for (name, value) in fields.lines() {
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        let refuse = |refusal: &mut Option<Refusal>, why| {
            refusal.get_or_insert(Refusal::bad(why));
        };
        match name.len() {
            4 if is("host") => match ascii(value) {
                Some(host) => {
                    read.host = match read.host {
                        Hosts::None => Hosts::One(host),
                        _ => Hosts::Many,
                    };
                }
                None => refuse(&mut read.refusal, "the Host field is not text"),
            },
            14 if is("content-length") => {
                if read.codings.seen {
                    read.length_dropped = true;
                    continue;
                }
                let n = decimal(value).ok_or(Refusal::bad("an unreadable Content-Length"))?;
                if read.length.is_some_and(|m| m != n) {
                    return Err(Refusal::bad("Content-Length fields that disagree"));
                }
                read.length = Some(n);
            }
            17 if is("transfer-encoding") => {
                if version == Version::Http10 {
                    return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
                }
                read.codings.add(ascii(value).ok_or(Refusal::bad("an unreadable Transfer-Encoding"))?);
                if read.length.take().is_some() {
                    read.length_dropped = true;
                }
            }
            10 if is("connection") => match ascii(value) {
                Some(value) => {
                    read.connection.add(value.as_bytes());
                    if read.connection.names_framing || read.connection.names_host {
                        refuse(&mut read.refusal, "Connection names a framing or routing field");
                    }
                }
                None => refuse(&mut read.refusal, "an unreadable Connection field"),
            },
            6 if is("expect") => read.expect_continue = value.eq_ignore_ascii_case(b"100-continue"),
            7 if is("upgrade") => read.upgrade = true,
            2 if is("te") => {
                read.te_trailers |= std::str::from_utf8(value).is_ok_and(|v| named(v, "trailers"));
            }
            _ => {}
        }
    }
    if read.codings.seen && !read.codings.chunked_last {
        return Err(Refusal::bad("a Transfer-Encoding that does not end in chunked"));
    }
    Ok(read)
}

/// The transfer codings of a request, read field by field.
#[derive(Default)]
struct Codings {
    seen: bool,
    /// How many times `chunked` is listed.
    chunked: usize,
    /// A coding other than `chunked` is listed.
    other: bool,
    /// The last field's last coding is `chunked`.
    chunked_last: bool,
}

impl Codings {
    fn add(&mut self, value: &str) {
        self.seen = true;
        let mut last = None;
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let chunked = coding.eq_ignore_ascii_case("chunked");
            self.chunked += usize::from(chunked);
            self.other |= !chunked;
            last = Some(chunked);
        }
        self.chunked_last = last == Some(true);
    }

    /// Whether the body is chunked, once the last coding is known to be `chunked` (RFC 9112
    /// §6.3): listed once (§7), and no other coding, which is not understood (501, §6.1).
    fn understood(&self) -> Result<bool, Refusal> {
        if !self.seen {
            Ok(false)
        } else if self.other {
            Err(Refusal { status: StatusCode::NOT_IMPLEMENTED, why: "a transfer coding other than chunked" })
        } else if self.chunked > 1 {
            Err(Refusal::bad("chunked twice"))
        } else {
            Ok(true)
        }
    }
}

/// `value` as text when it is all ASCII (framing and routing fields have no use for more).
fn ascii(value: &[u8]) -> Option<&str> {
    if value.is_ascii() { std::str::from_utf8(value).ok() } else { None }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields(lines: &[(&'static str, &'static [u8])]) -> Vec<httparse::Header<'static>> {
        lines.iter().map(|(name, value)| httparse::Header { name, value }).collect()
    }

    fn line<'r>(target: &'r str, fields: &'r [httparse::Header<'r>]) -> Head<'r, [httparse::Header<'r>]> {
        Head { method: "GET", version: Version::Http11, target: Target::Line(target), fields }
    }

    #[test]
    fn the_authority_comes_from_the_target_first() {
        let f = fields(&[("Host", b"smug.test")]);
        let checked = check(&line("http://public.test/admin?x", &f)).unwrap();
        assert_eq!((checked.authority, checked.path, checked.query), ("public.test", "/admin", Some("x")));
        assert!(checked.absolute);
        let checked = check(&line("https://public.test", &f)).unwrap();
        assert_eq!((checked.authority, checked.path), ("public.test", "/"));
        assert_eq!(check(&line("/admin", &f)).unwrap().authority, "smug.test");
        for refused in ["ftp://a/", "public.test:80", "*", "http://user@a/", "http:///x", "http://a b/"] {
            assert!(check(&line(refused, &f)).is_err(), "{refused}");
        }
        assert!(check(&line("http://public.test/", &[])).is_err(), "an absolute target still needs Host");
    }

    #[test]
    fn hosts_are_one_and_well_formed() {
        for good in
            [&b"a.test"[..], b"A.Test:8080", b"[2001:db8::1]:443", b"127.0.0.1", b"xn--bcher-kva.test"]
        {
            assert!(check(&line("/", &fields(&[("host", good)]))).is_ok(), "{good:?}");
        }
        for bad in [
            &b""[..],
            b"a.test/x",
            b"u@a.test",
            b"a.test b",
            b"a.test\xa0",
            b"a.test:8o",
            b"[::1",
            b"[zz]",
            b"a\\b",
        ] {
            assert!(check(&line("/", &fields(&[("host", bad)]))).is_err(), "{bad:?}");
        }
        assert!(check(&line("/", &fields(&[("host", b"a"), ("Host", b"a")]))).is_err());
        assert!(check(&line("/", &[])).is_err());
    }

    #[test]
    fn targets_hold_only_what_a_uri_may() {
        let f = fields(&[("host", b"a")]);
        for good in ["/", "/a/b?c=d&e", "/%2e/x", "/a:b@c!$&'()*+,;=", "/{\"json\":1}", "/é", "/?a`b\\c"] {
            assert!(check(&line(good, &f)).is_ok(), "{good}");
        }
        for bad in ["/admin#x", "/a\\..\\admin", "/a<b", "/a>b", "/a`b", "/?a\"b", "/?a#b", "/a\x7fb"] {
            assert_eq!(
                check(&line(bad, &f)).map(|_| ()).map_err(|r| r.status),
                Err(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
    }

    #[test]
    fn framing_is_read_one_way_only() {
        let framing = |lines: &[(&'static str, &'static [u8])]| {
            let f = fields(&[&[("host", &b"a"[..])], lines].concat());
            check(&line("/", &f)).map(|c| (c.body, c.close)).map_err(|r| r.status.as_u16())
        };
        assert_eq!(framing(&[]), Ok((BodyFraming::Empty, false)));
        assert_eq!(
            framing(&[("content-length", b"5"), ("Content-Length", b"5")]),
            Ok((BodyFraming::Length(5), false))
        );
        assert_eq!(framing(&[("transfer-encoding", b"chunked")]), Ok((BodyFraming::Chunked, false)));
        // Transfer-Encoding wins over Content-Length, and the connection closes after.
        assert_eq!(
            framing(&[("content-length", b"5"), ("transfer-encoding", b"chunked")]),
            Ok((BodyFraming::Chunked, true))
        );
        assert_eq!(
            framing(&[("transfer-encoding", b"chunked"), ("content-length", b"x")]),
            Ok((BodyFraming::Chunked, true))
        );
        for bad in [
            &[("content-length", &b"5\xa0"[..])][..],
            &[("content-length", b"5"), ("content-length", b"6")],
            &[("content-length", b"5, 5")],
            &[("content-length", b"+5")],
            &[("content-length", b"x"), ("transfer-encoding", b"chunked")],
            &[("transfer-encoding", b"chunked, identity")],
            &[("transfer-encoding", b"chunked"), ("transfer-encoding", b"chunked")],
            &[("transfer-encoding", b"chunked\xa0")],
            &[("transfer-encoding", b"")],
            &[("connection", b"Content-Length"), ("content-length", b"5")],
            &[("connection", b"keep-alive, transfer-encoding")],
            &[("connection", b"HOST")],
            &[("connection", b"close\xa0")],
        ] {
            assert!(matches!(framing(bad), Err(400 | 501)), "{bad:?}: {:?}", framing(bad));
        }
        assert_eq!(framing(&[("transfer-encoding", b"gzip, chunked")]), Err(501));
    }

    #[test]
    fn versions_and_connections() {
        let f = fields(&[("host", b"a"), ("connection", b"keep-alive, x-hop")]);
        let mut head = line("/", &f);
        head.version = Version::Http10;
        let checked = check(&head).unwrap();
        assert!(!checked.close && checked.names_fields);
        let f = fields(&[("host", b"a")]);
        let mut head = line("/", &f);
        head.version = Version::Http10;
        assert!(check(&head).unwrap().close, "HTTP/1.0 closes unless asked to keep alive");
        let mut hostless = line("/", &[]);
        hostless.version = Version::Http10;
        assert_eq!(check(&hostless).unwrap().authority, "", "HTTP/1.0 needs no Host");
        let empty = fields(&[("host", b"")]);
        let mut head = line("/", &empty);
        head.version = Version::Http10;
        assert!(check(&head).is_err(), "but one it sends must be a host");
        let f = fields(&[("host", b"a"), ("transfer-encoding", b"chunked")]);
        let mut head = line("/", &f);
        head.version = Version::Http10;
        assert!(check(&head).is_err());
        let f = fields(&[("host", b"a"), ("upgrade", b"websocket"), ("connection", b"Upgrade")]);
        assert!(check(&line("/", &f)).unwrap().upgrade);
        let mut head = line("/", &f);
        head.method = "CONNECT";
        assert_eq!(check(&head).map(|_| ()).map_err(|r| r.status), Err(StatusCode::METHOD_NOT_ALLOWED));
    }
}
