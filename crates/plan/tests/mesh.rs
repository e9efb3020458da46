//! Which Pods are meshed and as whom: namespace and Pod labels (Portico's and Istio ambient's),
//! a Pod opting out of a meshed namespace, identities from ServiceAccounts in the configured
//! trust domain, host-network Pods left out, ports left alone, and labels that cannot be read.
#![allow(clippy::unwrap_used)]

use portico_plan::PlanConfig;
use portico_plan::mesh::{MeshedBy, PortRange};
use portico_testkit::plan::{Planned, planned, planned_with};

fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n---\n")
}

fn pod(namespace: &str, name: &str, labels: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}{extra}}}\nspec:\n  containers: [{{name: c, image: portico}}]\n---\n"
    )
}

fn meshed(planned: &Planned) -> Vec<(String, String, MeshedBy)> {
    planned.plan.mesh.workloads.iter().map(|w| (w.pod.to_string(), w.identity.clone(), w.meshed_by)).collect()
}

#[test]
fn namespace_and_pod_labels_decide_membership() {
    let yaml = [
        namespace("shop", "portico.dev/mesh: enabled"),
        namespace("ambient", "istio.io/dataplane-mode: ambient"),
        namespace("plain", "team: a"),
        pod("shop", "web", "app: web", ""),
        pod("shop", "legacy", "portico.dev/mesh: disabled", ""),
        pod("ambient", "api", "", ""),
        pod("ambient", "batch", "istio.io/dataplane-mode: none", ""),
        pod("plain", "one", "portico.dev/mesh: enabled", ""),
        pod("plain", "other", "", ""),
        pod("nolabel", "loose", "", ""),
    ]
    .concat();
    let planned = planned(&yaml).clean();
    assert_eq!(
        meshed(&planned),
        vec![
            (
                "ambient/api".into(),
                "spiffe://cluster.local/ns/ambient/sa/default".into(),
                MeshedBy::Namespace
            ),
            ("plain/one".into(), "spiffe://cluster.local/ns/plain/sa/default".into(), MeshedBy::Pod),
            ("shop/web".into(), "spiffe://cluster.local/ns/shop/sa/default".into(), MeshedBy::Namespace),
        ]
    );
    let web = planned.plan.pods.iter().find(|p| p.key.name == "web").unwrap();
    assert_eq!(planned.plan.mesh.workloads[2].ips, web.ips);
}

#[test]
fn identities_name_the_service_account_in_the_trust_domain() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0, namespace: data, labels: {portico.dev/mesh: enabled}}\nspec:\n  serviceAccountName: postgres\n  containers: [{name: c, image: portico}]\n---\n";
    let config = PlanConfig { trust_domain: "corp.example".into(), ..PlanConfig::default() };
    let planned = planned_with(yaml, &config, &Default::default(), 1).clean();
    let workload = &planned.plan.mesh.workloads[0];
    assert_eq!(workload.identity, "spiffe://corp.example/ns/data/sa/postgres");
    assert_eq!(workload.service_account, "postgres");
    assert_eq!(planned.plan.mesh.trust_domain, "corp.example");
    assert_eq!(planned.plan.mesh.root_namespace, "istio-system");
    assert_eq!(workload.ips, planned.plan.pods[0].ips);
}

#[test]
fn host_network_pods_stay_out_with_a_warning_when_asked_for() {
    let yaml = [
        namespace("shop", "portico.dev/mesh: enabled"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: agent, namespace: shop}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: portico}]\n---\n".to_owned(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: asked, namespace: default, labels: {portico.dev/mesh: enabled}}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: portico}]\n---\n".to_owned(),
    ]
    .concat();
    let planned = planned(&yaml).without_errors();
    assert!(planned.plan.mesh.workloads.is_empty());
    let warnings: Vec<String> = planned.planning.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("asked") && warnings[0].contains("spec.hostNetwork"), "{warnings:?}");
}

#[test]
fn excluded_ports_are_read_and_bad_ones_reported() {
    let annotations = ", annotations: {portico.dev/mesh-exclude-inbound-ports: '9090, 15020-15021', portico.dev/mesh-exclude-outbound-ports: '5432,x'}";
    let yaml = pod("default", "web", "portico.dev/mesh: enabled", annotations);
    let planned = planned(&yaml).without_errors();
    let web = &planned.plan.mesh.workloads[0];
    assert_eq!(
        web.exclude_inbound,
        vec![PortRange { first: 9090, last: 9090 }, PortRange { first: 15020, last: 15021 }]
    );
    assert!(web.exclude_outbound.is_empty(), "a list with a bad port leaves nothing out");
    let warnings: Vec<String> = planned.planning.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("mesh-exclude-outbound-ports") && warnings[0].contains("\"x\""),
        "{warnings:?}"
    );
}

#[test]
fn unreadable_labels_are_warned_about_and_decide_nothing() {
    let yaml = [
        namespace("shop", "portico.dev/mesh: 'yes'"),
        pod("shop", "web", "", ""),
        pod("default", "api", "istio.io/dataplane-mode: sidecar", ""),
    ]
    .concat();
    let planned = planned(&yaml).without_errors();
    assert!(planned.plan.mesh.workloads.is_empty());
    let warnings: Vec<String> = planned.planning.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("Namespace") && w.contains("\"yes\"")), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("Pod default/api") && w.contains("\"sidecar\"")),
        "{warnings:?}"
    );
}
