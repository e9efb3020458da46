"""Helpers shared by the benchmark reports (bench/l4/report.py, bench/ingress/report.py):
reading wrk output, medians and spreads over rounds, ratios, table and verdict formatting.
Standard library only.
"""

import os
import re
import statistics
import sys

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


class Invalid(Exception):
    """A result that is missing or shows that the wrong thing was measured."""


def bench_fail(bench, msg):
    """Prints "BENCH: MSG" on stderr and exits 1."""
    print(f"{bench}: {msg}", file=sys.stderr)
    sys.exit(1)


def to_ms(value, unit):
    return float(value) * UNITS_MS[unit]


def parse_wrk(path, text):
    """The figures of one `wrk --latency` output TEXT (read from PATH, named in errors): rps,
    p50 and p99 (ms), requests, errors (socket errors), non2xx and sock (wrk's socket errors
    line, "" without one). Raises Invalid when TEXT is not a wrk result with a latency
    distribution or wrk completed no request; how many errors are too many is the caller's."""
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", text, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m or not rps:
        raise Invalid(f"{path}: cannot read wrk output:\n{text}")
    requests = int(m.group(1))
    pct = {}
    for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        pct[p] = to_ms(v, u)
    if "50" not in pct or "99" not in pct:
        raise Invalid(f"{path}: no latency distribution in wrk output (--latency missing?)")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if requests == 0:
        raise Invalid(f"{path}: wrk completed no request")
    return {
        "rps": float(rps.group(1)),
        "p50": pct["50"],
        "p99": pct["99"],
        "requests": requests,
        "errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "sock": sock.group(0) if sock else "",
    }


def median_row(rounds):
    """Per key of the rounds' rows, the median over the rounds of its values that are not None
    (None when all are)."""
    row = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds if r[key] is not None]
        row[key] = statistics.median(values) if values else None
    return row


def span(rounds, key, spec):
    """"lowest-highest" of KEY over the rounds' rows, each formatted with SPEC ("-" when none)."""
    vals = [r[key] for r in rounds if r[key] is not None]
    return f"{format(min(vals), spec)}-{format(max(vals), spec)}" if vals else "-"


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def fmt_pct(c):
    return "-" if c is None else f"{100 * c:.0f}%"


def print_header(header):
    """A table's header line, underlined."""
    print(header)
    print("-" * len(header))


def print_verdict(checks):
    """The verdict line of CHECKS: (what, value as printed, met) each."""
    parts = [f"{what}: {value} {'ok' if ok else 'MISSED'}" for what, value, ok in checks]
    met = sum(ok for _, _, ok in checks)
    print(f"verdict: {met}/{len(checks)} targets met -- " + "; ".join(parts))


#: Below this share of its core, the proxy under test was not what limited the rate.
SATURATED = 0.95


def print_capacity_note(what, share, us, peer, peer_us, load_us=None, peer_rate=None):
    """A line outside the verdict when Portico's core had room to spare (SHARE of it used):
    then the load core limited the run's WHAT, and the CPU per operation (US, PEER_US) tells
    how Portico and PEER would compare, each with a core to itself. With the load core's busy
    time per operation through Portico (LOAD_US) and PEER's rate, also the most that core
    allows through Portico, however little Portico itself spends."""
    if share is None or share >= SATURATED or not us or not peer_us:
        return
    ceiling = ""
    if load_us and peer_rate:
        most = 1e6 / load_us
        ceiling = (
            f"; the load core was busy {load_us:.1f} us per operation through Portico, so it allows"
            f" at most about {most:.0f}/s, {most / peer_rate:.2f}x {peer}'s"
        )
    print(
        f"  (not in the verdict: Portico used {100 * share:.0f}% of its core, so the load core limited"
        f" this run's {what}; by CPU per operation, with a core each, Portico would do"
        f" {peer_us / us:.2f}x {peer}'s {what}{ceiling})"
    )


def print_round_ratios(what, against, portico, others, key, target):
    """With more than one round, a line outside the verdict: Portico's KEY over the best of
    OTHERS (peer -> its rows, one per round) in the same round, round by round, with their
    median and how many rounds reached TARGET. The verdict's medians may come from different
    rounds, far apart in time; a round's runs follow each other within minutes, so these ratios
    show how far the machine's drift moves the outcome."""
    if len(portico) < 2 or not others:
        return
    ratios = []
    for r, row in enumerate(portico):
        theirs = [rows[r][key] for rows in others.values() if rows[r][key] is not None]
        ratios.append(ratio(row[key], max(theirs, default=None)))
    measured = [x for x in ratios if x is not None]
    if not measured:
        return
    met = sum(x >= target for x in measured)
    print(
        f"  (not in the verdict: {what}, Portico / {against}, round by round:"
        f" {' '.join(fmt_ratio(x) for x in ratios)}; median {fmt_ratio(statistics.median(measured))};"
        f" {met} of {len(measured)} rounds >= {target}x)"
    )


def read(path):
    """The text of a results file; Invalid when it is missing."""
    try:
        with open(path) as f:
            return f.read()
    except OSError as err:
        raise Invalid(f"{path}: missing ({err.strerror})")


def cpu_file(path):
    """(CPU share of one core, busy share of the server's core) over a run, from a
    "cpu_seconds wall_seconds core_busy" file; None, None when there is none."""
    if not os.path.exists(path):
        return None, None
    cpu, wall, core = (float(x) for x in read(path).split())
    return (cpu / wall if wall > 0 else None), core


def load_file(path):
    """How busy the load core was over a run, as a share of it, from a load file (bench/lib.sh
    busy_share); None when there is none, as in results from before that file."""
    if not os.path.exists(path):
        return None
    return float(read(path).split()[0])


def us_per_op(share, rate):
    """CPU microseconds per operation, from the CPU share of one core and operations/s."""
    return 1e6 * share / rate if share is not None and rate else None


def rss_file(path):
    """(VmHWM MiB, VmRSS MiB, processes) of an rss file; None, None, None when there is none."""
    if not os.path.exists(path):
        return None, None, None
    hwm, cur, n = (int(x) for x in read(path).split())
    return hwm / 1024.0, cur / 1024.0, n


def print_unmeasured(peer, not_serving, width):
    """A table row for a peer without figures: Portico not serving, or runs that were invalid."""
    what = "NOT SERVING" if peer == "portico" and not_serving is not None else "INVALID"
    print(f"{peer:<9} {what:>{width}}")
