#!/usr/bin/env python3
"""Writes the manifests of bench/kernel.sh's labs.

  gen.py scale N DIR      the scale lab: namespace `bench`, Deployment `echo` (10 echo Pods,
                          port `http` 8080), Pod `client` (where the load runs), Service
                          `probe4` (IPv4 ClusterIP 198.18.128.100, port 8000, over the echo Pods) and N
                          Services svc-00000... each selecting the 10 echo Pods, in files of
                          1,000 Services (svc-000.yaml ...);
                          N may be 0 (the userspace lab: workloads and probe4 only)
  gen.py small DIR        the lab-up lab: one Deployment of 10 echo Pods and one Service
                          (ClusterIP 198.18.128.100)
  gen.py one NAME I FILE  one Service named NAME with the ClusterIP of index I (nothing else),
                          written to FILE (for the Service added to a running lab)
  gen.py ip I             the ClusterIP of the Service of index I

The N Services are IPv6 single-stack with explicit ClusterIPs, 2001:db8:ffff::100 upwards
(index I at 0x100 + I): the lab's IPv4 service range, 198.18.128.0/20, holds only 4,094
addresses, too few for 10,000 or 30,000 Services; its IPv6 one, 2001:db8:ffff::/112, holds
65,536. Explicit addresses let the bench probe a Service without reading the agent's Plan.

Standard library only.
"""

import os
import sys

PER_FILE = 1000
FIRST = 0x100
IMAGE = "ghcr.io/portico-dev/portico:0.1"
PROBE4_IP = "198.18.128.100"
#: Not 80: with `--proxy-mode userspace` the lab's agent also opens its Ingress listener on
#: 0.0.0.0:80, which clashes with ClusterIP listeners on port 80.
PROBE4_PORT = 8000


def service_ip(i):
    if FIRST + i > 0xFFFF:
        sys.exit(f"gen.py: index {i} is past the lab's IPv6 service range")
    return f"2001:db8:ffff::{FIRST + i:x}"


def service(name, i):
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\n"
        f"spec:\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n  clusterIP: {service_ip(i)}\n"
        f"  selector: {{app: echo}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n"
    )


def deployment(replicas):
    return (
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: echo, namespace: bench}\n"
        f"spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: echo}}}}\n"
        "  template:\n    metadata: {labels: {app: echo}}\n    spec:\n      containers:\n"
        f"      - {{name: echo, image: {IMAGE}, args: [echo], ports: [{{name: http, containerPort: 8080}}]}}\n"
    )


def workloads():
    return (
        deployment(10)
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: bench, labels: {app: client}}\n"
        + "spec:\n  nodeName: lab-node-1\n"
        + f"  containers: [{{name: echo, image: {IMAGE}, args: [echo], ports: [{{containerPort: 8080}}]}}]\n"
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: probe4, namespace: bench}\n"
        + f"spec:\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4]\n  clusterIP: {PROBE4_IP}\n"
        + f"  selector: {{app: echo}}\n  ports: [{{name: http, port: {PROBE4_PORT}, targetPort: http}}]\n"
    )


def write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def main(argv):
    if len(argv) == 3 and argv[0] == "scale":
        n, out = int(argv[1]), argv[2]
        write(os.path.join(out, "00-workloads.yaml"), workloads())
        for first in range(0, n, PER_FILE):
            docs = [service(f"svc-{i:05}", i) for i in range(first, min(n, first + PER_FILE))]
            write(os.path.join(out, f"svc-{first // PER_FILE:03}.yaml"), "---\n".join(docs))
    elif len(argv) == 2 and argv[0] == "small":
        write(
            os.path.join(argv[1], "small.yaml"),
            deployment(10)
            + "---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: bench}\n"
            + f"spec:\n  clusterIP: {PROBE4_IP}\n  selector: {{app: echo}}\n"
            + "  ports: [{name: http, port: 80, targetPort: http}]\n",
        )
    elif len(argv) == 4 and argv[0] == "one":
        write(argv[3], service(argv[1], int(argv[2])))
    elif len(argv) == 2 and argv[0] == "ip":
        print(service_ip(int(argv[1])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
