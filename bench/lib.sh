# shellcheck shell=bash
# Shared helpers of the benchmark scripts (bench/l4.sh, bench/ingress.sh,
# bench/ingress-reload.sh). Sourced, never run. Before sourcing it, a script sets:
#   root        the repository (the scripts find it from their own path)
#   bench_name  the prefix of its error messages, e.g. "l4 bench"
# A script may also define these hooks:
#   peer_down NAME WHY  called when NAME exits or does not listen; returning 0 takes NAME out
#                       of the benchmark (alive and wait_listen then return 1) instead of
#                       stopping the script
#   KEEP_DIRS=(DIR...)  folders of $tmp whose configurations and logs PORTICO_BENCH_KEEP keeps,
#                       each in a folder of its own
# All traffic stays on 127.0.0.0/8.

# haproxy and nginx live in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

# --- knobs and cores ---------------------------------------------------------------------

# whole_numbers WHAT VALUE...: exits 2 with "WHAT" unless every VALUE is a whole number >= 1.
whole_numbers() {
    local what=$1 n
    shift
    for n in "$@"; do
        [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "$bench_name: $what" >&2; exit 2; }
    done
}

# runs_and_rounds: SECONDS_PER_RUN (PORTICO_BENCH_SECONDS, default 10) and ROUNDS
# (PORTICO_BENCH_ROUNDS, default 1); exits 2 when either is not a whole number >= 1.
runs_and_rounds() {
    SECONDS_PER_RUN="${PORTICO_BENCH_SECONDS:-10}"
    ROUNDS="${PORTICO_BENCH_ROUNDS:-1}"
    whole_numbers "PORTICO_BENCH_SECONDS and _ROUNDS take a whole number >= 1" "$SECONDS_PER_RUN" "$ROUNDS"
}

# pick_cpus: LOAD_CPU (load generators, backends) and PROXY_CPU (the proxy under test), two
# different cores when the machine has them.
pick_cpus() {
    LOAD_CPU=0
    if [ "$(nproc --all)" -ge 2 ]; then
        PROXY_CPU=1
    else
        echo "warning: one core only; everything runs on core 0 and the figures mean little" >&2
        PROXY_CPU=0
    fi
}

# --- tools -------------------------------------------------------------------------------

# require_tools TOOL...: exits 1 when a TOOL is not on the PATH.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || { echo "$bench_name: $tool is required" >&2; exit 1; }
    done
}

# install_missing TOOL[:PACKAGE]...: apt-get installs the PACKAGE (default: TOOL) of every
# TOOL not on the PATH (as root).
install_missing() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# --- build -------------------------------------------------------------------------------

# build_portico: sets $portico, the binary to measure. PORTICO_BENCH_BIN names one and skips
# the build. Else `cargo build --release -p portico` (into $CARGO_TARGET_DIR when set, else
# target/); others may be editing the workspace, so a failed build is retried a few times, then
# the last binary built is used.
build_portico() {
    local attempt
    portico="${PORTICO_BENCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/portico}"
    [ -z "${PORTICO_BENCH_BIN:-}" ] || return 0
    for attempt in 1 2 3; do
        if cargo build --release -p portico; then
            return 0
        fi
        if [ "$attempt" -lt 3 ]; then
            echo "build failed; retrying in 60 s" >&2
            sleep 60
        fi
    done
    echo "warning: cargo build failed; using the last built $portico" >&2
}

# --- processes and cleanup ---------------------------------------------------------------

