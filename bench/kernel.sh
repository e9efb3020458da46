#!/usr/bin/env bash
# Kernel data plane benchmark: Portico's node agent with `--proxy-mode nftables`, in labs of
# network namespaces (`portico lab`), at 1k / 10k / 30k Services, beside its peers.
#
# The agent writes its nftables rules one of two ways, `--nft-writer`: `netlink` (the default:
# nf_tables messages sent over netlink from the agent's process) or `nft` (the nft program fed
# a script, the former way). Parts 1 and 2 measure every writer of PORTICO_BENCH_WRITERS, each
# in labs of its own (`portico lab up --nft-writer W`), one writer after the other, and give
# the ratio nft / netlink; the targets are judged on netlink. Parts 3, 4 and 5 use netlink only.
#
#  1. Full sync: a 1-node lab with N Services x 10 endpoints (one Deployment of 10 echo Pods,
#     every Service selecting them), per writer: the agent's first (Cold) nftables sync from
#     its log, the time from `lab up` starting until the last ClusterIP answers a client Pod,
#     and the agent's RSS. Also at 100 Services (the baseline of parts 3 and 4). Target: Cold
#     sync at 10k under 1 s (netlink).
#  2. One Service added at 10k (else at the largest size run), in each writer's lab of that
#     size: a new file with one Service written into the lab's manifest folder, 5 times: the
#     agent's Diff sync of it, and the time from the write until the new ClusterIP answers
#     inside the client Pod. Target: sync under 20 ms (netlink). Beside it kube-proxy's
#     nftables mode, as reported (not measured here).
#  3. First-packet latency: TCP connect time from the client Pod to a ClusterIP, 2,000 fresh
#     connections, with 100 Services loaded and with the largest size (netlink labs). Target:
#     p50 at most 10 % above the baseline's (flat: no growth with the number of Services).
#  4. CPU per new TCP connection (connect, GET with `Connection: close`, read to the end,
#     close; wrk inside the client Pod), four peers: direct to a Pod IP, the kernel path
#     (nftables ClusterIP, netlink lab of 100 Services), Portico's userspace proxy (a second
#     lab, `--proxy-mode userspace`) and HAProxy (mode tcp, nbthread 1, in the client's node
#     namespace). The whole machine's CPU (user+nice+system+irq+softirq in /proc/stat) over
#     each run, per connection.
#  5. `lab up` of 3 nodes and 10 Pods (netlink). Target: under 5 s.
#
# Prints a table per part, ratios and a verdict against the targets. Never fails on a missed
# target; fails when something does not run or a run is invalid (a lab that does not come up,
# a ClusterIP that never answers, error diagnostics, wrk errors, namespaces left behind).
#
# Usage (as root): bench/kernel.sh
#   PORTICO_BENCH_SIZES="1000 10000 30000"  Service counts of part 1 (the default); part 2 runs
#                                           at 10000 when listed, else the largest; part 3
#                                           compares 100 with the largest
#   PORTICO_BENCH_WRITERS="netlink nft"     the agents' --nft-writer values parts 1 and 2
#                                           measure, in this order (the default); netlink must
#                                           be among them (parts 3-5 and the verdict use it)
#   PORTICO_BENCH_ROUNDS=3                  repeat parts 3, 4 and 5 (peers in rotating order),
#                                           report medians (default 1)
#   PORTICO_BENCH_SECONDS=2                 length of each wrk run in part 4 (default 2 s:
#                                           about 20,000 connections here)
#   PORTICO_BENCH_NFT_SYNC_PERIOD=1h        the agents' --nft-sync-period (full rewrites kept
#                                           out of the measurements)
#   PORTICO_BENCH_BIN=FILE                  measure this portico binary; no cargo build
#   PORTICO_BENCH_KEEP=DIR                  keep raw results, agent logs and configurations
#
# NETWORK SAFETY: every packet is sent inside the labs' namespaces, through `portico lab exec`,
# to 198.18.0.0/15 and 2001:db8::/32 only; the host's own namespace sends nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/kernel"
bench_name="kernel bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

