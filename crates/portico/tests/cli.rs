//! End-to-end tests of the `portico` binary: check, explain, echo and the state folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use portico_testkit::http;
use portico_testkit::manifests::Service;
use portico_testkit::net::{LOCALHOST, free_port};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `portico` binary with no state folder of its own: `explain` would otherwise read the
/// one `run` keeps for whoever runs the tests.
fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
    command.current_dir(repo()).env("XDG_STATE_HOME", std::env::temp_dir().join("portico-tests-no-state"));
    command
}

fn portico(args: &[&str]) -> Output {
    command().args(args).output().expect("portico runs")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn broken_manifests_get_exactly_the_expected_diagnostics() {
    let out = portico(&["check", "--output", "json", "tests/broken"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    let mut got: Vec<Value> = report["diagnostics"].as_array().unwrap().clone();
    let expected = std::fs::read_to_string(repo().join("tests/broken/EXPECTED")).unwrap();
    let mut want = 0;
    for line in expected.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        want += 1;
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let [severity, file, line_no, object, field, words] = cols[..] else {
            panic!("bad EXPECTED line {line}")
        };
        let matches = |d: &Value| {
            let d_object = match &d["object"] {
                Value::Null => "-".to_string(),
                o => {
                    let ns = o["namespace"].as_str().unwrap_or("");
                    let name = o["name"].as_str().unwrap_or("");
                    let key = if ns.is_empty() { name.to_string() } else { format!("{ns}/{name}") };
                    format!("{} {key}", o["kind"].as_str().unwrap_or(""))
                }
            };
            d["severity"] == severity
                && d["origin"]["file"].as_str().is_some_and(|f| f.ends_with(file))
                && d["origin"]["line"].as_u64().map(|l| l.to_string()).as_deref() == Some(line_no)
                && d_object == object
                && d["field"].as_str().unwrap_or("-") == field
                && d["message"].as_str().is_some_and(|m| m.contains(words))
        };
        let found: Vec<usize> = got.iter().enumerate().filter(|(_, d)| matches(d)).map(|(i, _)| i).collect();
        assert_eq!(found.len(), 1, "expected exactly one diagnostic for: {line}\ngot: {got:#?}");
        got.remove(found[0]);
    }
    assert!(got.is_empty(), "unexpected diagnostics: {got:#?}");
    assert_eq!(report["errors"].as_u64().unwrap() + report["warnings"].as_u64().unwrap(), want);
}

#[test]
fn every_example_checks_clean() {
    let mut count = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        count += 1;
        let out = portico(&["check", "--output", "json", path.to_str().unwrap()]);
        let report = json(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {report:#}", path.display());
        assert_eq!(report["errors"], 0, "{}", path.display());
        assert!(report["objects"].as_u64().unwrap() > 0, "{} is empty", path.display());
    }
    assert!(count >= 8, "only {count} example folders");
}

#[test]
fn all_examples_together_as_a_shell_glob_names_them() {
    // `portico check examples/*` also passes examples/README.md; the shared IngressClass
    // appears in two folders, identically.
    let mut args = vec!["check".to_string()];
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(repo().join("examples")).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    args.extend(entries.iter().map(|p| p.to_str().unwrap().to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_portico")).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("README.md") && text.contains("not a manifest file"), "{text}");
    // The warnings: the README, and examples/lab's Service without endpoints, on purpose.
    assert!(text.contains("0 errors, 2 warnings"), "{text}");
}

#[test]
fn explain_quickstart_shows_every_method_with_reach_and_cost() {
    let out = portico(&["explain", "--output", "json", "examples/quickstart"]);
    assert!(out.status.success());
    let report = json(&out);
    let rows = report["exposures"].as_array().unwrap();
    let row = |method: &str| {
        rows.iter().find(|r| r["method"] == method).unwrap_or_else(|| panic!("no {method} row in {rows:#?}"))
    };
    for (method, layer, routing, reach) in [
        ("ClusterIP", "L4", "addressAndPort", Value::from("cluster")),
        ("NodePort", "L4", "addressAndPort", Value::from("everyNode")),
        ("LoadBalancer", "L4", "addressAndPort", Value::from("outside")),
        ("Ingress", "L7", "hostAndPath", Value::from("outside")),
        ("Headless", "DNS", "name", Value::from("cluster")),
        ("ExternalName", "DNS", "name", Value::from("cluster")),
    ] {
        let r = row(method);
        assert_eq!(r["layer"], layer, "{method}");
        assert_eq!(r["routing"], routing, "{method}");
        assert_eq!(r["reachableFrom"], reach, "{method}");
    }
    assert_eq!(row("HostPort")["reachableFrom"]["node"], "localhost");
    // Only LoadBalancer rows cost an external IP of their own, from the loopback pool.
    for r in rows {
        let ips = r["externalIps"].as_array().unwrap();
        if r["method"] == "LoadBalancer" {
            assert_eq!(ips.len(), 1);
            assert!(ips[0].as_str().unwrap().starts_with("127.97.0."));
        } else {
            assert!(ips.is_empty(), "{r:#}");
        }
    }
    let ingress = row("Ingress");
    assert_eq!(ingress["tls"], true);
    assert!(ingress["addresses"][0].as_str().unwrap().starts_with("https://quickstart.example.test:8443/"));
    let static_node_port =
        rows.iter().find(|r| r["method"] == "NodePort" && r["object"]["name"] == "web-nodeport").unwrap();
    assert_eq!(static_node_port["ports"][0], "30081/TCP");
    assert_eq!(row("Headless")["ready"], 2);
    // The nodes the methods are served on: this host alone, with the pod CIDR.
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    assert_eq!((&nodes[0]["name"], &nodes[0]["ready"]), (&Value::from("localhost"), &Value::from(true)));
    assert_eq!(nodes[0]["podCidrs"], serde_json::json!(["127.98.0.0/16"]));
    let text = String::from_utf8(portico(&["explain", "examples/quickstart"]).stdout).unwrap();
    let table = text.lines().take(2).collect::<Vec<_>>().join("\n");
    assert!(
        table.starts_with("  NODE") && table.contains("localhost  127.0.0.1  127.98.0.0/16  yes"),
        "{text}"
    );
}

#[test]
fn explain_text_fits_in_100_columns() {
    let out = portico(&["explain", "examples/quickstart", "examples/ingress-tls", "examples/nodeport"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("LoadBalancer") && text.contains("ENTRY POINT"));
    // The LoadBalancer-versus-Ingress comparison reads off the table and its legend.
    let routing = |method: &str| {
        let row = text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|words| {
            words.first() == Some(&method)
                && words.get(1).is_some_and(|layer| ["L4", "L7", "DNS"].contains(layer))
        });
        row.unwrap()[2].to_owned()
    };
    assert_eq!(routing("LoadBalancer"), "ip:port");
    assert_eq!(routing("Ingress"), "host+path");
    assert!(text.contains("ROUTING") && text.contains("LoadBalancer takes an IP of its own"), "{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "too wide ({}): {line}", line.chars().count());
    }
}

/// A LoadBalancer Service named `name`.
fn lb_service(name: &str) -> String {
    Service::new(name).kind("LoadBalancer").port("{port: 80}").to_string()
}

/// A temporary folder holding a manifest folder `m` with the LoadBalancer Service `alpha`.
fn folder_with_alpha() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("m");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("a.yaml"), lb_service("alpha")).unwrap();
    (dir, manifests)
}

#[test]
fn state_folder_keeps_allocations_across_runs_and_edits() {
    let (dir, manifests) = folder_with_alpha();
    let state = dir.path().join("state");
    let args =
        ["explain", "--output", "json", "--state", state.to_str().unwrap(), manifests.to_str().unwrap()];
    let addresses = |report: &Value, name: &str| -> Vec<Value> {
        report["exposures"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["object"]["name"] == name)
            .map(|r| r["addresses"].clone())
            .collect()
    };
    let first = json(&portico(&args));
    assert!(state.join("allocations.json").exists());
    // A Service added before it (in name order and in file order) must not move it.
    std::fs::write(manifests.join("0.yaml"), lb_service("aardvark")).unwrap();
    let second = json(&portico(&args));
    assert_eq!(addresses(&first, "alpha"), addresses(&second, "alpha"));
    assert_eq!(addresses(&second, "aardvark").len(), 3);
    // The saved state is what keeps it: the LB pool hands out lowest-first, so without the
    // state folder the older "aardvark" would now get alpha's IP.
    let fresh = json(&portico(&["explain", "--output", "json", manifests.to_str().unwrap()]));
    assert_ne!(addresses(&fresh, "alpha"), addresses(&second, "alpha"));
}

#[test]
fn explain_shows_the_addresses_run_serves() {
    let (dir, manifests) = folder_with_alpha();
    let ranges = ["--service-cidr", "127.134.0.0/24", "--lb-pool", "127.134.1.0/24"];
    let admin = SocketAddr::new(LOCALHOST, free_port());
    // `run` with its default state folder, under a home of the test's own.
    let mut run = command()
        .env("XDG_STATE_HOME", dir.path())
        .args([
            "run",
            "--manifests",
            manifests.to_str().unwrap(),
            "--admin",
            &admin.to_string(),
            "--dns",
            "off",
        ])
        .args(["--ingress-http", "127.134.4.1:8080", "--ingress-https", "127.134.4.1:8443"])
        .args(["--node-address", "127.134.3.1"])
        .args(ranges)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let served = loop {
        let plan = http::get_blocking(admin, "admin", "/plan")
            .ok()
            .and_then(|answer| serde_json::from_str::<Value>(&answer.body).ok());
        if let Some(plan) = plan.filter(|p| p["generation"].as_u64() >= Some(1)) {
            break plan;
        }
        assert!(std::time::Instant::now() < deadline, "run did not serve a plan");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    run.kill().unwrap();
    let _ = run.wait();
    let lb_ip = served["services"][0]["loadBalancerIps"][0].as_str().unwrap().to_owned();
    // A Service added before it: with run's state, alpha keeps its address; afresh, the older
    // "aardvark" would take it (the pool hands out lowest first).
    std::fs::write(manifests.join("0.yaml"), lb_service("aardvark")).unwrap();
    let state_file = dir.path().join("portico/allocations.json");
    let saved = std::fs::read(&state_file).unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "--output", "json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&ranges);
        args.push(manifests.to_str().unwrap());
        let out = command().env("XDG_STATE_HOME", dir.path()).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json(&out)
    };
    let lb_of = |report: &Value, name: &str| -> String {
        let rows = report["exposures"].as_array().unwrap();
        let row = rows.iter().find(|r| r["object"]["name"] == name && r["method"] == "LoadBalancer").unwrap();
        row["externalIps"][0].as_str().unwrap().to_owned()
    };
    let shown = explain(&[]);
    assert_eq!(lb_of(&shown, "alpha"), lb_ip, "explain shows what run serves");
    assert_eq!(std::fs::read(&state_file).unwrap(), saved, "explain must not write run's state");
    let fresh = explain(&["--state", "none"]);
    assert_ne!(lb_of(&fresh, "alpha"), lb_ip, "--state none starts afresh");
}

#[test]
fn echo_answers_http_with_json() {
    let mut child = command()
        .args(["echo", "--listen", "127.0.0.1:0", "--name", "pod-a", "--namespace", "ns"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line.split_whitespace().find(|w| w.starts_with("127.0.0.1:")).expect("address in banner");
    let answer = http::get_blocking(addr.parse().unwrap(), "demo", "/hello?x=1").unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let v = answer.json();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["host"], "demo");
    assert_eq!(v["pod"], "pod-a");
    assert_eq!(v["namespace"], "ns");
}

#[test]
fn missing_path_is_a_clear_error_not_a_panic() {
    let out = portico(&["check", "no/such/folder"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no/such/folder") && text.contains("cannot read"), "{text}");
}

#[test]
fn the_cluster_domain_is_a_flag_and_a_bad_one_is_named() {
    let out = portico(&["explain", "-o", "json", "--cluster-domain", "Corp.Example.", "examples/quickstart"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("db.quickstart.svc.corp.example"), "{text}");
    assert!(!text.contains("svc.cluster.local"), "{text}");
    let bad = portico(&["explain", "--cluster-domain", "bad_name!", "examples/quickstart"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--cluster-domain") && err.contains("bad_name!") && err.contains("not a DNS name"),
        "{err}"
    );
}

#[test]
fn two_service_cidrs_of_one_family_are_refused_and_dual_stack_is_planned() {
    let same = portico(&[
        "check",
        "--service-cidr",
        "127.96.0.0/16",
        "--service-cidr",
        "127.95.0.0/16",
        "examples/quickstart",
    ]);
    assert_eq!(same.status.code(), Some(2));
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(err.contains("--service-cidr") && err.contains("same IP family"), "{err}");
    let dual = portico(&[
        "explain",
        "-o",
        "json",
        "--service-cidr",
        "127.96.0.0/16",
        "--service-cidr",
        "fd00:96::/108",
        "examples/quickstart",
    ]);
    assert!(dual.status.success(), "{}", String::from_utf8_lossy(&dual.stderr));
    let report = json(&dual);
    assert!(report["diagnostics"].as_array().unwrap().is_empty(), "{report:#}");
}

/// `portico cleanup --pod-netns DIR --host off` on namespaces this test makes (root; skipped,
/// saying so, without root, `ip` or `nft`): the capture goes from each, another table stays,
/// and the host's own namespace is not touched.
#[test]
fn cleanup_takes_portico_tables_out_of_each_pod_namespace() {
    if !portico_testkit::root::able(&["ip", "nft"]) {
        return;
    }
    let names: Vec<String> =
        ["a", "b"].iter().map(|n| format!("pt-cleanup-{}-{n}", std::process::id())).collect();
    let dir = tempfile::tempdir().unwrap();
    for name in &names {
        assert!(Command::new("ip").args(["netns", "add", name]).status().unwrap().success());
        let exec = |args: &[&str]| {
            let mut argv = vec!["netns", "exec", name.as_str()];
            argv.extend(args);
            Command::new("ip").args(&argv).output().unwrap()
        };
        assert!(exec(&["nft", "add", "table", "ip", "portico"]).status.success());
        assert!(exec(&["nft", "add", "table", "ip6", "portico-services-03"]).status.success());
        assert!(exec(&["nft", "add", "table", "inet", "other"]).status.success());
        // The folder holds links to the namespaces, as /run/netns holds the runtime's.
        std::os::unix::fs::symlink(Path::new("/run/netns").join(name), dir.path().join(name)).unwrap();
    }
    let out = portico(&["cleanup", "--host", "off", "--pod-netns", dir.path().to_str().unwrap()]);
    let listings: Vec<String> = names
        .iter()
        .map(|name| {
            let listed =
                Command::new("ip").args(["netns", "exec", name, "nft", "list", "tables"]).output().unwrap();
            let _ = Command::new("ip").args(["netns", "del", name]).status();
            String::from_utf8(listed.stdout).unwrap()
        })
        .collect();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("from 2 Pod network namespaces"));
    for listing in listings {
        assert_eq!(listing.trim(), "table inet other");
    }
}
