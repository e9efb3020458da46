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
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/ingress"
bench_name="ingress instructions bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

REQUESTS="${PORTICO_BENCH_REQUESTS:-20000}"
whole_numbers "PORTICO_BENCH_REQUESTS takes a whole number >= 1" "$REQUESTS"
WARMUP_REQUESTS=2000
CONNECTIONS=64
if [ "$REQUESTS" -lt "$CONNECTIONS" ]; then
    echo "$bench_name: PORTICO_BENCH_REQUESTS must be at least $CONNECTIONS (one per connection)" >&2
    exit 2
fi
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

# The outcome per proxy: instructions per request, or why there is no figure.
declare -A PER_REQUEST=() WHY=()

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
openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj '/CN=*.bench.test' \
    -addext 'subjectAltName=DNS:*.bench.test' -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
python3 "$here/gen.py" bench "$tmp"
grep -qx 'daemon off;' "$tmp/nginx/nginx.conf" ||
    { echo "$bench_name: $tmp/nginx/nginx.conf has no 'daemon off;'" >&2; exit 1; }

# --- backend, core $LOAD_CPU -------------------------------------------------------------
spawn backend "$LOAD_CPU" nginx -p "$tmp/backend/" -e "$tmp/backend/error.log" -c "$tmp/backend/nginx.conf"
backend_pid=$!
wait_listen backend "$backend_pid" "$BACKEND_IP" "$BACKEND_PORT"

# --- one proxy under callgrind -----------------------------------------------------------

# addr_of PROXY: "ADDR PORT" where PROXY serves HTTP.
addr_of() {
    case "$1" in
        portico) echo "$PORTICO_IP $PORTICO_HTTP_PORT" ;;
        *) echo "${PEER_IP[$1]} 80" ;;
    esac
}

# urls PROXY: the 10 URLs of the runs, host $HOST, paths /p0/bench ... /p9/bench.
urls() {
    local addr port authority p
    read -r addr port <<<"$(addr_of "$1")"
    authority="$HOST"
    [ "$port" = 80 ] || authority="$HOST:$port"
    for p in $(seq 0 9); do echo "http://$authority/p$p/bench"; done
}

# probe PROXY HOST PATH: "CODE BODY" of one request through PROXY.
probe() {
    local addr port out
    read -r addr port <<<"$(addr_of "$1")"
    rm -f "$tmp/probe.body"
    out="$(curl -s --max-time 10 -o "$tmp/probe.body" -w '%{http_code}' -H "Host: $2" \
        "http://$addr:$port$3" 2>/dev/null)" || out="000"
    if [ -f "$tmp/probe.body" ]; then
        echo "$out $(tr -d '\n' <"$tmp/probe.body")"
    else
        echo "$out"
    fi
}

# stop PID: TERM, then KILL after 30 s (valgrind writes its last dump on exit); takes PID out
# of $pids, so the exit trap does not signal a number the system may have given to another
# process since.
stop() {
    local pid=$1 p kept=()
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do
        [ "$p" = "$pid" ] || kept+=("$p")
    done
    pids=(${kept[@]+"${kept[@]}"})
}

# h2load_ok OUT: true when h2load's output OUT says all $REQUESTS requests succeeded with 2xx.
h2load_ok() {
    awk -v n="$REQUESTS" '
        /^requests:/ { ok_req = ($2 == n && $8 == n) }
        /^status codes:/ { ok_2xx = ($3 == n) }
        END { exit !(ok_req && ok_2xx) }' "$1"
}

