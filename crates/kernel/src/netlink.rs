//! Transactions written straight to nf_tables over netlink, as `nft` would write them, without
//! starting `nft`: no process, no script to parse, and none of the table read back that nft
//! reads before each transaction (60 ms at 10,000 Services, whatever the change).
//!
//! One transaction is one batch (`NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`)
//! in one `sendmsg`: the kernel applies all of it or, when it refuses a message, none, and
//! answers only with the errors, each naming the message by its sequence number. Rules are
//! encoded by the `expr` module; sets, maps and their elements here.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::Path;

use ipnet::IpNet;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use rustix::thread::LinkNameSpaceType;

use crate::apply::{Nft, NftError};
use crate::expr::{self, Unsupported, Verdict, address_bytes, nfproto, put_string, put_u32};
use crate::nfnetlink::{self, Body, Header, NLM_F_REQUEST, begin, finish, put_attr, put_nested};
use crate::ruleset::{Command, Element, Hook, SetDecl, TableId};

/// `NFNL_SUBSYS_NFTABLES`.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN`.
const BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`.
const BATCH_END: u16 = 0x11;
/// `NLM_F_CREATE`.
const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`: a rule goes after the chain's others.
const NLM_F_APPEND: u16 = 0x800;
/// `MSG_DONTWAIT`: the kernel has answered by the time `sendmsg` returns.
const MSG_DONTWAIT: i32 = 0x40;
/// `MSG_TRUNC`: receiving returns a datagram's whole length, even past the buffer.
const MSG_TRUNC: i32 = 0x20;
/// A received datagram's room.
const DATAGRAM: usize = 64 * 1024;
/// The most element bytes one message carries: its element list is one attribute, whose
/// length is 16 bits.
const ELEMENT_BYTES: usize = 60_000;

/// `enum nf_tables_msg_types`.
#[derive(Clone, Copy)]
enum Msg {
    NewTable = 0,
    DelTable = 2,
    NewChain = 3,
    DelChain = 5,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    DelSet = 11,
    NewSetElem = 12,
    DelSetElem = 14,
}

/// A transaction as one batch of messages.
#[derive(Debug)]
pub struct Batch {
    /// The batch, ready for one `sendmsg`.
    pub bytes: Vec<u8>,
    /// The sequence number of its first message.
    first_seq: u32,
    /// For each message from the first, the index of the command it came from.
    commands: Vec<Option<usize>>,
}

impl Batch {
    /// The command a reply's sequence number names.
    fn command(&self, seq: u32) -> Option<usize> {
        let at = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.commands.get(at).copied().flatten()
    }
}

