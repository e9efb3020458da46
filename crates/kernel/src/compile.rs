//! A Plan compiled to nftables for one node, in kube-proxy's nftables design (KEP-3866): the
//! destination of a new connection is looked up in verdict maps (`service-ips`,
//! `service-nodeports`), which send it to its Service port's chain; that chain picks an
//! endpoint chain at random (or by ClientIP affinity), which DNATs. Connections that have no
//! endpoint to go to are rejected or dropped in the filter hooks, before routing.
//!
//! The same destinations as the userspace proxy's `l4::table::frontends`, claimed in the same
//! order: ClusterIPs, NodePorts and LoadBalancer IPs, then HostPorts, then external IPs, the
//! first claim of a destination kept and every later one reported.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use portico_plan::endpoints::{Scope, select};
use portico_plan::{Endpoint, HostPort, IpFamily, Plan, Protocol, ServicePlan, ServicePort, TrafficPolicy};

use crate::names::{Named, fnv1a, push_address};
use crate::ruleset::{Chain, Family, Hook, Ruleset, SERVICE_TABLES, Set, SetDecl, Table, TableId};

/// Verdict map: ClusterIP, LoadBalancer IP and external IP . protocol . port → Service chain.
pub const SERVICE_IPS: &str = "service-ips";
/// Verdict map: protocol . NodePort → Service chain, for this node's NodePort addresses.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Set: this node's addresses that serve NodePorts.
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// Verdict map: address . protocol . port of a Service port without endpoints → reject or drop.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Verdict map: protocol . NodePort of a Service port without endpoints → reject or drop.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Verdict map: LoadBalancer IP . protocol . port → the chain dropping sources out of range.
pub const FIREWALL_IPS: &str = "firewall-ips";
/// Chain: the destinations served, looked up in the verdict maps.
pub const SERVICES: &str = "services";
/// Chain: HostPorts of the Pods on this node.
pub const HOSTPORTS: &str = "hostports";
/// Chain: marks a packet to be masqueraded on its way out.
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// Chain: masquerades marked packets.
pub const MASQUERADING: &str = "masquerading";
/// Set: the cluster's pod CIDRs, whose clients of a ClusterIP are not masqueraded.
pub const POD_CIDRS: &str = "pod-cidrs";
/// Set: `address . address` of every endpoint, so that a connection DNAT-ed back to the Pod
/// that opened it (hairpin) is masqueraded, else the Pod would answer itself.
pub const HAIRPIN: &str = "hairpin";
/// Chain: refuses a connection (TCP reset, else ICMP unreachable).
pub const REJECT_CHAIN: &str = "reject-chain";

/// The mark bit that asks `masquerading` to masquerade a packet (kube-proxy's).
const MASQUERADE_BIT: &str = "0x4000";

/// What the compiler may be told beyond the Plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// Masquerade every connection to a ClusterIP, as kube-proxy's `--masquerade-all`.
    pub masquerade_all: bool,
    /// Serve NodePorts on the node's loopback addresses too; kube-proxy's nftables mode does
    /// not, since DNAT from 127.0.0.0/8 needs `route_localnet`.
    pub loopback_node_ports: bool,
}

/// A destination a connection can be opened to: address, port and transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    /// Address and port; a NodePort is also claimed on the unspecified address.
    pub addr: SocketAddr,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// The ruleset of one node, and the destinations two objects both wanted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// What to put in the kernel.
    pub ruleset: Ruleset,
    /// Destinations claimed twice: the first claim is served, these are not.
    pub conflicts: Vec<(Destination, String)>,
}

/// Compiles what `node` serves of `plan`: every port of every proxied Service, in the table
/// of each of its IP families, and the HostPorts of the Pods on `node`.
pub fn compile(plan: &Plan, node: &str, options: &CompileOptions) -> Compiled {
    compile_fragments(plan, node, options).0
}

/// What one Service put in a ruleset, so that it can be taken out and put back by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// Its chains.
    pub chains: Vec<(TableId, String)>,
    /// Its elements of the shared maps: table, map, key.
    pub elements: Vec<(TableId, &'static str, String)>,
    /// Sets of its own (affinity).
    pub sets: Vec<(TableId, String)>,
    /// The destinations it holds.
    pub claims: Vec<Destination>,
    /// The endpoint addresses its rules send to, each once: what it needs in [`HAIRPIN`].
    pub endpoints: Vec<IpAddr>,
}

/// The element of [`HAIRPIN`] for an endpoint address.
pub(crate) fn hairpin_key(address: IpAddr) -> String {
    format!("{address} . {address}")
}

