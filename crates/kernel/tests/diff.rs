//! Diffs, cold starts and resyncs, applied to a model of the kernel that holds transactions
//! to its rules (a chain is deleted only when empty and unreferenced; rules and elements name
//! only what exists; an element is not added twice with two values), and at scale.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;

use portico_kernel::diff::{diff, resync};
use portico_kernel::ruleset::{chain_references, set_references};
use portico_kernel::{
    Command, CompileOptions, DiffOptions, Family, Ruleset, Table, TableId, Update, compile,
};
use portico_plan::Plan;
use support::{NODE, merged, plan, sequence, service};

/// What the kernel would hold; each transaction applies whole or not at all.
#[derive(Default)]
struct Kernel {
    ruleset: Ruleset,
}

impl Kernel {
    fn apply(&mut self, update: &Update<'_>) {
        for (i, transaction) in update.transactions.iter().enumerate() {
            let mut next = self.ruleset.clone();
            for command in transaction {
                if let Err(problem) = step(&mut next, command) {
                    panic!("transaction {i} refused at {command:?}: {problem}");
                }
            }
            self.ruleset = next;
        }
    }
}

fn table(r: &mut Ruleset, id: TableId) -> Result<&mut Table, String> {
    r.tables.get_mut(&id).ok_or_else(|| format!("no table {id}"))
}

/// Whether any rule or element of `t` names the chain `name`.
fn chain_used(t: &Table, name: &str) -> bool {
    let rules = t.chains.values().flat_map(|c| &c.rules).any(|r| chain_references(r).any(|c| c == name));
    rules
        || t.sets
            .values()
            .flat_map(|s| s.elements.values().flatten())
            .any(|v| chain_references(v).any(|c| c == name))
}

fn step(r: &mut Ruleset, command: &Command<'_>) -> Result<(), String> {
    match command {
        Command::AddTable(f) => {
            r.tables.entry(*f).or_default();
        }
        Command::DeleteTable(f) => {
            r.tables.remove(f).ok_or("no table to delete")?;
        }
        Command::AddChain(f, name, hook) => {
            let chain = table(r, *f)?.chains.entry((*name).to_owned()).or_default();
            if chain.hook.as_ref() != *hook && !(chain.rules.is_empty() && chain.hook.is_none()) {
                return Err(format!("chain {name} exists with another hook"));
            }
            chain.hook = hook.copied();
        }
        Command::FlushChain(f, name) => {
            table(r, *f)?.chains.get_mut(*name).ok_or("no chain to flush")?.rules.clear()
        }
        Command::DeleteChain(f, name) => {
            let t = table(r, *f)?;
            let chain = t.chains.get(*name).ok_or(format!("no chain {name} to delete"))?;
            if !chain.rules.is_empty() {
                return Err(format!("chain {name} is not empty"));
            }
            if chain_used(t, name) {
                return Err(format!("chain {name} is in use"));
            }
            t.chains.remove(*name);
        }
        Command::AddRule(f, name, rule) => {
            let t = table(r, *f)?;
            if let Some(missing) = chain_references(rule).find(|c| !t.chains.contains_key(*c)) {
                return Err(format!("rule names no chain {missing}"));
            }
            if let Some(missing) = set_references(rule).find(|s| !t.sets.contains_key(*s)) {
                return Err(format!("rule names no set {missing}"));
            }
            t.chains.get_mut(*name).ok_or(format!("no chain {name}"))?.rules.push((*rule).to_owned());
        }
        Command::AddSet(f, name, decl) => {
            let set = table(r, *f)?.sets.entry((*name).to_owned()).or_insert_with(|| portico_kernel::Set {
                decl: (*decl).clone(),
                elements: Default::default(),
            });
            if &set.decl != *decl {
                return Err(format!("set {name} exists with another declaration"));
            }
        }
        Command::FlushSet(f, name, _) => {
            table(r, *f)?.sets.get_mut(*name).ok_or("no set to flush")?.elements.clear()
        }
        Command::DeleteSet(f, name, _) => {
            let t = table(r, *f)?;
            if t.chains.values().flat_map(|c| &c.rules).any(|rule| set_references(rule).any(|s| s == *name)) {
                return Err(format!("set {name} is in use"));
            }
            t.sets.remove(*name).ok_or(format!("no set {name} to delete"))?;
        }
        Command::AddElements(f, name, _, elements) => {
            let t = table(r, *f)?;
            for (key, value) in elements {
                if let Some(missing) =
                    value.iter().flat_map(|v| chain_references(v)).find(|c| !t.chains.contains_key(*c))
                {
                    return Err(format!("element {key} names no chain {missing}"));
                }
                let set = t.sets.get_mut(*name).ok_or(format!("no set {name}"))?;
                let value = value.map(str::to_owned);
                if set.elements.get(*key).is_some_and(|v| *v != value) {
                    return Err(format!("element {key} exists with another value"));
                }
                set.elements.insert((*key).to_owned(), value);
            }
        }
        Command::DeleteElements(f, name, _, keys) => {
            let set = table(r, *f)?.sets.get_mut(*name).ok_or(format!("no set {name}"))?;
            for key in keys {
                set.elements.remove(*key).ok_or(format!("no element {key} in {name}"))?;
            }
        }
    }
    Ok(())
}

