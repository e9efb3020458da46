//! The planner on small manifest scenarios: endpoints, Service kinds, HostPorts, Ingress.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use portico_model::{Diagnostic, ObjectKey};
use portico_plan::ingress::RouteMatch;
use portico_plan::{Allocations, Plan, PlanConfig, Scope, ServiceKind, ServicePlan};
use portico_testkit::manifests::{Pod, ingress};

/// The Plan of `yaml` as generation 7, and every diagnostic.
fn planned(yaml: &str) -> (Plan, Vec<Diagnostic>) {
    let planned =
        portico_testkit::plan::planned_with(yaml, &PlanConfig::default(), &Allocations::default(), 7);
    let diagnostics = planned.diagnostics();
    (planned.plan, diagnostics)
}

fn service<'a>(plan: &'a Plan, name: &str) -> &'a ServicePlan {
    plan.services.iter().find(|s| s.key.name == name).unwrap_or_else(|| panic!("no Service {name}"))
}

/// An nginx Pod labelled `labels` with the container port `port_name` = `port`, and the
/// metadata fields `extra`.
fn pod(name: &str, labels: &str, port_name: &str, port: u16, extra: &str) -> String {
    let pod = Pod::new(name).labels(labels).image("nginx").port(port_name, port);
    if extra.is_empty() { pod } else { pod.metadata(extra) }.to_string()
}

#[test]
fn endpoints_from_pods_resolve_named_ports_per_pod_and_follow_readiness() {
    let mut yaml = String::new();
    yaml += &pod("a", "app: web", "http", 8080, "");
    yaml += &pod("b", "app: web", "http", 9090, "");
    yaml += &pod("no-such-port", "app: web", "metrics", 9100, "");
    yaml += &pod("other-app", "app: db", "http", 8080, "");
    yaml += &pod("leaving", "app: web", "http", 8080, "deletionTimestamp: '2026-01-01T00:00:00Z'");
    yaml += "apiVersion: v1\nkind: Pod\nmetadata: {name: unready, labels: {app: web}}\nspec:\n  containers: [{name: c, ports: [{name: http, containerPort: 7070}]}]\nstatus:\n  podIP: 127.98.200.1\n  conditions: [{type: Ready, status: 'False'}]\n---\n";
    yaml += "apiVersion: v1\nkind: Pod\nmetadata: {name: done, labels: {app: web}}\nspec:\n  containers: [{name: c, ports: [{name: http, containerPort: 7070}]}]\nstatus: {phase: Succeeded, podIP: 127.98.200.2}\n---\n";
    yaml += "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n";
    let (plan, diags) = planned(&yaml);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(plan.generation, 7);
    let endpoints = &service(&plan, "web").ports[0].endpoints;
    let by_pod = |name: &str| endpoints.iter().find(|e| e.pod.as_ref().is_some_and(|p| p.name == name));
    assert_eq!(by_pod("a").unwrap().port, 8080);
    assert_eq!(by_pod("b").unwrap().port, 9090);
    assert!(by_pod("no-such-port").is_none(), "a Pod without the named port is left out");
    assert!(by_pod("other-app").is_none() && by_pod("done").is_none());
    let leaving = by_pod("leaving").unwrap();
    assert!(!leaving.ready && leaving.serving && leaving.terminating);
    let unready = by_pod("unready").unwrap();
    assert_eq!(unready.address, "127.98.200.1".parse::<IpAddr>().unwrap());
    assert!(!unready.ready && !unready.serving);
    // Pods without status got distinct addresses from the Pod CIDR.
    let a = by_pod("a").unwrap().address;
    assert!(PlanConfig::default().pod_cidr.contains(&a) && a != by_pod("b").unwrap().address);
    assert_eq!(service(&plan, "web").backend_counts(), (2, 4));
}

#[test]
fn publish_not_ready_and_hostnames_for_the_named_subdomain() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0, labels: {app: db}}\nspec:\n  hostname: db-0\n  subdomain: db\n  containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]\nstatus:\n  podIP: 127.98.1.1\n  conditions: [{type: Ready, status: 'False'}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  selector: {app: db}\n  ports: [{name: pg, port: 5432}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db-read}\nspec:\n  selector: {app: db}\n  ports: [{name: pg, port: 5432}]\n";
    let (plan, diags) = planned(yaml);
    assert!(diags.is_empty(), "{diags:?}");
    let db = service(&plan, "db");
    assert_eq!(db.kind, ServiceKind::Headless);
    assert!(db.cluster_ips.is_empty() && !db.proxied);
    let e = &db.ports[0].endpoints[0];
    assert!(e.ready, "publishNotReadyAddresses makes it ready");
    assert_eq!(e.hostname.as_deref(), Some("db-0"));
    let read = &service(&plan, "db-read").ports[0].endpoints[0];
    assert!(!read.ready);
    assert_eq!(read.hostname, None, "the hostname belongs to the Service named by the subdomain");
}

