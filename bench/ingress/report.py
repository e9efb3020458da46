#!/usr/bin/env python3
"""Reads the raw results of bench/ingress.sh: checks each run, prints per-run lines, the
tables, the ratios and the verdict.

Usage:
  report.py line-wrk PEER WRK_OUT          one line for a wrk run; exits 1 when the run is
                                           invalid (non-2xx responses, socket errors, nothing done)
  report.py h2log LOG                      summarises h2load's --log-file: "ok edge non2xx
                                           p50_ms p99_ms mean_ms" (latencies of the 2xx ones;
                                           edge: status -1 or 0, streams cut by the start or
                                           end of the measuring period)
  report.py line-h2 PEER H2_OUT H2LAT      one line for an h2load run; exits 1 when invalid
                                           (not h2, failed/errored requests, non-2xx)
  report.py report RESULTS_DIR ROUNDS PEER...
                                           the tables and the verdict; peers in table order

RESULTS_DIR holds, per peer and round R (1..ROUNDS):
  wrk-PEER-R.txt        `wrk --latency` output
  h2-PEER-R.txt         h2load output (no file for the backend)
  h2lat-PEER-R.txt      the summary of h2load's request log (h2log above)
  cpu-PEER-{wrk,h2}-R.txt
                        "cpu_seconds wall_seconds core_busy": CPU of the proxy's processes
                        during the run, the run's length, and the busy share of the proxy's core
  load-PEER-{wrk,h2}-R.txt
                        how busy the load core was during the run, as a share of it (none in
                        older results)
  rss-PEER-{wrk,h2}-R.txt
                        "VmHWM_kB VmRSS_kB processes", summed over the proxy's processes, read
                        right after the run; VmHWM was reset just before it, so it is the run's
                        peak (none for the backend)
  rss-PEER.txt          the same, read after all the runs: its VmRSS is "RSS now" (its VmHWM is
                        the peak since the last reset; the peak since start in results older than
                        the per-run files, where it stands in for both per-run peaks)
  portico-not-serving.txt
                        present when Portico was not measured: why

With more than one round, every figure is the median over the rounds, except the peak RSS of
a workload (the highest over its rounds), and the spread (lowest-highest) of req/s and p99 is
printed below the tables; after the verdict, each round's own ratio of Portico's HTTP/1.1
req/s to that round's best peer.

Exits non-zero when a result of a serving peer is missing or invalid; a missed target is only
reported.
"""

import os
import re
import sys

# bench/report_common.py, wherever this is run from; no __pycache__ left in the source tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
from report_common import Invalid, bench_fail, fmt, fmt_pct, fmt_ratio, median_row, parse_wrk  # noqa: E402
from report_common import print_capacity_note, print_header, print_round_ratios, print_unmeasured  # noqa: E402
from report_common import print_verdict, ratio, span  # noqa: E402
from report_common import cpu_file, load_file, read, rss_file, us_per_op  # noqa: E402

# Targets: Portico against the best peer by HTTP/1.1 requests/s.
TARGET_RPS_RATIO = 1.2
TARGET_RSS_MIB = 20.0
PROXIES_COMPARED = ("nginx", "haproxy", "envoy", "traefik")
# h2load -c 64 -m 10 in bench/ingress.sh: streams in flight at any time.
H2_IN_FLIGHT = 64 * 10


def fail(msg):
    bench_fail("ingress bench", msg)



def wrk_result(path):
    r = parse_wrk(path, read(path))
    requests, errors, bad = r["requests"], r["errors"], r["non2xx"]
    if bad:
        raise Invalid(f"{path}: {bad} of {requests} responses were not 2xx: a route is missing or the proxy is broken")
    if errors:
        raise Invalid(f"{path}: {errors} socket errors ({r['sock']}) for {requests} requests")
    return {k: r[k] for k in ("rps", "p50", "p99", "requests")}


def h2log(path):
    """h2load --log-file: start (us since epoch) <TAB> status <TAB> us until end of response."""
    times = []
    failed = non2xx = 0
    with open(path) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) < 3:
                continue
            status = int(cols[1])
            if status <= 0:
                # At the edges of the measuring period: -1 marks the streams still open when it
                # ends, 0 streams started in the warm-up whose status line came before it began.
                failed += 1
                continue
            if not 200 <= status < 300:
                non2xx += 1
                continue
            times.append(int(cols[2]))
    if not times:
        fail(f"{path}: no successful request in h2load's log")
    times.sort()

    def pct(q):
        return times[min(len(times) - 1, int(q * len(times)))] / 1000.0

    mean = sum(times) / len(times) / 1000.0
    print(f"{len(times)} {failed} {non2xx} {pct(0.50):.3f} {pct(0.99):.3f} {mean:.3f}")


