#!/usr/bin/env bash
# L4 proxy benchmark: Portico's userspace TCP proxy against HAProxy in TCP mode and against
# no proxy at all, side by side, on one machine, over loopback only.
#
#  1. Throughput of one long TCP stream: iperf3 -P 1, client to server (and -R, server to
#     client), in Gbit/s as the receiver counted it.
#  2. New connections per second and latency: wrk, 32 connections, `Connection: close` (one
#     request per connection), against nginx returning a small static 200.
#
# Peers (all forward to the same nginx 127.0.0.1:8080 and iperf3 server 127.0.0.1:5201):
#   direct   127.0.0.1       no proxy
#   portico  127.96.0.10     `portico run` serving the ClusterIP of bench/l4/manifests.yaml
#   haproxy  127.0.0.2       HAProxy, mode tcp, nbthread 1 (bench/l4/haproxy.cfg.in)
# The proxy under test (Portico with TOKIO_WORKER_THREADS=1, HAProxy with nbthread 1) is pinned
# to core 1; the load generators (iperf3 client, wrk) and the backends (iperf3 server, nginx
# with one worker) to core 0.
#
# Prints one row per peer, the ratios Portico/HAProxy and each/direct, and a verdict against
# the targets (Portico >= 1.1x HAProxy on throughput and conn/s, p99 no worse than HAProxy's).
# Never fails on a missed target; fails only when something does not run or a run is invalid.
#
# Usage: bench/l4.sh                         (from any folder; as root to install what is missing)
#        PORTICO_BENCH_SECONDS=5 bench/l4.sh (length of each measured run; default 10)
#        PORTICO_BENCH_ROUNDS=3 bench/l4.sh  (repeat every run, peers in rotating order, and
#                                             report medians; default 1)
#        PORTICO_BENCH_PERF=DIR bench/l4.sh  (also `perf record --call-graph dwarf` Portico
#                                             during its runs of round 1, keeping perf data
#                                             and reports in DIR)
#        PORTICO_BENCH_KEEP=DIR bench/l4.sh  (keep the raw iperf3/wrk outputs in DIR)
#        PORTICO_BENCH_BIN=FILE bench/l4.sh  (measure this portico binary; no cargo build)
#        PORTICO_BENCH_IDLE=3000 bench/l4.sh (instead of the runs: the memory each proxy keeps
#                                             per idle keep-alive connection through it, N
#                                             connections held; bench/idle.py)
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/l4"
bench_name="l4 bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

runs_and_rounds
WARMUP_SECONDS=2
ADMIN=127.0.0.1:19650
BACKEND_IP=127.0.0.1
PORTICO_IP=127.96.0.10
HAPROXY_IP=127.0.0.2
PEERS=(direct portico haproxy)

pick_cpus

# --- tools -------------------------------------------------------------------------------
require_tools curl taskset python3 ss
install_missing haproxy nginx wrk iperf3

# --- build -------------------------------------------------------------------------------
# The binary build_portico picks (maybe the last one built, when the build failed) must have `run`.
build_portico
"$portico" run --help >/dev/null 2>&1 || { echo "l4 bench: $portico has no 'run' command" >&2; exit 1; }

# --- processes and cleanup ---------------------------------------------------------------
make_tmp portico-l4
mkdir -p "$tmp/manifests" "$tmp/state"

# render TEMPLATE OUT: TEMPLATE with @TMP@ replaced by the temporary folder.
render() {
    sed "s#@TMP@#$tmp#g" "$1" >"$2"
}

ensure_free "$BACKEND_IP" 8080
ensure_free "$BACKEND_IP" 5201
ensure_free "${ADMIN%:*}" "${ADMIN##*:}"
for ip in "$PORTICO_IP" "$HAPROXY_IP"; do
    ensure_free "$ip" 80
    ensure_free "$ip" 5201
done

# --- backends, core $LOAD_CPU ------------------------------------------------------------
render "$here/nginx.conf.in" "$tmp/nginx.conf"
spawn nginx "$LOAD_CPU" nginx -p "$tmp/" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf"
nginx_pid=$!
spawn iperf3 "$LOAD_CPU" iperf3 -s -B "$BACKEND_IP" -p 5201
iperf_pid=$!

