//! What the compile and network-namespace tests share: a cluster of two nodes and the Plans
//! made of its manifests. Addresses are all documentation and benchmarking ranges
//! (198.18.0.0/15, 2001:db8::/32), which no real network routes.
#![allow(dead_code, clippy::unwrap_used)]

pub mod netns;

use portico_kernel::{CompileOptions, Compiled, Family, Ruleset, Table, TableId, compile};
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::plan::planned_with;

/// This node's name.
pub const NODE: &str = "node-a";

/// node-a (this host, from the configuration) and node-b (a Node object, in zone z2).
pub fn config() -> PlanConfig {
    PlanConfig {
        service_cidrs: vec!["198.19.96.0/20".parse().unwrap(), "2001:db8:96::/112".parse().unwrap()],
        load_balancer_pools: vec!["198.19.97.0/24".parse().unwrap()],
        pod_cidr: "198.18.128.0/24".parse().unwrap(),
        local_node: NODE.into(),
        local_node_addresses: vec![
            "198.18.0.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ],
        ..PlanConfig::default()
    }
}

/// The other node, with a pod CIDR per family.
pub const NODE_B: &str = "
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {topology.kubernetes.io/zone: z2}}
spec: {podCIDRs: [198.18.129.0/24, '2001:db8:129::/64']}
status: {addresses: [{type: InternalIP, address: 198.18.0.2}]}
---
";

/// A Service of `kind` with `spec` lines (indented by two), and one EndpointSlice of
/// `endpoints` (address, node) with `ports` (name, protocol, target port).
pub fn service(name: &str, spec: &str, ports: &[(&str, &str, u16)], endpoints: &[(&str, &str)]) -> String {
    let mut out = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}---\n");
    if endpoints.is_empty() {
        return out;
    }
    let family = if endpoints[0].0.contains(':') { "IPv6" } else { "IPv4" };
    out.push_str(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: {family}\nports:\n"
    ));
    for (port_name, protocol, port) in ports {
        out.push_str(&format!("- {{name: '{port_name}', protocol: {protocol}, port: {port}}}\n"));
    }
    out.push_str("endpoints:\n");
    for (address, node) in endpoints {
        out.push_str(&format!("- {{addresses: ['{address}'], nodeName: {node}}}\n"));
    }
    out.push_str("---\n");
    out
}

/// Every kind of exposure, with and without endpoints, policies, affinity, source ranges,
/// protocols, families, HostPorts and the Services Portico leaves alone.
pub fn cluster() -> String {
    let mut yaml = NODE_B.to_owned();
    let web = [("http", "TCP", 8080)];
    let three = [("198.18.128.1", "node-a"), ("198.18.129.2", "node-b"), ("198.18.129.3", "node-b")];
    yaml += &service(
        "web",
        "  clusterIP: 198.19.96.10\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        &web,
        &three,
    );
    yaml += &service(
        "sticky",
        "  clusterIP: 198.19.96.11\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        &web,
        &three[..2],
    );
    yaml += &service(
        "np",
        "  type: NodePort\n  clusterIP: 198.19.96.12\n  ports:\n  - {name: http, port: 80, targetPort: 8080, nodePort: 30080}\n  - {name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30053}\n",
        &[("http", "TCP", 8080), ("dns", "UDP", 5353)],
        &three[..2],
    );
    yaml += &service(
        "lb",
        "  type: LoadBalancer\n  clusterIP: 198.19.96.13\n  loadBalancerIP: 198.19.97.5\n  loadBalancerSourceRanges: [198.18.64.0/24, 198.18.64.0/25, '2001:db8:64::/48']\n  externalIPs: [198.19.99.10]\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]\n",
        &web,
        &three,
    );
    yaml += &service(
        "lonely",
        "  type: LoadBalancer\n  clusterIP: 198.19.96.14\n  loadBalancerIP: 198.19.97.6\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30082}]\n",
        &web,
        &three[1..],
    );
    yaml += &service(
        "internal",
        "  clusterIP: 198.19.96.15\n  internalTrafficPolicy: Local\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        &web,
        &three[1..],
    );
    yaml += &service(
        "empty",
        "  type: NodePort\n  clusterIP: 198.19.96.16\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30083}]\n",
        &web,
        &[],
    );
    yaml += &service(
        "sctp",
        "  clusterIP: 198.19.96.17\n  ports: [{name: assoc, port: 9899, protocol: SCTP, targetPort: 9899}]\n",
        &[("assoc", "SCTP", 9899)],
        &three[..1],
    );
    yaml += &service(
        "six",
        "  type: NodePort\n  ipFamilies: [IPv6]\n  clusterIP: '2001:db8:96::10'\n  ports: [{port: 80, targetPort: 8080, nodePort: 30084}]\n",
        &[("", "TCP", 8080)],
        &[("2001:db8:128::5", "node-a")],
    );
    yaml += &service("headless", "  clusterIP: None\n  ports: [{port: 80}]\n", &web, &three[..1]);
    yaml += &service("alias", "  type: ExternalName\n  externalName: example.invalid\n", &[], &[]);
    yaml += "apiVersion: v1\nkind: Service\nmetadata:\n  name: theirs\n  labels: {service.kubernetes.io/service-proxy-name: other}\nspec:\n  clusterIP: 198.19.96.18\n  ports: [{port: 80}]\n---\n";
    // Wants the LoadBalancer IP of `lb` as an external IP on the same port.
    yaml += &service(
        "clash",
        "  clusterIP: 198.19.96.19\n  externalIPs: [198.19.97.5, 198.19.99.11]\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        &web,
        &three[..1],
    );
    yaml += &host_port_pod("edge", "node-a", "198.18.128.50", "hostPort: 18080");
    yaml += &host_port_pod("edge-ip", "node-a", "198.18.128.51", "hostPort: 18081, hostIP: 198.18.0.1");
    yaml += &host_port_pod("far", "node-b", "198.18.129.50", "hostPort: 18082");
    yaml
}