def h2_result(path, lat_path):
    text = read(path)
    fin = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    req = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    proto = re.search(r"Application protocol: (\S+)", text)
    if not fin or not req or not codes:
        raise Invalid(f"{path}: cannot read h2load output:\n{text[-2000:]}")
    if not proto or proto.group(1) != "h2":
        raise Invalid(f"{path}: the connection did not negotiate h2 ({proto.group(1) if proto else 'no ALPN'})")
    done, ok, failed, errored, timeout = (int(req.group(i)) for i in (3, 4, 5, 6, 7))
    non2xx = sum(int(codes.group(i)) for i in (2, 3, 4))
    if ok == 0:
        raise Invalid(f"{path}: no request succeeded")
    if errored or timeout or non2xx:
        raise Invalid(
            f"{path}: {errored} errored, {timeout} timed out, {non2xx} non-2xx of {done} requests: not a valid run"
        )
    n, lat_failed, lat_non2xx, p50, p99, mean = read(lat_path).split()
    failed = max(failed, int(lat_failed))
    if failed > H2_IN_FLIGHT:
        # Streams cut by the start or the end of the measuring period count as failed: up to
        # all the streams in flight (connections x streams per connection) is normal.
        raise Invalid(f"{path}: {failed} of {done} requests failed: not a valid run")
    if int(lat_non2xx):
        raise Invalid(f"{lat_path}: {lat_non2xx} requests in h2load's log were not 2xx")
    return {"rps": float(fin.group(3)), "p50": float(p50), "p99": float(p99), "mean": float(mean), "failed": failed}




def one_round(results, peer, r):
    row = {}
    wrk = wrk_result(os.path.join(results, f"wrk-{peer}-{r}.txt"))
    row.update(wrk)
    row["cpu"], row["core"] = cpu_file(os.path.join(results, f"cpu-{peer}-wrk-{r}.txt"))
    row["us_req"] = us_per_op(row["cpu"], row["rps"]) if peer != "backend" else None
    row["load_us"] = us_per_op(load_file(os.path.join(results, f"load-{peer}-wrk-{r}.txt")), row["rps"])
    if peer == "backend":
        # The backend runs on the load generator's core: neither figure is about a proxy.
        row["cpu"] = row["core"] = None
        for k in ("h2_rps", "h2_p50", "h2_p99", "h2_mean", "h2_cpu", "h2_core", "h2_us_req", "h2_load_us"):
            row[k] = None
        return row
    h2 = h2_result(os.path.join(results, f"h2-{peer}-{r}.txt"), os.path.join(results, f"h2lat-{peer}-{r}.txt"))
    row["h2_rps"], row["h2_p50"], row["h2_p99"], row["h2_mean"] = h2["rps"], h2["p50"], h2["p99"], h2["mean"]
    row["h2_cpu"], row["h2_core"] = cpu_file(os.path.join(results, f"cpu-{peer}-h2-{r}.txt"))
    row["h2_us_req"] = us_per_op(row["h2_cpu"], row["h2_rps"])
    row["h2_load_us"] = us_per_op(load_file(os.path.join(results, f"load-{peer}-h2-{r}.txt")), row["h2_rps"])
    return row



def rss(results, peer, n):
    """The peer's memory: {"rss_h1", "rss_h2"}: the highest VmHWM over the rounds of its
    HTTP/1.1 and of its h2 runs (MiB), {"rss_now", "procs"}: VmRSS and processes after all the
    runs, and "rss_old": True when a per-run peak came from rss-PEER.txt (no per-run files)."""
    hwm_end, now, procs = rss_file(os.path.join(results, f"rss-{peer}.txt"))
    out = {"rss_now": now, "procs": procs, "rss_old": False}
    for key, name in (("rss_h1", "wrk"), ("rss_h2", "h2")):
        peaks = [rss_file(os.path.join(results, f"rss-{peer}-{name}-{r}.txt"))[0] for r in range(1, n + 1)]
        peaks = [x for x in peaks if x is not None]
        out[key] = max(peaks) if peaks else hwm_end
        out["rss_old"] |= not peaks and hwm_end is not None
    return out