[ "$(id -u)" = 0 ] || { echo "$bench_name: the labs need root" >&2; exit 1; }

PORTICO_BENCH_SECONDS="${PORTICO_BENCH_SECONDS:-2}"
runs_and_rounds
SIZES="${PORTICO_BENCH_SIZES:-1000 10000 30000}"
NFT_SYNC_PERIOD="${PORTICO_BENCH_NFT_SYNC_PERIOD:-1h}"
# shellcheck disable=SC2086
whole_numbers "PORTICO_BENCH_SIZES takes whole numbers >= 1" $SIZES
WRITERS="${PORTICO_BENCH_WRITERS:-netlink nft}"
# The writer of parts 3, 4 and 5 and of the verdict: the agent's default.
MAIN_WRITER=netlink
writers=()
for w in $WRITERS; do
    case "$w" in
        netlink | nft) ;;
        *) echo "$bench_name: PORTICO_BENCH_WRITERS takes netlink and nft, not '$w'" >&2; exit 2 ;;
    esac
    for x in ${writers[@]+"${writers[@]}"}; do
        [ "$x" != "$w" ] || { echo "$bench_name: PORTICO_BENCH_WRITERS names $w twice" >&2; exit 2; }
    done
    writers+=("$w")
done
[[ " ${writers[*]-} " == *" $MAIN_WRITER "* ]] \
    || { echo "$bench_name: PORTICO_BENCH_WRITERS must include $MAIN_WRITER (parts 3-5 and the verdict use it)" >&2; exit 2; }
BASE_SIZE=100
ADDITIONS=5
LATENCY_CONNECTIONS=2000
WARMUP_SECONDS=1
CONNTRACK_ROOM=150000
HAPROXY_ADDR=198.18.0.11
SMALL_IP=198.18.128.100
HAPROXY_PORT=18000
CLIENT=pod/bench/client
NODE=node/lab-node-1
PEERS=(direct kernel userspace haproxy)

largest=0
p2size=""
for n in $SIZES; do
    [ "$n" -gt "$largest" ] && largest=$n
    [ "$n" = 10000 ] && p2size=10000
done
[ -n "$p2size" ] || p2size=$largest

# --- tools and build ---------------------------------------------------------------------
require_tools ip nft conntrack python3 ss
install_missing haproxy wrk
build_portico
"$portico" lab --help >/dev/null 2>&1 || { echo "$bench_name: $portico has no 'lab' command" >&2; exit 1; }
# The interpreter itself, not a version manager's shim: it starts in every Pod namespace.
py="$(python3 -c 'import sys; print(sys.executable)')"

# --- labs and cleanup --------------------------------------------------------------------
make_tmp portico-kernel
KEEP_DIRS=(haproxy)
tag="pbk$(($$ % 100000))"
labs=()

