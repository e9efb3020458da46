//! Planner benchmark: 10,000 Services × 10 endpoints + 1,000 Ingresses.
//!
//! The endpoints come either from 10,000 EndpointSlices (`PORTICO_BENCH_ENDPOINTS=slices`, the
//! default: what a cluster's API server hands any Service proxy) or from 100,000 Pods the
//! planner selects and turns into endpoints itself (`PORTICO_BENCH_ENDPOINTS=pods`, the
//! standalone API-server duty).
//!
//! Builds the scenario in memory as manifest text (the same text `bench/gen_manifests.py`
//! writes to files), then times each stage on its own: parsing (`parse_text`), validating and
//! storing (`Store::admit`, text by text), planning cold (no previous allocations) and planning warm
//! (the allocations of the cold plan passed back in, as a reload does). Memory comes from
//! `/proc/self/status`: the process's peak (VmHWM) and the resident growth caused by holding
//! one Plan.
//!
//! Targets (from the issue): plan under 1 s and under 200 MB on the bench machine. The figures
//! are printed with their ratio to the targets; nothing here fails on time or memory. The run
//! does fail (non-zero exit) when the plan is not what the scenario should produce, so that it
//! can never silently measure nothing.
//!
//! Run with `cargo bench -p portico-plan --bench plan` (or `bench/plan.sh`). The environment
//! variable `PORTICO_BENCH_RUNS` sets how many times each plan is timed (default 5).

use std::error::Error;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use portico_model::{Diagnostic, Object, Origin, PodRecord, Store, Stored, parse_text};
use portico_plan::{
    Allocations, Endpoint, Plan, PlanConfig, Planned, PodPlan, ingress, pods, services, workloads,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Target for one cold plan, from the issue.
const TARGET_PLAN_SECONDS: f64 = 1.0;
/// Target for the peak resident memory, from the issue.
const TARGET_PEAK_MB: f64 = 200.0;

/// Where the scenario's endpoints come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoints {
    /// One EndpointSlice per Service, Services without selectors.
    Slices,
    /// Pods selected by each Service's selector.
    Pods,
}

/// The scenario's shape. Keep in step with `bench/gen_manifests.py`.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    namespaces: usize,
    services: usize,
    pods_per_service: usize,
    ingresses: usize,
    endpoints: Endpoints,
}

const SCENARIO: Scenario = Scenario {
    namespaces: 100,
    services: 10_000,
    pods_per_service: 10,
    ingresses: 1_000,
    endpoints: Endpoints::Slices,
};

/// Hosts per Ingress and paths per host.
const HOSTS_PER_INGRESS: usize = 2;
const PATHS: [(&str, &str); 3] = [("/", "Prefix"), ("/api", "Prefix"), ("/healthz", "Exact")];

impl Scenario {
    fn services_per_namespace(&self) -> usize {
        self.services / self.namespaces
    }

    fn ingresses_per_namespace(&self) -> usize {
        self.ingresses / self.namespaces
    }

    /// Endpoints in all (one per Pod, or per slice entry).
    fn pods(&self) -> usize {
        self.services * self.pods_per_service
    }

    /// Objects the text holds.
    fn objects(&self) -> usize {
        let per_service = match self.endpoints {
            Endpoints::Pods => 1 + self.pods_per_service,
            Endpoints::Slices => 2,
        };
        self.namespaces + self.services * per_service + self.ingresses
    }

    /// Pods the plan should hold.
    fn planned_pods(&self) -> usize {
        match self.endpoints {
            Endpoints::Pods => self.pods(),
            Endpoints::Slices => 0,
        }
    }

    fn routes(&self) -> usize {
        self.ingresses * HOSTS_PER_INGRESS * PATHS.len()
    }

    fn validate(&self) -> Result<()> {
        if self.namespaces == 0
            || !self.services.is_multiple_of(self.namespaces)
            || !self.ingresses.is_multiple_of(self.namespaces)
            || self.pods() > 1 << 22
        {
            return Err(format!(
                "scenario {self:?}: counts must divide evenly by namespaces, at most 4Mi Pods"
            )
            .into());
        }
        Ok(())
    }

