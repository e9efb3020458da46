//! The rulesets in a real kernel, inside network namespaces this test makes and removes
//! (`portico-test-kernel-<pid>-…`): they load, diffs end where a cold start does, a repair
//! undoes hand edits, and packets reach a backend through a ClusterIP. Nothing is added to
//! the host's own namespace, and no namespace has a route out. Skipped without root and nft.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};

use portico_kernel::{Applier, CompileOptions, DiffOptions, Family, NftCommand, SyncKind, compile};
use support::{NODE, cluster, compiled, plan, sequence};

/// Whether this test can run: root, `ip` and `nft`.
fn able() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let runs =
        |program: &str, arg: &str| Command::new(program).arg(arg).output().is_ok_and(|o| o.status.success());
    if root && runs("nft", "--version") && runs("ip", "-V") {
        return true;
    }
    println!("skipping: needs root and nft");
    false
}

fn run(argv: &[&str]) -> Output {
    let output = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(output.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A network namespace of this test, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("portico-test-kernel-{}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    /// Runs `argv` inside the namespace.
    fn exec(&self, argv: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(argv);
        run(&all)
    }

    fn nft(&self) -> NftCommand {
        NftCommand::new(["ip", "netns", "exec", &self.name, "nft"])
    }

    /// Both `portico` tables as nft lists them, in an order that does not depend on the
    /// order things were made in: blocks sorted, elements sorted.
    fn listing(&self) -> String {
        let mut out = String::new();
        for family in Family::ALL {
            let text = self.exec(&["nft", "list", "table", family.name(), "portico"]).stdout;
            out += &normalize(&String::from_utf8(text).unwrap());
        }
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A table listing with its chains, sets and maps sorted, and each one's elements sorted.
fn normalize(listing: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in listing.lines() {
        if line.starts_with("\tchain ") || line.starts_with("\tmap ") || line.starts_with("\tset ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line.trim());
            block.push('\n');
            if line == "\t}" {
                blocks.push(sort_elements(&current.take().unwrap()));
            }
        }
    }
    blocks.sort();
    blocks.concat()
}

fn sort_elements(block: &str) -> String {
    let Some((head, rest)) = block.split_once("elements = { ") else { return block.to_owned() };
    let (elements, tail) = rest.split_once(" }").unwrap();
    let mut list: Vec<&str> = elements.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    list.sort_unstable();
    format!("{head}elements = {{ {} }}{tail}", list.join(", "))
}

#[test]
fn every_compiled_ruleset_loads() {
    if !able() {
        return;
    }
    let ns = Netns::new("load");
    let plan = plan(&cluster());
    let mut rulesets = vec![
        compiled().ruleset,
        compile(&plan, "node-b", &CompileOptions::default()).ruleset,
        compile(&plan, NODE, &CompileOptions { masquerade_all: true, loopback_node_ports: true }).ruleset,
    ];
    rulesets.extend(sequence());
    for (i, ruleset) in rulesets.into_iter().enumerate() {
        // A fresh applier each time: a cold start over whatever the last one left.
        let mut applier = Applier::new(ns.nft(), DiffOptions::default());
        let report = applier.sync(ruleset).unwrap_or_else(|e| panic!("ruleset {i}: {e}"));
        assert_eq!(report.kind, SyncKind::Cold);
        assert!(report.chains > 20 && report.elements > 10 && report.bytes > 1000, "{report:?}");
    }
    let listing = ns.listing();
    assert!(listing.contains("numgen random mod 3 vmap"), "{listing}");
}

#[test]
fn diffs_in_a_row_list_as_a_cold_start_and_a_repair_undoes_hand_edits() {
    if !able() {
        return;
    }
    let [p1, p2, p3] = sequence();
    let by_diffs = Netns::new("diffs");
    let cold = Netns::new("cold");
    let mut applier = Applier::new(by_diffs.nft(), DiffOptions::default());
    assert_eq!(applier.sync(p1.clone()).unwrap().kind, SyncKind::Cold);
    let first = by_diffs.listing();
    for ruleset in [p2, p3.clone()] {
        let report = applier.sync(ruleset).unwrap();
        assert_eq!(report.kind, SyncKind::Diff, "{report:?}");
    }
    let mut other = Applier::new(cold.nft(), DiffOptions::default());
    other.sync(p3).unwrap();
    let wanted = cold.listing();
    assert_ne!(first, wanted, "the Plans differ");
    assert_eq!(by_diffs.listing(), wanted);

    // Rules deleted by hand, an element deleted, a rule added: a repair puts back the ruleset.
    by_diffs.exec(&["nft", "flush", "chain", "ip", "portico", "services"]);
    by_diffs.exec(&[
        "nft",
        "delete",
        "element",
        "ip",
        "portico",
        "service-ips",
        "{ 198.19.96.10 . tcp . 80 }",
    ]);
    by_diffs.exec(&["nft", "add", "rule", "ip", "portico", "filter-input", "counter"]);
    assert_ne!(by_diffs.listing(), wanted);
    assert_eq!(applier.repair().unwrap().kind, SyncKind::Resync);
    assert_eq!(by_diffs.listing(), wanted);
}