# lab_prefix NAME [WRITER]: the namespace prefix of this run's lab NAME (of WRITER's agents:
# its short code appended, "nl" or "nft"); `portico lab` takes 1-20 characters.
lab_prefix() {
    local p="$tag-$1"
    case "${2:-}" in
        netlink) p="${p}nl" ;;
        nft) p="${p}nft" ;;
    esac
    p="$p-"
    [[ ${#p} -le 20 && "$p" =~ ^[a-z0-9-]+-$ ]] || { echo "$bench_name: lab prefix '$p' is too long or malformed" >&2; exit 1; }
    echo "$p"
}
# lab_state PREFIX: the lab's state folder (its logs are under logs/).
lab_state() { echo "/run/portico-lab/${1%-}"; }
# left_namespaces PREFIX: the namespaces of the lab still there.
left_namespaces() { ip netns list | awk -v p="$1" 'index($1, p) == 1 { print $1 }'; }

# lab_down PREFIX: `lab down`, keeping the agents' logs first when asked; fails when a
# namespace is left.
lab_down() {
    local prefix=$1
    if [ -n "${PORTICO_BENCH_KEEP:-}" ] && [ -d "$(lab_state "$prefix")/logs" ]; then
        mkdir -p "$results/logs-${prefix%-}"
        cp "$(lab_state "$prefix")"/logs/lab-node-*.log "$results/logs-${prefix%-}/" 2>/dev/null || true
    fi
    "$portico" lab --prefix "$prefix" down >/dev/null 2>&1 || true
    local left
    left="$(left_namespaces "$prefix")"
    if [ -n "$left" ]; then
        echo "$bench_name: lab down left namespaces: $left" >&2
        return 1
    fi
    local kept=()
    for p in "${labs[@]}"; do [ "$p" = "$prefix" ] || kept+=("$p"); done
    labs=(${kept[@]+"${kept[@]}"})
}

# kernel_cleanup: the EXIT trap: every lab of this run down (also on failure), then lib.sh's
# cleanup with the script's status.
kernel_cleanup() {
    local status=$? prefix
    set +e
    for prefix in ${labs[@]+"${labs[@]}"}; do
        lab_down "$prefix" || status=1
    done
    (exit "$status")
    cleanup
}
trap kernel_cleanup EXIT

# lab_up PREFIX MANIFESTS NODES MODE WRITER [patient]: `portico lab up`, its agents with
# --nft-writer WRITER; its output in $tmp/up-PREFIX.log. With `patient`, `lab up` giving up on
# an agent that is not ready within its 30 s is reported and the lab measured anyway (the agent
# goes on with its first sync).
lab_up() {
    local prefix=$1
    labs+=("$prefix")
    if ! "$portico" lab --prefix "$prefix" up --manifests "$2" --nodes "$3" --proxy-mode "$4" \
        --nft-writer "$5" --nft-sync-period "$NFT_SYNC_PERIOD" >"$tmp/up-$prefix.log" 2>&1; then
        if [ "${6:-}" = patient ] && grep -q 'not ready after' "$tmp/up-$prefix.log" \
            && [ -f "$(lab_state "$prefix")/lab.json" ]; then
            echo "  !! lab up $prefix gave up: $(grep -m 1 'not ready after' "$tmp/up-$prefix.log"); measuring on"
            echo "$prefix" >>"$results/gave-up.txt"
            return 0
        fi
        echo "$bench_name: lab up $prefix failed:" >&2
        tail -n 20 "$tmp/up-$prefix.log" >&2
        tail -n 20 "$(lab_state "$prefix")/logs/lab-node-1.log" >&2 2>/dev/null || true
        exit 1
    fi
}

# in_lab PREFIX TARGET CMD...: CMD in the lab's namespace TARGET.
in_lab() {
    local prefix=$1 target=$2
    shift 2
    "$portico" lab --prefix "$prefix" exec "$target" -- "$@"
}

# agent_pid PREFIX [COMM]: the pid of the process named COMM in the lab's node 1; without
# COMM, of the agent (`portico run`).
agent_pid() {
    local p
    for p in $(ip netns pids "${1}node-1"); do
        if [ -n "${2:-}" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ]; then
            echo "$p"
            return 0
        fi
        if [ -z "${2:-}" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q '^[^ ]*portico run '; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# agent_log PREFIX: node 1's agent log.
agent_log() { echo "$(lab_state "$1")/logs/lab-node-1.log"; }

# check_agent PREFIX: fails when node 1's agent counts error diagnostics or failed syncs.
check_agent() {
    local metrics
    metrics="$(in_lab "$1" "$NODE" "$portico" lab probe --timeout 5s http http://127.0.0.1:9650/metrics)" \
        || { echo "$bench_name: no /metrics from $1's agent" >&2; exit 1; }
    if grep -Eq '^portico_diagnostics\{severity="error"\} [1-9]' <<<"$metrics"; then
        echo "$bench_name: $1's agent reports error diagnostics:" >&2
        grep -i -m 10 'error' "$(agent_log "$1")" >&2 || true
        exit 1
    fi
    if grep -Eq '^portico_nftables_syncs_total\{.*result="(error|failure|failed)".*\} [1-9]' <<<"$metrics"; then
        echo "$bench_name: $1's agent counts failed nftables syncs:" >&2
        grep -E '^portico_nftables_syncs_total' <<<"$metrics" >&2
        exit 1
    fi
}

# wait_answer PREFIX ADDR [probe.py wait options]: inside the client Pod, fresh connections to
# ADDR:80 until an echo Pod answers; prints "WRITE_EPOCH OK_EPOCH ATTEMPTS".
wait_answer() {
    local prefix=$1 addr=$2
    shift 2
    in_lab "$prefix" "$CLIENT" "$py" "$here/probe.py" wait "$addr" 80 "$@" \
        || { echo "$bench_name: $addr:80 never answered in lab $prefix" >&2; exit 1; }
}

# sync_line LOG FROM KIND: the first "nftables synced" line of KIND past line FROM of LOG, as
# "generation elapsed_ms elements bytes" (nothing when there is none yet).
sync_line() {
    tail -n "+$(($2 + 1))" "$1" | python3 "$here/report.py" sync-line "$3"
}

# mem_kb PID: "VmRSS VmHWM" in kB.
mem_kb() {
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print r, h }' "/proc/$1/status"
}

# machine_ticks: busy clock ticks of the whole machine: user+nice+system+irq+softirq.
machine_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}

# lab_ticks: user+system clock ticks of every process in this run's labs' namespaces (echo
# Pods, agents, HAProxy) and of the kernel's softirq threads: the machine's work for the labs
# without other people's processes on this shared machine. (This kernel has no IRQ time
# accounting: softirq work is charged to the process it interrupts, mostly the lab's senders.)
lab_ticks() {
    local sum=0 ns p t
    for ns in $(ip netns list | awk -v p="$tag-" 'index($1, p) == 1 { print $1 }'); do
        for p in $(ip netns pids "$ns"); do
            t="$(cpu_ticks "$p" 2>/dev/null || echo 0)"
            sum=$((sum + t))
        done
    done
    for p in $(pgrep '^ksoftirqd/' || true); do
        t="$(cpu_ticks "$p" 2>/dev/null || echo 0)"
        sum=$((sum + t))
    done
    echo "$sum"
}

echo
banner "Kernel data plane benchmark"
echo "portico $(portico_version), $(nft --version), $(haproxy -v | head -n 1 | awk '{print "haproxy", $3}'), $(wrk -v 2>&1 | head -n 1 | awk '{print "wrk", $2}')"
echo "sizes: $SIZES (baseline $BASE_SIZE); Service added at $p2size; $ROUNDS round(s); agents with --nft-sync-period $NFT_SYNC_PERIOD"
echo "nftables writers: ${writers[*]} in parts 1 and 2; $MAIN_WRITER in parts 3, 4 and 5 and for the targets"
echo

# --- 5. lab up of 3 nodes and 10 Pods ----------------------------------------------------
mkdir -p "$tmp/m-small"
python3 "$here/gen.py" small "$tmp/m-small"
echo "-- 5. lab up: 3 nodes, 10 echo Pods, 1 Service (nftables, $MAIN_WRITER writer) --"
for round in $(seq "$ROUNDS"); do
    prefix="$(lab_prefix "up$round" "$MAIN_WRITER")"
    t0="$(now)"
    lab_up "$prefix" "$tmp/m-small" 3 nftables "$MAIN_WRITER"
    t1="$(now)"
    ready="$(sed -n 's/.*ready in \([0-9.]*\) s.*/\1/p' "$tmp/up-$prefix.log" | head -n 1)"
    in_lab "$prefix" pod/bench/echo-0 "$py" "$here/probe.py" wait "$SMALL_IP" 80 --deadline 10 >/dev/null \
        || { echo "$bench_name: the 3-node lab's ClusterIP $SMALL_IP never answered" >&2; exit 1; }
    check_agent "$prefix"
    t2="$(now)"
    lab_down "$prefix"
    t3="$(now)"
    awk -v a="$t0" -v b="$t1" -v r="$ready" -v c="$t2" -v d="$t3" \
        'BEGIN { printf "%.3f %s %.3f\n", b - a, r, d - c }' >"$results/labup-$round.txt"
    read -r wall said down <"$results/labup-$round.txt"
    echo "  round $round: lab up ${wall} s (it says ready in ${said} s), lab down ${down} s, no namespace left"
done
echo

# --- 1 (baseline) and 4: the 100-Service labs --------------------------------------------
# scale_lab PREFIX N WRITER: up a 1-node nftables lab of N Services (manifests in
# $tmp/m-PREFIX), its agent with --nft-writer WRITER, and record part 1's figures in
# results/scale-WRITER-N.txt: "cold_ms elements bytes up_s last_s rss_kb hwm_kb generation".
scale_lab() {
    local prefix=$1 n=$2 writer=$3 dir="$tmp/m-${1%-}" t0 t1 last answer ok cold pid mem out
    out="$results/scale-$writer-$n.txt"
    mkdir -p "$dir"
    python3 "$here/gen.py" scale "$n" "$dir"
    t0="$(now)"
    lab_up "$prefix" "$dir" 1 nftables "$writer" patient
    t1="$(now)"
    last="$(python3 "$here/gen.py" ip $((n - 1)))"
    answer="$(wait_answer "$prefix" "$last" --deadline 900)"
    read -r _ ok _ <<<"$answer"
    wait_answer "$prefix" "$(python3 "$here/gen.py" ip 0)" --deadline 5 >/dev/null
    # The log line follows the nft commit that made the ClusterIP answer; give it time.
    cold=""
    for _ in $(seq 600); do
        cold="$(sync_line "$(agent_log "$prefix")" 0 Cold)"
        [ -z "$cold" ] || break
        sleep 0.1
    done
    [ -n "$cold" ] || { echo "$bench_name: no Cold sync in $(agent_log "$prefix")" >&2; exit 1; }
    check_agent "$prefix"
    pid="$(agent_pid "$prefix")" || { echo "$bench_name: no agent in ${prefix}node-1" >&2; exit 1; }
    # The writer measured is the one asked for.
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--nft-writer $writer " \
        || { echo "$bench_name: ${prefix}node-1's agent does not run with --nft-writer $writer" >&2; exit 1; }
    mem="$(mem_kb "$pid")"
    read -r gen cold_ms elements bytes <<<"$cold"
    awk -v c="$cold_ms" -v e="$elements" -v b="$bytes" -v a="$t0" -v u="$t1" -v o="$ok" -v m="$mem" -v g="$gen" \
        'BEGIN { printf "%s %s %s %.3f %.3f %s %s\n", c, e, b, u - a, o - a, m, g }' >"$out"
    read -r cold_ms elements bytes up_s last_s rss hwm _ <"$out"
    printf "  %6d Services, %-7s: Cold sync %8.1f ms (%s elements, %s bytes written), lab up %6.2f s, last ClusterIP answered at %6.2f s, agent RSS %d MiB (peak %d MiB)\n" \
        "$n" "$writer" "$cold_ms" "$elements" "$bytes" "$up_s" "$last_s" $((rss / 1024)) $((hwm / 1024))
}

# cold_ratio N: after every writer's lab of N Services, the nft / netlink Cold sync ratio.
cold_ratio() {
    local a="$results/scale-netlink-$1.txt" b="$results/scale-nft-$1.txt"
    [ -f "$a" ] && [ -f "$b" ] || return 0
    awk 'FNR == 1 { v[++i] = $1 } END { printf "  %6d Services: Cold sync netlink %.1f ms, nft %.1f ms: nft / netlink %.2fx\n", n, v[1], v[2], (v[1] > 0 ? v[2] / v[1] : 0) }' \
        n="$1" "$a" "$b"
}

echo "-- 1. full sync: 1 node, N Services x 10 endpoints, per writer (${writers[*]}) --"
# The netlink lab of 100 Services stays up: parts 3 and 4 use it (the kernel peer, HAProxy).
base="$(lab_prefix "b$BASE_SIZE" "$MAIN_WRITER")"
for w in "${writers[@]}"; do
    if [ "$w" = "$MAIN_WRITER" ]; then
        scale_lab "$base" "$BASE_SIZE" "$w"
    else
        prefix="$(lab_prefix "b$BASE_SIZE" "$w")"
        scale_lab "$prefix" "$BASE_SIZE" "$w"
        lab_down "$prefix"
    fi
done
cold_ratio "$BASE_SIZE"
# Portico's userspace proxy: a lab of its own, its agent with --proxy-mode userspace, serving
# probe4 only. (In that mode the lab cannot serve IPv6 ClusterIPs: the agent cannot bind them,
# "Cannot assign requested address", as the lab routes the IPv6 service range to lo but does
# not allow non-local binds.)
user="$(lab_prefix u0)"
mkdir -p "$tmp/m-${user%-}"
python3 "$here/gen.py" scale 0 "$tmp/m-${user%-}"
lab_up "$user" "$tmp/m-${user%-}" 1 userspace "$MAIN_WRITER"
check_agent "$user"

# --- 4. CPU per connection ---------------------------------------------------------------
# The echo Pods' IPv4 addresses, from their namespaces.
pod_ips=()
for i in $(seq 0 9); do
    pod_ips+=("$(ip -n "${base}pod-bench-echo-$i" -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }')")
done
mkdir -p "$tmp/haproxy"
{
    sed -e "s#@ADDR@#$HAPROXY_ADDR#" -e "s#@PORT@#$HAPROXY_PORT#" "$here/haproxy.cfg.in"
    for i in "${!pod_ips[@]}"; do
        echo "    server echo-$i ${pod_ips[$i]}:8080"
    done
} >"$tmp/haproxy/haproxy.cfg"
in_lab "$base" "$NODE" haproxy -db -f "$tmp/haproxy/haproxy.cfg" >"$tmp/haproxy/haproxy.log" 2>&1 &
pids+=("$!")
haproxy_pid=""
for _ in $(seq 100); do
    haproxy_pid="$(agent_pid "$base" haproxy || true)"
    if [ -n "$haproxy_pid" ] && in_lab "$base" "$NODE" ss -Hltn "sport = :$HAPROXY_PORT" | grep -q .; then break; fi
    sleep 0.1
done
[ -n "$haproxy_pid" ] || { echo "$bench_name: haproxy did not start:" >&2; cat "$tmp/haproxy/haproxy.log" >&2; exit 1; }
user_pid="$(agent_pid "$user")" || { echo "$bench_name: no agent in ${user}node-1" >&2; exit 1; }

# peer_lab / peer_addr / peer_pid PEER: where PEER runs, the address wrk connects to, and the
# process whose own CPU is counted (none for direct and kernel).
peer_lab() { if [ "$1" = userspace ]; then echo "$user"; else echo "$base"; fi; }
peer_addr() {
    case "$1" in
        direct) echo "${pod_ips[0]} 8080" ;;
        kernel | userspace) echo "198.18.128.100 8000" ;;
        haproxy) echo "$HAPROXY_ADDR $HAPROXY_PORT" ;;
    esac
}
peer_pid() {
    case "$1" in
        userspace) echo "$user_pid" ;;
        haproxy) echo "$haproxy_pid" ;;
    esac
}

