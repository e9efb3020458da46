#!/usr/bin/env python3
"""Reads the raw results of bench/dns.sh: checks each run, prints per-run lines, the tables,
the ratios and the verdict.

Usage:
  report.py line-qps PEER OUT              one line for a throughput run (dnsperf's output OUT);
                                           exits 1 when invalid: no query completed, an answer
                                           other than NOERROR, more than MAX_LOST_SHARE (below)
                                           of the queries sent lost
  report.py line-lat PEER LOG SUMMARY      one line for a fixed-rate run (`dnsperf -v` output
                                           LOG, one "> RCODE NAME TYPE SECONDS" line per
                                           answer); writes its summary (JSON) to SUMMARY; exits
                                           1 when invalid, as above
  report.py plan PLAN_JSON SERVICES ENDPOINTS CIDR
                                           checks Portico's /plan: SERVICES Services, each with
                                           one ClusterIP in CIDR, and ENDPOINTS ready endpoints
                                           in all; prints the counts, exits 1 when they differ
  report.py report RESULTS_DIR ROUNDS RATE PEER...
                                           the tables and the verdict; peers in table order,
                                           Portico first

RESULTS_DIR holds, per peer and round R (1..ROUNDS):
  qps-PEER-R.txt        dnsperf's output of the throughput run
  lat-PEER-R.txt        the summary of the fixed-rate run (line-lat above)
  cpu-PEER-{qps,lat}-R.txt
                        "cpu_seconds wall_seconds core_busy": CPU of the server's processes
                        during the run, the run's length, and the busy share of the server's core
  rss-PEER-{qps,lat}-R.txt
                        "VmHWM_kB VmRSS_kB processes", summed over the server's processes, read
                        right after the run; VmHWM was reset just before it: the run's peak
  rss-PEER-ready.txt    the same, read once the server answered, before any load: VmRSS is
                        "RSS ready", VmHWM the start-up peak (loading, planning)
  rss-PEER.txt          the same, after all the runs: VmRSS is "RSS now"
  portico-ready-seconds.txt
                        seconds from starting Portico until /readyz answered
  portico-plan.txt      the counts of Portico's plan (plan above)
  portico-not-serving.txt
                        present when Portico was not measured: why

With more than one round, every figure is the median over the rounds, except the run peak
RSS (the highest over all runs), and the spread (lowest-highest) of queries/s and p99 is
printed below the tables.

Exits non-zero when a result of a serving peer is missing or invalid; a missed target is only
reported.
"""

import ipaddress
import json
import os
import re
import sys

# bench/report_common.py, wherever this is run from; no __pycache__ left in the source tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
from report_common import Invalid, bench_fail, fmt, fmt_pct, fmt_ratio, median_row  # noqa: E402
from report_common import print_header, print_unmeasured, print_verdict, ratio, span  # noqa: E402
from report_common import cpu_file, read, rss_file, us_per_op  # noqa: E402

# Targets (the issue): ahead of unbound, at least 0.8x knot, in the same run; RSS with
# 10,000 Services + 50,000 endpoints under 100 MB (taken as MiB, the stricter reading).
TARGET_UNBOUND_RATIO = 1.0
TARGET_KNOT_RATIO = 0.8
TARGET_RSS_MIB = 100.0
# Lost queries above this share of those sent make a run invalid. A burst of -q 500 queries at
# the start can overflow a server's socket buffer (208 KiB by default) by a few hundred, a few
# thousandths of a percent of a 30 s run: well below it.
MAX_LOST_SHARE = 0.001
# A throughput run where the server's core was less busy than this was paced by dnsperf.
BUSY_CORE = 0.9


def fail(msg):
    bench_fail("dns bench", msg)



def parse_dnsperf(path, text):
    """The statistics dnsperf prints at the end of a run: sent, completed, lost, rcodes
    ({RCODE: count}), qps, run_s, avg/min/max/sd in ms. Raises Invalid when TEXT has none."""

    def field(label, pattern=r"([\d.]+)"):
        m = re.search(rf"^\s*{label}:\s+{pattern}", text, re.M)
        if not m:
            raise Invalid(f"{path}: cannot read dnsperf's '{label}' line:\n{text[-2000:]}")
        return m

    r = {
        "sent": int(field("Queries sent").group(1)),
        "completed": int(field("Queries completed").group(1)),
        "lost": int(field("Queries lost").group(1)),
        "qps": float(field("Queries per second").group(1)),
        "run_s": float(field(r"Run time \(s\)").group(1)),
    }
    lat = field(r"Average Latency \(s\)", r"([\d.]+) \(min ([\d.]+), max ([\d.]+)\)")
    r["avg"], r["min"], r["max"] = (1000 * float(lat.group(i)) for i in (1, 2, 3))
    r["sd"] = 1000 * float(field(r"Latency StdDev \(s\)").group(1))
    codes = re.search(r"^\s*Response codes:\s+(.*)$", text, re.M)
    r["rcodes"] = {c: int(n) for c, n in re.findall(r"([A-Z]+) (\d+) \(", codes.group(1))} if codes else {}
    return r