/// Builds the batch of `commands`, numbering messages from `first_seq`.
pub fn encode(commands: &[Command<'_>], first_seq: u32) -> Result<Batch, Unsupported> {
    let mut batch = Builder { bytes: Vec::with_capacity(commands.len() * 384), seq: first_seq, set_id: 0 };
    let mut index = Vec::with_capacity(commands.len() + 2);
    batch.control(BATCH_BEGIN);
    index.push(None);
    for (i, command) in commands.iter().enumerate() {
        let before = batch.seq;
        batch.command(command)?;
        index.extend(std::iter::repeat_n(Some(i), (batch.seq - before) as usize));
    }
    batch.control(BATCH_END);
    index.push(None);
    Ok(Batch { bytes: batch.bytes, first_seq, commands: index })
}

/// A batch being written.
struct Builder {
    bytes: Vec<u8>,
    seq: u32,
    /// The last set id given (`NFTA_SET_ID`, unique in a batch).
    set_id: u32,
}

impl Builder {
    fn control(&mut self, kind: u16) {
        let header = Header {
            kind,
            flags: NLM_F_REQUEST,
            seq: self.next_seq(),
            family: 0,
            res_id: NFNL_SUBSYS_NFTABLES,
        };
        let at = begin(&mut self.bytes, header);
        finish(&mut self.bytes, at);
    }

    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// Writes one message of `family`; `fill` writes its attributes.
    fn message(&mut self, msg: Msg, flags: u16, table: TableId, fill: impl FnOnce(&mut Vec<u8>, &str)) {
        let header = Header {
            kind: NFNL_SUBSYS_NFTABLES << 8 | msg as u16,
            flags: NLM_F_REQUEST | flags,
            seq: self.next_seq(),
            family: nfproto(table.family) as u8,
            res_id: 0,
        };
        let at = begin(&mut self.bytes, header);
        fill(&mut self.bytes, &table.name());
        finish(&mut self.bytes, at);
    }

    fn command(&mut self, command: &Command<'_>) -> Result<(), Unsupported> {
        match *command {
            Command::AddTable(f) => self.message(Msg::NewTable, NLM_F_CREATE, f, |b, t| {
                put_string(b, 1, t); // NFTA_TABLE_NAME
                put_u32(b, 2, 0); // NFTA_TABLE_FLAGS
            }),
            Command::DeleteTable(f) => self.message(Msg::DelTable, 0, f, |b, t| put_string(b, 1, t)),
            Command::AddChain(f, name, hook) => {
                let hook = hook.map(|h| base_chain(h).map(|numbers| (h.kind, numbers))).transpose();
                let hook = hook.map_err(|reason| unsupported(command, reason))?;
                self.message(Msg::NewChain, NLM_F_CREATE, f, |b, t| {
                    put_string(b, 1, t); // NFTA_CHAIN_TABLE
                    put_string(b, 3, name); // NFTA_CHAIN_NAME
                    if let Some((kind, (hooknum, priority))) = hook {
                        put_string(b, 7, kind); // NFTA_CHAIN_TYPE
                        put_u32(b, 5, 1); // NFTA_CHAIN_POLICY: accept
                        put_nested(b, 4, |b| {
                            put_u32(b, 1, hooknum); // NFTA_HOOK_HOOKNUM
                            put_attr(b, 2, &priority.to_be_bytes()); // NFTA_HOOK_PRIORITY
                        });
                    }
                });
            }
            Command::FlushChain(f, name) => self.message(Msg::DelRule, 0, f, |b, t| {
                put_string(b, 1, t); // NFTA_RULE_TABLE
                put_string(b, 2, name); // NFTA_RULE_CHAIN
            }),
            Command::DeleteChain(f, name) => self.message(Msg::DelChain, 0, f, |b, t| {
                put_string(b, 1, t);
                put_string(b, 3, name);
            }),
            Command::AddRule(f, chain, rule) => {
                let exprs = expr::linearize(f.family, rule)?;
                self.message(Msg::NewRule, NLM_F_CREATE | NLM_F_APPEND, f, |b, t| {
                    put_string(b, 1, t);
                    put_string(b, 2, chain);
                    put_nested(b, 4, |b| exprs.iter().for_each(|e| e.encode(b))); // NFTA_RULE_EXPRESSIONS
                });
            }
            Command::AddSet(f, name, decl) => {
                let key = KeyType::of(decl).map_err(|reason| unsupported(command, reason))?;
                self.set_id += 1;
                let id = self.set_id;
                self.message(Msg::NewSet, NLM_F_CREATE, f, |b, t| set(b, t, name, decl, &key, id));
            }
            Command::FlushSet(f, name, _) => self.message(Msg::DelSetElem, 0, f, |b, t| {
                put_string(b, 1, t); // NFTA_SET_ELEM_LIST_TABLE
                put_string(b, 2, name); // NFTA_SET_ELEM_LIST_SET
            }),
            Command::DeleteSet(f, name, _) => self.message(Msg::DelSet, 0, f, |b, t| {
                put_string(b, 1, t); // NFTA_SET_TABLE
                put_string(b, 2, name); // NFTA_SET_NAME
            }),
            Command::AddElements(f, name, decl, ref elements) => {
                let encoded = elements_of(decl, elements.iter().copied(), true);
                self.elements(
                    Msg::NewSetElem,
                    NLM_F_CREATE,
                    f,
                    name,
                    encoded.map_err(|r| unsupported(command, r))?,
                );
            }
            Command::DeleteElements(f, name, decl, ref keys) => {
                let encoded = elements_of(decl, keys.iter().map(|k| (*k, None)), false);
                self.elements(Msg::DelSetElem, 0, f, name, encoded.map_err(|r| unsupported(command, r))?);
            }
        }
        Ok(())
    }

    /// Element messages of at most [`ELEMENT_BYTES`] each.
    fn elements(&mut self, msg: Msg, flags: u16, table: TableId, set: &str, encoded: Vec<Vec<u8>>) {
        let mut rest = encoded.as_slice();
        while !rest.is_empty() {
            let mut size = 0;
            let count = rest
                .iter()
                .take_while(|e| {
                    size += e.len();
                    size <= ELEMENT_BYTES
                })
                .count()
                .max(1);
            let (now, later) = rest.split_at(count);
            self.message(msg, flags, table, |b, t| {
                put_string(b, 1, t);
                put_string(b, 2, set);
                put_nested(b, 3, |b| now.iter().for_each(|e| b.extend_from_slice(e))); // NFTA_SET_ELEM_LIST_ELEMENTS
            });
            rest = later;
        }
    }
}

fn unsupported(command: &Command<'_>, reason: String) -> Unsupported {
    let mut rule = String::new();
    command.write(&mut rule);
    Unsupported { rule: rule.trim_end().to_owned(), reason }
}

/// The hook number and priority of a base chain.
fn base_chain(hook: &Hook) -> Result<(u32, i32), String> {
    let number = match hook.hook {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        "postrouting" => 4,
        other => return Err(format!("unknown hook {other}")),
    };
    Ok((number, priority(hook.priority)?))
}

/// A priority as nft writes it: a number, or a name with an optional `+ N` or `- N`.
fn priority(text: &str) -> Result<i32, String> {
    let bad = || format!("unknown priority `{text}`");
    let mut words = text.split_whitespace();
    let first = words.next().ok_or_else(bad)?;
    let base = match first {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        number => number.parse().map_err(|_| bad())?,
    };
    match (words.next(), words.next().map(str::parse::<i32>), words.next()) {
        (None, None, None) => Ok(base),
        (Some("+"), Some(Ok(n)), None) => Ok(base + n),
        (Some("-"), Some(Ok(n)), None) => Ok(base - n),
        _ => Err(bad()),
    }
}

/// The type of a set's keys: nft's type numbers and each field's length.
#[derive(Debug)]
struct KeyType {
    /// Each field: nft's datatype number and its length in bytes.
    fields: Vec<(u32, usize)>,
}

impl KeyType {
    fn of(decl: &SetDecl) -> Result<KeyType, String> {
        let fields = decl
            .key
            .split(" . ")
            .map(|name| match name.trim() {
                "ipv4_addr" => Ok((7, 4)),
                "ipv6_addr" => Ok((8, 16)),
                "inet_proto" => Ok((12, 1)),
                "inet_service" => Ok((13, 2)),
                other => Err(format!("unknown key type {other}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyType { fields })
    }

    /// The key's `NFTA_SET_KEY_TYPE`: the fields' numbers, 6 bits each, the first highest.
    fn number(&self) -> u32 {
        self.fields.iter().fold(0, |acc, (n, _)| acc << 6 | n)
    }

    /// The key's length: one field's own, or in a concatenation each rounded up to 4 bytes.
    fn len(&self) -> usize {
        match self.fields.as_slice() {
            [(_, len)] => *len,
            fields => fields.iter().map(|(_, len)| len.div_ceil(4) * 4).sum(),
        }
    }

    fn concatenated(&self) -> bool {
        self.fields.len() > 1
    }
}

/// `NFT_SET_*` flags.
const SET_INTERVAL: u32 = 0x4;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
/// `NFT_DATA_VERDICT`.
const DATA_VERDICT: u32 = 0xffff_ff00;
/// `NFT_SET_ELEM_INTERVAL_END`.
const ELEM_INTERVAL_END: u32 = 0x1;

/// A `NFT_MSG_NEWSET`'s attributes.
fn set(b: &mut Vec<u8>, table: &str, name: &str, decl: &SetDecl, key: &KeyType, id: u32) {
    let mut flags = if decl.value.is_some() { SET_MAP } else { 0 };
    for flag in &decl.flags {
        flags |= match *flag {
            "interval" => SET_INTERVAL,
            "timeout" => SET_TIMEOUT,
            "dynamic" => SET_EVAL,
            _ => 0,
        };
    }
    put_string(b, 1, table); // NFTA_SET_TABLE
    put_string(b, 2, name); // NFTA_SET_NAME
    put_u32(b, 3, flags); // NFTA_SET_FLAGS
    put_u32(b, 4, key.number()); // NFTA_SET_KEY_TYPE
    put_u32(b, 5, key.len() as u32); // NFTA_SET_KEY_LEN
    if decl.value.is_some() {
        put_u32(b, 6, DATA_VERDICT); // NFTA_SET_DATA_TYPE
        put_u32(b, 7, 0); // NFTA_SET_DATA_LEN
    }
    put_u32(b, 10, id); // NFTA_SET_ID
    if let Some(timeout) = decl.timeout {
        put_attr(b, 11, &(u64::from(timeout) * 1000).to_be_bytes()); // NFTA_SET_TIMEOUT, ms
    }
    // No NFTA_SET_USERDATA: nft keeps the key's byte order there, which changes nothing it
    // lists for these types.
}

/// Each element of a set as one `NFTA_LIST_ELEM`; an interval set's prefixes as a start and
/// an end past it (with, when adding, the leading end at address zero nft sends).
fn elements_of<'a>(
    decl: &SetDecl,
    elements: impl Iterator<Item = Element<'a>>,
    adding: bool,
) -> Result<Vec<Vec<u8>>, String> {
    let key = KeyType::of(decl)?;
    let interval = decl.flags.contains(&"interval");
    let mut out = Vec::new();
    if interval && adding {
        let zero = vec![0; key.len()];
        out.push(element(&zero, None, ELEM_INTERVAL_END));
    }
    for (text, value) in elements {
        let verdict = match value {
            Some(v) => Some(Verdict::parse(v).ok_or_else(|| format!("`{v}` is not a verdict"))?),
            None => None,
        };
        if interval {
            let [(_, len)] = key.fields[..] else { return Err("an interval of a concatenation".into()) };
            let net: IpNet = text.parse().map_err(|_| format!("`{text}` is not a prefix"))?;
            if address_bytes(net.addr()).len() != len {
                return Err(format!("`{text}` is not of the set's family"));
            }
            out.push(element(&address_bytes(net.network()), verdict.as_ref(), 0));
            if let Some(end) = after(net.broadcast()) {
                out.push(element(&address_bytes(end), None, ELEM_INTERVAL_END));
            }
            continue;
        }
        out.push(element(&key_bytes(&key, text)?, verdict.as_ref(), 0));
    }
    Ok(out)
}

/// The address after `address`, unless it is the last.
fn after(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::from(n.to_be_bytes())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::from(n.to_be_bytes())),
    }
}

/// One `NFTA_LIST_ELEM`: key, verdict, flags.
fn element(key: &[u8], verdict: Option<&Verdict>, flags: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(key.len() + 96);
    put_nested(&mut b, 1, |b| {
        expr::put_value(b, 1, key); // NFTA_SET_ELEM_KEY
        if let Some(verdict) = verdict {
            put_nested(b, 2, |b| verdict.encode(b)); // NFTA_SET_ELEM_DATA
        }
        if flags != 0 {
            put_u32(b, 3, flags); // NFTA_SET_ELEM_FLAGS
        }
    });
    b
}

/// A key text (`198.18.0.1 . tcp . 80`) as the kernel compares it: each field in network
/// order, padded to 4 bytes in a concatenation.
fn key_bytes(key: &KeyType, text: &str) -> Result<Vec<u8>, String> {
    let values: Vec<&str> = text.split(" . ").map(str::trim).collect();
    if values.len() != key.fields.len() {
        return Err(format!("`{text}` has {} fields, the set {}", values.len(), key.fields.len()));
    }
    let mut out = Vec::with_capacity(key.len());
    for (value, (kind, len)) in values.iter().zip(&key.fields) {
        let bad = || format!("`{value}` is not of the key's type");
        let bytes = match kind {
            7 | 8 => {
                let address: IpAddr = value.parse().map_err(|_| bad())?;
                let bytes = address_bytes(address);
                if bytes.len() != *len {
                    return Err(bad());
                }
                bytes
            }
            12 => vec![expr::protocol_number(value).ok_or_else(bad)?],
            _ => value.parse::<u16>().map_err(|_| bad())?.to_be_bytes().to_vec(),
        };
        out.extend_from_slice(&bytes);
        if key.concatenated() {
            out.resize(nfnetlink::align(out.len()), 0);
        }
    }
    Ok(out)
}

/// Writes transactions to the kernel's nf_tables over netlink, in this process's network
/// namespace.
#[derive(Debug, Default)]
pub struct NetlinkNft {
    socket: Option<Socket>,
    seq: u32,
    /// The send buffer asked for so far.
    sndbuf: usize,
}

impl NetlinkNft {
    /// A writer; the socket is opened at the first transaction.
    pub fn new() -> Self {
        NetlinkNft::default()
    }

    /// A writer for the network namespace at `path` (`/run/netns/NAME`): its socket is opened
    /// there, from a thread that enters it, and stays there.
    pub fn in_namespace(path: &Path) -> Result<Self, NftError> {
        let path = path.to_owned();
        let socket = std::thread::spawn(move || {
            let namespace = std::fs::File::open(&path).map_err(NftError::Netlink)?;
            rustix::thread::move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
                .map_err(|e| NftError::Netlink(e.into()))?;
            open()
        })
        .join()
        .map_err(|_| NftError::Netlink(io::Error::other("the thread entering the namespace panicked")))??;
        Ok(NetlinkNft { socket: Some(socket), ..NetlinkNft::default() })
    }

    fn socket(&mut self) -> Result<&Socket, NftError> {
        if self.socket.is_none() {
            self.socket = Some(open()?);
            self.sndbuf = 0;
        }
        self.socket.as_ref().ok_or_else(|| NftError::Netlink(io::Error::other("no socket")))
    }
}

/// A netfilter netlink socket in this thread's network namespace.
fn open() -> Result<Socket, NftError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Netlink)?;
    socket.bind_auto().map_err(NftError::Netlink)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(NftError::Netlink)?;
    // Errors without the refused message copied back: many refusals stay small.
    socket.set_cap_ack(true).map_err(NftError::Netlink)?;
    Ok(socket)
}