# Every peer answers with an echo Pod's JSON before anything is measured.
for peer in "${PEERS[@]}"; do
    read -r addr port <<<"$(peer_addr "$peer")"
    in_lab "$(peer_lab "$peer")" "$CLIENT" "$py" "$here/probe.py" wait "$addr" "$port" --deadline 5 >/dev/null \
        || { echo "$bench_name: no echo answer through $peer ($addr:$port)" >&2; exit 1; }
done

# conntrack_room PREFIX: waits (2 minutes at most) until node 1's conntrack table holds fewer
# than CONNTRACK_ROOM entries: every connection through the node leaves one in TIME_WAIT for
# 120 s (two through HAProxy), and a full table would drop SYNs.
conntrack_room() {
    local count
    for _ in $(seq 240); do
        count="$(in_lab "$1" "$NODE" conntrack -C 2>/dev/null || echo 0)"
        [ "$count" -ge "$CONNTRACK_ROOM" ] || return 0
        sleep 0.5
    done
    echo "$bench_name: node 1's conntrack table stays at $count entries" >&2
    exit 1
}

# wrk_run PEER SECONDS OUT: new connections through PEER from the client Pod, 16 at a time,
# for SECONDS.
wrk_run() {
    local addr port
    read -r addr port <<<"$(peer_addr "$1")"
    conntrack_room "$(peer_lab "$1")"
    # wrk's own CPU, which no sample of the labs' processes sees (it starts and ends between
    # them), from bash's `time` (user and system of the command and its children).
    local TIMEFORMAT='%3U %3S'
    { time in_lab "$(peer_lab "$1")" "$CLIENT" wrk -t1 -c16 "-d${2}s" --latency \
        -H 'Connection: close' "http://$addr:$port/" >"$3" 2>&1; } 2>"$3.time" \
        || { echo "$bench_name: wrk through $1 failed:" >&2; tail -n 5 "$3" >&2; exit 1; }
}

