#!/usr/bin/env bash
# L7 Ingress benchmark, instruction counts: the user-space instructions each proxy executes per
# proxied HTTP/1.1 request, counted by valgrind's callgrind, for Portico, nginx and HAProxy with
# the same routes, one after the other in one run, on one machine, over loopback only.
#
# Why: req/s on a small shared machine (2 cores, other people's work beside ours) moves by
# several percent from one run to the next; the number of instructions a proxy executes for
# the same requests barely moves, so small changes in the proxies' own work show. This machine
# has no hardware performance counters (`perf stat -e instructions` counts nothing), hence
# callgrind, which counts every instruction the program executes on a synthetic CPU.
# What it does NOT count: kernel work (system calls, the loopback TCP stack, softirq), which is
# a large part of a proxy's CPU time; nor time, cache misses or branch mispredictions. The
# figures compare the proxies' user-space work, not their speed: bench/ingress.sh measures that.
#
# Routes and configurations are those of bench/ingress.sh (bench/ingress/gen.py writes them):
# 20 hosts h00.bench.test ... h19.bench.test x 10 prefix paths /p0 ... /p9, all to one backend,
# nginx on 127.0.0.1:8080 returning a small static 200, which does not run under valgrind.
# For each proxy in turn:
#  1. start it under `valgrind --tool=callgrind`, pinned to core 1, and wait until it answers
#     200 with the backend's body for h03.bench.test /p0/bench ... /p9/bench and 404 for an
#     unknown path and an unknown host (valgrind makes start-up slow: up to a few minutes);
#  2. warm up: `h2load --h1 -n 2000 -c 64`, host h03.bench.test, the 10 paths in turn
#     (h2load sends every URL of one run to one host);
#  3. zero the counters (`callgrind_control -z PID`), run the measured `h2load --h1 -n N -c 64`
#     with the same URLs, dump the counters (`callgrind_control -d PID`), stop the proxy;
#  4. instructions per request = callgrind's PROGRAM TOTALS of the dump (all the proxy's
#     threads) / N. The 64 connections' set-up and close are in it, spread over the N requests.
# A run counts only when h2load reports all N requests succeeded with a 2xx status; otherwise
# that proxy is printed as INVALID with the reason, the others are measured anyway, and the
# script exits 1 at the end.
#
# Proxies (as in bench/ingress.sh, HTTP only here):
#   portico  127.0.0.1:18080   `portico run --manifests DIR --ingress-http ... --access-log off
#                              --dns off`, TOKIO_WORKER_THREADS=1
#   nginx    127.0.0.3:80      nginx, 1 worker, keep-alive upstream; here with `-g 'master_process
#                              off;'` (its config has `daemon off;`) so that the one process
#                              valgrind runs is the one serving
#   haproxy  127.0.0.4:80      HAProxy mode http, nbthread 1, `haproxy -db -f CFG`
# Envoy and Traefik, measured by bench/ingress.sh, are left out: Envoy under valgrind is
# impractically slow (its start-up alone takes many minutes), and Traefik is a Go binary, whose
# runtime (its own stacks, signals and threads) valgrind does not handle well.
# The proxy under test runs on core 1; h2load and the backend nginx (one worker) on core 0.
# Printed: for each proxy, the instructions per request and the ratio Portico / that proxy
# (below 1: Portico executes fewer), then Portico's 5 functions with the largest self cost, in
# instructions per request.
#
# Usage: bench/ingress-instructions.sh                (from any folder; as root to install what is missing)
#        PORTICO_BENCH_REQUESTS=50000 bench/ingress-instructions.sh
#                                                     (requests of each measured run; default 20000)
#        PORTICO_BENCH_KEEP=DIR bench/ingress-instructions.sh
#                                                     (keep the h2load outputs, callgrind dumps,
#                                                      configurations and logs in DIR)
#        PORTICO_BENCH_BIN=FILE bench/ingress-instructions.sh
#                                                     (measure this portico binary; no cargo build)
# On the 2-core bench machine each proxy takes 10-20 s under valgrind (start-up included), the
# whole script under a minute after the build. START_TIMEOUT and RUN_TIMEOUT below bound a
# proxy that hangs.
# The callgrind runs, the checks of h2load's output, the table and the top functions are
# bench/callgrind.sh's, shared with bench/l4-instructions.sh; this script sets up the
# configurations and says how to reach and check each proxy.
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/ingress"
bench_name="ingress instructions bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
# shellcheck source=bench/callgrind.sh
source "$root/bench/callgrind.sh"
cd "$root"

CONNECTIONS=64
# What bench/callgrind.sh's measure counts: CG_N requests, after CG_WARMUP of warm-up.
run_sizes PORTICO_BENCH_REQUESTS 20000 2000 "$CONNECTIONS" "one per connection"
CG_UNIT=request
HOST=h03.bench.test
ADMIN=127.0.0.1:19651
PORTICO_IP=127.0.0.1
PORTICO_HTTP_PORT=18080
PORTICO_HTTPS_PORT=18443
BACKEND_IP=127.0.0.1
BACKEND_PORT=8080
BODY="portico ingress bench"
declare -A PEER_IP=([nginx]=127.0.0.3 [haproxy]=127.0.0.4)
PROXIES=(portico nginx haproxy)
# Seconds a proxy under valgrind gets to answer its first request, and each h2load run to end.
START_TIMEOUT=300
RUN_TIMEOUT=1800

pick_cpus