/// A Pod on `node` at `ip` with one container port 8080 and `host` fields.
pub fn host_port_pod(name: &str, node: &str, ip: &str, host: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: x, ports: [{{containerPort: 8080, {host}}}]}}]\nstatus: {{podIP: {ip}}}\n---\n"
    )
}

/// `yaml` planned under [`config`], without errors.
pub fn plan(yaml: &str) -> Plan {
    planned_with(yaml, &config(), &Allocations::default(), 1).without_errors().plan
}

/// [`cluster`] compiled for node-a.
pub fn compiled() -> Compiled {
    compile(&plan(&cluster()), NODE, &CompileOptions::default())
}

/// Three Plans one after the other: the cluster, then endpoints and Services changed,
/// then more changes, for diffs applied in a row.
pub fn sequence() -> [Ruleset; 3] {
    let first = cluster();
    // web loses an endpoint, sticky gains one, np goes, a new Service comes.
    let second = first
        .replace("- {addresses: ['198.18.129.3'], nodeName: node-b}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky}", "---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky}")
        .replace("  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}", "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 900}}")
        + &service("late", "  clusterIP: 198.19.96.30\n  ports: [{name: http, port: 80, targetPort: 8080}]\n", &[("http", "TCP", 8080)], &[("198.18.128.9", "node-a")]);
    let second = remove_service(&second, "np");
    // lonely gains a local endpoint, empty gains one, late goes, the HostPort moves.
    let third = remove_service(&second, "late").replace("18080", "18090").replace(
        "  type: NodePort\n  clusterIP: 198.19.96.16",
        "  type: NodePort\n  clusterIP: 198.19.96.16\n  sessionAffinity: ClientIP",
    ) + &service(
        "empty-2",
        "  clusterIP: 198.19.96.31\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        &[("http", "TCP", 8080)],
        &[("198.18.128.7", "node-a")],
    );
    [first, second, third].map(|yaml| compile(&plan(&yaml), NODE, &CompileOptions::default()).ruleset)
}

/// `yaml` without the Service `name` and its EndpointSlice.
pub fn remove_service(yaml: &str, name: &str) -> String {
    yaml.split_inclusive("---\n")
        .filter(|doc| {
            !doc.contains(&format!("kind: Service\nmetadata: {{name: {name}}}"))
                && !doc.contains(&format!("metadata: {{name: {name}-1,"))
        })
        .collect()
}

/// Every table of `family` in `ruleset` as one, for looking things up wherever they are:
/// chains by name (the main table's first), sets by name with their elements together.
pub fn merged(ruleset: &Ruleset, family: Family) -> Table {
    let mut out = Table::default();
    for (id, table) in ruleset.tables.iter().filter(|(id, _)| id.family == family) {
        for (name, chain) in &table.chains {
            if id.part == 0 || !out.chains.contains_key(name) {
                out.chains.insert(name.clone(), chain.clone());
            }
        }
        for (name, set) in &table.sets {
            let into = out.sets.entry(name.clone()).or_insert_with(|| set.clone());
            into.elements.extend(set.elements.clone());
        }
    }
    out
}

/// The table whose set `set` holds `key`.
pub fn table_of(ruleset: &Ruleset, set: &str, key: &str) -> TableId {
    let holds = |t: &Table| t.sets.get(set).is_some_and(|s| s.elements.contains_key(key));
    *ruleset.tables.iter().find(|(_, t)| holds(t)).unwrap_or_else(|| panic!("no {set} holds {key}")).0
}