/// [`compile`], with what each Service of `plan.services` (by index) put in the ruleset.
pub(crate) fn compile_fragments(
    plan: &Plan,
    node: &str,
    options: &CompileOptions,
) -> (Compiled, Vec<Fragment>) {
    let mut compiler = Compiler::new(plan, node, options);
    let mut fragments = Vec::with_capacity(plan.services.len());
    for (i, service) in plan.services.iter().enumerate() {
        compiler.service(service, i);
        fragments.push(std::mem::take(&mut compiler.current));
    }
    for host_port in plan.host_ports.iter().filter(|h| h.node == node) {
        compiler.host_port(host_port);
    }
    for address in fragments.iter().flat_map(|f| &f.endpoints) {
        let main = TableId::main(Family::of(address));
        if let Some(set) = compiler.table(main).sets.get_mut(HAIRPIN) {
            set.elements.insert(hairpin_key(*address), None);
        }
    }
    compiler.current = Fragment::default();
    // externalIPs come last: any Service may claim any address there (CVE-2020-8554), so
    // they never take a destination an allocated address or a HostPort already has.
    for claim in std::mem::take(&mut compiler.external_ips) {
        let Some(fragment) = fragments.get_mut(claim.service) else { continue };
        compiler.current = std::mem::take(fragment);
        if compiler.claim(&[claim.destination], &claim.owner) {
            compiler.target(claim.table, claim.key, &claim.target, false);
        }
        *fragment = std::mem::take(&mut compiler.current);
    }
    (compiler.compiled, fragments)
}

/// One Service of `plan` compiled alone, as [`compile_fragments`] compiles it among the others
/// when no destination is claimed twice: its part of the ruleset (its chains, its own sets, its
/// elements of the shared maps, which are declared empty otherwise) and its fragment.
pub(crate) fn compile_service(
    plan: &Plan,
    node: &str,
    options: &CompileOptions,
    service: &ServicePlan,
) -> (Ruleset, Fragment) {
    let mut compiler = Compiler::new(plan, node, options);
    compiler.service(service, 0);
    for claim in std::mem::take(&mut compiler.external_ips) {
        if compiler.claim(&[claim.destination], &claim.owner) {
            compiler.target(claim.table, claim.key, &claim.target, false);
        }
    }
    let fragment = std::mem::take(&mut compiler.current);
    let part = part_of(&compiler.compiled.ruleset, [&fragment], &shared_maps(&compiler.compiled.ruleset));
    (part, fragment)
}

/// The shared maps and sets of `ruleset` (those of the skeleton), declared, without elements.
pub(crate) fn shared_maps(ruleset: &Ruleset) -> Ruleset {
    let mut shared = Ruleset::default();
    for (id, from) in &ruleset.tables {
        let table = shared.tables.entry(*id).or_default();
        for name in SHARED_SETS {
            if let Some(set) = from.sets.get(name) {
                table
                    .sets
                    .insert(name.to_owned(), Set { decl: set.decl.clone(), elements: Default::default() });
            }
        }
    }
    shared
}

/// The maps and sets every table has, shared by every Service.
const SHARED_SETS: [&str; 8] = [
    POD_CIDRS,
    SERVICE_IPS,
    NO_ENDPOINT_SERVICES,
    FIREWALL_IPS,
    SERVICE_NODEPORTS,
    NO_ENDPOINT_NODEPORTS,
    NODEPORT_IPS,
    HAIRPIN,
];

/// What `fragments` put in `from`: their chains and own sets, their elements of the shared
/// maps, on top of `shared` (both families, every shared map declared).
pub(crate) fn part_of<'f>(
    from: &Ruleset,
    fragments: impl IntoIterator<Item = &'f Fragment>,
    shared: &Ruleset,
) -> Ruleset {
    let mut part = shared.clone();
    for fragment in fragments {
        for (family, name) in &fragment.chains {
            if let Some(chain) = from.tables.get(family).and_then(|t| t.chains.get(name)) {
                part.tables.entry(*family).or_default().chains.insert(name.clone(), chain.clone());
            }
        }
        for (family, name) in &fragment.sets {
            if let Some(set) = from.tables.get(family).and_then(|t| t.sets.get(name)) {
                part.tables.entry(*family).or_default().sets.insert(name.clone(), set.clone());
            }
        }
        for (family, set, key) in &fragment.elements {
            let value =
                from.tables.get(family).and_then(|t| t.sets.get(*set)).and_then(|s| s.elements.get(key));
            if let (Some(value), Some(into)) =
                (value, part.tables.get_mut(family).and_then(|t| t.sets.get_mut(*set)))
            {
                into.elements.insert(key.clone(), value.clone());
            }
        }
    }
    part
}

