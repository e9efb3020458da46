//! The cluster DNS zone as the Plan defines it (Kubernetes DNS specification 1.1.0): every name
//! the cluster answers for, with its records, computed with the Plan, so that a DNS server only
//! looks names up and its answers follow the Plan the moment it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::Protocol;
use crate::pods::PodPlan;
use crate::services::{ServiceKind, ServicePlan};

/// The specification the zone follows, published as the `dns-version.<zone>` TXT record.
pub const SPEC_VERSION: &str = "1.1.0";

/// The data of one record; the TTL is the server's to choose.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordData {
    /// An address: A for IPv4, AAAA for IPv6.
    Address(IpAddr),
    /// A named port of a Service.
    Srv {
        /// Always 0: every target is as good as the others.
        priority: u16,
        /// Shares of 100 spread over the targets.
        weight: u16,
        /// The port.
        port: u16,
        /// The name that has the address.
        target: String,
    },
    /// The name of an address (reverse lookup).
    Ptr(String),
    /// An alias: an ExternalName Service.
    Cname(String),
    /// Text.
    Txt(String),
}

/// The names of the cluster zone and of the reverse zones of cluster addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsZone {
    /// The zone's apex, lower-case and without a trailing dot (`cluster.local`).
    pub apex: String,
    /// Records by owner name, lower-case and without a trailing dot. Reverse names
    /// (`…in-addr.arpa`, `…ip6.arpa`) are here too, for the addresses the cluster owns.
    pub records: BTreeMap<String, Vec<RecordData>>,
    /// Names under the apex that hold no records but have names below them (`svc.<zone>`,
    /// `<ns>.svc.<zone>`): they exist, so a query for them is NODATA, not NXDOMAIN.
    pub empty_nonterminals: BTreeSet<String>,
}

/// What the zone holds at a name.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'z> {
    /// The name has these records (of every type).
    Records(&'z [RecordData]),
    /// The name exists but holds no records.
    Empty,
    /// No such name.
    Missing,
}

impl DnsZone {
    /// The records at `name` (any case, with or without the trailing dot).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let name = canonical(name);
        if let Some(records) = self.records.get(name.as_ref()) {
            return Lookup::Records(records);
        }
        if name == self.apex || self.empty_nonterminals.contains(name.as_ref()) {
            return Lookup::Empty;
        }
        Lookup::Missing
    }

    /// Whether `name` is the apex or under it (any case, with or without the trailing dot).
    pub fn is_under_apex(&self, name: &str) -> bool {
        let name = canonical(name);
        name == self.apex || name.strip_suffix(self.apex.as_str()).is_some_and(|rest| rest.ends_with('.'))
    }

    /// Adds a record; [`build`] drops the repeated ones at the end, since looking for them here
    /// would cost the square of the records of a name (an address behind ten thousand
    /// Services has ten thousand PTR records).
    fn add(&mut self, owner: String, data: RecordData) {
        self.records.entry(owner).or_default().push(data);
    }
}

/// `name` lower-cased, without its trailing dot.
fn canonical(name: &str) -> std::borrow::Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) { name.to_ascii_lowercase().into() } else { name.into() }
}

/// The zone `apex` holds for `services` and `pods`.
pub fn build(apex: &str, services: &[ServicePlan], pods: &[PodPlan]) -> DnsZone {
    let apex = canonical(apex).into_owned();
    let mut zone = DnsZone { apex: apex.clone(), ..DnsZone::default() };
    zone.add(format!("dns-version.{apex}"), RecordData::Txt(SPEC_VERSION.to_owned()));
    for service in services {
        add_service(&mut zone, service);
    }
    for pod in pods {
        for ip in &pod.ips {
            let owner = format!("{}.{}.pod.{apex}", dashed(*ip), pod.key.namespace);
            zone.add(owner, RecordData::Address(*ip));
        }
    }
    let nonterminals: BTreeSet<String> = zone
        .records
        .keys()
        .filter(|name| zone.is_under_apex(name))
        .flat_map(|name| ancestors(name, &apex))
        .filter(|name| !zone.records.contains_key(name.as_str()))
        .collect();
    zone.empty_nonterminals = nonterminals;
    for records in zone.records.values_mut().filter(|r| r.len() > 1) {
        // The first of each record stays where it was: answers keep the order they were added.
        let mut seen = BTreeSet::new();
        records.retain(|r| seen.insert(r.clone()));
    }
    zone.records.values_mut().for_each(Vec::shrink_to_fit);
    zone
}

