#!/usr/bin/env bash
# Issue 19, target 7: throughput of a CPU-bound stage with 1 worker and with 2 workers, each
# worker on its own "host" (network namespace) and pinned to its own core.
#
#   cargo build --release
#   sudo bench/scale_hosts.sh [LINES] [ROUNDS] [ITERATIONS]     # defaults 100000 2 500
#
# Hosts: a bridge on this machine, and one network namespace per node (leader, worker 1,
# worker 2), each with its own address on the bridge, like tests/multihost.rs. Worker 1 runs
# under `taskset -c 0`, worker 2 under `taskset -c 1` (operator processes inherit the
# pinning); the leader is not pinned (it only coordinates and serves the store). The CLI
# talks to the leader through the bridge.
#
# The job: LINES lines of the signs dataset (examples/gen_signs.py) -> one exec stage of 2
# tasks running bench/ops/burn.py ITERATIONS (SHA-256 rounds per tuple, output = input),
# exactly-once. With 1 worker (--slots 2) both tasks share core 0; with 2 workers (--slots 1
# each) the leader has to put one task on each. Each configuration starts a fresh cluster;
# ROUNDS rounds alternate 1 and 2 workers. Each round also runs the control: the same two
# burn.py processes with no engine, each on half the input (key<TAB>line), both pinned to
# core 0 and then one per core: the factor this machine gives two pinned processes right now. Throughput = LINES / wall time of
# `rainstorm submit --follow` (submission to the last output line); the job's own elapsed_ms
# is shown too. The output is checked against the input (sorted, digested).
#
# NICE=-10 runs the leader and workers (and so the operators) at that niceness: on a machine
# shared with other work (builds), a pinned worker otherwise competes with it on its core and
# the numbers say more about the other work than about RainStorm. The load average at the
# start of each run is printed.
#
# Needs root and iproute2; everything is removed on exit, failure or Ctrl-C included.
set -euo pipefail

LINES=${1:-100000}
ROUNDS=${2:-2}
ITERS=${3:-500}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${RAINSTORM_BIN:-$REPO/target/release/rainstorm}
OPS=$REPO/bench/ops
NICE=${NICE:-0}
ID=$(($$ % 200))
NET=10.79.$ID
BR=sbhb$$
TOKEN=scale-hosts-bench-secret-$$-0123456789
TMP=$(mktemp -d /tmp/rainstorm-hosts-XXXXXX)
PIDS=()
NSES=()

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs" >&2; exit 2; }

stop_procs() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}