echo
echo "-- 4. CPU per new TCP connection: wrk -t1 -c16 -d${SECONDS_PER_RUN}s -H 'Connection: close' in the client Pod, after a ${WARMUP_SECONDS} s warm-up --"
for round in $(seq "$ROUNDS"); do
    round_start "$round"
    # What the machine does meanwhile (other people's work, the idle labs): reported, so that a
    # busy machine is seen; its figure is then the labs' own CPU.
    b0="$(machine_ticks)"
    s0="$(now)"
    sleep 2
    b1="$(machine_ticks)"
    s1="$(now)"
    awk -v a="$b0" -v b="$b1" -v s="$s0" -v e="$s1" -v t="$clk_tck" \
        'BEGIN { printf "%.4f\n", (b - a) / t / (e - s) }' >"$results/background-$round.txt"
    for peer in "${order[@]}"; do
        wrk_run "$peer" "$WARMUP_SECONDS" "$results/warmup-$peer-$round.txt"
        pid="$(peer_pid "$peer")"
        p0=0
        [ -z "$pid" ] || p0="$(cpu_ticks "$pid")"
        l0="$(lab_ticks)"
        m0="$(machine_ticks)"
        t0="$(now)"
        wrk_run "$peer" "$SECONDS_PER_RUN" "$results/wrk-$peer-$round.txt"
        t1="$(now)"
        m1="$(machine_ticks)"
        l1="$(lab_ticks)"
        p1=0
        [ -z "$pid" ] || p1="$(cpu_ticks "$pid")"
        read -r wu ws <"$results/wrk-$peer-$round.txt.time"
        awk -v a="$m0" -v b="$m1" -v p="$p0" -v q="$p1" -v s="$t0" -v e="$t1" -v t="$clk_tck" \
            -v l="$l0" -v m="$l1" -v w="$wu" -v x="$ws" \
            'BEGIN { printf "%.4f %.4f %.4f %.4f\n", (b - a) / t, (q - p) / t, e - s, (m - l) / t + w + x }' \
            >"$results/cpu-$peer-$round.txt"
        python3 "$here/report.py" wrk-line "$results" "$peer" "$round"
    done
