#!/usr/bin/env python3
"""Reads the raw results of bench/l4.sh and prints the table, the ratios and the verdict.

Usage: report.py RESULTS_DIR ROUNDS PEER...   (peers in table order; `direct` first)

RESULTS_DIR holds, per peer and round R (1..ROUNDS):
  iperf-PEER-fwd-R.json, iperf-PEER-rev-R.json   `iperf3 -J` output (client sends / receives)
  wrk-PEER-R.txt                                 `wrk --latency` output
  cpu-PEER-{fwd,rev,wrk}-R.txt                   CPU seconds of the proxy process during a
                                                 run, and the run's wall seconds (no file
                                                 for direct)

With more than one round, every figure is the median over the rounds, and the spread
(lowest-highest) of throughput, conn/s and p99 is printed below the table.

Exits non-zero only when a result is missing or shows that the wrong thing was measured
(no bytes moved, no requests answered, mostly errors); a missed target is only reported.
"""

import json
import os
import re
import statistics
import sys

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def fail(msg):
    print(f"l4 bench: {msg}", file=sys.stderr)
    sys.exit(1)


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


def to_ms(value, unit):
    return float(value) * UNITS_MS[unit]


def wrk_result(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        fail(f"{path}: no wrk result ({err})")
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", text, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m or not rps:
        fail(f"{path}: cannot read wrk output:\n{text}")
    requests = int(m.group(1))
    pct = {}
    for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        pct[p] = to_ms(v, u)
    if "50" not in pct or "99" not in pct:
        fail(f"{path}: no latency distribution in wrk output (--latency missing?)")
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = int(non2xx.group(1)) if non2xx else 0
    if requests == 0:
        fail(f"{path}: wrk completed no request")
    if bad > requests // 100:
        fail(f"{path}: {bad} of {requests} responses were not 2xx: the backend or proxy is broken")
    if errors > requests // 10:
        fail(f"{path}: {errors} socket errors for {requests} requests: not a valid run")
    return {
        "rps": float(rps.group(1)),
        "p50": pct["50"],
        "p99": pct["99"],
        "requests": requests,
        "errors": errors,
        "non2xx": bad,
    }


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


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fmt_num(x):
    return "-" if x is None else f"{x:.0f}"


def fmt_cpu(c):
    return "-" if c is None else f"{100 * c:.0f}%"


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
    }


def median_row(rounds):
    row = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds if r[key] is not None]
        row[key] = statistics.median(values) if values else None
    row["errors"] = sum(r["errors"] for r in rounds)
    row["non2xx"] = sum(r["non2xx"] for r in rounds)
    return row


def main():
    if len(sys.argv) < 4:
        fail("usage: report.py RESULTS_DIR ROUNDS PEER...")
    results, n, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    per_round = {peer: [one_round(results, peer, r) for r in range(1, n + 1)] for peer in peers}
    rows = {peer: median_row(per_round[peer]) for peer in peers}
    if n > 1:
        print(f"medians of {n} rounds")
    header = (
        f"{'peer':<9} {'iperf3 Gbit/s':>13} {'-R Gbit/s':>10} {'CPU fwd':>8}"
        f" {'conn/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU wrk':>8} {'us/conn':>8} {'errors':>7}"
    )
    print(header)
    print("-" * len(header))
    for peer in peers:
        r = rows[peer]
        print(
            f"{peer:<9} {r['fwd']:>13.2f} {r['rev']:>10.2f} {fmt_cpu(r['cpu_fwd']):>8}"
            f" {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {fmt_cpu(r['cpu_wrk']):>8}"
            f" {fmt_num(r['us_conn']):>8}"
            f" {r['errors'] + r['non2xx']:>7}"
        )
    print(
        "(CPU fwd, CPU wrk: the proxy's user+system time during the iperf3 and the wrk run,"
        " as a share of its one core;\n us/conn: the proxy's CPU microseconds per proxied connection"
        " in the wrk run, kernel work on its core included)"
    )
    if n > 1:
        print("spread over the rounds (lowest-highest):")
        for peer in peers:
            rs = per_round[peer]

            def span(key, fmt):
                vals = [r[key] for r in rs]
                return f"{fmt.format(min(vals))}-{fmt.format(max(vals))}"

            print(
                f"  {peer:<9} iperf3 {span('fwd', '{:.1f}')} Gbit/s, -R {span('rev', '{:.1f}')} Gbit/s,"
                f" conn/s {span('rps', '{:.0f}')}, p99 {span('p99', '{:.2f}')} ms"
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
            ("throughput >= 1.1x HAProxy", ratio(p["fwd"], h["fwd"]), p["fwd"] >= 1.1 * h["fwd"]),
            ("conn/s >= 1.1x HAProxy", ratio(p["rps"], h["rps"]), p["rps"] >= 1.1 * h["rps"]),
            ("p99 <= HAProxy's", ratio(p["p99"], h["p99"]), p["p99"] <= h["p99"]),
        ]
        print()
        parts = [f"{what}: {fmt_ratio(r)} {'ok' if ok else 'MISSED'}" for what, r, ok in checks]
        met = sum(ok for _, _, ok in checks)
        print(f"verdict: {met}/{len(checks)} targets met -- " + "; ".join(parts))


if __name__ == "__main__":
    main()
