//! Property tests: allocation never hands out a value twice and is stable when unrelated
//! objects come and go.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::manifests::Service;
use proptest::prelude::*;

/// One generated Service: name index, type, explicit NodePort wish.
#[derive(Clone, Debug)]
struct Svc {
    id: u16,
    kind: &'static str,
    node_port: Option<u16>,
}

fn manifest(services: &[Svc]) -> String {
    services
        .iter()
        .map(|s| {
            let node_port = s.node_port.map(|n| format!(", nodePort: {n}")).unwrap_or_default();
            Service::new(&format!("svc-{}", s.id))
                .kind(s.kind)
                .port(&format!("{{name: http, port: 80{node_port}}}"))
                .port("{name: dns, port: 53, protocol: UDP}")
                .to_string()
        })
        .collect()
}

fn planned(services: &[Svc], config: &PlanConfig, previous: &Allocations) -> (Plan, Allocations) {
    let p = portico_testkit::plan::planned_with(&manifest(services), config, previous, 1).loaded();
    (p.plan, p.allocations)
}

fn svc_strategy() -> impl Strategy<Value = Vec<Svc>> {
    prop::collection::btree_map(
        0u16..400,
        (
            prop_oneof![Just("ClusterIP"), Just("NodePort"), Just("LoadBalancer")],
            prop::option::weighted(0.2, 30000u16..30040),
        ),
        1..40,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(id, (kind, node_port))| Svc {
                id,
                kind,
                node_port: node_port.filter(|_| kind != "ClusterIP"),
            })
            .collect()
    })
}

/// What each Service holds: ClusterIPs, NodePorts by port, LB IPs.
type Holdings = BTreeMap<String, (Vec<IpAddr>, Vec<(String, u16)>, Vec<IpAddr>)>;

fn holdings(plan: &Plan) -> Holdings {
    plan.services
        .iter()
        .map(|s| {
            let ports = s
                .ports
                .iter()
                .filter_map(|p| Some((format!("{}/{}", p.name, p.protocol), p.node_port?)))
                .collect();
            (s.key.name.clone(), (s.cluster_ips.clone(), ports, s.load_balancer_ips.clone()))
        })
        .collect()
}

fn assert_unique(plan: &Plan) {
    let mut ips = HashSet::new();
    let mut node_ports = HashSet::new();
    let mut lb_ips = HashSet::new();
    for s in &plan.services {
        for ip in &s.cluster_ips {
            assert!(ips.insert(*ip), "ClusterIP {ip} handed out twice");
        }
        for ip in &s.load_balancer_ips {
            assert!(lb_ips.insert(*ip), "LB IP {ip} handed out twice");
        }
        let mut own = HashSet::new();
        for p in &s.ports {
            if let Some(n) = p.node_port {
                // One Service may reuse a number across protocols, never across Services.
                if own.insert(n) {
                    assert!(node_ports.insert(n), "NodePort {n} handed out twice");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn never_twice_and_stable_under_unrelated_changes(services in svc_strategy(), extra in svc_strategy(), drop_mask in any::<u64>()) {
        // A tiny LB pool makes exhaustion part of the property too.
        let config = PlanConfig { load_balancer_pools: vec!["127.97.0.0/29".parse().unwrap()], ..PlanConfig::default() };
        let (first, allocations) = planned(&services, &config, &Allocations::default());
        assert_unique(&first);
        let before = holdings(&first);

        // Remove some Services and add unrelated new ones; survivors keep what they had.
        let mut next: Vec<Svc> = services.iter().enumerate().filter(|(i, _)| drop_mask & (1 << (i % 64)) == 0).map(|(_, s)| s.clone()).collect();
        let known: HashSet<u16> = services.iter().map(|s| s.id).collect();
        next.extend(extra.into_iter().filter(|s| !known.contains(&s.id)).map(|s| Svc { id: s.id + 1000, ..s }));
        let (second, _) = planned(&next, &config, &allocations);
        assert_unique(&second);
        let after = holdings(&second);
        for (name, held) in &after {
            if let Some(old) = before.get(name) {
                prop_assert_eq!(&held.0, &old.0, "ClusterIP of {} moved", name);
                prop_assert_eq!(&held.1, &old.1, "NodePorts of {} moved", name);
                // A Service left pending by a full pool may get an IP once others leave.
                if !old.2.is_empty() {
                    prop_assert_eq!(&held.2, &old.2, "LB IP of {} moved", name);
                }
            }
        }
    }

    #[test]
    fn lost_state_gives_the_same_answer_for_the_same_input(services in svc_strategy()) {
        let config = PlanConfig::default();
        let (a, _) = planned(&services, &config, &Allocations::default());
        let (b, _) = planned(&services, &config, &Allocations::default());
        prop_assert_eq!(holdings(&a), holdings(&b));
    }
}

#[test]
fn node_ports_prefer_the_upper_band_and_cluster_ips_stay_in_range() {
    let services: Vec<Svc> = (0..50).map(|id| Svc { id, kind: "NodePort", node_port: None }).collect();
    let config = PlanConfig::default();
    let (p, _) = planned(&services, &config, &Allocations::default());
    for s in &p.services {
        for port in &s.ports {
            let n = port.node_port.unwrap();
            assert!((30086..=32767).contains(&n), "{n} not in the upper band");
        }
        assert!(s.cluster_ips.iter().all(|ip| config.service_cidrs[0].contains(ip)));
    }
}