# --- tools -------------------------------------------------------------------------------
require_tools curl taskset python3 ss timeout
install_missing haproxy nginx h2load:nghttp2-client openssl valgrind callgrind_control:valgrind \
    callgrind_annotate:valgrind

# --- build -------------------------------------------------------------------------------
build_portico

# --- processes and cleanup ---------------------------------------------------------------
make_tmp portico-ingress-instr
mkdir -p "$tmp/portico/state"
KEEP_DIRS=(backend nginx haproxy portico)

ensure_free "$BACKEND_IP" "$BACKEND_PORT"
ensure_free "${ADMIN%:*}" "${ADMIN##*:}"
ensure_free "$PORTICO_IP" "$PORTICO_HTTP_PORT"
ensure_free "$PORTICO_IP" "$PORTICO_HTTPS_PORT"
ensure_free 127.96.0.20 80
for peer in nginx haproxy; do
    ensure_free "${PEER_IP[$peer]}" 80
    ensure_free "${PEER_IP[$peer]}" 443
done

# --- configurations ----------------------------------------------------------------------
bench_certificate
python3 "$here/gen.py" bench "$tmp"
grep -qx 'daemon off;' "$tmp/nginx/nginx.conf" ||
    { echo "$bench_name: $tmp/nginx/nginx.conf has no 'daemon off;'" >&2; exit 1; }

# --- backend, core $LOAD_CPU -------------------------------------------------------------
start_backend error.log "$BACKEND_IP" "$BACKEND_PORT"

# --- one proxy under callgrind (bench/callgrind.sh's hooks) ------------------------------

# addr_of PROXY: "ADDR PORT" where PROXY serves HTTP.
addr_of() {
    case "$1" in
        portico) echo "$PORTICO_IP $PORTICO_HTTP_PORT" ;;
        *) echo "${PEER_IP[$1]} 80" ;;
    esac
}

# probe PROXY [HOST PATH]: "CODE BODY" of one request through PROXY (default: $HOST /p3/bench).
probe() {
    local addr port
    read -r addr port <<<"$(addr_of "$1")"
    curl_answer -H "Host: ${2:-$HOST}" "http://$addr:$port${3:-/p3/bench}"
}

# probe_target PROXY: what probe PROXY asks.
probe_target() {
    local addr port
    read -r addr port <<<"$(addr_of "$1")"
    echo "http://$addr:$port/p3/bench (Host $HOST)"
}

# check_routes PROXY: real routes, not a catch-all: 200 with the backend's body for $HOST
# /p0/bench ... /p9/bench, 404 for an unknown path and an unknown host.
check_routes() {
    local route host path got p
    for route in $(for p in $(seq 0 9); do echo "$HOST:/p$p/bench"; done) \
        "$HOST:/zz" nope.bench.test:/p3/bench; do
        host="${route%%:*}"
        path="${route#*:}"
        got="$(probe "$1" "$host" "$path")"
        case "$host$path" in
            "$HOST"/p?/bench) [ "$got" = "200 $BODY" ] && continue ;;
            *) [ "${got%% *}" = 404 ] && continue ;;
        esac
        WHY[$1]="does not route as expected: $host$path got '$got'"
        return 1
    done
}

# h2load_args PROXY: $CONNECTIONS connections to PROXY, host $HOST, paths /p0/bench ...
# /p9/bench in turn, one argument a line.
h2load_args() {
    local addr port authority p
    read -r addr port <<<"$(addr_of "$1")"
    authority="$HOST"
    [ "$port" = 80 ] || authority="$HOST:$port"
    echo "-c"
    echo "$CONNECTIONS"
    echo "--connect-to=$addr:$port"
    for p in $(seq 0 9); do echo "http://$authority/p$p/bench"; done
}

# --- the runs, core $PROXY_CPU ------------------------------------------------------------
echo
banner "L7 Ingress instruction counts (callgrind)"
echo "HTTP/1.1 keep-alive, h2load --h1 -c $CONNECTIONS, $HOST /p0/bench ... /p9/bench in turn:"
echo "  $CG_WARMUP requests of warm-up, then N = $CG_N requests counted per proxy"
echo "user-space instructions only (callgrind, all threads of the proxy); kernel work is NOT counted"
echo

if portico_runs --ingress-http --ingress-https --access-log --dns; then
    TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" measure portico "$portico" run \
        --manifests "$tmp/portico/manifests" --state "$tmp/portico/state" --admin "$ADMIN" \
        --ingress-http "$PORTICO_IP:$PORTICO_HTTP_PORT" --ingress-https "$PORTICO_IP:$PORTICO_HTTPS_PORT" \
        --access-log off --dns off --drain 1s
fi
measure nginx nginx -g 'master_process off;' -p "$tmp/nginx/" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf"
measure haproxy haproxy -db -f "$tmp/haproxy/haproxy.cfg"

# --- report ------------------------------------------------------------------------------
echo
echo "$(portico_label)" \
    "$(nginx -v 2>&1 | sed 's#.*nginx/#nginx #') (1 worker, master_process off)," \
    "$(haproxy -v | head -n 1 | awk '{print "haproxy", $3}') (nbthread 1): core $PROXY_CPU, under $(valgrind --version)"
echo "$(h2load --version | head -n 1 | sed 's#.*nghttp2/#h2load #'), backend nginx (1 worker, not under valgrind): core $LOAD_CPU"
echo
report_and_exit "that proxy"
