//! Plans compiled to nftables: every exposure method, traffic policies, affinity, source
//! ranges, protocols and families, HostPorts, claims and the Services left alone.
#![allow(clippy::unwrap_used)]

mod support;

use portico_kernel::compile::{
    FIREWALL_IPS, HOSTPORTS, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, NODEPORT_IPS, SERVICE_IPS,
    SERVICE_NODEPORTS,
};
use portico_kernel::ruleset::SERVICE_TABLES;
use portico_kernel::{Chain, CompileOptions, Compiled, Family, Table, TableId, compile};
use support::{NODE, cluster, compiled, merged, plan};

/// Every table of `family` as one (see [`merged`]).
fn table(c: &Compiled, family: Family) -> Table {
    merged(&c.ruleset, family)
}

/// The value of `key` in the map `set`, if any.
fn value(c: &Compiled, family: Family, set: &str, key: &str) -> Option<String> {
    table(c, family).sets[set].elements.get(key).map(|v| v.clone().unwrap_or_default())
}

/// The chain `goto` in a map value or rule names.
fn target(text: impl AsRef<str>) -> String {
    let text = text.as_ref();
    text.strip_prefix("goto ").unwrap_or_else(|| panic!("not a goto: {text}")).to_owned()
}

fn chain(c: &Compiled, family: Family, name: impl AsRef<str>) -> Chain {
    let name = name.as_ref();
    table(c, family).chains.get(name).cloned().unwrap_or_else(|| panic!("no chain {name}"))
}

/// Every chain name of `family` ending in `suffix`.
fn chains_ending(c: &Compiled, family: Family, suffix: &str) -> Vec<String> {
    table(c, family).chains.keys().filter(|n| n.ends_with(suffix)).cloned().collect()
}

/// Where a Service port's chain sends connections: its last rules, one draw per endpoint
/// among those left (`numgen random mod K 0 …`, K from N down to 2), then the last endpoint
/// unconditionally; each the DNAT statement (`meta l4proto tcp dnat to A:P`), or `goto` an
/// endpoint chain under affinity.
fn spread(rules: &[String]) -> Vec<&str> {
    let mut targets = vec![rules.last().unwrap().as_str()];
    for rule in rules[..rules.len() - 1].iter().rev() {
        let Some(draw) = rule.strip_prefix("numgen random mod ") else { break };
        let (k, to) = draw.split_once(" 0 ").unwrap();
        assert_eq!(k.parse::<usize>().unwrap(), targets.len() + 1, "draws among those left: {rules:?}");
        targets.push(to);
    }
    targets.reverse();
    targets
}

