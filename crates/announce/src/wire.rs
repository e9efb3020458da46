//! The ARP (RFC 826, 5227) and NDP (RFC 4861) messages an announcing node reads and writes,
//! built byte by byte and read without ever panicking on what the LAN sends.
//!
//! ARP travels in Ethernet frames (the whole frame here); neighbour solicitations and
//! advertisements are ICMPv6 messages, read and written without their IPv6 header (a raw
//! ICMPv6 socket adds it and computes the checksum).

use std::net::{Ipv4Addr, Ipv6Addr};

/// A link-layer (Ethernet) address.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];
/// `ETH_P_ARP`.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet header and ARP for IPv4 over Ethernet: 14 + 28 bytes.
pub const ARP_FRAME_LEN: usize = 42;

/// ARP `oper`: a request.
const ARP_REQUEST: u16 = 1;
/// ARP `oper`: a reply.
const ARP_REPLY: u16 = 2;
/// ICMPv6 neighbour solicitation.
pub const NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// NDP option: source link-layer address.
const OPTION_SOURCE_LINK_ADDRESS: u8 = 1;
/// NDP option: target link-layer address.
const OPTION_TARGET_LINK_ADDRESS: u8 = 2;

/// An ARP request read from a frame: who asks (hardware and protocol address) for what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRequest {
    /// The asker's link-layer address.
    pub sender_mac: Mac,
    /// The asker's IPv4 address (0.0.0.0 for an address probe).
    pub sender_ip: Ipv4Addr,
    /// The address asked for.
    pub target_ip: Ipv4Addr,
}

/// Reads an ARP request for IPv4 over Ethernet from a whole Ethernet frame; anything else
/// (replies, other protocols, short frames) is `None`.
pub fn read_arp_request(frame: &[u8]) -> Option<ArpRequest> {
    let arp = frame.get(14..ARP_FRAME_LEN)?;
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let header_ok = ethertype == ETHERTYPE_ARP
        && arp[0..2] == 1u16.to_be_bytes() // Ethernet
        && arp[2..4] == 0x0800u16.to_be_bytes() // IPv4
        && arp[4] == 6
        && arp[5] == 4;
    if !header_ok || u16::from_be_bytes([arp[6], arp[7]]) != ARP_REQUEST {
        return None;
    }
    Some(ArpRequest {
        sender_mac: arp[8..14].try_into().ok()?,
        sender_ip: Ipv4Addr::from(<[u8; 4]>::try_from(&arp[14..18]).ok()?),
        target_ip: Ipv4Addr::from(<[u8; 4]>::try_from(&arp[24..28]).ok()?),
    })
}

/// The reply to `request`: `ip` is at `mac`, sent to the asker.
pub fn arp_reply(request: &ArpRequest, ip: Ipv4Addr, mac: Mac) -> [u8; ARP_FRAME_LEN] {
    arp_frame(request.sender_mac, mac, ARP_REPLY, (mac, ip), (request.sender_mac, request.sender_ip))
}

/// A gratuitous ARP (an ARP announcement, RFC 5227): `ip` is at `mac`, to everyone, so that
/// neighbours holding an entry for `ip` move it to `mac` at once.
pub fn gratuitous_arp(ip: Ipv4Addr, mac: Mac) -> [u8; ARP_FRAME_LEN] {
    arp_frame(BROADCAST, mac, ARP_REQUEST, (mac, ip), ([0; 6], ip))
}

fn arp_frame(
    destination: Mac,
    source: Mac,
    oper: u16,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> [u8; ARP_FRAME_LEN] {
    let mut frame = [0u8; ARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&destination);
    frame[6..12].copy_from_slice(&source);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame[14..16].copy_from_slice(&1u16.to_be_bytes());
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&oper.to_be_bytes());
    frame[22..28].copy_from_slice(&sender.0);
    frame[28..32].copy_from_slice(&sender.1.octets());
    frame[32..38].copy_from_slice(&target.0);
    frame[38..42].copy_from_slice(&target.1.octets());
    frame
}

/// A neighbour solicitation read from an ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// The address asked for.
    pub target: Ipv6Addr,
    /// The asker's link-layer address, when it gave one (not in duplicate address detection).
    pub source_mac: Option<Mac>,
}

/// Reads a neighbour solicitation (type 135, code 0) from an ICMPv6 message; anything else is
/// `None`. Options are walked by their lengths; a zero length ends the message as invalid.
pub fn read_neighbor_solicitation(message: &[u8]) -> Option<NeighborSolicitation> {
    if message.len() < 24 || message[0] != NEIGHBOR_SOLICITATION || message[1] != 0 {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&message[8..24]).ok()?);
    if target.is_multicast() {
        return None;
    }
    let mut source_mac = None;
    let mut options = &message[24..];
    while !options.is_empty() {
        let kind = *options.first()?;
        let len = usize::from(*options.get(1)?) * 8;
        if len == 0 {
            return None;
        }
        let option = options.get(..len)?;
        if kind == OPTION_SOURCE_LINK_ADDRESS && len == 8 {
            source_mac = Some(option[2..8].try_into().ok()?);
        }
        options = &options[len..];
    }
    Some(NeighborSolicitation { target, source_mac })
}

