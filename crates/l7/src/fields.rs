//! The header field vocabulary both HTTP engines share: which fields describe one hop only, what
//! a `Connection` field says, which fields may travel as trailers, and how a length is spelled.

/// Largest request or answer head accepted (and sent on).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head (accepted, and sent on).
pub(crate) const MAX_FIELDS: usize = 100;

/// Whether a head of `bytes` with `fields` fields keeps within the limits Portico sets for the
/// heads it reads: what it sends on must keep within them too, so that an endpoint with the
/// same limits (another Portico) never gets more than Portico itself would take.
pub(crate) fn within_limits(bytes: usize, fields: usize) -> bool {
    bytes <= MAX_HEAD && fields <= MAX_FIELDS
}

/// Whether field `name` describes one hop only (RFC 9110 §7.6.1; any case). Checked for
/// every field of every message, so the length picks the one or two names to compare.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    let is = |hop: &str| name.eq_ignore_ascii_case(hop);
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// Names of the request fields set here, replacing any the client sent.
pub(crate) const FORWARDING_FIELDS: [&str; 6] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-request-id",
];

/// Whether a client's field named `name` is one Portico sets itself, or one an endpoint could
/// take for it, and so is never passed on: the forwarding fields, also spelled with `_` for `-`
/// (CGI-style servers read `X_Forwarded_For` as `X-Forwarded-For`; nginx drops such names for
/// this), and the fields some frameworks route by instead of the target (`X-Original-URL`,
/// `X-Rewrite-URL`), which would take a request elsewhere than where it was routed.
pub(crate) fn replaced_here(name: &str) -> bool {
    let is = |known: &str| {
        name.len() == known.len()
            && name
                .bytes()
                .zip(known.bytes())
                .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (a == b'_' && b == b'-'))
    };
    match name.len() {
        9 => is("x-real-ip"),
        12 => is("x-request-id"),
        13 => is("x-rewrite-url"),
        14 => is("x-original-url"),
        15 => is("x-forwarded-for"),
        16 => is("x-forwarded-host") || is("x-forwarded-port"),
        17 => is("x-forwarded-proto"),
        _ => false,
    }
}

/// Whether a field named `name` may be passed on as a trailer. Fields that frame, route,
/// authenticate or modify a message, or describe its content, act before the content is read
/// and must never arrive after it (RFC 9110 §6.5.1; the list of RFC 7230 §4.1.2, widened to
/// those categories); nor may fields of one hop.
pub(crate) fn may_be_trailer(name: &str) -> bool {
    const NEVER: [&str; 28] = [
        "content-length",
        "content-encoding",
        "content-type",
        "content-range",
        "trailer",
        "host",
        "authorization",
        "cookie",
        "set-cookie",
        "www-authenticate",
        "cache-control",
        "expect",
        "max-forwards",
        "pragma",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "age",
        "date",
        "expires",
        "location",
        "retry-after",
        "vary",
        "content-location",
        "forwarded",
    ];
    let is = |known: &&str| name.eq_ignore_ascii_case(known);
    !is_hop_by_hop(name) && !NEVER.iter().any(is) && !replaced_here(name)
}

/// What a message's `Connection` fields say.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Connection {
    /// They list `close`.
    pub close: bool,
    /// They list `keep-alive` (HTTP/1.0's way to keep a connection).
    pub keep_alive: bool,
    /// They list `upgrade`.
    pub upgrade: bool,
    /// They list names other than `close` and `keep-alive`: fields of this hop only, to drop
    /// (`Keep-Alive` is always dropped).
    pub names_fields: bool,
    /// They name a field that frames a message (`Content-Length`, `Transfer-Encoding`): dropped
    /// as hop-by-hop, it would leave the body unframed.
    pub names_framing: bool,
    /// They name `Host`.
    pub names_host: bool,
}

impl Connection {
    /// Reads one `Connection` field.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                // Named fields are rare: only they are compared with the names that matter.
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                self.names_framing |= token.eq_ignore_ascii_case(b"content-length")
                    || token.eq_ignore_ascii_case(b"transfer-encoding");
                self.names_host |= token.eq_ignore_ascii_case(b"host");
                self.names_fields = true;
            }
        }
    }
}

