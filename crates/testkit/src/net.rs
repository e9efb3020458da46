//! Where tests listen: blocks of loopback addresses of their own in 127.0.0.0/8, and free
//! ports. Tests reach nothing but 127.0.0.0/8 and `::1`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

/// 127.0.0.1, shared by every test: listeners on it take free ports.
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A port free for both TCP and UDP on 127.0.0.1 when asked.
pub fn free_port() -> u16 {
    free_port_on(LOCALHOST)
}

/// Panics unless `ip` is a loopback address (127.0.0.0/8, `::1`): tests reach no other.
pub fn assert_loopback(ip: IpAddr) {
    assert!(ip.is_loopback(), "tests use loopback addresses only, not {ip}");
}

/// A port free for both TCP and UDP on `ip` (a loopback address) when asked.
pub fn free_port_on(ip: IpAddr) -> u16 {
    assert_loopback(ip);
    loop {
        let tcp = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let port = tcp.local_addr().unwrap_or_else(|e| panic!("{ip}: {e}")).port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// A block of loopback addresses of one test's own, 127.<net>.0.0/16, so that tests running
/// in parallel never meet on an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(u8);

impl Block {
    /// The block 127.<net>.0.0/16; 127.0.0.0/16 is everyone's and not a block.
    pub const fn new(net: u8) -> Block {
        assert!(net != 0, "127.0.0.0/16 is shared by every test");
        Block(net)
    }

    /// The second byte of the block's addresses.
    pub const fn net(self) -> u8 {
        self.0
    }

    /// The address 127.<net>.<subnet>.<host>.
    pub const fn ip(self, subnet: u8, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.0, subnet, host))
    }

    /// The socket address 127.<net>.<subnet>.<host>:<port>.
    pub const fn addr(self, subnet: u8, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(subnet, host), port)
    }

    /// The range 127.<net>.<subnet>.0/24, as flags and PlanConfig write it.
    pub fn subnet(self, subnet: u8) -> String {
        format!("127.{}.{subnet}.0/24", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_names_its_addresses() {
        let block = Block::new(121);
        assert_eq!(block.addr(4, 1, 8080).to_string(), "127.121.4.1:8080");
        assert_eq!(block.subnet(2), "127.121.2.0/24");
        assert_ne!(free_port(), 0);
    }
}
