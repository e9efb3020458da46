#!/usr/bin/env bash
# L4 proxy benchmark, instruction counts: the user-space instructions each TCP proxy executes per
# proxied short connection, counted by valgrind's callgrind, for Portico's userspace L4 proxy
# (a ClusterIP) and HAProxy in TCP mode, one after the other in one run, on one machine, over
# loopback only.
#
# Why: connections/s on a small shared machine (2 cores, other people's work beside ours) moves
# by several percent from one run to the next; the number of instructions a proxy executes for
# the same connections barely moves, so small changes in the proxies' own work show. This
# machine has no hardware performance counters (`perf stat -e instructions` counts nothing),
# hence callgrind, which counts every instruction the program executes on a synthetic CPU.
# What it does NOT count: kernel work (accept, connect, the system calls that move the bytes,
# the loopback TCP stack, softirq), which is most of an L4 proxy's CPU time; nor time, cache
# misses or branch mispredictions. The figures compare the proxies' user-space work, not their
# speed: bench/l4.sh measures that.
#
# Manifests, configurations, addresses and ports are those of bench/l4.sh (bench/l4/
# manifests.yaml, haproxy.cfg.in, nginx.conf.in): the backend is nginx on 127.0.0.1:8080
# returning a small static 200, which does not run under valgrind; the proxies forward port 80
# to it (they also serve bench/l4.sh's port 5201, unused here).
# For each proxy in turn:
#  1. start it under `valgrind --tool=callgrind`, pinned to core 1, and wait until it answers
#     200 with the backend's body (valgrind makes start-up slow: up to a few minutes);
#  2. warm up: `h2load --h1 -n 1000 -c 16 -H 'Connection: close'`;
#  3. zero the counters (`callgrind_control -z PID`), run the measured `h2load --h1 -n N -c 16
#     -H 'Connection: close'`, dump the counters (`callgrind_control -d PID`), stop the proxy;
#  4. instructions per connection = callgrind's PROGRAM TOTALS of the dump (all the proxy's
#     threads) / N. With `Connection: close` the backend closes after its one response, so each
#     of the N requests is one new TCP connection through the proxy: accepted, connected to the
#     backend, one request and one response copied, both sides closed.
# A run counts only when h2load reports all N requests succeeded with a 2xx status; otherwise
# that proxy is printed as INVALID with the reason, the other is measured anyway, and the
# script exits 1 at the end.
#
# Proxies (as in bench/l4.sh):
#   portico  127.96.0.10:80   `portico run --manifests DIR ... --dns off` serving the ClusterIP,
#                             TOKIO_WORKER_THREADS=1
#   haproxy  127.0.0.2:80     HAProxy mode tcp, nbthread 1, `haproxy -db -f CFG`
# The proxy under test runs on core 1; h2load and the backend nginx (one worker) on core 0.
# Printed: for each proxy, the instructions per connection and the ratio Portico / HAProxy
# (below 1: Portico executes fewer), then Portico's 5 functions with the largest self cost, in
# instructions per connection.
#
# Usage: bench/l4-instructions.sh                  (from any folder; as root to install what is missing)
#        PORTICO_BENCH_CONNECTIONS=50000 bench/l4-instructions.sh
#                                                  (connections of each measured run; default 10000)
#        PORTICO_BENCH_KEEP=DIR bench/l4-instructions.sh
#                                                  (keep the h2load outputs, callgrind dumps,
#                                                   configurations and logs in DIR)
#        PORTICO_BENCH_BIN=FILE bench/l4-instructions.sh
#                                                  (measure this portico binary; no cargo build)
# On the 2-core bench machine each proxy takes 10-20 s under valgrind (start-up included), the
# whole script under a minute after the build. START_TIMEOUT and RUN_TIMEOUT below bound a
# proxy that hangs.
# The callgrind runs, the checks of h2load's output, the table and the top functions are
# bench/callgrind.sh's, shared with bench/ingress-instructions.sh; this script sets up the
# configurations and says how to reach each proxy.
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/l4"
bench_name="l4 instructions bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
# shellcheck source=bench/callgrind.sh
source "$root/bench/callgrind.sh"
cd "$root"

CLIENTS=16
# What bench/callgrind.sh's measure counts: CG_N connections, after CG_WARMUP of warm-up.
run_sizes PORTICO_BENCH_CONNECTIONS 10000 1000 "$CLIENTS" "one per h2load client"
CG_UNIT=connection
ADMIN=127.0.0.1:19650
BACKEND_IP=127.0.0.1
BACKEND_PORT=8080
BODY="portico l4 bench"
declare -A PROXY_IP=([portico]=127.96.0.10 [haproxy]=127.0.0.2)
PROXY_PORT=80
# bench/l4.sh's iperf3 port: the proxies listen there too (nothing behind it here).
IPERF_PORT=5201
PROXIES=(portico haproxy)
# Seconds a proxy under valgrind gets to answer its first request, and each h2load run to end.
START_TIMEOUT=300
RUN_TIMEOUT=1800