cleanup() {
    local rc=$?
    stop_procs
    local ns
    for ns in "${NSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    ip link del "$BR" 2>/dev/null || true
    if [ "$rc" != 0 ]; then echo "failed (exit $rc); logs kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ns() { echo "sbh$$-$1"; }
addr() { echo "$NET.$1"; }

# --- the hosts -------------------------------------------------------------------------------
ip link add "$BR" type bridge
ip addr add "$NET.254/24" dev "$BR"
ip link set "$BR" up
for n in 1 2 3; do
    ip netns add "$(ns $n)"
    NSES+=("$(ns $n)")
    ip link add "sbh$$v$n" type veth peer name eth0 netns "$(ns $n)"
    ip link set "sbh$$v$n" master "$BR" up
    ip netns exec "$(ns $n)" ip addr add "$(addr $n)/24" dev eth0
    ip netns exec "$(ns $n)" ip link set eth0 up
    ip netns exec "$(ns $n)" ip link set lo up
done

export RAINSTORM_TOKEN=$TOKEN
export RAINSTORM_LEADER=http://$(addr 1):7070
cli() { "$BIN" "$@"; }

# --- the data --------------------------------------------------------------------------------
python3 "$REPO/examples/gen_signs.py" --lines "$LINES" --seed 425 --out "$TMP/in.csv"
WANT=$(LC_ALL=C sort "$TMP/in.csv" | md5sum | cut -d' ' -f1)

cat > "$TMP/job.toml" <<EOF
name = "burn"
delivery = "exactly-once"
[source]
path = "in.csv"
rate = 0
[sink]
path = "out/burn.txt"
[[stages]]
tasks = 2
exec = "$OPS/burn.py"
args = ["$ITERS"]
EOF

# start_cluster N: a fresh leader on host 1 and N workers on hosts 2.., worker i on core i-1.
start_cluster() {
    local n=$1 slots=$((3 - $1)) d=$TMP/run-$2
    mkdir -p "$d"
    ip netns exec "$(ns 1)" nice -n "$NICE" "$BIN" leader --listen "$(addr 1):7070" --data-dir "$d/leader" \
        --allow-exec "$OPS" 2>"$d/leader.log" &
    PIDS+=($!)
    local i
    for i in $(seq "$n"); do
        ip netns exec "$(ns $((i + 1)))" nice -n "$NICE" taskset -c $((i - 1)) "$BIN" worker \
            --leader "$RAINSTORM_LEADER" --listen "$(addr $((i + 1))):0" \
            --data-dir "$d/worker-$i" --slots "$slots" --allow-exec "$OPS" \
            2>"$d/worker-$i.log" &
        PIDS+=($!)
    done
    local deadline=$((SECONDS + 30)) alive=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        alive=$(cli workers --json 2>/dev/null | jq '[.[] | select(.state == "alive")] | length' \
            2>/dev/null || echo 0)
        [ "$alive" = "$n" ] && break
        sleep 0.2
    done
    [ "$alive" = "$n" ] || { echo "only $alive of $n workers joined" >&2; return 1; }
    cli put "$TMP/in.csv" in.csv >/dev/null
}

awk '{ printf "k%d\t%s\n", NR, $0 }' "$TMP/in.csv" >"$TMP/kv.txt"
split -n l/2 "$TMP/kv.txt" "$TMP/half."
# control CORE_A CORE_B: wall seconds of two burn.py on the halves, pinned to those cores.
control() {
    local t0 t1 a b
    t0=$(date +%s.%N)
    nice -n "$NICE" taskset -c "$1" python3 "$OPS/burn.py" "$ITERS" <"$TMP/half.aa" >/dev/null &
    a=$!
    nice -n "$NICE" taskset -c "$2" python3 "$OPS/burn.py" "$ITERS" <"$TMP/half.ab" >/dev/null &
    b=$!
    wait "$a" "$b"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

RESULTS=()
CONTROL=()
for r in $(seq "$ROUNDS"); do
    c1=$(control 0 0)
    c2=$(control 0 1)
    CONTROL+=("$(printf '| %d | %.2f | %.0f | %.2f | %.0f | %.2f× | %s |' "$r" "$c1" \
        "$(echo "$LINES / $c1" | bc -l)" "$c2" "$(echo "$LINES / $c2" | bc -l)" \
        "$(echo "$c1 / $c2" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)")")
    echo "round $r, control (no engine): ${CONTROL[-1]}" >&2
    for n in 1 2; do
        tag=r$r-w$n
        start_cluster "$n" "$tag"
        d=$TMP/run-$tag
        load=$(cut -d' ' -f1 /proc/loadavg)
        t0=$(date +%s.%N)
        cli submit "$TMP/job.toml" --follow >"$d/out.txt" 2>"$d/submit.log"
        t1=$(date +%s.%N)
        id=$(cli jobs --json | jq -r '.[-1].id')
        elapsed=$(cli job "$id" --json | jq -r '.elapsed_ms')
        placement=$(cli tasks --json | jq -r --arg j "$id" \
            '[.[] | select(.job == $j and .stage == 1) | .worker] | group_by(.) | map(length) | map(tostring) | join("+")')
        got=$(LC_ALL=C sort "$d/out.txt" | md5sum | cut -d' ' -f1)
        check=$([ "$got" = "$WANT" ] && echo ok || echo "DIFF ($(wc -l <"$d/out.txt") lines)")
        wall=$(echo "$t1 - $t0" | bc -l)
        rate=$(echo "$LINES / $wall" | bc -l)
        RESULTS+=("$(printf '| %d | %d | %s | %.2f | %.2f | %.0f | %s | %s |' "$r" "$n" \
            "${placement:-?}" "$wall" "$(echo "$elapsed / 1000" | bc -l)" "$rate" "$check" \
            "$load")")
        echo "round $r, $n worker(s): ${RESULTS[-1]}" >&2
        stop_procs
    done
done

echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $LINES lines, burn.py $ITERS rounds/tuple, 2 tasks, nice $NICE"
echo
echo "| Round | Workers | Stage tasks per worker | Wall s (submit → last line) | Job elapsed s | Lines/s | Check | Load avg at start |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
echo
echo "Control, no engine (two burn.py on half the input each):"
echo
echo "| Round | Both on core 0: s | lines/s | One per core: s | lines/s | factor | Load avg |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${CONTROL[@]}"
# Median throughput per worker count and the factor.
printf '%s\n' "${RESULTS[@]}" | awk -F'|' '
    { w = $3 + 0; v[w, ++n[w]] = $7 + 0; ok = ok && 1; if ($8 !~ /ok/) bad = 1 }
    function med(w,   i, j, t, k) {
        k = n[w]
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
            if (v[w, j] < v[w, i]) { t = v[w, i]; v[w, i] = v[w, j]; v[w, j] = t }
        return k % 2 ? v[w, (k + 1) / 2] : (v[w, k / 2] + v[w, k / 2 + 1]) / 2
    }
    END {
        a = med(1); b = med(2)
        printf "\nMedian lines/s: 1 worker %.0f, 2 workers %.0f; scaling factor %.2f× (goal ≥ 1.7×)%s\n",
            a, b, b / a, bad ? "; SOME OUTPUT DID NOT CHECK" : ""
        exit bad
    }'