#[test]
fn endpoint_slices_win_over_selectors_and_carry_conditions() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  ports: [{name: https, port: 443}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ext-1\n  labels: {kubernetes.io/service-name: ext}\naddressType: IPv4\nports: [{name: https, port: 8443, protocol: TCP}, {name: other, port: 1}]\nendpoints:\n- addresses: [127.0.10.1]\n  nodeName: n1\n  zone: z1\n- addresses: [127.0.10.2]\n  conditions: {ready: false, serving: true, terminating: true}\n";
    let (plan, diags) = planned(yaml);
    assert!(diags.is_empty(), "{diags:?}");
    let eps = &service(&plan, "ext").ports[0].endpoints;
    assert_eq!(eps.len(), 2);
    assert_eq!((eps[0].port, eps[0].node.as_deref(), eps[0].zone.as_deref()), (8443, Some("n1"), Some("z1")));
    assert!(eps[0].ready && !eps[1].ready && eps[1].serving && eps[1].terminating);
    let chosen = portico_plan::endpoints::select(eps, Scope::Cluster { node: "n1", zone: None });
    assert_eq!(chosen.len(), 1);
}

#[test]
fn service_kinds_nest_and_policies_are_carried() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  sessionAffinity: ClientIP\n  externalIPs: [127.99.0.10]\n  loadBalancerSourceRanges: [127.0.0.0/8]\n  ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: lb-no-np}\nspec:\n  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: alias}\nspec: {type: ExternalName, externalName: api.example.test}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: elsewhere\n  labels: {service.kubernetes.io/service-proxy-name: other-proxy}\nspec:\n  ports: [{port: 80}]\n";
    let (plan, diags) = planned(yaml);
    assert!(diags.is_empty(), "{diags:?}");
    let lb = service(&plan, "lb");
    assert_eq!(lb.kind, ServiceKind::LoadBalancer);
    assert_eq!(lb.cluster_ips.len(), 1);
    assert!(lb.ports.iter().all(|p| p.node_port.is_some()));
    assert_eq!(lb.load_balancer_ips, vec!["127.97.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(lb.external_ips, vec!["127.99.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(lb.session_affinity_timeout, Some(10800));
    assert!(lb.health_check_node_port.is_some_and(|p| (30000..=32767).contains(&p)));
    assert_eq!(lb.external_traffic_policy, portico_plan::TrafficPolicy::Local);
    assert_eq!(lb.load_balancer_source_ranges.len(), 1);
    let no_np = service(&plan, "lb-no-np");
    assert!(no_np.ports[0].node_port.is_none() && no_np.load_balancer_ips.len() == 1);
    let alias = service(&plan, "alias");
    assert_eq!(
        (alias.kind, alias.external_name.as_deref()),
        (ServiceKind::ExternalName, Some("api.example.test"))
    );
    assert!(alias.cluster_ips.is_empty());
    assert!(!service(&plan, "elsewhere").proxied);
}

#[test]
fn host_ports_clash_per_node_with_any_address_clashing_with_all() {
    let hp = |name: &str, host_ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, ports: [{{containerPort: 80, hostPort: 18000{host_ip}}}]}}]\n---\n"
        )
    };
    let yaml = [
        hp("a", ", hostIP: 127.0.0.1"),
        hp("b", ", hostIP: 127.0.0.2"),
        hp("c", ""),
        hp("d", ", hostIP: 0.0.0.0"),
    ]
    .concat();
    let (plan, diags) = planned(&yaml);
    let served: Vec<&str> = plan.host_ports.iter().map(|h| h.pod.name.as_str()).collect();
    assert_eq!(served, vec!["a", "b"]);
    let clashing: Vec<&str> =
        diags.iter().filter_map(|d| d.object.as_ref()).map(|o| o.key.name.as_str()).collect();
    assert_eq!(clashing, vec!["c", "d"]);
}