/// Whether the comma-separated list `value` holds `token` (any case).
pub(crate) fn named(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Writes a field line, `name: value`, to a head being written.
// Inlined: it writes every field of every relayed head, from three modules.
#[inline]
pub(crate) fn put_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The number `digits` spell in decimal, as `Content-Length` has it (RFC 9110 §8.6: digits
/// only, no sign); `None` for anything else or a number too large.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        if d.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(d - b'0')) } else { None }
    })
}

/// The length that all of `values`, the `Content-Length` fields of an answer, give: each a
/// number or a list of the same number (RFC 9110 §8.6); `Err` when any cannot be read or two
/// disagree, `Ok(None)` when there are none.
pub(crate) fn one_length<'v>(values: impl Iterator<Item = &'v [u8]>) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in values {
        for item in value.split(|b| *b == b',') {
            let n = decimal(item.trim_ascii()).ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Read access to a request's header fields, wherever they are held.
pub(crate) trait Fields {
    /// The text values of field `name` (any case), in order.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a;

    /// The first text value of field `name`.
    fn first<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }

    /// Whether the comma-separated lists of field `name` hold `token` (any case).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name).any(|v| named(v, token))
    }
}

impl Fields for http::HeaderMap {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name).iter().filter_map(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths_are_digits_only() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b""[..], b"+5", b"-1", b" 5", b"5 ", b"0x10", b"1e3", b"18446744073709551616"] {
            assert_eq!(decimal(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_answer_has_one_length_or_none() {
        let of = |values: &[&[u8]]| one_length(values.iter().copied());
        assert_eq!(of(&[]), Ok(None));
        assert_eq!(of(&[b"5"]), Ok(Some(5)));
        assert_eq!(of(&[b"5, 5", b"5"]), Ok(Some(5)));
        for bad in [&[&b"5"[..], b"7"][..], &[b"5, 7"], &[b"5\xa0"], &[b""], &[b"5,"]] {
            assert_eq!(of(bad), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn the_hop_by_hop_names_are_known_in_any_case() {
        for name in [
            "Connection",
            "proxy-authenticate",
            "Proxy-Authorization",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
            "Keep-Alive",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in ["tx", "trailers", "connections", "content-length", "x-upgrade", "host", ""] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }

    #[test]
    fn fields_set_here_are_known_in_any_spelling() {
        for name in [
            "X-Forwarded-For",
            "x_forwarded_for",
            "X_Real_IP",
            "x-request-id",
            "X-Original-URL",
            "x_rewrite_url",
        ] {
            assert!(replaced_here(name), "{name}");
        }
        for name in
            ["x-forwarded", "x-forwarded-fore", "x-real-ipv6", "x-original-uri", "forwarded", "x+real+ip"]
        {
            assert!(!replaced_here(name), "{name}");
        }
        for name in FORWARDING_FIELDS {
            assert!(replaced_here(name), "{name}");
        }
    }

    #[test]
    fn trailers_carry_no_framing_routing_or_credentials() {
        for allowed in ["x-sum", "grpc-status", "grpc-message", "Server-Timing", "etag", "digest"] {
            assert!(may_be_trailer(allowed), "{allowed}");
        }
        for never in [
            "Content-Length",
            "host",
            "Transfer-Encoding",
            "authorization",
            "set-cookie",
            "trailer",
            "te",
            "X-Real-IP",
        ] {
            assert!(!may_be_trailer(never), "{never}");
        }
    }

    #[test]
    fn connection_fields_are_read_for_close_keep_alive_and_named_fields() {
        for (values, close, keep_alive, names_fields) in [
            (&["keep-alive"][..], false, true, false),
            (&["Close"], true, false, false),
            (&[" keep-alive , close "], true, true, false),
            (&["keep-alive, X-Hop"], false, true, true),
            (&["keep-alive", "close, upgrade"], true, true, true),
            (&[",,"], false, false, false),
        ] {
            let mut field = Connection::default();
            for value in values {
                field.add(value.as_bytes());
            }
            assert_eq!(
                (field.close, field.keep_alive, field.names_fields),
                (close, keep_alive, names_fields),
                "{values:?}"
            );
        }
        let named = |value: &[u8]| {
            let mut field = Connection::default();
            field.add(value);
            (field.names_framing, field.names_host)
        };
        assert_eq!(named(b"keep-alive, Content-Length"), (true, false));
        assert_eq!(named(b"transfer-encoding"), (true, false));
        assert_eq!(named(b"close, HOST"), (false, true));
        assert_eq!(named(b"keep-alive, x-content-length, hosts"), (false, false));
    }
}
