#!/usr/bin/env python3
"""Writes the planner benchmark's scenario as manifest files, one file per namespace.

The text is byte for byte what crates/plan/benches/plan.rs builds in memory (keep the two in
step): per namespace a Namespace, its Services (each selecting its own Pods through a named
target port), those Pods (status.podIP and Ready=True, so nothing is allocated for them) and
its Ingresses (2 hosts x 3 paths each, pointing at Services of the same namespace).

Service types: every 50th is LoadBalancer, every other 10th NodePort, the rest ClusterIP.
200 LoadBalancer Services need more than the default /24 pool: plan with
`--lb-pool 127.97.0.0/16`.

Standard library only. Example:
    python3 bench/gen_manifests.py OUT_DIR                # 10,000 Services, 100,000 Pods, 1,000 Ingresses
    python3 bench/gen_manifests.py --services 100 --ingresses 10 --namespaces 10 OUT_DIR
"""

import argparse
import os
import sys

HOSTS_PER_INGRESS = 2
PATHS = [("/", "Prefix"), ("/api", "Prefix"), ("/healthz", "Exact")]


def pod_ip(p):
    """Pod p's address: 127.64.0.0 upwards, outside every pool the planner allocates from."""
    return f"127.{64 + (p >> 16)}.{(p >> 8) & 255}.{p & 255}"


def service_type(s):
    if s % 50 == 0:
        return "LoadBalancer"
    if s % 10 == 0:
        return "NodePort"
    return "ClusterIP"


def selector(s, endpoints):
    """Services select their Pods; with EndpointSlices they have no selector."""
    return f"\n  selector:\n    app: svc-{s:05}" if endpoints == "pods" else ""


def namespace_text(n, services_per_ns, pods_per_service, ingresses_per_ns, endpoints):
    ns = f"ns-{n:03}"
    out = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"]
    first = n * services_per_ns
    for s in range(first, first + services_per_ns):
        out.append(
            f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s:05}\n  namespace: {ns}\n  labels:\n    app: svc-{s:05}\n"
            f"spec:\n  type: {service_type(s)}{selector(s, endpoints)}\n  ports:\n  - name: http\n    protocol: TCP\n    port: 80\n    targetPort: http\n"
        )
        if endpoints == "slices":
            out.append(
                f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{s:05}-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: svc-{s:05}\n"
                f"addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n"
            )
            for k in range(pods_per_service):
                ip = pod_ip(s * pods_per_service + k)
                out.append(f'- addresses: ["{ip}"]\n  conditions: {{ready: true}}\n  nodeName: localhost\n')
            continue
        for k in range(pods_per_service):
            p = s * pods_per_service + k
            out.append(
                f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{s:05}-{k}\n  namespace: {ns}\n  labels:\n    app: svc-{s:05}\n"
                f"spec:\n  containers:\n  - name: app\n    image: registry.example/app:1.0\n    ports:\n    - name: http\n      containerPort: 8080\n      protocol: TCP\n"
                f'status:\n  phase: Running\n  podIP: {pod_ip(p)}\n  conditions:\n  - type: Ready\n    status: "True"\n'
            )
    first = n * ingresses_per_ns
    for j, g in enumerate(range(first, first + ingresses_per_ns)):
        out.append(
            f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ing-{g:04}\n  namespace: {ns}\n"
            f"spec:\n  ingressClassName: portico\n  rules:\n"
        )
        for h in range(HOSTS_PER_INGRESS):
            out.append(f"  - host: app-{g:04}-{h}.example.com\n    http:\n      paths:\n")
            for p, (path, path_type) in enumerate(PATHS):
                local = (j * HOSTS_PER_INGRESS * len(PATHS) + h * len(PATHS) + p) % services_per_ns
                s = n * services_per_ns + local
                # Alternate between naming the Service port and giving its number.
                port = "name: http" if p % 2 == 0 else "number: 80"
                out.append(
                    f"      - path: {path}\n        pathType: {path_type}\n        backend:\n          service:\n"
                    f"            name: svc-{s:05}\n            port:\n              {port}\n"
                )
    return "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write ns-NNN.yaml files into (created if missing)")
    parser.add_argument("--namespaces", type=int, default=100, help="namespaces, one file each (default 100)")
    parser.add_argument("--services", type=int, default=10_000, help="Services in all (default 10000)")
    parser.add_argument("--pods-per-service", type=int, default=10, help="Pods (endpoints) per Service (default 10)")
    parser.add_argument("--ingresses", type=int, default=1_000, help="Ingresses in all (default 1000)")
    parser.add_argument(
        "--endpoints",
        choices=["slices", "pods"],
        default="slices",
        help="endpoints from one EndpointSlice per Service (default) or from Pods the selectors pick",
    )
    args = parser.parse_args()

    if args.namespaces <= 0 or args.services % args.namespaces or args.ingresses % args.namespaces:
        sys.exit("--services and --ingresses must divide evenly by --namespaces")
    if args.services * args.pods_per_service > 1 << 22:
        sys.exit("at most 4Mi Pods (their addresses must stay inside 127.64.0.0/10)")
    services_per_ns = args.services // args.namespaces
    ingresses_per_ns = args.ingresses // args.namespaces
    if ingresses_per_ns and services_per_ns == 0:
        sys.exit("Ingresses need Services to point at")

    os.makedirs(args.out_dir, exist_ok=True)
    total = 0
    for n in range(args.namespaces):
        text = namespace_text(n, services_per_ns, args.pods_per_service, ingresses_per_ns, args.endpoints)
        with open(os.path.join(args.out_dir, f"ns-{n:03}.yaml"), "w", encoding="utf-8") as f:
            f.write(text)
        total += len(text)
    per_service = 1 + args.pods_per_service if args.endpoints == "pods" else 2
    objects = args.namespaces + args.services * per_service + args.ingresses
    print(
        f"wrote {args.namespaces} files, {objects} objects, {total / 1048576:.1f} MB to {args.out_dir}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
