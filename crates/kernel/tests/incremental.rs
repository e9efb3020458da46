//! Compiling only what changed: after every change, the ruleset patched with the parts the
//! incremental compiler gives equals the whole Plan compiled again; single-Service changes
//! take the partial way, and everything is compiled again when the context changes or a
//! destination is claimed twice. In a namespace, syncs by parts list as a cold start does.
#![allow(clippy::unwrap_used)]

mod support;

use portico_kernel::incremental::{Change, Incremental};
use portico_kernel::{Applier, CompileOptions, DiffOptions, Ruleset, SyncKind, compile};
use support::netns::Netns;
use support::{NODE, cluster, plan, remove_service, service};

/// The cluster without the Service whose external IP clashes: a Plan without conflicts.
fn base() -> String {
    remove_service(&cluster(), "clash")
}

/// Plans one after the other, each one Service away from the one before, then a HostPort
/// moved and a clash.
fn steps() -> Vec<(&'static str, String)> {
    let base = base();
    let late = service(
        "late",
        "  clusterIP: 198.19.96.30\n  ports: [{name: dns, port: 53, protocol: UDP, targetPort: 5353}]\n",
        &[("dns", "UDP", 5353)],
        &[("198.18.128.9", "node-a")],
    );
    let added = format!("{base}{late}");
    let fewer = added.replace(
        "- {addresses: ['198.18.129.3'], nodeName: node-b}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky}",
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky}",
    );
    let affinity = fewer.replace("timeoutSeconds: 600", "timeoutSeconds: 900");
    let removed = remove_service(&affinity, "np");
    let back = format!(
        "{removed}{}",
        service(
            "np",
            "  type: NodePort\n  clusterIP: 198.19.96.12\n  ports:\n  - {name: http, port: 80, targetPort: 8080, nodePort: 30090}\n",
            &[("http", "TCP", 8080)],
            &[("198.18.128.1", "node-a")]
        )
    );
    let late_moved = back.replace("198.18.128.9", "198.18.128.11");
    let moved = late_moved.replace("18080", "18095");
    let clash = format!(
        "{moved}{}",
        service(
            "clash",
            "  clusterIP: 198.19.96.19\n  externalIPs: [198.19.97.5]\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
            &[("http", "TCP", 8080)],
            &[("198.18.128.1", "node-a")]
        )
    );
    let after = moved.replace("198.18.128.9", "198.18.128.10");
    vec![
        ("first", base.clone()),
        ("same", base),
        ("added", added),
        ("endpoint gone", fewer),
        ("affinity", affinity),
        ("removed", removed),
        ("back", back),
        ("late's only endpoint moved", late_moved),
        ("HostPort moved", moved),
        ("clash", clash),
        ("clash gone", after),
    ]
}

#[test]
fn parts_patch_the_ruleset_into_what_a_whole_compile_gives() {
    let mut compiler = Incremental::new(NODE, CompileOptions::default());
    let mut kernel: Option<Ruleset> = None;
    let mut ways = Vec::new();
    for (step, yaml) in steps() {
        let plan = plan(&yaml);
        let whole = compile(&plan, NODE, &CompileOptions::default());
        let way = match compiler.update(&plan, kernel.as_ref()) {
            Change::Unchanged => "unchanged",
            Change::Full(compiled) => {
                assert_eq!(compiled, whole, "{step}");
                kernel = Some(compiled.ruleset);
                "full"
            }
            Change::Parts { old, new, services } => {
                assert_eq!(services, 1, "{step}: one Service changed");
                kernel.as_mut().unwrap().replace_part(&old, new);
                "parts"
            }
        };
        assert!(
            kernel.as_ref() == Some(&whole.ruleset),
            "{step}: patched ruleset differs from a whole compile"
        );
        ways.push((step, way));
    }
    let expected = [
        ("first", "full"),
        ("same", "unchanged"),
        ("added", "parts"),
        ("endpoint gone", "parts"),
        ("affinity", "parts"),
        ("removed", "parts"),
        ("back", "parts"),
        ("late's only endpoint moved", "parts"),
        ("HostPort moved", "full"),
        ("clash", "full"),
        ("clash gone", "full"),
    ];
    assert_eq!(ways, expected);
}

#[test]
fn without_a_known_kernel_or_with_many_changes_everything_is_compiled() {
    let mut compiler = Incremental::new(NODE, CompileOptions::default());
    let plan = plan(&base());
    assert!(matches!(compiler.update(&plan, None), Change::Full(_)));
    assert!(matches!(compiler.update(&plan, None), Change::Full(_)), "nothing known of the kernel");
    let Change::Full(compiled) = compiler.update(&plan, None) else { panic!("full") };
    assert!(matches!(compiler.update(&plan, Some(&compiled.ruleset)), Change::Unchanged));
    compiler.forget();
    assert!(matches!(compiler.update(&plan, Some(&compiled.ruleset)), Change::Full(_)), "forgotten");
    let others = remove_service(&remove_service(&remove_service(&base(), "web"), "sticky"), "np");
    assert!(
        matches!(compiler.update(&support::plan(&others), Some(&compiled.ruleset)), Change::Full(_)),
        "a quarter changed"
    );
}

#[test]
fn syncs_by_parts_in_a_kernel_list_as_a_cold_start() {
    if !portico_testkit::root::able(&["ip", "nft"]) {
        return;
    }
    // Removed when dropped, also when an assertion fails.
    let (by_parts, whole) = (Netns::new("parts"), Netns::new("whole"));
    let mut applier = Applier::new(by_parts.nft(), DiffOptions::default());
    let mut compiler = Incremental::new(NODE, CompileOptions::default());
    let mut last = None;
    for (step, yaml) in steps().into_iter().take(8) {
        let plan = plan(&yaml);
        let report = match compiler.update(&plan, applier.kernel()) {
            Change::Unchanged => continue,
            Change::Full(compiled) => applier.sync(compiled.ruleset),
            Change::Parts { old, new, .. } => applier.sync_parts(&old, new),
        };
        let report = report.unwrap_or_else(|e| panic!("{step}: {e}"));
        assert!(matches!(report.kind, SyncKind::Cold | SyncKind::Diff), "{step}: {report:?}");
        last = Some(plan);
    }
    let mut cold = Applier::new(whole.nft(), DiffOptions::default());
    cold.sync(compile(&last.unwrap(), NODE, &CompileOptions::default()).ruleset).unwrap();
    let wanted = whole.listing();
    assert!(wanted.lines().count() > 50, "{wanted}");
    assert_eq!(by_parts.listing(), wanted);
}
