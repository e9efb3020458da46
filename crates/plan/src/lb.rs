//! LoadBalancer addresses, handed out as MetalLB's controller hands them out, from the
//! `IPAddressPool`s a bare-metal cluster already has (or, without any, from the
//! `--lb-pool` flag's CIDRs, as before): pools tried by `serviceAllocation.priority`, only
//! those whose namespace and Service selectors match, `autoAssign: false` pools only when
//! asked for by name or address, `avoidBuggyIPs`, addresses asked for with
//! `spec.loadBalancerIP` or the `metallb.io/loadBalancerIPs` annotation, a pool named with
//! `metallb.io/address-pool`, and addresses shared by Services with the same
//! `metallb.io/allow-shared-ip` key when their ports do not clash.
//!
//! Pure, as every allocation: a Service keeps the address it had while it is still allowed,
//! and gives it back when it goes or stops being a LoadBalancer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use portico_model::metallb::AddressRange;
use portico_model::selector::selector_matches;
use portico_model::{Diagnostic, ObjectKey, ObjectRef, Store, Stored};

use crate::families::IpFamily;

/// The Service annotation asking for addresses (one per family, comma-separated).
pub const LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";
/// The Service annotation naming the pool to take an address from.
pub const ADDRESS_POOL: &str = "metallb.io/address-pool";
/// The Service annotation whose equal values let Services share an address.
pub const ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";
/// The `spec.loadBalancerClass` Portico serves, beside an unset class.
pub const LOAD_BALANCER_CLASS: &str = "portico.dev/loadbalancer";

/// Whether Portico hands out this Service's LoadBalancer addresses: its
/// `spec.loadBalancerClass` is Portico's, or unset (as MetalLB serves those) unless
/// `class_only`.
pub fn serves_class(service: &Service, class_only: bool) -> bool {
    match service.spec.as_ref().and_then(|s| s.load_balancer_class.as_deref()) {
        Some(class) => class == LOAD_BALANCER_CLASS,
        None => !class_only,
    }
}

/// The addresses of a Service's `status.loadBalancer.ingress`.
pub fn status_ips(service: &Service) -> Vec<IpAddr> {
    let ingress =
        service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect()
}

/// The LoadBalancer addresses the API server holds for the Services Portico serves, as
/// [`crate::Allocations`] keeps them: in a cluster, the elected writer's decisions, which
/// every node plans from so that all of them give each Service the same addresses.
pub fn observed(store: &Store, class_only: bool) -> BTreeMap<String, Vec<IpAddr>> {
    store
        .services
        .iter()
        .filter(|(_, s)| serves_class(&s.object, class_only))
        .map(|(key, s)| (key.to_string(), status_ips(&s.object)))
        .filter(|(_, ips)| !ips.is_empty())
        .collect()
}

/// A pool addresses are handed out from.
#[derive(Clone, Debug, PartialEq)]
pub struct LbPool {
    /// The `IPAddressPool`'s name, or the flag's CIDR.
    pub name: String,
    /// The pool object's namespace and name, when it is one.
    pub object: Option<ObjectKey>,
    /// Its addresses.
    pub ranges: Vec<AddressRange>,
    /// Whether it serves Services that name no pool and no address.
    pub auto_assign: bool,
    /// Whether IPv4 addresses ending in `.0` or `.255` are left out.
    pub avoid_buggy_ips: bool,
    /// Lower first; pools without come after those with.
    pub priority: Option<i32>,
    /// Only Services of these namespaces (any when empty).
    pub namespaces: Vec<String>,
    /// Only Services of namespaces with one of these label sets (any when empty).
    pub namespace_selectors: Vec<LabelSelector>,
    /// Only Services with one of these label sets (any when empty).
    pub service_selectors: Vec<LabelSelector>,
}

impl LbPool {
    /// A pool of the `--lb-pool` flag: every address of the CIDR but the network address
    /// (and an IPv4 broadcast address), for everyone.
    fn from_flag(net: IpNet) -> LbPool {
        let first = next(net.network()).unwrap_or(net.network());
        let last = match net {
            IpNet::V4(_) => previous(net.broadcast()).unwrap_or(net.broadcast()),
            IpNet::V6(_) => net.broadcast(),
        };
        LbPool {
            name: net.to_string(),
            object: None,
            ranges: vec![AddressRange { first, last }],
            auto_assign: true,
            avoid_buggy_ips: false,
            priority: None,
            namespaces: Vec::new(),
            namespace_selectors: Vec::new(),
            service_selectors: Vec::new(),
        }
    }

