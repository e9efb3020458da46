//! Compiling only what changed. A Plan is made anew for every change, but between two Plans
//! most Services are equal; compiling and comparing tens of thousands of them again would cost
//! far more than the one that changed. So the compiler remembers, per Service, the Service it
//! compiled and what it put in the ruleset, and gives the applier only the part to replace.
//!
//! Everything is compiled again when what every Service depends on changes (this node's
//! addresses and zone, the cluster's pod CIDRs, the options, this node's HostPorts), when two
//! objects claim one destination (who wins depends on the order of all of them), and when
//! nothing is known of the kernel yet.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use portico_model::ObjectKey;
use portico_plan::{HostPort, NodePlan, Plan, ServicePlan};

use crate::compile::{
    CompileOptions, Compiled, Destination, Fragment, HAIRPIN, compile_fragments, compile_service,
    hairpin_key, part_of, shared_maps,
};
use crate::ruleset::{Family, Ruleset, TableId};

/// What a new Plan changes in the ruleset.
#[derive(Debug)]
pub enum Change {
    /// Nothing: every Service is as before.
    Unchanged,
    /// Everything compiled again.
    Full(Compiled),
    /// Only these Services: replace the part `old` of the ruleset with `new`.
    Parts {
        /// What the changed and removed Services had in the ruleset.
        old: Ruleset,
        /// What the changed and added Services have now.
        new: Ruleset,
        /// How many Services changed.
        services: usize,
    },
}

/// What every Service's rules depend on besides the Service.
#[derive(Clone, Debug, PartialEq)]
struct Context {
    node: Option<NodePlan>,
    pod_cidrs: Vec<IpNet>,
    options: CompileOptions,
    host_ports: Vec<HostPort>,
}

impl Context {
    fn of(plan: &Plan, node: &str, options: &CompileOptions) -> Self {
        Context {
            node: plan.nodes.iter().find(|n| n.name == node).cloned(),
            pod_cidrs: plan.nodes.iter().flat_map(|n| &n.pod_cidrs).copied().collect(),
            options: options.clone(),
            host_ports: plan.host_ports.iter().filter(|h| h.node == node).cloned().collect(),
        }
    }
}

/// What was compiled last.
struct Remembered {
    context: Context,
    /// Each Service as compiled, and what it put in the ruleset.
    services: HashMap<ObjectKey, (ServicePlan, Fragment)>,
    /// Who holds each destination.
    claims: HashMap<Destination, ObjectKey>,
    /// The shared maps, declared empty.
    shared: Ruleset,
    /// How many Services send to each endpoint address: its hairpin element stays while one does.
    hairpin: HashMap<IpAddr, usize>,
}

/// A compiler for one node that remembers what it compiled.
pub struct Incremental {
    node: String,
    options: CompileOptions,
    last: Option<Remembered>,
}

/// More changed Services than this share of all, and compiling everything is as cheap.
const MOST: usize = 4;

impl Incremental {
    /// Nothing compiled yet.
    pub fn new(node: impl Into<String>, options: CompileOptions) -> Self {
        Incremental { node: node.into(), options, last: None }
    }

    /// Forgets what was compiled: the next update compiles everything (after a sync that may
    /// not have gone in).
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// What `plan` changes, given what the kernel holds (`None` when not known: everything is
    /// compiled).
    pub fn update(&mut self, plan: &Plan, kernel: Option<&Ruleset>) -> Change {
        let context = Context::of(plan, &self.node, &self.options);
        if let (Some(last), Some(kernel)) = (&mut self.last, kernel)
            && last.context == context
            && let Some(change) = parts(last, plan, &self.node, &self.options, kernel)
        {
            return change;
        }
        let (compiled, fragments) = compile_fragments(plan, &self.node, &self.options);
        // Who wins a destination claimed twice depends on every claim's order: such Plans are
        // compiled whole every time.
        self.last = compiled.conflicts.is_empty().then(|| {
            let mut claims = HashMap::new();
            let mut hairpin: HashMap<IpAddr, usize> = HashMap::new();
            let mut services = HashMap::with_capacity(plan.services.len());
            for (service, fragment) in plan.services.iter().zip(fragments) {
                claims.extend(fragment.claims.iter().map(|d| (*d, service.key.clone())));
                for address in &fragment.endpoints {
                    *hairpin.entry(*address).or_default() += 1;
                }
                services.insert(service.key.clone(), (service.clone(), fragment));
            }
            Remembered { context, services, claims, shared: shared_maps(&compiled.ruleset), hairpin }
        });
        Change::Full(compiled)
    }
}

