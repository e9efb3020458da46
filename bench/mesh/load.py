#!/usr/bin/env python3
"""Open-loop HTTP/1.1 load at a fixed rate over a few kept-alive connections, as
`fortio load -qps RATE -c CONNECTIONS -payload-size BYTES` sends it (Istio's benchmark: 1,000
requests/s, 16 connections, 1 kB payload), run by bench/mesh.sh inside a client Pod's network
namespace (`portico lab exec pod/NS/client -- python3 load.py ...`). Standard library only.

Request n (0, 1, 2, ...) is due at start + n / RATE and goes on connection n mod CONNECTIONS,
so the connections take turns and the aggregate is an even RATE. Each connection is a thread
that sleeps until its next request is due (clock_nanosleep, timer slack 1 ns), sends it
(POST / with a BYTES-byte body, as fortio's -payload-size sends one), reads the whole answer,
and records its latency **from the time it was due**, not from when it could be sent: when an
answer is late, the next request on that connection leaves late and that wait counts in its
latency (no coordinated omission, as wrk2 measures). A request that fails (connection reset or
closed, no answer within --timeout, malformed answer) counts as an error; the connection is
made again and the schedule goes on.

The first --warmup seconds are not counted. Over the measured --duration seconds, the main
thread samples the user+system CPU of the processes of --watch (e.g. the node agents) and
this process's own (as "generator"), and the machine's busy time (/proc/stat; tick-sampled,
so it misses much of a load this bursty), exactly at the window's start and end, so CPU per
request is over the measured requests only.

Prints one JSON object: the counts, latency percentiles (ms), how late requests left (the
generator's own precision), the answering Pods (x-portico-pod), the watched processes' and
the machine's CPU over the window, and this process's own CPU.
"""

import argparse
import ctypes
import gc
import json
import os
import resource
import socket
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="ADDR:PORT, [ADDR]:PORT for IPv6")
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second, in all")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=3.0, help="seconds not counted")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    p.add_argument("--body", type=int, default=1024, help="request body bytes")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds for an answer")
    p.add_argument("--watch", default="", help="NAME=PID,... processes whose CPU to sample")
    p.add_argument("--latencies", default="", help="file for every measured latency (µs, one a line)")
    return p.parse_args()


