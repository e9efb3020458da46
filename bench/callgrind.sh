# shellcheck shell=bash
# Shared part of the instruction-count benchmarks (bench/ingress-instructions.sh,
# bench/l4-instructions.sh): runs each proxy in turn under valgrind's callgrind, counts the
# user-space instructions it executes for a measured h2load run, and reports them per request
# or per connection, with Portico's costliest functions. Sourced, never run, after
# bench/lib.sh (whose spawn, stop-on-exit $pids, $tmp and $results it uses).
#
# Before calling measure, a script has called pick_cpus and make_tmp (bench/lib.sh) and sets:
#   CG_N           requests of each measured h2load run (the N of "instructions / N"), and
#   CG_WARMUP      requests of the warm-up run before it: both set by run_sizes
#   CG_UNIT        what one of the N requests stands for in the output: request, connection
#   BODY           the backend's answer: a proxy is up once it answers "200 $BODY"
#   START_TIMEOUT  seconds a proxy under valgrind gets to answer its first request
#   RUN_TIMEOUT    seconds each h2load run gets to end
#   PROXIES        the proxies, in the order of the report; portico among them
# and defines these hooks:
#   addr_of PROXY       "ADDR PORT" where PROXY serves (checked to be the process started here)
#   probe PROXY         "CODE BODY" of the request that shows PROXY is up (see curl_answer)
#   probe_target PROXY  what probe asks, for messages
#   h2load_args PROXY   h2load's arguments after `--h1 -n N`, one a line (clients, URLs, ...)
#   check_routes PROXY  optional: run once PROXY is up; returns 1 with WHY[PROXY] set when
#                       PROXY does not route as it should
# measure sets PER_UNIT[PROXY], instructions per CG_UNIT, or WHY[PROXY], why there is none;
# report_and_exit prints them and exits.
# All traffic stays on 127.0.0.0/8.

# The outcome per proxy: instructions per CG_UNIT, or why there is no figure.
declare -A PER_UNIT=() WHY=()

# run_sizes KNOB DEFAULT WARMUP CLIENTS WHY: sets CG_N from the environment variable KNOB
# (DEFAULT when unset or empty) and CG_WARMUP to WARMUP; exits 2 unless CG_N is a whole
# number of at least CLIENTS, h2load's clients (WHY says why, e.g. "one per connection").
run_sizes() {
    local knob=$1 clients=$4
    CG_N="${!knob:-$2}"
    CG_WARMUP=$3
    whole_numbers "$knob takes a whole number >= 1" "$CG_N"
    if [ "$CG_N" -lt "$clients" ]; then
        echo "$bench_name: $knob must be at least $clients ($5)" >&2
        exit 2
    fi
}

# stop PID: TERM, then KILL after 30 s (valgrind writes its last dump on exit); takes PID out
# of $pids, so the exit trap does not signal a number the system may have given to another
# process since.
stop() {
    local pid=$1 p kept=()
    kill -TERM "$pid" 2>/dev/null || true
    reap "$pid" 300
    for p in "${pids[@]}"; do
        [ "$p" = "$pid" ] || kept+=("$p")
    done
    pids=(${kept[@]+"${kept[@]}"})
}

# thousands N: N with commas.
thousands() {
    sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"
}

# curl_answer CURL_ARGS...: "CODE BODY" of one request, `curl CURL_ARGS`, the body's line
# breaks taken out; "000" when there is no answer.
curl_answer() {
    local out
    rm -f "$tmp/probe.body"
    out="$(curl -s --max-time 10 -o "$tmp/probe.body" -w '%{http_code}' "$@" 2>/dev/null)" || out="000"
    if [ -f "$tmp/probe.body" ]; then
        echo "$out $(tr -d '\n' <"$tmp/probe.body")"
    else
        echo "$out"
    fi
}

# h2load_ok OUT N: true when h2load's output OUT says all N requests succeeded with 2xx.
h2load_ok() {
    awk -v n="$2" '
        /^requests:/ { ok_req = ($2 == n && $8 == n) }
        /^status codes:/ { ok_2xx = ($3 == n) }
        END { exit !(ok_req && ok_2xx) }' "$1"
}

# h2load_run N OUT PROXY: h2load --h1 -n N with h2load_args PROXY, from core $LOAD_CPU,
# its output in OUT.
h2load_run() {
    local args
    mapfile -t args < <(h2load_args "$3")
    timeout "$RUN_TIMEOUT" taskset -c "$LOAD_CPU" h2load --h1 -n "$1" "${args[@]}" >"$2" 2>&1
}

