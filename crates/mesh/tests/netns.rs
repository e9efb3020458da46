//! Finding a Pod's network namespace by its address, as a node agent in a cluster does where
//! the container runtime names namespaces after nothing Portico knows (`cni-…`): root, in
//! namespaces this test makes and removes (skipped, saying so, without root or `ip`).
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use portico_mesh::netns::find;

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// Namespaces removed when dropped, even when the test fails.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

#[tokio::test]
async fn the_namespace_holding_a_pods_address_is_found_among_the_others() {
    if !portico_testkit::root::able(&["ip"]) {
        return;
    }
    let pid = std::process::id();
    let names: Vec<String> = ["a", "b"].iter().map(|n| format!("pt-find-{pid}-{n}")).collect();
    let made = Namespaces(names.clone());
    // Addresses unique to this run (the search looks at every namespace on the host).
    let third = pid % 250;
    let addresses: Vec<String> = (1..=2).map(|i| format!("198.19.{third}.{i}")).collect();
    for (name, address) in names.iter().zip(&addresses) {
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
        ip(&["-n", name, "addr", "add", &format!("{address}/32"), "dev", "eth0"]);
        ip(&["-n", name, "link", "set", "eth0", "up"]);
    }
    let wanted: IpAddr = addresses[1].parse().unwrap();
    let (path, netns) = find(Path::new("/run/netns"), wanted).await.unwrap().expect("found");
    assert_eq!(path, Path::new("/run/netns").join(&names[1]));
    assert!(netns.holds(wanted).await.unwrap());
    let nowhere: IpAddr = format!("198.19.{third}.3").parse().unwrap();
    assert!(find(Path::new("/run/netns"), nowhere).await.unwrap().is_none(), "no namespace holds it");
    drop(made);
    assert!(!Path::new("/run/netns").join(&names[0]).exists());
}