    fn contains(&self, address: &IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(address)) && !(self.avoid_buggy_ips && buggy(address))
    }

    /// Whether the Service may take addresses from it (its `serviceAllocation`).
    fn serves(&self, service: &Request<'_>) -> bool {
        let matches_any = |selectors: &[LabelSelector], labels: &BTreeMap<String, String>| {
            selectors.is_empty() || selectors.iter().any(|s| selector_matches(s, labels).unwrap_or(false))
        };
        (self.namespaces.is_empty() || self.namespaces.contains(&service.key.namespace))
            && matches_any(&self.namespace_selectors, service.namespace_labels)
            && matches_any(&self.service_selectors, service.labels)
    }

    /// The lowest address of `family` that `free` accepts, if any.
    fn lowest(&self, family: IpFamily, free: impl Fn(&IpAddr) -> bool) -> Option<IpAddr> {
        for range in self.ranges.iter().filter(|r| IpFamily::of(&r.first) == family) {
            let mut at = Some(range.first);
            while let Some(address) = at.filter(|a| *a <= range.last) {
                if !(self.avoid_buggy_ips && buggy(&address)) && free(&address) {
                    return Some(address);
                }
                at = next(address);
            }
        }
        None
    }
}

/// MetalLB's "buggy" IPv4 addresses: those some old equipment takes for a network or
/// broadcast address.
fn buggy(address: &IpAddr) -> bool {
    matches!(address, IpAddr::V4(a) if matches!(a.octets()[3], 0 | 255))
}

fn next(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::from(n.to_be_bytes())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::from(n.to_be_bytes())),
    }
}

fn previous(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V4(a) => u32::from(a).checked_sub(1).map(|n| IpAddr::from(n.to_be_bytes())),
        IpAddr::V6(a) => u128::from(a).checked_sub(1).map(|n| IpAddr::from(n.to_be_bytes())),
    }
}

/// The pools: every `IPAddressPool` (a pool sharing an address with an earlier one, by
/// namespace/name, is left out with an error, as MetalLB's webhook refuses it), else the
/// flag's CIDRs.
pub fn pools(store: &Store, flag: &[IpNet], diagnostics: &mut Vec<Diagnostic>) -> Vec<LbPool> {
    if store.ip_address_pools.is_empty() {
        return flag.iter().map(|net| LbPool::from_flag(*net)).collect();
    }
    let mut out: Vec<LbPool> = Vec::new();
    'pools: for (key, stored) in &store.ip_address_pools {
        let spec = &stored.object.spec;
        let ranges: Vec<AddressRange> =
            spec.addresses.iter().filter_map(|a| AddressRange::parse(a).ok()).collect();
        for (i, range) in ranges.iter().enumerate() {
            for other in &out {
                if let Some(theirs) = other.ranges.iter().find(|r| r.overlaps(range)) {
                    let message = format!(
                        "{range} overlaps {theirs} of IPAddressPool {}; this pool is not used",
                        other.object.as_ref().map_or_else(|| other.name.clone(), ToString::to_string)
                    );
                    diagnostics.push(
                        Diagnostic::error(message)
                            .at(&stored.origin)
                            .on(ObjectRef::new("IPAddressPool", key.clone()))
                            .field(format!("spec.addresses[{i}]")),
                    );
                    continue 'pools;
                }
            }
        }
        let allocation = spec.service_allocation.clone().unwrap_or_default();
        out.push(LbPool {
            name: key.name.clone(),
            object: Some(key.clone()),
            ranges,
            auto_assign: spec.auto_assign.unwrap_or(true),
            avoid_buggy_ips: spec.avoid_buggy_ips.unwrap_or(false),
            priority: allocation.priority,
            namespaces: allocation.namespaces,
            namespace_selectors: allocation.namespace_selectors,
            service_selectors: allocation.service_selectors,
        });
    }
    out
}

/// What one LoadBalancer Service asks for.
pub struct Request<'a> {
    /// The Service.
    pub service: &'a Stored<Service>,
    /// Its namespace and name.
    pub key: ObjectKey,
    /// Its families, in order: an address is wanted for each.
    pub families: Vec<IpFamily>,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Its namespace's labels.
    pub namespace_labels: &'a BTreeMap<String, String>,
}

/// Who holds an address: owners with their sharing key and ports.
#[derive(Clone, Debug, Default)]
struct Holders {
    by_address: HashMap<IpAddr, Vec<Holder>>,
}

#[derive(Clone, Debug)]
struct Holder {
    owner: ObjectKey,
    sharing: Option<String>,
    /// (protocol, port) of every port.
    ports: BTreeSet<(String, i32)>,
    /// `externalTrafficPolicy: Local` with its selector: such Services share only with
    /// Services selecting the same Pods, as in MetalLB.
    local_selector: Option<BTreeMap<String, String>>,
}

