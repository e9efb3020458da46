#!/usr/bin/env python3
"""bench/mesh.sh's reading and reporting.

  report.py addresses               reads `portico lab probe` output of an agent's /plan on
                                    stdin; checks that each namespace's server Pod is on
                                    lab-node-2 and its client on lab-node-1; prints
                                    "meshed_pod_ip meshed_cluster_ip plain_pod_ip plain_cluster_ip"
  report.py metric NAME [TEXT...]   reads `portico lab probe` output of /metrics on stdin;
                                    prints the sum of the samples of NAME whose line holds
                                    every TEXT (0 when there is none)
  report.py record FILE KEY=VALUE...
                                    adds numbers to the run's JSON (what the script checked)
  report.py check FILE MODE CONNECTIONS
                                    fails when the run did not measure what it should: fewer
                                    than 99 % of the scheduled requests answered 2xx, over 1 %
                                    errors, an answer from another Pod than server-0, a meshed
                                    run the server's proxy saw fewer tunnel streams than
                                    CONNECTIONS of, a plain run it saw any of, a denial
  report.py line FILE               one line of a run's figures
  report.py memory FILE STAGE KEY=HWM:RSS:ANON:FILE...
                                    records the agents' peak and current RSS, and its
                                    anonymous and file parts (kB) at STAGE
                                    (up, end) in FILE (memory.json)
  report.py report RESULTS ROUNDS TARGETS
                                    the summary: latency per target, pooled over the rounds
                                    (RESULTS/lat-R-TARGET-MODE.txt), added latency, the agents'
                                    CPU per request, their memory, ztunnel's published figures
                                    beside them, the verdict

RESULTS holds per round R, target TARGET (pod or service) and mode MODE (plain or meshed)
run-R-TARGET-MODE.json (load.py's output plus the recorded checks) and lat-R-TARGET-MODE.txt
(every measured latency in µs), and memory.json (the agents' RSS, from `memory`).

Exits non-zero only when a result is missing or something did not run; a missed target is
only reported. Standard library only.
"""

import ipaddress
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
from report_common import bench_fail, print_header, print_verdict  # noqa: E402

BENCH = "mesh bench"
MODES = ("plain", "meshed")
TARGET_NAMES = {"pod": "server Pod IP :8080", "service": "Service ClusterIP :80"}
NODES = (("n1", "lab-node-1", "client's node"), ("n2", "lab-node-2", "server's node"), ("n3", "lab-node-3", "no Pod"))

# ztunnel's published figures (Istio 1.24, docs "Performance and Scalability"; Istio's
# benchmark: fortio, HTTP/1.1, 1 kB payload, 1,000 requests/s, 16 client connections, mutual
# TLS): the latency it adds, the CPU and memory of one ztunnel at that load.
ZTUNNEL_P90_MS = 0.17
ZTUNNEL_P99_MS = 0.20
ZTUNNEL_VCPU = 0.06
ZTUNNEL_MB = 12.0