/// Whether `service` has the IP family of `family` (a proxied Service always lists its own).
fn serves(service: &ServicePlan, family: Family) -> bool {
    service.ip_families.iter().any(|f| match family {
        Family::Ip => *f == IpFamily::Ipv4,
        Family::Ip6 => *f == IpFamily::Ipv6,
    })
}

/// The match of ClusterIP connections from outside the cluster's Pods, which are masqueraded so
/// that answers come back through this node (every connection when the cluster's pod CIDRs of
/// `family` are unknown or `--masquerade-all` is on), and the merged CIDRs [`POD_CIDRS`] holds.
/// One named set for all Services: an anonymous set in each Service's chain would be ten
/// thousand sets, which the kernel finds by walking a list.
fn outside_pods(plan: &Plan, family: Family, options: &CompileOptions) -> (String, Vec<IpNet>) {
    let cidrs: Vec<IpNet> = plan
        .nodes
        .iter()
        .flat_map(|n| &n.pod_cidrs)
        .filter(|c| Family::of(&c.addr()) == family)
        .copied()
        .collect();
    if options.masquerade_all || cidrs.is_empty() {
        return (String::new(), Vec::new());
    }
    (format!(" {} saddr != @{POD_CIDRS}", family.name()), IpNet::aggregate(&cidrs))
}

/// Where the packets of one destination go: a chain, or, without endpoints, a verdict.
#[derive(Clone)]
enum Target {
    /// `goto` this chain, from `service-ips` or `service-nodeports`.
    Chain(String),
    /// This verdict, from `no-endpoint-services` or `no-endpoint-nodeports`.
    NoEndpoints(&'static str),
}

/// An external IP waiting for the other claims.
struct ExternalIp {
    /// The index of its Service in the Plan.
    service: usize,
    destination: Destination,
    /// The Service table of its Service.
    table: TableId,
    key: String,
    target: Target,
    owner: String,
}

/// The chains and sets of one endpoint of one Service port.
struct EndpointNames {
    chain: String,
    affinity: String,
}

/// What every chain of one Service port in one family is named after.
struct ServicePortChains {
    family: Family,
    /// The Service table its chains are in.
    table: TableId,
    proto: &'static str,
    named: Named,
    /// Every endpoint chosen cluster-wide.
    service_chain: String,
    /// The endpoints on this node, for Local policies.
    local_chain: String,
    affinity: Option<u32>,
    cluster_ip: Option<IpAddr>,
}

/// The index of `family` in arrays in [`Family::ALL`] order.
fn slot(family: Family) -> usize {
    usize::from(family == Family::Ip6)
}

/// The ruleset being built for one node, and who claimed each destination so far.
struct Compiler<'p> {
    /// What the Service being compiled puts in the ruleset.
    current: Fragment,
    node: &'p str,
    zone: Option<&'p str>,
    node_addresses: &'p [IpAddr],
    loopback_node_ports: bool,
    /// Per family (see [`slot`]), see [`outside_pods`].
    outside_pods: [(String, Vec<IpNet>); 2],
    compiled: Compiled,
    /// Destination → who has it, for conflicts.
    claims: HashMap<Destination, String>,
    external_ips: Vec<ExternalIp>,
}

impl<'p> Compiler<'p> {
    /// A compiler for `node`, with the skeleton of both tables in place.
    fn new(plan: &'p Plan, node: &'p str, options: &CompileOptions) -> Self {
        let this = plan.nodes.iter().find(|n| n.name == node);
        let node_addresses: &[IpAddr] = this.map(|n| n.addresses.as_slice()).unwrap_or_default();
        let mut compiler = Compiler {
            node,
            zone: this.and_then(|n| n.zone.as_deref()),
            node_addresses,
            loopback_node_ports: options.loopback_node_ports,
            outside_pods: Family::ALL.map(|family| outside_pods(plan, family, options)),
            compiled: Compiled::default(),
            claims: HashMap::new(),
            external_ips: Vec::new(),
            current: Fragment::default(),
        };
        for family in Family::ALL {
            compiler.skeleton(family);
            for part in 1..=SERVICE_TABLES {
                compiler.service_skeleton(TableId { family, part });
            }
        }
        compiler.current = Fragment::default();
        compiler
    }

    /// Every port of `service` (the `index`-th of the Plan), if it is proxied.
    fn service(&mut self, service: &ServicePlan, index: usize) {
        if !service.proxied {
            return;
        }
        for port in &service.ports {
            for family in Family::ALL.into_iter().filter(|f| serves(service, *f)) {
                self.service_port(service, port, family, index);
            }
        }
    }