/// The chains the commands of `update` flush, make or delete.
fn touched<'u>(update: &Update<'u>) -> BTreeSet<&'u str> {
    update
        .transactions
        .iter()
        .flatten()
        .filter_map(|c| match c {
            Command::AddChain(_, n, _) | Command::FlushChain(_, n) | Command::DeleteChain(_, n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[test]
fn diffs_in_a_row_end_where_a_cold_start_does() {
    let [p1, p2, p3] = sequence();
    assert!(p1 != p2 && p2 != p3);
    let options = DiffOptions::default();
    let mut kernel = Kernel::default();
    kernel.apply(&diff(None, &p1, &options));
    assert!(kernel.ruleset == p1);
    for (from, to) in [(&p1, &p2), (&p2, &p3), (&p3, &p1), (&p1, &p3)] {
        kernel.apply(&diff(Some(from), to, &options));
        assert!(kernel.ruleset == *to, "the model differs from the desired ruleset");
    }
    // A cold start over a table some earlier run left.
    kernel.apply(&diff(None, &p2, &options));
    assert!(kernel.ruleset == p2);
    assert!(diff(Some(&p2), &p2, &options).is_empty());
}

#[test]
fn resync_rewrites_everything_but_affinity_and_repairs_hand_edits() {
    let [p1, _, p3] = sequence();
    let mut kernel = Kernel::default();
    kernel.apply(&diff(None, &p1, &DiffOptions::default()));
    // Hand edits: a chain emptied, an element and a chain deleted, a rule added.
    {
        let serving = |t: &Table| t.sets.get("service-ips").is_some_and(|s| !s.elements.is_empty());
        let part = kernel.ruleset.tables.iter().find(|(id, t)| id.family == Family::Ip && serving(t));
        let part = *part.unwrap().0;
        let t = kernel.ruleset.tables.get_mut(&part).unwrap();
        t.chains.get_mut("services").unwrap().rules.clear();
        t.sets.get_mut("service-ips").unwrap().elements.pop_first();
        let t = kernel.ruleset.tables.get_mut(&TableId::main(Family::Ip)).unwrap();
        let removable = t.chains.keys().find(|n| n.starts_with("firewall-")).unwrap().clone();
        t.sets.get_mut("firewall-ips").unwrap().elements.clear();
        t.chains.remove(&removable);
        t.chains.get_mut("filter-input").unwrap().rules.push("counter".into());
    }
    let repair = resync(Some(&p1), &p1);
    assert_eq!(repair.transactions.len(), 1, "one transaction");
    kernel.apply(&repair);
    assert!(kernel.ruleset == p1, "repaired");
    let flushed_sets: Vec<&str> = repair.transactions[0]
        .iter()
        .filter_map(|c| match c {
            Command::FlushSet(_, name, _) => Some(*name),
            _ => None,
        })
        .collect();
    assert!(flushed_sets.contains(&"service-ips"));
    assert!(!flushed_sets.iter().any(|s| s.starts_with("affinity-")), "{flushed_sets:?}");
    // After a failed transaction: from the last applied to the new desired one.
    kernel.apply(&resync(Some(&p1), &p3));
    assert!(kernel.ruleset == p3);
}

/// A Plan of one Service with the endpoints given.
fn web(endpoints: &[(&str, &str)], sticky: bool) -> Ruleset {
    let affinity = if sticky { "  sessionAffinity: ClientIP\n" } else { "" };
    let yaml = service(
        "web",
        &format!(
            "  clusterIP: 198.19.96.10\n{affinity}  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        ),
        &[("http", "TCP", 8080)],
        endpoints,
    );
    compile(&plan(&yaml), NODE, &CompileOptions::default()).ruleset
}

#[test]
fn removing_an_endpoint_rewrites_its_service_chain_and_deletes_its_own() {
    let three = [("198.18.128.1", "node-a"), ("198.18.128.2", "node-a"), ("198.18.128.3", "node-a")];
    for sticky in [false, true] {
        let before = web(&three, sticky);
        let after = web(&three[..2], sticky);
        let update = diff(Some(&before), &after, &DiffOptions::default());
        // The Service's chain is rewritten; under affinity, the endpoint's own chain goes too.
        // Its hairpin element goes with the last Service sending to it.
        let chains = touched(&update);
        assert_eq!(chains.len(), 1 + usize::from(sticky), "{chains:?}");
        assert!(chains.iter().any(|c| c.starts_with("service-") && c.ends_with("-default/web/tcp/http")));
        assert_eq!((update.chains, update.elements), (1 + usize::from(sticky), 1));
        let commands: Vec<&Command<'_>> = update.transactions.iter().flatten().collect();
        assert_eq!(
            commands
                .iter()
                .any(|c| matches!(c, Command::DeleteChain(_, n) if n.ends_with("__198.18.128.3/8080"))),
            sticky
        );
        assert!(commands.iter().any(|c| matches!(c, Command::DeleteElements(_, "hairpin", _, e) if e.as_slice() == ["198.18.128.3 . 198.18.128.3"])), "{commands:?}");
        // The remaining endpoints' affinity sets stay, with the clients they hold.
        let sets: Vec<&str> = commands
            .iter()
            .filter_map(|c| match c {
                Command::AddSet(_, n, _) | Command::FlushSet(_, n, _) | Command::DeleteSet(_, n, _) => {
                    Some(*n)
                }
                _ => None,
            })
            .collect();
        assert_eq!(sets.len(), usize::from(sticky), "only the removed endpoint's set goes: {sets:?}");
        assert!(sets.iter().all(|s| s.ends_with("__198.18.128.3/8080")), "{sets:?}");
        let mut kernel = Kernel::default();
        kernel.apply(&diff(None, &before, &DiffOptions::default()));
        kernel.apply(&update);
        assert!(kernel.ruleset == after);
    }
}

/// `count` ClusterIP Services of one port with two endpoints each, made from one planned
/// Service (planning ten thousand from YAML would take long in a debug build).
fn many(count: usize, endpoints: usize) -> Plan {
    let mut plan = plan(&service(
        "template",
        "  clusterIP: 198.19.96.10\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        &[("http", "TCP", 8080)],
        &[("198.18.128.1", "node-a")],
    ));
    let template = plan.services[0].clone();
    plan.services = (0..count)
        .map(|i| {
            let mut s = template.clone();
            s.key.name = format!("svc-{i}");
            let [a, b] = [(i >> 8) as u8, i as u8];
            s.cluster_ips = vec![IpAddr::from([10, 96, a, b])];
            let endpoint = s.ports[0].endpoints[0].clone();
            s.ports[0].endpoints = (0..endpoints)
                .map(|e| {
                    let mut e2 = endpoint.clone();
                    e2.address = IpAddr::from([10, (e as u8) + 1, a, b]);
                    e2
                })
                .collect();
            s
        })
        .collect();
    plan
}

#[test]
fn adding_a_service_among_ten_thousand_sends_a_small_script() {
    let before = compile(&many(10_000, 2), NODE, &CompileOptions::default()).ruleset;
    let after = compile(&many(10_001, 2), NODE, &CompileOptions::default()).ruleset;
    let options = DiffOptions::default();
    let cold: usize = diff(None, &after, &options).scripts().iter().map(String::len).sum();
    let update = diff(Some(&before), &after, &options);
    let bytes: usize = update.scripts().iter().map(String::len).sum();
    assert_eq!(
        (update.chains, update.elements),
        (1, 3),
        "one Service chain; its map element and its two endpoints' hairpin elements"
    );
    assert!(bytes * 5_000 < cold, "{bytes} bytes against {cold} cold");
    assert!(bytes < 2_000, "{bytes} bytes:\n{}", update.scripts().concat());
}

#[test]
fn a_large_cold_start_is_split_into_transactions_each_whole() {
    let desired = compile(&many(12_000, 2), NODE, &CompileOptions::default()).ruleset;
    let options = DiffOptions::default();
    let update = diff(None, &desired, &options);
    assert!(update.transactions.len() >= 3, "{} transactions", update.transactions.len());
    for transaction in &update.transactions {
        let elements: usize = transaction
            .iter()
            .map(|c| match c {
                Command::AddElements(_, _, _, e) => e.len(),
                _ => 0,
            })
            .sum();
        assert!(elements <= options.cold_batch, "{elements} elements in one transaction");
    }
    // Each transaction on its own is acceptable to the kernel: its elements name only
    // chains made and filled by then.
    let mut kernel = Kernel::default();
    kernel.apply(&update);
    assert!(kernel.ruleset == desired);
    let small = compile(&many(100, 2), NODE, &CompileOptions::default()).ruleset;
    let small = diff(None, &small, &options);
    assert_eq!(small.transactions.len(), 1);
}

#[test]
fn thirty_thousand_services_of_ten_endpoints_compile() {
    let plan = many(30_000, 10);
    let compiled = compile(&plan, NODE, &CompileOptions::default());
    let ip = &merged(&compiled.ruleset, Family::Ip);
    assert_eq!(ip.sets["service-ips"].elements.len(), 30_000);
    assert_eq!(ip.sets["hairpin"].elements.len(), 300_000, "one per endpoint address");
    assert!(
        ip.chains.len() > 30_000 && ip.chains.len() < 30_100,
        "a chain per Service port: {}",
        ip.chains.len()
    );
}