def body_json(text):
    """The JSON body of `portico lab probe http` output."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("ok"):
        bench_fail(BENCH, f"the probe did not answer: {lines[0] if lines else '(nothing)'}")
    for i, line in enumerate(lines):
        if line.startswith("{"):
            return json.loads("\n".join(lines[i:]))
    bench_fail(BENCH, "no JSON body in the probe's answer")


def cmd_addresses():
    plan = body_json(sys.stdin.read())
    pods = {(p["key"]["namespace"], p["key"]["name"]): p for p in plan.get("pods", [])}
    services = {(s["key"]["namespace"], s["key"]["name"]): s for s in plan.get("services", [])}
    out = []
    for ns in ("meshed", "plain"):
        server, client = pods.get((ns, "server-0")), pods.get((ns, "client"))
        if server is None or client is None:
            bench_fail(BENCH, f"the Plan has no Pod {ns}/server-0 or {ns}/client")
        if server.get("node") != "lab-node-2" or client.get("node") != "lab-node-1":
            bench_fail(BENCH, f"{ns}/server-0 is on {server.get('node')}, {ns}/client on {client.get('node')}:"
                       " the bench wants them on lab-node-2 and lab-node-1")
        v4 = [ip for ip in server.get("ips", []) if ":" not in ip]
        service = services.get((ns, "server"))
        cluster = [ip for ip in (service or {}).get("clusterIps", []) if ":" not in ip]
        if not v4 or not cluster:
            bench_fail(BENCH, f"no IPv4 address for {ns}/server-0 or its Service")
        # Every address the load goes to is the lab's own (198.18.0.0/15).
        for ip in (v4[0], cluster[0]):
            if ipaddress.ip_address(ip) not in ipaddress.ip_network("198.18.0.0/15"):
                bench_fail(BENCH, f"{ip} is not in the lab's 198.18.0.0/15")
        out += [v4[0], cluster[0]]
    print(" ".join(out))


def cmd_metric(name, texts):
    total = 0.0
    for line in sys.stdin.read().splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name):]
        if rest[:1] not in ("{", " "):
            continue
        if all(t in line for t in texts):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    print(f"{total:.0f}")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        bench_fail(BENCH, f"{path}: {e}")


def cmd_record(path, pairs):
    run = load(path)
    for pair in pairs:
        key, _, value = pair.partition("=")
        run[key] = float(value)
    with open(path, "w") as f:
        json.dump(run, f)


def cmd_check(path, mode, connections):
    run = load(path)
    if "error" in run:
        bench_fail(BENCH, f"{path}: {run['error']}")
    scheduled, ok, errors = run["scheduled"], run["ok"], run["errors"]
    why = []
    if ok < 0.99 * scheduled:
        why.append(f"{ok} of {scheduled} requests answered 2xx")
    if errors > 0.01 * scheduled:
        why.append(f"{errors} errors")
    if set(run["pods"]) - {"server-0"}:
        why.append(f"answers from {sorted(run['pods'])}")
    opened, denied = run.get("tunnel_streams", 0), run.get("denied", 0)
    if mode == "meshed" and opened < connections:
        why.append(f"the server's proxy saw {opened:.0f} tunnel streams, fewer than the {connections} connections")
    if mode == "plain" and opened > 0:
        why.append(f"the plain run went through the mesh ({opened:.0f} tunnel streams)")
    if denied:
        why.append(f"{denied:.0f} connections denied by policy")
    if why:
        bench_fail(BENCH, f"{path} did not measure what it should: " + "; ".join(why))


def cpu_us(run, key):
    """µs of CPU per measured request of the watched process KEY, or None."""
    s = (run.get("cpu_s") or {}).get(key)
    return None if s is None or not run["answered"] else s * 1e6 / run["answered"]


def cmd_line(path):
    r = load(path)
    cpu = "  ".join(f"{label} {cpu_us(r, key):5.1f}" for key, label, _ in NODES[:2] if cpu_us(r, key) is not None)
    print(
        f"p50 {r['p50_ms']:6.3f}  p90 {r['p90_ms']:6.3f}  p99 {r['p99_ms']:6.3f}  max {r['max_ms']:7.2f} ms"
        f"  ({r['ok']}/{r['scheduled']} 2xx, {r['errors']} errors; sent late p99 {r['late_p99_ms']:.3f} ms;"
        f" agents' CPU per request, us: {cpu}; machine busy before {100 * r.get('idle_busy', 0):.0f} % of a core)"
    )


def percentile(values, q):
    if not values:
        return None
    rank = max(1, -(-int(q * 1_000_000) * len(values) // 1_000_000))
    return values[min(rank, len(values)) - 1]


def pooled(results, rounds, target, mode):
    """The latencies (ms, sorted) of every round of TARGET and MODE, and their runs."""
    lat, runs = [], []
    for r in range(1, rounds + 1):
        stem = f"{r}-{target}-{mode}"
        runs.append(load(os.path.join(results, f"run-{stem}.json")))
        try:
            with open(os.path.join(results, f"lat-{stem}.txt")) as f:
                lat += [float(x) / 1000.0 for x in f if x.strip()]
        except OSError as e:
            bench_fail(BENCH, f"{e}")
    lat.sort()
    return lat, runs


def rate_label(run):
    rate = run["rate"] if run else 1000.0
    return f"{rate / 1000:g}k/s" if rate >= 1000 else f"{rate:g}/s"


def fmt_ms(x):
    return "-" if x is None else f"{x:.3f}"


def fmt_added(x):
    return "-" if x is None else f"{x:+.3f}"


def fmt_x(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}x"


def cmd_report(results, rounds, targets):
    rounds = int(rounds)
    targets = targets.split()
    checks = []
    first = None
    print("Latency, ms, from each request's scheduled send time (pooled over the rounds):")
    header = f"{'target':<22} {'mode':<8} {'requests':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>8} {'errors':>6}"
    print_header(header)
    added = {}
    for target in targets:
        rows = {}
        for mode in MODES:
            lat, runs = pooled(results, rounds, target, mode)
            first = first or runs[0]
            q = {p: percentile(lat, p / 100) for p in (50, 90, 99, 99.9)}
            q["max"] = lat[-1] if lat else None
            rows[mode] = q
            errors = sum(r["errors"] for r in runs)
            print(f"{TARGET_NAMES[target]:<22} {mode:<8} {len(lat):>8} {fmt_ms(q[50]):>7} {fmt_ms(q[90]):>7}"
                  f" {fmt_ms(q[99]):>7} {fmt_ms(q[99.9]):>7} {fmt_ms(q['max']):>8} {errors:>6}")
        a = {p: rows["meshed"][p] - rows["plain"][p] for p in (50, 90, 99, 99.9)}
        added[target] = a
        print(f"{TARGET_NAMES[target]:<22} {'added':<8} {'':>8} {fmt_added(a[50]):>7} {fmt_added(a[90]):>7}"
              f" {fmt_added(a[99]):>7} {fmt_added(a[99.9]):>7}")
    print()
    print("Added latency (meshed minus plain) against ztunnel's published figures (not measured here):")
    header = f"{'target':<22} {'percentile':<10} {'Portico':>9} {'ztunnel':>9} {'ratio':>7}"
    print_header(header)
    for target in targets:
        for p, z in ((50, None), (90, ZTUNNEL_P90_MS), (99, ZTUNNEL_P99_MS)):
            zs = "-" if z is None else f"+{z:.2f}"
            print(f"{TARGET_NAMES[target]:<22} {'p' + str(p):<10} {fmt_added(added[target][p]):>9} {zs:>9}"
                  f" {fmt_x(added[target][p], z):>7}")
    if rounds > 1:
        print()
        print("Added latency per round (meshed minus plain, ms), to see the spread:")
        for target in targets:
            parts = []
            for r in range(1, rounds + 1):
                m = load(os.path.join(results, f"run-{r}-{target}-meshed.json"))
                p = load(os.path.join(results, f"run-{r}-{target}-plain.json"))
                parts.append(f"round {r}: p50 {m['p50_ms'] - p['p50_ms']:+.3f} p90 {m['p90_ms'] - p['p90_ms']:+.3f}"
                             f" p99 {m['p99_ms'] - p['p99_ms']:+.3f}")
            print(f"  {TARGET_NAMES[target]}: " + "; ".join(parts))

    # CPU: every run's watched processes, summed over the runs of a mode (all targets).
    print()
    print("CPU (user+system of the processes, /proc/PID/stat, all threads) per request, over the measured windows:")
    header = (f"{'process':<34} {'plain us/req':>12} {'meshed us/req':>13} {'mesh us/req':>11}"
              f" {'mesh cores at ' + rate_label(first):>18} {'ztunnel':>8} {'ratio':>7}")
    print_header(header)
    per_mode = {}
    keys = [key for key, _, _ in NODES] + ["echo", "generator"]
    for mode in MODES:
        sums = {key: 0.0 for key in keys}
        answered = 0
        for target in targets:
            for r in range(1, rounds + 1):
                run = load(os.path.join(results, f"run-{r}-{target}-{mode}.json"))
                answered += run["answered"]
                for key in sums:
                    sums[key] += (run.get("cpu_s") or {}).get(key) or 0.0
        per_mode[mode] = {key: s * 1e6 / answered for key, s in sums.items()} if answered else {}
    rate = first["rate"] if first else 1000.0
    mesh_us = {}
    rows = [(key, f"{name} agent ({what})", key != "n3") for key, name, what in NODES]
    rows += [("echo", "echo server (server-0)", False), ("generator", "load generator (load.py)", False)]
    for key, label, peer in rows:
        plain, meshed = per_mode["plain"].get(key, 0.0), per_mode["meshed"].get(key, 0.0)
        mesh = meshed - plain
        mesh_us[key] = mesh
        cores = mesh * rate / 1e6
        z = f"{ZTUNNEL_VCPU:.2f}" if peer else "-"
        ratio = fmt_x(cores, ZTUNNEL_VCPU) if peer else "-"
        print(f"{label:<34} {plain:>12.1f} {meshed:>13.1f} {mesh:>+11.1f} {cores:>18.3f} {z:>8} {ratio:>7}")
    both = mesh_us["n1"] + mesh_us["n2"]
    print(f"{'both node proxies':<34} {'':>12} {'':>13} {both:>+11.1f} {both * rate / 1e6:>18.3f}"
          f" {2 * ZTUNNEL_VCPU:>8.2f} {fmt_x(both * rate / 1e6, 2 * ZTUNNEL_VCPU):>7}")
    whole = {mode: sum(per_mode[mode].get(k, 0.0) for k in keys) for mode in MODES}
    print(f"{'the whole lab (all above)':<34} {whole['plain']:>12.1f} {whole['meshed']:>13.1f}"
          f" {whole['meshed'] - whole['plain']:>+11.1f} {(whole['meshed'] - whole['plain']) * rate / 1e6:>18.3f}")
    print("(the kernel's work for a socket is charged to the process running when it is done: some of the mesh's")
    print(" lands on the echo server and the load generator, whose sends deliver into the proxies' sockets)")

    # Memory.
    memory = load(os.path.join(results, "memory.json"))
    print()
    print("Node agents' memory, MiB: VmRSS (its anonymous part; peak VmHWM). Each agent also runs the kernel data")
    print("plane, cluster DNS, the Ingress and the health checks: the mesh's share is the difference to lab-node-3's:")
    header = f"{'agent':<34} {'after lab up':>22} {'after the runs':>29}"
    print_header(header)

    def mem(m):
        return f"{m['rss'] / 1024:.1f} ({m['anon'] / 1024:.1f} anon; {m['hwm'] / 1024:.1f})"

    for key, name, what in NODES:
        print(f"{name + ' agent (' + what + ')':<34} {mem(memory['up'][key]):>22} {mem(memory['end'][key]):>29}")
    share = {key: (memory["end"][key]["rss"] - memory["end"]["n3"]["rss"]) / 1024 for key in ("n1", "n2")}
    worst = max(share.values())
    whole_mb = max(memory["end"][k]["rss"] for k in ("n1", "n2")) / 1024 * 1.048576
    print(f"mesh's share (RSS minus lab-node-3's): lab-node-1 {share['n1']:+.1f} MiB, lab-node-2 {share['n2']:+.1f} MiB;"
          f" ztunnel: {ZTUNNEL_MB:.0f} MB in all ({fmt_x(max(worst, 0.0) * 1.048576, ZTUNNEL_MB)} for the larger share;"
          f" a whole agent, {whole_mb:.1f} MB, is {whole_mb / ZTUNNEL_MB:.2f}x)")

    print()
    print("ztunnel's figures are Istio's published ones (Istio 1.24 \"Performance and Scalability\": fortio, HTTP/1.1,")
    print("1 kB payload, 1,000 req/s, 16 connections, mutual TLS, on dedicated nodes); neither ztunnel nor Linkerd can be")
    print("installed on this machine, so they were not measured here. This machine's 2 cores run the load generator,")
    print("both proxies, the echo server and the kernel's network work for all of them at once. As in ztunnel, the")
    print("AuthorizationPolicy is decided once per connection (each client connection's tunnel stream), not per request.")
    p99 = max(added[t][99] for t in targets)
    checks.append(("added p99 <= +0.20 ms (ztunnel)", f"+{p99:.3f} ms" if p99 >= 0 else f"{p99:.3f} ms", p99 <= ZTUNNEL_P99_MS))
    checks.append(("mesh's memory <= 12 MB per node proxy", f"{worst * 1.048576:+.1f} MB", worst * 1.048576 <= ZTUNNEL_MB))
    print_verdict(checks)


def cmd_memory(out, pairs):
    """memory FILE STAGE KEY=HWM:RSS:ANON:FILE...: adds the agents' RSS (kB) at STAGE."""
    stage, rest = pairs[0], pairs[1:]
    try:
        with open(out) as f:
            memory = json.load(f)
    except (OSError, ValueError):
        memory = {}
    memory[stage] = {}
    for pair in rest:
        key, _, value = pair.partition("=")
        hwm, rss, anon, file = (value.split(":") + ["0", "0", "0", "0"])[:4]
        memory[stage][key] = {"hwm": float(hwm), "rss": float(rss), "anon": float(anon), "file": float(file)}
    with open(out, "w") as f:
        json.dump(memory, f)


def main():
    args = sys.argv[1:]
    if not args:
        bench_fail(BENCH, "report.py: a command is required (see its docstring)")
    cmd, rest = args[0], args[1:]
    if cmd == "addresses":
        cmd_addresses()
    elif cmd == "metric" and rest:
        cmd_metric(rest[0], rest[1:])
    elif cmd == "record" and rest:
        cmd_record(rest[0], rest[1:])
    elif cmd == "check" and len(rest) == 3:
        cmd_check(rest[0], rest[1], int(rest[2]))
    elif cmd == "line" and len(rest) == 1:
        cmd_line(rest[0])
    elif cmd == "memory" and len(rest) >= 2:
        cmd_memory(rest[0], rest[1:])
    elif cmd == "report" and len(rest) == 3:
        cmd_report(*rest)
    else:
        bench_fail(BENCH, f"report.py: bad arguments: {' '.join(args)}")


if __name__ == "__main__":
    main()