    fn table(&mut self, id: TableId) -> &mut Table {
        self.compiled.ruleset.tables.entry(id).or_default()
    }

    fn chain(&mut self, id: TableId, name: &str, hook: Option<Hook>, rules: Vec<String>) {
        self.table(id).chains.insert(name.to_owned(), Chain { hook, rules });
        self.current.chains.push((id, name.to_owned()));
    }

    fn element(&mut self, id: TableId, set: &'static str, key: String, value: Option<String>) {
        if let Some(into) = self.table(id).sets.get_mut(set) {
            into.elements.insert(key.clone(), value);
            self.current.elements.push((id, set, key));
        }
    }

    /// Claims every destination of `wanted` for `owner`, or none when one is taken.
    fn claim(&mut self, wanted: &[Destination], owner: &str) -> bool {
        let mut free = true;
        for destination in wanted {
            if let Some(first) = self.claims.get(destination) {
                let message = format!("{owner} wants {destination}, already used by {first}");
                self.compiled.conflicts.push((*destination, message));
                free = false;
            }
        }
        if free {
            self.claims.extend(wanted.iter().map(|d| (*d, owner.to_owned())));
            self.current.claims.extend_from_slice(wanted);
        }
        free
    }

    /// Sends `key` to `target` through the Service maps (by destination address) or the
    /// NodePort maps of the Service table `table`; without endpoints, through the main table's.
    fn target(&mut self, table: TableId, key: String, target: &Target, node_port: bool) {
        let (served, unserved) = match node_port {
            false => (SERVICE_IPS, NO_ENDPOINT_SERVICES),
            true => (SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS),
        };
        match target {
            Target::Chain(chain) => self.element(table, served, key, Some(format!("goto {chain}"))),
            Target::NoEndpoints(verdict) => {
                self.element(TableId::main(table.family), unserved, key, Some((*verdict).to_owned()));
            }
        }
    }

    /// The chains and maps of a family's main table, whatever the Plan: the filter hooks (the
    /// firewall, refusals without endpoints), HostPorts and masquerading.
    fn skeleton(&mut self, family: Family) {
        let main = TableId::main(family);
        let new = "ct state new jump";
        let into_host_ports = vec![format!("jump {HOSTPORTS}")];
        self.chain(main, "nat-prerouting", hook("nat", "prerouting", "dstnat"), into_host_ports.clone());
        self.chain(main, "nat-output", hook("nat", "output", "-100"), into_host_ports);
        self.chain(
            main,
            "nat-postrouting",
            hook("nat", "postrouting", "srcnat"),
            vec![format!("jump {MASQUERADING}")],
        );
        // Before DNAT, so that the firewall sees the LoadBalancer IP the client asked for.
        self.chain(
            main,
            "filter-prerouting",
            hook("filter", "prerouting", "dstnat - 10"),
            vec![format!("{new} firewall-check")],
        );
        self.chain(
            main,
            "filter-input",
            hook("filter", "input", "-110"),
            vec![format!("{new} nodeport-endpoints-check"), format!("{new} service-endpoints-check")],
        );
        self.chain(
            main,
            "filter-forward",
            hook("filter", "forward", "-110"),
            vec![format!("{new} service-endpoints-check")],
        );
        self.chain(
            main,
            "filter-output",
            hook("filter", "output", "-110"),
            vec![format!("{new} service-endpoints-check"), format!("{new} firewall-check")],
        );
        let (by_address, by_node_port) = lookups(family);
        self.chain(main, "firewall-check", None, vec![format!("{by_address} @{FIREWALL_IPS}")]);
        self.chain(
            main,
            "service-endpoints-check",
            None,
            vec![format!("{by_address} @{NO_ENDPOINT_SERVICES}")],
        );
        self.chain(
            main,
            "nodeport-endpoints-check",
            None,
            vec![format!("{by_node_port} @{NO_ENDPOINT_NODEPORTS}")],
        );
        self.chain(main, HOSTPORTS, None, Vec::new());
        let ip = family.name();
        self.chain(
            main,
            MASQUERADING,
            None,
            vec![
                format!("ct status dnat {ip} saddr . {ip} daddr @{HAIRPIN} masquerade fully-random"),
                format!("meta mark & {MASQUERADE_BIT} == 0 return"),
                format!("meta mark set meta mark ^ {MASQUERADE_BIT}"),
                "masquerade fully-random".to_owned(),
            ],
        );
        self.mark_for_masquerade(main);
        let reject = vec!["meta l4proto tcp reject with tcp reset".to_owned(), "reject".to_owned()];
        self.chain(main, REJECT_CHAIN, None, reject);

        let (by_address, by_node_port) = map_keys(family);
        let sets = &mut self.table(main).sets;
        sets.insert(NO_ENDPOINT_SERVICES.to_owned(), verdict_map(by_address.clone()));
        sets.insert(FIREWALL_IPS.to_owned(), verdict_map(by_address));
        sets.insert(NO_ENDPOINT_NODEPORTS.to_owned(), verdict_map(by_node_port));
        self.node_port_ips(main);
        let pairs = format!("{0} . {0}", family.addr_type());
        let hairpin =
            Set { decl: SetDecl { key: pairs, ..SetDecl::default() }, elements: Default::default() };
        self.table(main).sets.insert(HAIRPIN.to_owned(), hairpin);
    }