fn tls_secret(name: &str) -> String {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ingress-tls/tls-secret.yaml"),
    )
    .unwrap();
    example
        .replace("name: shop-tls", &format!("name: {name}"))
        .replace("namespace: shop", "namespace: default")
        + "\n---\n"
}

const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: w, labels: {app: web}}\nspec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\nstatus: {podIP: 127.98.5.5}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}\n---\n";

#[test]
fn ingress_routes_reach_endpoints_and_certificates_follow_sni() {
    let yaml = format!(
        "{WEB}{}{}apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: site}}\nspec:\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n  tls:\n  - {{hosts: [a.example.test], secretName: exact}}\n  - {{hosts: ['*.example.test'], secretName: wild}}\n  rules:\n  - host: a.example.test\n    http:\n      paths:\n      - {{path: /api, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}\n",
        tls_secret("exact"),
        tls_secret("wild")
    );
    let (plan, diags) = planned(&yaml);
    assert!(diags.is_empty(), "{diags:?}");
    let endpoint: SocketAddr = "127.98.5.5:8080".parse().unwrap();
    match plan.ingress.route("A.example.test:8443", "/api/v1") {
        RouteMatch::Route(r) => assert_eq!(r.backend.endpoints, vec![endpoint]),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(plan.ingress.route("a.example.test", "/other"), RouteMatch::Default(b) if b.backend.endpoints == vec![endpoint])
    );
    assert!(matches!(plan.ingress.route("unknown.test", "/api"), RouteMatch::Default(_)));
    let cert = |sni: &str| plan.ingress.certificate(Some(sni)).map(|c| c.secret.name.clone());
    assert_eq!(cert("a.example.test").as_deref(), Some("exact"));
    assert_eq!(cert("b.example.test").as_deref(), Some("wild"));
    assert_eq!(cert("c.b.example.test"), None);
    assert!(plan.ingress.exact_hosts["a.example.test"].tls);
    // Its status: the HTTP and (it has TLS) the HTTPS listener.
    let config = PlanConfig::default();
    assert_eq!(plan.ingress.status.len(), 1);
    assert_eq!(plan.ingress.status[0].addresses, vec![config.ingress_http, config.ingress_https]);
    // Keys never leave the process in serialized plans.
    let json = serde_json::to_string(&plan).unwrap();
    assert!(!json.contains("PRIVATE KEY"));
}

#[test]
fn ingress_classes_and_the_oldest_rule_wins() {
    let ingress = |name: &str, meta: &str, class: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}{meta}}}\nspec:\n  {class}\n  rules:\n  - host: x.example.test\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]\n---\n"
        )
    };
    let yaml = [
        WEB.to_string(),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}\nspec: {controller: k8s.io/ingress-nginx}\n---\n".into(),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: mine}\nspec: {controller: portico.dev/ingress-controller}\n---\n".into(),
        ingress("newer", ", creationTimestamp: '2026-02-01T00:00:00Z'", "ingressClassName: mine"),
        ingress("older", ", creationTimestamp: '2026-01-01T00:00:00Z'", "ingressClassName: mine"),
        ingress("theirs", "", "ingressClassName: nginx"),
        ingress("no-class", "", ""),
        ingress("annotated", ", annotations: {kubernetes.io/ingress.class: mine}", "ingressClassName: nginx"),
    ]
    .concat();
    let (plan, diags) = planned(&yaml);
    let served: Vec<&str> = plan.ingress.ingresses.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(served, vec!["annotated", "newer", "older"]);
    let routes = &plan.ingress.exact_hosts["x.example.test"].routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].ingress, ObjectKey::new("default", "older"));
    let warned: Vec<(&str, &str)> = diags
        .iter()
        .map(|d| (d.object.as_ref().unwrap().key.name.as_str(), d.field.as_deref().unwrap_or("")))
        .collect();
    assert!(warned.contains(&("theirs", "spec.ingressClassName")), "{warned:?}");
    assert!(warned.contains(&("no-class", "spec.ingressClassName")), "{warned:?}");
    assert!(warned.iter().any(|(n, f)| *n == "newer" && f.ends_with(".path")), "{warned:?}");
    assert!(
        warned.iter().any(|(n, _)| *n == "annotated"),
        "annotated also routes / on x.example.test after older: {warned:?}"
    );
}

