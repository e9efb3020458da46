#!/usr/bin/env python3
"""bench/failover.sh's reading, timing and reporting.

  report.py ranking ADDR            reads `portico lab probe` output of an agent's /plan on
                                    stdin; prints the nodes of ADDR's announcement, ranked,
                                    space-separated (exits 1 when ADDR is not announced)
  report.py expected NODE           reads the same on stdin; prints how many announced
                                    addresses NODE ranks first (what its
                                    portico_announce_addresses gauge shows when all are alive)
  report.py metric NAME             reads `portico lab probe` output of /metrics on stdin;
                                    prints the value of the sample NAME (exits 1 without it)
  report.py failover --portico BIN --prefix P --url URL --addr ADDR --mac MAC
                     [--every S] [--neigh-every S] [--deadline S] -- ACTION...
                                    runs ACTION (the failure), its start the clock's zero;
                                    meanwhile, and until both are seen or DEADLINE passes:
                                    starts a probe of URL from `outside` every S seconds (each
                                    with --timeout 200ms, several in flight), and reads
                                    `outside`'s neighbour entry of ADDR until it shows MAC;
                                    prints "answer_s moved_s probes", "-" for what was not
                                    seen (exits 1 when ACTION fails)
  report.py report RESULTS TARGET_S the table of medians and worsts, and the verdict

RESULTS holds one file per round, family and failure, F-K-R.txt (F 4 or 6, K kill or link,
R the round), "answer_s moved_s probes" as `failover` printed it.

Exits non-zero only when a result is missing or something did not run; a missed target is
only reported. Standard library only.
"""

import argparse
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
from report_common import Invalid, bench_fail, print_header, print_verdict, read  # noqa: E402

BENCH = "failover bench"
FAMILIES = (("4", "IPv4"), ("6", "IPv6"))
#: (failure, its name, measure, its name, judged against the target)
ROWS = (
    ("kill", "agent SIGKILL", 0, "first answer", False),
    ("kill", "agent SIGKILL", 1, "address moved", True),
    ("link", "link down", 0, "first answer", True),
    ("link", "link down", 1, "address moved", False),
)


