#!/usr/bin/env python3
"""UDP flows under churn: many clients, one datagram each, through one UDP ClusterIP.

Usage:
  bench/udp_flows.py [--portico PATH] [--clients N] [--rates R,R,...]

For each rate (new clients per second; 0 is as fast as Python can send), a freshly started
`portico run` serves one UDP Service (127.96.0.53:53) whose EndpointSlice points at a UDP echo
on 127.0.0.1:5353 in this process. N clients, each on an address of its own in 127.1.0.0/16
and up (port 40000), send one 64-byte datagram. Printed per rate: how many reached the
endpoint (`portico_l4_to_endpoints_bytes_total` / 64), the listener's kernel drops
(/proc/net/udp: the socket buffer overflowed), flows held (`portico_l4_active`), Portico's
CPU time per datagram that reached the endpoint (each made a flow), descriptors, peak RSS, and
lines logged. Portico runs under the open-file
limit of this shell: with 20,000 its flows are bounded at 625 per listener, so the run churns
through the bound (the idlest flow makes room for each new one).

Every address is on loopback; nothing leaves the host. No peer runs beside it: HAProxy does
not proxy UDP, and this measures Portico's own bounds (README, Limits), not a ratio.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SERVICE = ("127.96.0.53", 53)
ECHO = ("127.0.0.1", 5353)
ADMIN = "127.0.0.1:19971"
MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 127.96.0.53
  ports: [{name: dns, port: 53, targetPort: 5353, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: dns, port: 5353, protocol: UDP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
"""


def echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(ECHO)
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)


def client_address(i):
    return f"127.{1 + i // 65025}.{(i // 255) % 255}.{1 + i % 255}"


def flood(clients, rate):
    """Sends one datagram from each client; returns the seconds it took."""
    start = time.monotonic()
    for i in range(clients):
        if rate:
            while time.monotonic() - start < i / rate:
                pass
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind((client_address(i), 40000))
        c.sendto(b"x" * 64, SERVICE)
        c.close()
    return time.monotonic() - start


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def listener_drops():
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(SERVICE[0]), "little"), SERVICE[1])
    with open("/proc/net/udp") as f:
        for line in f:
            cols = line.split()
            if len(cols) > 2 and cols[1] == want:
                return int(cols[-1])
    return -1


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        cols = f.read().rsplit(")", 1)[1].split()
    return (int(cols[11]) + int(cols[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_ready(proc):
    for _ in range(100):
        if proc.poll() is not None:
            sys.exit(f"portico exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{ADMIN}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("portico did not become ready in 10 s")


def one_rate(portico, folder, clients, rate):
    log = open(os.path.join(folder, f"run-{rate}.log"), "w+")
    proc = subprocess.Popen(
        [portico, "run", "--manifests", os.path.join(folder, "m"), "--state", os.path.join(folder, f"st-{rate}"),
         "--admin", ADMIN, "--ingress-http", "127.0.0.1:0", "--ingress-https", "127.0.0.1:0"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc)
        drops0, cpu0 = listener_drops(), cpu_seconds(proc.pid)
        took = flood(clients, rate)
        time.sleep(1)
        with urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        reached = int(metric(metrics, "portico_l4_to_endpoints_bytes_total") // 64)
        row = {
            "rate": f"{clients / took:,.0f}/s" + ("" if rate else " (burst)"),
            "reached": reached,
            "kernel drops": listener_drops() - drops0,
            "flows held": int(metric(metrics, "portico_l4_active")),
            "CPU/new flow": f"{(cpu_seconds(proc.pid) - cpu0) / max(reached, 1) * 1e6:.0f} µs",
            "descriptors": len(os.listdir(f"/proc/{proc.pid}/fd")),
            "peak RSS": f"{peak_rss_mib(proc.pid):.1f} MiB",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log.seek(0)
    row["log lines"] = sum(1 for _ in log)
    return row


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portico", default=os.path.join(here, "..", "target", "release", "portico"))
    parser.add_argument("--clients", type=int, default=40_000)
    parser.add_argument("--rates", default="10000,20000,0", help="new clients per second; 0: a burst")
    args = parser.parse_args()
    if not os.access(args.portico, os.X_OK):
        sys.exit(f"{args.portico}: not found; cargo build --release -p portico first")
    threading.Thread(target=echo, daemon=True).start()
    print(f"open-file limit {os.sysconf('SC_OPEN_MAX')}, {args.clients:,} clients, one datagram each")
    with tempfile.TemporaryDirectory() as folder:
        os.mkdir(os.path.join(folder, "m"))
        with open(os.path.join(folder, "m", "udp.yaml"), "w") as f:
            f.write(MANIFESTS)
        rows = [one_rate(args.portico, folder, args.clients, float(r)) for r in args.rates.split(",")]
    if any(row["reached"] == 0 or row["flows held"] == 0 for row in rows):
        sys.exit("no datagram reached the endpoint at some rate: the run measured nothing")
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))


if __name__ == "__main__":
    main()
