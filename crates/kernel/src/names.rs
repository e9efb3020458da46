//! Chain and set names: a readable part for people reading `nft list`, behind a short hash of
//! it, so that names are unique even when the readable part is cut to nft's limit, and the
//! same on every replan (FNV-1a has no random seed).

use std::fmt::Write as _;
use std::net::IpAddr;

/// nft keeps names of at most 255 bytes (256 with the terminating NUL).
const MAX_NAME: usize = 255;

/// The base32 alphabet of RFC 4648: letters and digits nft reads in an unquoted name.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A readable name and its hash, from which every chain and set of one object is named.
pub(crate) struct Named {
    hash: [u8; 8],
    readable: String,
}

impl Named {
    /// `readable` with its hash.
    pub(crate) fn new(readable: String) -> Self {
        Named { hash: hash(readable.as_bytes()), readable }
    }

    /// `readable` with a hash that also covers `salt`, for names that must change when
    /// something not shown changes (an affinity set's timeout cannot be altered in place).
    pub(crate) fn salted(readable: String, salt: u32) -> Self {
        let mut bytes = readable.clone().into_bytes();
        bytes.extend_from_slice(&salt.to_be_bytes());
        Named { hash: hash(&bytes), readable }
    }

    /// The readable part.
    pub(crate) fn readable(&self) -> &str {
        &self.readable
    }

    /// `<prefix>-<hash>-<readable>`, cut to nft's limit.
    pub(crate) fn with_prefix(&self, prefix: &str) -> String {
        let mut name = String::with_capacity(prefix.len() + 10 + self.readable.len());
        name.push_str(prefix);
        name.push('-');
        name.extend(self.hash.iter().map(|&b| char::from(b)));
        name.push('-');
        let room = MAX_NAME.saturating_sub(name.len());
        // The readable part is ASCII (DNS names, numbers, addresses), so any cut is a boundary.
        name.push_str(&self.readable[..self.readable.len().min(room)]);
        name
    }
}

/// An address as a name may hold it: nft does not take `:` in an unquoted name.
pub(crate) fn push_address(out: &mut String, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            let _ = write!(out, "{v4}");
        }
        IpAddr::V6(v6) => out.extend(v6.to_string().chars().map(|c| if c == ':' { '.' } else { c })),
    }
}

/// The 64-bit FNV-1a hash of `bytes`: the same in every process, on every node.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The first 40 bits of the FNV-1a hash of `bytes`, in base32.
fn hash(bytes: &[u8]) -> [u8; 8] {
    let h = fnv1a(bytes);
    let mut out = [0u8; 8];
    for (i, c) in out.iter_mut().enumerate() {
        *c = BASE32[((h >> (59 - 5 * i)) & 31) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_stable_distinct_and_bounded() {
        let a = Named::new("default/web/tcp/http".into());
        assert_eq!(
            a.with_prefix("service"),
            Named::new("default/web/tcp/http".into()).with_prefix("service")
        );
        assert_ne!(
            a.with_prefix("service"),
            Named::new("default/web/tcp/https".into()).with_prefix("service")
        );
        let name = a.with_prefix("service");
        assert!(name.starts_with("service-") && name.ends_with("-default/web/tcp/http"), "{name}");
        assert_eq!(name.len(), "service-".len() + 8 + 1 + "default/web/tcp/http".len());
        // FNV-1a of the empty input is its offset basis: cbf29ce484222325, whose first 40 bits
        // are 11001 01111 11001 01001 11001 11001 00100 00100 in groups of five.
        assert_eq!(&hash(b""), b"ZPZJZZEE");
        let long = Named::new("x".repeat(400));
        assert_eq!(long.with_prefix("endpoint").len(), MAX_NAME);
        assert_ne!(
            Named::salted("a".into(), 1).with_prefix("s"),
            Named::salted("a".into(), 2).with_prefix("s")
        );
    }

    #[test]
    fn ipv6_addresses_lose_their_colons() {
        let mut out = String::new();
        push_address(&mut out, "fd00::1".parse().unwrap());
        assert_eq!(out, "fd00..1");
    }
}