def check_run(path, r, max_lost):
    """Raises Invalid unless the run answered, all NOERROR, and lost at most MAX_LOST of what
    it sent."""
    if r["completed"] == 0:
        raise Invalid(f"{path}: no query completed")
    others = {c: n for c, n in r["rcodes"].items() if c != "NOERROR"}
    if others:
        raise Invalid(f"{path}: answers other than NOERROR: {others}: the server does not hold the names")
    if r["lost"] > max_lost * r["sent"]:
        raise Invalid(
            f"{path}: {r['lost']} of {r['sent']} queries lost ({100 * r['lost'] / r['sent']:.2f} %,"
            f" more than {100 * max_lost:.2f} %): not a valid run"
        )


def qps_result(path, max_lost):
    r = parse_dnsperf(path, read(path))
    check_run(path, r, max_lost)
    return r


def lat_summary(log, max_lost):
    """Summary of a fixed-rate `dnsperf -v` run: dnsperf's statistics plus percentiles (ms)
    of the per-answer latencies."""
    times = []
    with open(log) as f:
        text_tail = []
        for line in f:
            if line.startswith("> "):
                parts = line.split()
                try:
                    times.append(float(parts[-1]))
                except (ValueError, IndexError):
                    raise Invalid(f"{log}: cannot read the -v line {line.strip()!r}")
            else:
                text_tail.append(line)
    r = parse_dnsperf(log, "".join(text_tail))
    check_run(log, r, max_lost)
    if not times:
        raise Invalid(f"{log}: no per-query line (dnsperf -v)")
    times.sort()

    def pct(q):
        return 1000 * times[min(len(times) - 1, int(q * len(times)))]

    r.update({"answers": len(times), "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "p999": pct(0.999)})
    return r


def line_qps(peer, path):
    r = qps_result(path, MAX_LOST_SHARE)
    print(
        f"  {peer:<8} {r['qps']:>9.0f} q/s  avg {r['avg']:.3f} ms  sd {r['sd']:.3f} ms"
        f"  lost {r['lost']} of {r['sent']}"
    )


def line_lat(peer, log, out):
    r = lat_summary(log, MAX_LOST_SHARE)
    with open(out, "w") as f:
        json.dump(r, f, indent=1)
        f.write("\n")
    print(
        f"  {peer:<8} {r['qps']:>9.0f} q/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms"
        f"  p99.9 {r['p999']:.3f} ms  max {r['max']:.3f} ms  lost {r['lost']}"
    )


def check_plan(path, services, endpoints, cidr):
    """Portico's /plan holds the scenario: SERVICES Services, each with exactly one ClusterIP
    inside CIDR, and ENDPOINTS ready endpoints in all."""
    with open(path) as f:
        plan = json.load(f)
    net = ipaddress.ip_network(cidr)
    svcs = plan.get("services", [])
    with_ip = sum(
        1 for s in svcs if len(s.get("clusterIps", s.get("cluster_ips", []))) == 1
        and ipaddress.ip_address(s.get("clusterIps", s.get("cluster_ips"))[0]) in net
    )
    ready = sum(1 for s in svcs for p in s.get("ports", []) for e in p.get("endpoints", []) if e.get("ready"))
    print(f"{len(svcs)} services, {with_ip} with a ClusterIP in {cidr}, {ready} ready endpoints")
    if len(svcs) != services or with_ip != services or ready != endpoints:
        print(f"expected {services} services with a ClusterIP in {cidr} and {endpoints} ready endpoints")
        sys.exit(1)




def one_round(results, peer, r, max_lost):
    row = {}
    q = qps_result(os.path.join(results, f"qps-{peer}-{r}.txt"), max_lost)
    row.update({k: q[k] for k in ("qps", "avg", "sd", "max", "lost", "sent")})
    row["cpu"], row["core"] = cpu_file(os.path.join(results, f"cpu-{peer}-qps-{r}.txt"))
    row["us_q"] = us_per_op(row["cpu"], row["qps"])
    lat = json.loads(read(os.path.join(results, f"lat-{peer}-{r}.txt")))
    check_run(f"lat-{peer}-{r}.txt", lat, max_lost)
    for k in ("qps", "p50", "p90", "p99", "p999", "max", "lost"):
        row[f"lat_{k}"] = lat[k]
    row["lat_cpu"], row["lat_core"] = cpu_file(os.path.join(results, f"cpu-{peer}-lat-{r}.txt"))
    row["lat_us_q"] = us_per_op(row["lat_cpu"], row["lat_qps"])
    return row


def memory(results, peer, n):
    """{"rss_ready", "hwm_start"}: VmRSS and VmHWM once ready; "rss_run": the highest run peak;
    "rss_now", "procs": after all the runs."""
    hwm_start, ready, procs = rss_file(os.path.join(results, f"rss-{peer}-ready.txt"))
    _, now, procs_end = rss_file(os.path.join(results, f"rss-{peer}.txt"))
    peaks = [
        rss_file(os.path.join(results, f"rss-{peer}-{name}-{r}.txt"))[0]
        for name in ("qps", "lat")
        for r in range(1, n + 1)
    ]
    peaks = [x for x in peaks if x is not None]
    return {
        "rss_ready": ready,
        "hwm_start": hwm_start,
        "rss_run": max(peaks) if peaks else None,
        "rss_now": now,
        "procs": procs_end or procs,
    }



def report(results, n, rate, peers):
    max_lost = MAX_LOST_SHARE
    not_serving = None
    path = os.path.join(results, "portico-not-serving.txt")
    if os.path.exists(path):
        not_serving = read(path).strip()
    rows, spreads, problems = {}, {}, []
    for peer in peers:
        if peer == "portico" and not_serving is not None:
            continue
        try:
            per_round = [one_round(results, peer, r, max_lost) for r in range(1, n + 1)]
        except Invalid as err:
            problems.append(f"{peer}: {err}")
            continue
        rows[peer] = median_row(per_round)
        rows[peer].update(memory(results, peer, n))
        spreads[peer] = per_round

    if n > 1:
        print(f"medians of {n} rounds")
    print("1. throughput (dnsperf, no rate limit):")
    header = (
        f"{'server':<9} {'queries/s':>11} {'avg ms':>8} {'sd ms':>7} {'max ms':>7} {'lost':>6}"
        f" {'server CPU':>11} {'core busy':>10} {'CPU us/q':>9}"
    )
    print_header(header)
    for peer in peers:
        r = rows.get(peer)
        if r is None:
            print_unmeasured(peer, not_serving, 11)
            continue
        mark = "  (load-bound)" if r["core"] is not None and r["core"] < BUSY_CORE else ""
        print(
            f"{peer:<9} {r['qps']:>11.0f} {r['avg']:>8.3f} {r['sd']:>7.3f} {r['max']:>7.2f} {r['lost']:>6.0f}"
            f" {fmt_pct(r['cpu']):>11} {fmt_pct(r['core']):>10} {fmt(r['us_q'], '.2f'):>9}{mark}"
        )
    print()
    print(f"2. latency at a fixed rate (dnsperf -Q {rate} -v; per-query latencies):")
    header = (
        f"{'server':<9} {'queries/s':>11} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"
        f" {'max ms':>7} {'lost':>6} {'server CPU':>11} {'CPU us/q':>9}"
    )
    print_header(header)
    for peer in peers:
        r = rows.get(peer)
        if r is None:
            print_unmeasured(peer, not_serving, 11)
            continue
        print(
            f"{peer:<9} {r['lat_qps']:>11.0f} {r['lat_p50']:>8.3f} {r['lat_p90']:>8.3f} {r['lat_p99']:>8.3f}"
            f" {r['lat_p999']:>9.3f} {r['lat_max']:>7.2f} {r['lat_lost']:>6.0f} {fmt_pct(r['lat_cpu']):>11}"
            f" {fmt(r['lat_us_q'], '.2f'):>9}"
        )
    print()
    print("3. memory (MiB; VmHWM/VmRSS summed over the server's processes):")
    header = f"{'server':<9} {'RSS ready':>10} {'start-up peak':>14} {'peak in runs':>13} {'RSS now':>8}"
    print_header(header)
    for peer in peers:
        r = rows.get(peer)
        if r is None:
            print_unmeasured(peer, not_serving, 11)
            continue
        procs = f" ({r['procs']} procs)" if r["procs"] and r["procs"] > 1 else ""
        print(
            f"{peer:<9} {fmt(r['rss_ready'], '.1f'):>10} {fmt(r['hwm_start'], '.1f'):>14}"
            f" {fmt(r['rss_run'], '.1f'):>13} {fmt(r['rss_now'], '.1f'):>8}{procs}"
        )
    print(
        "(server CPU: user+system time of the server's processes during the run, as a share of one"
        " core; core busy: the\n server's core as a whole, softirq of the loopback traffic included;"
        f" load-bound: that core under {BUSY_CORE:.0%} busy,\n so dnsperf, not the server, set the"
        " pace; peak in runs: VmHWM reset before each run, highest after)"
    )
    extra = []
    p = os.path.join(results, "portico-ready-seconds.txt")
    if "portico" in rows and os.path.exists(p):
        extra.append(f"Portico ready after {read(p).strip()} s")
    p = os.path.join(results, "portico-plan.txt")
    if "portico" in rows and os.path.exists(p):
        extra.append(f"its plan: {read(p).strip()}")
    if extra:
        print("; ".join(extra))

    if n > 1:
        print()
        print("spread over the rounds (lowest-highest):")
        for peer in peers:
            if peer in spreads:
                print(
                    f"  {peer:<8} queries/s {span(spreads[peer], 'qps', '.0f')}"
                    f"   p99 at {rate} q/s {span(spreads[peer], 'lat_p99', '.3f')} ms"
                )

    print()
    if "portico" in rows:
        p = rows["portico"]
        print("ratios portico / server   queries/s   avg latency   p99 at rate   CPU us/q   peak RSS")
        for peer in peers:
            if peer == "portico" or peer not in rows:
                continue
            o = rows[peer]
            print(
                f"  portico / {peer:<13} {fmt_ratio(ratio(p['qps'], o['qps'])):>10}"
                f" {fmt_ratio(ratio(p['avg'], o['avg'])):>13} {fmt_ratio(ratio(p['lat_p99'], o['lat_p99'])):>13}"
                f" {fmt_ratio(ratio(p['us_q'], o['us_q'])):>10} {fmt_ratio(ratio(p['rss_run'], o['rss_run'])):>10}"
            )
        print()
        u, k = rows.get("unbound"), rows.get("knot")
        checks = [
            (
                "queries/s > unbound's",
                fmt_ratio(ratio(p["qps"], u["qps"])) if u else "no unbound figure",
                bool(u) and p["qps"] > TARGET_UNBOUND_RATIO * u["qps"],
            ),
            (
                f"queries/s >= {TARGET_KNOT_RATIO}x knot's",
                fmt_ratio(ratio(p["qps"], k["qps"])) if k else "no knot figure",
                bool(k) and p["qps"] >= TARGET_KNOT_RATIO * k["qps"],
            ),
            (
                f"RSS < {TARGET_RSS_MIB:.0f} MiB (peak in runs)",
                f"{fmt(p['rss_run'], '.1f')} MiB",
                p["rss_run"] is not None and p["rss_run"] < TARGET_RSS_MIB,
            ),
        ]
        print_verdict(checks)
        print(
            f"  (not in the verdict: Portico's start-up peak {fmt(p['hwm_start'], '.1f')} MiB,"
            f" RSS once ready {fmt(p['rss_ready'], '.1f')} MiB)"
        )
    else:
        why = not_serving if not_serving is not None else "its runs were invalid"
        print(f"verdict: not measured -- Portico NOT SERVING ({why})")
        for peer in ("unbound", "knot"):
            if peer in rows:
                print(f"  ({peer}: {rows[peer]['qps']:.0f} queries/s)")
    if problems:
        print()
        for problem in problems:
            print(f"dns bench: INVALID {problem}", file=sys.stderr)
        sys.exit(1)


def main():
    args = sys.argv[1:]
    try:
        if len(args) == 3 and args[0] == "line-qps":
            line_qps(args[1], args[2])
        elif len(args) == 4 and args[0] == "line-lat":
            line_lat(args[1], args[2], args[3])
        elif len(args) == 5 and args[0] == "plan":
            check_plan(args[1], int(args[2]), int(args[3]), args[4])
        elif len(args) >= 5 and args[0] == "report":
            report(args[1], int(args[2]), int(args[3]), args[4:])
        else:
            fail(
                "usage: report.py line-qps PEER OUT | line-lat PEER LOG SUMMARY"
                " | plan PLAN SERVICES ENDPOINTS CIDR | report DIR ROUNDS RATE PEER..."
            )
    except Invalid as err:
        fail(str(err))


if __name__ == "__main__":
    main()
