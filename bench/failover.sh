#!/usr/bin/env bash
# Failover benchmark: how fast a LoadBalancer address announced on the LAN (`--announce on`,
# ARP and NDP) moves when the node announcing it fails, in 3-node labs of network namespaces
# (`portico lab`).
#
# The lab runs a Deployment `web` of 3 echo Pods behind a dual-stack LoadBalancer Service
# `web-l2`, whose addresses 198.18.0.240 and 2001:db8::f0 come from a MetalLB IPAddressPool on
# the LAN's own subnet with an L2Advertisement: `outside` finds them by ARP and NDP, answered
# by the first live node of the address's ranking in the Plan (/plan, `announcements`). The
# agents exchange UDP heartbeats every 100 ms; a peer silent for 600 ms is dead.
#
# For each family (IPv4 198.18.0.240, IPv6 2001:db8::f0), ROUNDS rounds of two failures, each
# in a fresh lab (up, the address answering from `outside`, every agent announcing what its
# Plan ranks it first for, `outside`'s neighbour entry at the first node's MAC; then the
# failure; then the lab down), so that nothing carries over from one failure to the next:
#  (a) agent SIGKILL: every process of the announcing node's namespace (its agent, the only
#      one) is killed. Measured from the kill: the first successful request from `outside`
#      (the killed node's kernel keeps forwarding with the rules it had, so near zero; for
#      information), and the time until `outside`'s neighbour entry of the address shows the
#      MAC of the next node in the ranking: the address has moved. Target: median under 2 s.
#  (b) link down: `ip link set eth0 down` in the announcing node's namespace. Measured from
#      the command's start: the first successful request from `outside`. Target: median under
#      2 s. (The time the neighbour entry moved is shown too, for information.)
# Requests: `portico lab probe --timeout 200ms http URL` in `outside`, a new one every 50 ms
# (several in flight), until one answers; the neighbour entry is read every 20 ms
# (bench/failover/report.py failover). A figure is the end of the first successful probe or of
# the first read showing the new MAC, so it includes up to 50 ms (20 ms) of sampling.
#
# Prints each round's figures as measured, then per family and failure the median and the
# worst over the rounds, and a verdict against the targets. Never fails on a missed target;
# fails when something does not run (a lab that does not come up, an address that never
# answers before the failure, agents that disagree on the ranking, a failure that cannot be
# caused, an address that never moves within 10 s, namespaces left behind).
#
# Usage (as root): bench/failover.sh
#   PORTICO_BENCH_ROUNDS=10   rounds per family and failure (default 10); each is a lab of
#                             its own (about 2 s each)
#   PORTICO_BENCH_BIN=FILE    measure this portico binary; no cargo build (default: build
#                             target/release/portico with `cargo build --release -p portico`)
#   PORTICO_BENCH_KEEP=DIR    keep the raw results and the agents' logs
#
# NETWORK SAFETY: every packet is sent inside the labs' namespaces, through `portico lab exec`,
# to 198.18.0.0/15 and 2001:db8::/32 only; the host's own namespace sends nothing. Each lab
# has a prefix of its own (pfo<pid>r<n>-), and the EXIT trap takes down any lab left.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/failover"
bench_name="failover bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

[ "$(id -u)" = 0 ] || { echo "$bench_name: the labs need root" >&2; exit 1; }

ROUNDS="${PORTICO_BENCH_ROUNDS:-10}"
whole_numbers "PORTICO_BENCH_ROUNDS takes a whole number >= 1" "$ROUNDS"
TARGET_S=2
# How long a failover may take before it counts as never happening (the script then fails).
DEADLINE_S=10
PROBE_EVERY_S=0.05
NEIGH_EVERY_S=0.02
NODES=(lab-node-1 lab-node-2 lab-node-3)

# --- tools and build ---------------------------------------------------------------------
require_tools ip python3 kill
build_portico
"$portico" lab --help >/dev/null 2>&1 || { echo "$bench_name: $portico has no 'lab' command" >&2; exit 1; }

# --- labs and cleanup --------------------------------------------------------------------
make_tmp portico-failover
tag="pfo$(($$ % 100000))r"
labs=()
lab_count=0

