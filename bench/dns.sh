#!/usr/bin/env bash
# Cluster DNS benchmark: Portico's DNS server answering for 10,000 Services against unbound
# and Knot DNS serving the same records as a static zone, side by side, on one machine, over
# loopback only.
#
# Names (bench/dns/gen.py writes every server's data from one list): 10,000 ClusterIP
# Services svc-00000 ... svc-09999 over 10 namespaces ns-00 ... ns-09, each with an explicit
# spec.clusterIP in 127.112.0.0/16 (passed to Portico as --service-cidr) and one port `http`
# 80 -> 8080, plus one EndpointSlice per Service with 5 ready endpoints in 127.113.0.0/16:
# 50,000 endpoints in all, for the memory figure. The A record of
# `svc-NNNNN.ns-KK.svc.cluster.local` is the Service's ClusterIP, TTL 5. unbound and Knot get
# the same 10,000 A records (TTL 5) as the zone `cluster.local`; dnsperf gets the 10,000
# names x type A, in Service order, the same file for every server.
#
# Servers (each on port 53, UDP and TCP):
#   portico  127.0.0.2   `portico run --manifests DIR --service-cidr 127.112.0.0/16 --dns
#                        127.0.0.2:53 --dns-upstream 127.0.0.1:9 --access-log off ...`,
#                        TOKIO_WORKER_THREADS=1; the upstream is a loopback port where nothing
#                        listens, so no query can leave the host (only cluster names are asked)
#   unbound  127.0.0.3   unbound -d, num-threads 1, `local-zone: "cluster.local." static` with
#                        10,000 local-data lines (bench/dns/unbound.conf.in); `.` forwarded to
#                        127.0.0.1:9 for the same reason
#   knot     127.0.0.4   knotd, udp-workers 1, tcp-workers 1, background-workers 1, the zone
#                        file cluster.local.zone: SOA, NS and the 10,000 A records
#                        (bench/dns/knot.conf.in); authoritative only, it never recurses
# The server under test is pinned to core 1, dnsperf to core 0. knotd pins its UDP worker to
# a core of its own choosing (core 0 here), so once the servers listen every thread of each is
# pinned again with `taskset -a -p`, and checked after every run. Before anything is timed:
# `portico check` must accept the manifests without an error; every server must answer three
# sample names (first, middle, last Service) with exactly the expected A record and TTL 5, and
# NXDOMAIN for a name that does not exist in the zone, so that real records, not a wildcard,
# are measured. After all the runs, Portico's /plan must hold the 10,000 Services with their
# ClusterIPs and 50,000 ready endpoints (fetched last: encoding it would inflate Portico's RSS).
#
#  1. Throughput: after a 2 s warm-up, `dnsperf -s ADDR -p 53 -d queries.txt -l 30 -c 8
#     -q 100` (no -Q: as fast as the server answers): queries/s, average latency and its
#     standard deviation, lost queries. 100 in flight keep the server's core 90-100 % busy;
#     -q 500 adds nothing but a burst at the start that overflows the server's socket buffer
#     (about 300 queries lost, each holding its slot for dnsperf's 5 s timeout). dnsperf itself
#     tops out at about 200,000 q/s on one core here: a server whose core is not busy was not
#     the limit (the report marks it), and its CPU us per query is the better comparison.
#  2. Latency at a fixed rate: `dnsperf ... -l 10 -c 8 -q 20 -Q 50000 -v` (10 s, or
#     PORTICO_BENCH_SECONDS when shorter): p50, p90, p99, p99.9 and max from the per-query
#     latencies -v prints (dnsperf 2.10 has no histogram of its own). 50,000 q/s saturates no
#     server here; -q 20 bounds the burst with which dnsperf catches up after a stall.
#
# For each server and run: the server's CPU (user + system of its processes, from /proc, as a
# share of one core), how busy core 1 was (softirq of the loopback traffic included), CPU µs
# per query, and memory: VmHWM summed over its processes, reset just before each measured run
# (`5` into /proc/PID/clear_refs) and read right after it (the run's peak), plus VmRSS once the
# server is ready and VmHWM then (the start-up peak: loading, planning). Then the ratios
# Portico / unbound and Portico / knot, and a verdict against the targets: Portico's queries/s
# above unbound's and at least 0.8x knot's, in the same run; Portico's peak RSS during the
# runs, with the 10,000 Services and 50,000 endpoints loaded, under 100 MiB (its start-up peak
# is printed beside it, outside the verdict).
#
# Never fails on a missed target. Fails (non-zero) when something does not run or a run is
# invalid: a tool is missing, an address is taken, a server does not answer the expected
# records, dnsperf loses more than 0.1 % of its queries, gets any answer other than NOERROR,
# or completes none. Portico not serving (no DNS flags in `portico run --help`, manifests
# rejected, not ready, no or wrong DNS answer, an invalid run, a wrong plan) is printed
# loudly; unbound and knot are measured anyway and the script exits 1 at the end.
#
# Usage: bench/dns.sh                          (from any folder; as root to install what is missing:
#                                               Debian packages dnsperf unbound knot bind9-dnsutils)
#        PORTICO_BENCH_SECONDS=10 bench/dns.sh (length of each throughput run; default 30)
#        PORTICO_BENCH_ROUNDS=3 bench/dns.sh   (repeat every run, servers in rotating order, and
#                                               report medians; default 1)
#        PORTICO_BENCH_KEEP=DIR bench/dns.sh   (keep dnsperf's outputs, the latency summaries,
#                                               configurations, manifests and logs in DIR)
#        PORTICO_BENCH_BIN=FILE bench/dns.sh   (measure this portico binary; no cargo build)
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/dns"
bench_name="dns bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

