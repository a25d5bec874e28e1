#!/usr/bin/env bash
# What a logged job costs in store writes and how soon its output is complete, in cluster
# mode (a leader and two workers on loopback, the default store: every store request goes
# through the leader). For each commit interval given, runs one exactly-once job (20,000
# lines at 2,000 lines/s, identity → identity, 2 tasks each) and prints: when every tuple had
# reached the sink, when the job succeeded (output written), the sink's segments, every
# logged task's segments, the end-to-end latency the engine measured, and checks the output;
# then, per compaction fan-in given in FANINS (RAINSTORM_LOG_COMPACT_FANIN; 0 = none), the
# log objects left per logged task (most of any task) and the store requests the workers made
# through the leader per job-minute (the leader's `rainstorm_worker_store_requests`).
#
#   bench/store_cost.sh [COMMIT_MS ...]      (default: 0 100)
#   BIN=target/debug/rainstorm LINES=20000 RATE=2000 bench/store_cost.sh 0 50 100 250
#   LINES=120000 FANINS="0 8" bench/store_cost.sh 100     (one job-minute, with and without)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=$(realpath -m "${BIN:-target/release/rainstorm}")
LINES=${LINES:-20000}
RATE=${RATE:-2000}
[[ -x $BIN ]] || cargo build --release --bin rainstorm
[[ $# -gt 0 ]] || set -- 0 100
FANINS=${FANINS:-8}
export RAINSTORM_TOKEN=store-cost-bench-secret-0123456789

one() {
    local commit=$1 fanin=$2 dir pids=()
    dir=$(mktemp -d)
    trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' RETURN
    cd "$dir"
    "$BIN" leader --listen 127.0.0.1:0 --data-dir lead >leader.log 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q "listening on http" leader.log && break; sleep 0.05; done
    export RAINSTORM_LEADER
    RAINSTORM_LEADER=$(grep -o "listening on http://[0-9.:]*" leader.log | head -1 | awk '{print $3}')
    for w in 1 2; do
        RAINSTORM_LOG_COMMIT_MS=$commit RAINSTORM_LOG_COMPACT_FANIN=$fanin "$BIN" worker --data-dir "w$w" >"w$w.log" 2>&1 &
        pids+=($!)
    done
    until [[ $("$BIN" workers --json | grep -o '"alive"' | wc -l) -ge 2 ]]; do sleep 0.05; done
    seq -f "row %07g" 1 "$LINES" >in.txt
    "$BIN" put in.txt in.txt >/dev/null
    printf 'name = "cost"\ndelivery = "exactly-once"\nkeep_logs = true\n[source]\npath = "in.txt"\nrate = %s\n[sink]\npath = "out.txt"\n[[stages]]\ntasks = 2\nop = "identity"\n[[stages]]\ntasks = 2\nop = "identity"\n' "$RATE" >job.toml
    local id t0 ts="" te status
    id=$("$BIN" submit job.toml | tail -1)
    t0=$(date +%s.%N)
    while true; do
        # A light poll (curl and grep): a CLI and a Python start every 50 ms took most of a
        # core on 2-core machines and delayed the jobs' own deliveries (docs/benchmarks.md).
        j=$(curl -s -H "Authorization: Bearer $RAINSTORM_TOKEN" "$RAINSTORM_LEADER/api/jobs/$id")
        status=$(grep -o '"status":"[a-z]*"' <<<"$j" | head -1 | cut -d'"' -f4)
        sink=$(grep -o '"sink_tuples":[0-9]*' <<<"$j" | cut -d: -f2)
        if [[ $sink == "$LINES" && -z $ts ]]; then ts=$(date +%s.%N); fi
        if [[ $status != running && $status != pending ]]; then te=$(date +%s.%N); break; fi
        sleep 0.05
    done
    local sink_segs all_segs lat exact=no
    sink_segs=$(grep -ho "segments=[0-9]*" w1.log w2.log | tail -1 | cut -d= -f2)
    all_segs=$(find lead/store/logs/"$id" -name '*.seg' | wc -l)
    lat=$("$BIN" job "$id" --json | python3 -c 'import json,sys; l=json.load(sys.stdin)["latency_ms"]; print("p50 %.0f ms, p99 %.0f ms" % (l["p50"], l["p99"]))')
    "$BIN" get out.txt got.txt >/dev/null && cmp -s <(sort got.txt) <(sort in.txt) && exact=yes
    local per_task reqs per_min
    per_task=$(find lead/store/logs/"$id" -name '*.seg' -printf '%h\n' | sort | uniq -c | sort -n | tail -1 | awk '{print $1}')
    reqs=$(curl -s -H "Authorization: Bearer $RAINSTORM_TOKEN" "$RAINSTORM_LEADER/metrics" |
        awk '/^rainstorm_worker_store_requests/ {print $2}')
    per_min=$(echo "$reqs * 60 / ($te - $t0)" | bc)
    printf '| %s | %s | %s | %.1f s | %.1f s | %s | %s | %s | %s | %s | %s |\n' "$commit" "$fanin" "$status" \
        "$(echo "$ts - $t0" | bc)" "$(echo "$te - $t0" | bc)" "$sink_segs" "$all_segs" "$per_task" "$per_min" "$lat" "$exact"
    cd - >/dev/null
}

echo "| RAINSTORM_LOG_COMMIT_MS | compaction fan-in | status | all tuples in the sink | job succeeded (output written) | sink's lineage (objects) | log objects left, all tasks | most per task | store requests per job-minute | latency | output exact |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for c in "$@"; do for f in $FANINS; do one "$c" "$f"; done; done