# measure PROXY CMD...: runs CMD (the proxy, in the foreground) under callgrind on core
# $PROXY_CPU: waits until it answers, checks that it is the one listening and routing, warms
# it up with CG_WARMUP requests, zeroes the counters (`callgrind_control -z PID`), runs the
# CG_N measured requests, dumps the counters (`callgrind_control -d PID`), stops it, and sets
# PER_UNIT[PROXY] = the dump's PROGRAM TOTALS (all the proxy's threads) / CG_N, or WHY[PROXY]
# when it could not be measured.
measure() {
    local proxy=$1 cg pid got ok addr port out dump total listeners
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
        got="$(probe "$proxy")"
        if [ "$got" = "200 $BODY" ]; then ok=1; break; fi
        sleep 0.5
    done
    if [ -z "$ok" ]; then
        WHY[$proxy]="no 200 from $(probe_target "$proxy") after $START_TIMEOUT s; last: '$got'"
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
    if declare -F check_routes >/dev/null && ! check_routes "$proxy"; then
        stop "$pid"
        return 0
    fi

    out="$results/h2load-$proxy.txt"
    if ! h2load_run "$CG_WARMUP" "$results/h2load-warmup-$proxy.txt" "$proxy"; then
        WHY[$proxy]="warm-up h2load failed ($(tail -n 1 "$results/h2load-warmup-$proxy.txt"))"
        stop "$pid"
        return 0
    fi
    if ! timeout 120 callgrind_control -z "$pid" >"$tmp/cg-control-$proxy.txt" 2>&1; then
        WHY[$proxy]="callgrind_control -z $pid failed: $(tr '\n' ' ' <"$tmp/cg-control-$proxy.txt")"
        stop "$pid"
        return 0
    fi
    h2load_run "$CG_N" "$out" "$proxy" || true
    if ! timeout 120 callgrind_control -d "$pid" >>"$tmp/cg-control-$proxy.txt" 2>&1; then
        WHY[$proxy]="callgrind_control -d $pid failed: $(tr '\n' ' ' <"$tmp/cg-control-$proxy.txt")"
        stop "$pid"
        return 0
    fi
    stop "$pid"
    grep -E '^(requests|status codes):' "$out" | sed 's/^/    /'
    if ! h2load_ok "$out" "$CG_N"; then
        WHY[$proxy]="h2load: not all $CG_N requests succeeded with 2xx ($(grep -E '^(requests|status codes):' "$out" | tr '\n' ' '))"
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
    PER_UNIT[$proxy]="$(awk -v t="$total" -v n="$CG_N" 'BEGIN { printf "%.0f", t / n }')"
    echo "    $(thousands "$total") instructions in all, $(thousands "${PER_UNIT[$proxy]}") per $CG_UNIT"
}

# portico_runs FLAG...: true when $portico has a `run` command with every FLAG; else sets
# WHY[portico] and returns 1.
portico_runs() {
    local flag missing=()
    if [ ! -x "$portico" ] || ! "$portico" run --help >"$tmp/portico-help.txt" 2>&1; then
        WHY[portico]="$portico does not exist or has no 'run' command"
        return 1
    fi
    for flag in "$@"; do
        grep -q -- "$flag" "$tmp/portico-help.txt" || missing+=("$flag")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        WHY[portico]="\`portico run --help\` has no ${missing[*]}"
        return 1
    fi
}

# portico_label: how the report names Portico: its version when it was measured.
portico_label() {
    if [ -n "${PER_UNIT[portico]:-}" ]; then
        echo "portico $(portico_version 2>/dev/null | head -n 1) (TOKIO_WORKER_THREADS=1),"
    else
        echo "portico (not measured),"
    fi
}

# top_functions DUMP TOP N: the TOP functions with the largest self cost in the callgrind file
# DUMP, in instructions per request of the N requests it counts. callgrind_annotate
# --inclusive=no is no use on a dump taken after `callgrind_control -z`: the calls in progress
# at the zeroing (main, the event loop) are written with `calls=0`, which callgrind_annotate
# then counts as the caller's self cost. Here the cost line after every calls= line is the
# callee's inclusive cost and is skipped.
top_functions() {
    python3 - "$1" "$2" "$3" <<'EOF'
import collections, os, re, sys

path, top, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
    print(f"  {cost / n:>9,.0f}  {100 * cost / total:5.1f}%  {label} [{os.path.basename(ob)}]")
EOF
}

# report_and_exit THAN: the table of PER_UNIT, a row per proxy of PROXIES with the ratio
# Portico / that proxy (THAN names the other side of the ratio in the note under the table:
# "that proxy", "HAProxy"), INVALID and why for each proxy not measured, then Portico's top 5
# functions. Exits 1 when a proxy was not measured, else 0.
report_and_exit() {
    local than=$1 head="user instr/$CG_UNIT" width proxy ratio status=0
    width=$((${#head} + 4))
    printf '  %-8s %*s %16s\n' proxy "$width" "$head" "portico/proxy"
    for proxy in "${PROXIES[@]}"; do
        if [ -n "${PER_UNIT[$proxy]:-}" ]; then
            ratio="-"
            if [ "$proxy" != portico ] && [ -n "${PER_UNIT[portico]:-}" ]; then
                ratio="$(awk -v a="${PER_UNIT[portico]}" -v b="${PER_UNIT[$proxy]}" 'BEGIN { printf "%.2fx", a / b }')"
            fi
            printf '  %-8s %*s %16s\n' "$proxy" "$width" "$(thousands "${PER_UNIT[$proxy]}")" "$ratio"
        else
            printf '  %-8s %*s %16s\n' "$proxy" "$width" INVALID -
            status=1
        fi
    done
    echo "  (user-space instructions only: kernel work, syscalls and the loopback TCP stack, is not counted;"
    echo "   below 1x: Portico executes fewer instructions per $CG_UNIT than $than)"
    for proxy in "${PROXIES[@]}"; do
        if [ -z "${PER_UNIT[$proxy]:-}" ]; then
            echo "!! $proxy INVALID: ${WHY[$proxy]:-not measured}"
            echo "$bench_name: $proxy was not measured: ${WHY[$proxy]:-not measured}" >&2
        fi
    done
    if [ -n "${PER_UNIT[portico]:-}" ]; then
        echo
        echo "Portico's top 5 functions by self cost (user instructions per $CG_UNIT, share of all;"
        echo "code inlined into a function counts as that function's):"
        top_functions "$results/callgrind-portico.out.1" 5 "$CG_N" ||
            echo "  (could not read $results/callgrind-portico.out.1)"
    fi
    exit "$status"
}