#[test]
fn workloads_run_the_pods_their_controllers_would() {
    let template = |labels: &str| {
        format!(
            "  selector: {{matchLabels: {{{labels}}}}}\n  template:\n    metadata: {{labels: {{{labels}}}}}\n    spec: {{containers: [{{name: c, image: x, ports: [{{name: http, containerPort: 8080}}]}}]}}\n---\n"
        )
    };
    let yaml = [
        "apiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: {topology.kubernetes.io/zone: z2}}\nstatus: {addresses: [{type: InternalIP, address: 127.0.2.1}]}\n---\n".to_string(),
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 3\n{}", template("app: web")),
        format!("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  replicas: 2\n{}", template("app: db")),
        format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n{}", template("app: agent")),
        format!("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: many}}\nspec:\n  replicas: 5000\n{}", template("app: many")),
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {clusterIP: None, selector: {app: db}, ports: [{name: http, port: 8080}]}\n---\n".into(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n".into(),
    ]
    .concat();
    let (plan, diags) = planned(&yaml);
    let names = |prefix: &str| {
        plan.pods
            .iter()
            .filter(|p| p.key.name.starts_with(prefix))
            .map(|p| p.key.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("web-"), vec!["web-0", "web-1", "web-2"]);
    assert_eq!(names("agent-"), vec!["agent-localhost", "agent-n2"]);
    assert_eq!(names("many-").len(), portico_plan::workloads::MAX_REPLICAS as usize);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].field.as_deref(), Some("spec.replicas"));
    let web = service(&plan, "web");
    assert_eq!(web.backend_counts(), (3, 3));
    assert!(web.ports[0].endpoints.iter().all(|e| e.port == 8080));
    let db = service(&plan, "db");
    let hostnames: Vec<_> =
        db.ports[0].endpoints.iter().filter_map(|e| e.hostname.as_deref().map(str::to_owned)).collect();
    assert_eq!(hostnames, vec!["db-0", "db-1"]);
    let agent_n2 = plan.pods.iter().find(|p| p.key.name == "agent-n2").unwrap();
    assert_eq!((agent_n2.node.as_str(), agent_n2.zone.as_deref()), ("n2", Some("z2")));
    assert_eq!(agent_n2.owner.as_ref().map(ToString::to_string).as_deref(), Some("DaemonSet default/agent"));
}

#[test]
fn pods_keep_their_service_account_and_default_to_the_default_one() {
    let yaml = [
        "apiVersion: v1\nkind: Pod\nmetadata: {name: named}\nspec: {serviceAccountName: web, containers: [{name: c}]}\n---\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: unnamed}\nspec: {containers: [{name: c}]}\n---\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: empty}\nspec: {serviceAccountName: '', containers: [{name: c}]}\n---\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: legacy}\nspec: {serviceAccount: old, containers: [{name: c}]}\n---\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: both}\nspec: {serviceAccountName: new, serviceAccount: old, containers: [{name: c}]}\n---\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec: {serviceAccountName: api, containers: [{name: c}]}\n",
    ]
    .concat();
    let (plan, diags) = planned(&yaml);
    assert!(diags.is_empty(), "{diags:?}");
    let accounts: Vec<(&str, &str)> =
        plan.pods.iter().map(|p| (p.key.name.as_str(), p.service_account.as_str())).collect();
    assert_eq!(
        accounts,
        [
            ("api-0", "api"),
            ("both", "new"),
            ("empty", "default"),
            ("legacy", "old"),
            ("named", "web"),
            ("unnamed", "default")
        ]
    );
    let json = serde_json::to_value(&plan.pods).unwrap();
    assert_eq!(json[4]["serviceAccount"], "web");
    assert_eq!(json[5]["serviceAccount"], portico_plan::pods::DEFAULT_SERVICE_ACCOUNT);
}

fn annotated_ingress(name: &str, annotations: &str, path: &str, path_type: &str, service: &str) -> String {
    ingress(name, annotations, Some("c.example.test"), &[(path, path_type, service)], "")
}

