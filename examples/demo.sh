#!/usr/bin/env bash
# One command for a newcomer: generate the demo dataset if needed, build RainStorm (release),
# and run app2 (filter "Punched Telespar" → running count per category) on an embedded
# 3-worker cluster. Output lines go to stdout and to out/app2.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
examples/make-data.sh
cargo build --release --quiet
exec target/release/rainstorm run "${1:-examples/jobs/app2.toml}"