# measure PROXY CMD...: runs CMD (the proxy, in the foreground) under callgrind on core
# $PROXY_CPU and sets PER_REQUEST[PROXY], or WHY[PROXY] when it could not be measured.
measure() {
    local proxy=$1 cg pid got ok route host path addr port out dump total uris listeners
    shift
    cg="$results/callgrind-$proxy.out"
    spawn "$proxy" "$PROXY_CPU" valgrind --tool=callgrind --callgrind-out-file="$cg" "$@"
    pid=$!
    read -r addr port <<<"$(addr_of "$proxy")"
    echo "  $proxy: starting under callgrind (pid $pid) ..."

    ok=""
    for _ in $(seq $((START_TIMEOUT * 2))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            WHY[$proxy]="exited before answering (log: last lines below)"
            tail -n 20 "$tmp/$proxy.log" >&2 || true
            stop "$pid"
            return 0
        fi
        got="$(probe "$proxy" "$HOST" /p3/bench)"
        if [ "$got" = "200 $BODY" ]; then ok=1; break; fi
        sleep 0.5
    done
    if [ -z "$ok" ]; then
        WHY[$proxy]="no 200 from http://$addr:$port/p3/bench (Host $HOST) after $START_TIMEOUT s; last: '$got'"
        stop "$pid"
        return 0
    fi
    # The one answering must be ours, not another program that took the address meanwhile.
    listeners="$(ss -Hltnp "src $addr and sport = :$port" || true)"
    if ! grep -q "pid=$pid," <<<"$listeners"; then
        WHY[$proxy]="$addr:$port is not served by the process started here: $(tr -s ' \n' ' ' <<<"$listeners")"
        stop "$pid"
        return 0
    fi
    # Real routes, not a catch-all.
    for route in $(for p in $(seq 0 9); do echo "$HOST:/p$p/bench"; done) \
        "$HOST:/zz" nope.bench.test:/p3/bench; do
        host="${route%%:*}"
        path="${route#*:}"
        got="$(probe "$proxy" "$host" "$path")"
        case "$host$path" in
            "$HOST"/p?/bench) [ "$got" = "200 $BODY" ] && continue ;;
            *) [ "${got%% *}" = 404 ] && continue ;;
        esac
        WHY[$proxy]="does not route as expected: $host$path got '$got'"
        stop "$pid"
        return 0
    done

    mapfile -t uris < <(urls "$proxy")
    out="$results/h2load-$proxy.txt"
    if ! timeout "$RUN_TIMEOUT" taskset -c "$LOAD_CPU" h2load --h1 -n "$WARMUP_REQUESTS" -c "$CONNECTIONS" \
        --connect-to="$addr:$port" "${uris[@]}" >"$results/h2load-warmup-$proxy.txt" 2>&1; then
        WHY[$proxy]="warm-up h2load failed ($(tail -n 1 "$results/h2load-warmup-$proxy.txt"))"
        stop "$pid"
        return 0
    fi
    if ! timeout 120 callgrind_control -z "$pid" >"$tmp/cg-control-$proxy.txt" 2>&1; then
        WHY[$proxy]="callgrind_control -z $pid failed: $(tr '\n' ' ' <"$tmp/cg-control-$proxy.txt")"
        stop "$pid"
        return 0
    fi
    timeout "$RUN_TIMEOUT" taskset -c "$LOAD_CPU" h2load --h1 -n "$REQUESTS" -c "$CONNECTIONS" \
        --connect-to="$addr:$port" "${uris[@]}" >"$out" 2>&1 || true
    if ! timeout 120 callgrind_control -d "$pid" >>"$tmp/cg-control-$proxy.txt" 2>&1; then
        WHY[$proxy]="callgrind_control -d $pid failed: $(tr '\n' ' ' <"$tmp/cg-control-$proxy.txt")"
        stop "$pid"
        return 0
    fi
    stop "$pid"
    grep -E '^(requests|status codes):' "$out" | sed 's/^/    /'
    if ! h2load_ok "$out"; then
        WHY[$proxy]="h2load: not all $REQUESTS requests succeeded with 2xx ($(grep -E '^(requests|status codes):' "$out" | tr '\n' ' '))"
        return 0
    fi
    dump="$cg.1"
    if [ ! -s "$dump" ]; then
        WHY[$proxy]="no callgrind dump $dump"
        return 0
    fi
    total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    if ! [[ "$total" =~ ^[0-9]+$ ]] || [ "$total" -eq 0 ]; then
        WHY[$proxy]="no PROGRAM TOTALS in $dump"
        return 0
    fi
    PER_REQUEST[$proxy]="$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')"
    echo "    $(thousands "$total") instructions in all, $(thousands "${PER_REQUEST[$proxy]}") per request"
}

# top_functions DUMP N: the N functions with the largest self cost in the callgrind file DUMP,
# in instructions per request. callgrind_annotate --inclusive=no is no use on a dump taken
# after `callgrind_control -z`: the calls in progress at the zeroing (main, the event loop)
# are written with `calls=0`, which callgrind_annotate then counts as the caller's self cost.
# Here the cost line after every calls= line is the callee's inclusive cost and is skipped.
top_functions() {
    python3 - "$1" "$2" "$REQUESTS" <<'EOF'
import collections, os, re, sys

path, top, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = {"fn": "fn", "cfn": "fn", "ob": "ob", "cob": "ob",
          "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl"}
names = {"fn": {}, "ob": {}, "fl": {}}
compressed = re.compile(r"\((\d+)\)(?:\s+(.*))?$")

def name(kind, value):
    m = compressed.match(value)
    if not m:
        return value
    table = names[family[kind]]
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), "?")

self_cost = collections.Counter()
total = 0
ob = fn = ""
after_call = False
with open(path) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        if line[0].isdigit() or line[0] in "+-*":
            if after_call:
                after_call = False
                continue
            fields = line.split()
            if len(fields) >= 2:
                self_cost[(fn, ob)] += int(fields[1])
            continue
        key, sep, value = line.partition("=")
        if sep and key in family:
            value = name(key, value)
            if key == "ob":
                ob = value
            elif key == "fn":
                fn = value
        elif sep and key == "calls":
            after_call = True
        elif line.startswith(("summary:", "totals:")):
            total = max(total, int(line.split()[1]))
