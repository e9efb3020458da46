//! `portico run` against temporary manifest folders, reached over real loopback sockets: the
//! serve loop in this process (`portico::run::serve`, configured from the same flags), or as
//! a child process for what only a process shows (signals, resource limits, its output and
//! its memory). Each test uses its own address ranges, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portico_testkit::manifests::Service;
use portico_testkit::net::{Block, LOCALHOST, free_port};
use portico_testkit::{dns, http};
use serde_json::Value;

/// How a `portico run` runs.
enum Process {
    /// A child process.
    Child(Child),
    /// The serve loop on a runtime of its own in a thread of this process; sending on `stop`
    /// stops it as a signal would.
    InProcess { stop: Option<tokio::sync::oneshot::Sender<()>>, thread: Option<std::thread::JoinHandle<()>> },
}

/// A running `portico run` and its folders; stopped when dropped.
struct Portico {
    process: Process,
    admin: SocketAddr,
    manifests: PathBuf,
    /// The Ingress HTTP listener.
    ingress: SocketAddr,
    /// Cluster DNS, UDP and TCP.
    dns: SocketAddr,
    access_log: PathBuf,
    /// Where the log goes when the launch keeps it.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Portico {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::InProcess { stop, thread } => {
                drop(stop.take());
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Starts `portico run` on `files` with the address block 127.<net>.0.0/16 of its own.
fn start(net: u8, files: &[(&str, String)]) -> Portico {
    start_with(net, files, Launch::default())
}

/// How to start `portico run` beyond the usual.
#[derive(Default)]
struct Launch<'a> {
    /// Async worker threads (`TOKIO_WORKER_THREADS`); the default is one per core.
    workers: Option<usize>,
    /// Extra flags.
    flags: &'a [&'a str],
    /// As a child process, to be sent signals.
    child: bool,
    /// A limit on open files (the shell's `ulimit -n`): a child process.
    open_files: Option<u32>,
    /// Keep standard output, for the test to read: a child process.
    stdout: bool,
    /// Keep the log (standard error) in `Portico::log`: a child process.
    log: bool,
    /// Read the objects from the API server this kubeconfig names, not from the files.
    kubeconfig: Option<std::path::PathBuf>,
}

/// `start` as `launch` says.
fn start_with(net: u8, files: &[(&str, String)], launch: Launch<'_>) -> Portico {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for (name, text) in files {
        std::fs::write(manifests.join(name), text).unwrap();
    }
    let block = Block::new(net);
    let admin = SocketAddr::new(LOCALHOST, free_port());
    let ingress = block.addr(4, 1, 8080);
    let dns = block.addr(5, 1, 10053);
    let access_log = dir.path().join("access.log");
    let log = dir.path().join("portico.log");
    let mut args: Vec<String> = match &launch.kubeconfig {
        Some(kubeconfig) => vec!["--cluster".into(), "--kubeconfig".into(), kubeconfig.display().to_string()],
        None => vec!["--manifests".into(), manifests.display().to_string()],
    };
    args.extend(["--state".into(), dir.path().join("state").display().to_string()]);
    args.extend(
        [
            "--admin",
            &admin.to_string(),
            "--service-cidr",
            &block.subnet(0),
            "--lb-pool",
            &block.subnet(1),
            "--pod-cidr",
            &block.subnet(2),
            "--node-address",
            &block.ip(3, 1).to_string(),
            "--debounce",
            "100ms",
            "--drain",
            "2s",
            "--udp-idle",
            "5s",
            "--ingress-http",
            &ingress.to_string(),
            "--ingress-https",
            &block.addr(4, 1, 8443).to_string(),
            "--access-log",
            &access_log.display().to_string(),
            "--dns",
            &dns.to_string(),
        ]
        .map(String::from),
    );
    args.extend(launch.flags.iter().map(|f| (*f).to_owned()));
    let process = if launch.child || launch.open_files.is_some() || launch.stdout || launch.log {
        Process::Child(spawn_child(&args, &launch, &log))
    } else {
        serve_in_process(&args, launch.workers)
    };
    let portico = Portico { process, admin, manifests, ingress, dns, access_log, log, _dir: dir };
    portico.wait_for(|plan| plan["generation"].as_u64() >= Some(1));
    portico
}

/// `portico run ARGS` as a child process, as `launch` says.
fn spawn_child(args: &[String], launch: &Launch<'_>, log: &std::path::Path) -> Child {
    let mut command = match launch.open_files {
        Some(limit) => {
            let mut shell = Command::new("sh");
            shell.args([
                "-c",
                &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                env!("CARGO_BIN_EXE_portico"),
            ]);
            shell
        }
        None => Command::new(env!("CARGO_BIN_EXE_portico")),
    };
    if let Some(workers) = launch.workers {
        command.env("TOKIO_WORKER_THREADS", workers.to_string());
    }
    command
        .arg("run")
        .args(args)
        .stdout(if launch.stdout { Stdio::piped() } else { Stdio::null() })
        .stderr(if launch.log { Stdio::from(std::fs::File::create(log).unwrap()) } else { Stdio::null() })
        .spawn()
        .unwrap()
}

