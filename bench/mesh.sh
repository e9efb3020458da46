#!/usr/bin/env bash
# Mesh benchmark: what the service mesh's node proxy (`portico run`'s mesh, in the shape of
# Istio ambient's ztunnel) costs, in a lab of network namespaces (`portico lab`, root only).
#
# One 3-node lab runs bench/mesh/lab.yaml: the same workload twice side by side, in namespace
# `meshed` (label portico.dev/mesh: enabled, an AuthorizationPolicy allowing the client's
# identity) and in namespace `plain` (no mesh). In each, an echo server Pod (Deployment
# `server`, one replica) on lab-node-2 and its Service, and a `client` Pod on lab-node-1,
# inside which bench/mesh/load.py runs (`portico lab exec pod/NS/client`). lab-node-3 has no
# Pod. So both runs cross the same nodes, agents and links: meshed, the client's connections
# are captured in its namespace, tunnelled (HTTP/2 CONNECT over mutual TLS 1.3) by lab-node-1's
# agent to lab-node-2's, which decides the policy and connects to the server; plain, they are
# routed by the kernel (and, to the ClusterIP, DNATed by lab-node-1's nftables rules).
#
# The load, as Istio's benchmark sends it with fortio (HTTP/1.1, 1 kB payload, 1,000
# requests/s, 16 client connections): load.py, open loop at a fixed RATE over CONNECTIONS
# kept-alive connections, POST / with a 1 kB body, each latency taken from the request's
# scheduled send time (no coordinated omission); WARMUP seconds not counted, then SECONDS
# measured. Targets: the server Pod's IP (:8080) and the Service's ClusterIP (:80; meshed, the
# client's proxy picks the endpoint). Per round, for each target, a plain and a meshed run
# (their order alternating from round to round); before the first round, one unmeasured run of
# each mode, so that the tunnel between the proxies and every cache are warm. Before each
# run the machine must be idle (this machine is shared): the script waits up to
# PORTICO_BENCH_IDLE_WAIT seconds for its cores to be less than 30 % busy, then runs anyway
# and says how busy it was.
#
# Measured, per run: p50/p90/p99/p99.9/max and errors; over the measured window exactly, the
# user+system CPU of the three node agents (/proc/PID/stat of the `portico run` processes, all
# threads) divided by the requests; after the runs, the agents' VmRSS and VmHWM (and right after
# `lab up`). Reported: the latency pooled over the rounds, the added latency (meshed minus
# plain) against ztunnel's published +0.17 ms p90 / +0.20 ms p99, the agents' CPU per request
# (plain, meshed and the difference, the mesh's work) and as a share of a core at RATE against
# ztunnel's 0.06 vCPU, the agents' RSS with meshed Pods (lab-node-1, -2) and without
# (lab-node-3) against ztunnel's 12 MB. ztunnel's and Linkerd's proxies cannot be installed on
# this machine (no package in the registries it reaches): their figures are the published ones.
#
# Each run is checked: at least 99 % answered 2xx, at most 1 % errors, every answer from
# server-0, and, from lab-node-2's agent's metrics, that a meshed run opened at least
# CONNECTIONS tunnel streams there and a plain run none (so each measured what it says), and
# no denial. The script fails when a check fails or something does not run; a missed target is
# only reported.
#
# Usage (as root): bench/mesh.sh
#   PORTICO_BENCH_ROUNDS=2        rounds (default 2); latencies are pooled over them
#   PORTICO_BENCH_SECONDS=20      measured seconds per run (default 20)
#   PORTICO_BENCH_WARMUP=3        seconds of each run not counted (default 3)
#   PORTICO_BENCH_RATE=1000       requests per second (default 1000)
#   PORTICO_BENCH_CONNECTIONS=16  kept-alive connections (default 16, as Istio's benchmark)
#   PORTICO_BENCH_TARGETS="pod service"  which addresses (default both)
#   PORTICO_BENCH_IDLE_WAIT=120   seconds to wait for an idle machine before each run
#   PORTICO_BENCH_BIN=FILE        measure this portico binary; no cargo build
#   PORTICO_BENCH_KEEP=DIR        keep the raw results (every latency) and the agents' logs
#   PORTICO_BENCH_QUICKACK=1      a diagnostic: every Pod's default route gets `quickack 1`
#                                 (no delayed ACKs in the Pods' namespaces, where the proxies'
#                                 sockets are), to tell a Nagle / delayed-ACK wait from the
#                                 proxies' own work; not how the product runs
#
# NETWORK SAFETY: every packet is sent inside the lab's namespaces, through `portico lab
# exec`, to the lab's own 198.18.0.0/15 (the script checks the addresses); the host's own
# namespace sends nothing. The lab has a prefix of its own (pbm<pid>-), and the EXIT trap
# takes it down, also on failure or Ctrl-C.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/mesh"
bench_name="mesh bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