# make_tmp NAME: a fresh folder $tmp (NAME.XXXXXX under $TMPDIR) with $results in it, and the
# traps that on any exit stop every process in $pids and remove $tmp (see cleanup).
make_tmp() {
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    results="$tmp/results"
    mkdir -p "$results"
    pids=()
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# cleanup: the EXIT trap. Stops every process in $pids (TERM, then KILL after 5 s), copies
# $results, the logs and the KEEP_DIRS to PORTICO_BENCH_KEEP when set, removes $tmp and
# exits with the script's status.
cleanup() {
    local status=$? pid d
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        reap "$pid" 50
    done
    if [ -n "${PORTICO_BENCH_KEEP:-}" ]; then
        mkdir -p "$PORTICO_BENCH_KEEP"
        cp -r "$results"/. "$PORTICO_BENCH_KEEP"/ 2>/dev/null || true
        cp "$tmp"/*.log "$PORTICO_BENCH_KEEP"/ 2>/dev/null || true
        for d in ${KEEP_DIRS[@]+"${KEEP_DIRS[@]}"}; do
            mkdir -p "$PORTICO_BENCH_KEEP/$d"
            find "$tmp/$d" -maxdepth 2 -type f \( -name '*.conf' -o -name '*.cfg' -o -name '*.map' \
                -o -name '*.yml' -o -name '*.yaml' -o -name '*.log' \) -exec cp {} "$PORTICO_BENCH_KEEP/$d/" \; 2>/dev/null || true
        done
    fi
    rm -rf "$tmp"
    exit "$status"
}

# reap PID TENTHS: waits up to TENTHS tenths of a second for PID to exit, then KILLs it and
# collects its exit status.
reap() {
    local pid=$1
    for _ in $(seq "$2"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# spawn NAME CPU CMD...: starts CMD in the background pinned to core CPU, its output in
# $tmp/NAME.log, and adds it to $pids (stopped on exit); $! is its pid afterwards.
spawn() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$tmp/$name.log" 2>&1 &
    pids+=("$!")
}

# peer_spared NAME WHY: true when the script's peer_down hook took NAME out of the benchmark
# for WHY; false (the caller stops the script) when there is no such hook or it declined.
peer_spared() {
    declare -F peer_down >/dev/null && peer_down "$1" "$2"
}

# alive NAME PID: fails with the process's log ($tmp/NAME.log) when it has exited, or returns
# 1 when peer_down spares NAME.
alive() {
    if ! kill -0 "$2" 2>/dev/null; then
        peer_spared "$1" "the $1 process exited" && return 1
        echo "$bench_name: $1 exited; its log:" >&2
        tail -n 20 "$tmp/$1.log" >&2 || true
        exit 1
    fi
}

# tree PID: PID and all its descendants.
tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        tree "$child"
    done
}

# start_backend ERROR_LOG ADDR PORT: starts the backend nginx of $tmp/backend/nginx.conf on
# core $LOAD_CPU (its error log $tmp/backend/ERROR_LOG) and waits until it listens on ADDR:PORT.
start_backend() {
    spawn backend "$LOAD_CPU" nginx -p "$tmp/backend/" -e "$tmp/backend/$1" -c "$tmp/backend/nginx.conf"
    wait_listen backend "$!" "$2" "$3"
}

# bench_certificate: a self-signed certificate for *.bench.test in $tmp/tls.crt, its key in
# $tmp/tls.key (the Ingress benches serve every host over TLS with it).
bench_certificate() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj '/CN=*.bench.test' \
        -addext 'subjectAltName=DNS:*.bench.test' -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
}

# wait_listen NAME PID ADDR PORT: waits (15 s at most) until ADDR:PORT accepts connections
# and checks that it is PID (or one of its children) listening there, not some other program
# that took the address meanwhile (other people on this machine run servers too). Fails, or
# returns 1 when peer_down spares NAME.
wait_listen() {
    local name=$1 pid=$2 addr=$3 port=$4 owners p
    for _ in $(seq 150); do
        alive "$name" "$pid" || return 1
        owners="$(ss -Hltnp "src $addr and sport = :$port" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true)"
        if [ -n "$owners" ]; then
            for p in $(tree "$pid"); do
                if grep -qx "$p" <<<"$owners"; then return 0; fi
            done
            echo "$bench_name: $addr:$port is taken by another program, not $name:" >&2
            ss -Hltnp "src $addr and sport = :$port" >&2 || true
            peer_spared "$name" "$addr:$port is taken by another program" && return 1
            exit 1
        fi
        sleep 0.1
    done
    peer_spared "$name" "does not listen on $addr:$port" && return 1
    echo "$bench_name: $name does not listen on $addr:$port" >&2
    tail -n 20 "$tmp/$name.log" >&2 || true
    exit 1
}

# wait_ready PID ADDR SECONDS: waits until Portico (PID) answers http://ADDR/readyz; returns 1
# after SECONDS, or when alive spares a Portico that exited.
wait_ready() {
    local pid=$1 addr=$2 seconds=$3
    for _ in $(seq $((seconds * 10))); do
        alive portico "$pid" || return 1
        if curl -sf "http://$addr/readyz" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ensure_free ADDR PORT [udp]: fails when something already listens there (or on every
# address), over TCP or with `udp` over UDP, so that no figure is taken from a stranger's server.
ensure_free() {
    local addr=$1 port=$2 kind=t what=""
    if [ "${3:-}" = udp ]; then kind=u what="UDP "; fi
    if ss -Hl${kind}n "sport = :$port" | awk -v a="$addr:$port" -v p=":$port" \
        '$4 == a || $4 == "0.0.0.0" p || $4 == "*" p || $4 == "[::]" p { found = 1 } END { exit !found }'; then
        echo "$bench_name: $what$addr:$port is already in use; stop what listens there first:" >&2
        ss -Hl${kind}np "sport = :$port" >&2 || true
        exit 1
    fi
}

# --- measuring ---------------------------------------------------------------------------

clk_tck="$(getconf CLK_TCK)"

# now: seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# cpu_ticks PID: user + system clock ticks of the process, all its threads.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# tree_ticks PID: user + system clock ticks of PID and its descendants, all threads.
tree_ticks() {
    local sum=0 p t
    for p in $(tree "$1"); do
        t="$(cpu_ticks "$p" 2>/dev/null || echo 0)"
        sum=$((sum + t))
    done
    echo "$sum"
}

# tree_rss PID: "VmHWM VmRSS processes" summed over PID and its descendants, in kB.
tree_rss() {
    local p hwm=0 rss=0 n=0 a b
    for p in $(tree "$1"); do
        a="$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)"
        b="$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)"
        [ -n "$a" ] || continue
        hwm=$((hwm + a))
        rss=$((rss + b))
        n=$((n + 1))
    done
    echo "$hwm $rss $n"
}

# tree_reset_peak PID: resets the peak RSS (VmHWM) of PID and its descendants to their current
# VmRSS by writing 5 to /proc/P/clear_refs (Linux >= 4.0), so that tree_rss afterwards gives the
# peak since this call. Processes that vanish meanwhile are skipped. Never fails: when a write
# is refused (not root and not the owner, an older kernel), one warning is printed, once per
# script, and that process's VmHWM keeps its earlier peak.
reset_peak_warned=""
tree_reset_peak() {
    local p
    for p in $(tree "$1"); do
        { echo 5 >"/proc/$p/clear_refs"; } 2>/dev/null && continue
        [ -e "/proc/$p" ] || continue
        if [ -z "$reset_peak_warned" ]; then
            reset_peak_warned=1
            echo "warning: cannot reset the peak RSS of process $p (/proc/$p/clear_refs);" \
                "peak RSS figures include the peak of earlier runs" >&2
        fi
    done
    return 0
}

# core_ticks CPU: "busy total" jiffies of one core from /proc/stat (idle and iowait are not busy).
core_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# busy_share BEFORE AFTER: the share of the time between two core_ticks readings of a core
# that the core was busy (0 when no time passed).
busy_share() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
        printf "%.3f\n", (t > 0 ? (y[1] - x[1]) / t : 0) }'
}

# --- output ------------------------------------------------------------------------------

# banner TITLE: the first line of a report: TITLE, the time, the cores and the kernel.
banner() {
    echo "== $1: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc --all) cores, $(uname -r) =="
}

# portico_version: the version of $portico.
portico_version() {
    "$portico" --version | awk '{print $2}'
}

# round_start ROUND: sets $order, PEERS rotated by ROUND - 1, and heads the round when there
# are several. Each round runs the peers one after the other, starting with a different peer
# each round, so that a slow spell of this shared machine does not always fall on the same peer.
round_start() {
    local round=$1 i
    order=()
    for i in "${!PEERS[@]}"; do
        order+=("${PEERS[$(((i + round - 1) % ${#PEERS[@]}))]}")
    done
    if [ "$ROUNDS" -gt 1 ]; then echo "== round $round of $ROUNDS =="; fi
}

# Portico's state in the benchmarks that measure it beside peers: "" while it serves, else why
# it does not. Portico not serving does not stop a benchmark: the peers are still measured.
portico_reason=""
portico_pid=""
# portico_down WHY: marks Portico down once (writes results/portico-not-serving.txt, prints a
# banner naming $PORTICO_DOWN_OTHERS as still measured, shows its log, stops it).
portico_down() {
    [ -n "$portico_reason" ] && return 0
    portico_reason="$1"
    echo "$portico_reason" >"$results/portico-not-serving.txt"
    {
        echo
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "!! PORTICO NOT SERVING: $portico_reason"
        echo "!! ${PORTICO_DOWN_OTHERS:-The other peers are} measured anyway; Portico's row stays empty and the script exits 1."
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo
    }
    echo "warning: Portico not serving: $portico_reason" >&2
    if [ -f "$tmp/portico.log" ]; then
        echo "last lines of Portico's log:" >&2
        tail -n 20 "$tmp/portico.log" >&2 || true
    fi
    if [ -n "$portico_pid" ]; then
        kill -TERM "$portico_pid" 2>/dev/null || true
    fi
}
# finish_portico STATUS OTHERS: exits with STATUS, or with 1 when Portico was not measured,
# which it says last, naming OTHERS ("unbound and knot") as the ones measured.
finish_portico() {
    local status=$1
    if [ -n "$portico_reason" ]; then
        echo
        echo "!! PORTICO NOT SERVING: $portico_reason"
        echo "!! Only $2 were measured."
        echo "$bench_name: Portico was not measured: $portico_reason" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    exit "$status"
}
# idle_connections N ADDR_OF PEER...: the memory each proxy PEER keeps per idle keep-alive
# connection. bench/idle.py opens N HTTP/1.1 connections to the "ADDR PORT" the function ADDR_OF
# prints for PEER, one request each, holds them idle and divides the growth of the RSS of
# `pid_of PEER` by N. Prints the table with Portico's ratios, then exits like finish_portico.
# Run it on freshly started proxies, never with other runs: see bench/idle.py.
idle_connections() {
    local n=$1 addr_of=$2 peer addr port status=0
    shift 2
    echo "-- idle keep-alive connections: $n, one request each, then idle (bench/idle.py) --"
    for peer in "$@"; do
        serving "$peer" || continue
        read -r addr port <<<"$("$addr_of" "$peer")"
        if python3 "$root/bench/idle.py" "$addr" "$port" "$n" "$(pid_of "$peer")" >"$results/idle-$peer.txt"; then
            awk -v p="$peer" '{ printf "  %-8s %6.2f KiB per connection (RSS %s -> %s MiB)\n", p, $1, $2, $3 }' \
                "$results/idle-$peer.txt"
        elif [ "$peer" = portico ]; then
            portico_down "the idle keep-alive connections failed"
        else
            echo "$bench_name: $peer failed the idle keep-alive connections" >&2
            exit 1
        fi
    done
    echo
    python3 "$root/bench/idle.py" report "$results" "$@" || status=$?
    finish_portico "$status" "the other peers"
}
# spare_portico NAME WHY: a peer_down hook (see the top of this file) for benchmarks that
# measure Portico beside peers: Portico going down only marks it down (portico_down); any other
# peer stops the benchmark. Such a script defines `peer_down() { spare_portico "$@"; }`.
spare_portico() {
    [ "$1" = portico ] || return 1
    portico_down "$2"
}
# invalid PEER WHY: a run or check that did not measure what it should. Portico is marked down
# (its results dropped); any other peer stops the benchmark.
invalid() {
    if [ "$1" = portico ]; then
        portico_down "$2"
        rm -f "$results"/*-portico-*
        return 0
    fi
    echo "$bench_name: $1: $2" >&2
    exit 1
}
# serving PEER: false once PEER is Portico and Portico is down.
serving() {
    [ "$1" != portico ] || [ -z "$portico_reason" ]
}
