//! Rule texts as nf_tables expressions: what `nft` would send the kernel for each rule the
//! compiler writes, built here so that a sync needs no `nft` process.
//!
//! The compiler's rules use a small part of nft's language (the matches and statements of
//! kube-proxy's design); [`linearize`] reads exactly that part and refuses anything else by
//! name, so a rule it does not know is an error, never a different rule. The expressions and
//! registers are the ones nft 1.0 chooses (`nft --debug=netlink` prints them as
//! [`Expr`]'s `Display` does), which the differential test in `tests/netlink.rs` checks in a
//! kernel: the same ruleset written by nft and by Portico lists the same.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::nfnetlink::{put_attr, put_attr_with, put_nested};
use crate::ruleset::Family;

/// `NFT_REG_VERDICT`.
const VERDICT_REG: u32 = 0;
/// `NFT_REG_1`, the first 16-byte register.
const REG_1: u32 = 1;
/// `NFT_REG32_00`, the first 4-byte register.
const REG32_00: u32 = 8;

/// Where a payload is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// `NFT_PAYLOAD_NETWORK_HEADER`.
    Network = 1,
    /// `NFT_PAYLOAD_TRANSPORT_HEADER`.
    Transport = 2,
}

/// A `meta` key (`NFT_META_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    /// The packet mark.
    Mark = 3,
    /// The transport protocol.
    L4proto = 16,
}

/// A `ct` key (`NFT_CT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtKey {
    /// The connection's state bits (new, established…).
    State = 0,
    /// The connection's status bits (dnat…).
    Status = 2,
}

/// Where a rule sends a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// `NF_DROP`.
    Drop,
    /// `NF_ACCEPT`.
    Accept,
    /// `NFT_RETURN`.
    Return,
    /// `NFT_JUMP` to a chain.
    Jump(&'a str),
    /// `NFT_GOTO` a chain.
    Goto(&'a str),
}

impl<'a> Verdict<'a> {
    /// The verdict of a map value or statement (`goto X`, `drop`…).
    pub fn parse(text: &'a str) -> Option<Verdict<'a>> {
        let mut words = text.split_whitespace();
        let verdict = match (words.next()?, words.next()) {
            ("drop", None) => Verdict::Drop,
            ("accept", None) => Verdict::Accept,
            ("return", None) => Verdict::Return,
            ("jump", Some(chain)) => Verdict::Jump(chain),
            ("goto", Some(chain)) => Verdict::Goto(chain),
            _ => return None,
        };
        words.next().is_none().then_some(verdict)
    }

    /// Its `NFTA_VERDICT_CODE`.
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    /// Appends it as `NFTA_DATA_VERDICT` nests it.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_nested(buf, attr::DATA_VERDICT, |buf| {
            put_attr(buf, attr::VERDICT_CODE, &self.code().to_be_bytes());
            if let Verdict::Jump(chain) | Verdict::Goto(chain) = self {
                put_string(buf, attr::VERDICT_CHAIN, chain);
            }
        });
    }
}

impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Drop => f.write_str("drop"),
            Verdict::Accept => f.write_str("accept"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(chain) => write!(f, "jump -> {chain}"),
            Verdict::Goto(chain) => write!(f, "goto -> {chain}"),
        }
    }
}