done

# --- 1 (sizes), 2 and 3 ------------------------------------------------------------------
echo
echo "-- 1. full sync (continued) --"
lab_down "$user"
# latency_chunk PREFIX N ROUND: a quarter of part 3's connect times in lab PREFIX (N Services),
# appended to results/latency-N-ROUND.txt (one a line, in microseconds).
latency_chunk() {
    in_lab "$1" "$CLIENT" "$py" "$here/probe.py" latency "$(python3 "$here/gen.py" ip $(($2 - 1)))" 80 \
        $((LATENCY_CONNECTIONS / 4)) >>"$results/latency-$2-$3.txt" \
        || { echo "$bench_name: connect times in lab $1 failed" >&2; exit 1; }
}
# add_services PREFIX N WRITER: part 2 in the lab PREFIX (N Services, WRITER's agent): one
# Service added at a time, ADDITIONS times; results/added-WRITER-K.txt each:
# "generation diff_ms write_to_answer_s".
add_services() {
    local prefix=$1 n=$2 writer=$3 log k idx from answer wrote ok line gen ms
    echo "-- 2. one Service added at $n ($writer writer): a new file with one Service, $ADDITIONS times --"
    log="$(agent_log "$prefix")"
    for k in $(seq "$ADDITIONS"); do
        idx=$((n + k - 1))
        python3 "$here/gen.py" one "added-$k" "$idx" "$tmp/added-$writer-$k.yaml"
        from="$(wc -l <"$log")"
        answer="$(wait_answer "$prefix" "$(python3 "$here/gen.py" ip "$idx")" \
            --write "$tmp/m-${prefix%-}/added-$k.yaml" --from "$tmp/added-$writer-$k.yaml" --deadline 30)"
        read -r wrote ok _ <<<"$answer"
        line=""
        for _ in $(seq 100); do
            line="$(sync_line "$log" "$from" Diff)"
            [ -z "$line" ] || break
            sleep 0.1
        done
        [ -n "$line" ] || { echo "$bench_name: no Diff sync logged for added-$k in lab $prefix" >&2; exit 1; }
        read -r gen ms _ <<<"$line"
        awk -v g="$gen" -v m="$ms" -v w="$wrote" -v o="$ok" \
            'BEGIN { printf "%s %s %.4f\n", g, m, o - w }' >"$results/added-$writer-$k.txt"
        printf "  added-%d: Diff sync %6.2f ms (generation %s), answering %.0f ms after the write\n" \
            "$k" "$ms" "$gen" "$(awk -v w="$wrote" -v o="$ok" 'BEGIN { print (o - w) * 1000 }')"
        sleep 0.5
    done
    check_agent "$prefix"
}