#[test]
fn a_cluster_ip_spreads_over_every_endpoint_and_masquerades_clients_outside_the_pods() {
    let c = compiled();
    let service = target(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.10 . tcp . 80").unwrap());
    assert!(service.starts_with("service-") && service.ends_with("-default/web/tcp/http"), "{service}");
    let rules = &chain(&c, Family::Ip, service).rules;
    // The two pod CIDRs, 198.18.128.0/24 and 198.18.129.0/24, merged into one range.
    assert_eq!(
        rules[0],
        "ip daddr 198.19.96.10 tcp dport 80 ip saddr != @pod-cidrs jump mark-for-masquerade"
    );
    let pod_cidrs = &table(&c, Family::Ip).sets["pod-cidrs"];
    assert_eq!(pod_cidrs.elements.keys().collect::<Vec<_>>(), ["198.18.128.0/23"]);
    assert_eq!(pod_cidrs.decl.flags, ["interval"]);
    let endpoints = spread(rules);
    assert_eq!(rules.len(), 1 + endpoints.len(), "no affinity rules: {rules:?}");
    let addresses = ["198.18.128.1", "198.18.129.2", "198.18.129.3"];
    let expected: Vec<String> =
        addresses.iter().map(|a| format!("meta l4proto tcp dnat to {a}:8080")).collect();
    assert_eq!(endpoints, expected, "each endpoint DNAT-ed from the Service's chain");
    assert!(
        chains_ending(&c, Family::Ip, "-default/web/tcp/http__198.18.128.1/8080").is_empty(),
        "no endpoint chains without affinity"
    );
    // Hairpin: a Pod reaching itself through its Service is masqueraded, for every endpoint.
    let masquerading = &chain(&c, Family::Ip, "masquerading").rules;
    assert_eq!(masquerading[0], "ct status dnat ip saddr . ip daddr @hairpin masquerade fully-random");
    assert!(masquerading.iter().any(|r| r == "masquerade fully-random"));
    let hairpin = &table(&c, Family::Ip).sets["hairpin"];
    assert_eq!(hairpin.decl.key, "ipv4_addr . ipv4_addr");
    for address in addresses {
        assert!(
            hairpin.elements.contains_key(&format!("{address} . {address}")),
            "{address}: {:?}",
            hairpin.elements
        );
    }
}

#[test]
fn node_ports_are_served_on_the_node_addresses_but_loopback() {
    let c = compiled();
    let external = target(value(&c, Family::Ip, SERVICE_NODEPORTS, "tcp . 30080").unwrap());
    assert!(external.starts_with("external-") && external.ends_with("-default/np/tcp/http"), "{external}");
    let rules = &chain(&c, Family::Ip, external).rules;
    assert_eq!(rules[0], "jump mark-for-masquerade", "Cluster policy masquerades external clients");
    let service = target(&rules[1]);
    assert!(service.starts_with("service-") && service.ends_with("-default/np/tcp/http"));
    let udp = target(value(&c, Family::Ip, SERVICE_NODEPORTS, "udp . 30053").unwrap());
    let udp_service = target(&chain(&c, Family::Ip, udp).rules[1]);
    assert_eq!(
        spread(&chain(&c, Family::Ip, udp_service).rules)[0],
        "meta l4proto udp dnat to 198.18.128.1:5353"
    );

    let addresses = |c: &Compiled, family| {
        table(c, family).sets[NODEPORT_IPS].elements.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(addresses(&c, Family::Ip), ["198.18.0.1"]);
    assert_eq!(addresses(&c, Family::Ip6), ["2001:db8::1"]);
    let options = CompileOptions { loopback_node_ports: true, ..CompileOptions::default() };
    let with_loopback = compile(&plan(&cluster()), NODE, &options);
    assert_eq!(addresses(&with_loopback, Family::Ip), ["127.0.0.1", "198.18.0.1"]);
    assert!(
        chain(&c, Family::Ip, "services").rules.contains(
            &"fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
                .to_owned()
        )
    );
}

#[test]
fn load_balancer_and_external_ips_go_to_the_external_chain_and_local_policy_keeps_clients() {
    let c = compiled();
    let lb = value(&c, Family::Ip, SERVICE_IPS, "198.19.97.5 . tcp . 80").unwrap();
    let external_ip = value(&c, Family::Ip, SERVICE_IPS, "198.19.99.10 . tcp . 80").unwrap();
    let node_port = value(&c, Family::Ip, SERVICE_NODEPORTS, "tcp . 30081").unwrap();
    assert_eq!((&lb, &node_port), (&external_ip, &external_ip));
    let external = target(&lb);
    assert!(external.starts_with("external-") && external.ends_with("-default/lb/tcp/http"), "{external}");
    let rules = &chain(&c, Family::Ip, external).rules;
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert_eq!(rules[0], "fib saddr type local jump mark-for-masquerade");
    let cluster_wide = rules[1].strip_prefix("fib saddr type local goto ").unwrap();
    let local = target(&rules[2]);
    assert!(local.starts_with("local-") && local.ends_with("-default/lb/tcp/http"), "{local}");

    // The node-local chain: the one endpoint on node-a, and no masquerading.
    let local_rules = &chain(&c, Family::Ip, local).rules;
    assert_eq!(local_rules.len(), 1, "{local_rules:?}");
    assert_eq!(spread(local_rules), ["meta l4proto tcp dnat to 198.18.128.1:8080"]);
    // The node itself and the ClusterIP reach every endpoint.
    let service = target(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.13 . tcp . 80").unwrap());
    assert_eq!(service, cluster_wide);
    assert_eq!(spread(&chain(&c, Family::Ip, service).rules).len(), 3);
}

#[test]
fn source_ranges_guard_only_load_balancer_ips() {
    let c = compiled();
    let firewall = &table(&c, Family::Ip).sets[FIREWALL_IPS].elements;
    assert_eq!(
        firewall.keys().collect::<Vec<_>>(),
        ["198.19.97.5 . tcp . 80"],
        "not the ClusterIP, NodePort or external IP"
    );
    let chain_name = target(firewall.values().next().unwrap().as_deref().unwrap());
    assert!(chain_name.starts_with("firewall-") && chain_name.ends_with("-default/lb/tcp/http"));
    // 198.18.64.0/25 lies inside 198.18.64.0/24; the IPv6 range is the other table's.
    assert_eq!(chain(&c, Family::Ip, chain_name).rules, ["ip saddr 198.18.64.0/24 return", "drop"]);
    assert!(table(&c, Family::Ip6).sets[FIREWALL_IPS].elements.is_empty());
    assert_eq!(chain(&c, Family::Ip, "filter-prerouting").rules, ["ct state new jump firewall-check"]);
}

#[test]
fn local_policies_without_a_local_endpoint_drop_and_no_endpoints_at_all_reject() {
    let c = compiled();
    // lonely: externalTrafficPolicy Local, endpoints only on node-b.
    assert_eq!(
        value(&c, Family::Ip, NO_ENDPOINT_SERVICES, "198.19.97.6 . tcp . 80").as_deref(),
        Some("drop")
    );
    assert_eq!(value(&c, Family::Ip, NO_ENDPOINT_NODEPORTS, "tcp . 30082").as_deref(), Some("drop"));
    assert_eq!(value(&c, Family::Ip, SERVICE_IPS, "198.19.97.6 . tcp . 80").as_deref(), None);
    assert!(
        value(&c, Family::Ip, SERVICE_IPS, "198.19.96.14 . tcp . 80").is_some(),
        "its ClusterIP is served"
    );
    assert!(
        chains_ending(&c, Family::Ip, "-default/lonely/tcp/http").iter().all(|n| n.starts_with("service-"))
    );
    // internal: internalTrafficPolicy Local, endpoints only on node-b.
    assert_eq!(
        value(&c, Family::Ip, NO_ENDPOINT_SERVICES, "198.19.96.15 . tcp . 80").as_deref(),
        Some("drop")
    );
    assert_eq!(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.15 . tcp . 80").as_deref(), None);
    // empty: no endpoints anywhere.
    assert_eq!(
        value(&c, Family::Ip, NO_ENDPOINT_SERVICES, "198.19.96.16 . tcp . 80").as_deref(),
        Some("goto reject-chain")
    );
    assert_eq!(
        value(&c, Family::Ip, NO_ENDPOINT_NODEPORTS, "tcp . 30083").as_deref(),
        Some("goto reject-chain")
    );
    assert!(chains_ending(&c, Family::Ip, "-default/empty/tcp/http").is_empty());
    assert_eq!(
        chain(&c, Family::Ip, "reject-chain").rules,
        ["meta l4proto tcp reject with tcp reset", "reject"]
    );
    assert_eq!(
        chain(&c, Family::Ip, "filter-input").rules,
        ["ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"]
    );
}

#[test]
fn client_ip_affinity_has_a_timeout_set_per_endpoint() {
    let c = compiled();
    let service = target(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.11 . tcp . 80").unwrap());
    let rules = &chain(&c, Family::Ip, service).rules;
    let endpoints = spread(rules);
    assert_eq!(endpoints.len(), 2);
    for (i, (to, address)) in endpoints.iter().zip(["198.18.128.1", "198.18.129.2"]).enumerate() {
        let endpoint =
            to.strip_prefix("goto ").unwrap_or_else(|| panic!("affinity goes through a chain: {to}"));
        let check = &rules[1 + i];
        let set = check.strip_prefix("ip saddr @").unwrap().split(' ').next().unwrap();
        assert_eq!(check, &format!("ip saddr @{set} goto {endpoint}"), "affinity is checked before the draw");
        let decl = &table(&c, Family::Ip).sets[set].decl;
        assert_eq!((decl.key.as_str(), decl.timeout), ("ipv4_addr", Some(600)));
        assert!(decl.dynamic() && decl.flags.contains(&"timeout"));
        assert_eq!(
            chain(&c, Family::Ip, endpoint).rules,
            [format!("update @{set} {{ ip saddr }}"), format!("meta l4proto tcp dnat to {address}:8080")]
        );
    }
}

#[test]
fn sctp_and_udp_ports_are_keyed_by_their_protocol() {
    let c = compiled();
    let service = target(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.17 . sctp . 9899").unwrap());
    assert_eq!(
        spread(&chain(&c, Family::Ip, service).rules),
        ["meta l4proto sctp dnat to 198.18.128.1:9899"]
    );
    assert!(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.17 . tcp . 9899").is_none());
    assert!(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.12 . udp . 53").is_some());
}

#[test]
fn ipv6_services_live_in_the_ip6_table() {
    let c = compiled();
    let service = target(value(&c, Family::Ip6, SERVICE_IPS, "2001:db8:96::10 . tcp . 80").unwrap());
    assert!(service.ends_with("-default/six/tcp/80"), "an unnamed port is named by its number: {service}");
    let rules = &chain(&c, Family::Ip6, service).rules;
    assert_eq!(
        rules[0],
        "ip6 daddr 2001:db8:96::10 tcp dport 80 ip6 saddr != @pod-cidrs jump mark-for-masquerade"
    );
    assert_eq!(
        table(&c, Family::Ip6).sets["pod-cidrs"].elements.keys().collect::<Vec<_>>(),
        ["2001:db8:129::/64"]
    );
    assert_eq!(spread(rules), ["meta l4proto tcp dnat to [2001:db8:128::5]:8080"]);
    assert!(
        table(&c, Family::Ip6).sets["hairpin"].elements.contains_key("2001:db8:128::5 . 2001:db8:128::5")
    );
    assert!(value(&c, Family::Ip6, SERVICE_NODEPORTS, "tcp . 30084").is_some());
    assert!(value(&c, Family::Ip, SERVICE_NODEPORTS, "tcp . 30084").is_none());
    assert!(chains_ending(&c, Family::Ip, "-default/six/tcp/80").is_empty());
    assert!(table(&c, Family::Ip6).sets[SERVICE_IPS].elements.keys().all(|k| k.starts_with("2001:db8:96::")));
}

#[test]
fn host_ports_are_opened_only_on_the_pods_node_and_honour_the_host_ip() {
    let c = compiled();
    let rules = &chain(&c, Family::Ip, HOSTPORTS).rules;
    assert_eq!(rules.len(), 2, "{rules:?}");
    let any = rules.iter().find(|r| r.contains("dport 18080")).unwrap();
    let (head, hostport) = any.split_once(" goto ").unwrap();
    assert_eq!(head, "fib daddr type local tcp dport 18080");
    assert_eq!(
        chain(&c, Family::Ip, hostport).rules,
        [
            "ip saddr 198.18.128.50 jump mark-for-masquerade",
            "ip saddr 127.0.0.1 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 198.18.128.50:8080",
        ]
    );
    let pinned = rules.iter().find(|r| r.contains("dport 18081")).unwrap();
    assert!(pinned.starts_with("ip daddr 198.18.0.1 tcp dport 18081 goto hostport-"), "{pinned}");
    assert!(!rules.iter().any(|r| r.contains("18082")), "node-b's HostPort");
    let main = &c.ruleset.tables[&TableId::main(Family::Ip)];
    assert_eq!(main.chains["nat-prerouting"].rules, ["jump hostports"]);

    let on_b = compile(&plan(&cluster()), "node-b", &CompileOptions::default());
    let rules = &chain(&on_b, Family::Ip, HOSTPORTS).rules;
    assert_eq!(rules.len(), 1);
    assert!(rules[0].starts_with("fib daddr type local tcp dport 18082 goto "), "{rules:?}");
}

#[test]
fn each_service_lives_in_the_service_table_its_name_hashes_to_with_its_own_nat_hooks() {
    let c = compiled();
    let services: Vec<(&TableId, &Table)> = c.ruleset.tables.iter().filter(|(id, _)| id.part > 0).collect();
    assert_eq!(services.len(), 2 * usize::from(SERVICE_TABLES), "every Service table of both families");
    let mut used = 0;
    for (id, table) in &services {
        assert_eq!(table.chains["nat-prerouting"].hook.unwrap().hook, "prerouting", "{id}");
        assert_eq!(table.chains["nat-prerouting"].rules, ["jump services"], "{id}");
        assert_eq!(table.chains["nat-output"].rules, ["jump services"], "{id}");
        // Every map element goes to a chain of the same table, which no other table has.
        for value in
            table.sets[SERVICE_IPS].elements.values().chain(table.sets[SERVICE_NODEPORTS].elements.values())
        {
            let to = target(value.as_deref().unwrap());
            assert!(table.chains.contains_key(&to), "{id}: {to}");
            let elsewhere =
                services.iter().filter(|(other, t)| other != id && t.chains.contains_key(&to)).count();
            assert_eq!(elsewhere, 0, "{to} in two tables");
        }
        used += usize::from(!table.sets[SERVICE_IPS].elements.is_empty());
    }
    assert!(used > 4, "the Services are spread: {used} tables used");
    // The same Service goes to the same table in a Plan with other Services.
    let web = |c: &Compiled| {
        c.ruleset
            .tables
            .iter()
            .find(|(_, t)| {
                t.sets.get(SERVICE_IPS).is_some_and(|s| s.elements.contains_key("198.19.96.10 . tcp . 80"))
            })
            .map(|(id, _)| *id)
            .unwrap()
    };
    let alone = compile(
        &plan(&support::service(
            "web",
            "  clusterIP: 198.19.96.10\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
            &[("http", "TCP", 8080)],
            &[("198.18.128.1", NODE)],
        )),
        NODE,
        &CompileOptions::default(),
    );
    assert_eq!(web(&c), web(&alone));
}

#[test]
fn an_external_ip_never_takes_an_allocated_destination() {
    let c = compiled();
    assert_eq!(c.conflicts.len(), 1, "{:?}", c.conflicts);
    let (destination, message) = &c.conflicts[0];
    assert_eq!(destination.to_string(), "198.19.97.5:80/TCP");
    assert!(
        message.contains("ExternalIP default/clash") && message.contains("LoadBalancer default/lb"),
        "{message}"
    );
    assert!(
        target(value(&c, Family::Ip, SERVICE_IPS, "198.19.97.5 . tcp . 80").unwrap())
            .ends_with("-default/lb/tcp/http")
    );
    let other = target(value(&c, Family::Ip, SERVICE_IPS, "198.19.99.11 . tcp . 80").unwrap());
    assert!(
        other.starts_with("external-") && other.ends_with("-default/clash/tcp/http"),
        "its free external IP is served"
    );
}

#[test]
fn services_portico_does_not_proxy_are_absent() {
    let c = compiled();
    for family in Family::ALL {
        let t = table(&c, family);
        for name in ["headless", "alias", "theirs"] {
            let mark = format!("-default/{name}/");
            assert!(!t.chains.keys().any(|n| n.contains(&mark)), "{name} has chains");
        }
        assert!(!t.sets.values().flat_map(|s| s.elements.keys()).any(|k| k.starts_with("198.19.96.18 ")));
    }
}

#[test]
fn masquerade_all_masquerades_every_cluster_ip_client_and_compiling_is_deterministic() {
    let plan = plan(&cluster());
    let options = CompileOptions { masquerade_all: true, ..CompileOptions::default() };
    let c = compile(&plan, NODE, &options);
    let service = target(value(&c, Family::Ip, SERVICE_IPS, "198.19.96.10 . tcp . 80").unwrap());
    assert_eq!(
        chain(&c, Family::Ip, service).rules[0],
        "ip daddr 198.19.96.10 tcp dport 80 jump mark-for-masquerade"
    );
    assert_eq!(compile(&plan, NODE, &CompileOptions::default()), compiled());
    for family in Family::ALL {
        let t = table(&c, family);
        assert!(t.chains.keys().chain(t.sets.keys()).all(|n| n.len() <= 255));
    }
}