/// `portico run ARGS` as its serve loop in a thread of this process, on a runtime of its own
/// (`workers` threads, one per core by default).
fn serve_in_process(args: &[String], workers: Option<usize>) -> Process {
    let config = portico::cli::run_config(args).expect("the flags are valid");
    let runtime = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut multi = tokio::runtime::Builder::new_multi_thread();
            multi.worker_threads(n);
            multi
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let served = runtime.block_on(portico::run::serve(config, async {
            let _ = stopped.await;
        }));
        runtime.shutdown_background();
        served.expect("run served and stopped cleanly");
    });
    Process::InProcess { stop: Some(stop), thread: Some(thread) }
}

impl Portico {
    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, "t", path).unwrap_or((0, String::new()))
    }

    fn plan(&self) -> Value {
        let (status, body) = self.get("/plan");
        if status != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap()
    }

    /// Waits (up to 15 s) until the served plan satisfies `ready`.
    fn wait_for(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let plan = self.plan();
            if ready(&plan) {
                return plan;
            }
            assert!(Instant::now() < deadline, "timed out; last plan: {plan:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn write(&self, name: &str, text: &str) {
        // Write then rename, as editors and ConfigMap updates do.
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.manifests.join(name)).unwrap();
    }

    fn generation(&self) -> u64 {
        self.plan()["generation"].as_u64().unwrap_or(0)
    }

    /// The child process (started with [`Launch::child`] or another child-only setting).
    fn child(&mut self) -> &mut Child {
        match &mut self.process {
            Process::Child(child) => child,
            Process::InProcess { .. } => panic!("this test needs Launch {{ child: true, .. }}"),
        }
    }

    /// Sends the process a signal (`TERM`, `INT`).
    fn signal(&mut self, name: &str) {
        let pid = self.child().id().to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status();
        assert!(status.unwrap().success());
    }

    /// How the process exited, if it did within `time`.
    fn exit_within(&mut self, time: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + time;
        while Instant::now() < deadline {
            if let Some(status) = self.child().try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A GET of `path` for `host` through `addr`: the status and the body.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    http::get_blocking(addr, host, path).map(|answer| (answer.status, answer.body))
}

/// The pod that answered a GET through `addr`.
fn pod_at(addr: SocketAddr) -> String {
    http::get_blocking(addr, "t", "/").unwrap_or_else(|e| panic!("{addr}: {e}")).pod()
}

/// One request on an open keep-alive connection; returns the pod that answered.
fn ask(stream: &mut TcpStream) -> String {
    http::ask_blocking(stream).pod()
}

fn udp_echo(addr: SocketAddr) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(b"ping", addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = s.recv_from(&mut buf).unwrap_or_else(|e| panic!("no UDP answer from {addr}: {e}"));
    assert_eq!(from, addr);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The addresses cluster DNS at `server` answers for `name` (A records, over UDP).
fn dns_addresses(server: SocketAddr, name: &str) -> Vec<IpAddr> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&a_query(name), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).unwrap_or_else(|e| panic!("no DNS answer from {server}: {e}"));
    a_records(&buf[..n])
}

/// The A records cluster DNS gives for `name` over TCP; `Err` when it cannot be asked.
fn dns_addresses_over_tcp(server: SocketAddr, name: &str) -> std::io::Result<Vec<IpAddr>> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let query = a_query(name);
    s.write_all(&u16::try_from(query.len()).unwrap().to_be_bytes())?;
    s.write_all(&query)?;
    let mut length = [0u8; 2];
    s.read_exact(&mut length)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    s.read_exact(&mut answer)?;
    Ok(a_records(&answer))
}

/// A DNS query for the A records of `name`.
fn a_query(name: &str) -> Vec<u8> {
    dns::query(name, hickory_proto::rr::RecordType::A, 3).to_vec().unwrap()
}

/// The addresses of the A records in a DNS answer.
fn a_records(answer: &[u8]) -> Vec<IpAddr> {
    dns::a_records(&hickory_proto::op::Message::from_vec(answer).unwrap())
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - name: echo\n        image: ghcr.io/portico-dev/portico:0.1\n        args: [echo]\n        ports:\n        - {{name: http, containerPort: 8080}}\n        - {{name: dns, containerPort: 8080, protocol: UDP}}\n"
    )
}

/// A Service `name` of type `kind` over the Pods `app: <app>`, with HTTP and DNS ports and the
/// spec lines `extra`.
fn service(name: &str, app: &str, kind: &str, extra: &str) -> String {
    Service::new(name)
        .kind(kind)
        .app(app)
        .spec(extra)
        .port("{name: http, port: 80, targetPort: http}")
        .port("{name: dns, port: 53, protocol: UDP, targetPort: 8080}")
        .to_string()
}

fn service_plan<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["services"].as_array().unwrap().iter().find(|s| s["key"]["name"] == name).unwrap()
}