impl Nft for NetlinkNft {
    fn run(&mut self, commands: &[Command<'_>]) -> Result<usize, NftError> {
        let first_seq = self.seq.wrapping_add(1);
        let batch = encode(commands, first_seq)?;
        self.seq = first_seq.wrapping_add(batch.commands.len() as u32);
        let needed = batch.bytes.len() + 4096;
        let grow = needed > self.sndbuf;
        let socket = self.socket()?;
        drain(socket);
        if grow {
            // A batch is one datagram, past the default send buffer for large ones; the kernel
            // allows forcing it with CAP_NET_ADMIN, which writing nf_tables needs anyway.
            rustix::net::sockopt::set_socket_send_buffer_size_force(socket, needed)
                .map_err(|e| NftError::Netlink(e.into()))?;
        }
        let sent = socket.send(&batch.bytes, 0).map_err(NftError::Netlink)?;
        if grow {
            self.sndbuf = needed;
        }
        if sent != batch.bytes.len() {
            return Err(NftError::Netlink(io::Error::new(io::ErrorKind::WriteZero, "batch sent in part")));
        }
        match first_refusal(self.socket()?, &batch)? {
            None => Ok(batch.bytes.len()),
            Some((index, errno)) => {
                let mut command = String::new();
                if let Some(c) = index.and_then(|i| commands.get(i)) {
                    c.write(&mut command);
                }
                Err(NftError::Kernel {
                    command: command.trim_end().to_owned(),
                    error: io::Error::from_raw_os_error(errno.saturating_neg()),
                })
            }
        }
    }
}

/// Reads whatever is queued: replies to an earlier batch that failed half way.
fn drain(socket: &Socket) {
    let mut datagram = Vec::with_capacity(DATAGRAM);
    loop {
        datagram.clear();
        if socket.recv(&mut datagram, MSG_DONTWAIT).is_err() {
            return;
        }
    }
}

/// The first error the kernel answered `batch` with: the command it names, if any, and the
/// errno. The kernel handles a batch within `sendmsg`, so its answers are all queued.
fn first_refusal(socket: &Socket, batch: &Batch) -> Result<Option<(Option<usize>, i32)>, NftError> {
    let mut datagram = Vec::with_capacity(DATAGRAM);
    let mut first = None;
    loop {
        datagram.clear();
        match socket.recv(&mut datagram, MSG_DONTWAIT | MSG_TRUNC) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(first),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // ENOBUFS: more refusals than the receive buffer holds.
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(rustix::io::Errno::NOBUFS.raw_os_error());
                return Ok(first.or(Some((None, -errno))));
            }
        }
        for message in nfnetlink::messages(&datagram, u16::MAX) {
            let message = message.map_err(|m| NftError::Netlink(io::Error::other(m.0)))?;
            if let Body::Error(errno @ ..0) = message.body
                && first.is_none()
            {
                first = Some((batch.command(message.seq), errno));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ruleset::Family;

    fn decl(key: &str, value: Option<&'static str>, flags: Vec<&'static str>) -> SetDecl {
        SetDecl { key: key.into(), value, flags, timeout: None }
    }

    #[test]
    fn key_types_number_and_pad_as_nft_does() {
        let service =
            KeyType::of(&decl("ipv4_addr . inet_proto . inet_service", Some("verdict"), vec![])).unwrap();
        assert_eq!((service.number(), service.len()), (0x730d, 12));
        let node_port = KeyType::of(&decl("inet_proto . inet_service", Some("verdict"), vec![])).unwrap();
        assert_eq!((node_port.number(), node_port.len()), (0x30d, 8));
        let v6 = KeyType::of(&decl("ipv6_addr", None, vec![])).unwrap();
        assert_eq!((v6.number(), v6.len()), (8, 16));
        assert!(KeyType::of(&decl("ether_addr", None, vec![])).is_err());
        assert_eq!(
            key_bytes(&service, "198.19.96.10 . tcp . 80").unwrap(),
            [198, 19, 96, 10, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(key_bytes(&node_port, "udp . 30053").unwrap(), [17, 0, 0, 0, 0x75, 0x65, 0, 0]);
        assert!(key_bytes(&service, "2001:db8::1 . tcp . 80").is_err());
        assert!(key_bytes(&service, "198.19.96.10 . tcp").is_err());
        assert!(key_bytes(&node_port, "udp . 70000").is_err());
    }

    #[test]
    fn interval_elements_are_starts_and_ends_past_them() {
        let cidrs = decl("ipv4_addr", None, vec!["interval"]);
        let added =
            elements_of(&cidrs, [("198.18.128.0/23", None), ("0.0.0.0/0", None)].into_iter(), true).unwrap();
        // The leading end at zero, the first range's start and end, the whole range's start
        // (it has no end past it).
        assert_eq!(added.len(), 4);
        assert_eq!(added[0], element(&[0; 4], None, ELEM_INTERVAL_END));
        assert_eq!(added[1], element(&[198, 18, 128, 0], None, 0));
        assert_eq!(added[2], element(&[198, 18, 130, 0], None, ELEM_INTERVAL_END));
        let deleted = elements_of(&cidrs, [("198.18.128.0/23", None)].into_iter(), false).unwrap();
        assert_eq!(deleted, added[1..3]);
        assert!(elements_of(&cidrs, [("2001:db8::/64", None)].into_iter(), true).is_err());
    }

    #[test]
    fn priorities_read_as_nft_reads_them() {
        assert_eq!(priority("dstnat"), Ok(-100));
        assert_eq!(priority("dstnat - 10"), Ok(-110));
        assert_eq!(priority("srcnat"), Ok(100));
        assert_eq!(priority("-110"), Ok(-110));
        assert!(priority("dstnat -").is_err());
        assert!(priority("soon").is_err());
    }

    #[test]
    fn a_batch_numbers_its_messages_and_names_each_command() {
        let map = decl("inet_proto . inet_service", Some("verdict"), vec![]);
        let many: Vec<(String, Option<&str>)> = (0..2000u16)
            .map(|p| (format!("tcp . {}", 30000 + p), Some("goto some-chain-with-a-long-name")))
            .collect();
        let elements: Vec<Element<'_>> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let ip = TableId::main(Family::Ip);
        let commands = [
            Command::AddTable(ip),
            Command::AddSet(ip, "m", &map),
            Command::AddElements(ip, "m", &map, elements),
            Command::AddRule(ip, "c", "meta l4proto . th dport vmap @m"),
        ];
        let batch = encode(&commands, 100).unwrap();
        // Begin, table, set, the elements in more than one message, rule, end.
        assert!(batch.commands.len() > 6, "{}", batch.commands.len());
        assert_eq!(batch.command(100), None);
        assert_eq!(batch.command(101), Some(0));
        assert_eq!(batch.command(103), Some(2));
        assert_eq!(batch.command(100 + batch.commands.len() as u32 - 2), Some(3));
        assert_eq!(batch.command(99), None);
        let bad = [Command::AddRule(ip, "c", "counter")];
        let error = encode(&bad, 1).unwrap_err();
        assert!(error.to_string().contains("counter"), "{error}");
    }
}