    /// The chains and maps of a Service table, whatever the Plan: its own NAT hooks looking up
    /// the ClusterIPs, LoadBalancer IPs, external IPs and NodePorts of its Services.
    fn service_skeleton(&mut self, id: TableId) {
        let family = id.family;
        let into_services = vec![format!("jump {SERVICES}")];
        self.chain(id, "nat-prerouting", hook("nat", "prerouting", "dstnat"), into_services.clone());
        self.chain(id, "nat-output", hook("nat", "output", "-100"), into_services);
        let (by_address, by_node_port) = lookups(family);
        let rules =
            vec![format!("{by_address} @{SERVICE_IPS}"), format!("{by_node_port} @{SERVICE_NODEPORTS}")];
        self.chain(id, SERVICES, None, rules);
        self.mark_for_masquerade(id);
        let (by_address, by_node_port) = map_keys(family);
        let sets = &mut self.table(id).sets;
        sets.insert(SERVICE_IPS.to_owned(), verdict_map(by_address));
        sets.insert(SERVICE_NODEPORTS.to_owned(), verdict_map(by_node_port));
        self.node_port_ips(id);
        let pod_cidrs = Set {
            decl: SetDecl {
                key: family.addr_type().to_owned(),
                flags: vec!["interval"],
                ..SetDecl::default()
            },
            elements: self.outside_pods[slot(family)].1.iter().map(|c| (c.to_string(), None)).collect(),
        };
        self.table(id).sets.insert(POD_CIDRS.to_owned(), pod_cidrs);
    }

    fn mark_for_masquerade(&mut self, id: TableId) {
        self.chain(
            id,
            MARK_FOR_MASQUERADE,
            None,
            vec![format!("meta mark set meta mark | {MASQUERADE_BIT}")],
        );
    }

    /// The set of this node's addresses serving NodePorts.
    fn node_port_ips(&mut self, id: TableId) {
        let elements = self.node_port_addresses(id.family).map(|ip| (ip.to_string(), None)).collect();
        let decl = SetDecl { key: id.family.addr_type().to_owned(), ..SetDecl::default() };
        self.table(id).sets.insert(NODEPORT_IPS.to_owned(), Set { decl, elements });
    }

    /// One port of one Service in one family: its chains and its destinations.
    fn service_port(&mut self, service: &ServicePlan, port: &ServicePort, family: Family, index: usize) {
        let of_family = |e: &Endpoint| Family::of(&e.address) == family;
        // Single-stack Services (most) need no copy of their endpoints.
        let endpoints: Cow<'_, [Endpoint]> = match port.endpoints.iter().all(of_family) {
            true => Cow::Borrowed(&port.endpoints),
            false => Cow::Owned(port.endpoints.iter().filter(|e| of_family(e)).cloned().collect()),
        };
        let internal_local = service.internal_traffic_policy == TrafficPolicy::Local;
        let external_local = service.external_traffic_policy == TrafficPolicy::Local;
        let cluster = select(&endpoints, Scope::Cluster { node: self.node, zone: self.zone });
        let local = match internal_local || external_local {
            true => select(&endpoints, Scope::Local { node: self.node }),
            false => Vec::new(),
        };
        let proto = nft_protocol(port.protocol);
        let port_name = if port.name.is_empty() { port.port.to_string() } else { port.name.clone() };
        let named = Named::new(format!("{}/{}/{proto}/{port_name}", service.key.namespace, service.key.name));
        let sp = ServicePortChains {
            family,
            table: service_table(service, family),
            proto,
            service_chain: named.with_prefix("service"),
            local_chain: named.with_prefix("local"),
            affinity: service.session_affinity_timeout,
            cluster_ip: service.cluster_ips.iter().copied().find(|a| Family::of(a) == family),
            named,
        };

