//! Bad input never panics: arbitrary text and mangled manifests go through loading,
//! validation and planning and come out as diagnostics.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use portico_model::Store;
use portico_plan::{Allocations, PlanConfig, plan};
use portico_testkit::plan::planned;
use proptest::prelude::*;

fn run(text: &str) {
    let _ = planned(text);
    let _ = portico_model::locate::field_line(text, 1, "spec.ports[0].port");
}

/// Lines that look like pieces of real manifests, to get past the parser often.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("---".to_string()),
        Just("apiVersion: v1".to_string()),
        Just("apiVersion: networking.k8s.io/v1".to_string()),
        Just("apiVersion: apps/v1".to_string()),
        prop_oneof![Just("Service"), Just("Pod"), Just("Ingress"), Just("Deployment"), Just("EndpointSlice"), Just("List")]
            .prop_map(|k| format!("kind: {k}")),
        Just("metadata: {name: a}".to_string()),
        Just("spec:".to_string()),
        Just("  ports:".to_string()),
        (any::<i64>(), any::<bool>()).prop_map(|(n, udp)| format!("  - {{port: {n}, nodePort: {n}, protocol: {}}}", if udp { "UDP" } else { "TCP" })),
        Just("  type: LoadBalancer".to_string()),
        Just("  clusterIP: None".to_string()),
        Just("  selector: {app: a}".to_string()),
        Just("  rules: [{host: '*.a', http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 1}}}}]}}]".to_string()),
        Just("  template: {metadata: {labels: {app: a}}, spec: {containers: [{name: c, ports: [{containerPort: 1, hostPort: 1}]}]}}".to_string()),
        Just("items:".to_string()),
        "[ -~]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_does_not_panic(text in "\\PC{0,200}") {
        run(&text);
    }

    #[test]
    fn mangled_manifests_do_not_panic(lines in prop::collection::vec(fragment(), 0..30)) {
        run(&lines.join("\n"));
    }
}

#[test]
fn every_example_and_broken_file_loads_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let loaded = portico_model::load_paths(&[root.join("examples"), root.join("tests/broken")]);
    assert!(loaded.files.len() > 10);
    let (store, _) = Store::from_objects(loaded.objects);
    let planned = plan(&store, &PlanConfig::default(), &Allocations::default(), 1);
    assert!(!planned.plan.services.is_empty());
}