[ "$(id -u)" = 0 ] || { echo "$bench_name: the lab needs root (sudo bench/mesh.sh)" >&2; exit 1; }

ROUNDS="${PORTICO_BENCH_ROUNDS:-2}"
SECONDS_PER_RUN="${PORTICO_BENCH_SECONDS:-20}"
WARMUP="${PORTICO_BENCH_WARMUP:-3}"
RATE="${PORTICO_BENCH_RATE:-1000}"
CONNECTIONS="${PORTICO_BENCH_CONNECTIONS:-16}"
IDLE_WAIT="${PORTICO_BENCH_IDLE_WAIT:-120}"
QUICKACK="${PORTICO_BENCH_QUICKACK:-0}"
[[ "$QUICKACK" == 0 || "$QUICKACK" == 1 ]] || { echo "$bench_name: PORTICO_BENCH_QUICKACK takes 0 or 1" >&2; exit 2; }
whole_numbers "PORTICO_BENCH_ROUNDS, _SECONDS, _WARMUP, _RATE, _CONNECTIONS and _IDLE_WAIT take a whole number >= 1" \
    "$ROUNDS" "$SECONDS_PER_RUN" "$WARMUP" "$RATE" "$CONNECTIONS" "$IDLE_WAIT"
read -r -a TARGETS <<<"${PORTICO_BENCH_TARGETS:-pod service}"
for t in "${TARGETS[@]}"; do
    [[ "$t" == pod || "$t" == service ]] || { echo "$bench_name: PORTICO_BENCH_TARGETS takes pod and/or service" >&2; exit 2; }
done
[ "${#TARGETS[@]}" -ge 1 ] || { echo "$bench_name: PORTICO_BENCH_TARGETS is empty" >&2; exit 2; }
BODY=1024
# Busier than this share of the machine's cores before a run, and the script waits.
IDLE_MAX=0.30

# --- tools and build ---------------------------------------------------------------------
require_tools ip python3 awk
build_portico
[ -x "$portico" ] || { echo "$bench_name: no portico binary at $portico" >&2; exit 1; }
"$portico" lab --help >/dev/null 2>&1 || { echo "$bench_name: $portico has no 'lab' command" >&2; exit 1; }
"$portico" run --help 2>/dev/null | grep -q -- '--pod-netns' \
    || { echo "$bench_name: $portico has no mesh (no 'run --pod-netns'); build a newer one" >&2; exit 1; }

# --- the lab and cleanup -----------------------------------------------------------------
make_tmp portico-mesh
prefix="pbm$(($$ % 100000))-"
lab_is_up=""
mkdir -p "$tmp/manifests"
cp "$here/lab.yaml" "$tmp/manifests/lab.yaml"

# lab_state: the lab's state folder (its logs are under logs/).
lab_state() { echo "/run/portico-lab/${prefix%-}"; }
# left_namespaces: the namespaces whose names start with the lab's prefix.
left_namespaces() { ip netns list | awk -v p="$prefix" 'index($1, p) == 1 { print $1 }'; }