/// The part of the ruleset the changed Services replace, or `None` when everything must be
/// compiled again (too many changed, or a destination now claimed twice).
fn parts(
    last: &mut Remembered,
    plan: &Plan,
    node: &str,
    options: &CompileOptions,
    kernel: &Ruleset,
) -> Option<Change> {
    let mut changed: Vec<&ServicePlan> = Vec::new();
    let mut present: HashSet<&ObjectKey> = HashSet::with_capacity(plan.services.len());
    for service in &plan.services {
        present.insert(&service.key);
        if last.services.get(&service.key).is_none_or(|(was, _)| was != service) {
            changed.push(service);
        }
    }
    let removed: Vec<ObjectKey> = last.services.keys().filter(|k| !present.contains(k)).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        return Some(Change::Unchanged);
    }
    if (changed.len() + removed.len()) * MOST > plan.services.len().max(1) {
        return None;
    }
    let compiled: Vec<(&ServicePlan, Ruleset, Fragment)> = changed
        .iter()
        .map(|service| {
            let (part, fragment) = compile_service(plan, node, options, service);
            (*service, part, fragment)
        })
        .collect();
    // A destination another Service holds, or two changed Services want: compiled whole.
    let leaving: HashSet<&ObjectKey> = changed.iter().map(|s| &s.key).chain(&removed).collect();
    let mut wanted: HashSet<Destination> = HashSet::new();
    for (service, _, fragment) in &compiled {
        for destination in &fragment.claims {
            let held = last
                .claims
                .get(destination)
                .is_some_and(|owner| owner != &service.key && !leaving.contains(owner));
            if held || !wanted.insert(*destination) {
                return None;
            }
        }
    }
    let old_fragments: Vec<&Fragment> =
        leaving.iter().filter_map(|key| last.services.get(*key).map(|(_, f)| f)).collect();
    let mut old = part_of(kernel, old_fragments.iter().copied(), &last.shared);
    let mut new = last.shared.clone();
    // Hairpin elements are shared by every Service sending to an address: one goes when the
    // last of them does, and comes with the first.
    let mut delta: HashMap<IpAddr, isize> = HashMap::new();
    for address in old_fragments.iter().flat_map(|f| &f.endpoints) {
        *delta.entry(*address).or_default() -= 1;
    }
    for address in compiled.iter().flat_map(|(_, _, f)| &f.endpoints) {
        *delta.entry(*address).or_default() += 1;
    }
    for (address, change) in delta {
        let before = last.hairpin.get(&address).copied().unwrap_or(0);
        let after = before.saturating_add_signed(change);
        let into = match (before, after) {
            (0, 1..) => &mut new,
            (1.., 0) => &mut old,
            _ => &mut Ruleset::default(),
        };
        if let Some(set) =
            into.tables.get_mut(&TableId::main(Family::of(&address))).and_then(|t| t.sets.get_mut(HAIRPIN))
        {
            set.elements.insert(hairpin_key(address), None);
        }
        if after == 0 {
            last.hairpin.remove(&address);
        } else {
            last.hairpin.insert(address, after);
        }
    }
    for key in &removed {
        if let Some((_, fragment)) = last.services.remove(key) {
            drop_claims(&mut last.claims, &fragment, key);
        }
    }
    let services = compiled.len() + removed.len();
    for (service, part, fragment) in compiled {
        if let Some((_, was)) = last.services.get(&service.key) {
            drop_claims(&mut last.claims, was, &service.key);
        }
        last.claims.extend(fragment.claims.iter().map(|d| (*d, service.key.clone())));
        new.replace_part(&Ruleset::default(), part);
        last.services.insert(service.key.clone(), (service.clone(), fragment));
    }
    Some(Change::Parts { old, new, services })
}

fn drop_claims(claims: &mut HashMap<Destination, ObjectKey>, fragment: &Fragment, key: &ObjectKey) {
    for destination in &fragment.claims {
        if claims.get(destination) == Some(key) {
            claims.remove(destination);
        }
    }
}