    /// The manifest text of namespace `n`: the Namespace, its Services, their Pods, its
    /// Ingresses. One namespace is one file in the end-to-end run.
    fn namespace_text(&self, n: usize) -> Result<String> {
        let ns = format!("ns-{n:03}");
        let mut out =
            String::with_capacity(self.services_per_namespace() * (self.pods_per_service + 1) * 600);
        writeln!(out, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}")?;
        let first = n * self.services_per_namespace();
        for s in first..first + self.services_per_namespace() {
            let service_type = if s.is_multiple_of(50) {
                "LoadBalancer"
            } else if s.is_multiple_of(10) {
                "NodePort"
            } else {
                "ClusterIP"
            };
            let selector = match self.endpoints {
                Endpoints::Pods => format!("\n  selector:\n    app: svc-{s:05}"),
                Endpoints::Slices => String::new(),
            };
            writeln!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s:05}\n  namespace: {ns}\n  labels:\n    app: svc-{s:05}\n\
                 spec:\n  type: {service_type}{selector}\n  ports:\n  - name: http\n    protocol: TCP\n    port: 80\n    targetPort: http"
            )?;
            if self.endpoints == Endpoints::Slices {
                writeln!(
                    out,
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{s:05}-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: svc-{s:05}\n\
                     addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:"
                )?;
                for k in 0..self.pods_per_service {
                    let ip = pod_ip(s * self.pods_per_service + k);
                    writeln!(
                        out,
                        "- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: localhost"
                    )?;
                }
                continue;
            }
            for k in 0..self.pods_per_service {
                let p = s * self.pods_per_service + k;
                writeln!(
                    out,
                    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{s:05}-{k}\n  namespace: {ns}\n  labels:\n    app: svc-{s:05}\n\
                     spec:\n  containers:\n  - name: app\n    image: registry.example/app:1.0\n    ports:\n    - name: http\n      containerPort: 8080\n      protocol: TCP\n\
                     status:\n  phase: Running\n  podIP: {ip}\n  conditions:\n  - type: Ready\n    status: \"True\"",
                    ip = pod_ip(p),
                )?;
            }
        }
        let first = n * self.ingresses_per_namespace();
        for (j, g) in (first..first + self.ingresses_per_namespace()).enumerate() {
            writeln!(
                out,
                "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ing-{g:04}\n  namespace: {ns}\nspec:\n  ingressClassName: portico\n  rules:"
            )?;
            for h in 0..HOSTS_PER_INGRESS {
                writeln!(out, "  - host: app-{g:04}-{h}.example.com\n    http:\n      paths:")?;
                for (p, (path, path_type)) in PATHS.iter().enumerate() {
                    let local = (j * HOSTS_PER_INGRESS * PATHS.len() + h * PATHS.len() + p)
                        % self.services_per_namespace();
                    let s = n * self.services_per_namespace() + local;
                    // Alternate between naming the Service port and giving its number.
                    let port = if p % 2 == 0 { "name: http" } else { "number: 80" };
                    writeln!(
                        out,
                        "      - path: {path}\n        pathType: {path_type}\n        backend:\n          service:\n            name: svc-{s:05}\n            port:\n              {port}"
                    )?;
                }
            }
        }
        Ok(out)
    }
}

/// Pod `p`'s address: 127.64.0.0 upwards, outside every pool the planner allocates from.
fn pod_ip(p: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 64 + (p >> 16) as u8, (p >> 8) as u8, p as u8)
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Resets VmHWM to the current VmRSS (Linux ≥ 4.0); false where not permitted.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn show_mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".into(), |b| format!("{:.0} MB", mb(b)))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Best and median of a set of timings.
fn best_median(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort_unstable();
    (times[0], times[times.len() / 2])
}

fn errors(diagnostics: &[Diagnostic]) -> Vec<&Diagnostic> {
    diagnostics.iter().filter(|d| d.is_error()).collect()
}

/// Fails with the first few error diagnostics of a stage, if any.
fn no_errors(stage: &str, diagnostics: &[Diagnostic]) -> Result<()> {
    let errors = errors(diagnostics);
    if errors.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = errors.iter().take(5).map(|d| format!("  {d}")).collect();
    Err(format!("{stage}: {} error diagnostic(s), e.g.\n{}", errors.len(), shown.join("\n")).into())
}

