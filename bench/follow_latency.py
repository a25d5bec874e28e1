#!/usr/bin/env python3
"""How late a follower gets each line, beyond the earliest: runs `rainstorm run JOB` (whose
source is paced at RATE lines a second and whose lines are `line N`, N from 1), stamps each
output line as it arrives on stdout, and prints the percentiles of (arrival - N / RATE) above
their minimum. An exactly-once job's lines wait for the sink's commit (at most one commit
interval); anything more is the follower's own delay.

usage: bench/follow_latency.py BIN JOB.toml RATE
"""

import subprocess
import sys
import time


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    binary, job, rate = argv[0], argv[1], float(argv[2])
    p = subprocess.Popen([binary, "run", job, "--workers", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    arrivals = []
    t0 = time.perf_counter()
    for line in p.stdout:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            arrivals.append(time.perf_counter() - t0 - int(parts[1]) / rate)
    if p.wait() != 0 or not arrivals:
        sys.stderr.write("%s exited %d with %d lines\n" % (binary, p.returncode, len(arrivals)))
        return 1
    low = min(arrivals)
    late = sorted(a - low for a in arrivals)

    def pct(f):
        return late[min(len(late) - 1, int(f * len(late)))] * 1000

    print("%s: %d lines, later than the earliest by p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, "
          "max %.0f ms" % (binary, len(late), pct(.5), pct(.9), pct(.99), late[-1] * 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