total = total or sum(self_cost.values())
for (fn, ob), cost in self_cost.most_common(top):
    label = fn if len(fn) <= 90 else fn[:87] + "..."
    print(f"  {cost / requests:>9,.0f}  {100 * cost / total:5.1f}%  {label} [{os.path.basename(ob)}]")
EOF
}

# thousands N: N with commas.
thousands() {
    sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"
}

# --- the runs, core $PROXY_CPU ------------------------------------------------------------
echo
banner "L7 Ingress instruction counts (callgrind)"
echo "HTTP/1.1 keep-alive, h2load --h1 -c $CONNECTIONS, $HOST /p0/bench ... /p9/bench in turn:"
echo "  $WARMUP_REQUESTS requests of warm-up, then N = $REQUESTS requests counted per proxy"
echo "user-space instructions only (callgrind, all threads of the proxy); kernel work is NOT counted"
echo

portico_flags_missing=()
if [ ! -x "$portico" ] || ! "$portico" run --help >"$tmp/portico-help.txt" 2>&1; then
    WHY[portico]="$portico does not exist or has no 'run' command"
else
    for flag in --ingress-http --ingress-https --access-log --dns; do
        grep -q -- "$flag" "$tmp/portico-help.txt" || portico_flags_missing+=("$flag")
    done
    if [ "${#portico_flags_missing[@]}" -gt 0 ]; then
        WHY[portico]="\`portico run --help\` has no ${portico_flags_missing[*]}"
    fi
fi
if [ -z "${WHY[portico]:-}" ]; then
    TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" measure portico "$portico" run \
        --manifests "$tmp/portico/manifests" --state "$tmp/portico/state" --admin "$ADMIN" \
        --ingress-http "$PORTICO_IP:$PORTICO_HTTP_PORT" --ingress-https "$PORTICO_IP:$PORTICO_HTTPS_PORT" \
        --access-log off --dns off --drain 1s
fi
measure nginx nginx -g 'master_process off;' -p "$tmp/nginx/" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf"
measure haproxy haproxy -db -f "$tmp/haproxy/haproxy.cfg"

# --- report ------------------------------------------------------------------------------
echo
portico_line="portico (not measured),"
if [ -n "${PER_REQUEST[portico]:-}" ]; then
    portico_line="portico $(portico_version 2>/dev/null | head -n 1) (TOKIO_WORKER_THREADS=1),"
fi
echo "$portico_line" \
    "$(nginx -v 2>&1 | sed 's#.*nginx/#nginx #') (1 worker, master_process off)," \
    "$(haproxy -v | head -n 1 | awk '{print "haproxy", $3}') (nbthread 1): core $PROXY_CPU, under $(valgrind --version)"
echo "$(h2load --version | head -n 1 | sed 's#.*nghttp2/#h2load #'), backend nginx (1 worker, not under valgrind): core $LOAD_CPU"
echo
printf '  %-8s %22s %16s\n' proxy "user instr/request" "portico/proxy"
status=0
for proxy in "${PROXIES[@]}"; do
    if [ -n "${PER_REQUEST[$proxy]:-}" ]; then
        ratio="-"
        if [ "$proxy" != portico ] && [ -n "${PER_REQUEST[portico]:-}" ]; then
            ratio="$(awk -v a="${PER_REQUEST[portico]}" -v b="${PER_REQUEST[$proxy]}" 'BEGIN { printf "%.2fx", a / b }')"
        fi
        printf '  %-8s %22s %16s\n' "$proxy" "$(thousands "${PER_REQUEST[$proxy]}")" "$ratio"
    else
        printf '  %-8s %22s %16s\n' "$proxy" INVALID -
        status=1
    fi
done
echo "  (user-space instructions only: kernel work, syscalls and the loopback TCP stack, is not counted;"
echo "   below 1x: Portico executes fewer instructions per request than that proxy)"
for proxy in "${PROXIES[@]}"; do
    if [ -z "${PER_REQUEST[$proxy]:-}" ]; then
        echo "!! $proxy INVALID: ${WHY[$proxy]:-not measured}"
        echo "$bench_name: $proxy was not measured: ${WHY[$proxy]:-not measured}" >&2
    fi
done
if [ -n "${PER_REQUEST[portico]:-}" ]; then
    echo
    echo "Portico's top 5 functions by self cost (user instructions per request, share of all;"
    echo "code inlined into a function counts as that function's):"
    top_functions "$results/callgrind-portico.out.1" 5 || echo "  (could not read $results/callgrind-portico.out.1)"
fi
exit "$status"