fn ip(v: &Value) -> IpAddr {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn every_method_reaches_its_pods_over_tcp_and_udp() {
    let files = [
        ("web.yaml", deployment("web", 2)),
        (
            "services.yaml",
            [
                service("cip", "web", "ClusterIP", ""),
                service("np", "web", "NodePort", ""),
                service("lb", "web", "LoadBalancer", ""),
                service("ext", "web", "ClusterIP", "  externalIPs: [127.121.9.10]\n"),
            ]
            .concat(),
        ),
        (
            "edge.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: edge}\nspec:\n  containers:\n  - name: echo\n    image: portico\n    args: [echo]\n    ports:\n    - {containerPort: 9000, hostPort: 18121}\n    - {containerPort: 9000, hostPort: 18121, protocol: UDP}\n".into(),
        ),
    ];
    let portico = start(121, &files);
    let plan = portico.plan();
    let node = "127.121.3.1".parse::<IpAddr>().unwrap();
    let cip = ip(&service_plan(&plan, "cip")["clusterIps"][0]);
    let np = service_plan(&plan, "np")["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    let np_udp = service_plan(&plan, "np")["ports"][1]["nodePort"].as_u64().unwrap() as u16;
    let lb = ip(&service_plan(&plan, "lb")["loadBalancerIps"][0]);
    let entry_points: Vec<(&str, SocketAddr, SocketAddr)> = vec![
        ("ClusterIP", SocketAddr::new(cip, 80), SocketAddr::new(cip, 53)),
        ("NodePort", SocketAddr::new(node, np), SocketAddr::new(node, np_udp)),
        ("LoadBalancer", SocketAddr::new(lb, 80), SocketAddr::new(lb, 53)),
        ("externalIPs", "127.121.9.10:80".parse().unwrap(), "127.121.9.10:53".parse().unwrap()),
    ];
    for (method, tcp, udp) in entry_points {
        assert!(pod_at(tcp).starts_with("web-"), "{method} over TCP");
        assert_eq!(udp_echo(udp), "ping", "{method} over UDP");
    }
    assert_eq!(dns_addresses(portico.dns, "cip.default.svc.cluster.local."), [cip], "cluster DNS");
    assert_eq!(pod_at(SocketAddr::new(node, 18121)), "edge", "HostPort over TCP");
    assert_eq!(udp_echo(SocketAddr::new(node, 18121)), "ping", "HostPort over UDP");
    let (status, metrics) = portico.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("portico_l4_accepted_total{service=\"default/cip\""), "{metrics}");
    assert_eq!(portico.get("/healthz").0, 200);
    assert_eq!(portico.get("/readyz").0, 200);
}

#[test]
fn traffic_spreads_across_ten_endpoints_and_affinity_pins() {
    let files = [
        ("web.yaml", deployment("web", 10)),
        (
            "services.yaml",
            [
                service("web", "web", "ClusterIP", ""),
                service("sticky", "web", "ClusterIP", "  sessionAffinity: ClientIP\n"),
            ]
            .concat(),
        ),
    ];
    let portico = start(122, &files);
    let plan = portico.plan();
    let web = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 80);
    let pods: BTreeSet<String> = (0..40).map(|_| pod_at(web)).collect();
    assert_eq!(pods.len(), 10, "{pods:?}");
    let sticky = SocketAddr::new(ip(&service_plan(&plan, "sticky")["clusterIps"][0]), 80);
    let pinned: BTreeSet<String> = (0..10).map(|_| pod_at(sticky)).collect();
    assert_eq!(pinned.len(), 1, "{pinned:?}");
}

#[test]
fn no_endpoints_are_refused_at_once() {
    let files = [("svc.yaml", service("lonely", "nobody", "ClusterIP", ""))];
    let portico = start(123, &files);
    let plan = portico.plan();
    let addr = SocketAddr::new(ip(&service_plan(&plan, "lonely")["clusterIps"][0]), 80);
    let started = Instant::now();
    let outcome = http_get(addr, "t", "/");
    assert!(matches!(outcome, Err(_) | Ok((0, _))), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused, not hung");
}

#[test]
fn edits_apply_live_without_breaking_an_open_stream() {
    let files = [("web.yaml", deployment("web", 1)), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    // One worker: the reloads and the proxy share the current-thread runtime.
    let portico = start_with(124, &files, Launch { workers: Some(1), ..Launch::default() });
    let plan = portico.plan();
    let addr = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 80);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ask(&mut stream), "web-0");
    // Scale out: new endpoints join, the open stream stays where it is.
    let generation = portico.generation();
    portico.write("web.yaml", &deployment("web", 3));
    portico.wait_for(|p| p["generation"].as_u64() > Some(generation));
    let seen: BTreeSet<String> = (0..12).map(|_| pod_at(addr)).collect();
    assert_eq!(seen, ["web-0", "web-1", "web-2"].map(String::from).into_iter().collect());
    assert_eq!(ask(&mut stream), "web-0");
    // Scale in: web-2 leaves, new connections avoid it, the stream carries on.
    let generation = portico.generation();
    portico.write("web.yaml", &deployment("web", 2));
    portico.wait_for(|p| p["generation"].as_u64() > Some(generation));
    let seen: BTreeSet<String> = (0..12).map(|_| pod_at(addr)).collect();
    assert_eq!(seen, ["web-0", "web-1"].map(String::from).into_iter().collect());
    assert_eq!(ask(&mut stream), "web-0");
}

