#!/usr/bin/env bash
# Route change at 10,000 Ingresses: how long after a manifest file changes does Portico serve
# the new route? On one machine, over loopback only.
#
# bench/ingress/gen.py writes 10,000 Ingresses as 100 files of 100 in one folder (Ingress
# iNNNNN, host iNNNNN.reload.test, path / Prefix, to Service `bench` port 80) plus the Service
# and its EndpointSlice (nginx on 127.0.0.1:8080, a small static 200). Then:
#
#  1. Start: `portico run --manifests DIR --debounce 10ms ...`; prints how long until /readyz
#     answers and until Host i00000.reload.test (and i09999) get a 200.
#  2. Five times: append one new Ingress (host newK.reload.test) to one of the 100 files, each
#     time another file, taking the time just before the write, and poll as fast as is useful
#     (bench/ingress/reload_probe.py: one raw connection and one GET per try, 1 ms apart) until
#     Host newK.reload.test answers 200. Before the write the host must not answer 200.
#     Prints each latency and the median.
#
# `--debounce 10ms` instead of the default 200 ms: the debounce is a quiet time after a change
# before it is applied, so it is part of every latency measured here.
# Portico runs with TOKIO_WORKER_THREADS=1 pinned to core 1; nginx (one worker) and the poller
# to core 0. Target: median under 100 ms. Also prints Portico's RSS (VmRSS, and VmHWM: the peak)
# after the start and at the end.
#
# Never fails on a missed target. Fails (non-zero) when something does not run: a tool is
# missing, a port is taken, Portico has no --ingress-http yet, does not start, or does not
# serve a new route within 60 s.
#
# Usage: bench/ingress-reload.sh                               (from any folder)
#        PORTICO_BENCH_INGRESSES=1000 bench/ingress-reload.sh  (fewer Ingresses; default 10000)
#        PORTICO_BENCH_KEEP=DIR bench/ingress-reload.sh        (keep Portico's log and the manifests)
#        PORTICO_BENCH_BIN=FILE bench/ingress-reload.sh        (measure this portico binary; no cargo build)
# All traffic stays on 127.0.0.0/8.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/bench/ingress"
bench_name="ingress reload bench"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root"

INGRESSES="${PORTICO_BENCH_INGRESSES:-10000}"
whole_numbers "PORTICO_BENCH_INGRESSES takes a whole number >= 1" "$INGRESSES"
FILES=100
[ "$INGRESSES" -ge "$FILES" ] || FILES="$INGRESSES"
CHANGES=5
DEBOUNCE=10ms
TARGET_MS=100
ADMIN=127.0.0.1:19652
PORTICO_IP=127.0.0.1
PORTICO_HTTP_PORT=18081
PORTICO_HTTPS_PORT=18444
BACKEND_IP=127.0.0.1
BACKEND_PORT=8080

pick_cpus

# --- tools -------------------------------------------------------------------------------
install_missing nginx
require_tools curl taskset python3 ss

# --- build -------------------------------------------------------------------------------
build_portico
help="$("$portico" run --help 2>&1)" || { echo "ingress reload bench: $portico has no 'run' command" >&2; exit 1; }
for flag in --ingress-http --ingress-https --access-log --debounce; do
    grep -q -- "$flag" <<<"$help" || { echo "ingress reload bench: \`portico run --help\` has no $flag yet" >&2; exit 1; }
done

# --- processes and cleanup ---------------------------------------------------------------
make_tmp portico-ingress-reload
mkdir -p "$tmp/state" "$tmp/backend"
# PORTICO_BENCH_KEEP also keeps the manifests (with the Ingresses appended).
KEEP_DIRS=(manifests)

# memory PID: "VmRSS VmHWM" in MiB.
memory() {
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { printf "%.1f MiB (peak VmHWM %.1f MiB)", r / 1024, h / 1024 }' "/proc/$1/status"
}
# cpu_seconds PID: user + system CPU seconds of the process so far.
cpu_seconds() {
    awk -v c="$(cpu_ticks "$1")" -v t="$clk_tck" 'BEGIN { printf "%.2f", c / t }'
}

ensure_free "$BACKEND_IP" "$BACKEND_PORT"
ensure_free "${ADMIN%:*}" "${ADMIN##*:}"
ensure_free "$PORTICO_IP" "$PORTICO_HTTP_PORT"
ensure_free "$PORTICO_IP" "$PORTICO_HTTPS_PORT"
ensure_free 127.96.0.20 80

# --- manifests and backend ---------------------------------------------------------------
python3 "$here/gen.py" reload "$tmp/manifests" --ingresses "$INGRESSES" --files "$FILES"
files=("$tmp"/manifests/ingresses-*.yaml)
size="$(du -sk "$tmp/manifests" | awk '{ printf "%.1f MB", $1 / 1024 }')"