PORTICO_BENCH_SECONDS="${PORTICO_BENCH_SECONDS:-30}"
runs_and_rounds
WARMUP_SECONDS=2
CLIENTS=8
# Queries in flight at most: 100 in the throughput runs (enough to keep the server's core busy;
# more only adds a burst at the start that overflows the server's 208 KiB socket buffer, and
# every query lost there holds its slot for dnsperf's 5 s timeout), 20 at the fixed rate (which
# bounds the burst with which dnsperf catches up after a stall of its own).
OUTSTANDING=100
LAT_OUTSTANDING=20
LAT_RATE=50000
LAT_SECONDS=$((SECONDS_PER_RUN < 10 ? SECONDS_PER_RUN : 10))
ADMIN=127.0.0.1:19653
INGRESS_HTTP=127.0.0.1:18082
INGRESS_HTTPS=127.0.0.1:18445
DNS_UPSTREAM=127.0.0.1:9
DNS_PORT=53
declare -A PEER_IP=([portico]=127.0.0.2 [unbound]=127.0.0.3 [knot]=127.0.0.4)
PEERS=(portico unbound knot)

pick_cpus

# --- tools -------------------------------------------------------------------------------
require_tools curl taskset python3 ss
install_missing dnsperf unbound knotd:knot dig:bind9-dnsutils

# --- build -------------------------------------------------------------------------------
build_portico

# --- processes and cleanup ---------------------------------------------------------------
make_tmp portico-dns
# PORTICO_BENCH_KEEP also keeps every server's configuration, manifests and logs.
KEEP_DIRS=(portico unbound knot)

# Portico not serving does not stop the benchmark (portico_down in bench/lib.sh):
# unbound and knot are measured anyway.
PORTICO_DOWN_OTHERS="unbound and knot are"
peer_down() { spare_portico "$@"; }


ensure_free "${ADMIN%:*}" "${ADMIN##*:}"
ensure_free "${INGRESS_HTTP%:*}" "${INGRESS_HTTP##*:}"
ensure_free "${INGRESS_HTTPS%:*}" "${INGRESS_HTTPS##*:}"
for peer in "${PEERS[@]}"; do
    ensure_free "${PEER_IP[$peer]}" "$DNS_PORT"
    ensure_free "${PEER_IP[$peer]}" "$DNS_PORT" udp
done

# --- data: manifests, zones, configurations, queries --------------------------------------
python3 "$here/gen.py" "$tmp" --unbound "${PEER_IP[unbound]}" --knot "${PEER_IP[knot]}"
read -r N_SERVICES N_ENDPOINTS N_NAMESPACES SERVICE_CIDR <"$tmp/scenario.txt"
mkdir -p "$tmp/portico/state"
# Portico serves every ClusterIP on port 80: the first one must be free (the others are in the
# same CIDR of our own).
ensure_free "$(awk 'NR == 1 { print $2 }' "$tmp/samples.txt")" 80