/// Checks the plan is the one the scenario describes, so that the timings measure real work.
fn check_plan(plan: &Plan, scenario: &Scenario) -> Result<()> {
    let services = plan.services.len();
    let endpoints: usize =
        plan.services.iter().filter_map(|s| s.ports.first()).map(|p| p.endpoints.len()).sum();
    let ready: usize = plan
        .services
        .iter()
        .filter_map(|s| s.ports.first())
        .flat_map(|p| &p.endpoints)
        .filter(|e| e.ready)
        .count();
    let routes: usize = plan.ingress.exact_hosts.values().map(|v| v.routes.len()).sum();
    let routed_endpoints: usize =
        plan.ingress.exact_hosts.values().flat_map(|v| &v.routes).map(|r| r.backend.endpoints.len()).sum();
    let lb = plan.services.iter().filter(|s| !s.load_balancer_ips.is_empty()).count();
    let node_ports = plan.services.iter().flat_map(|s| &s.ports).filter(|p| p.node_port.is_some()).count();
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: usize, want: usize| {
        if got != want {
            problems.push(format!("{what}: got {got}, expected {want}"));
        }
    };
    expect("services", services, scenario.services);
    expect("pods", plan.pods.len(), scenario.planned_pods());
    expect("endpoints (first port of each service)", endpoints, scenario.pods());
    expect("ready endpoints", ready, scenario.pods());
    expect("ingress hosts", plan.ingress.exact_hosts.len(), scenario.ingresses * HOSTS_PER_INGRESS);
    expect("ingress routes", routes, scenario.routes());
    expect("ingress route endpoints", routed_endpoints, scenario.routes() * scenario.pods_per_service);
    expect("LoadBalancer IPs", lb, scenario.services / 50);
    expect("NodePorts", node_ports, scenario.services / 10);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("the plan is not what the scenario describes:\n  {}", problems.join("\n  ")).into())
    }
}

fn row(stage: &str, runs: usize, best: Duration, median: Duration, note: &str) {
    println!("{stage:<28} {runs:>4} {:>10.3} {:>10.3}   {note}", secs(best), secs(median));
}