wait_listen nginx "$nginx_pid" "$BACKEND_IP" 8080
wait_listen iperf3 "$iperf_pid" "$BACKEND_IP" 5201

# --- proxies, core $PROXY_CPU ------------------------------------------------------------
cp "$here/manifests.yaml" "$tmp/manifests/bench.yaml"
# No Ingress here: its listeners (always open) take any free port, not nginx's 127.0.0.1:8080.
TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" spawn portico "$PROXY_CPU" "$portico" run \
    --manifests "$tmp/manifests" --state "$tmp/state" --admin "$ADMIN" --drain 1s \
    --ingress-http 127.0.0.1:0 --ingress-https 127.0.0.1:0
portico_pid=$!

render "$here/haproxy.cfg.in" "$tmp/haproxy.cfg"
spawn haproxy "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg"
haproxy_pid=$!

wait_ready "$portico_pid" "$ADMIN" 30 || { echo "l4 bench: portico not ready after 30 s" >&2; exit 1; }
wait_listen portico "$portico_pid" "$PORTICO_IP" 80
wait_listen portico "$portico_pid" "$PORTICO_IP" 5201
wait_listen haproxy "$haproxy_pid" "$HAPROXY_IP" 80
wait_listen haproxy "$haproxy_pid" "$HAPROXY_IP" 5201

# target_of PEER: the address to reach the backends through PEER.
target_of() {
    case "$1" in
        direct) echo "$BACKEND_IP" ;;
        portico) echo "$PORTICO_IP" ;;
        haproxy) echo "$HAPROXY_IP" ;;
    esac
}
# http_of PEER: the nginx URL through PEER (the proxies listen on 80, nginx on 8080).
http_of() {
    case "$1" in
        direct) echo "http://$BACKEND_IP:8080/" ;;
        *) echo "http://$(target_of "$1"):80/" ;;
    esac
}
# addr_of PEER: "ADDR PORT" of the nginx backend through PEER.
addr_of() {
    echo "$(target_of "$1") 80"
}
pid_of() {
    case "$1" in
        portico) echo "$portico_pid" ;;
        haproxy) echo "$haproxy_pid" ;;
        *) echo "" ;;
    esac
}

# Every peer must answer before anything is measured.
for peer in "${PEERS[@]}"; do
    body="$(curl -sf --max-time 5 "$(http_of "$peer")")" \
        || { echo "l4 bench: no HTTP answer through $peer" >&2; exit 1; }
    [ "$body" = "portico l4 bench" ] || { echo "l4 bench: unexpected answer through $peer: $body" >&2; exit 1; }
done

echo
banner "L4 proxy benchmark"
echo "portico $(portico_version) (TOKIO_WORKER_THREADS=1), $(haproxy -v | head -n 1 | awk '{print "haproxy", $3}') (nbthread 1): core $PROXY_CPU"
echo "$(iperf3 --version | head -n 1 | awk '{print "iperf3", $2}'), wrk, $(nginx -v 2>&1 | sed 's#.*nginx/#nginx #') (1 worker): core $LOAD_CPU"
echo "runs of ${SECONDS_PER_RUN} s (wrk after a ${WARMUP_SECONDS} s warm-up), $ROUNDS round(s)"
echo

# Idle connections run alone, on the freshly started proxies (see bench/idle.py).
if [ -n "${PORTICO_BENCH_IDLE:-}" ]; then
    idle_connections "$PORTICO_BENCH_IDLE" addr_of portico haproxy
fi