# --- Portico: flags and manifests ---------------------------------------------------------
if [ ! -x "$portico" ] || ! "$portico" run --help >"$tmp/portico-help.txt" 2>&1; then
    portico_down "$portico does not exist or has no 'run' command"
else
    flags_missing=()
    for flag in --dns --dns-upstream --access-log --service-cidr; do
        grep -qE -- "(^|[[:space:]])$flag([[:space:]]|$)" "$tmp/portico-help.txt" || flags_missing+=("$flag")
    done
    if [ "${#flags_missing[@]}" -gt 0 ]; then
        portico_down "\`portico run --help\` has no ${flags_missing[*]} (is the cluster DNS work merged?)"
    fi
fi
if [ -z "$portico_reason" ]; then
    check_status=0
    "$portico" check --service-cidr "$SERVICE_CIDR" "$tmp/portico/manifests" >"$tmp/portico-check.log" 2>&1 \
        || check_status=$?
    if [ "$check_status" -ne 0 ] || ! grep -q '^0 errors' "$tmp/portico-check.log"; then
        head -n 20 "$tmp/portico-check.log" >&2
        portico_down "\`portico check\` rejects the manifests (exit $check_status): $(head -n 1 "$tmp/portico-check.log")"
    else
        echo "portico check: $(tail -n 1 "$tmp/portico-check.log")"
    fi
fi

# --- servers, core $PROXY_CPU --------------------------------------------------------------
spawn unbound "$PROXY_CPU" unbound -d -c "$tmp/unbound/unbound.conf"
unbound_pid=$!
spawn knot "$PROXY_CPU" knotd -c "$tmp/knot/knot.conf"
knot_pid=$!
if [ -z "$portico_reason" ]; then
    portico_t0="$(now)"
    TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" spawn portico "$PROXY_CPU" "$portico" run \
        --manifests "$tmp/portico/manifests" --state "$tmp/portico/state" --admin "$ADMIN" \
        --service-cidr "$SERVICE_CIDR" --dns "${PEER_IP[portico]}:$DNS_PORT" --dns-upstream "$DNS_UPSTREAM" \
        --access-log off --ingress-http "$INGRESS_HTTP" --ingress-https "$INGRESS_HTTPS" --drain 1s
    portico_pid=$!
fi

wait_listen unbound "$unbound_pid" "${PEER_IP[unbound]}" "$DNS_PORT"
wait_listen knot "$knot_pid" "${PEER_IP[knot]}" "$DNS_PORT"
if [ -z "$portico_reason" ]; then
    # When Portico exited meanwhile, it is down already and this second reason is dropped.
    if ! wait_ready "$portico_pid" "$ADMIN" 120; then
        portico_down "not ready after 120 s (http://$ADMIN/readyz)"
    else
        awk -v s="$portico_t0" -v e="$(now)" 'BEGIN { printf "%.2f\n", e - s }' >"$results/portico-ready-seconds.txt"
        wait_listen portico "$portico_pid" "${PEER_IP[portico]}" "$DNS_PORT" || true
    fi
fi

pid_of() {
    case "$1" in
        portico) echo "$portico_pid" ;;
        unbound) echo "$unbound_pid" ;;
        knot) echo "$knot_pid" ;;
    esac
}

