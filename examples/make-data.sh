#!/usr/bin/env bash
# Create the demo dataset examples/data/signs.csv (20,000 lines by default) unless it exists.
#
# usage: examples/make-data.sh [LINES]      (FORCE=1 to regenerate; SEED=n to change the seed)
#
# The data is generated, not downloaded, and the same LINES/SEED always give the same file,
# so it need not be committed (examples/data/ is meant to be git-ignored).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lines="${1:-20000}"
seed="${SEED:-425}"
out="$here/data/signs.csv"
if [ -s "$out" ] && [ "${FORCE:-0}" != "1" ]; then
    echo "$out already exists ($(wc -l < "$out") lines); FORCE=1 to regenerate" >&2
    exit 0
fi
python3 "$here/gen_signs.py" --lines "$lines" --seed "$seed" --out "$out"
echo "wrote $out ($lines lines, seed $seed)" >&2