def set_timer_slack():
    """1 ns timer slack for this thread, so sleeps end when asked (default 50 µs)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def proc_ticks(pid):
    """User + system clock ticks of a process (all its threads), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def machine_ticks():
    """(busy, total) jiffies of all cores: idle and iowait are not busy."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    total = sum(values)
    return total - values[3] - values[4], total


class Answer(Exception):
    pass


class Connection:
    """One kept-alive HTTP/1.1 connection and the requests it carries."""

    def __init__(self, index, args, host, port, schedule):
        self.index = index
        self.args = args
        self.addr = (host, port)
        self.schedule = schedule
        self.request = (
            f"POST / HTTP/1.1\r\nHost: {args.target}\r\nUser-Agent: portico-mesh-bench\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {args.body}\r\n\r\n"
        ).encode() + b"x" * args.body
        self.buf = bytearray(65536)
        self.sock = None
        self.latencies = []  # seconds, measured requests only
        self.lateness = []  # seconds the send left after it was due, measured requests only
        self.errors = 0
        self.statuses = {}
        self.pods = {}
        self.answer_bytes = 0
        self.reconnects = 0

    def connect(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = socket.create_connection(self.addr, timeout=self.args.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange(self):
        """Sends the request and reads the whole answer; returns (status, pod, bytes)."""
        sock, buf = self.sock, self.buf
        sock.sendall(self.request)
        view = memoryview(buf)
        have = 0
        while True:
            n = sock.recv_into(view[have:])
            if n == 0:
                raise Answer("connection closed")
            have += n
            end = buf.find(b"\r\n\r\n", 0, have)
            if end >= 0:
                break
            if have == len(buf):
                raise Answer("head too long")
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise Answer(f"not HTTP: {head[0]!r}")
        status = int(parts[1])
        length, pod, close = 0, "", False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "x-portico-pod":
                pod = value.strip()
            elif name == "connection" and "close" in value.lower():
                close = True
            elif name == "transfer-encoding":
                raise Answer("chunked answers are not read")
        left = end + 4 + length - have
        while left > 0:
            n = sock.recv_into(view, min(left, len(buf)))
            if n == 0:
                raise Answer("connection closed in the body")
            left -= n
        if close:
            self.sock.close()
            self.sock = None
        return status, pod, end + 4 + length

    def run(self):
        set_timer_slack()
        start, measured_from, until = self.schedule
        rate, count = self.args.rate, self.args.connections
        perf, sleep = time.perf_counter, time.sleep
        n = self.index
        while True:
            due = start + n / rate
            if due >= until:
                break
            n += count
            if self.sock is None:
                try:
                    self.connect()
                    self.reconnects += 1
                except OSError:
                    self.errors += due >= measured_from
                    continue
            now = perf()
            if due > now:
                sleep(due - now)
            sent = perf()
            try:
                status, pod, size = self.exchange()
            except (OSError, ValueError, Answer):
                if due >= measured_from:
                    self.errors += 1
                try:
                    self.sock.close()
                except (OSError, AttributeError):
                    pass
                self.sock = None
                continue
            done = perf()
            if due < measured_from:
                continue
            self.latencies.append(done - due)
            self.lateness.append(sent - due)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.pods[pod] = self.pods.get(pod, 0) + 1
            self.answer_bytes = size
        if self.sock is not None:
            self.sock.close()


def percentile(sorted_values, q):
    """The value below which a share q of the values fall (nearest rank), 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-int(q * 1_000_000) * len(sorted_values) // 1_000_000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def main():
    args = parse_args()
    host, _, port = args.target.rpartition(":")
    host = host.strip("[]")
    watch = {}
    for item in filter(None, args.watch.split(",")):
        name, _, pid = item.partition("=")
        watch[name] = int(pid)
    watch["generator"] = os.getpid()
    gc.disable()
    sys.setswitchinterval(0.0005)
    set_timer_slack()
    # Connections are made before the schedule starts, so that none begins late.
    lead = 0.5
    start = time.perf_counter() + lead
    schedule = (start, start + args.warmup, start + args.warmup + args.duration)
    connections = [Connection(i, args, host, int(port), schedule) for i in range(args.connections)]
    for c in connections:
        try:
            c.connect()
        except OSError as e:
            print(json.dumps({"error": f"connecting to {args.target}: {e}"}))
            return 1
    threads = [threading.Thread(target=c.run, daemon=True) for c in connections]
    for t in threads:
        t.start()

    def sample():
        return {name: proc_ticks(pid) for name, pid in watch.items()}, machine_ticks(), time.perf_counter()

    time.sleep(max(0.0, schedule[1] - time.perf_counter()))
    before = sample()
    time.sleep(max(0.0, schedule[2] - time.perf_counter()))
    after = sample()
    for t in threads:
        t.join(args.timeout + 5)

    latencies = sorted(x for c in connections for x in c.latencies)
    lateness = sorted(x for c in connections for x in c.lateness)
    statuses, pods = {}, {}
    for c in connections:
        for k, v in c.statuses.items():
            statuses[str(k)] = statuses.get(str(k), 0) + v
        for k, v in c.pods.items():
            pods[k] = pods.get(k, 0) + v
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    window = after[2] - before[2]
    cpu = {}
    for name in watch:
        a, b = before[0][name], after[0][name]
        cpu[name] = None if a is None or b is None else (b - a) / CLK_TCK
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ms = 1000.0
    result = {
        "target": args.target,
        "rate": args.rate,
        "connections": args.connections,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "body_bytes": args.body,
        "answer_bytes": max((c.answer_bytes for c in connections), default=0),
        "scheduled": int(round(args.duration * args.rate)),
        "answered": len(latencies),
        "ok": ok,
        "errors": sum(c.errors for c in connections),
        "statuses": statuses,
        "pods": pods,
        "reconnects": sum(c.reconnects for c in connections),
        "p50_ms": percentile(latencies, 0.50) * ms,
        "p90_ms": percentile(latencies, 0.90) * ms,
        "p99_ms": percentile(latencies, 0.99) * ms,
        "p999_ms": percentile(latencies, 0.999) * ms,
        "max_ms": (latencies[-1] if latencies else 0.0) * ms,
        "mean_ms": (sum(latencies) / len(latencies) if latencies else 0.0) * ms,
        "late_p50_ms": percentile(lateness, 0.50) * ms,
        "late_p99_ms": percentile(lateness, 0.99) * ms,
        "late_max_ms": (lateness[-1] if lateness else 0.0) * ms,
        "window_s": window,
        "cpu_s": cpu,
        "machine_busy_s": (after[1][0] - before[1][0]) / CLK_TCK,
        "machine_total_s": (after[1][1] - before[1][1]) / CLK_TCK,
        "generator_cpu_s": usage.ru_utime + usage.ru_stime,
    }
    if args.latencies:
        with open(args.latencies, "w") as f:
            f.write("".join(f"{x * 1e6:.1f}\n" for x in latencies))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