sed "s#@DIR@#$tmp/backend#g" "$here/backend.conf.in" >"$tmp/backend/nginx.conf"
start_backend error.log "$BACKEND_IP" "$BACKEND_PORT"

echo
banner "Ingress route change benchmark"
echo "portico $(portico_version) (TOKIO_WORKER_THREADS=1, --debounce $DEBOUNCE): core $PROXY_CPU;" \
    "nginx backend and the poller: core $LOAD_CPU"
echo "$INGRESSES Ingresses (one host, path / each) in ${#files[@]} files, $size"
echo "note: --debounce $DEBOUNCE (default 200ms): the quiet time Portico waits after a change is part of each latency"
echo

# --- 1. start ----------------------------------------------------------------------------
t0="$(now)"
TOKIO_WORKER_THREADS=1 RUST_LOG="${RUST_LOG:-warn}" spawn portico "$PROXY_CPU" "$portico" run \
    --manifests "$tmp/manifests" --state "$tmp/state" --admin "$ADMIN" \
    --ingress-http "$PORTICO_IP:$PORTICO_HTTP_PORT" --ingress-https "$PORTICO_IP:$PORTICO_HTTPS_PORT" \
    --access-log off --debounce "$DEBOUNCE" --drain 1s
portico_pid=$!

wait_ready "$portico_pid" "$ADMIN" 300 \
    || { echo "ingress reload bench: Portico not ready after 300 s (http://$ADMIN/readyz)" >&2; exit 1; }
ready="$(now)"
wait_listen portico "$portico_pid" "$PORTICO_IP" "$PORTICO_HTTP_PORT"
first_host="i00000.reload.test"
last_host="$(printf 'i%05d.reload.test' $((INGRESSES - 1)))"
# Seconds from the start until the first and the last Ingress's host answer 200.
read -r serving all <<<"$(taskset -c "$LOAD_CPU" python3 "$here/reload_probe.py" wait \
    "$PORTICO_IP" "$PORTICO_HTTP_PORT" "$t0" 300 "$first_host" "$last_host" | tr '\n' ' ')" \
    || { alive portico "$portico_pid"; exit 1; }
[ -n "$all" ] || { alive portico "$portico_pid"; exit 1; }
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: nothing.reload.test' "http://$PORTICO_IP:$PORTICO_HTTP_PORT/")"
[ "$code" = 404 ] || { echo "ingress reload bench: an unknown host got $code, not 404: not a real routing table" >&2; exit 1; }

echo "-- 1. start with $INGRESSES Ingresses --"
awk -v a="$t0" -v b="$ready" -v c="$serving" -v d="$all" -v f="$first_host" -v l="$last_host" 'BEGIN {
    printf "  %-40s %6.2f s after the start\n", "/readyz answers", b - a
    printf "  %-40s %6.2f s\n", "Host " f " gets 200", c
    printf "  %-40s %6.2f s\n", "Host " l " gets 200", d }'
echo "  Portico RSS $(memory "$portico_pid"), CPU $(cpu_seconds "$portico_pid") s so far"

# --- 2. route changes --------------------------------------------------------------------
echo "-- 2. append one Ingress to a file of ${#files[@]}, time until its host answers 200 --"
latencies=()
for k in $(seq 1 "$CHANGES"); do
    sleep 1
    file="${files[$(((k * 37) % ${#files[@]}))]}"
    out="$(taskset -c "$LOAD_CPU" python3 "$here/reload_probe.py" append "$file" "new$k" "new$k.reload.test" \
        "$PORTICO_IP" "$PORTICO_HTTP_PORT" 60)" || { alive portico "$portico_pid"; exit 1; }
    read -r ms tries <<<"$out"
    latencies+=("$ms")
    printf "  new%d.reload.test  (%s)  %8.1f ms  (%s tries)\n" "$k" "$(basename "$file")" "$ms" "$tries"
done
alive portico "$portico_pid"
echo "  Portico RSS $(memory "$portico_pid") at the end"

echo
printf '%s\n' "${latencies[@]}" | sort -g | awk -v n="$CHANGES" -v t="$TARGET_MS" -v d="$DEBOUNCE" -v ing="$INGRESSES" '
    { v[NR] = $1 }
    END {
        m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "route change at %d Ingresses: median %.1f ms (min %.1f, max %.1f) over %d changes, debounce %s included\n", ing, m, v[1], v[n], n, d
        printf "verdict: median %s %d ms target: %.2fx %s\n", (m < t) ? "under the" : "over the", t, m / t, (m < t) ? "ok" : "MISSED"
    }'