#[test]
fn canaries_shadow_the_rule_with_the_same_host_and_path() {
    let yaml = [
        WEB.to_string(),
        WEB.replace("name: web", "name: web-canary"),
        annotated_ingress("main", "", "/", "Prefix", "web"),
        annotated_ingress(
            "canary",
            "nginx.ingress.kubernetes.io/canary: 'true', nginx.ingress.kubernetes.io/canary-weight: '25'",
            "/",
            "Prefix",
            "web-canary",
        ),
        annotated_ingress(
            "stray",
            "nginx.ingress.kubernetes.io/canary: 'true'",
            "/other",
            "Prefix",
            "web-canary",
        ),
    ]
    .concat();
    let (plan, diags) = planned(&yaml);
    let routes = &plan.ingress.exact_hosts["c.example.test"].routes;
    assert_eq!(routes.len(), 1, "a canary adds no route of its own");
    let canary = routes[0].canary.as_ref().expect("canary attached");
    assert_eq!(canary.ingress.name, "canary");
    assert_eq!(canary.backend.service.name, "web-canary");
    assert_eq!(canary.rule.weight, 25);
    let served: Vec<&str> = plan.ingress.status.iter().map(|s| s.ingress.name.as_str()).collect();
    assert_eq!(served, vec!["canary", "main", "stray"], "canaries are served, so they get a status");
    assert!(
        diags.iter().any(|d| d.object.as_ref().is_some_and(|o| o.key.name == "stray")
            && d.message.contains("no non-canary Ingress")),
        "{diags:#?}"
    );
}

#[test]
fn regex_paths_rewrite_with_capture_groups() {
    let yaml = [
        WEB.to_string(),
        annotated_ingress(
            "rewrite",
            "nginx.ingress.kubernetes.io/rewrite-target: /$2",
            "/something(/|$)(.*)",
            "ImplementationSpecific",
            "web",
        ),
        annotated_ingress(
            "literal",
            "nginx.ingress.kubernetes.io/rewrite-target: /$1, nginx.ingress.kubernetes.io/ssl-redirect: maybe",
            "/plain",
            "Prefix",
            "web",
        ),
        annotated_ingress("broken", "nginx.ingress.kubernetes.io/use-regex: 'true'", "/(unclosed", "ImplementationSpecific", "web"),
    ]
    .concat();
    let (plan, diags) = planned(&yaml);
    let route = |path: &str| match plan.ingress.route("c.example.test", path) {
        RouteMatch::Route(r) => Some(r),
        _ => None,
    };
    let r = route("/SOMETHING/new/path").expect("regex paths are case-insensitive");
    assert_eq!(r.upstream_path("/SOMETHING/new/path"), "/new/path");
    assert_eq!(route("/something").map(|r| r.upstream_path("/something")).as_deref(), Some("/"));
    assert!(route("/somethingelse").is_none());
    let plain = route("/plain/x").expect("plain route");
    assert_eq!(plain.upstream_path("/plain/x"), "/plain/x", "captures on a Prefix path: no rewrite");
    let fields: Vec<(&str, &str)> = diags
        .iter()
        .filter_map(|d| Some((d.object.as_ref()?.key.name.as_str(), d.field.as_deref()?)))
        .collect();
    assert!(fields.contains(&("literal", "spec.rules[0].http.paths[0].pathType")), "{fields:?}");
    assert!(
        fields.contains(&("literal", "metadata.annotations[nginx.ingress.kubernetes.io/ssl-redirect]")),
        "{fields:?}"
    );
    assert!(fields.contains(&("broken", "spec.rules[0].http.paths[0].path")), "{fields:?}");
}

#[test]
fn nodes_keep_their_pod_cidrs_labels_and_readiness() {
    let yaml = "\
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {disk: ssd}}
spec: {podCIDRs: [198.18.1.0/24, '2001:db8:1::/64'], podCIDR: 198.18.1.0/24}
status:
  addresses: [{type: InternalIP, address: 198.18.0.11}, {type: Hostname, address: n1}]
  conditions: [{type: Ready, status: 'False'}]
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 198.18.2.0/24}
";
    let (plan, diags) = planned(yaml);
    assert!(diags.is_empty(), "{diags:?}");
    let node = |name: &str| plan.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("{name}"));
    let n1 = node("n1");
    let cidrs: Vec<String> = n1.pod_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(cidrs, ["198.18.1.0/24", "2001:db8:1::/64"], "both families of podCIDRs");
    assert_eq!(n1.addresses, ["198.18.0.11".parse::<IpAddr>().unwrap()], "only IP addresses");
    assert!(!n1.ready, "its Ready condition says False");
    assert_eq!(n1.labels.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(
        n1.labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("n1"),
        "as the kubelet labels it"
    );
    let n2 = node("n2");
    assert_eq!(n2.pod_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(), ["198.18.2.0/24"]);
    assert!(n2.ready, "no condition: ready");
    // The local node is there too, with the configuration's pod CIDR.
    let local = node(&PlanConfig::default().local_node);
    assert_eq!(local.pod_cidrs, [PlanConfig::default().pod_cidr]);
    assert!(local.ready);
}
