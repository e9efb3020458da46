//! `deploy/` against the code: rendered by `kubectl kustomize` (skipped, saying so, without
//! kubectl). Each service account is granted exactly what its role uses: list and watch on every
//! collection the API source reads, and the writes of `portico-status` for its role (the
//! Lease only in Portico's namespace); the agent runs in the host's network as root with
//! NET_ADMIN and NET_RAW only, the ingress as nonroot with no capability; each reads flags
//! `portico run` takes from its ConfigMap, and the ports, probes, Services, Lease names,
//! published Service and IngressClass agree with those flags.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use portico::run::RunConfig;
use portico_source::cluster::RESOURCES;
use portico_status::PERMISSIONS;
use serde_json::Value;

/// The rendered objects of `deploy/`, or `None` without kubectl.
fn rendered() -> Option<Vec<Value>> {
    rendered_from("")
}

/// The rendered objects of the folder `under` deploy/, or `None` without kubectl.
fn rendered_from(under: &str) -> Option<Vec<Value>> {
    portico_testkit::kustomize::rendered(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(under),
    )
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> =
        objects.iter().filter(|o| o["kind"] == kind && o["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "one {kind} {name}");
    found[0]
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

/// A permission as (cluster-wide, group, resource, verb).
type Grant = (bool, String, String, String);

/// Everything the rules bound to the service account `account` grant.
fn grants(objects: &[Value], account: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for binding in objects.iter().filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        let bound = binding["subjects"].as_array().unwrap().iter().any(|s| s["name"] == account);
        if !bound {
            continue;
        }
        let cluster_wide = binding["kind"] == "ClusterRoleBinding";
        let role = named(
            objects,
            binding["roleRef"]["kind"].as_str().unwrap(),
            binding["roleRef"]["name"].as_str().unwrap(),
        );
        if !cluster_wide {
            // A Role grants in its own namespace: Portico's, where the Leases and the CA are.
            for namespaced in [binding, role] {
                assert_eq!(namespaced["metadata"]["namespace"], "portico-system", "{namespaced}");
            }
        }
        for rule in role["rules"].as_array().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.insert((cluster_wide, group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// What a role needs: reads of every collection, and its writes (the Lease and the shared
/// Secrets in the namespace only; the mesh's with the mesh).
fn needs(services: bool, mesh: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for (_, group, _, plural) in RESOURCES {
        for verb in ["list", "watch"] {
            out.insert((true, group.to_owned(), plural.to_owned(), verb.to_owned()));
        }
    }
    let of_role = |p: &&portico_status::Permission| if services { p.services } else { p.ingresses };
    for permission in PERMISSIONS.iter().filter(of_role).filter(|p| mesh || !p.mesh) {
        for verb in permission.verbs {
            let cluster_wide = !permission.namespaced;
            out.insert((
                cluster_wide,
                permission.group.to_owned(),
                permission.resource.to_owned(),
                verb.to_string(),
            ));
        }
    }
    out
}

#[test]
fn each_service_account_is_granted_what_its_role_uses_and_nothing_more() {
    let Some(objects) = rendered() else { return };
    let agent = &named(&objects, "DaemonSet", "portico-agent")["spec"]["template"]["spec"];
    let ingress = &named(&objects, "Deployment", "portico-ingress")["spec"]["template"]["spec"];
    for (pod, services) in [(agent, true), (ingress, false)] {
        let account = pod["serviceAccountName"].as_str().unwrap();
        named(&objects, "ServiceAccount", account);
        assert_eq!(grants(&objects, account), needs(services, false), "{account}");
    }
}

/// The container's flags as `portico run` reads them: its args, the node's name in place of
/// `$(NODE_NAME)` and the ConfigMap's file in place of `@/etc/portico/flags`.
fn flags_of(objects: &[Value], pod: &Value, dir: &Path) -> RunConfig {
    let container = &pod["containers"][0];
    let mounted = pod["volumes"].as_array().unwrap().iter().find(|v| v["configMap"].is_object()).unwrap();
    let config_map = named(objects, "ConfigMap", mounted["configMap"]["name"].as_str().unwrap());
    let file = dir.join(config_map["metadata"]["name"].as_str().unwrap());
    std::fs::write(&file, config_map["data"]["flags"].as_str().unwrap()).unwrap();
    let args: Vec<String> = strings_in_order(&container["args"]);
    assert_eq!(args[0], "run", "the image's entry point is the binary");
    let argv: Vec<String> = args[1..]
        .iter()
        .map(|a| match a.as_str() {
            "$(NODE_NAME)" => "node-1".to_owned(),
            "@/etc/portico/flags" => format!("@{}", file.display()),
            other => other.to_owned(),
        })
        .collect();
    let mount =
        container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == mounted["name"]).unwrap();
    assert_eq!(mount["mountPath"], "/etc/portico");
    portico::cli::run_config(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn strings_in_order(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn port<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("port {name}"))
}

fn probes_use_admin(container: &Value, config: &RunConfig) {
    assert_eq!(port(container, "admin")["containerPort"].as_u64(), Some(u64::from(config.admin.port())));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
}

#[test]
fn the_agent_runs_in_the_host_network_as_root_with_two_capabilities_and_serves_dns() {
    let Some(objects) = rendered() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pod = &named(&objects, "DaemonSet", "portico-agent")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the node's nftables rules are in the host's namespace");
    assert_eq!(pod["dnsPolicy"], "Default", "upstreams from the node's resolv.conf, not itself");
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsUser"], 0, "the image's user is nonroot; capabilities need root");
    assert_eq!(strings(&security["capabilities"]["add"]), ["NET_ADMIN", "NET_RAW"].map(String::from).into());
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"].map(String::from).into());
    let config = flags_of(&objects, pod, dir.path());
    let cluster = config.cluster.as_ref().expect("the agent reads the API server");
    assert!(config.roles.agent && !config.roles.ingress);
    assert_eq!(cluster.lease, "portico-agent");
    assert!(config.plan.load_balancer_pools.is_empty(), "pools are IPAddressPools in a cluster");
    probes_use_admin(container, &config);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["host"],
            config.admin.ip().to_string(),
            "host network: {probe}"
        );
    }
    let heartbeat = config.announce.expect("LoadBalancer addresses announced");
    assert_eq!(port(container, "heartbeat")["containerPort"].as_u64(), Some(u64::from(heartbeat)));
    assert!(config.mesh.pod_netns.is_none(), "the mesh's capture is deploy/mesh's");
    // Cluster DNS: the Service's target ports are the agent's, which are the flag's port.
    let dns = config.dns.expect("the agents answer cluster DNS");
    let service = named(&objects, "Service", "portico-dns");
    let labels = &named(&objects, "DaemonSet", "portico-agent")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the DNS Service selects the agents");
    }
    for (service_port, protocol) in
        service["spec"]["ports"].as_array().unwrap().iter().map(|p| (p, p["protocol"].clone()))
    {
        let target = port(container, service_port["targetPort"].as_str().unwrap());
        assert_eq!(target["containerPort"].as_u64(), Some(u64::from(dns.port())));
        assert_eq!(target["protocol"], protocol);
        assert_eq!(service_port["port"], 53);
    }
    assert_eq!(
        strings(&Value::Array(
            service["spec"]["ports"].as_array().unwrap().iter().map(|p| p["protocol"].clone()).collect()
        )),
        ["TCP", "UDP"].map(String::from).into()
    );
}

#[test]
fn the_ingress_runs_as_nonroot_and_publishes_its_load_balancer_service() {
    let Some(objects) = rendered() else { return };
    let dir = tempfile::tempdir().unwrap();
    let deployment = named(&objects, "Deployment", "portico-ingress");
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod["hostNetwork"].is_null() || pod["hostNetwork"] == false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert!(container["securityContext"]["capabilities"]["add"].is_null(), "no capability");
    assert_eq!(
        strings(&container["securityContext"]["capabilities"]["drop"]),
        ["ALL"].map(String::from).into()
    );
    let config = flags_of(&objects, pod, dir.path());
    let cluster = config.cluster.as_ref().expect("the ingress reads the API server");
    assert!(config.roles.ingress && !config.roles.agent);
    assert_eq!(cluster.lease, "portico-ingress", "its own election, apart from the agents'");
    assert!(config.admin.ip().is_unspecified(), "the kubelet probes the Pod's address");
    probes_use_admin(container, &config);
    // Unprivileged ports, which the Service maps 80 and 443 to.
    assert_eq!(
        port(container, "http")["containerPort"].as_u64(),
        Some(u64::from(config.plan.ingress_http.port()))
    );
    assert_eq!(
        port(container, "https")["containerPort"].as_u64(),
        Some(u64::from(config.plan.ingress_https.port()))
    );
    assert!(config.plan.ingress_http.port() >= 1024 && config.plan.ingress_https.port() >= 1024);
    let published = cluster.publish_service.as_ref().expect("--publish-service");
    let service = named(&objects, "Service", &published.name);
    assert_eq!(service["metadata"]["namespace"], published.namespace.as_str());
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]);
    let ports: BTreeSet<(u64, String)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), p["targetPort"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(ports, [(80, "http".to_owned()), (443, "https".to_owned())].into());
    let class = objects.iter().find(|o| o["kind"] == "IngressClass").unwrap();
    assert_eq!(class["spec"]["controller"], portico_plan::config::INGRESS_CONTROLLER);
    assert!(config.plan.ingress_class_names.iter().any(|n| class["metadata"]["name"] == n.as_str()));
    assert_eq!(
        container["image"],
        named(&objects, "DaemonSet", "portico-agent")["spec"]["template"]["spec"]["containers"][0]["image"],
        "one image"
    );
}

#[test]
fn with_the_mesh_the_agent_also_enters_pods_namespaces_found_under_run_netns() {
    let Some(objects) = rendered_from("mesh") else { return };
    let dir = tempfile::tempdir().unwrap();
    let pod = &named(&objects, "DaemonSet", "portico-agent")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let added = strings(&container["securityContext"]["capabilities"]["add"]);
    assert_eq!(
        added,
        ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"].map(String::from).into(),
        "setns needs SYS_ADMIN"
    );
    let config = flags_of(&objects, pod, dir.path());
    let searched = config.mesh.pod_netns.clone().expect("--pod-netns");
    assert!(!searched.contains("{name}"), "a folder searched by address, not a template");
    let mount =
        container["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == searched.as_str());
    let mount = mount.expect("the folder is mounted");
    assert_eq!(mount["mountPropagation"], "HostToContainer", "namespaces made later are seen");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["hostPath"]["path"], "/run/netns");
    assert_eq!(config.mesh.ca_secret.as_deref(), Some("portico-mesh-ca"));
    assert_eq!(grants(&objects, "portico-agent"), needs(true, true), "and the CA Secret");
    assert_eq!(grants(&objects, "portico-ingress"), needs(false, true));
    // Everything else is the base's, and the Role for the Secret.
    let base = rendered().unwrap();
    assert_eq!(objects.len(), base.len() + 2);
}