def body_json(text):
    """The JSON body of `portico lab probe http` output: after the `ok` line and the status line."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("ok"):
        raise Invalid(f"the probe did not answer: {lines[0] if lines else '(nothing)'}")
    for i, line in enumerate(lines):
        if line.startswith("{"):
            return json.loads("\n".join(lines[i:]))
    raise Invalid("no JSON body in the probe's answer")


def announcements(text):
    return body_json(text).get("announcements") or []


def cmd_ranking(addr):
    for a in announcements(sys.stdin.read()):
        if a.get("address") == addr:
            print(" ".join(a["nodes"]))
            return
    bench_fail(BENCH, f"{addr} is not in the Plan's announcements")


def cmd_expected(node):
    print(sum(1 for a in announcements(sys.stdin.read()) if a.get("nodes") and a["nodes"][0] == node))


def cmd_metric(name):
    m = re.search(rf"^{re.escape(name)} ([0-9.eE+-]+)\s*$", sys.stdin.read(), re.M)
    if not m:
        bench_fail(BENCH, f"no sample {name} in /metrics")
    print(m.group(1))


def cmd_failover(args):
    exec_outside = [args.portico, "lab", "--prefix", args.prefix, "exec", "outside", "--"]
    probe = exec_outside + [args.portico, "lab", "probe", "--timeout", "200ms", "http", args.url]
    neigh = exec_outside + ["ip"] + (["-6"] if ":" in args.addr else []) + ["neigh", "show", args.addr]
    mac = args.mac.lower()
    lock = threading.Lock()
    seen = {"answer": None, "moved": None}
    started = [0]
    stop = threading.Event()

    def one_probe():
        try:
            out = subprocess.run(probe, capture_output=True, text=True, timeout=5)
            ok = out.returncode == 0 and out.stdout.startswith("ok")
        except subprocess.TimeoutExpired:
            ok = False
        done = time.monotonic()
        if ok:
            with lock:
                if seen["answer"] is None or done < seen["answer"]:
                    seen["answer"] = done

    def watch_neigh():
        while not stop.is_set():
            out = subprocess.run(neigh, capture_output=True, text=True, timeout=5)
            if mac in out.stdout.lower():
                with lock:
                    seen["moved"] = time.monotonic()
                return
            time.sleep(args.neigh_every)

    t0 = time.monotonic()
    action = subprocess.run(args.action, capture_output=True, text=True)
    if action.returncode != 0:
        bench_fail(BENCH, f"{' '.join(args.action)} failed: {action.stderr.strip()}")
    watcher = threading.Thread(target=watch_neigh, daemon=True)
    watcher.start()
    probes = []
    deadline = t0 + args.deadline
    while time.monotonic() < deadline:
        with lock:
            answered = seen["answer"] is not None
        if answered and not watcher.is_alive():
            break
        if not answered and sum(p.is_alive() for p in probes) < 16:
            p = threading.Thread(target=one_probe, daemon=True)
            p.start()
            probes.append(p)
            started[0] += 1
        time.sleep(args.every)
    stop.set()
    for p in probes:
        p.join(6)
    watcher.join(6)

    def since(t):
        return "-" if t is None else f"{t - t0:.4f}"

    print(since(seen["answer"]), since(seen["moved"]), started[0])


def figures(results, fam, kind):
    """The rounds' (answer_s, moved_s) of one family and failure, None for not seen."""
    files = sorted(glob.glob(os.path.join(results, f"{fam}-{kind}-*.txt")),
                   key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
    if not files:
        raise Invalid(f"no results for IPv{fam} {kind}")
    rows = []
    for path in files:
        fields = read(path).split()
        if len(fields) != 3:
            raise Invalid(f"{path}: not 'answer_s moved_s probes'")
        rows.append(tuple(None if x == "-" else float(x) for x in fields[:2]))
    return rows


def fmt_s(x):
    if x is None or math.isinf(x):
        return "none"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def cmd_report(results, target_s):
    checks = []
    unseen = []
    header = f"{'family':<6}  {'failure':<13}  {'measure':<13}  {'rounds':>6}  {'median':>8}  {'worst':>8}  {'target':>7}  verdict"
    print_header(header)
    for fam, fam_name in FAMILIES:
        for kind, kind_name, idx, measure, judged in ROWS:
            try:
                rows = figures(results, fam, kind)
            except Invalid as err:
                bench_fail(BENCH, str(err))
            vals = [r[idx] for r in rows]
            missing = sum(v is None for v in vals)
            # A figure not seen within the deadline counts as infinitely long.
            full = [math.inf if v is None else v for v in vals]
            med = statistics.median(full)
            worst = max(full)
            if judged:
                ok = med < target_s
                verdict = "met" if ok else "MISSED"
                target = f"< {target_s:g} s"
                checks.append((f"IPv{fam} {kind_name}, {measure} (median)", fmt_s(med), ok))
                if missing:
                    unseen.append(f"IPv{fam} {kind_name}: {measure} not seen in {missing} of {len(vals)} rounds")
            else:
                verdict = "(info)"
                target = "-"
            note = f"  ({missing} not seen)" if missing else ""
            print(f"{fam_name:<6}  {kind_name:<13}  {measure:<13}  {len(vals):>6}  {fmt_s(med):>8}  {fmt_s(worst):>8}  {target:>7}  {verdict}{note}")
    print()
    print_verdict(checks)
    if unseen:
        bench_fail(BENCH, "the address did not fail over: " + "; ".join(unseen))


def main():
    if len(sys.argv) < 2:
        bench_fail(BENCH, "usage: report.py ranking|expected|metric|failover|report ...")
    cmd, rest = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "ranking" and len(rest) == 1:
            cmd_ranking(rest[0])
        elif cmd == "expected" and len(rest) == 1:
            cmd_expected(rest[0])
        elif cmd == "metric" and len(rest) == 1:
            cmd_metric(rest[0])
        elif cmd == "failover":
            p = argparse.ArgumentParser(prog="report.py failover")
            p.add_argument("--portico", required=True)
            p.add_argument("--prefix", required=True)
            p.add_argument("--url", required=True)
            p.add_argument("--addr", required=True)
            p.add_argument("--mac", required=True)
            p.add_argument("--every", type=float, default=0.05)
            p.add_argument("--neigh-every", type=float, default=0.02)
            p.add_argument("--deadline", type=float, default=10.0)
            p.add_argument("action", nargs="+")
            cmd_failover(p.parse_args(rest))
        elif cmd == "report" and len(rest) == 2:
            cmd_report(rest[0], float(rest[1]))
        else:
            bench_fail(BENCH, f"report.py: bad arguments: {' '.join(sys.argv[1:])}")
    except Invalid as err:
        bench_fail(BENCH, str(err))


if __name__ == "__main__":
    main()