#[test]
fn a_broken_edit_changes_nothing_that_was_serving() {
    let files = [("web.yaml", deployment("web", 2)), ("svc.yaml", service("web", "web", "NodePort", ""))];
    let portico = start(125, &files);
    let plan = portico.plan();
    let addr = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 80);
    let node_port = service_plan(&plan, "web")["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    assert!(pod_at(addr).starts_with("web-"));
    // A YAML syntax error in one file; in the other, a misspelt field (unknown fields are
    // errors, as with kubectl apply: taken as written, the Service would select nothing).
    let generation = portico.generation();
    portico.write("web.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: [broken\n");
    portico.write("svc.yaml", &service("web", "web", "NodePort", "").replace("selector:", "selectr:"));
    portico.wait_for(|p| p["generation"].as_u64() > Some(generation));
    // The two edits may arrive as one change or two; wait until both are reported.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !portico.get("/metrics").1.contains("portico_diagnostics{severity=\"error\"} 2") {
        assert!(Instant::now() < deadline, "{}", portico.get("/metrics").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = portico.plan();
    assert_eq!(service_plan(&after, "web")["clusterIps"], service_plan(&plan, "web")["clusterIps"]);
    let seen: BTreeSet<String> = (0..6).map(|_| pod_at(addr)).collect();
    assert_eq!(seen.len(), 2, "both pods still serve: {seen:?}");
    assert!(pod_at(SocketAddr::new("127.125.3.1".parse().unwrap(), node_port)).starts_with("web-"));
    let (_, metrics) = portico.get("/metrics");
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_reload_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(failures >= 1, "{metrics}");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let files = [("web.yaml", deployment("web", 1)), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    let mut portico = start_with(126, &files, Launch { child: true, ..Launch::default() });
    portico.signal("TERM");
    let status = portico.exit_within(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect_timeout(&portico.admin, Duration::from_millis(500)).is_err());
}

#[test]
fn a_signal_that_comes_during_a_reload_stops_run() {
    let files = [("svc.yaml", service("web", "web", "ClusterIP", ""))];
    let mut portico = start_with(129, &files, Launch { child: true, ..Launch::default() });
    // A reload that takes seconds in a test build: ten thousand Services in one file.
    let many: Vec<String> = (0..10_000).map(|i| service(&format!("s{i}"), "x", "ClusterIP", "")).collect();
    let started = Instant::now();
    portico.write("many.yaml", &many.concat());
    // Past the quiet time (100 ms): the reload has begun.
    std::thread::sleep(Duration::from_millis(400));
    portico.signal("INT");
    // The drain time is 2 s.
    let status = portico.exit_within(Duration::from_secs(4)).expect("SIGINT during a reload stops run");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// An Ingress for `site.test` in front of the Pods of a Deployment `web`, behind a Service.
fn site_files(replicas: u32) -> [(&'static str, String); 3] {
    let site = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: site}\nspec:\n  rules:\n  - host: site.test\n    http:\n      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]\n";
    [
        ("web.yaml", deployment("web", replicas)),
        ("svc.yaml", service("web", "web", "ClusterIP", "")),
        ("site.yaml", site.to_string()),
    ]
}

#[test]
fn ingresses_are_served_with_status_metrics_and_an_access_log() {
    let portico = start(127, &site_files(2));
    let plan = portico.plan();
    assert_eq!(plan["ingress"]["status"][0]["addresses"][0], portico.ingress.to_string());
    let mut pods = BTreeSet::new();
    for _ in 0..6 {
        let (status, body) = http_get(portico.ingress, "site.test", "/").unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        pods.insert(v["pod"].as_str().unwrap().to_string());
    }
    assert_eq!(pods, ["web-0", "web-1"].map(String::from).into_iter().collect());
    assert_eq!(http_get(portico.ingress, "other.test", "/").unwrap().0, 404);
    let (_, metrics) = portico.get("/metrics");
    let served =
        r#"portico_ingress_requests_total{ingress="default/site",service="default/web",status="2xx"} 6"#;
    assert!(metrics.contains(served), "{metrics}");
    assert!(
        metrics.contains(r#"portico_ingress_requests_total{ingress="",service="",status="4xx"} 1"#),
        "{metrics}"
    );
    // The access log is flushed every second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&portico.access_log).unwrap_or_default();
        if text.lines().count() >= 7 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let first: Value = serde_json::from_str(lines.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(
        (first["ingress"].as_str(), first["service"].as_str()),
        (Some("default/site"), Some("default/web"))
    );
    assert_eq!((first["status"].as_u64(), first["host"].as_str()), (Some(200), Some("site.test")));
    assert!(first["endpoint"].as_str().is_some_and(|e| e.ends_with(":8080")), "{first}");
    assert_eq!(lines.lines().count(), 7, "{lines}");
}

#[test]
fn the_hyper_http1_engine_serves_with_the_same_checks() {
    let portico =
        start_with(128, &site_files(1), Launch { flags: &["--http1-engine", "hyper"], ..Launch::default() });
    let (status, body) = http_get(portico.ingress, "site.test", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    // Two Host fields: refused by the same checks as on Portico's own engine.
    let mut stream = TcpStream::connect(portico.ingress).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

/// `run` with a Deployment `web` and its ClusterIP Service, 128 open files at most and
/// `flags`; and the Service's address, port 80.
fn start_web_with_128_files(net: u8, flags: &[&str]) -> (Portico, SocketAddr) {
    let files = [("web.yaml", deployment("web", 1)), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    let portico = start_with(net, &files, Launch { open_files: Some(128), flags, ..Launch::default() });
    let plan = portico.plan();
    let vip = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 80);
    (portico, vip)
}

/// Up to 200 connections to the Ingress listener, held idle: as many as connect.
fn idle_ingress_clients(portico: &Portico) -> Vec<TcpStream> {
    (0..200)
        .map_while(|_| TcpStream::connect_timeout(&portico.ingress, Duration::from_secs(1)).ok())
        .collect()
}

#[test]
fn running_out_of_descriptors_takes_nothing_away_and_every_listener_recovers() {
    // The Ingress bound lifted past the descriptors, as a bound set too high would be.
    let flags = ["--ingress-connections", "1000", "--ingress-connections-per-listener", "1000"];
    let (portico, vip) = start_web_with_128_files(130, &flags);
    assert_eq!(pod_at(vip), "web-0");
    // Idle connections to the Ingress listener until Portico has no descriptor left.
    let flood = idle_ingress_clients(&portico);
    assert!(flood.len() > 50, "{} connections", flood.len());
    std::thread::sleep(Duration::from_millis(500));
    // An edit now: the folder cannot be read. And a DNS client over TCP that cannot be
    // accepted.
    portico.write("extra.yaml", &service("extra", "web", "ClusterIP", ""));
    let waiting =
        [portico.dns, vip, portico.admin].map(|to| TcpStream::connect_timeout(&to, Duration::from_secs(1)));
    std::thread::sleep(Duration::from_millis(1500));
    drop((flood, waiting));
    let plan = portico.wait_for(|plan| plan["generation"].as_u64() >= Some(2));
    let names: Vec<&str> =
        plan["services"].as_array().unwrap().iter().filter_map(|s| s["key"]["name"].as_str()).collect();
    assert_eq!(names, ["web"], "the Service stays; the unreadable edit is applied with the next one");
    assert_eq!(pod_at(vip), "web-0");
    // Every listener serves again once descriptors are free.
    let name = "web.default.svc.cluster.local";
    assert_eq!(dns_addresses_over_tcp(portico.dns, name).unwrap(), [vip.ip()]);
    assert_eq!(http_get(portico.ingress, "any.test", "/").unwrap().0, 404);
    portico.write("extra.yaml", &service("extra", "web", "ClusterIP", "  sessionAffinity: None\n"));
    portico.wait_for(|plan| plan["services"].as_array().is_some_and(|s| s.len() == 2));
}

#[test]
fn idle_ingress_clients_cannot_take_the_room_of_other_listeners() {
    let flags = ["--ingress-connections", "8", "--ingress-connections-per-listener", "6"];
    let (portico, vip) = start_web_with_128_files(132, &flags);
    // More idle clients than Portico has descriptors: all but the bound wait in the listen
    // queue (as many as it holds).
    let flood = idle_ingress_clients(&portico);
    assert!(flood.len() > 100, "{} connections", flood.len());
    std::thread::sleep(Duration::from_millis(500));
    // Everything else keeps its room.
    assert_eq!(pod_at(vip), "web-0");
    assert_eq!(portico.get("/healthz").0, 200);
    let name = "web.default.svc.cluster.local";
    assert_eq!(dns_addresses_over_tcp(portico.dns, name).unwrap(), [vip.ip()]);
    // The other Ingress listener has the two seats the first leaves of the total.
    let https = SocketAddr::new(portico.ingress.ip(), 8443);
    let tls: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(https).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = portico.get("/metrics").1;
        if metrics.contains("portico_ingress_connections 8") || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = |bound: &str| {
        let series = format!("portico_ingress_connections_waited_total{{bound=\"{bound}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(waited("listener") >= 1, "{metrics}");
    assert!(metrics.contains("portico_ingress_connections 8"), "{metrics}");
    // Once the idle clients go, new ones are served.
    drop((flood, tls));
    assert_eq!(http_get(portico.ingress, "any.test", "/").unwrap().0, 404);
}

#[test]
fn an_empty_folder_is_served_with_a_hint() {
    let mut portico = start_with(133, &[], Launch { stdout: true, ..Launch::default() });
    let stdout = portico.child().stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut printed = Vec::new();
    while let Ok(line) = received.recv_timeout(Duration::from_secs(5)) {
        let hint = line.contains("nothing is exposed yet");
        printed.push(line);
        if hint {
            break;
        }
    }
    assert!(printed.iter().any(|l| l.contains("nothing is exposed yet: save a Service")), "{printed:?}");
    let metrics = portico.get("/metrics").1;
    assert!(metrics.contains("portico_diagnostics{severity=\"warning\"} 1"), "{metrics}");
    // The hint is no dead end: a Service saved now is served.
    portico.write("web.yaml", &deployment("web", 1));
    portico.write("svc.yaml", &service("web", "web", "ClusterIP", ""));
    let plan = portico.wait_for(|plan| plan["services"].as_array().is_some_and(|s| s.len() == 1));
    let vip = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 80);
    assert_eq!(pod_at(vip), "web-0");
}

#[test]
fn a_reload_logs_only_the_diagnostics_that_are_new() {
    let warned = |name: &str| service(name, &format!("nobody-{name}"), "ClusterIP", "");
    let files = [("a.yaml", warned("a")), ("b.yaml", warned("b"))];
    let portico = start_with(134, &files, Launch { log: true, ..Launch::default() });
    portico.write("c.yaml", &warned("c"));
    portico.wait_for(|plan| plan["generation"].as_u64() >= Some(2));
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&portico.log).unwrap();
    let times =
        |name: &str| log.lines().filter(|l| l.contains(&format!("selector app=nobody-{name} "))).count();
    assert_eq!((times("a"), times("b"), times("c")), (1, 1, 1), "{log}");
    assert!(log.contains("warnings=3 new=1"), "{log}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok()).unwrap()
}

#[test]
fn a_udp_flow_holds_no_datagram_buffer() {
    let files = [("web.yaml", deployment("web", 1)), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    // Its own process: the test reads its memory.
    let mut portico = start_with(131, &files, Launch { child: true, ..Launch::default() });
    let plan = portico.plan();
    let vip = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 53);
    let ask = |client: &UdpSocket| {
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client.send_to(b"hi", vip).unwrap();
        let mut buf = [0u8; 2048];
        client.recv_from(&mut buf).unwrap();
    };
    ask(&UdpSocket::bind("127.0.0.1:0").unwrap());
    let before = rss_kib(portico.child().id());
    // Two rounds of 500 flows, the first expired (5 s idle) before the second: memory freed
    // by flows is reused by the next ones, as under churn.
    for round in 0..2 {
        let clients: Vec<UdpSocket> = (0..500).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for client in &clients {
            ask(client);
        }
        if round == 0 {
            std::thread::sleep(Duration::from_secs(6));
        }
    }
    let grown = rss_kib(portico.child().id()).saturating_sub(before);
    // A zeroed 64 KiB buffer per flow cost about 9 KiB of resident memory a flow here (4.4 MiB
    // for 500; more under longer churn); the socket and the task cost about 2.
    assert!(grown < 3 * 1024, "{grown} KiB more for 500 UDP flows at a time");
}

#[test]
fn echo_pods_off_leaves_the_pods_to_whatever_runs_them() {
    let files = [("web.yaml", deployment("web", 1)), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    let portico = start_with(135, &files, Launch { flags: &["--echo-pods", "off"], ..Launch::default() });
    let plan = portico.wait_for(|plan| plan["pods"].as_array().is_some_and(|p| !p.is_empty()));
    let pod = SocketAddr::new(ip(&plan["pods"][0]["ips"][0]), 8080);
    let (status, readiness) = portico.get("/readyz");
    assert_eq!(status, 200, "{readiness}");
    assert!(!readiness.contains("pods:"), "no echo data plane: {readiness}");
    assert!(readiness.contains("l4: ready"), "{readiness}");
    assert!(std::net::TcpStream::connect_timeout(&pod, Duration::from_secs(1)).is_err(), "no echo at {pod}");
}

fn meshed_deployment(name: &str) -> String {
    deployment(name, 1).replacen("labels: {app: ", "labels: {portico.dev/mesh: enabled, app: ", 1)
}

#[test]
fn meshed_pods_are_listed_with_their_identities_and_standalone_serves_them_uncaptured() {
    let files =
        [("web.yaml", meshed_deployment("web")), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    let portico = start(136, &files);
    let plan = portico.wait_for(|plan| plan["mesh"]["workloads"].as_array().is_some_and(|w| !w.is_empty()));
    assert_eq!(plan["mesh"]["workloads"][0]["identity"], "spiffe://cluster.local/ns/default/sa/default");
    let (status, readiness) = portico.get("/readyz");
    assert_eq!(status, 200, "a standalone host has nothing to capture in: {readiness}");
    assert!(readiness.contains("mesh: ready"), "{readiness}");
    let vip = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 80);
    assert!(pod_at(vip).starts_with("web-"), "the Pod still answers, in plain");
}

#[test]
fn a_meshed_pod_that_cannot_be_captured_makes_the_mesh_not_ready_and_nothing_else() {
    let files =
        [("web.yaml", meshed_deployment("web")), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    let flags = ["--pod-netns", "/nonexistent/netns/{namespace}-{name}"];
    let portico = start_with(137, &files, Launch { flags: &flags, ..Launch::default() });
    let mut readiness = String::new();
    for _ in 0..50 {
        readiness = portico.get("/readyz").1;
        if readiness.contains("mesh: not ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(readiness.contains("mesh: not ready") && readiness.contains("default/web-0"), "{readiness}");
    assert!(readiness.contains("l4: ready"), "{readiness}");
    let plan = portico.plan();
    let vip = SocketAddr::new(ip(&service_plan(&plan, "web")["clusterIps"][0]), 80);
    assert!(pod_at(vip).starts_with("web-"), "Services are served all the same");
    // The CA was made in the state folder, in Istio's cacerts layout.
    let ca = portico._dir.path().join("state/mesh-ca");
    for file in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem", "root-key.pem"] {
        assert!(ca.join(file).is_file(), "{file}");
    }
}

#[test]
fn a_meshed_pod_whose_namespace_comes_later_is_captured_then() {
    if !portico_testkit::root::able(&["ip", "nft"]) {
        return;
    }
    let files =
        [("web.yaml", meshed_deployment("web")), ("svc.yaml", service("web", "web", "ClusterIP", ""))];
    let prefix = format!("ptlate{}", std::process::id() % 100_000);
    let template = format!("/run/netns/{prefix}-{{namespace}}-{{name}}");
    let flags = ["--pod-netns", template.as_str()];
    let portico = start_with(138, &files, Launch { flags: &flags, ..Launch::default() });
    let until = |wanted: &str| {
        let mut readiness = String::new();
        for _ in 0..100 {
            readiness = portico.get("/readyz").1;
            if readiness.contains(wanted) {
                return readiness;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("never {wanted}: {readiness}");
    };
    until("mesh: not ready");
    let namespace = format!("{prefix}-default-web-0");
    let added = std::process::Command::new("ip").args(["netns", "add", &namespace]).status().unwrap();
    assert!(added.success());
    let readiness = until("mesh: ready");
    let rules = std::process::Command::new("ip")
        .args(["netns", "exec", &namespace, "nft", "list", "ruleset"])
        .output();
    let _ = std::process::Command::new("ip").args(["netns", "del", &namespace]).status();
    assert!(readiness.contains("l4: ready"), "{readiness}");
    let rules = String::from_utf8_lossy(&rules.unwrap().stdout).into_owned();
    assert!(rules.contains("redirect to :15006"), "the capture is in: {rules}");
}

/// A kubeconfig naming the API server at `addr`, in `dir`.
fn kubeconfig(dir: &std::path::Path, addr: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://{addr}'}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\ncurrent-context: fake\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn in_a_cluster_the_api_servers_objects_are_served_and_followed() {
    use portico_testkit::api::FakeApi;
    use serde_json::json;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (fake, addr) = runtime.block_on(FakeApi::start());
    let _api = runtime.enter();
    let block = Block::new(139);
    let (cluster_ip, pod_ip) = (block.ip(0, 10), block.ip(2, 5));
    fake.event("/api/v1/pods", "ADDED", json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "localhost", "containers": [{"name": "echo", "image": "ghcr.io/portico-dev/portico:0.1", "args": ["echo"], "ports": [{"containerPort": 8080}]}]},
        "status": {"podIP": pod_ip.to_string(), "podIPs": [{"ip": pod_ip.to_string()}], "conditions": [{"type": "Ready", "status": "True"}]},
    }));
    fake.event("/apis/discovery.k8s.io/v1/endpointslices", "ADDED", json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [pod_ip.to_string()], "conditions": {"ready": true}, "nodeName": "localhost", "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"}}],
    }));
    let service = |name: &str, ip: std::net::IpAddr| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()], "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        })
    };
    fake.event("/api/v1/services", "ADDED", service("web", cluster_ip));
    let dir = tempfile::tempdir().unwrap();
    // With the mesh's capture (no meshed Pod here, so an empty folder of namespaces will do),
    // the agent takes its CA from the cluster.
    let netns = dir.path().join("netns");
    std::fs::create_dir(&netns).unwrap();
    let netns = netns.display().to_string();
    let flags = ["--pod-netns", netns.as_str()];
    let launch =
        Launch { kubeconfig: Some(kubeconfig(dir.path(), addr)), flags: &flags, ..Launch::default() };
    let portico = start_with(139, &[], launch);
    let plan = portico.plan();
    assert_eq!(ip(&service_plan(&plan, "web")["clusterIps"][0]), cluster_ip, "the API server's ClusterIP");
    let vip = SocketAddr::new(cluster_ip, 80);
    assert_eq!(pod_at(vip), "web-0", "through the ClusterIP to the Pod the EndpointSlice names");
    // A Service added in the cluster is served within moments; one deleted goes.
    let other = block.ip(0, 11);
    fake.event("/api/v1/services", "ADDED", service("web-too", other));
    portico.wait_for(|plan| plan["services"].as_array().is_some_and(|s| s.len() == 2));
    assert_eq!(pod_at(SocketAddr::new(other, 80)), "web-0");
    fake.event("/api/v1/services", "DELETED", service("web-too", other));
    portico.wait_for(|plan| plan["services"].as_array().is_some_and(|s| s.len() == 1));
    let (status, readiness) = portico.get("/readyz");
    assert_eq!(status, 200, "{readiness}");
    // The mesh CA every agent shares: made by this first agent, kept in a Secret.
    let ca =
        fake.object("/api/v1/secrets", Some("portico-system"), "portico-mesh-ca").expect("the CA Secret");
    for key in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"] {
        assert!(ca["data"][key].is_string(), "{key} in the Secret");
    }

    // Status write-back: the one replica (it holds the Lease) writes the LoadBalancer address
    // it gave out, and the address of the Ingress it serves; another class's is left alone.
    let mut front = service("front", block.ip(0, 12));
    front["spec"]["type"] = json!("LoadBalancer");
    fake.event("/api/v1/services", "ADDED", front);
    let ingress = |name: &str, class: &str| {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ingressClassName": class, "rules": [{"host": format!("{name}.example"), "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
        })
    };
    fake.event("/apis/networking.k8s.io/v1/ingresses", "ADDED", ingress("ours", "portico"));
    fake.event("/apis/networking.k8s.io/v1/ingresses", "ADDED", ingress("theirs", "nginx"));
    let status_of = |path: &str, name: &str| {
        fake.object(path, Some("default"), name).map(|o| o["status"]["loadBalancer"]["ingress"].clone())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while status_of("/api/v1/services", "front").is_none_or(|s| s.is_null())
        || status_of("/apis/networking.k8s.io/v1/ingresses", "ours").is_none_or(|s| s.is_null())
    {
        assert!(std::time::Instant::now() < deadline, "no status written: {:?}", fake.writes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let front_ip = status_of("/api/v1/services", "front").unwrap()[0]["ip"].as_str().unwrap().to_owned();
    let front_ip: std::net::IpAddr = front_ip.parse().unwrap();
    assert!(
        block.subnet(1).parse::<ipnet::IpNet>().unwrap().contains(&front_ip),
        "from the pool: {front_ip}"
    );
    assert_eq!(
        status_of("/apis/networking.k8s.io/v1/ingresses", "ours").unwrap(),
        json!([{"ip": block.ip(4, 1).to_string()}])
    );
    let writes = fake.writes();
    assert!(writes.iter().all(|w| !w.path.contains("theirs")), "another class's Ingress untouched");
    for write in writes.iter().filter(|w| w.path.ends_with("/status")) {
        assert!(write.query.contains("fieldManager=portico"), "{write:?}");
        assert_eq!(write.content_type, "application/apply-patch+yaml");
    }
    // The plan serves the address the API server now holds, and nothing is written twice.
    portico.wait_for(|plan| {
        plan["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["loadBalancerIps"][0] == json!(front_ip.to_string())))
    });
    std::thread::sleep(Duration::from_millis(500));
    let status_writes = |fake: &FakeApi| fake.writes().iter().filter(|w| w.path.ends_with("/status")).count();
    assert_eq!(status_writes(&fake), 2, "{:?}", fake.writes());
    let lease =
        fake.object("/apis/coordination.k8s.io/v1/leases", Some("portico-system"), "portico").unwrap();
    assert!(lease["spec"]["holderIdentity"].as_str().is_some_and(|h| !h.is_empty()), "{lease}");
    drop(portico);
    let lease =
        fake.object("/apis/coordination.k8s.io/v1/leases", Some("portico-system"), "portico").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "released when it stops: {lease}");
}

#[test]
fn each_role_serves_only_its_part() {
    let ingress_only =
        start_with(140, &site_files(1), Launch { flags: &["--role", "ingress"], ..Launch::default() });
    let (_, readiness) = ingress_only.get("/readyz");
    assert!(readiness.contains("ingress: ready"), "{readiness}");
    for plane in ["l4", "dns", "pods", "mesh", "healthcheck"] {
        assert!(!readiness.contains(&format!("{plane}:")), "no {plane} in the ingress role: {readiness}");
    }
    let vip = SocketAddr::new(ip(&service_plan(&ingress_only.plan(), "web")["clusterIps"][0]), 80);
    assert!(
        std::net::TcpStream::connect_timeout(&vip, Duration::from_millis(500)).is_err(),
        "no ClusterIP listener"
    );
    drop(ingress_only);

    let agent_only =
        start_with(141, &site_files(1), Launch { flags: &["--role", "agent"], ..Launch::default() });
    let (_, readiness) = agent_only.get("/readyz");
    assert!(readiness.contains("l4: ready") && readiness.contains("dns: ready"), "{readiness}");
    assert!(!readiness.contains("ingress:"), "{readiness}");
    assert!(std::net::TcpStream::connect_timeout(&agent_only.ingress, Duration::from_millis(500)).is_err());
    let vip = SocketAddr::new(ip(&service_plan(&agent_only.plan(), "web")["clusterIps"][0]), 80);
    assert_eq!(pod_at(vip), "web-0", "the agent serves the ClusterIP and runs the Pod");
}
