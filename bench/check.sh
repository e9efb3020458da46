#!/usr/bin/env bash
# Diagnostics at scale: 10,000 Services in one manifest file, each warned about (its selector
# matches no Pod), so every one of them needs its line found. On one machine, loopback only.
#
#  1. `portico check FILE` under /usr/bin/time: wall time and peak RSS. Target: well under a
#     second (it took 15 s for 5,000 and 92 s for 10,000 when each diagnostic re-split the
#     whole file to find its line).
#  2. `portico run` on the same file plus a second file with one Service; once it serves,
#     a one-line edit of the second file (its port 80 → 81), timed until /plan shows it, and
#     how many of the 10,000 warnings the second reload logged again (target: none).
#
# PORTICO_BENCH_BASE=FILE runs step 1 with another portico binary too (an older build, say),
# side by side, and prints the ratio. No other tool checks Kubernetes manifests offline here
# (`kubectl apply --dry-run` needs an API server), so there is no peer to run beside it.
#
# Never fails on a missed target; fails when something does not run.
# Usage: bench/check.sh                                  (from any folder)
#        PORTICO_BENCH_SERVICES=5000 bench/check.sh      (default 10000)
#        PORTICO_BENCH_BIN=FILE bench/check.sh           (measure this binary; no cargo build)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_name="check bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

services="${PORTICO_BENCH_SERVICES:-10000}"
whole_numbers "PORTICO_BENCH_SERVICES takes a whole number >= 1" "$services"
require_tools python3 curl /usr/bin/time
build_portico
make_tmp portico-check-bench

mkdir -p "$tmp/manifests"
python3 - "$services" "$tmp/manifests/services.yaml" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
docs = [
    f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n"
    f"  selector:\n    app: nobody-{i}\n  ports:\n  - port: 80\n"
    for i in range(n)
]
with open(path, "w") as f:
    f.write("---\n".join(docs))
PY
edited() {
    printf 'apiVersion: v1\nkind: Service\nmetadata:\n  name: edited\nspec:\n  clusterIP: None\n  ports:\n  - port: %s\n' "$1"
}
edited 80 >"$tmp/manifests/edited.yaml"

echo "== check bench: $services warned Services in one file, $(date -u +%Y-%m-%dT%H:%MZ) =="
# time_check BIN: prints "SECONDS RSS_KB" of `BIN check` on the manifests.
time_check() {
    local status=0
    /usr/bin/time -f '%e %M' -o "$tmp/time.txt" "$1" check "$tmp/manifests" >"$tmp/check.txt" 2>&1 || status=$?
    # Warnings only: exit status 0. Anything else means the scenario did not load as meant.
    if [ "$status" -ne 0 ]; then
        echo "$bench_name: $1 check exited with $status:" >&2
        tail -n 5 "$tmp/check.txt" >&2
        exit 1
    fi
    grep -q "0 errors, $services warnings" "$tmp/check.txt" || {
        echo "$bench_name: unexpected summary: $(tail -n 1 "$tmp/check.txt")" >&2
        exit 1
    }
    tail -n 1 "$tmp/time.txt"
}
read -r secs rss <<<"$(time_check "$portico")"
echo "-- 1. portico check --"
awk -v s="$secs" -v r="$rss" 'BEGIN {
    printf "  portico check: %.2f s, peak RSS %.0f MB  (target: well under 1 s: %s)\n", s, r / 1024, (s < 1 ? "ok" : "MISSED")
}'
if [ -n "${PORTICO_BENCH_BASE:-}" ]; then
    read -r base_secs base_rss <<<"$(time_check "$PORTICO_BENCH_BASE")"
    awk -v s="$secs" -v b="$base_secs" -v r="$base_rss" 'BEGIN {
        printf "  %s check: %.2f s, peak RSS %.0f MB; portico/base %.3fx\n", "base", b, r / 1024, s / b
    }'
fi

echo "-- 2. portico run: a one-line edit beside them --"
admin_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$portico" run --manifests "$tmp/manifests" --state "$tmp/state" --admin "127.0.0.1:$admin_port" \
    --dns off --ingress-http 127.0.0.1:0 --ingress-https 127.0.0.1:0 --access-log off \
    --service-cidr 127.112.0.0/16 --debounce 10ms >"$tmp/run.out" 2>"$tmp/run.log" &
pids+=($!)
# generation: the generation of the plan being served (from /metrics: /plan is megabytes).
generation() {
    curl -sf "http://127.0.0.1:$admin_port/metrics" 2>/dev/null | awk '$1 == "portico_config_generation" { print $2 }'
}
started=$(date +%s.%N)
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null || { echo "$bench_name: run did not serve" >&2; exit 1; }
ready=$(date +%s.%N)
first_warnings="$(grep -c "matches no Pod" "$tmp/run.log" || true)"
before=$(date +%s.%N)
# Written whole to a temporary file and renamed over the old one, as editors do: one change.
edited 81 >"$tmp/edited.yaml"
mv "$tmp/edited.yaml" "$tmp/manifests/edited.yaml"
seen=1
live=""
for _ in $(seq 6000); do
    now="$(generation)"
    if [ -n "$now" ] && [ "$now" != "$seen" ]; then
        live=$(date +%s.%N)
        seen="$now"
        curl -sf -o "$tmp/plan.json" "http://127.0.0.1:$admin_port/plan"
        grep -q '"port": 81' "$tmp/plan.json" && break
        live=""
    fi
    sleep 0.005
done
[ -n "$live" ] || { echo "$bench_name: the edit was not served within 30 s" >&2; exit 1; }
sleep 0.5
second_warnings=$(( $(grep -c "matches no Pod" "$tmp/run.log" || true) - first_warnings ))
awk -v a="$started" -v b="$ready" -v c="$before" -v d="$live" -v w1="$first_warnings" -v w2="$second_warnings" 'BEGIN {
    printf "  first plan served after %.2f s (%d warnings logged)\n", b - a, w1
    printf "  one-line edit live after %.0f ms (10 ms of it the debounce); warnings logged again: %d (target 0: %s)\n", (d - c) * 1000, w2, (w2 == 0 ? "ok" : "MISSED")
}'