def report(results, n, peers):
    not_serving = None
    path = os.path.join(results, "portico-not-serving.txt")
    if os.path.exists(path):
        not_serving = read(path).strip()
    rows, spreads, problems = {}, {}, []
    for peer in peers:
        if peer == "portico" and not_serving is not None:
            continue
        try:
            per_round = [one_round(results, peer, r) for r in range(1, n + 1)]
        except Invalid as err:
            problems.append(f"{peer}: {err}")
            continue
        rows[peer] = median_row(per_round)
        rows[peer].update(rss(results, peer, n))
        spreads[peer] = per_round

    if n > 1:
        print(f"medians of {n} rounds")
    print("HTTP/1.1 keep-alive (wrk), 200 host/path pairs:")
    header = (
        f"{'peer':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU':>10} {'core busy':>10}"
        f" {'CPU us/req':>11} {'load us/req':>12} {'RSS HTTP/1.1':>13} {'RSS h2':>7} {'RSS now':>8}"
    )
    print_header(header)
    for peer in peers:
        r = rows.get(peer)
        if r is None:
            print_unmeasured(peer, not_serving, 9)
            continue
        procs = f" ({r['procs']} procs)" if r["procs"] and r["procs"] > 1 else ""
        print(
            f"{peer:<9} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {fmt_pct(r['cpu']):>10}"
            f" {fmt_pct(r['core']):>10} {fmt(r['us_req'], '.1f'):>11} {fmt(r['load_us'], '.1f'):>12}"
            f" {fmt(r['rss_h1'], '.1f'):>13}"
            f" {fmt(r['rss_h2'], '.1f'):>7} {fmt(r['rss_now'], '.1f'):>8}{procs}"
        )
    print()
    print("h2 over TLS (h2load), one host, 10 paths:")
    header = (
        f"{'peer':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'proxy CPU':>10}"
        f" {'core busy':>10} {'CPU us/req':>11} {'load us/req':>12}"
    )
    print_header(header)
    for peer in peers:
        if peer == "backend":
            continue
        r = rows.get(peer)
        if r is None:
            print_unmeasured(peer, not_serving, 9)
            continue
        print(
            f"{peer:<9} {r['h2_rps']:>9.0f} {r['h2_p50']:>8.2f} {r['h2_p99']:>8.2f} {r['h2_mean']:>8.2f}"
            f" {fmt_pct(r['h2_cpu']):>10} {fmt_pct(r['h2_core']):>10} {fmt(r['h2_us_req'], '.1f'):>11}"
            f" {fmt(r['h2_load_us'], '.1f'):>12}"
        )
    print(
        "(proxy CPU: user+system time of all the proxy's processes during the run, as a share of its"
        " one core;\n core busy: the proxy's core, loopback softirq work included; CPU us/req: proxy CPU"
        " per request;\n load us/req: the load core's busy microseconds per request (the load generator,"
        " the backend and the kernel work they cause there);\n RSS HTTP/1.1, RSS h2: peak RSS in MiB during"
        " that workload's runs (the highest over the rounds),\n VmHWM summed over the proxy's processes"
        " (nginx: master + worker, shared pages counted twice),\n reset just before each run; RSS now: VmRSS"
        " after all runs;\n h2 p50/p99/mean from h2load's per-request log, time from request start to end of"
        " response)"
    )
    old = [peer for peer in peers if peer in rows and rows[peer]["rss_old"]]
    if old:
        print(
            f"(no per-run RSS files for {', '.join(old)}: both RSS columns there are VmHWM after all\n"
            " runs, from rss-PEER.txt, the peak since start)"
        )
    if n > 1:
        print("spread over the rounds (lowest-highest):")
        for peer, rs in spreads.items():
            line = f"  {peer:<9} HTTP/1.1 {span(rs, 'rps', '.0f')} req/s, p99 {span(rs, 'p99', '.2f')} ms"
            if peer != "backend":
                line += f"; h2 {span(rs, 'h2_rps', '.0f')} req/s, p99 {span(rs, 'h2_p99', '.2f')} ms"
            print(line)

    print()
    others = [p for p in PROXIES_COMPARED if p in rows]
    best = max(others, key=lambda p: rows[p]["rps"]) if others else None
    if "portico" in rows:
        p = rows["portico"]
        print(
            "ratios portico / peer     HTTP/1.1 req/s   p99 (lower is better)   h2 req/s   h2 p99"
            "   RSS HTTP/1.1   RSS h2"
        )
        for peer in others:
            o = rows[peer]
            mark = "  <- best peer by HTTP/1.1 req/s" if peer == best else ""
            print(
                f"  portico / {peer:<13} {fmt_ratio(ratio(p['rps'], o['rps'])):>14}"
                f" {fmt_ratio(ratio(p['p99'], o['p99'])):>23} {fmt_ratio(ratio(p['h2_rps'], o['h2_rps'])):>10}"
                f" {fmt_ratio(ratio(p['h2_p99'], o['h2_p99'])):>8} {fmt_ratio(ratio(p['rss_h1'], o['rss_h1'])):>14}"
                f" {fmt_ratio(ratio(p['rss_h2'], o['rss_h2'])):>8}{mark}"
            )
        if "backend" in rows:
            print(f"  portico / backend alone {fmt_ratio(ratio(p['rps'], rows['backend']['rps'])):>14}")
        print()
    if "portico" not in rows:
        why = not_serving if not_serving is not None else "its runs were invalid"
        print(f"verdict: not measured -- Portico NOT SERVING ({why})")
        if best:
            b = rows[best]
            print(
                f"  (best peer by HTTP/1.1 req/s: {best}, {b['rps']:.0f} req/s, p99 {b['p99']:.2f} ms;"
                f" the target is >= {TARGET_RPS_RATIO * b['rps']:.0f} req/s)"
            )
    elif best:
        p, b = rows["portico"], rows[best]
        checks = [
            (
                f"HTTP/1.1 req/s >= {TARGET_RPS_RATIO}x {best}",
                fmt_ratio(ratio(p["rps"], b["rps"])),
                p["rps"] >= TARGET_RPS_RATIO * b["rps"],
            ),
            (f"p99 <= {best}'s", fmt_ratio(ratio(p["p99"], b["p99"])), p["p99"] <= b["p99"]),
            (
                f"RSS < {TARGET_RSS_MIB:.0f} MiB (HTTP/1.1 run peak)",
                f"{fmt(p['rss_h1'], '.1f')} MiB",
                p["rss_h1"] is not None and p["rss_h1"] < TARGET_RSS_MIB,
            ),
        ]
        print_verdict(checks)
        print_capacity_note(
            "HTTP/1.1 req/s", p["cpu"], p["us_req"], best, b["us_req"], p["load_us"], b["rps"]
        )
        theirs = {peer: spreads[peer] for peer in others}
        print_round_ratios(
            "HTTP/1.1 req/s", "that round's best peer", spreads["portico"], theirs, "rps", TARGET_RPS_RATIO
        )
        print(
            f"  (not in the verdict: h2 run peak RSS: portico {fmt(p['rss_h2'], '.1f')} MiB,"
            f" {best} {fmt(b['rss_h2'], '.1f')} MiB, {fmt_ratio(ratio(p['rss_h2'], b['rss_h2']))})"
        )
    if problems:
        print()
        for problem in problems:
            print(f"ingress bench: INVALID {problem}", file=sys.stderr)
        sys.exit(1)


def main():
    args = sys.argv[1:]
    try:
        if len(args) == 3 and args[0] == "line-wrk":
            r = wrk_result(args[2])
            print(f"  {args[1]:<8} {r['rps']:>8.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms")
        elif len(args) == 2 and args[0] == "h2log":
            h2log(args[1])
        elif len(args) == 4 and args[0] == "line-h2":
            r = h2_result(args[2], args[3])
            print(
                f"  {args[1]:<8} {r['rps']:>8.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms"
                f"  mean {r['mean']:.2f} ms"
            )
        elif len(args) >= 4 and args[0] == "report":
            report(args[1], int(args[2]), args[3:])
        else:
            fail(
                "usage: report.py line-wrk PEER FILE | h2log LOG | line-h2 PEER OUT LAT"
                " | report DIR ROUNDS PEER..."
            )
    except Invalid as err:
        fail(str(err))


if __name__ == "__main__":
    main()