# measure PEER NAME ROUND CMD...: runs CMD, recording the CPU the proxy used meanwhile in
# cpu-PEER-NAME-ROUND.txt ("cpu_seconds wall_seconds"), how busy the load core was in
# load-PEER-NAME-ROUND.txt (the load generator, the backend, and the kernel work they cause
# there), and perf samples of Portico when asked (first round only).
measure() {
    local peer=$1 name=$2 round=$3
    shift 3
    local pid perf_pid="" t0 t1 c0 c1 l0 l1 perf_dir="${PORTICO_BENCH_PERF:-}"
    pid="$(pid_of "$peer")"
    if [ -n "$perf_dir" ] && [ "$peer" = portico ] && [ "$round" -eq 1 ]; then
        mkdir -p "$perf_dir"
        # DWARF call graphs: the release build keeps line tables but no frame pointers.
        perf record --call-graph dwarf,16384 -F 300 -p "$pid" -o "$perf_dir/perf-$name.data" \
            -- sleep "$SECONDS_PER_RUN" >"$perf_dir/perf-$name.log" 2>&1 &
        perf_pid=$!
        pids+=("$perf_pid")
    fi
    if [ -n "$pid" ]; then c0="$(cpu_ticks "$pid")"; fi
    l0="$(core_ticks "$LOAD_CPU")"
    t0="$(now)"
    "$@"
    t1="$(now)"
    l1="$(core_ticks "$LOAD_CPU")"
    busy_share "$l0" "$l1" >"$results/load-$peer-$name-$round.txt"
    if [ -n "$pid" ]; then
        c1="$(cpu_ticks "$pid")"
        awk -v a="$c0" -v b="$c1" -v t="$clk_tck" -v s="$t0" -v e="$t1" \
            'BEGIN { printf "%.3f %.3f\n", (b - a) / t, e - s }' >"$results/cpu-$peer-$name-$round.txt"
        alive "$peer" "$pid"
    fi
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
        # Self time per symbol, and inclusive time (what each function costs with its callees).
        perf report --stdio --no-children -g none --sort dso,sym -i "$perf_dir/perf-$name.data" \
            >"$perf_dir/report-$name.txt" 2>/dev/null || true
        perf report --stdio --children -g none --sort sym --percent-limit 1 -i "$perf_dir/perf-$name.data" \
            2>/dev/null | grep -v '(inlined)' >"$perf_dir/report-$name-children.txt" || true
    fi
}

iperf_run() {
    local peer=$1 dir=$2 round=$3 flag=""
    [ "$dir" = rev ] && flag="-R"
    local out="$results/iperf-$peer-$dir-$round.json"
    # shellcheck disable=SC2086
    measure "$peer" "$dir" "$round" taskset -c "$LOAD_CPU" \
        iperf3 -c "$(target_of "$peer")" -p 5201 -t "$SECONDS_PER_RUN" -P 1 $flag -J >"$out" \
        || { echo "l4 bench: iperf3 through $peer failed:" >&2; tail -n 5 "$out" >&2; exit 1; }
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("  %-8s %-3s %6.2f Gbit/s" % (sys.argv[2], sys.argv[3], d["end"]["sum_received"]["bits_per_second"]/1e9))' \
        "$out" "$peer" "$dir"
}

wrk_run() {
    local peer=$1 round=$2 url out
    url="$(http_of "$peer")"
    out="$results/wrk-$peer-$round.txt"
    taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${WARMUP_SECONDS}s" -H 'Connection: close' "$url" >/dev/null
    measure "$peer" wrk "$round" taskset -c "$LOAD_CPU" \
        wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" --latency -H 'Connection: close' "$url" >"$out"
    awk -v p="$peer" '/Requests\/sec/ { r = $2 } /^ +50%/ { a = $2 } /^ +99%/ { b = $2 }
        END { printf "  %-8s %8.0f req/s  p50 %s  p99 %s\n", p, r, a, b }' "$out"
}

# Peers in rotating order (round_start in bench/lib.sh).
for round in $(seq "$ROUNDS"); do
    round_start "$round"
    echo "-- 1. one TCP stream: iperf3 -P 1 -t $SECONDS_PER_RUN (fwd: client sends; rev: -R) --"
    for dir in fwd rev; do
        for peer in "${order[@]}"; do
            iperf_run "$peer" "$dir" "$round"
        done
    done
    echo "-- 2. new connection per request: wrk -t1 -c32 -d${SECONDS_PER_RUN}s --latency -H 'Connection: close' --"
    for peer in "${order[@]}"; do
        wrk_run "$peer" "$round"
    done
done

echo
python3 "$here/report.py" "$results" "$ROUNDS" "${PEERS[@]}"
if [ -n "${PORTICO_BENCH_PERF:-}" ]; then
    echo
    echo "perf data and reports of Portico (round 1): $PORTICO_BENCH_PERF (report-{fwd,rev,wrk}*.txt)"
fi
