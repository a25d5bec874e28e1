#!/usr/bin/env bash
# One command for a newcomer: generate the demo dataset if needed, build RainStorm (release),
# and run app2 (filter "Punched Telespar" → running count per category) on an embedded
# 3-worker cluster. Output lines go to stdout and to out/app2.txt.
set -euo pipefail
# A job file given by a path relative to where this was started is found from there.
job=${1:-examples/jobs/app2.toml}
if [[ $# -ge 1 && $job != /* ]]; then
    job="$PWD/$job"
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
examples/make-data.sh
cargo build --release --quiet
# Where cargo put it: CARGO_TARGET_DIR, when set, moves every build (hostile probe 14 saw
# this run a stale binary, or none).
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/rainstorm" run "$job"
