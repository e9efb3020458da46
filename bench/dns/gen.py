#!/usr/bin/env python3
"""Writes everything bench/dns.sh serves and queries, from one list of names, so that Portico,
unbound and Knot answer exactly the same A records.

The scenario (defaults): 10,000 Services `svc-NNNNN` spread evenly over 10 namespaces
`ns-00` ... `ns-09`, each a ClusterIP Service with an explicit `spec.clusterIP` and one port
`http` 80 -> 8080, and one EndpointSlice per Service with 5 ready IPv4 endpoints (50,000 in
all). The DNS name of Service s is `svc-NNNNN.ns-KK.svc.cluster.local`, its A record the
Service's ClusterIP, TTL 5 (Portico's TTL; the static zones use the same).

Addresses (all loopback, none of them ever connected to by the benchmark):
  ClusterIPs   SERVICE_CIDR 127.112.0.0/16: Service s gets 127.112.(1 + s // 250).(1 + s % 250),
               so no address ends in .0 or .255 (up to 63,750 Services)
  endpoints    127.113.0.0/16 upwards: endpoint e (0 ... 49,999) is 127.(113 + e // 63750)
               .(e % 63750 // 250).(1 + e % 250)
A CIDR of our own, not Portico's default 127.96.0.0/16, so that Portico's 10,000 ClusterIP
listeners on port 80 clash with no other benchmark (bench/l4.sh and bench/ingress.sh serve
127.96.0.10 and 127.96.0.20).

  gen.py OUT --unbound ADDR --knot ADDR [--services N] [--namespaces N] [--endpoints N]
Writes, under OUT:
  portico/manifests/ns-KK.yaml   per namespace: the Namespace, its Services and EndpointSlices
  unbound/unbound.conf           unbound, from unbound.conf.in: num-threads 1, interface ADDR,
                                 includes unbound/cluster.local.conf
  unbound/cluster.local.conf     local-zone "cluster.local." static + one local-data per name
  knot/knot.conf                 knotd, from knot.conf.in: listen ADDR@53, one worker of each kind
  knot/cluster.local.zone        the zone file: SOA, NS, the NS's address and one A per name
  queries.txt                    dnsperf's input: "NAME A" per name, in Service order
  samples.txt                    "NAME ADDRESS" of a few names (first, a middle one, last) that
                                 the script checks with dig on every server before measuring
  scenario.txt                   "services endpoints namespaces service_cidr"

Standard library only.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/gen_common.py, wherever this is run from; no __pycache__ left in the source tree.
sys.path.insert(0, os.path.dirname(HERE))
sys.dont_write_bytecode = True
from gen_common import renderer, write  # noqa: E402

render = renderer(HERE)
ZONE = "cluster.local"
TTL = 5
SERVICE_CIDR = "127.112.0.0/16"
PER_OCTET = 250


def cluster_ip(s):
    return f"127.112.{1 + s // PER_OCTET}.{1 + s % PER_OCTET}"


def endpoint_ip(e):
    per_16 = 255 * PER_OCTET
    return f"127.{113 + e // per_16}.{e % per_16 // PER_OCTET}.{1 + e % PER_OCTET}"


def namespace(n):
    return f"ns-{n:02}"


def service(s):
    return f"svc-{s:05}"


def fqdn(s, n):
    return f"{service(s)}.{namespace(n)}.svc.{ZONE}"


def manifests(out, services, namespaces, endpoints):
    """Writes the manifests; returns (DNS name, ClusterIP) of every Service, in order."""
    names = []
    per_ns = -(-services // namespaces)
    for n in range(namespaces):
        ns = namespace(n)
        docs = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"]
        for s in range(n * per_ns, min((n + 1) * per_ns, services)):
            ip = cluster_ip(s)
            names.append((fqdn(s, n), ip))
            docs.append(
                f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {service(s)}\n  namespace: {ns}\n"
                f"spec:\n  type: ClusterIP\n  clusterIP: {ip}\n"
                "  ports:\n  - name: http\n    protocol: TCP\n    port: 80\n    targetPort: 8080\n"
            )
            eps = "".join(
                f'- addresses: ["{endpoint_ip(s * endpoints + k)}"]\n  conditions: {{ready: true}}\n'
                for k in range(endpoints)
            )
            docs.append(
                f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service(s)}-1\n"
                f"  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {service(s)}\n"
                "addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n" + eps
            )
        write(os.path.join(out, "portico", "manifests", f"{ns}.yaml"), "".join(docs))
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--unbound", required=True, help="unbound's address (port 53)")
    parser.add_argument("--knot", required=True, help="knotd's address (port 53)")
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--endpoints", type=int, default=5, help="endpoints per Service")
    args = parser.parse_args()
    if not 1 <= args.services <= 255 * PER_OCTET - PER_OCTET or args.namespaces < 1 or args.endpoints < 0:
        sys.exit("gen.py: --services takes 1 ... 63,500, --namespaces at least 1")
    if args.services * args.endpoints > 2 * 255 * PER_OCTET:
        sys.exit("gen.py: too many endpoints for 127.113.0.0/16 and 127.114.0.0/16")
    out = os.path.abspath(args.out)

    names = manifests(out, args.services, args.namespaces, args.endpoints)

    # unbound: a static local zone (unbound.conf.in has the rest).
    d = os.path.join(out, "unbound")
    write(
        os.path.join(d, "cluster.local.conf"),
        f'local-zone: "{ZONE}." static\n' + "".join(f'local-data: "{n}. {TTL} IN A {ip}"\n' for n, ip in names),
    )
    render("unbound.conf.in", os.path.join(d, "unbound.conf"), DIR=d, ADDR=args.unbound)

    # Knot: an ordinary authoritative zone.
    d = os.path.join(out, "knot")
    zone = [
        f"$ORIGIN {ZONE}.\n$TTL {TTL}\n",
        f"@ SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 {TTL}\n",
        f"@ NS ns.dns.{ZONE}.\n",
        f"ns.dns A {args.knot}\n",
    ]
    zone += [f"{n}. A {ip}\n" for n, ip in names]
    write(os.path.join(d, f"{ZONE}.zone"), "".join(zone))
    render("knot.conf.in", os.path.join(d, "knot.conf"), DIR=d, ADDR=args.knot, ZONE=ZONE)
    os.makedirs(os.path.join(d, "db"), exist_ok=True)

    write(os.path.join(out, "queries.txt"), "".join(f"{n} A\n" for n, _ in names))
    picks = sorted({0, len(names) // 2, len(names) - 1})
    write(os.path.join(out, "samples.txt"), "".join(f"{names[i][0]} {names[i][1]}\n" for i in picks))
    write(
        os.path.join(out, "scenario.txt"),
        f"{len(names)} {len(names) * args.endpoints} {args.namespaces} {SERVICE_CIDR}\n",
    )


if __name__ == "__main__":
    main()
