#!/usr/bin/env python3
"""Reads the raw results of bench/l4.sh and prints the table, the ratios and the verdict.

Usage: report.py RESULTS_DIR ROUNDS PEER...   (peers in table order; `direct` first)

RESULTS_DIR holds, per peer and round R (1..ROUNDS):
  iperf-PEER-fwd-R.json, iperf-PEER-rev-R.json   `iperf3 -J` output (client sends / receives)
  wrk-PEER-R.txt                                 `wrk --latency` output
  cpu-PEER-{fwd,rev,wrk}-R.txt                   CPU seconds of the proxy process during a
                                                 run, and the run's wall seconds (no file
                                                 for direct)
  load-PEER-{fwd,rev,wrk}-R.txt                  how busy the load core was during a run,
                                                 as a share of it (none in older results)

With more than one round, every figure is the median over the rounds, and the spread
(lowest-highest) of throughput, conn/s and p99 is printed below the table, and after the
verdict each round's own Portico / HAProxy ratios.

Exits non-zero only when a result is missing or shows that the wrong thing was measured
(no bytes moved, no requests answered, mostly errors); a missed target is only reported.
"""

import json
import os
import sys

# bench/report_common.py, wherever this is run from; no __pycache__ left in the source tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
from report_common import Invalid, bench_fail, fmt, fmt_pct, fmt_ratio, median_row, parse_wrk  # noqa: E402
from report_common import print_capacity_note, print_header, print_round_ratios, print_verdict  # noqa: E402
from report_common import load_file, ratio, span, us_per_op  # noqa: E402

#: The issue's targets for throughput and conn/s: this multiple of HAProxy's.
TARGET_RATIO = 1.1


def fail(msg):
    bench_fail("l4 bench", msg)


