#!/usr/bin/env python3
"""RainStorm operator for benchmarks: pass every tuple through unchanged after burning CPU.

usage: burn.py ITERATIONS

Each tuple costs ITERATIONS rounds of SHA-256 over its value (~1 µs a round on a current
core), so the stage is CPU-bound by construction and its throughput says how much CPU the
engine gives it (bench/scale_hosts.sh: one worker against two). Output = input: one
`key<TAB>value` line per tuple, copied as read (protocol escapes left as they are).
"""

import hashlib
import os
import sys


def main(argv):
    if len(argv) != 1 or not argv[0].isdigit():
        sys.stderr.write("usage: burn.py ITERATIONS\n")
        return 2
    rounds = int(argv[0])
    out = sys.stdout.buffer
    tail = b""
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        cut = chunk.rfind(b"\n")
        if cut < 0:
            tail += chunk
            continue
        data = (tail + chunk[:cut + 1]) if tail else chunk[:cut + 1]
        tail = chunk[cut + 1:]
        for line in data.splitlines():
            h = line
            for _ in range(rounds):
                h = hashlib.sha256(h).digest()
        # Answered once all available input is consumed, like examples/ops/ (a trickle
        # of input gets its output at once, a flood is written in big blocks).
        out.write(data)
        out.flush()
    if tail:
        h = tail
        for _ in range(rounds):
            h = hashlib.sha256(h).digest()
        out.write(tail + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(1)
