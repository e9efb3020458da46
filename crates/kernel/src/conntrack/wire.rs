//! The ctnetlink wire format: the requests Portico sends (a dump of the table, the deletion of
//! one entry) built byte by byte, and the kernel's replies read without ever panicking.
//!
//! The layout is the kernel's (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nfnetlink_conntrack.h`): a `nlmsghdr` in host byte order, a `nfgenmsg`,
//! then `nlattr`s (length and type in host byte order, padded to 4 bytes) whose values are in
//! network byte order, nested for the tuples.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nfnetlink::{
    self, Attrs, Header, NFGENMSG_LEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, begin, exact, finish, put_attr,
    put_nested,
};
pub use crate::nfnetlink::{Body, Malformed};

/// `NFNL_SUBSYS_CTNETLINK`, the high byte of a conntrack message's type.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_NEW`: the type of each entry in a dump's replies.
const IPCTNL_MSG_CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`.
const IPCTNL_MSG_CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// `AF_UNSPEC`: a dump of every family.
const AF_UNSPEC: u8 = 0;
/// `AF_INET`.
const AF_INET: u8 = 2;
/// `AF_INET6`.
const AF_INET6: u8 = 10;

/// `CTA_TUPLE_ORIG` (`enum ctattr_type`).
const CTA_TUPLE_ORIG: u16 = 1;
/// `CTA_TUPLE_REPLY`.
const CTA_TUPLE_REPLY: u16 = 2;
/// `CTA_ID`.
const CTA_ID: u16 = 12;
/// `CTA_ZONE`.
const CTA_ZONE: u16 = 18;
/// `CTA_TUPLE_IP` (`enum ctattr_tuple`).
const CTA_TUPLE_IP: u16 = 1;
/// `CTA_TUPLE_PROTO`.
const CTA_TUPLE_PROTO: u16 = 2;
/// `CTA_IP_V4_SRC` (`enum ctattr_ip`).
const CTA_IP_V4_SRC: u16 = 1;
/// `CTA_IP_V4_DST`.
const CTA_IP_V4_DST: u16 = 2;
/// `CTA_IP_V6_SRC`.
const CTA_IP_V6_SRC: u16 = 3;
/// `CTA_IP_V6_DST`.
const CTA_IP_V6_DST: u16 = 4;
/// `CTA_PROTO_NUM` (`enum ctattr_l4proto`).
const CTA_PROTO_NUM: u16 = 1;
/// `CTA_PROTO_SRC_PORT`.
const CTA_PROTO_SRC_PORT: u16 = 2;
/// `CTA_PROTO_DST_PORT`.
const CTA_PROTO_DST_PORT: u16 = 3;

/// The source and destination addresses of a tuple, of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// IPv4 source and destination.
    V4(Ipv4Addr, Ipv4Addr),
    /// IPv6 source and destination.
    V6(Ipv6Addr, Ipv6Addr),
}

/// One direction of a connection as conntrack keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Source and destination addresses.
    pub addresses: Addresses,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP…).
    pub protocol: u8,
    /// Source port, for protocols with ports.
    pub src_port: Option<u16>,
    /// Destination port, for protocols with ports.
    pub dst_port: Option<u16>,
}

impl Tuple {
    /// The source address.
    pub fn src(&self) -> IpAddr {
        match self.addresses {
            Addresses::V4(src, _) => src.into(),
            Addresses::V6(src, _) => src.into(),
        }
    }

    /// The destination address.
    pub fn dst(&self) -> IpAddr {
        match self.addresses {
            Addresses::V4(_, dst) => dst.into(),
            Addresses::V6(_, dst) => dst.into(),
        }
    }
}

/// What a dump says of one entry, as much as matching and deleting it need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The tuple of the first packet, before NAT: the entry's key for deletion.
    pub orig: Tuple,
    /// The tuple replies are expected on, after NAT: its source is the endpoint.
    pub reply: Tuple,
    /// The conntrack zone, absent for the default zone 0.
    pub zone: Option<u16>,
    /// The entry's id, so that a deletion misses a newer entry with the same tuple (most often:
    /// the kernel hashes the id from the tuples and the entry's address, which is reused).
    pub id: Option<u32>,
}

/// The request for a dump of every entry of the namespace's table, of every family.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(nfnetlink::NLMSG_HDRLEN + NFGENMSG_LEN);
    let at = begin(&mut buf, header(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, AF_UNSPEC));
    finish(&mut buf, at);
    buf
}

/// Writes into `buf` the request deleting `entry`, keyed by its original tuple, its zone and
/// its id, asking for an acknowledgement.
pub fn delete_request(buf: &mut Vec<u8>, entry: &Entry, seq: u32) {
    buf.clear();
    // The kernel reads the tuple's addresses by the family of the request.
    let family = match entry.orig.addresses {
        Addresses::V4(..) => AF_INET,
        Addresses::V6(..) => AF_INET6,
    };
    let at = begin(buf, header(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family));
    put_tuple(buf, CTA_TUPLE_ORIG, &entry.orig);
    if let Some(zone) = entry.zone {
        put_attr(buf, CTA_ZONE, &zone.to_be_bytes());
    }
    if let Some(id) = entry.id {
        put_attr(buf, CTA_ID, &id.to_be_bytes());
    }
    finish(buf, at);
}

/// The header of a ctnetlink message.
fn header(kind: u16, flags: u16, seq: u32, family: u8) -> Header {
    Header { kind: NFNL_SUBSYS_CTNETLINK << 8 | kind, flags, seq, family, res_id: 0 }
}

/// The netlink messages of a received datagram, in order, conntrack entries read as
/// [`Body::Entry`]; an error ends them.
pub fn messages(datagram: &[u8]) -> nfnetlink::Messages<'_> {
    nfnetlink::messages(datagram, NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW)
}

/// Appends a tuple as `CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY` nests it.
fn put_tuple(buf: &mut Vec<u8>, kind: u16, tuple: &Tuple) {
    put_nested(buf, kind, |buf| {
        put_nested(buf, CTA_TUPLE_IP, |buf| match tuple.addresses {
            Addresses::V4(src, dst) => {
                put_attr(buf, CTA_IP_V4_SRC, &src.octets());
                put_attr(buf, CTA_IP_V4_DST, &dst.octets());
            }
            Addresses::V6(src, dst) => {
                put_attr(buf, CTA_IP_V6_SRC, &src.octets());
                put_attr(buf, CTA_IP_V6_DST, &dst.octets());
            }
        });
        put_nested(buf, CTA_TUPLE_PROTO, |buf| {
            put_attr(buf, CTA_PROTO_NUM, &[tuple.protocol]);
            if let Some(port) = tuple.src_port {
                put_attr(buf, CTA_PROTO_SRC_PORT, &port.to_be_bytes());
            }
            if let Some(port) = tuple.dst_port {
                put_attr(buf, CTA_PROTO_DST_PORT, &port.to_be_bytes());
            }
        });
    });
}

/// The tuples, zone and id of one entry of a dump, from its `nfgenmsg` and attributes;
/// attributes not needed here (status, timeout, counters…) are skipped.
pub fn parse_entry(payload: &[u8]) -> Result<Entry, Malformed> {
    let attrs = payload.get(NFGENMSG_LEN..).ok_or(Malformed("conntrack entry without its nfgenmsg"))?;
    let (mut orig, mut reply, mut zone, mut id) = (None, None, None, None);
    for attr in Attrs(attrs) {
        let (kind, value) = attr?;
        match kind {
            CTA_TUPLE_ORIG => orig = Some(parse_tuple(value)?),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(value)?),
            CTA_ZONE => zone = Some(u16::from_be_bytes(exact(value, "CTA_ZONE is not 2 bytes")?)),
            CTA_ID => id = Some(u32::from_be_bytes(exact(value, "CTA_ID is not 4 bytes")?)),
            _ => {}
        }
    }
    Ok(Entry {
        orig: orig.ok_or(Malformed("conntrack entry without CTA_TUPLE_ORIG"))?,
        reply: reply.ok_or(Malformed("conntrack entry without CTA_TUPLE_REPLY"))?,
        zone,
        id,
    })
}

/// A tuple from the attributes nested in `CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY`.
fn parse_tuple(attrs: &[u8]) -> Result<Tuple, Malformed> {
    let (mut addresses, mut proto) = (None, None);
    for attr in Attrs(attrs) {
        let (kind, value) = attr?;
        match kind {
            CTA_TUPLE_IP => addresses = Some(parse_addresses(value)?),
            CTA_TUPLE_PROTO => proto = Some(parse_proto(value)?),
            _ => {}
        }
    }
    let addresses = addresses.ok_or(Malformed("tuple without CTA_TUPLE_IP"))?;
    let (protocol, src_port, dst_port) = proto.ok_or(Malformed("tuple without CTA_TUPLE_PROTO"))?;
    Ok(Tuple { addresses, protocol, src_port, dst_port })
}

/// Source and destination from the attributes nested in `CTA_TUPLE_IP`.
fn parse_addresses(attrs: &[u8]) -> Result<Addresses, Malformed> {
    let (mut src, mut dst) = (None, None);
    for attr in Attrs(attrs) {
        let (kind, value) = attr?;
        match kind {
            CTA_IP_V4_SRC => src = Some(IpAddr::from(exact::<4>(value, "CTA_IP_V4_SRC is not 4 bytes")?)),
            CTA_IP_V4_DST => dst = Some(IpAddr::from(exact::<4>(value, "CTA_IP_V4_DST is not 4 bytes")?)),
            CTA_IP_V6_SRC => src = Some(IpAddr::from(exact::<16>(value, "CTA_IP_V6_SRC is not 16 bytes")?)),
            CTA_IP_V6_DST => dst = Some(IpAddr::from(exact::<16>(value, "CTA_IP_V6_DST is not 16 bytes")?)),
            _ => {}
        }
    }
    match (src, dst) {
        (Some(IpAddr::V4(src)), Some(IpAddr::V4(dst))) => Ok(Addresses::V4(src, dst)),
        (Some(IpAddr::V6(src)), Some(IpAddr::V6(dst))) => Ok(Addresses::V6(src, dst)),
        (Some(_), Some(_)) => Err(Malformed("tuple with addresses of two families")),
        (None, _) => Err(Malformed("tuple without a source address")),
        (_, None) => Err(Malformed("tuple without a destination address")),
    }
}

/// Protocol number and ports from the attributes nested in `CTA_TUPLE_PROTO`; ICMP and
/// other protocols without ports have none.
fn parse_proto(attrs: &[u8]) -> Result<(u8, Option<u16>, Option<u16>), Malformed> {
    let (mut protocol, mut src_port, mut dst_port) = (None, None, None);
    for attr in Attrs(attrs) {
        let (kind, value) = attr?;
        match kind {
            CTA_PROTO_NUM => protocol = Some(u8::from_be_bytes(exact(value, "CTA_PROTO_NUM is not 1 byte")?)),
            CTA_PROTO_SRC_PORT => {
                src_port = Some(u16::from_be_bytes(exact(value, "CTA_PROTO_SRC_PORT is not 2 bytes")?));
            }
            CTA_PROTO_DST_PORT => {
                dst_port = Some(u16::from_be_bytes(exact(value, "CTA_PROTO_DST_PORT is not 2 bytes")?));
            }
            _ => {}
        }
    }
    let protocol = protocol.ok_or(Malformed("tuple without CTA_PROTO_NUM"))?;
    Ok((protocol, src_port, dst_port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::nfnetlink::{Message, NLMSG_DONE, NLMSG_ERROR};
    use proptest::prelude::*;

    fn v4(src: &str, dst: &str) -> Addresses {
        Addresses::V4(src.parse().unwrap(), dst.parse().unwrap())
    }

    fn v6(src: &str, dst: &str) -> Addresses {
        Addresses::V6(src.parse().unwrap(), dst.parse().unwrap())
    }

    fn tuple(addresses: Addresses, protocol: u8, src_port: u16, dst_port: u16) -> Tuple {
        Tuple { addresses, protocol, src_port: Some(src_port), dst_port: Some(dst_port) }
    }

    /// The UDP entry of the task: 198.18.0.1:5000 → 198.18.0.100:53, answered by 198.18.0.7.
    fn udp_entry() -> Entry {
        Entry {
            orig: tuple(v4("198.18.0.1", "198.18.0.100"), 17, 5000, 53),
            reply: tuple(v4("198.18.0.7", "198.18.0.1"), 17, 53, 5000),
            zone: None,
            id: None,
        }
    }

    // A test encoder of its own, independent of the one under test: an attribute, padded.
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    fn nest(kind: u16, children: &[Vec<u8>]) -> Vec<u8> {
        attr(kind, &children.concat())
    }

    /// A netlink message of `kind` with `payload`, padded.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    /// A dump reply's entry: `nfgenmsg` of `family`, then `attrs`.
    fn entry_message(seq: u32, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = vec![family, 0, 0, 0];
        payload.extend_from_slice(&attrs.concat());
        message(0x0100, 0x2, seq, &payload)
    }

    /// `CTA_TUPLE_*` as the kernel dumps it: IP then proto, source then destination, nested.
    fn kernel_tuple(kind: u16, src: [u8; 4], dst: [u8; 4], protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
        nest(
            kind | 0x8000,
            &[
                nest(0x8001, &[attr(1, &src), attr(2, &dst)]),
                nest(
                    0x8002,
                    &[attr(1, &[protocol]), attr(2, &sport.to_be_bytes()), attr(3, &dport.to_be_bytes())],
                ),
            ],
        )
    }

    fn kernel_udp_entry(seq: u32) -> Vec<u8> {
        entry_message(
            seq,
            2,
            &[
                kernel_tuple(1, [198, 18, 0, 1], [198, 18, 0, 100], 17, 5000, 53),
                kernel_tuple(2, [198, 18, 0, 7], [198, 18, 0, 1], 17, 53, 5000),
                attr(3, &0x8u32.to_be_bytes()),     // CTA_STATUS
                attr(7, &119u32.to_be_bytes()),     // CTA_TIMEOUT
                attr(8, &0u32.to_be_bytes()),       // CTA_MARK
                attr(11, &1u32.to_be_bytes()),      // CTA_USE
                attr(12, &0x1234u32.to_be_bytes()), // CTA_ID
            ],
        )
    }

    fn only_entry(datagram: &[u8]) -> Result<Entry, Malformed> {
        let mut messages = messages(datagram);
        let message = messages.next().unwrap()?;
        assert!(messages.next().is_none());
        match message.body {
            Body::Entry(payload) => parse_entry(payload),
            other => panic!("not an entry: {other:?}"),
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn the_dump_request_asks_ctnetlink_for_every_family() {
        #[rustfmt::skip]
        let expected = [
            20, 0, 0, 0,       // nlmsg_len: header and nfgenmsg
            0x01, 0x01,        // nlmsg_type: NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
            0x01, 0x03,        // nlmsg_flags: NLM_F_REQUEST | NLM_F_DUMP (0x300)
            3, 0, 0, 0,        // nlmsg_seq
            0, 0, 0, 0,        // nlmsg_pid
            0, 0, 0, 0,        // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0
        ];
        assert_eq!(dump_request(3), expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn an_ipv4_delete_request_carries_the_original_tuple() {
        #[rustfmt::skip]
        let expected = [
            72, 0, 0, 0,             // nlmsg_len: 16 + 4 + 52
            0x02, 0x01,              // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
            0x05, 0x00,              // NLM_F_REQUEST | NLM_F_ACK
            7, 0, 0, 0,              // nlmsg_seq
            0, 0, 0, 0,              // nlmsg_pid
            2, 0, 0, 0,              // nfgenmsg: AF_INET, NFNETLINK_V0, res_id 0
            52, 0, 0x01, 0x80,       // CTA_TUPLE_ORIG | NLA_F_NESTED: 4 + 20 + 28
            20, 0, 0x01, 0x80,       //   CTA_TUPLE_IP | NLA_F_NESTED: 4 + 8 + 8
            8, 0, 1, 0,              //     CTA_IP_V4_SRC
            198, 18, 0, 1,
            8, 0, 2, 0,              //     CTA_IP_V4_DST
            198, 18, 0, 100,
            28, 0, 0x02, 0x80,       //   CTA_TUPLE_PROTO | NLA_F_NESTED: 4 + 8 + 8 + 8
            5, 0, 1, 0,              //     CTA_PROTO_NUM, one byte and three of padding
            17, 0, 0, 0,
            6, 0, 2, 0,              //     CTA_PROTO_SRC_PORT, big endian 5000, padded
            0x13, 0x88, 0, 0,
            6, 0, 3, 0,              //     CTA_PROTO_DST_PORT, big endian 53, padded
            0, 53, 0, 0,
        ];
        let mut buf = vec![0xAA; 3]; // what a previous request left is cleared
        delete_request(&mut buf, &udp_entry(), 7);
        assert_eq!(buf, expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn an_ipv6_delete_request_carries_the_original_tuple_zone_and_id() {
        let entry = Entry {
            orig: tuple(v6("2001:db8::1", "2001:db8::100"), 6, 443, 8443),
            reply: tuple(v6("2001:db8::7", "2001:db8::1"), 6, 8443, 443),
            zone: Some(5),
            id: Some(0xdead_beef),
        };
        #[rustfmt::skip]
        let expected = [
            112, 0, 0, 0,            // nlmsg_len: 16 + 4 + 76 + 8 + 8
            0x02, 0x01, 0x05, 0x00,  // CT_DELETE, NLM_F_REQUEST | NLM_F_ACK
            9, 0, 0, 0,
            0, 0, 0, 0,
            10, 0, 0, 0,             // nfgenmsg: AF_INET6
            76, 0, 0x01, 0x80,       // CTA_TUPLE_ORIG: 4 + 44 + 28
            44, 0, 0x01, 0x80,       //   CTA_TUPLE_IP: 4 + 20 + 20
            20, 0, 3, 0,             //     CTA_IP_V6_SRC
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            20, 0, 4, 0,             //     CTA_IP_V6_DST
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0,
            28, 0, 0x02, 0x80,       //   CTA_TUPLE_PROTO
            5, 0, 1, 0, 6, 0, 0, 0,  //     CTA_PROTO_NUM: TCP
            6, 0, 2, 0, 0x01, 0xbb, 0, 0, // CTA_PROTO_SRC_PORT 443
            6, 0, 3, 0, 0x20, 0xfb, 0, 0, // CTA_PROTO_DST_PORT 8443
            6, 0, 18, 0, 0, 5, 0, 0, // CTA_ZONE, big endian 5, padded
            8, 0, 12, 0, 0xde, 0xad, 0xbe, 0xef, // CTA_ID, big endian
        ];
        let mut buf = Vec::new();
        delete_request(&mut buf, &entry, 9);
        assert_eq!(buf, expected);
    }

    #[test]
    fn a_dump_entry_is_read_as_the_kernel_sends_it() {
        let datagram = kernel_udp_entry(4);
        let message = messages(&datagram).next().unwrap().unwrap();
        assert_eq!(message.seq, 4);
        assert_eq!(only_entry(&datagram).unwrap(), Entry { id: Some(0x1234), ..udp_entry() });
    }

    #[test]
    fn attributes_are_read_in_any_order_and_unknown_ones_skipped() {
        let orig = nest(
            1, // without NLA_F_NESTED, as older kernels sent it
            &[
                attr(3, &[0, 0]), // CTA_TUPLE_ZONE, not needed
                nest(
                    2 | 0x8000,
                    &[
                        attr(3, &53u16.to_be_bytes()),
                        attr(9, b"unknown"),
                        attr(2, &5000u16.to_be_bytes()),
                        attr(1, &[17]),
                    ],
                ),
                nest(1 | 0x8000, &[attr(2, &[198, 18, 0, 100]), attr(1 | 0x4000, &[198, 18, 0, 1])]),
            ],
        );
        let reply = kernel_tuple(2, [198, 18, 0, 7], [198, 18, 0, 1], 17, 53, 5000);
        let datagram = entry_message(
            1,
            2,
            &[
                attr(99, b"from a later kernel"),
                reply,
                attr(18, &7u16.to_be_bytes()),
                nest(4 | 0x8000, &[attr(1, &[3])]),
                orig,
            ],
        );
        assert_eq!(only_entry(&datagram).unwrap(), Entry { zone: Some(7), ..udp_entry() });
    }

    #[test]
    fn ipv6_and_icmp_entries_are_read() {
        let v6_tuple = |kind: u16, src: &str, dst: &str| {
            let (src, dst): (Ipv6Addr, Ipv6Addr) = (src.parse().unwrap(), dst.parse().unwrap());
            nest(
                kind,
                &[
                    nest(1, &[attr(3, &src.octets()), attr(4, &dst.octets())]),
                    nest(2, &[attr(1, &[58]), attr(4, &[0, 9]), attr(5, &[128]), attr(6, &[0])]), // ICMPv6 id, type, code
                ],
            )
        };
        let datagram = entry_message(
            1,
            10,
            &[v6_tuple(1, "2001:db8::1", "2001:db8::100"), v6_tuple(2, "2001:db8::100", "2001:db8::1")],
        );
        let entry = only_entry(&datagram).unwrap();
        assert_eq!(
            entry.orig,
            Tuple {
                addresses: v6("2001:db8::1", "2001:db8::100"),
                protocol: 58,
                src_port: None,
                dst_port: None
            }
        );
        assert_eq!(entry.reply.src(), "2001:db8::100".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_datagram_holds_several_messages_and_ends_with_done() {
        let mut datagram = kernel_udp_entry(5);
        datagram.extend(kernel_udp_entry(5));
        datagram.extend(message(NLMSG_DONE, 0x2, 5, &0i32.to_ne_bytes()));
        let bodies: Vec<_> = messages(&datagram).map(|m| m.unwrap().body).collect();
        assert!(matches!(bodies[..], [Body::Entry(_), Body::Entry(_), Body::Done(0)]));
        let empty_done = message(NLMSG_DONE, 0x2, 5, &[]);
        assert_eq!(messages(&empty_done).next().unwrap().unwrap().body, Body::Done(0));
    }

    #[test]
    fn errors_and_acknowledgements_are_read() {
        let mut nlmsgerr = (-2i32).to_ne_bytes().to_vec();
        nlmsgerr.extend_from_slice(&[0; 16]); // the request's header, echoed
        let enoent = message(NLMSG_ERROR, 0, 8, &nlmsgerr);
        assert_eq!(messages(&enoent).next().unwrap().unwrap(), Message { seq: 8, body: Body::Error(-2) });
        let ack = message(NLMSG_ERROR, 0, 9, &0i32.to_ne_bytes());
        assert_eq!(messages(&ack).next().unwrap().unwrap().body, Body::Error(0));
        let noop = message(1, 0, 9, &[]);
        assert_eq!(messages(&noop).next().unwrap().unwrap().body, Body::Other);
    }

    #[test]
    fn every_cut_of_a_message_is_an_error() {
        let datagram = kernel_udp_entry(1);
        for len in 1..datagram.len() {
            let cut = &datagram[..len];
            let read: Result<Vec<_>, _> = messages(cut).collect();
            assert!(read.is_err(), "a message cut at {len} of {} was read", datagram.len());
        }
    }

    #[test]
    fn every_cut_of_an_entry_inside_an_attribute_is_an_error() {
        // The tuples are last, so that every cut loses part of what an entry needs.
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(attr(7, &119u32.to_be_bytes()));
        payload.extend(kernel_tuple(1, [198, 18, 0, 1], [198, 18, 0, 100], 17, 5000, 53));
        payload.extend(kernel_tuple(2, [198, 18, 0, 7], [198, 18, 0, 1], 17, 53, 5000));
        assert_eq!(parse_entry(&payload).unwrap(), udp_entry());
        for len in 0..payload.len() {
            assert!(parse_entry(&payload[..len]).is_err(), "an entry cut at {len} was read");
        }
    }

    #[test]
    fn garbage_is_refused_with_what_is_wrong() {
        let entry = |attrs: &[Vec<u8>]| {
            let datagram = entry_message(1, 2, attrs);
            only_entry(&datagram).unwrap_err()
        };
        let orig = || kernel_tuple(1, [198, 18, 0, 1], [198, 18, 0, 100], 17, 5000, 53);
        let ip = |attrs: &[Vec<u8>]| nest(1, &[nest(1, attrs), nest(2, &[attr(1, &[17])])]);
        let cases: Vec<(Malformed, Malformed)> = vec![
            (entry(&[orig()]), Malformed("conntrack entry without CTA_TUPLE_REPLY")),
            (entry(&[]), Malformed("conntrack entry without CTA_TUPLE_ORIG")),
            (entry(&[vec![0, 0, 1, 0]]), Malformed("attribute shorter than its header")),
            (entry(&[vec![2, 0, 1, 0]]), Malformed("attribute shorter than its header")),
            (entry(&[vec![200, 0, 1, 0, 0, 0, 0, 0]]), Malformed("attribute cut short")),
            (entry(&[vec![4, 0]]), Malformed("attribute header cut short")),
            (entry(&[nest(1, &[nest(2, &[attr(1, &[17])])])]), Malformed("tuple without CTA_TUPLE_IP")),
            (entry(&[ip(&[attr(1, &[1, 2, 3, 4])])]), Malformed("tuple without a destination address")),
            (entry(&[ip(&[attr(2, &[1, 2, 3, 4])])]), Malformed("tuple without a source address")),
            (
                entry(&[ip(&[attr(1, &[1, 2, 3, 4, 5]), attr(2, &[1, 2, 3, 4])])]),
                Malformed("CTA_IP_V4_SRC is not 4 bytes"),
            ),
            (
                entry(&[ip(&[attr(1, &[1, 2, 3, 4]), attr(4, &[0; 16])])]),
                Malformed("tuple with addresses of two families"),
            ),
            (
                entry(&[ip(&[attr(3, &[0; 4]), attr(4, &[0; 16])])]),
                Malformed("CTA_IP_V6_SRC is not 16 bytes"),
            ),
            (
                entry(&[nest(
                    1,
                    &[nest(1, &[attr(1, &[1; 4]), attr(2, &[2; 4])]), nest(2, &[attr(2, &[0, 53])])],
                )]),
                Malformed("tuple without CTA_PROTO_NUM"),
            ),
            (
                entry(&[nest(
                    1,
                    &[nest(1, &[attr(1, &[1; 4]), attr(2, &[2; 4])]), nest(2, &[attr(1, &[17, 0])])],
                )]),
                Malformed("CTA_PROTO_NUM is not 1 byte"),
            ),
            (
                entry(&[nest(
                    1,
                    &[
                        nest(1, &[attr(1, &[1; 4]), attr(2, &[2; 4])]),
                        nest(2, &[attr(1, &[17]), attr(3, &[53])]),
                    ],
                )]),
                Malformed("CTA_PROTO_DST_PORT is not 2 bytes"),
            ),
            (entry(&[orig(), attr(18, &[0, 0, 1])]), Malformed("CTA_ZONE is not 2 bytes")),
            (entry(&[orig(), attr(12, &[0, 1])]), Malformed("CTA_ID is not 4 bytes")),
            (parse_entry(&[2, 0]).unwrap_err(), Malformed("conntrack entry without its nfgenmsg")),
        ];
        for (got, expected) in cases {
            assert_eq!(got, expected);
        }
        let header = |len: u32, kind: u16| {
            let mut out = len.to_ne_bytes().to_vec();
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(&[0; 10]);
            out
        };
        let first = |datagram: &[u8]| messages(datagram).next().unwrap().unwrap_err();
        assert_eq!(first(&[1, 2, 3]), Malformed("netlink header cut short"));
        assert_eq!(first(&header(8, 0x100)), Malformed("netlink message shorter than its header"));
        assert_eq!(first(&header(u32::MAX, 0x100)), Malformed("netlink message cut short"));
        assert_eq!(first(&message(NLMSG_ERROR, 0, 1, &[0, 0])), Malformed("NLMSG_ERROR without its error"));
        assert_eq!(first(&message(NLMSG_DONE, 0, 1, &[0, 0])), Malformed("NLMSG_DONE cut short"));
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for message in messages(&bytes) {
                if let Ok(Message { body: Body::Entry(payload), .. }) = message {
                    let _ = parse_entry(payload);
                }
            }
            let _ = parse_entry(&bytes);
        }

        #[test]
        fn no_damage_to_an_entry_makes_the_reader_panic(
            damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut datagram = kernel_udp_entry(1);
            for (at, byte) in damage {
                let len = datagram.len();
                datagram[at % len] = byte;
            }
            for message in messages(&datagram) {
                if let Ok(Message { body: Body::Entry(payload), .. }) = message {
                    let _ = parse_entry(payload);
                }
            }
        }
    }
}
