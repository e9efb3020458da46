//! Request paths as routes see them. One normal form is used both to match and to send
//! upstream, so that no spelling (`/a/../admin`, `//admin`, `%2e%2e`) reaches a route its
//! plain form would not reach, and the endpoint sees what was routed.

use std::borrow::Cow;

/// Why a request path is refused (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// Not an absolute path.
    #[error("the path does not start with /")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("broken percent-encoding")]
    BadEscape,
    /// An encoded control character (NUL and the like).
    #[error("encoded control character")]
    Control,
    /// `..` above the root.
    #[error("the path climbs above /")]
    AboveRoot,
    /// `.;x` or `..;x`: a dot segment with parameters, which servers that strip path
    /// parameters (Tomcat, Jetty) resolve as `.` or `..` where routing saw a name.
    #[error("a dot segment with parameters")]
    DotParameters,
}

/// The normal form of a request path (without the query):
/// - `%XX` of unreserved characters (letters, digits, `-._~`) are decoded, so `%2e` is `.`;
///   other escapes stay encoded, upper-cased: an encoded `/` (`%2F`) is part of a segment,
///   never a separator, so it cannot split or join segments behind the router's back;
/// - empty segments (`//`) are merged and `.`/`..` segments resolved (RFC 3986 §5.2.4);
///   `..` above the root is refused rather than clamped, and so is a dot segment with
///   parameters (`/public/..;/admin`);
/// - bytes outside ASCII (UTF-8) are kept as they are.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    if !raw.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize(raw).map(Cow::Owned)
}

/// The normal form of an absolute path, built: escapes decoded, segments resolved.
fn normalize(raw: &str) -> Result<String, BadPath> {
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded[1..].split('/') {
        match segment {
            s if dot_with_parameters(s.as_bytes()) => return Err(BadPath::DotParameters),
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(BadPath::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let last = decoded.rsplit('/').next().unwrap_or("");
    // A trailing slash (or a final `.`/`..`) means the path names a directory: keep it so.
    let trailing = !segments.is_empty() && matches!(last, "" | "." | "..");
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The common case, checked in one pass over the bytes without allocating: no escapes, no
/// empty or dot segments (an empty last segment, a trailing slash, is normal).
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'%' => return false,
            b'/' if matches!(&bytes[start..i], b"" | b"." | b"..")
                || dot_with_parameters(&bytes[start..i]) =>
            {
                return false;
            }
            b'/' => start = i + 1,
            _ => {}
        }
    }
    !matches!(&bytes[start..], b"." | b"..") && !dot_with_parameters(&bytes[start..])
}

/// Whether a segment is `.` or `..` with parameters after a `;`.
fn dot_with_parameters(segment: &[u8]) -> bool {
    matches!(segment, [b'.', b';', ..] | [b'.', b'.', b';', ..])
}

/// `raw` with the escapes of unreserved characters decoded and the others upper-cased; its
/// other bytes (UTF-8 included) as they are.
fn decode_unreserved(raw: &str) -> Result<String, BadPath> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = |c: u8| char::from(c).to_digit(16);
        let (Some(hi), Some(lo)) =
            (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        else {
            return Err(BadPath::BadEscape);
        };
        let value = u8::try_from(hi * 16 + lo).map_err(|_| BadPath::BadEscape)?;
        if value < 0x20 || value == 0x7f {
            return Err(BadPath::Control);
        }
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            out.push(value);
        } else {
            out.extend_from_slice(format!("%{value:02X}").as_bytes());
        }
        i += 3;
    }
    // Only ASCII escapes were replaced, by ASCII: what was UTF-8 still is.
    String::from_utf8(out).map_err(|_| BadPath::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, BadPath> {
        normalize_path(path).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_untouched() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/a.b/c-d_e~f", "/a/.well-known/x"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
            assert_eq!(n(p).as_deref(), Ok(p));
        }
    }

    #[test]
    fn dot_segments_and_empty_segments() {
        assert_eq!(n("/public/../admin").as_deref(), Ok("/admin"));
        assert_eq!(n("//admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/a/./b//c/").as_deref(), Ok("/a/b/c/"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("/.."), Err(BadPath::AboveRoot));
        assert_eq!(n("/a/../../etc"), Err(BadPath::AboveRoot));
    }

    #[test]
    fn escapes() {
        assert_eq!(n("/public/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2E%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/%61dmin").as_deref(), Ok("/admin"));
        // Encoded slashes stay inside their segment.
        assert_eq!(n("/public%2F..%2Fadmin").as_deref(), Ok("/public%2F..%2Fadmin"));
        assert_eq!(n("/public%2f..%2fadmin").as_deref(), Ok("/public%2F..%2Fadmin"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/a%2"), Err(BadPath::BadEscape));
        assert_eq!(n("/a%zz"), Err(BadPath::BadEscape));
        assert_eq!(n("/a%00b"), Err(BadPath::Control));
        assert_eq!(n("admin"), Err(BadPath::NotAbsolute));
    }

    #[test]
    fn utf8_is_kept_and_dot_segments_with_parameters_refused() {
        assert_eq!(n("//é/./x%41").as_deref(), Ok("/é/xA"));
        assert_eq!(n("/café/../thé").as_deref(), Ok("/thé"));
        for bad in ["/public/..;/admin", "/public/..;x/admin", "/.;/admin", "/a/%2e%2e;/b", "/a/..;"] {
            assert_eq!(n(bad), Err(BadPath::DotParameters), "{bad}");
        }
        for fine in ["/a;b", "/a/.x;y", "/a/...;/b", "/a/b;.."] {
            assert!(n(fine).is_ok(), "{fine}");
        }
    }

    proptest::proptest! {
        /// A path the one-pass check calls normal is its own normal form; without escapes
        /// (which the check leaves to the full normalisation) the two agree both ways. Over
        /// paths made of the characters that matter.
        #[test]
        fn the_quick_check_agrees_with_the_normal_form(tail in "[/.a%2eE;]{0,12}") {
            let path = format!("/{tail}");
            let own_form = normalize(&path).as_deref() == Ok(path.as_str());
            if is_normal(&path) {
                proptest::prop_assert!(own_form, "{}", path);
            }
            if !path.contains('%') {
                proptest::prop_assert_eq!(is_normal(&path), own_form, "{}", path);
            }
        }
    }
}
