//! MetalLB's `IPAddressPool` and `L2Advertisement` read from the files users already have:
//! every field MetalLB documents, the errors its webhook would give (naming the field), and
//! fields MetalLB does not know refused as the API server would.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use portico_model::metallb::AddressRange;
use portico_model::{Object, Store, parse_text};

/// Parses and admits `yaml`; returns the store and every diagnostic as `field: message`.
fn admit(yaml: &str) -> (Store, Vec<String>) {
    let (objects, mut diagnostics) = parse_text(Path::new("pools.yaml"), yaml);
    let (store, more) = Store::from_objects(objects);
    diagnostics.extend(more);
    let said =
        diagnostics.iter().map(|d| format!("{}: {}", d.field.as_deref().unwrap_or(""), d.message)).collect();
    (store, said)
}

const METALLB: &str = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: production, namespace: metallb-system, labels: {tier: prod}}
spec:
  addresses: [198.18.1.0/25, 198.18.1.200-198.18.1.210, '2001:db8:1b::/120']
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 10
    namespaces: [shop]
    namespaceSelectors: [{matchLabels: {team: web}}]
    serviceSelectors: [{matchExpressions: [{key: exposed, operator: In, values: ['yes']}]}]
status: {assignedIPv4: 1, availableIPv4: 137}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: prod, namespace: metallb-system}
spec:
  ipAddressPools: [production]
  ipAddressPoolSelectors: [{matchLabels: {tier: prod}}]
  nodeSelectors: [{matchLabels: {kubernetes.io/hostname: lab-node-1}}]
  interfaces: [eth0]
";

#[test]
fn a_metallb_configuration_is_read_whole() {
    let (store, said) = admit(METALLB);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(store.len(), 2, "both objects are counted as accepted");
    let pool = &store.ip_address_pools.values().next().unwrap().object;
    assert_eq!(pool.metadata.namespace.as_deref(), Some("metallb-system"));
    let ranges: Vec<String> =
        pool.spec.addresses.iter().map(|a| AddressRange::parse(a).unwrap().to_string()).collect();
    assert_eq!(
        ranges,
        ["198.18.1.0-198.18.1.127", "198.18.1.200-198.18.1.210", "2001:db8:1b::-2001:db8:1b::ff"]
    );
    assert_eq!((pool.spec.auto_assign, pool.spec.avoid_buggy_ips), (Some(false), Some(true)));
    let allocation = pool.spec.service_allocation.as_ref().unwrap();
    assert_eq!(
        (allocation.priority, allocation.namespaces.as_slice()),
        (Some(10), ["shop".to_owned()].as_slice())
    );
    let advertisement = &store.l2_advertisements.values().next().unwrap().object;
    assert_eq!(advertisement.spec.ip_address_pools, ["production"]);
    assert_eq!(advertisement.spec.interfaces, ["eth0"]);
}

#[test]
fn bad_pools_and_advertisements_are_refused_naming_the_field() {
    let cases = [
        ("spec: {addresses: []}", "spec.addresses: required"),
        ("spec: {addresses: [198.18.1.1/24]}", "spec.addresses[0]: 198.18.1.1/24 has host bits set"),
        (
            "spec: {addresses: [198.18.1.9-198.18.1.2]}",
            "spec.addresses[0]: 198.18.1.9-198.18.1.2: the first address comes after",
        ),
        (
            "spec: {addresses: [198.18.1.0/24, 198.18.1.5-198.18.1.6]}",
            "spec.addresses[1]: 198.18.1.5-198.18.1.6 overlaps spec.addresses[0]",
        ),
        ("spec: {addresses: [192.0.2.0/24], autoAsign: true}", "spec.autoAsign: unknown field"),
        (
            "spec: {addresses: [192.0.2.0/24], serviceAllocation: {namespaces: [Shop]}}",
            "spec.serviceAllocation.namespaces[0]:",
        ),
        (
            "spec: {addresses: [192.0.2.0/24], serviceAllocation: {serviceSelectors: [{matchExpressions: [{key: a, operator: Like}]}]}}",
            "spec.serviceAllocation.serviceSelectors[0]: operator \"Like\"",
        ),
    ];
    for (spec, expected) in cases {
        let yaml =
            format!("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p}}\n{spec}\n");
        let (store, said) = admit(&yaml);
        assert!(said.iter().any(|s| s.starts_with(expected)), "{spec}: {said:?}");
        assert!(store.ip_address_pools.is_empty(), "{spec}: refused");
    }
    let (store, said) = admit(
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: a}\nspec: {interfaces: [a-name-far-too-long-for-linux]}\n",
    );
    assert!(said.iter().any(|s| s.starts_with("spec.interfaces[0]")), "{said:?}");
    assert!(store.l2_advertisements.is_empty());
    let (_, said) = admit(
        "apiVersion: metallb.io/v1beta2\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/24]}\n",
    );
    assert!(
        said.iter().any(|s| s.starts_with("apiVersion: apiVersion metallb.io/v1beta2 is not supported")),
        "{said:?}"
    );
}

#[test]
fn a_pool_is_an_object_like_the_others() {
    let (objects, _) = parse_text(Path::new("p.yaml"), METALLB);
    let kinds: Vec<&str> = objects.iter().map(|(_, o)| o.kind().name()).collect();
    assert_eq!(kinds, ["IPAddressPool", "L2Advertisement"]);
    assert!(matches!(objects[0].1, Object::IpAddressPool(_)));
    assert_eq!(objects[0].1.key().to_string(), "metallb-system/production");
}