pick_cpus

# --- tools -------------------------------------------------------------------------------
require_tools curl taskset python3 ss timeout
install_missing haproxy nginx h2load:nghttp2-client valgrind callgrind_control:valgrind \
    callgrind_annotate:valgrind

# --- build -------------------------------------------------------------------------------
build_portico

# --- processes and cleanup ---------------------------------------------------------------
make_tmp portico-l4-instr
mkdir -p "$tmp/backend" "$tmp/haproxy" "$tmp/portico/manifests" "$tmp/portico/state"
KEEP_DIRS=(backend haproxy portico)

ensure_free "$BACKEND_IP" "$BACKEND_PORT"
ensure_free "${ADMIN%:*}" "${ADMIN##*:}"
for proxy in "${PROXIES[@]}"; do
    ensure_free "${PROXY_IP[$proxy]}" "$PROXY_PORT"
    ensure_free "${PROXY_IP[$proxy]}" "$IPERF_PORT"
done

# --- configurations ----------------------------------------------------------------------
# render TEMPLATE DIR: TEMPLATE (bench/l4/NAME.in) as DIR/NAME, with @TMP@ replaced by DIR
# (bench/l4.sh renders the same templates with its temporary folder).
render() {
    local out
    out="$2/$(basename "$1" .in)"
    sed "s#@TMP@#$2#g" "$1" >"$out"
}
render "$here/nginx.conf.in" "$tmp/backend"
render "$here/haproxy.cfg.in" "$tmp/haproxy"
cp "$here/manifests.yaml" "$tmp/portico/manifests/bench.yaml"

# --- backend, core $LOAD_CPU -------------------------------------------------------------
start_backend nginx-error.log "$BACKEND_IP" "$BACKEND_PORT"
got="$(curl -s --max-time 10 "http://$BACKEND_IP:$BACKEND_PORT/" 2>/dev/null | tr -d '\n' || true)"
[ "$got" = "$BODY" ] || { echo "$bench_name: unexpected answer from the backend: '$got'" >&2; exit 1; }

# --- one proxy under callgrind (bench/callgrind.sh's hooks) ------------------------------

# addr_of PROXY: "ADDR PORT" where PROXY serves the backend.
addr_of() {
    echo "${PROXY_IP[$1]} $PROXY_PORT"
}

# probe_target PROXY: the backend's URL through PROXY.
probe_target() {
    echo "http://${PROXY_IP[$1]}:$PROXY_PORT/"
}

# probe PROXY: "CODE BODY" of one request through PROXY.
probe() {
    curl_answer "$(probe_target "$1")"
}

# h2load_args PROXY: $CLIENTS clients through PROXY, one request per connection, one argument
# a line.
h2load_args() {
    echo "-c"
    echo "$CLIENTS"
    echo "-H"
    echo "Connection: close"
    probe_target "$1"
}

# --- the runs, core $PROXY_CPU ------------------------------------------------------------
echo
banner "L4 proxy instruction counts (callgrind)"
echo "one HTTP/1.1 request per TCP connection (h2load --h1 -c $CLIENTS -H 'Connection: close'),"
echo "  $CG_WARMUP connections of warm-up, then N = $CG_N connections counted per proxy"
echo "user-space instructions only (callgrind, all threads of the proxy); kernel work is NOT counted"
echo

if portico_runs --manifests --state --admin --drain --dns --ingress-http; then
    # No Ingress here: its listeners (always open) take any free port, not the backend's 8080.
    TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" measure portico "$portico" run \
        --manifests "$tmp/portico/manifests" --state "$tmp/portico/state" --admin "$ADMIN" \
        --drain 1s --dns off --ingress-http 127.0.0.1:0 --ingress-https 127.0.0.1:0
fi
measure haproxy haproxy -db -f "$tmp/haproxy/haproxy.cfg"

# --- report ------------------------------------------------------------------------------
echo
echo "$(portico_label)" \
    "$(haproxy -v | head -n 1 | awk '{print "haproxy", $3}') (mode tcp, nbthread 1): core $PROXY_CPU, under $(valgrind --version)"
echo "$(h2load --version | head -n 1 | sed 's#.*nghttp2/#h2load #'), backend $(nginx -v 2>&1 | sed 's#.*nginx/#nginx #') (1 worker, not under valgrind): core $LOAD_CPU"
echo
report_and_exit HAProxy
