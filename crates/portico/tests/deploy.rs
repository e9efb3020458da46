//! `deploy/` against the code: rendered by `kubectl kustomize` (skipped, saying so, without
//! kubectl), its RBAC grants exactly what the API source reads (list and watch on each of its
//! collections, nothing more), the DaemonSet runs in the host's network with NET_ADMIN and
//! NET_RAW only and probes the admin port the flags give, and the flags in its ConfigMap are
//! flags `portico run` takes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use portico_source::cluster::RESOURCES;
use serde_json::Value;

/// The rendered objects, or `None` without kubectl.
fn rendered() -> Option<Vec<Value>> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let out = match Command::new("kubectl").arg("kustomize").arg(&deploy).output() {
        Ok(out) => out,
        Err(_) => {
            println!("skipping: needs kubectl (Debian: kubernetes-client)");
            return None;
        }
    };
    assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    Some(text.split("\n---\n").map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap()).collect())
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

#[test]
fn the_rbac_grants_what_the_api_source_reads_and_nothing_more() {
    let Some(objects) = rendered() else { return };
    let role = one(&objects, "ClusterRole");
    let rules = role["rules"].as_array().unwrap();
    for (kind, group, _, plural) in RESOURCES {
        let granted = rules.iter().any(|rule| {
            strings(&rule["apiGroups"]).contains(group)
                && strings(&rule["resources"]).contains(plural)
                && strings(&rule["verbs"]).is_superset(&["list", "watch"].map(String::from).into())
        });
        assert!(granted, "list and watch on {plural} ({kind:?}, group {group:?})");
    }
    let readable: BTreeSet<(String, String)> =
        RESOURCES.iter().map(|(_, group, _, plural)| (group.to_string(), plural.to_string())).collect();
    for rule in rules {
        assert_eq!(strings(&rule["verbs"]), ["list", "watch"].map(String::from).into(), "read only: {rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                assert!(
                    readable.contains(&(group.clone(), resource.clone())),
                    "nothing the source does not read: {group}/{resource}"
                );
            }
        }
    }
    let binding = one(&objects, "ClusterRoleBinding");
    let agent = one(&objects, "DaemonSet");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], agent["spec"]["template"]["spec"]["serviceAccountName"]);
    assert_eq!(binding["subjects"][0]["namespace"], agent["metadata"]["namespace"]);
}

#[test]
fn the_agent_runs_in_the_host_network_with_two_capabilities_and_flags_run_takes() {
    let Some(objects) = rendered() else { return };
    let agent = one(&objects, "DaemonSet");
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the node's nftables rules are in the host's namespace");
    let container = &pod["containers"][0];
    let capabilities = &container["securityContext"]["capabilities"];
    assert_eq!(strings(&capabilities["add"]), ["NET_ADMIN", "NET_RAW"].map(String::from).into());
    assert_eq!(strings(&capabilities["drop"]), ["ALL"].map(String::from).into());
    let config_map = one(&objects, "ConfigMap");
    let mounted = pod["volumes"].as_array().unwrap().iter().find(|v| v["configMap"].is_object()).unwrap();
    assert_eq!(
        mounted["configMap"]["name"], config_map["metadata"]["name"],
        "the generated name, hash and all"
    );
    let flags: Vec<String> =
        config_map["data"]["flags"].as_str().unwrap().split_whitespace().map(str::to_owned).collect();
    let mut argv = flags.clone();
    argv.extend(["--node-name".to_owned(), "node-1".to_owned()]);
    let config = portico::cli::run_config(&argv).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    assert!(config.cluster.is_some(), "the agent reads the API server");
    let admin = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == "admin").unwrap();
    assert_eq!(
        admin["containerPort"].as_u64(),
        Some(u64::from(config.admin.port())),
        "the admin port the flags give"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
}