fn main() -> Result<()> {
    let endpoints = match std::env::var("PORTICO_BENCH_ENDPOINTS").as_deref() {
        Ok("pods") => Endpoints::Pods,
        Ok("slices") | Err(_) => Endpoints::Slices,
        Ok(other) => return Err(format!("PORTICO_BENCH_ENDPOINTS={other:?}: use slices or pods").into()),
    };
    let scenario = Scenario { endpoints, ..SCENARIO };
    scenario.validate()?;
    let runs: usize = match std::env::var("PORTICO_BENCH_RUNS") {
        Ok(v) => v.parse().map_err(|e| format!("PORTICO_BENCH_RUNS={v:?}: {e}"))?,
        Err(_) => 5,
    };
    let runs = runs.max(1);
    let config = PlanConfig {
        // 200 LoadBalancer Services: the default /24 pool holds only 254 addresses.
        load_balancer_pools: vec!["127.97.0.0/16".parse()?],
        ..PlanConfig::default()
    };

    let source = match scenario.endpoints {
        Endpoints::Slices => "from one EndpointSlice each",
        Endpoints::Pods => "from Pods the selector picks",
    };
    println!(
        "portico-plan bench: {} Services × {} endpoints ({} in all, {source}) in {} namespaces, {} Ingresses × {} hosts × {} paths",
        scenario.services,
        scenario.pods_per_service,
        scenario.pods(),
        scenario.namespaces,
        scenario.ingresses,
        HOSTS_PER_INGRESS,
        PATHS.len()
    );
    println!(
        "mix: {} ClusterIP, {} NodePort, {} LoadBalancer; {} timed run(s) per plan; {} CPU(s)",
        scenario.services - scenario.services / 10,
        scenario.services / 10 - scenario.services / 50,
        scenario.services / 50,
        runs,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let rss_start = proc_status("VmRSS");

    // (a) + (b) One namespace text at a time, like one file at a time, as `portico` loads:
    // parse it, then validate and store its objects before the next text. Generating the
    // text is not timed.
    let mut store = Store::default();
    let mut parse_time = Duration::ZERO;
    let mut store_time = Duration::ZERO;
    let mut text_bytes = 0usize;
    let mut object_count = 0usize;
    let mut parse_diagnostics = Vec::new();
    let mut store_diagnostics = Vec::new();
    for n in 0..scenario.namespaces {
        let text = scenario.namespace_text(n)?;
        text_bytes += text.len();
        let path = PathBuf::from(format!("bench/ns-{n:03}.yaml"));
        let start = Instant::now();
        let (parsed, diagnostics) = parse_text(&path, &text);
        parse_time += start.elapsed();
        object_count += parsed.len();
        parse_diagnostics.extend(diagnostics);
        let start = Instant::now();
        store.admit(parsed, &mut store_diagnostics);
        store_time += start.elapsed();
    }
    no_errors("parse", &parse_diagnostics)?;
    no_errors("Store::admit", &store_diagnostics)?;
    let expected_objects = scenario.objects();
    if object_count != expected_objects {
        return Err(format!("parsed {object_count} objects, expected {expected_objects}").into());
    }
    if store.len() != object_count {
        return Err(format!("the store kept {} of {object_count} objects", store.len()).into());
    }
    let rss_stored = proc_status("VmRSS");
    let hwm_stored = proc_status("VmHWM");

    // (c) Cold plan. The first run also gives the memory the Plan itself holds.
    let peak_reset = reset_peak();
    let rss_before_plan = proc_status("VmRSS");
    let start = Instant::now();
    let first: Planned = portico_plan::plan(&store, &config, &Allocations::default(), 1);
    let first_time = start.elapsed();
    let rss_holding_plan = proc_status("VmRSS");
    let hwm_first_plan = proc_status("VmHWM");
    no_errors("plan", &first.diagnostics)?;
    check_plan(&first.plan, &scenario)?;
    let warnings = first.diagnostics.len();
    let allocations = first.allocations.clone();
    let nodes = first.plan.nodes.clone();
    drop(first);

    let mut cold = vec![first_time];
    for generation in 2..=runs as u64 {
        let start = Instant::now();
        let planned = black_box(portico_plan::plan(&store, &config, &Allocations::default(), generation));
        cold.push(start.elapsed());
        drop(planned);
    }
    // (d) Warm plan: the allocations of the cold plan passed back in, as a reload does.
    let mut warm = Vec::new();
    let mut last = None;
    for generation in 1..=runs as u64 {
        drop(last.take());
        let start = Instant::now();
        let planned = black_box(portico_plan::plan(&store, &config, &allocations, 100 + generation));
        warm.push(start.elapsed());
        last = Some(planned);
    }
    let warm_planned: Planned = last.ok_or("no warm run")?;
    no_errors("plan (warm)", &warm_planned.diagnostics)?;
    check_plan(&warm_planned.plan, &scenario)?;
    if warm_planned.allocations != allocations {
        return Err("the warm plan changed allocations the cold plan made".into());
    }
    drop(warm_planned);

    // Where one cold plan spends its time: the planner's stages, called as plan() calls them.
    let mut stage_allocations = Allocations::default();
    let mut stage_diagnostics = Vec::new();
    // Nodes are planned first; they are cheap (one here), so the cold plan's are reused.
    let start = Instant::now();
    let workload_pods = workloads::expand(&store, &nodes, &mut stage_diagnostics);
    let (pod_plans, _host_ports) = pods::plan_pods(
        &[&store.pods, &workload_pods],
        &nodes,
        !store.nodes.is_empty(),
        &config,
        &Allocations::default(),
        &mut stage_allocations,
        &mut stage_diagnostics,
    );
    let pods_time = start.elapsed();
    let start = Instant::now();
    let (service_plans, _) = services::plan_services(
        &store,
        &pod_plans,
        &config,
        &Allocations::default(),
        &mut stage_allocations,
        &mut stage_diagnostics,
    );
    let services_time = start.elapsed();
    let start = Instant::now();
    let ingress_plan =
        black_box(ingress::plan_ingress(&store, &service_plans, &config, &mut stage_diagnostics));
    let ingress_time = start.elapsed();
    drop((ingress_plan, service_plans, pod_plans));
    let hwm_end = proc_status("VmHWM");

    let (cold_best, cold_median) = best_median(&mut cold);
    let (warm_best, warm_median) = best_median(&mut warm);
    println!();
    println!("{:<28} {:>4} {:>10} {:>10}   note", "stage", "runs", "best s", "median s");
    println!("{}", "-".repeat(90));
    row(
        "parse (parse_text)",
        1,
        parse_time,
        parse_time,
        &format!(
            "{object_count} objects from {:.1} MB of YAML in {} texts",
            mb(text_bytes as u64),
            scenario.namespaces
        ),
    );
    row("Store::admit", 1, store_time, store_time, "validate + insert, text by text");
    row("plan() cold", runs, cold_best, cold_median, "previous allocations empty");
    row("plan() warm", runs, warm_best, warm_median, "allocations of the cold plan passed in");
    row("  of which pods", 1, pods_time, pods_time, "workloads::expand + plan_pods: Pod IPs, PodPlans");
    row("  of which plan_services", 1, services_time, services_time, "allocation, selectors, endpoints");
    row("  of which plan_ingress", 1, ingress_time, ingress_time, "hosts, routes, backend endpoints");
    println!();
    println!("memory (from /proc/self/status)");
    println!("  VmRSS at start                {:>10}", show_mb(rss_start));
    println!("  VmRSS after store             {:>10}   (VmHWM {})", show_mb(rss_stored), show_mb(hwm_stored));
    let delta = rss_before_plan.zip(rss_holding_plan).map(|(a, b)| b.saturating_sub(a));
    println!(
        "  RSS growth holding one Plan   {:>10}   (VmRSS {} → {})",
        show_mb(delta),
        show_mb(rss_before_plan),
        show_mb(rss_holding_plan)
    );
    if peak_reset {
        let peak = rss_before_plan.zip(hwm_first_plan).map(|(a, b)| b.saturating_sub(a));
        println!("  peak growth during cold plan  {:>10}   (VmHWM reset before the plan)", show_mb(peak));
    }
    let peak_note =
        if peak_reset { " (peak since the plan stage began; parse/store peaks above)" } else { "" };
    println!("  VmHWM at end                  {:>10}{peak_note}", show_mb(hwm_end));
    let process_peak = [hwm_stored, hwm_end].into_iter().flatten().max();
    println!("  plan warnings (not errors)    {warnings:>10}");
    println!(
        "  inline sizes (bytes; heap not counted): (Origin, Object) {}, Stored<PodRecord> {}, PodPlan {}, Endpoint {}",
        size_of::<(Origin, Object)>(),
        size_of::<Stored<PodRecord>>(),
        size_of::<PodPlan>(),
        size_of::<Endpoint>()
    );
    println!();
    println!("targets (issue: plan 10,000 Services × 10 endpoints + 1,000 Ingresses under 1 s and 200 MB)");
    println!(
        "  plan (cold): {:.3} s  target < {TARGET_PLAN_SECONDS:.0} s  ratio {:.2}×  {}",
        secs(cold_median),
        secs(cold_median) / TARGET_PLAN_SECONDS,
        verdict(secs(cold_median) <= TARGET_PLAN_SECONDS)
    );
    println!(
        "  plan (warm): {:.3} s  target < {TARGET_PLAN_SECONDS:.0} s  ratio {:.2}×  {}",
        secs(warm_median),
        secs(warm_median) / TARGET_PLAN_SECONDS,
        verdict(secs(warm_median) <= TARGET_PLAN_SECONDS)
    );
    match process_peak {
        Some(peak) => println!(
            "  peak RSS: {:.0} MB  target < {TARGET_PEAK_MB:.0} MB  ratio {:.2}×  {}  (whole process: text, objects, store and plan)",
            mb(peak),
            mb(peak) / TARGET_PEAK_MB,
            verdict(mb(peak) <= TARGET_PEAK_MB)
        ),
        None => println!("  peak RSS: n/a (no /proc/self/status)"),
    }
    if let Some(delta) = delta {
        println!(
            "  plan RSS: {:.0} MB  target < {TARGET_PEAK_MB:.0} MB  ratio {:.2}×  {}  (growth from holding one Plan)",
            mb(delta),
            mb(delta) / TARGET_PEAK_MB,
            verdict(mb(delta) <= TARGET_PEAK_MB)
        );
    }
    println!("(times are medians; figures only, nothing here fails on a miss)");
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}