# Each size, one writer's lab after the other (never two large labs at once); part 2 in each
# writer's lab of its size, part 3 in the netlink lab of the largest size.
for n in $SIZES; do
    for w in "${writers[@]}"; do
        prefix="$(lab_prefix "s$n" "$w")"
        scale_lab "$prefix" "$n" "$w"
        [ "$n" != "$p2size" ] || add_services "$prefix" "$n" "$w"
        if [ "$n" = "$largest" ] && [ "$w" = "$MAIN_WRITER" ]; then
            echo "-- 3. first-packet latency: $LATENCY_CONNECTIONS fresh connections to a ClusterIP, $BASE_SIZE vs $n Services ($w writer) --"
            # In quarters, the two labs in turn, so that a slow spell of this shared machine falls on both.
            for round in $(seq "$ROUNDS"); do
                for _ in 1 2 3 4; do
                    latency_chunk "$base" "$BASE_SIZE" "$round"
                    latency_chunk "$prefix" "$n" "$round"
                done
                for m in "$BASE_SIZE" "$n"; do
                    printf "  round %d, %6d Services: %s\n" "$round" "$m" \
                        "$(python3 "$here/report.py" percentiles "$results/latency-$m-$round.txt")"
                done
            done
        fi
        lab_down "$prefix"
    done
    cold_ratio "$n"
done
lab_down "$base"

echo
# shellcheck disable=SC2086
python3 "$here/report.py" report "$results" "$ROUNDS" "$BASE_SIZE" "$p2size" "$largest" "$SECONDS_PER_RUN" \
    "$(IFS=,; echo "${writers[*]}")" $SIZES