/// One nf_tables expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr<'a> {
    /// Loads `len` bytes at `offset` of a header.
    Payload { base: Base, offset: u32, len: u32, dreg: u32 },
    /// Loads a `meta` key.
    Meta { key: MetaKey, dreg: u32 },
    /// Sets a `meta` key from a register.
    MetaSet { key: MetaKey, sreg: u32 },
    /// Loads a `ct` key.
    Ct { key: CtKey, dreg: u32 },
    /// Compares a register with `data`: equal, or not when `negate`.
    Cmp { sreg: u32, negate: bool, data: Vec<u8> },
    /// Matches when a register is at least (`at_most`: at most) `data`, compared as big-endian
    /// bytes.
    CmpBound { sreg: u32, at_most: bool, data: Vec<u8> },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise { reg: u32, mask: Vec<u8>, xor: Vec<u8> },
    /// Looks a key up in a set (a map's verdict when `verdict`), matching when found, or when
    /// not found if `invert`.
    Lookup { set: &'a str, sreg: u32, verdict: bool, invert: bool },
    /// Puts `data` in a register.
    Immediate { dreg: u32, data: Vec<u8> },
    /// Ends the rule with a verdict.
    Verdict(Verdict<'a>),
    /// Destination NAT to the address and port in two registers.
    Dnat { family: Family, addr: u32, port: u32 },
    /// Masquerading, with fully random ports.
    Masquerade,
    /// Redirection to this host, to the port in a register.
    Redirect { port: u32 },
    /// Rejects: `kind` 0 ICMP unreachable with `code`, 1 TCP reset.
    Reject { kind: u32, code: u8 },
    /// A random number modulo `modulus`.
    Numgen { dreg: u32, modulus: u32 },
    /// The route type of the packet's source or destination address.
    Fib { dreg: u32, daddr: bool },
    /// Adds or refreshes the key in a set with timeouts.
    Update { set: &'a str, sreg: u32 },
}

/// Netlink attribute numbers of `linux/netfilter/nf_tables.h`.
pub mod attr {
    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;
    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

/// Appends a NUL-terminated string attribute, as the kernel reads names.
pub fn put_string(buf: &mut Vec<u8>, kind: u16, text: &str) {
    put_attr_with(buf, kind, &[text.as_bytes(), &[0]]);
}

/// Appends a `NFTA_DATA_VALUE` nested in `kind`.
pub fn put_value(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    put_nested(buf, kind, |buf| put_attr(buf, attr::DATA_VALUE, data));
}

/// Appends a big-endian `u32` attribute.
pub fn put_u32(buf: &mut Vec<u8>, kind: u16, value: u32) {
    put_attr(buf, kind, &value.to_be_bytes());
}

impl Expr<'_> {
    /// Appends it as one `NFTA_LIST_ELEM` of a rule's `NFTA_RULE_EXPRESSIONS`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_nested(buf, attr::LIST_ELEM, |buf| {
            put_string(buf, attr::EXPR_NAME, self.name());
            put_nested(buf, attr::EXPR_DATA, |buf| self.encode_data(buf));
        });
    }

    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Cmp { .. } | Expr::CmpBound { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Dnat { .. } => "nat",
            Expr::Masquerade => "masq",
            Expr::Redirect { .. } => "redir",
            Expr::Reject { .. } => "reject",
            Expr::Numgen { .. } => "numgen",
            Expr::Fib { .. } => "fib",
            Expr::Update { .. } => "dynset",
        }
    }

    /// The expression's own attributes (`NFTA_<NAME>_*`, numbered as in nf_tables.h).
    fn encode_data(&self, buf: &mut Vec<u8>) {
        match self {
            Expr::Payload { base, offset, len, dreg } => {
                put_u32(buf, 1, *dreg);
                put_u32(buf, 2, *base as u32);
                put_u32(buf, 3, *offset);
                put_u32(buf, 4, *len);
            }
            Expr::Meta { key, dreg } => {
                put_u32(buf, 2, *key as u32);
                put_u32(buf, 1, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                put_u32(buf, 2, *key as u32);
                put_u32(buf, 3, *sreg);
            }
            Expr::Ct { key, dreg } => {
                put_u32(buf, 2, *key as u32);
                put_u32(buf, 1, *dreg);
            }
            Expr::Cmp { sreg, negate, data } => {
                put_u32(buf, 1, *sreg);
                put_u32(buf, 2, u32::from(*negate));
                put_value(buf, 3, data);
            }
            Expr::CmpBound { sreg, at_most, data } => {
                put_u32(buf, 1, *sreg);
                put_u32(buf, 2, if *at_most { NFT_CMP_LTE } else { NFT_CMP_GTE });
                put_value(buf, 3, data);
            }
            Expr::Bitwise { reg, mask, xor } => {
                put_u32(buf, 1, *reg);
                put_u32(buf, 2, *reg);
                put_u32(buf, 3, u32::try_from(mask.len()).unwrap_or(u32::MAX));
                put_value(buf, 4, mask);
                put_value(buf, 5, xor);
            }
            Expr::Lookup { set, sreg, verdict, invert } => {
                put_string(buf, 1, set);
                put_u32(buf, 2, *sreg);
                if *verdict {
                    put_u32(buf, 3, VERDICT_REG);
                }
                if *invert {
                    put_u32(buf, 5, 1);
                }
            }
            Expr::Immediate { dreg, data } => {
                put_u32(buf, 1, *dreg);
                put_value(buf, 2, data);
            }
            Expr::Verdict(verdict) => {
                put_u32(buf, 1, VERDICT_REG);
                put_nested(buf, 2, |buf| verdict.encode(buf));
            }
            Expr::Dnat { family, addr, port } => {
                put_u32(buf, 1, 1); // NFT_NAT_DNAT
                put_u32(buf, 2, nfproto(*family));
                put_u32(buf, 3, *addr);
                put_u32(buf, 5, *port);
                put_u32(buf, 7, NF_NAT_RANGE_PROTO_SPECIFIED);
            }
            Expr::Masquerade => put_u32(buf, 1, NF_NAT_RANGE_PROTO_RANDOM_FULLY),
            Expr::Redirect { port } => {
                put_u32(buf, 1, *port); // NFTA_REDIR_REG_PROTO_MIN
                put_u32(buf, 3, NF_NAT_RANGE_PROTO_SPECIFIED); // NFTA_REDIR_FLAGS
            }
            Expr::Reject { kind, code } => {
                put_u32(buf, 1, *kind);
                put_attr(buf, 2, &[*code]);
            }
            Expr::Numgen { dreg, modulus } => {
                put_u32(buf, 1, *dreg);
                put_u32(buf, 2, *modulus);
                put_u32(buf, 3, 1); // NFT_NG_RANDOM
            }
            Expr::Fib { dreg, daddr } => {
                put_u32(buf, 1, *dreg);
                put_u32(buf, 2, 3); // NFT_FIB_RESULT_ADDRTYPE
                put_u32(buf, 3, if *daddr { 2 } else { 1 }); // NFTA_FIB_F_DADDR, _SADDR
            }
            Expr::Update { set, sreg } => {
                put_string(buf, 1, set);
                put_u32(buf, 3, 1); // NFT_DYNSET_OP_UPDATE
                put_u32(buf, 4, *sreg);
            }
        }
    }
}