fn add_service(zone: &mut DnsZone, service: &ServicePlan) {
    let name = format!("{}.{}.svc.{}", service.key.name, service.key.namespace, zone.apex);
    match service.kind {
        ServiceKind::ClusterIP | ServiceKind::NodePort | ServiceKind::LoadBalancer => {
            for ip in &service.cluster_ips {
                zone.add(name.clone(), RecordData::Address(*ip));
                zone.add(reverse_name(*ip), RecordData::Ptr(name.clone()));
            }
            for port in service.ports.iter().filter(|p| !p.name.is_empty()) {
                let srv = RecordData::Srv { priority: 0, weight: 100, port: port.port, target: name.clone() };
                zone.add(srv_name(&port.name, port.protocol, &name), srv);
            }
            // As CoreDNS does, an endpoint's address answers a reverse lookup with its name under
            // the Service, though only headless Services answer that name forwards.
            for endpoint in service.endpoints().filter(|e| e.ready) {
                let own = endpoint_name(endpoint.address, endpoint.hostname.as_deref(), &name);
                zone.add(reverse_name(endpoint.address), RecordData::Ptr(own));
            }
        }
        ServiceKind::Headless => add_headless(zone, service, &name),
        ServiceKind::ExternalName => {
            if let Some(target) = &service.external_name {
                zone.add(name, RecordData::Cname(canonical(target).into_owned()));
            }
        }
    }
}

/// A headless Service: its name holds every ready endpoint's address, each endpoint has a
/// name of its own (its hostname, else its address with dashes), and SRV records point at
/// those names. Without a ready endpoint the Service's name does not exist. A headless
/// Service without ports has its endpoints all the same, and no SRV records.
fn add_headless(zone: &mut DnsZone, service: &ServicePlan, name: &str) {
    for endpoint in service.endpoints().filter(|e| e.ready) {
        let own = endpoint_name(endpoint.address, endpoint.hostname.as_deref(), name);
        zone.add(name.to_owned(), RecordData::Address(endpoint.address));
        zone.add(own.clone(), RecordData::Address(endpoint.address));
        zone.add(reverse_name(endpoint.address), RecordData::Ptr(own));
    }
    for port in service.ports.iter().filter(|p| !p.name.is_empty()) {
        // A dual-stack endpoint with a hostname is one target with two addresses: the
        // weight is shared over targets, not addresses.
        let targets: BTreeSet<(String, u16)> = port
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| (endpoint_name(e.address, e.hostname.as_deref(), name), e.port))
            .collect();
        let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(1).max(1);
        for (target, port_number) in targets {
            let srv = RecordData::Srv { priority: 0, weight, port: port_number, target };
            zone.add(srv_name(&port.name, port.protocol, name), srv);
        }
    }
}

/// An endpoint's name under its Service's: its hostname, else its address with dashes.
fn endpoint_name(address: IpAddr, hostname: Option<&str>, service: &str) -> String {
    match hostname {
        Some(hostname) => format!("{hostname}.{service}"),
        None => format!("{}.{service}", dashed(address)),
    }
}

/// `_<port>._<protocol>.<service name>`.
fn srv_name(port: &str, protocol: Protocol, service: &str) -> String {
    format!("_{port}._{}.{service}", protocol.to_string().to_ascii_lowercase())
}

/// An address as one DNS label: `10-0-0-1`, or for IPv6 its text with `-` for `:`.
fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse-lookup name of an address (`1.0.0.10.in-addr.arpa`, nibbles for IPv6).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

/// The names between `name` (excluded) and `apex` (excluded).
fn ancestors(name: &str, apex: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = name;
    while let Some((_, parent)) = rest.split_once('.') {
        if parent == apex || parent.len() <= apex.len() {
            break;
        }
        found.push(parent.to_owned());
        rest = parent;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_and_dashed_labels() {
        let v4: IpAddr = "10.96.0.10".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(reverse_name(v4), "10.0.96.10.in-addr.arpa");
        assert_eq!(dashed(v4), "10-96-0-10");
        let v6: IpAddr = "fd00::1".parse().unwrap_or(IpAddr::from([0u16; 8]));
        assert_eq!(
            reverse_name(v6),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"
        );
        assert_eq!(dashed(v6), "fd00--1");
        assert_eq!(
            ancestors("a.b.svc.cluster.local", "cluster.local"),
            ["b.svc.cluster.local", "svc.cluster.local"]
        );
        assert_eq!(canonical("Web.Default.SVC.cluster.local."), "web.default.svc.cluster.local");
    }
}