impl Holders {
    /// Whether `holder` may take `address`; otherwise who keeps it.
    fn conflict(&self, address: &IpAddr, holder: &Holder) -> Option<&ObjectKey> {
        let held = self.by_address.get(address)?;
        held.iter()
            .find(|h| {
                h.owner != holder.owner
                    && !(h.sharing.is_some()
                        && h.sharing == holder.sharing
                        && h.ports.is_disjoint(&holder.ports)
                        && h.local_selector == holder.local_selector)
            })
            .map(|h| &h.owner)
    }

    fn take(&mut self, address: IpAddr, holder: &Holder) {
        let held = self.by_address.entry(address).or_default();
        if !held.iter().any(|h| h.owner == holder.owner) {
            held.push(holder.clone());
        }
    }
}

fn holder_of(request: &Request<'_>) -> Holder {
    let service = &request.service.object;
    let spec = service.spec.as_ref();
    let annotations = service.metadata.annotations.as_ref();
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
        .collect();
    let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
    Holder {
        owner: request.key.clone(),
        sharing: annotations.and_then(|a| a.get(ALLOW_SHARED_IP)).cloned(),
        ports,
        local_selector: local.then(|| spec.and_then(|s| s.selector.clone()).unwrap_or_default()),
    }
}

/// An address a Service asks for, and the field it asks in.
struct Asked {
    address: IpAddr,
    field: String,
}

/// The addresses `request` names: the annotation's, else `spec.loadBalancerIP`. Unreadable
/// ones are reported.
fn asked(request: &Request<'_>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Asked> {
    let service = &request.service.object;
    let annotation = service.metadata.annotations.as_ref().and_then(|a| a.get(LOAD_BALANCER_IPS));
    let (texts, field): (Vec<&str>, String) = match annotation {
        Some(list) => {
            (list.split(',').map(str::trim).collect(), format!("metadata.annotations[{LOAD_BALANCER_IPS}]"))
        }
        None => {
            match service.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).filter(|s| !s.is_empty())
            {
                Some(ip) => (vec![ip], "spec.loadBalancerIP".to_owned()),
                None => return Vec::new(),
            }
        }
    };
    let mut out: Vec<Asked> = Vec::new();
    for text in texts.into_iter().filter(|t| !t.is_empty()) {
        match text.parse::<IpAddr>() {
            Ok(address) if out.iter().any(|a| IpFamily::of(&a.address) == IpFamily::of(&address)) => {
                warn(diagnostics, request, &field, format!("{address}: one address per family; ignored"));
            }
            Ok(address) => out.push(Asked { address, field: field.clone() }),
            Err(_) => warn(diagnostics, request, &field, format!("{text:?} is not an IP address; ignored")),
        }
    }
    out
}

fn warn(diagnostics: &mut Vec<Diagnostic>, request: &Request<'_>, field: &str, message: String) {
    diagnostics.push(
        Diagnostic::warning(message)
            .at(&request.service.origin)
            .on(ObjectRef::new("Service", request.key.clone()))
            .field(field),
    );
}

/// An address given out, and its pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The address.
    pub address: IpAddr,
    /// The pool's name.
    pub pool: String,
}