        let mut names = HashMap::with_capacity(cluster.len());
        for endpoint in cluster.iter().chain(&local) {
            if let Entry::Vacant(entry) = names.entry((endpoint.address, endpoint.port)) {
                if !self.current.endpoints.contains(&endpoint.address) {
                    self.current.endpoints.push(endpoint.address);
                }
                // Affinity needs a chain per endpoint, to remember the client there; without
                // it, the Service's chain DNATs itself, which halves what nft and the kernel
                // read for ten thousand Services.
                if sp.affinity.is_some() {
                    entry.insert(Some(self.endpoint_chain(&sp, endpoint)));
                } else {
                    entry.insert(None);
                }
            }
        }
        if !cluster.is_empty() {
            let rules = self.dispatch(&sp, port.port, &cluster, &names, !internal_local);
            self.chain(sp.table, &sp.service_chain, None, rules);
        }
        if !local.is_empty() {
            let rules = self.dispatch(&sp, port.port, &local, &names, internal_local);
            self.chain(sp.table, &sp.local_chain, None, rules);
        }

        // Without endpoints, a connection is refused; with endpoints elsewhere only (a Local
        // policy), it is dropped, as kube-proxy does, since another node may serve it.
        let unserved = if cluster.is_empty() { "goto reject-chain" } else { "drop" };
        if let Some(address) = sp.cluster_ip {
            let target = match (internal_local, cluster.is_empty(), local.is_empty()) {
                (false, false, _) => Target::Chain(sp.service_chain.clone()),
                (true, _, false) => Target::Chain(sp.local_chain.clone()),
                _ => Target::NoEndpoints(unserved),
            };
            let destination =
                Destination { addr: SocketAddr::new(address, port.port), protocol: port.protocol };
            if self.claim(&[destination], &format!("ClusterIP {}", service.key)) {
                self.target(sp.table, address_key(address, proto, port.port), &target, false);
            }
        }
        let external = if external_local { &local } else { &cluster };
        let target = match external.is_empty() {
            true => Target::NoEndpoints(unserved),
            false => Target::Chain(sp.named.with_prefix("external")),
        };
        self.external(service, port, &sp, target, external_local, index);
    }

    /// The chain of one endpoint: hairpin masquerading, affinity, DNAT.
    fn endpoint_chain(&mut self, sp: &ServicePortChains, endpoint: &Endpoint) -> EndpointNames {
        let ip = sp.family.name();
        let mut readable = String::with_capacity(sp.named.readable().len() + 48);
        readable.push_str(sp.named.readable());
        readable.push_str("__");
        push_address(&mut readable, endpoint.address);
        let _ = write!(readable, "/{}", endpoint.port);
        let named = match sp.affinity {
            Some(timeout) => Named::salted(readable, timeout),
            None => Named::new(readable),
        };
        let names =
            EndpointNames { chain: named.with_prefix("endpoint"), affinity: named.with_prefix("affinity") };
        let mut rules = Vec::with_capacity(2);
        if let Some(timeout) = sp.affinity {
            rules.push(format!("update @{} {{ {ip} saddr }}", names.affinity));
            let decl = SetDecl {
                key: sp.family.addr_type().to_owned(),
                value: None,
                flags: vec!["dynamic", "timeout"],
                timeout: Some(timeout),
            };
            self.table(sp.table)
                .sets
                .insert(names.affinity.clone(), Set { decl, elements: Default::default() });
            self.current.sets.push((sp.table, names.affinity.clone()));
        }
        rules.push(dnat(sp.proto, endpoint));
        self.chain(sp.table, &names.chain, None, rules);
        names
    }

    /// The rules choosing among `chosen`: masquerading of ClusterIP clients outside the Pods
    /// when `masquerade`, the endpoint a client has affinity with (through its chain), else
    /// one at random.
    fn dispatch(
        &self,
        sp: &ServicePortChains,
        port: u16,
        chosen: &[&Endpoint],
        names: &HashMap<(IpAddr, u16), Option<EndpointNames>>,
        masquerade: bool,
    ) -> Vec<String> {
        let ip = sp.family.name();
        let mut rules = Vec::with_capacity(chosen.len() * 2 + 1);
        if let Some(address) = sp.cluster_ip.filter(|_| masquerade) {
            let outside = &self.outside_pods[slot(sp.family)].0;
            rules.push(format!(
                "{ip} daddr {address} {} dport {port}{outside} jump {MARK_FOR_MASQUERADE}",
                sp.proto
            ));
        }
        let chains: Vec<&EndpointNames> =
            chosen.iter().filter_map(|e| names.get(&(e.address, e.port))?.as_ref()).collect();
        rules.extend(chains.iter().map(|n| format!("{ip} saddr @{} goto {}", n.affinity, n.chain)));
        // One draw per endpoint, each among those left (as kube-proxy's iptables mode): the
        // first with 1/N, the next with 1/(N-1) of what remains, the last always, so each gets
        // 1/N. An anonymous `numgen … vmap` per Service would be one set each, and the kernel
        // names and finds sets by walking a list: a full sync of 10,000 Services took 49 s.
        for (i, endpoint) in chosen.iter().enumerate() {
            let to = match names.get(&(endpoint.address, endpoint.port)) {
                Some(Some(chain)) => format!("goto {}", chain.chain),
                _ => dnat(sp.proto, endpoint),
            };
            rules.push(match chosen.len() - i {
                1 => to,
                left => format!("numgen random mod {left} 0 {to}"),
            });
        }
        rules
    }

    /// NodePort, LoadBalancer IPs (behind their source ranges) and external IPs (claimed
    /// later), all sent to `target`: the external chain when it has endpoints.
    fn external(
        &mut self,
        service: &ServicePlan,
        port: &ServicePort,
        sp: &ServicePortChains,
        target: Target,
        external_local: bool,
        index: usize,
    ) {
        let family = sp.family;
        let of_family = |addresses: &[IpAddr]| -> Vec<IpAddr> {
            addresses.iter().copied().filter(|a| Family::of(a) == family).collect()
        };
        let load_balancer_ips = of_family(&service.load_balancer_ips);
        let external_ips = of_family(&service.external_ips);
        if port.node_port.is_none() && load_balancer_ips.is_empty() && external_ips.is_empty() {
            return;
        }
        if let Target::Chain(chain) = &target {
            let rules = match external_local {
                // Connections from the node itself are not external: they go anywhere,
                // masqueraded so that answers come back here.
                true => vec![
                    format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"),
                    format!("fib saddr type local goto {}", sp.service_chain),
                    format!("goto {}", sp.local_chain),
                ],
                false => vec![format!("jump {MARK_FOR_MASQUERADE}"), format!("goto {}", sp.service_chain)],
            };
            self.chain(sp.table, chain, None, rules);
        }
        let at = |address: IpAddr, number: u16| Destination {
            addr: SocketAddr::new(address, number),
            protocol: port.protocol,
        };
        if let Some(node_port) = port.node_port {
            let unspecified = match family {
                Family::Ip => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                Family::Ip6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let wanted: Vec<Destination> = std::iter::once(unspecified)
                .chain(self.node_port_addresses(family))
                .map(|a| at(a, node_port))
                .collect();
            if self.claim(&wanted, &format!("NodePort {}", service.key)) {
                self.target(sp.table, format!("{} . {node_port}", sp.proto), &target, true);
            }
        }
        let firewall = (!service.load_balancer_source_ranges.is_empty() && !load_balancer_ips.is_empty())
            .then(|| self.firewall(service, sp));
        for address in load_balancer_ips {
            if self.claim(&[at(address, port.port)], &format!("LoadBalancer {}", service.key)) {
                let key = address_key(address, sp.proto, port.port);
                if let Some(firewall) = &firewall {
                    let main = TableId::main(family);
                    self.element(main, FIREWALL_IPS, key.clone(), Some(format!("goto {firewall}")));
                }
                self.target(sp.table, key, &target, false);
            }
        }
        for address in external_ips {
            self.external_ips.push(ExternalIp {
                destination: at(address, port.port),
                table: sp.table,
                key: address_key(address, sp.proto, port.port),
                target: target.clone(),
                owner: format!("ExternalIP {}", service.key),
                service: index,
            });
        }
    }

    /// The chain dropping clients outside `loadBalancerSourceRanges`.
    fn firewall(&mut self, service: &ServicePlan, sp: &ServicePortChains) -> String {
        let chain = sp.named.with_prefix("firewall");
        let ranges: Vec<IpNet> = service
            .load_balancer_source_ranges
            .iter()
            .filter(|r| Family::of(&r.addr()) == sp.family)
            .copied()
            .collect();
        // Each range lets its clients on (back to the hook that jumped here); the rest are
        // dropped. Ranges only of the other family admit no client of this one. Rules rather
        // than a set: an anonymous set per Service is a set the kernel finds by walking a list.
        let mut rules: Vec<String> = IpNet::aggregate(&ranges)
            .iter()
            .map(|range| format!("{} saddr {range} return", sp.family.name()))
            .collect();
        rules.push("drop".to_owned());
        self.chain(TableId::main(sp.family), &chain, None, rules);
        chain
    }

    /// This node's addresses of `family` that serve NodePorts.
    fn node_port_addresses(&self, family: Family) -> impl Iterator<Item = IpAddr> + '_ {
        let loopback = self.loopback_node_ports;
        self.node_addresses
            .iter()
            .copied()
            .filter(move |a| Family::of(a) == family && (loopback || !a.is_loopback()))
    }

    /// A HostPort, as the CNI portmap plugin opens it: connections to the node (or only to its
    /// `hostIP`) DNAT-ed to the Pod, masqueraded when the Pod calls itself through it or when
    /// they come from the node's loopback, whose address the Pod could not answer.
    fn host_port(&mut self, host_port: &HostPort) {
        let family = Family::of(&host_port.pod_ip);
        // A Pod address of one family cannot be reached through a host address of the other.
        if host_port.host_ip.is_some_and(|h| Family::of(&h) != family) {
            return;
        }
        let addresses: Vec<IpAddr> = match host_port.host_ip {
            Some(h) => vec![h],
            None => self.node_addresses.iter().copied().filter(|a| Family::of(a) == family).collect(),
        };
        let wanted: Vec<Destination> = addresses
            .iter()
            .map(|a| Destination {
                addr: SocketAddr::new(*a, host_port.host_port),
                protocol: host_port.protocol,
            })
            .collect();
        if !self.claim(&wanted, &format!("HostPort {}", host_port.pod)) {
            return;
        }
        let ip = family.name();
        let proto = nft_protocol(host_port.protocol);
        let mut readable = format!("{}/{}/{proto}/", host_port.pod.namespace, host_port.pod.name);
        if let Some(h) = host_port.host_ip {
            push_address(&mut readable, h);
            readable.push('/');
        }
        let _ = write!(readable, "{}", host_port.host_port);
        let chain = Named::new(readable).with_prefix("hostport");
        let loopback = match family {
            Family::Ip => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Family::Ip6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        let rules = vec![
            format!("{ip} saddr {} jump {MARK_FOR_MASQUERADE}", host_port.pod_ip),
            format!("{ip} saddr {loopback} jump {MARK_FOR_MASQUERADE}"),
            format!(
                "meta l4proto {proto} dnat to {}",
                SocketAddr::new(host_port.pod_ip, host_port.container_port)
            ),
        ];
        self.chain(TableId::main(family), &chain, None, rules);
        let to = match host_port.host_ip {
            Some(h) => format!("{ip} daddr {h}"),
            None => "fib daddr type local".to_owned(),
        };
        let rule = format!("{to} {proto} dport {} goto {chain}", host_port.host_port);
        self.table(TableId::main(family)).chains.entry(HOSTPORTS.to_owned()).or_default().rules.push(rule);
    }
}