# pinned PID: true when every thread of PID may run on core $PROXY_CPU only.
pinned() {
    local status
    for status in /proc/"$1"/task/*/status; do
        [ "$(awk '/^Cpus_allowed_list:/ { print $2 }' "$status" 2>/dev/null)" = "$PROXY_CPU" ] || return 1
    done
}
# knotd pins each UDP worker to a core of its own choosing (worker number modulo the cores:
# worker 0 to core 0, dnsperf's), whatever taskset gave it; so every thread of every server is
# pinned again to core $PROXY_CPU once it listens, and checked after each run.
for peer in "${PEERS[@]}"; do
    serving "$peer" || continue
    taskset -a -p -c "$PROXY_CPU" "$(pid_of "$peer")" >/dev/null
    pinned "$(pid_of "$peer")" || invalid "$peer" "cannot pin all its threads to core $PROXY_CPU"
done

# --- every server answers the same records, and only those ---------------------------------
# dig_answer PEER NAME: "STATUS TTL ADDRESS..." of one A query over UDP ("none" when no answer).
dig_answer() {
    local out status
    out="$(dig +tries=1 +time=2 +norecurse +noall +comments +answer -p "$DNS_PORT" \
        "@${PEER_IP[$1]}" "$2" A 2>/dev/null)" || { echo none; return 0; }
    status="$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out")"
    echo "${status:-none} $(awk '$1 !~ /^;/ && $4 == "A" { printf "%s %s ", $2, $5 }' <<<"$out")"
}
# check_records PEER: the sample names answer their ClusterIP with TTL 5, a missing name
# NXDOMAIN. Waits up to 10 s for the first answer (a server may listen before its zone is in).
check_records() {
    local peer=$1 name ip got want problems=()
    read -r name ip <"$tmp/samples.txt"
    for _ in $(seq 100); do
        got="$(dig_answer "$peer" "$name")"
        [ "$got" = "NOERROR 5 $ip " ] && break
        sleep 0.1
    done
    while read -r name ip; do
        got="$(dig_answer "$peer" "$name")"
        want="NOERROR 5 $ip "
        [ "$got" = "$want" ] || problems+=("$name A: got '$got', want '$want'")
    done <"$tmp/samples.txt"
    name="nothing-here.ns-00.svc.cluster.local"
    got="$(dig_answer "$peer" "$name")"
    [ "$got" = "NXDOMAIN " ] || problems+=("$name A: got '$got', want NXDOMAIN")
    if [ "${#problems[@]}" -gt 0 ]; then
        printf '  %s\n' "${problems[@]}" >&2
        invalid "$peer" "does not answer the expected records: ${problems[0]}"
    fi
}
for peer in "${PEERS[@]}"; do
    if serving "$peer"; then check_records "$peer"; fi
done

# Memory once ready, before any load: VmRSS now and VmHWM since start (the start-up peak).
for peer in "${PEERS[@]}"; do
    serving "$peer" || continue
    tree_rss "$(pid_of "$peer")" >"$results/rss-$peer-ready.txt"
done

echo
banner "Cluster DNS benchmark"
if [ -z "$portico_reason" ]; then
    portico_line="portico $(portico_version) (TOKIO_WORKER_THREADS=1, ready after $(cat "$results/portico-ready-seconds.txt") s)"
else
    portico_line="portico NOT SERVING"
fi
echo "$portico_line, unbound $(unbound -V | awk 'NR == 1 { print $2 }') (num-threads 1),"
echo "  knot $(knotd -V | awk '{ print $NF }') (udp-workers 1, tcp-workers 1): core $PROXY_CPU"
echo "dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ { print $2 }'): core $LOAD_CPU"
echo "$N_SERVICES Services in $N_NAMESPACES namespaces, $N_ENDPOINTS endpoints; $N_SERVICES names x A;" \
    "runs of ${SECONDS_PER_RUN} s after a ${WARMUP_SECONDS} s warm-up, $ROUNDS round(s)"
echo

# measure PEER NAME ROUND CMD...: runs CMD, recording in cpu-PEER-NAME-ROUND.txt the CPU the
# server's processes used meanwhile, the run's wall time and how busy the server's core was
# ("cpu_seconds wall_seconds core_busy_share"), and in rss-PEER-NAME-ROUND.txt their memory
# (tree_rss), the peak being the run's own: tree_reset_peak just before CMD. Returns 1 when
# CMD fails or Portico went down meanwhile.
measure() {
    local peer=$1 name=$2 round=$3
    shift 3
    local pid t0 t1 c0 c1 k0 k1 status=0
    pid="$(pid_of "$peer")"
    tree_reset_peak "$pid"
    c0="$(tree_ticks "$pid")"
    k0="$(core_ticks "$PROXY_CPU")"
    t0="$(now)"
    "$@" || status=$?
    t1="$(now)"
    k1="$(core_ticks "$PROXY_CPU")"
    c1="$(tree_ticks "$pid")"
    alive "$peer" "$pid" || return 1
    pinned "$pid" || { invalid "$peer" "a thread left core $PROXY_CPU during the run"; return 1; }
    tree_rss "$pid" >"$results/rss-$peer-$name-$round.txt"
    awk -v a="$c0" -v b="$c1" -v t="$clk_tck" -v s="$t0" -v e="$t1" -v busy="$(busy_share "$k0" "$k1")" \
        'BEGIN { printf "%.3f %.3f %s\n", (b - a) / t, e - s, busy }' >"$results/cpu-$peer-$name-$round.txt"
    return "$status"
}

# dnsperf_to PEER ARGS...: dnsperf on core $LOAD_CPU against PEER with the query file.
dnsperf_to() {
    local peer=$1
    shift
    taskset -c "$LOAD_CPU" dnsperf -s "${PEER_IP[$peer]}" -p "$DNS_PORT" -d "$tmp/queries.txt" \
        -c "$CLIENTS" -O suppress=timeout "$@"
}

qps_run() {
    local peer=$1 round=$2
    local out="$results/qps-$peer-$round.txt"
    dnsperf_to "$peer" -q "$OUTSTANDING" -l "$WARMUP_SECONDS" >/dev/null 2>&1 || true
    measure "$peer" qps "$round" dnsperf_to "$peer" -q "$OUTSTANDING" -l "$SECONDS_PER_RUN" >"$out" 2>&1 ||
        { invalid "$peer" "dnsperf failed or the server exited ($out)"; return 0; }
    python3 "$here/report.py" line-qps "$peer" "$out" ||
        invalid "$peer" "throughput run invalid ($out)"
}

lat_run() {
    local peer=$1 round=$2
    local log="$tmp/lat-$peer-$round.log" out="$results/lat-$peer-$round.txt"
    measure "$peer" lat "$round" dnsperf_to "$peer" -q "$LAT_OUTSTANDING" -l "$LAT_SECONDS" -Q "$LAT_RATE" -v \
        >"$log" 2>&1 ||
        { invalid "$peer" "dnsperf failed or the server exited ($log)"; return 0; }
    python3 "$here/report.py" line-lat "$peer" "$log" "$out" ||
        invalid "$peer" "fixed-rate run invalid ($out)"
    rm -f "$log"
}

# Servers in rotating order (round_start in bench/lib.sh); in each round every throughput run
# comes before the fixed-rate runs.
for round in $(seq "$ROUNDS"); do
    round_start "$round"
    echo "-- 1. throughput: dnsperf -c $CLIENTS -q $OUTSTANDING -l $SECONDS_PER_RUN, $N_SERVICES names x A --"
    for peer in "${order[@]}"; do
        if serving "$peer"; then qps_run "$peer" "$round"; else echo "  $peer   NOT SERVING"; fi
    done
    echo "-- 2. latency at $LAT_RATE q/s: dnsperf -c $CLIENTS -q $LAT_OUTSTANDING -Q $LAT_RATE -l $LAT_SECONDS -v --"
    for peer in "${order[@]}"; do
        if serving "$peer"; then lat_run "$peer" "$round"; else echo "  $peer   NOT SERVING"; fi
    done
done

# Memory after all the runs (VmRSS: "RSS now").
for peer in "${PEERS[@]}"; do
    serving "$peer" || continue
    alive "$peer" "$(pid_of "$peer")" || continue
    tree_rss "$(pid_of "$peer")" >"$results/rss-$peer.txt"
done

# Portico served the whole scenario: every Service with its ClusterIP, every endpoint ready.
# Last, because encoding the plan as JSON makes Portico allocate.
if serving portico; then
    if ! curl -sf --max-time 30 "http://$ADMIN/plan" -o "$tmp/plan.json"; then
        invalid portico "no plan at http://$ADMIN/plan"
    elif ! python3 "$here/report.py" plan "$tmp/plan.json" "$N_SERVICES" "$N_ENDPOINTS" "$SERVICE_CIDR" \
        >"$results/portico-plan.txt"; then
        invalid portico "the served plan is not the scenario: $(cat "$results/portico-plan.txt")"
    fi
    rm -f "$tmp/plan.json"
fi

echo
status=0
python3 "$here/report.py" report "$results" "$ROUNDS" "$LAT_RATE" "${PEERS[@]}" || status=$?
finish_portico "$status" "unbound and knot"
