#!/usr/bin/env python3
"""Writes the configurations of bench/ingress.sh and the manifests of bench/ingress-reload.sh.

One source for the routes, so every peer serves exactly the same ones:
  20 hosts h00.bench.test ... h19.bench.test, each with 10 prefix paths /p0 ... /p9, all to
  one backend, nginx on 127.0.0.1:8080. Requests go to /pK/bench (see request_path).

  gen.py bench OUT      OUT must hold tls.crt and tls.key (the `*.bench.test` certificate).
                        Writes, under OUT:
                          portico/manifests/bench.yaml  Service `bench` (ClusterIP 127.96.0.20,
                                                        80 -> 8080), its EndpointSlice
                                                        (127.0.0.1:8080), Secret `bench-tls`
                                                        (kubernetes.io/tls) and 20 Ingresses
                          backend/nginx.conf            the backend   (from backend.conf.in)
                          nginx/nginx.conf              nginx peer    (from nginx.conf.in)
                          haproxy/haproxy.cfg, routes.map, bench.pem
                                                        HAProxy peer  (from haproxy.cfg.in)
                          envoy/envoy.yaml              Envoy peer    (from envoy.yaml.in)
                          traefik/traefik.yml, dynamic.yml
                                                        Traefik peer  (from traefik.yml.in)
                          routes.lua                    wrk script cycling through the 200
                                                        host/path pairs, one per request
  gen.py reload OUT [--ingresses N] [--files F]
                        Writes OUT/service.yaml (Service + EndpointSlice as above) and F files
                        OUT/ingresses-NNN.yaml holding N Ingresses in all (default 10,000 in
                        100 files): Ingress iNNNNN, host iNNNNN.reload.test, path / (Prefix)
                        to Service bench port 80.

Standard library only.
"""

import argparse
import base64
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/gen_common.py, wherever this is run from; no __pycache__ left in the source tree.
sys.path.insert(0, os.path.dirname(HERE))
sys.dont_write_bytecode = True
from gen_common import renderer, write  # noqa: E402

render = renderer(HERE)
HOSTS = 20
PATHS = 10
BACKEND = "127.0.0.1:8080"


def host(h):
    return f"h{h:02}.bench.test"


def prefix(p):
    return f"/p{p}"


def request_path(p):
    """The path the load generators ask for under prefix p."""
    return f"/p{p}/bench"


SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: bench
spec:
  clusterIP: 127.96.0.20
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-1
  labels:
    kubernetes.io/service-name: bench
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
- addresses: ["127.0.0.1"]
"""


def backend_ref():
    return "        backend:\n          service:\n            name: bench\n            port:\n              number: 80\n"


def bench_ingress(h):
    out = [
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n"
        f"  name: {host(h).split('.')[0]}\n"
        "  annotations:\n    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"\n"
        "spec:\n"
        f"  tls:\n  - hosts: [{host(h)}]\n    secretName: bench-tls\n"
        f"  rules:\n  - host: {host(h)}\n    http:\n      paths:\n"
    ]
    for p in range(PATHS):
        out.append(f"      - path: {prefix(p)}\n        pathType: Prefix\n" + backend_ref())
    return "".join(out)


def reload_ingress(name, hostname):
    """One Ingress of the reload benchmark (also what bench/ingress/reload_probe.py appends)."""
    return (
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n"
        f"  name: {name}\n"
        f"spec:\n  rules:\n  - host: {hostname}\n    http:\n      paths:\n"
        "      - path: /\n        pathType: Prefix\n" + backend_ref()
    )


def gen_bench(out):
    out = os.path.abspath(out)
    cert, key = os.path.join(out, "tls.crt"), os.path.join(out, "tls.key")
    with open(cert, "rb") as f:
        cert_pem = f.read()
    with open(key, "rb") as f:
        key_pem = f.read()

    # Portico: the manifests.
    docs = [SERVICE]
    docs.append(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bench-tls\ntype: kubernetes.io/tls\ndata:\n"
        f"  tls.crt: {base64.b64encode(cert_pem).decode()}\n"
        f"  tls.key: {base64.b64encode(key_pem).decode()}\n"
    )
    docs.extend(bench_ingress(h) for h in range(HOSTS))
    write(os.path.join(out, "portico/manifests/bench.yaml"), "".join(docs))

    # The backend.
    d = os.path.join(out, "backend")
    render("backend.conf.in", os.path.join(d, "nginx.conf"), DIR=d)

    # nginx: one server block per host, one location per prefix.
    servers = []
    for h in range(HOSTS):
        lines = [
            "    server {",
            "        listen 127.0.0.3:80;",
            "        listen 127.0.0.3:443 ssl http2;",
            f"        server_name {host(h)};",
        ]
        lines += [f"        location {prefix(p)} {{ proxy_pass http://bench; }}" for p in range(PATHS)]
        lines += ["        location / { return 404; }", "    }"]
        servers.append("\n".join(lines))
    d = os.path.join(out, "nginx")
    render("nginx.conf.in", os.path.join(d, "nginx.conf"), DIR=d, CERT=cert, KEY=key, SERVERS="\n".join(servers))

    # HAProxy: a prefix map over host + path, and the certificate and key in one file.
    d = os.path.join(out, "haproxy")
    write(
        os.path.join(d, "routes.map"),
        "".join(f"{host(h)}{prefix(p)} bench\n" for h in range(HOSTS) for p in range(PATHS)),
    )
    write(os.path.join(d, "bench.pem"), cert_pem.decode() + key_pem.decode())
    render("haproxy.cfg.in", os.path.join(d, "haproxy.cfg"), DIR=d, PEM=os.path.join(d, "bench.pem"))

    # Envoy: one virtual host per host, one prefix route per path.
    vhosts = [
        {
            "name": host(h).split(".")[0],
            "domains": [host(h)],
            "routes": [{"match": {"prefix": prefix(p)}, "route": {"cluster": "bench"}} for p in range(PATHS)],
        }
        for h in range(HOSTS)
    ]
    d = os.path.join(out, "envoy")
    render("envoy.yaml.in", os.path.join(d, "envoy.yaml"), VHOSTS=json.dumps(vhosts), CERT=cert, KEY=key)

    # Traefik: one router per host and path on each entrypoint (a TLS router answers TLS only).
    routers = {}
    for h in range(HOSTS):
        for p in range(PATHS):
            rule = f"Host(`{host(h)}`) && PathPrefix(`{prefix(p)}`)"
            name = f"{host(h).split('.')[0]}-p{p}"
            routers[name] = {"rule": rule, "service": "bench", "entryPoints": ["web"]}
            routers[name + "-tls"] = {"rule": rule, "service": "bench", "entryPoints": ["websecure"], "tls": {}}
    pair = {"certFile": cert, "keyFile": key}
    dynamic = {
        "http": {
            "routers": routers,
            "services": {"bench": {"loadBalancer": {"servers": [{"url": f"http://{BACKEND}"}], "passHostHeader": True}}},
        },
        "tls": {"certificates": [pair], "stores": {"default": {"defaultCertificate": pair}}},
    }
    d = os.path.join(out, "traefik")
    write(os.path.join(d, "dynamic.yml"), json.dumps(dynamic, indent=1) + "\n")
    render("traefik.yml.in", os.path.join(d, "traefik.yml"), DIR=d)

    # wrk: the 200 requests are formatted once; each call of request() takes the next one.
    # Consecutive requests change host; every 20 they change path too.
    write(
        os.path.join(out, "routes.lua"),
        f"""-- Generated by bench/ingress/gen.py: cycles through the {HOSTS * PATHS} host/path pairs.
local requests = {{}}
local n = 0
local i = 0
init = function(args)
  for k = 0, {HOSTS * PATHS - 1} do
    local h = k % {HOSTS}
    local p = math.floor(k / {HOSTS}) % {PATHS}
    n = n + 1
    requests[n] = wrk.format("GET", string.format("/p%d/bench", p), {{["Host"] = string.format("h%02d.bench.test", h)}})
  end
end
request = function()
  i = i % n + 1
  return requests[i]
end
""",
    )


def gen_reload(out, ingresses, files):
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "service.yaml"), SERVICE)
    per_file = -(-ingresses // files)
    for f in range(files):
        first = f * per_file
        docs = [
            reload_ingress(f"i{i:05}", f"i{i:05}.reload.test")
            for i in range(first, min(first + per_file, ingresses))
        ]
        write(os.path.join(out, f"ingresses-{f:03}.yaml"), "".join(docs))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("bench")
    b.add_argument("out")
    r = sub.add_parser("reload")
    r.add_argument("out")
    r.add_argument("--ingresses", type=int, default=10000)
    r.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    if args.what == "bench":
        gen_bench(args.out)
    else:
        gen_reload(args.out, args.ingresses, args.files)


if __name__ == "__main__":
    main()