/// Addresses for every request, oldest Service first (the caller's order): first what each
/// had before while it is still allowed, then what each asks for, then the lowest free
/// address of the first pool that serves it, per family. `previous` is each Service's
/// addresses of the last Plan.
pub fn assign(
    requests: &[Request<'_>],
    pools: &[LbPool],
    previous: &BTreeMap<String, Vec<IpAddr>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<ObjectKey, Vec<Assigned>> {
    let mut holders = Holders::default();
    let mut out: BTreeMap<ObjectKey, Vec<Assigned>> = BTreeMap::new();
    let order = |request: &Request<'_>| -> Vec<&LbPool> {
        let named = request.service.object.metadata.annotations.as_ref().and_then(|a| a.get(ADDRESS_POOL));
        let mut usable: Vec<&LbPool> = pools
            .iter()
            .filter(|p| p.serves(request))
            .filter(|p| named.map_or(p.auto_assign, |n| *n == p.name))
            .collect();
        usable.sort_by_key(|p| (p.priority.is_none(), p.priority, p.name.clone()));
        usable
    };
    let asked: Vec<Vec<Asked>> = requests.iter().map(|r| asked(r, diagnostics)).collect();
    let holder: Vec<Holder> = requests.iter().map(holder_of).collect();
    let give = |out: &mut BTreeMap<ObjectKey, Vec<Assigned>>,
                holders: &mut Holders,
                i: usize,
                address,
                pool: &LbPool| {
        holders.take(address, &holder[i]);
        out.entry(requests[i].key.clone()).or_default().push(Assigned { address, pool: pool.name.clone() });
    };
    let has = |out: &BTreeMap<ObjectKey, Vec<Assigned>>, i: usize, family: IpFamily| {
        out.get(&requests[i].key).is_some_and(|a| a.iter().any(|a| IpFamily::of(&a.address) == family))
    };
    // What each had, while still allowed and still what it asks for.
    for (i, request) in requests.iter().enumerate() {
        let had = previous.get(&request.key.to_string()).into_iter().flatten();
        for address in had {
            let family = IpFamily::of(address);
            let still_asked =
                asked[i].iter().all(|a| IpFamily::of(&a.address) != family || a.address == *address);
            let pool = pools.iter().find(|p| p.contains(address) && p.serves(request));
            if let Some(pool) = pool
                && request.families.contains(&family)
                && still_asked
                && !has(&out, i, family)
                && holders.conflict(address, &holder[i]).is_none()
            {
                give(&mut out, &mut holders, i, *address, pool);
            }
        }
    }
    // What each asks for.
    for (i, request) in requests.iter().enumerate() {
        for want in &asked[i] {
            let family = IpFamily::of(&want.address);
            if has(&out, i, family) {
                continue;
            }
            if !request.families.contains(&family) {
                warn(
                    diagnostics,
                    request,
                    &want.field,
                    format!("{}: the Service has no {family} family; ignored", want.address),
                );
                continue;
            }
            let Some(pool) = pools.iter().find(|p| p.contains(&want.address) && p.serves(request)) else {
                let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                warn(
                    diagnostics,
                    request,
                    &want.field,
                    format!(
                        "{} is in no pool serving this Service ({}); no address for {family}",
                        want.address,
                        names.join(", ")
                    ),
                );
                continue;
            };
            match holders.conflict(&want.address, &holder[i]) {
                Some(owner) => warn(
                    diagnostics,
                    request,
                    &want.field,
                    format!(
                        "{} is already given to Service {owner} (a shared address needs the same {ALLOW_SHARED_IP} key and other ports)",
                        want.address
                    ),
                ),
                None => give(&mut out, &mut holders, i, want.address, pool),
            }
        }
    }
    // Fresh addresses, per family, for what is still missing: a sharing Service first tries
    // the addresses of its key.
    for (i, request) in requests.iter().enumerate() {
        for family in &request.families {
            if has(&out, i, *family) || asked[i].iter().any(|a| IpFamily::of(&a.address) == *family) {
                continue;
            }
            let usable = order(request);
            let shared = holder[i].sharing.as_ref().and_then(|_| {
                let candidates: Vec<IpAddr> = holders.by_address.keys().copied().collect();
                let mut candidates: Vec<IpAddr> =
                    candidates.into_iter().filter(|a| IpFamily::of(a) == *family).collect();
                candidates.sort();
                candidates.into_iter().find_map(|address| {
                    let pool = usable.iter().find(|p| p.contains(&address))?;
                    holders.by_address[&address]
                        .iter()
                        .any(|h| h.sharing == holder[i].sharing)
                        .then_some(())
                        .filter(|()| holders.conflict(&address, &holder[i]).is_none())
                        .map(|()| (address, *pool))
                })
            });
            let fresh = shared.or_else(|| {
                usable.iter().find_map(|pool| {
                    pool.lowest(*family, |a| !holders.by_address.contains_key(a))
                        .map(|address| (address, *pool))
                })
            });
            match fresh {
                Some((address, pool)) => give(&mut out, &mut holders, i, address, pool),
                None => {
                    // A family no pool has addresses of is left out while another family
                    // got one (the flag's pool is IPv4 only); otherwise the Service waits.
                    let of_family: Vec<&str> = usable
                        .iter()
                        .filter(|p| p.ranges.iter().any(|r| IpFamily::of(&r.first) == *family))
                        .map(|p| p.name.as_str())
                        .collect();
                    let last = request.families.last() == Some(family);
                    let message = if !of_family.is_empty() {
                        format!(
                            "no free {family} address in {}; the Service stays pending",
                            of_family.join(", ")
                        )
                    } else if last && !out.contains_key(&request.key) {
                        "no address pool serves this Service; it stays pending".to_owned()
                    } else {
                        continue;
                    };
                    warn(diagnostics, request, "spec.type", message);
                }
            }
        }
    }
    out
}