def iperf_gbits(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        fail(f"{path}: no iperf3 result ({err})")
    if "error" in data:
        fail(f"{path}: iperf3 failed: {data['error']}")
    end = data.get("end", {})
    # The receiver's figure: what arrived, not what was queued in socket buffers.
    recv = end.get("sum_received", {})
    bits = recv.get("bits_per_second", 0.0)
    if bits <= 0:
        fail(f"{path}: iperf3 moved no bytes")
    return bits / 1e9


def wrk_result(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        fail(f"{path}: no wrk result ({err})")
    try:
        r = parse_wrk(path, text)
    except Invalid as err:
        fail(str(err))
    requests, errors, bad = r["requests"], r["errors"], r["non2xx"]
    if bad > requests // 100:
        fail(f"{path}: {bad} of {requests} responses were not 2xx: the backend or proxy is broken")
    if errors > requests // 10:
        fail(f"{path}: {errors} socket errors for {requests} requests: not a valid run")
    return {k: r[k] for k in ("rps", "p50", "p99", "requests", "errors", "non2xx")}


def cpu_seconds(path):
    """(CPU seconds used by the proxy process over the run, wall seconds of the run)."""
    if not os.path.exists(path):
        return None, None
    with open(path) as f:
        cpu, wall = (float(x) for x in f.read().split())
    return cpu, wall


def cpu_share(path):
    """CPU used by the proxy process over the run, as a share of one core."""
    cpu, wall = cpu_seconds(path)
    return cpu / wall if cpu is not None and wall > 0 else None


def cpu_us_per_request(path, requests):
    """Proxy CPU per proxied connection, in microseconds (wrk's run, one request each)."""
    cpu, _ = cpu_seconds(path)
    return 1e6 * cpu / requests if cpu is not None and requests else None


def one_round(results, peer, r):
    wrk = wrk_result(os.path.join(results, f"wrk-{peer}-{r}.txt"))
    cpu_wrk = os.path.join(results, f"cpu-{peer}-wrk-{r}.txt")
    return {
        "fwd": iperf_gbits(os.path.join(results, f"iperf-{peer}-fwd-{r}.json")),
        "rev": iperf_gbits(os.path.join(results, f"iperf-{peer}-rev-{r}.json")),
        **wrk,
        "cpu_fwd": cpu_share(os.path.join(results, f"cpu-{peer}-fwd-{r}.txt")),
        "cpu_wrk": cpu_share(cpu_wrk),
        # wrk's request count and the CPU sample cover the same measured run.
        "us_conn": cpu_us_per_request(cpu_wrk, wrk["requests"]),
        "load_conn": us_per_op(load_file(os.path.join(results, f"load-{peer}-wrk-{r}.txt")), wrk["rps"]),
    }


def l4_row(rounds):
    """Medians over the rounds; errors and non-2xx responses summed."""
    row = median_row(rounds)
    row["errors"] = sum(r["errors"] for r in rounds)
    row["non2xx"] = sum(r["non2xx"] for r in rounds)
    return row


def main():
    if len(sys.argv) < 4:
        fail("usage: report.py RESULTS_DIR ROUNDS PEER...")
    results, n, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    per_round = {peer: [one_round(results, peer, r) for r in range(1, n + 1)] for peer in peers}
    rows = {peer: l4_row(per_round[peer]) for peer in peers}
    if n > 1:
        print(f"medians of {n} rounds")
    header = (
        f"{'peer':<9} {'iperf3 Gbit/s':>13} {'-R Gbit/s':>10} {'CPU fwd':>8}"
        f" {'conn/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU wrk':>8} {'us/conn':>8} {'load us':>8} {'errors':>7}"
    )
    print_header(header)
    for peer in peers:
        r = rows[peer]
        print(
            f"{peer:<9} {r['fwd']:>13.2f} {r['rev']:>10.2f} {fmt_pct(r['cpu_fwd']):>8}"
            f" {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {fmt_pct(r['cpu_wrk']):>8}"
            f" {fmt(r['us_conn'], '.0f'):>8} {fmt(r['load_conn'], '.0f'):>8}"
            f" {r['errors'] + r['non2xx']:>7}"
        )
    print(
        "(CPU fwd, CPU wrk: the proxy's user+system time during the iperf3 and the wrk run,"
        " as a share of its one core;\n us/conn: the proxy's CPU microseconds per proxied connection"
        " in the wrk run, kernel work on its core included;\n load us: the load core's busy microseconds"
        " per connection in the wrk run: wrk, nginx and the kernel work they cause there)"
    )
    if n > 1:
        print("spread over the rounds (lowest-highest):")
        for peer in peers:
            rs = per_round[peer]
            print(
                f"  {peer:<9} iperf3 {span(rs, 'fwd', '.1f')} Gbit/s, -R {span(rs, 'rev', '.1f')} Gbit/s,"
                f" conn/s {span(rs, 'rps', '.0f')}, p99 {span(rs, 'p99', '.2f')} ms"
            )

    print()
    print("ratios                 throughput   -R   conn/s   p99 (lower is better)")
    direct = rows.get("direct")
    pairs = []
    if "portico" in rows and "haproxy" in rows:
        pairs.append(("portico / haproxy", rows["portico"], rows["haproxy"]))
    if direct:
        for peer in peers:
            if peer != "direct":
                pairs.append((f"{peer} / direct", rows[peer], direct))
    for name, a, b in pairs:
        print(
            f"  {name:<20} {fmt_ratio(ratio(a['fwd'], b['fwd'])):>10}"
            f" {fmt_ratio(ratio(a['rev'], b['rev'])):>6}"
            f" {fmt_ratio(ratio(a['rps'], b['rps'])):>8}"
            f" {fmt_ratio(ratio(a['p99'], b['p99'])):>6}"
        )

    if "portico" in rows and "haproxy" in rows:
        p, h = rows["portico"], rows["haproxy"]
        checks = [
            (
                f"throughput >= {TARGET_RATIO}x HAProxy",
                fmt_ratio(ratio(p["fwd"], h["fwd"])),
                p["fwd"] >= TARGET_RATIO * h["fwd"],
            ),
            (
                f"conn/s >= {TARGET_RATIO}x HAProxy",
                fmt_ratio(ratio(p["rps"], h["rps"])),
                p["rps"] >= TARGET_RATIO * h["rps"],
            ),
            ("p99 <= HAProxy's", fmt_ratio(ratio(p["p99"], h["p99"])), p["p99"] <= h["p99"]),
        ]
        print()
        print_verdict(checks)
        print_capacity_note(
            "conn/s", p["cpu_wrk"], p["us_conn"], "HAProxy", h["us_conn"], p["load_conn"], h["rps"]
        )
        theirs = {"haproxy": per_round["haproxy"]}
        for what, key in (("throughput", "fwd"), ("-R", "rev"), ("conn/s", "rps")):
            print_round_ratios(what, "HAProxy", per_round["portico"], theirs, key, TARGET_RATIO)


if __name__ == "__main__":
    main()