/// A neighbour advertisement (type 136) for `target` at `mac`: `solicited` when it answers a
/// solicitation, always with the override flag (the address moves to this node) and the
/// target link-layer address option. The checksum is left zero for the kernel.
pub fn neighbor_advertisement(target: Ipv6Addr, mac: Mac, solicited: bool) -> [u8; 32] {
    let mut message = [0u8; 32];
    message[0] = NEIGHBOR_ADVERTISEMENT;
    // R (router) clear, S (solicited), O (override).
    message[4] = if solicited { 0x60 } else { 0x20 };
    message[8..24].copy_from_slice(&target.octets());
    message[24] = OPTION_TARGET_LINK_ADDRESS;
    message[25] = 1;
    message[26..32].copy_from_slice(&mac);
    message
}

/// The solicited-node multicast group of `address` (ff02::1:ffXX:XXXX), which a node joins to
/// hear solicitations for it.
pub fn solicited_node_group(address: Ipv6Addr) -> Ipv6Addr {
    let o = address.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    const CLIENT: Mac = [0x02, 0, 0, 0, 0, 0x02];
    const NODE: Mac = [0x02, 0, 0, 0, 0, 0x0b];

    /// An ARP request as Linux sends one: the client 198.18.0.2 asking for 198.18.1.0.
    fn request_frame() -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&CLIENT);
        frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&CLIENT);
        frame.extend_from_slice(&[198, 18, 0, 2]);
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&[198, 18, 1, 0]);
        // Ethernet pads short frames to 60 bytes.
        frame.resize(60, 0);
        frame
    }

    #[test]
    fn an_arp_request_is_read_and_answered_to_the_asker() {
        let request = read_arp_request(&request_frame()).unwrap();
        assert_eq!(request.sender_mac, CLIENT);
        assert_eq!(request.sender_ip, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(request.target_ip, Ipv4Addr::new(198, 18, 1, 0));
        let reply = arp_reply(&request, request.target_ip, NODE);
        assert_eq!(&reply[0..6], &CLIENT, "to the asker");
        assert_eq!(&reply[6..12], &NODE);
        assert_eq!(&reply[20..22], &[0, 2], "a reply");
        assert_eq!(&reply[22..28], &NODE);
        assert_eq!(&reply[28..32], &[198, 18, 1, 0]);
        assert_eq!(&reply[32..38], &CLIENT);
        assert_eq!(&reply[38..42], &[198, 18, 0, 2]);
        // A reply is not a request.
        assert_eq!(read_arp_request(&reply), None);
    }

    #[test]
    fn a_gratuitous_arp_announces_the_address_to_everyone() {
        let garp = gratuitous_arp(Ipv4Addr::new(198, 18, 1, 0), NODE);
        assert_eq!(&garp[0..6], &BROADCAST);
        let read = read_arp_request(&garp).unwrap();
        assert_eq!(
            (read.sender_ip, read.target_ip),
            (Ipv4Addr::new(198, 18, 1, 0), Ipv4Addr::new(198, 18, 1, 0))
        );
        assert_eq!(read.sender_mac, NODE);
    }

    #[test]
    fn other_frames_are_not_arp_requests() {
        let mut ipv4 = request_frame();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(read_arp_request(&ipv4), None);
        assert_eq!(read_arp_request(&request_frame()[..41]), None);
        let mut ipv6_arp = request_frame();
        ipv6_arp[16..18].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(read_arp_request(&ipv6_arp), None);
    }

    /// A neighbour solicitation for 2001:db8:1b:: with the asker's link-layer address.
    fn solicitation() -> Vec<u8> {
        let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&"2001:db8:1b::".parse::<Ipv6Addr>().unwrap().octets());
        message.extend_from_slice(&[1, 1]);
        message.extend_from_slice(&CLIENT);
        message
    }

    #[test]
    fn a_neighbor_solicitation_is_read_and_answered() {
        let read = read_neighbor_solicitation(&solicitation()).unwrap();
        assert_eq!(read.target, "2001:db8:1b::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(read.source_mac, Some(CLIENT));
        let answer = neighbor_advertisement(read.target, NODE, true);
        assert_eq!(answer[0], 136);
        assert_eq!(answer[4], 0x60, "solicited and override");
        assert_eq!(&answer[8..24], &read.target.octets());
        assert_eq!(&answer[24..32], &[2, 1, 0x02, 0, 0, 0, 0, 0x0b]);
        assert_eq!(neighbor_advertisement(read.target, NODE, false)[4], 0x20, "unsolicited: override only");
        // Duplicate address detection carries no source link-layer address.
        assert_eq!(read_neighbor_solicitation(&solicitation()[..24]).unwrap().source_mac, None);
        assert_eq!(
            solicited_node_group("2001:db8:1b::1:2345".parse().unwrap()),
            "ff02::1:ff01:2345".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn malformed_solicitations_are_refused() {
        let mut zero_option = solicitation();
        zero_option[25] = 0;
        assert_eq!(read_neighbor_solicitation(&zero_option), None);
        let mut long_option = solicitation();
        long_option[25] = 2;
        assert_eq!(read_neighbor_solicitation(&long_option), None);
        let mut advertisement = solicitation();
        advertisement[0] = 136;
        assert_eq!(read_neighbor_solicitation(&advertisement), None);
        let mut multicast = solicitation();
        multicast[8] = 0xff;
        assert_eq!(read_neighbor_solicitation(&multicast), None);
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_readers_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = read_arp_request(&bytes);
            let _ = read_neighbor_solicitation(&bytes);
        }
    }
}