# lab_down: `lab down`, keeping the agents' logs first when asked; fails when a namespace is left.
lab_down() {
    local left
    if [ -n "${PORTICO_BENCH_KEEP:-}" ] && [ -d "$(lab_state)/logs" ]; then
        mkdir -p "$results/logs"
        cp "$(lab_state)"/logs/*.log "$results/logs/" 2>/dev/null || true
    fi
    "$portico" lab --prefix "$prefix" down >/dev/null 2>&1 || true
    lab_is_up=""
    left="$(left_namespaces)"
    if [ -n "$left" ]; then
        echo "$bench_name: lab down left namespaces: $left" >&2
        return 1
    fi
}

# mesh_cleanup: the EXIT trap: the lab down (also on failure, also when `lab up` failed half
# way), then lib.sh's cleanup.
mesh_cleanup() {
    local status=$?
    set +e
    if [ -n "$lab_is_up" ] || [ -n "$(left_namespaces)" ]; then
        lab_down || status=1
    fi
    (exit "$status")
    cleanup
}
trap mesh_cleanup EXIT

# in_lab TARGET CMD...: CMD in the lab's namespace TARGET.
in_lab() {
    local target=$1
    shift
    "$portico" lab --prefix "$prefix" exec "$target" -- "$@"
}
# admin NODE PATH: the probe's output of NODE's agent's http://127.0.0.1:9650/PATH.
admin() { in_lab "node/$1" "$portico" lab probe --timeout 2s http "http://127.0.0.1:9650/$2"; }
# metric NODE NAME TEXT...: the sum of NODE's agent's samples NAME whose line holds every TEXT.
metric() {
    local node=$1
    shift
    admin "$node" metrics | python3 "$here/report.py" metric "$@"
}
# agent_pid N: the pid of lab-node-N's agent (the `portico run` process in its namespace).
agent_pid() {
    local p found=""
    for p in $(ip netns pids "${prefix}node-$1"); do
        if [[ "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" == *" run "*"--node-name lab-node-$1 "* ]]; then
            [ -z "$found" ] || { echo "$bench_name: two agents in ${prefix}node-$1: $found $p" >&2; exit 1; }
            found=$p
        fi
    done
    [ -n "$found" ] || { echo "$bench_name: no agent process in ${prefix}node-$1" >&2; exit 1; }
    echo "$found"
}
# pod_pid NS NAME: the echo process of Pod NS/NAME.
pod_pid() {
    local p
    p="$(ip netns pids "${prefix}pod-$1-$2" | head -n 1)"
    [ -n "$p" ] || { echo "$bench_name: no process in ${prefix}pod-$1-$2" >&2; exit 1; }
    echo "$p"
}
# rss_of PID: "VmHWM:VmRSS:RssAnon:RssFile" in kB.
rss_of() {
    awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 }
        END { print h ":" r ":" a ":" f }' "/proc/$1/status"
}
# record_memory STAGE: the three agents' RSS into results/memory.json.
record_memory() {
    python3 "$here/report.py" memory "$results/memory.json" "$1" \
        "n1=$(rss_of "${agents[1]}")" "n2=$(rss_of "${agents[2]}")" "n3=$(rss_of "${agents[3]}")"
}
# busy_cores: how many of the machine's cores were busy over the next second (/proc/stat).
busy_cores() {
    local a b
    a="$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat)"
    sleep 1
    b="$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat)"
    awk -v a="$a" -v b="$b" -v n="$(nproc --all)" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
        printf "%.2f\n", (t > 0 ? n * (y[1] - x[1]) / t : 0) }'
}
# wait_idle: waits (IDLE_WAIT seconds at most) until the machine is less than IDLE_MAX busy;
# sets $idle_busy to the last reading, in cores.
wait_idle() {
    local waited=0 warned=""
    while :; do
        idle_busy="$(busy_cores)"
        awk -v b="$idle_busy" -v m="$IDLE_MAX" -v n="$(nproc --all)" 'BEGIN { exit !(b < m * n) }' && return 0
        if [ "$waited" -ge "$IDLE_WAIT" ]; then
            echo "    (the machine stayed busy, $idle_busy cores, for ${IDLE_WAIT} s: measuring anyway)"
            return 0
        fi
        if [ -z "$warned" ]; then
            echo "    (the machine is busy, $idle_busy cores in use by other work: waiting up to ${IDLE_WAIT} s)"
            warned=1
        fi
        waited=$((waited + 1))
    done
}

# one_run ROUND TARGET MODE [unmeasured]: load.py in MODE's client Pod at TARGET's address;
# results/run-ROUND-TARGET-MODE.json and lat-ROUND-TARGET-MODE.txt, checked, and a line.
one_run() {
    local round=$1 target=$2 mode=$3 addr stem before after denied_before denied_after warmup=$WARMUP duration=$SECONDS_PER_RUN
    if [ "$target" = pod ]; then addr="${pod_ip[$mode]}:8080"; else addr="${cluster_ip[$mode]}:80"; fi
    stem="$round-$target-$mode"
    if [ "${4:-}" = unmeasured ]; then duration=5 warmup=1; fi
    wait_idle
    before="$(metric lab-node-2 portico_mesh_tcp_connections_opened_total 'reporter="destination"')"
    denied_before="$(metric lab-node-2 portico_mesh_denied_total)"
    if ! in_lab "pod/$mode/client" python3 "$here/load.py" --target "$addr" --rate "$RATE" \
        --connections "$CONNECTIONS" --warmup "$warmup" --duration "$duration" --body "$BODY" \
        --watch "n1=${agents[1]},n2=${agents[2]},n3=${agents[3]},echo=${echo_pid[$mode]}" \
        --latencies "$results/lat-$stem.txt" >"$results/run-$stem.json"; then
        echo "$bench_name: load.py failed in pod/$mode/client:" >&2
        cat "$results/run-$stem.json" >&2
        exit 1
    fi
    after="$(metric lab-node-2 portico_mesh_tcp_connections_opened_total 'reporter="destination"')"
    denied_after="$(metric lab-node-2 portico_mesh_denied_total)"
    python3 "$here/report.py" record "$results/run-$stem.json" "idle_busy=$idle_busy" \
        "tunnel_streams=$((after - before))" "denied=$((denied_after - denied_before))"
    python3 "$here/report.py" check "$results/run-$stem.json" "$mode" "$CONNECTIONS"
    printf "  %-8s %-7s %-6s %s\n" "${4:-round $round}" "$target" "$mode" "$(python3 "$here/report.py" line "$results/run-$stem.json")"
    if [ "${4:-}" = unmeasured ]; then rm -f "$results/run-$stem.json" "$results/lat-$stem.txt"; fi
}

echo
banner "Mesh benchmark"
echo "portico $(portico_version); a 3-node lab (prefix $prefix), bench/mesh/lab.yaml: namespaces meshed and plain side by side"
echo "load: bench/mesh/load.py in pod/NS/client (lab-node-1) to server-0 (lab-node-2): $RATE req/s open loop, $CONNECTIONS kept-alive"
echo "HTTP/1.1 connections, POST of $BODY bytes; ${WARMUP} s warm-up, ${SECONDS_PER_RUN} s measured; $ROUNDS round(s); targets: ${TARGETS[*]}"
echo

lab_is_up=1
if ! "$portico" lab --prefix "$prefix" up --manifests "$tmp/manifests" --nodes 3 --nft-sync-period 1h >"$tmp/up.log" 2>&1; then
    echo "$bench_name: lab up failed:" >&2
    tail -n 20 "$tmp/up.log" >&2
    exit 1
fi
grep -m1 "is up" "$tmp/up.log" | sed 's/^/  /'
for node in lab-node-1 lab-node-2; do
    ready=""
    for _ in $(seq 50); do
        if admin "$node" readyz 2>/dev/null | grep -q "mesh: ready"; then ready=1; break; fi
        sleep 0.2
    done
    [ -n "$ready" ] || { echo "$bench_name: $node's agent never said 'mesh: ready':" >&2; admin "$node" readyz >&2 || true; exit 1; }
done
# (Each command substitution is a plain assignment of its own, so that set -e sees it fail.)
addresses="$(admin lab-node-1 plan | python3 "$here/report.py" addresses)"
read -r meshed_pod meshed_svc plain_pod plain_svc <<<"$addresses"
[ -n "$plain_svc" ] || { echo "$bench_name: no addresses in lab-node-1's Plan" >&2; exit 1; }
declare -A pod_ip=([meshed]="$meshed_pod" [plain]="$plain_pod")
declare -A cluster_ip=([meshed]="$meshed_svc" [plain]="$plain_svc")
meshed_echo="$(pod_pid meshed server-0)"
plain_echo="$(pod_pid plain server-0)"
declare -A echo_pid=([meshed]="$meshed_echo" [plain]="$plain_echo")
agent1="$(agent_pid 1)"
agent2="$(agent_pid 2)"
agent3="$(agent_pid 3)"
agents=("" "$agent1" "$agent2" "$agent3")
echo "  server-0: meshed $meshed_pod (ClusterIP $meshed_svc), plain $plain_pod (ClusterIP $plain_svc); agents' pids ${agents[*]:1}"
record_memory up
if [ "$QUICKACK" = 1 ]; then
    # A diagnostic, not the product: every Pod's default route without delayed ACKs, so that a
    # sender's Nagle wait (a small write held until the previous one is ACKed) ends within a
    # round trip instead of when the peer next has data to piggyback the ACK on.
    for pod in meshed/client meshed/server-0 plain/client plain/server-0; do
        route="$(in_lab "pod/$pod" ip -4 route show default | head -n 1)"
        [ -n "$route" ] || { echo "$bench_name: pod/$pod has no default route" >&2; exit 1; }
        # shellcheck disable=SC2086
        in_lab "pod/$pod" ip -4 route replace $route quickack 1
    done
    echo "  PORTICO_BENCH_QUICKACK=1: every Pod's IPv4 default route has 'quickack 1' (no delayed ACKs): a diagnostic"
fi
echo

echo "unmeasured runs first (5 s each), so that the tunnel and the caches are warm:"
for mode in plain meshed; do one_run 0 "${TARGETS[0]}" "$mode" unmeasured; done
echo "runs (latency ms from the scheduled send time; agents' CPU per request in us):"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then modes=(plain meshed); else modes=(meshed plain); fi
    for target in "${TARGETS[@]}"; do
        for mode in "${modes[@]}"; do
            one_run "$round" "$target" "$mode"
        done
    done
done
for n in 1 2 3; do
    kill -0 "${agents[$n]}" 2>/dev/null || { echo "$bench_name: lab-node-$n's agent exited during the runs" >&2; exit 1; }
done
record_memory end

lab_down
echo "  lab down; ip netns list shows no namespace of ${prefix}*"
echo
python3 "$here/report.py" report "$results" "$ROUNDS" "${TARGETS[*]}"