/// A base chain's hook.
fn hook(kind: &'static str, hook: &'static str, priority: &'static str) -> Option<Hook> {
    Some(Hook { kind, hook, priority })
}

/// The lookups by destination (address . protocol . port) and by NodePort (this node's
/// addresses, protocol . port), each ending in `vmap` before the map's name.
fn lookups(family: Family) -> (String, String) {
    let ip = family.name();
    (
        format!("{ip} daddr . meta l4proto . th dport vmap"),
        format!("fib daddr type local {ip} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap"),
    )
}

/// The key types of the maps by destination and by NodePort.
fn map_keys(family: Family) -> (String, String) {
    (format!("{} . inet_proto . inet_service", family.addr_type()), "inet_proto . inet_service".to_owned())
}

fn verdict_map(key: String) -> Set {
    Set {
        decl: SetDecl { key, value: Some("verdict"), flags: Vec::new(), timeout: None },
        elements: Default::default(),
    }
}

/// The Service table of `service`: its name hashed over the [`SERVICE_TABLES`], so that it
/// stays there whatever else changes.
fn service_table(service: &ServicePlan, family: Family) -> TableId {
    let hash = fnv1a(format!("{}/{}", service.key.namespace, service.key.name).as_bytes());
    let part = u8::try_from(hash % u64::from(SERVICE_TABLES)).unwrap_or(0) + 1;
    TableId { family, part }
}

/// A key of the maps by destination address.
fn address_key(address: IpAddr, proto: &str, port: u16) -> String {
    format!("{address} . {proto} . {port}")
}

/// The statement sending a connection to `endpoint`.
fn dnat(proto: &str, endpoint: &Endpoint) -> String {
    format!("meta l4proto {proto} dnat to {}", SocketAddr::new(endpoint.address, endpoint.port))
}

/// A protocol as nft names it.
fn nft_protocol(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}
