//! Answering and announcing on a real link, between two network namespaces this test makes
//! and removes (a veth pair, 198.18.0.0/24 and 2001:db8::/64, no route anywhere else): the
//! neighbour learns the held addresses at the responder's link-layer address through ARP and
//! NDP, moves an entry it had elsewhere on a gratuitous ARP or unsolicited advertisement, and
//! learns nothing once the responder is gone. Skipped without root and `ip`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use portico_announce::link::{Responder, links};

fn run(argv: &[&str]) -> Output {
    let output = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(output.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Two namespaces joined by a veth pair, removed when dropped.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new() -> Pair {
        let id = std::process::id();
        let (a, b) = (format!("portico-test-announce-{id}-a"), format!("portico-test-announce-{id}-b"));
        run(&["ip", "netns", "add", &a]);
        run(&["ip", "netns", "add", &b]);
        run(&["ip", "link", "add", "va", "netns", &a, "type", "veth", "peer", "name", "vb", "netns", &b]);
        for (ns, dev, v4, v6) in
            [(&a, "va", "198.18.0.1/24", "2001:db8::1/64"), (&b, "vb", "198.18.0.2/24", "2001:db8::2/64")]
        {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // Entries set by hand may be overridden at once, not only after a second.
        for family in ["ipv4", "ipv6"] {
            run(&["ip", "netns", "exec", &b, "sysctl", "-qw", &format!("net.{family}.neigh.vb.locktime=0")]);
        }
        // A veth pair has carrier a moment after both ends are up (the kernel's link watch).
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [(&a, "va"), (&b, "vb")] {
            while !String::from_utf8(run(&["ip", "-n", ns, "link", "show", dev]).stdout)
                .unwrap()
                .contains("state UP")
            {
                assert!(Instant::now() < deadline, "{dev} has no carrier");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Pair { a, b }
    }

    /// What `b` holds for `address`: its neighbour entry's line.
    fn neighbour(&self, address: &str) -> String {
        String::from_utf8(run(&["ip", "-n", &self.b, "neigh", "show", address, "dev", "vb"]).stdout).unwrap()
    }

    /// `b` sends a datagram to `address`, so that its kernel asks the link where that is.
    fn ask(&self, address: &str) {
        let to = std::net::SocketAddr::new(address.parse().unwrap(), 9);
        inside(&self.b, move || {
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = std::net::UdpSocket::bind(bind).unwrap();
            let _ = socket.send_to(b"where", to);
        });
    }

    /// Waits until `b`'s entry for `address` says `lladdr mac`.
    fn learns(&self, address: &str, mac: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.neighbour(address).contains(&format!("lladdr {mac}")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a thread inside the namespace `name`; threads it starts stay there.
fn inside<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(path).unwrap();
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn addresses(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn a_neighbour_learns_held_addresses_by_arp_and_ndp_and_moves_on_announcements() {
    if !portico_testkit::root::able(&["ip"]) {
        return;
    }
    let pair = Pair::new();
    let (responder, mac) = inside(&pair.a, || {
        let link = links().into_iter().find(|l| l.name() == "va").unwrap();
        let mac = link.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        (Responder::start(link).unwrap(), mac)
    });
    responder.set(addresses(&["198.18.0.200", "2001:db8::200"])).unwrap();
    pair.ask("198.18.0.200");
    assert!(pair.learns("198.18.0.200", &mac), "ARP: {}", pair.neighbour("198.18.0.200"));
    pair.ask("2001:db8::200");
    assert!(pair.learns("2001:db8::200", &mac), "NDP: {}", pair.neighbour("2001:db8::200"));
    // Not held: not answered.
    pair.ask("198.18.0.202");
    assert!(!pair.neighbour("198.18.0.202").contains(&mac), "{}", pair.neighbour("198.18.0.202"));

    // Entries pointing elsewhere move as soon as the addresses are taken over.
    let elsewhere = "02:00:00:00:00:99";
    for address in ["198.18.0.201", "2001:db8::201"] {
        run(&[
            "ip", "-n", &pair.b, "neigh", "replace", address, "lladdr", elsewhere, "dev", "vb", "nud",
            "stale",
        ]);
    }
    responder.set(addresses(&["198.18.0.200", "2001:db8::200", "198.18.0.201", "2001:db8::201"])).unwrap();
    assert!(pair.learns("198.18.0.201", &mac), "gratuitous ARP: {}", pair.neighbour("198.18.0.201"));
    assert!(pair.learns("2001:db8::201", &mac), "unsolicited NA: {}", pair.neighbour("2001:db8::201"));

    // Gone: nothing answers any more.
    drop(responder);
    run(&["ip", "-n", &pair.b, "neigh", "flush", "dev", "vb"]);
    pair.ask("198.18.0.200");
    assert!(!pair.neighbour("198.18.0.200").contains(&mac), "{}", pair.neighbour("198.18.0.200"));
}