/// `NFT_CMP_LTE` and `NFT_CMP_GTE` of `enum nft_cmp_ops`.
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;

/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the port is given.
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`.
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

/// The `NFPROTO_*` of a family.
pub fn nfproto(family: Family) -> u32 {
    match family {
        Family::Ip => 2,
        Family::Ip6 => 10,
    }
}

/// Data as `nft --debug=netlink` prints it: 32-bit words in host order.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "0x{:08x}", u32::from_ne_bytes(word))?;
        }
        Ok(())
    }
}

impl fmt::Display for Expr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[ ")?;
        match self {
            Expr::Payload { base, offset, len, dreg } => {
                let base = if *base == Base::Network { "network" } else { "transport" };
                write!(f, "payload load {len}b @ {base} header + {offset} => reg {dreg}")?;
            }
            Expr::Meta { key, dreg } => write!(f, "meta load {} => reg {dreg}", meta_name(*key))?,
            Expr::MetaSet { key, sreg } => write!(f, "meta set {} with reg {sreg}", meta_name(*key))?,
            Expr::Ct { key, dreg } => {
                let key = if *key == CtKey::State { "state" } else { "status" };
                write!(f, "ct load {key} => reg {dreg}")?;
            }
            Expr::Cmp { sreg, negate, data } => {
                write!(f, "cmp {} reg {sreg} {}", if *negate { "neq" } else { "eq" }, Hex(data))?;
            }
            Expr::CmpBound { sreg, at_most, data } => {
                write!(f, "cmp {} reg {sreg} {}", if *at_most { "lte" } else { "gte" }, Hex(data))?;
            }
            Expr::Bitwise { reg, mask, xor } => {
                write!(f, "bitwise reg {reg} = ( reg {reg} & {} ) ^ {}", Hex(mask), Hex(xor))?;
            }
            Expr::Lookup { set, sreg, verdict, invert } => {
                write!(f, "lookup reg {sreg} set {set}")?;
                if *verdict {
                    f.write_str(" dreg 0")?;
                }
                if *invert {
                    f.write_str(" 0x1")?;
                }
            }
            Expr::Immediate { dreg, data } => write!(f, "immediate reg {dreg} {}", Hex(data))?,
            Expr::Verdict(verdict) => write!(f, "immediate reg 0 {verdict}")?,
            Expr::Dnat { family, addr, port } => write!(
                f,
                "nat dnat {} addr_min reg {addr} proto_min reg {port} flags 0x{NF_NAT_RANGE_PROTO_SPECIFIED:x}",
                family.name()
            )?,
            Expr::Masquerade => write!(f, "masq flags 0x{NF_NAT_RANGE_PROTO_RANDOM_FULLY:x}")?,
            Expr::Redirect { port } => {
                write!(f, "redir proto_min reg {port} flags 0x{NF_NAT_RANGE_PROTO_SPECIFIED:x}")?;
            }
            Expr::Reject { kind, code } => write!(f, "reject type {kind} code {code}")?,
            Expr::Numgen { dreg, modulus } => write!(f, "numgen reg {dreg} = random mod {modulus}")?,
            Expr::Fib { dreg, daddr } => {
                write!(f, "fib {} type => reg {dreg}", if *daddr { "daddr" } else { "saddr" })?;
            }
            Expr::Update { set, sreg } => write!(f, "dynset update reg_key {sreg} set {set}")?,
        }
        f.write_str(" ]")
    }
}

fn meta_name(key: MetaKey) -> &'static str {
    match key {
        MetaKey::Mark => "mark",
        MetaKey::L4proto => "l4proto",
    }
}

/// Why a rule text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode `{rule}`: {reason}")]
pub struct Unsupported {
    /// The rule.
    pub rule: String,
    /// What was not understood.
    pub reason: String,
}

/// The expressions of one rule of `family`, as nft 1.0 builds them.
pub fn linearize(family: Family, rule: &str) -> Result<Vec<Expr<'_>>, Unsupported> {
    let fail = |reason: String| Unsupported { rule: rule.to_owned(), reason };
    let mut words = Tokens::new(rule);
    let mut out = Vec::with_capacity(8);
    while let Some(word) = words.next() {
        match word {
            "ct" => {
                let (key, bit) = match (words.next(), words.next()) {
                    (Some("state"), Some("new")) => (CtKey::State, 0x8u32),
                    (Some("status"), Some("dnat")) => (CtKey::Status, 0x20),
                    other => return Err(fail(format!("ct {other:?}"))),
                };
                out.push(Expr::Ct { key, dreg: REG_1 });
                out.push(Expr::Bitwise { reg: REG_1, mask: bit.to_ne_bytes().to_vec(), xor: vec![0; 4] });
                out.push(Expr::Cmp { sreg: REG_1, negate: true, data: vec![0; 4] });
            }
            "fib" => {
                let daddr = match (words.next(), words.next(), words.next()) {
                    (Some(which @ ("saddr" | "daddr")), Some("type"), Some("local")) => which == "daddr",
                    other => return Err(fail(format!("fib {other:?}"))),
                };
                out.push(Expr::Fib { dreg: REG_1, daddr });
                const RTN_LOCAL: u32 = 2;
                out.push(Expr::Cmp { sreg: REG_1, negate: false, data: RTN_LOCAL.to_ne_bytes().to_vec() });
            }
            "numgen" => {
                let (modulus, value) = match (words.next(), words.next(), words.next(), words.next()) {
                    (Some("random"), Some("mod"), Some(m), Some(v)) => (m.parse::<u32>(), v.parse::<u32>()),
                    other => return Err(fail(format!("numgen {other:?}"))),
                };
                let (Ok(modulus), Ok(value)) = (modulus, value) else {
                    return Err(fail("numgen modulus or value is not a number".into()));
                };
                out.push(Expr::Numgen { dreg: REG_1, modulus });
                out.push(Expr::Cmp { sreg: REG_1, negate: false, data: value.to_ne_bytes().to_vec() });
            }
            "tcp" | "udp" | "sctp" => {
                let proto = protocol_number(word).unwrap_or_default();
                if words.next() != Some("dport") {
                    return Err(fail(format!("{word} without dport")));
                }
                // A port, or a range of them (`9000-9010`).
                let ports = words.next().and_then(|p| match p.split_once('-') {
                    Some((low, high)) => Some((low.parse::<u16>().ok()?, Some(high.parse::<u16>().ok()?))),
                    None => Some((p.parse::<u16>().ok()?, None)),
                });
                let (port, last) = ports.ok_or_else(|| fail(format!("{word} dport without a port")))?;
                out.push(Expr::Meta { key: MetaKey::L4proto, dreg: REG_1 });
                out.push(Expr::Cmp { sreg: REG_1, negate: false, data: vec![proto] });
                out.push(dport(REG_1));
                match last {
                    None => {
                        out.push(Expr::Cmp { sreg: REG_1, negate: false, data: port.to_be_bytes().to_vec() })
                    }
                    Some(last) => {
                        let bound = |at_most, p: u16| Expr::CmpBound {
                            sreg: REG_1,
                            at_most,
                            data: p.to_be_bytes().to_vec(),
                        };
                        out.push(bound(false, port));
                        out.push(bound(true, last));
                    }
                }
            }
            "meta" if words.peek_at(1) == Some("set") => {
                // meta mark set meta mark | BIT, or ^ BIT
                let parts =
                    [words.next(), words.next(), words.next(), words.next(), words.next(), words.next()];
                let (op, bit) = match parts {
                    [Some("mark"), Some("set"), Some("meta"), Some("mark"), Some(op), Some(bit)] => (op, bit),
                    other => return Err(fail(format!("meta set {other:?}"))),
                };
                let bit = number(bit).ok_or_else(|| fail(format!("mark {bit} is not a number")))?;
                let (mask, xor) = match op {
                    "|" => (!bit, bit),
                    "^" => (u32::MAX, bit),
                    other => return Err(fail(format!("mark operator {other}"))),
                };
                out.push(Expr::Meta { key: MetaKey::Mark, dreg: REG_1 });
                out.push(Expr::Bitwise {
                    reg: REG_1,
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: xor.to_ne_bytes().to_vec(),
                });
                out.push(Expr::MetaSet { key: MetaKey::Mark, sreg: REG_1 });
            }
            "meta" if words.peek() == Some("mark") => {
                // meta mark & BIT == VALUE
                let parts = [words.next(), words.next(), words.next(), words.next(), words.next()];
                let (bit, value) = match parts {
                    [Some("mark"), Some("&"), Some(bit), Some("=="), Some(value)] => {
                        (number(bit), number(value))
                    }
                    other => return Err(fail(format!("meta mark {other:?}"))),
                };
                let (Some(bit), Some(value)) = (bit, value) else {
                    return Err(fail("mark mask or value is not a number".into()));
                };
                out.push(Expr::Meta { key: MetaKey::Mark, dreg: REG_1 });
                out.push(Expr::Bitwise { reg: REG_1, mask: bit.to_ne_bytes().to_vec(), xor: vec![0; 4] });
                out.push(Expr::Cmp { sreg: REG_1, negate: false, data: value.to_ne_bytes().to_vec() });
            }
            "meta" | "ip" | "ip6" | "th" => selectors(family, word, &mut words, &mut out).map_err(fail)?,
            "update" => {
                let set = words.next().and_then(|s| s.strip_prefix('@'));
                let set = set.ok_or_else(|| fail("update without a set".into()))?;
                let key = [words.next(), words.next(), words.next(), words.next()];
                if key != [Some("{"), Some(family.name()), Some("saddr"), Some("}")] {
                    return Err(fail(format!("update key {key:?}")));
                }
                out.push(address_payload(family, true, REG_1));
                out.push(Expr::Update { set, sreg: REG_1 });
            }
            "dnat" => {
                let to = match (words.next(), words.next()) {
                    (Some("to"), Some(to)) => to.parse::<std::net::SocketAddr>().ok(),
                    _ => None,
                };
                let to = to.ok_or_else(|| fail("dnat without an address and port".into()))?;
                if Family::of(&to.ip()) != family {
                    return Err(fail(format!("dnat to {to} in the {} family", family.name())));
                }
                out.push(Expr::Immediate { dreg: REG_1, data: address_bytes(to.ip()) });
                out.push(Expr::Immediate { dreg: 2, data: to.port().to_be_bytes().to_vec() });
                out.push(Expr::Dnat { family, addr: REG_1, port: 2 });
            }
            "redirect" => {
                let port = match (words.next(), words.next()) {
                    (Some("to"), Some(to)) => to.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()),
                    _ => None,
                };
                let port = port.ok_or_else(|| fail("redirect without `to :PORT`".into()))?;
                out.push(Expr::Immediate { dreg: REG_1, data: port.to_be_bytes().to_vec() });
                out.push(Expr::Redirect { port: REG_1 });
            }
            "masquerade" => {
                if words.next() != Some("fully-random") {
                    return Err(fail("masquerade without fully-random".into()));
                }
                out.push(Expr::Masquerade);
            }
            "reject" => match (words.next(), words.next(), words.next()) {
                (None, _, _) => {
                    let code = if family == Family::Ip { 3 } else { 4 }; // port unreachable
                    out.push(Expr::Reject { kind: 0, code });
                }
                (Some("with"), Some("tcp"), Some("reset")) => out.push(Expr::Reject { kind: 1, code: 0 }),
                other => return Err(fail(format!("reject {other:?}"))),
            },
            "drop" | "accept" | "return" | "jump" | "goto" => {
                let verdict = match word {
                    "drop" => Verdict::Drop,
                    "accept" => Verdict::Accept,
                    "return" => Verdict::Return,
                    _ => {
                        let chain = words.next().ok_or_else(|| fail(format!("{word} without a chain")))?;
                        if word == "jump" { Verdict::Jump(chain) } else { Verdict::Goto(chain) }
                    }
                };
                out.push(Expr::Verdict(verdict));
            }
            other => return Err(fail(format!("unknown word `{other}`"))),
        }
    }
    Ok(out)
}

/// The words of a rule, with look-ahead.
struct Tokens<'a> {
    words: Vec<&'a str>,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn new(rule: &'a str) -> Self {
        Tokens { words: rule.split_whitespace().collect(), at: 0 }
    }

    fn peek(&self) -> Option<&'a str> {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> Option<&'a str> {
        self.words.get(self.at + ahead).copied()
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let word = self.peek()?;
        self.at += 1;
        Some(word)
    }
}

/// One value a selector loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selector {
    /// `ip saddr`, `ip6 daddr`…
    Address { family: Family, source: bool },
    /// `meta l4proto`.
    L4proto,
    /// `th dport`.
    Dport,
}

impl Selector {
    /// How many bytes it loads.
    fn len(self) -> u32 {
        match self {
            Selector::Address { family: Family::Ip, .. } => 4,
            Selector::Address { family: Family::Ip6, .. } => 16,
            Selector::L4proto => 1,
            Selector::Dport => 2,
        }
    }

    fn load(self, dreg: u32) -> Expr<'static> {
        match self {
            Selector::Address { family, source } => address_payload(family, source, dreg),
            Selector::L4proto => Expr::Meta { key: MetaKey::L4proto, dreg },
            Selector::Dport => dport(dreg),
        }
    }
}

/// Selectors joined by ` . ` and what is done with them: looked up in a set or map (`@set`,
/// `!= @set`, `vmap @map`), or, for one address, compared with an address or prefix.
fn selectors<'a>(
    family: Family,
    first: &str,
    words: &mut Tokens<'a>,
    out: &mut Vec<Expr<'a>>,
) -> Result<(), String> {
    let mut joined = vec![selector(family, first, words.next())?];
    while words.peek() == Some(".") {
        words.next();
        let word = words.next().ok_or("a concatenation ends with `.`")?;
        joined.push(selector(family, word, words.next())?);
    }
    let (invert, target) = match words.next() {
        Some("!=") => (true, words.next()),
        Some("vmap") => {
            let set = words.next().and_then(|s| s.strip_prefix('@')).ok_or("vmap without a named map")?;
            load(&joined, out);
            out.push(Expr::Lookup { set, sreg: REG_1, verdict: true, invert: false });
            return Ok(());
        }
        other => (false, other),
    };
    let target = target.ok_or("a selector without a value")?;
    if let Some(set) = target.strip_prefix('@') {
        load(&joined, out);
        out.push(Expr::Lookup { set, sreg: REG_1, verdict: false, invert });
        return Ok(());
    }
    if let ([Selector::L4proto], Some(proto)) = (&joined[..], protocol_number(target)) {
        out.push(Selector::L4proto.load(REG_1));
        out.push(Expr::Cmp { sreg: REG_1, negate: invert, data: vec![proto] });
        return Ok(());
    }
    let [Selector::Address { family: of, source }] = joined[..] else {
        return Err(format!("only an address is compared with a value, not {joined:?}"));
    };
    let net: IpNet = match target.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => {
            target.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("`{target}` is not an address"))?
        }
    };
    if Family::of(&net.addr()) != of {
        return Err(format!("{target} is not an {} address", of.name()));
    }
    prefix(of, source, net, invert, out);
    Ok(())
}

fn selector(family: Family, word: &str, field: Option<&str>) -> Result<Selector, String> {
    match (word, field) {
        ("ip" | "ip6", Some(which @ ("saddr" | "daddr"))) => {
            let of = if word == "ip" { Family::Ip } else { Family::Ip6 };
            if of != family {
                return Err(format!("{word} {which} in the {} family", family.name()));
            }
            Ok(Selector::Address { family: of, source: which == "saddr" })
        }
        ("meta", Some("l4proto")) => Ok(Selector::L4proto),
        ("th", Some("dport")) => Ok(Selector::Dport),
        (word, field) => Err(format!("unknown selector `{word} {}`", field.unwrap_or(""))),
    }
}

/// Loads selectors into registers from `NFT_REG_1` on: one alone in a 16-byte register, a
/// concatenation in consecutive 4-byte registers, each value rounded up to 4 bytes.
fn load(joined: &[Selector], out: &mut Vec<Expr<'_>>) {
    if let [alone] = joined {
        out.push(alone.load(REG_1));
        return;
    }
    let mut slot = 0;
    for selector in joined {
        out.push(selector.load(register(slot)));
        slot += selector.len().div_ceil(4);
    }
}

/// The register number nft gives the 4-byte slot `slot` (from 0): the 16-byte register's
/// number when it starts one, else the 4-byte register's.
fn register(slot: u32) -> u32 {
    if slot.is_multiple_of(4) { REG_1 + slot / 4 } else { REG32_00 + slot }
}

/// An address compared with a prefix, as nft does: only the whole bytes it covers when the
/// prefix ends on a byte, else masked.
fn prefix(family: Family, source: bool, net: IpNet, negate: bool, out: &mut Vec<Expr<'_>>) {
    let bytes = address_bytes(net.addr());
    let full = u32::from(net.max_prefix_len());
    let len = u32::from(net.prefix_len());
    let Expr::Payload { base, offset, dreg, .. } = address_payload(family, source, REG_1) else { return };
    if len % 8 == 0 && len > 0 {
        let keep = (len / 8) as usize;
        out.push(Expr::Payload { base, offset, len: len / 8, dreg });
        out.push(Expr::Cmp { sreg: REG_1, negate, data: bytes[..keep].to_vec() });
        return;
    }
    out.push(Expr::Payload { base, offset, len: full / 8, dreg });
    let mask = address_bytes(net.netmask());
    out.push(Expr::Bitwise { reg: REG_1, mask, xor: vec![0; bytes.len()] });
    out.push(Expr::Cmp { sreg: REG_1, negate, data: address_bytes(net.network()) });
}

/// The load of a packet's source or destination address.
fn address_payload(family: Family, source: bool, dreg: u32) -> Expr<'static> {
    let (offset, len) = match (family, source) {
        (Family::Ip, true) => (12, 4),
        (Family::Ip, false) => (16, 4),
        (Family::Ip6, true) => (8, 16),
        (Family::Ip6, false) => (24, 16),
    };
    Expr::Payload { base: Base::Network, offset, len, dreg }
}

/// The load of the transport header's destination port.
fn dport(dreg: u32) -> Expr<'static> {
    Expr::Payload { base: Base::Transport, offset: 2, len: 2, dreg }
}

/// An address in network order.
pub fn address_bytes(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A protocol nft names (`tcp`, `udp`, `sctp`) as its number.
pub fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        other => other.parse().ok(),
    }
}

/// A number written in decimal or `0x` hexadecimal.
fn number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The expressions of a rule as `nft --debug=netlink` prints them.
    fn printed(family: Family, rule: &str) -> Vec<String> {
        linearize(family, rule).unwrap().iter().map(ToString::to_string).collect()
    }

    // Each expected list is what nft 1.0.6 printed for the same rule.
    #[test]
    fn a_service_lookup_loads_a_concatenation_into_four_byte_registers() {
        assert_eq!(
            printed(Family::Ip, "ip daddr . meta l4proto . th dport vmap @service-ips"),
            [
                "[ payload load 4b @ network header + 16 => reg 1 ]",
                "[ meta load l4proto => reg 9 ]",
                "[ payload load 2b @ transport header + 2 => reg 10 ]",
                "[ lookup reg 1 set service-ips dreg 0 ]",
            ]
        );
        assert_eq!(
            printed(Family::Ip6, "ip6 daddr . meta l4proto . th dport vmap @service-ips"),
            [
                "[ payload load 16b @ network header + 24 => reg 1 ]",
                "[ meta load l4proto => reg 2 ]",
                "[ payload load 2b @ transport header + 2 => reg 13 ]",
                "[ lookup reg 1 set service-ips dreg 0 ]",
            ]
        );
        assert_eq!(
            printed(Family::Ip6, "ct status dnat ip6 saddr . ip6 daddr @hairpin masquerade fully-random")
                [3..],
            [
                "[ payload load 16b @ network header + 8 => reg 1 ]",
                "[ payload load 16b @ network header + 24 => reg 2 ]",
                "[ lookup reg 1 set hairpin ]",
                "[ masq flags 0x10 ]",
            ]
        );
    }

    #[test]
    fn a_masquerade_match_checks_address_port_and_pods_outside() {
        assert_eq!(
            printed(
                Family::Ip,
                "ip daddr 198.18.0.1 tcp dport 80 ip saddr != @pod-cidrs jump mark-for-masquerade"
            ),
            [
                "[ payload load 4b @ network header + 16 => reg 1 ]",
                "[ cmp eq reg 1 0x010012c6 ]",
                "[ meta load l4proto => reg 1 ]",
                "[ cmp eq reg 1 0x00000006 ]",
                "[ payload load 2b @ transport header + 2 => reg 1 ]",
                "[ cmp eq reg 1 0x00005000 ]",
                "[ payload load 4b @ network header + 12 => reg 1 ]",
                "[ lookup reg 1 set pod-cidrs 0x1 ]",
                "[ immediate reg 0 jump -> mark-for-masquerade ]",
            ]
        );
    }

    #[test]
    fn an_endpoint_draw_and_dnat() {
        assert_eq!(
            printed(Family::Ip, "numgen random mod 3 0 meta l4proto tcp dnat to 198.18.128.1:8080"),
            [
                "[ numgen reg 1 = random mod 3 ]",
                "[ cmp eq reg 1 0x00000000 ]",
                "[ meta load l4proto => reg 1 ]",
                "[ cmp eq reg 1 0x00000006 ]",
                "[ immediate reg 1 0x018012c6 ]",
                "[ immediate reg 2 0x0000901f ]",
                "[ nat dnat ip addr_min reg 1 proto_min reg 2 flags 0x2 ]",
            ]
        );
    }

    #[test]
    fn redirects_to_a_port_of_this_host_and_matches_port_ranges() {
        // As nft 1.0.6 printed it for the mesh's capture rule.
        assert_eq!(
            printed(Family::Ip, "meta l4proto tcp redirect to :15001"),
            [
                "[ meta load l4proto => reg 1 ]",
                "[ cmp eq reg 1 0x00000006 ]",
                "[ immediate reg 1 0x0000993a ]",
                "[ redir proto_min reg 1 flags 0x2 ]",
            ]
        );
        assert!(linearize(Family::Ip, "redirect to 15001").is_err());
        assert_eq!(
            printed(Family::Ip6, "tcp dport 9000-9010 return"),
            [
                "[ meta load l4proto => reg 1 ]",
                "[ cmp eq reg 1 0x00000006 ]",
                "[ payload load 2b @ transport header + 2 => reg 1 ]",
                "[ cmp gte reg 1 0x00002823 ]",
                "[ cmp lte reg 1 0x00003223 ]",
                "[ immediate reg 0 return ]",
            ]
        );
        assert!(linearize(Family::Ip, "tcp dport 9000- return").is_err());
        assert!(linearize(Family::Ip, "redirect").is_err());
    }

    #[test]
    fn marks_state_fib_and_reject() {
        assert_eq!(
            printed(Family::Ip, "meta mark set meta mark | 0x4000"),
            [
                "[ meta load mark => reg 1 ]",
                "[ bitwise reg 1 = ( reg 1 & 0xffffbfff ) ^ 0x00004000 ]",
                "[ meta set mark with reg 1 ]",
            ]
        );
        assert_eq!(
            printed(Family::Ip, "meta mark & 0x4000 == 0 return"),
            [
                "[ meta load mark => reg 1 ]",
                "[ bitwise reg 1 = ( reg 1 & 0x00004000 ) ^ 0x00000000 ]",
                "[ cmp eq reg 1 0x00000000 ]",
                "[ immediate reg 0 return ]",
            ]
        );
        assert_eq!(
            printed(Family::Ip, "ct state new jump firewall-check"),
            [
                "[ ct load state => reg 1 ]",
                "[ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ]",
                "[ cmp neq reg 1 0x00000000 ]",
                "[ immediate reg 0 jump -> firewall-check ]",
            ]
        );
        assert_eq!(
            printed(
                Family::Ip,
                "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @n"
            )[..4],
            [
                "[ fib daddr type => reg 1 ]",
                "[ cmp eq reg 1 0x00000002 ]",
                "[ payload load 4b @ network header + 16 => reg 1 ]",
                "[ lookup reg 1 set nodeport-ips ]",
            ]
        );
        assert_eq!(printed(Family::Ip6, "reject"), ["[ reject type 0 code 4 ]"]);
        assert_eq!(
            printed(Family::Ip, "meta l4proto tcp reject with tcp reset")[2],
            "[ reject type 1 code 0 ]"
        );
        assert_eq!(
            printed(Family::Ip, "update @affinity-x { ip saddr }"),
            [
                "[ payload load 4b @ network header + 12 => reg 1 ]",
                "[ dynset update reg_key 1 set affinity-x ]"
            ]
        );
    }

    #[test]
    fn prefixes_compare_whole_bytes_or_mask() {
        assert_eq!(
            printed(Family::Ip, "ip saddr 10.1.0.0/16 return"),
            [
                "[ payload load 2b @ network header + 12 => reg 1 ]",
                "[ cmp eq reg 1 0x0000010a ]",
                "[ immediate reg 0 return ]",
            ]
        );
        assert_eq!(
            printed(Family::Ip, "ip saddr 10.0.0.0/9 return")[1..3],
            ["[ bitwise reg 1 = ( reg 1 & 0x000080ff ) ^ 0x00000000 ]", "[ cmp eq reg 1 0x0000000a ]"]
        );
        assert_eq!(
            printed(Family::Ip, "ip saddr 0.0.0.0/0 return")[1],
            "[ bitwise reg 1 = ( reg 1 & 0x00000000 ) ^ 0x00000000 ]"
        );
        assert_eq!(
            printed(Family::Ip6, "ip6 saddr 2001:db8::/33 return")[1],
            "[ bitwise reg 1 = ( reg 1 & 0xffffffff 0x00000080 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]"
        );
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Any sequence of the dialect's words and other tokens is read or refused, never a
        /// panic.
        #[test]
        fn no_rule_text_panics(words in proptest::collection::vec(proptest::prop_oneof![
            proptest::sample::select(vec![
                "ct", "state", "new", "status", "dnat", "fib", "saddr", "daddr", "type", "local", "numgen",
                "random", "mod", "tcp", "udp", "sctp", "dport", "meta", "mark", "set", "l4proto", "&", "==",
                "|", "^", "ip", "ip6", "th", ".", "vmap", "!=", "update", "{", "}", "to", "masquerade",
                "fully-random", "reject", "with", "reset", "drop", "accept", "return", "jump", "goto",
                "@s", "0", "2", "0x4000", "80", "198.18.0.1", "198.18.0.0/9", "2001:db8::1",
                "2001:db8::/33", "198.18.0.1:80", "[2001:db8::1]:80", "0.0.0.0/0",
            ]).prop_map(str::to_owned),
            "[ -~]{0,12}",
        ], 0..14), v6 in proptest::bool::ANY) {
            let family = if v6 { Family::Ip6 } else { Family::Ip };
            let rule = words.join(" ");
            if let Ok(exprs) = linearize(family, &rule) {
                let mut buf = Vec::new();
                exprs.iter().for_each(|e| e.encode(&mut buf));
            }
        }
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        for (family, rule) in [
            (Family::Ip, "counter accept"),
            (Family::Ip, "ip6 saddr ::1 drop"),
            (Family::Ip, "ip daddr 2001:db8::1 drop"),
            (Family::Ip, "tcp sport 80 drop"),
            (Family::Ip, "ip saddr != { 10.0.0.0/8 } drop"),
            (Family::Ip, "jump"),
            (Family::Ip, "numgen random mod x 0 drop"),
            (Family::Ip6, "meta l4proto tcp dnat to 198.18.0.1:80"),
            (Family::Ip, "meta l4proto . th dport"),
        ] {
            assert!(linearize(family, rule).is_err(), "{rule}");
        }
    }
}