# The manifests: the only files in their folder, which every lab's agents watch. The lab test
# of crates/portico/tests/lab.rs reads the same file.
mkdir -p "$tmp/manifests"
cp "$here/l2.yaml" "$tmp/manifests/l2.yaml"

# next_prefix: the namespace prefix of this run's next lab; `portico lab` takes 1-20 characters.
next_prefix() {
    lab_count=$((lab_count + 1))
    local p="$tag$lab_count-"
    [[ ${#p} -le 20 && "$p" =~ ^[a-z0-9-]+-$ ]] || { echo "$bench_name: lab prefix '$p' is too long or malformed" >&2; exit 1; }
    prefix="$p"
}
# lab_state PREFIX: the lab's state folder (its logs are under logs/).
lab_state() { echo "/run/portico-lab/${1%-}"; }
# left_namespaces PREFIX: the namespaces whose names start with PREFIX.
left_namespaces() { ip netns list | awk -v p="$1" 'index($1, p) == 1 { print $1 }'; }

# lab_down PREFIX: `lab down`, keeping the agents' logs first when asked; fails when a
# namespace is left.
lab_down() {
    local prefix=$1 left p kept=()
    if [ -n "${PORTICO_BENCH_KEEP:-}" ] && [ -d "$(lab_state "$prefix")/logs" ]; then
        mkdir -p "$results/logs-${prefix%-}"
        cp "$(lab_state "$prefix")"/logs/*.log "$results/logs-${prefix%-}/" 2>/dev/null || true
    fi
    "$portico" lab --prefix "$prefix" down >/dev/null 2>&1 || true
    left="$(left_namespaces "$prefix")"
    if [ -n "$left" ]; then
        echo "$bench_name: lab down left namespaces: $left" >&2
        return 1
    fi
    for p in ${labs[@]+"${labs[@]}"}; do [ "$p" = "$prefix" ] || kept+=("$p"); done
    labs=(${kept[@]+"${kept[@]}"})
}

# failover_cleanup: the EXIT trap: every lab of this run down (also on failure, also a lab
# whose namespaces are there but that was never recorded), then lib.sh's cleanup.
failover_cleanup() {
    local status=$? prefix
    set +e
    for prefix in ${labs[@]+"${labs[@]}"} $(left_namespaces "$tag" | sed 's/-.*/-/' | sort -u); do
        lab_down "$prefix" || status=1
    done
    (exit "$status")
    cleanup
}
trap failover_cleanup EXIT

# lab_up PREFIX: `portico lab up` of 3 nodes with the manifests; its output in $tmp/up-PREFIX.log.
lab_up() {
    local prefix=$1
    labs+=("$prefix")
    if ! "$portico" lab --prefix "$prefix" up --manifests "$tmp/manifests" --nodes 3 >"$tmp/up-$prefix.log" 2>&1; then
        echo "$bench_name: lab up $prefix failed:" >&2
        tail -n 20 "$tmp/up-$prefix.log" >&2
        exit 1
    fi
}

# in_lab PREFIX TARGET CMD...: CMD in the lab's namespace TARGET.
in_lab() {
    local prefix=$1 target=$2
    shift 2
    "$portico" lab --prefix "$prefix" exec "$target" -- "$@"
}
# node_ns PREFIX NODE: the namespace of NODE (lab-node-N).
node_ns() { echo "${1}node-${2#lab-node-}"; }
# admin PREFIX NODE PATH: the probe's output of NODE's agent's http://127.0.0.1:9650/PATH.
admin() { in_lab "$1" "node/$2" "$portico" lab probe --timeout 2s http "http://127.0.0.1:9650/$3"; }
# metric PREFIX NODE NAME: the value of NODE's agent's sample NAME.
metric() { admin "$1" "$2" metrics | python3 "$here/report.py" metric "$3"; }
# mac_of PREFIX NODE: the link-layer address of NODE's LAN interface.
mac_of() { in_lab "$1" "node/$2" ip link show eth0 | awk '$1 == "link/ether" { print $2 }'; }
# neigh_of PREFIX ADDR: `outside`'s neighbour entry of ADDR.
neigh_of() {
    local family=-4
    [[ "$2" != *:* ]] || family=-6
    in_lab "$1" outside ip "$family" neigh show "$2"
}
# probe PREFIX URL: one request from `outside`; true when an echo Pod answered.
probe() {
    local out
    out="$(in_lab "$1" outside "$portico" lab probe --timeout 200ms http "$2" 2>/dev/null)" || true
    [[ "$out" == ok* ]]
}

# steady PREFIX ADDR URL: waits (10 s at most) until the lab is as the failure needs it: URL
# answers from `outside`; every agent's Plan ranks ADDR's nodes the same (sets $ranking) and
# every agent announces exactly the addresses its Plan ranks it first for (so each sees the
# others alive); `outside`'s neighbour entry of ADDR is at the first node's MAC. Fails else.
steady() {
    local prefix=$1 addr=$2 url=$3 plan node other want got entry ok mac
    for _ in $(seq 100); do
        if probe "$prefix" "$url"; then ok=1; break; fi
        sleep 0.1
    done
    [ -n "${ok:-}" ] || { echo "$bench_name: $url never answered in lab $prefix before the failure" >&2; exit 1; }
    plan="$(admin "$prefix" lab-node-1 plan)" || { echo "$bench_name: no /plan from lab $prefix's lab-node-1" >&2; exit 1; }
    read -r -a ranking <<<"$(python3 "$here/report.py" ranking "$addr" <<<"$plan")"
    [ "${#ranking[@]}" -ge 2 ] || { echo "$bench_name: $addr has fewer than 2 nodes in its ranking: ${ranking[*]}" >&2; exit 1; }
    for node in "${NODES[@]:1}"; do
        other="$(admin "$prefix" "$node" plan | python3 "$here/report.py" ranking "$addr")"
        [ "$other" = "${ranking[*]}" ] \
            || { echo "$bench_name: $node ranks $addr's nodes '$other', lab-node-1 '${ranking[*]}'" >&2; exit 1; }
    done
    for node in "${NODES[@]}"; do
        want="$(python3 "$here/report.py" expected "$node" <<<"$plan")"
        got=""
        for _ in $(seq 100); do
            got="$(metric "$prefix" "$node" portico_announce_addresses)"
            [ "$got" != "$want" ] || break
            sleep 0.1
        done
        [ "$got" = "$want" ] \
            || { echo "$bench_name: $node announces $got addresses, its Plan ranks it first for $want" >&2; exit 1; }
    done
    mac="$(mac_of "$prefix" "${ranking[0]}")"
    entry=""
    for _ in $(seq 30); do
        entry="$(neigh_of "$prefix" "$addr")"
        [[ "$entry" != *"$mac"* ]] || return 0
        probe "$prefix" "$url" || true
        sleep 0.1
    done
    echo "$bench_name: outside finds $addr at '$entry', not at ${ranking[0]}'s MAC $mac" >&2
    exit 1
}

# ms SECONDS: milliseconds, or "never" for "-".
ms() { if [ "$1" = - ]; then echo "never (${DEADLINE_S} s)"; else awk -v s="$1" 'BEGIN { printf "%.0f ms\n", s * 1000 }'; fi; }

# probes N: "N probes" ("1 probe").
probes() { if [ "$1" = 1 ]; then echo "1 probe"; else echo "$1 probes"; fi; }

# one_failover FAMILY KIND ROUND: a fresh lab, KIND (kill or link) of ADDR's announcing node,
# the figures in results/FAMILY-KIND-ROUND.txt and a line; then the lab down.
one_failover() {
    local family=$1 kind=$2 round=$3 addr url first next next_mac before after action pids what out
    local answer moved count left
    if [ "$family" = 4 ]; then
        addr=198.18.0.240 url="http://198.18.0.240:80/"
    else
        addr=2001:db8::f0 url="http://[2001:db8::f0]:80/"
    fi
    next_prefix
    lab_up "$prefix"
    steady "$prefix" "$addr" "$url"
    first="${ranking[0]}" next="${ranking[1]}"
    next_mac="$(mac_of "$prefix" "$next")"
    [ -n "$next_mac" ] || { echo "$bench_name: no MAC for $next in lab $prefix" >&2; exit 1; }
    before="$(metric "$prefix" "$next" portico_announce_takeovers_total)"
    if [ "$kind" = kill ]; then
        read -r -a pids <<<"$(ip netns pids "$(node_ns "$prefix" "$first")" | tr '\n' ' ')"
        [ "${#pids[@]}" -ge 1 ] || { echo "$bench_name: no process in $(node_ns "$prefix" "$first")" >&2; exit 1; }
        [[ "$(tr '\0' ' ' <"/proc/${pids[0]}/cmdline")" == *"portico run "* ]] \
            || { echo "$bench_name: $(node_ns "$prefix" "$first")'s process ${pids[0]} is not an agent" >&2; exit 1; }
        action=(kill -KILL "${pids[@]}")
        what="agent SIGKILL: $first's agent (pid ${pids[*]}) killed"
    else
        action=("$portico" lab --prefix "$prefix" exec "node/$first" -- ip link set eth0 down)
        what="link down:     $first's eth0 down"
    fi
    out="$(python3 "$here/report.py" failover --portico "$portico" --prefix "$prefix" --url "$url" \
        --addr "$addr" --mac "$next_mac" --every "$PROBE_EVERY_S" --neigh-every "$NEIGH_EVERY_S" \
        --deadline "$DEADLINE_S" -- "${action[@]}")"
    echo "$out" >"$results/$family-$kind-$round.txt"
    read -r answer moved count <<<"$out"
    # The failure happened as meant: the agent gone, or the link down.
    if [ "$kind" = kill ]; then
        left=""
        for _ in $(seq 20); do
            left="$(ip netns pids "$(node_ns "$prefix" "$first")")"
            [ -n "$left" ] || break
            sleep 0.1
        done
        [ -z "$left" ] || { echo "$bench_name: processes left in $(node_ns "$prefix" "$first") after SIGKILL: $left" >&2; exit 1; }
    else
        [[ "$(in_lab "$prefix" "node/$first" ip link show eth0)" == *"state DOWN"* ]] \
            || { echo "$bench_name: $first's eth0 is not down" >&2; exit 1; }
    fi
    # The next node took the address over (when it moved).
    if [ "$moved" != - ]; then
        after="$(metric "$prefix" "$next" portico_announce_takeovers_total)"
        awk -v a="$after" -v b="$before" 'BEGIN { exit !(a > b) }' \
            || { echo "$bench_name: outside found $addr at $next's MAC, but $next counts no takeover ($before -> $after)" >&2; exit 1; }
    fi
    if [ "$kind" = kill ]; then
        printf "  round %d, IPv%s, %s; first answer after %s; address moved to %s after %s (%s)\n" \
            "$round" "$family" "$what" "$(ms "$answer")" "$next" "$(ms "$moved")" "$(probes "$count")"
    else
        printf "  round %d, IPv%s, %s; first answer after %s (address moved to %s after %s; %s)\n" \
            "$round" "$family" "$what" "$(ms "$answer")" "$next" "$(ms "$moved")" "$(probes "$count")"
    fi
    lab_down "$prefix"
}

echo
banner "Failover benchmark"
echo "portico $(portico_version); 3-node labs, Service web-l2 at 198.18.0.240 and 2001:db8::f0 (MetalLB pool, L2Advertisement)"
echo "$ROUNDS round(s) per family and failure, a fresh lab each; a probe from outside every $(ms "$PROBE_EVERY_S") (--timeout 200ms), outside's neighbour entry read every $(ms "$NEIGH_EVERY_S")"
echo "target: median under ${TARGET_S} s (address moved after agent SIGKILL, first answer after link down)"
echo
for round in $(seq "$ROUNDS"); do
    for family in 4 6; do
        for kind in kill link; do
            one_failover "$family" "$kind" "$round"
        done
    done
done

left="$(left_namespaces "$tag")"
if [ -n "$left" ]; then
    echo "$bench_name: namespaces left: $left" >&2
    exit 1
fi
echo "  $lab_count labs up and down; ip netns list shows no namespace of ${tag}*"
echo
python3 "$here/report.py" report "$results" "$TARGET_S"
