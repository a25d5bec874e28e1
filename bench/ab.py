#!/usr/bin/env python3
"""A/B of rainstorm binaries on one job: each round runs every binary once, in turn, so a
machine that slows down or speeds up weighs on all of them alike; prints each one's median
wall time (time.perf_counter around the process) and CPU time (user + system, getrusage of
the children), with the range.

usage: bench/ab.py JOB.toml BIN[,BIN...] [ROUNDS] [WORKERS]

Every run must exit 0. Check the output of one run against the reference separately
(examples/reference.py): this only times.
"""

import resource
import statistics
import subprocess
import sys
import time


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    job, bins = argv[0], argv[1].split(",")
    rounds = int(argv[2]) if len(argv) > 2 else 8
    workers = argv[3] if len(argv) > 3 else "3"
    wall = {b: [] for b in bins}
    cpu = {b: [] for b in bins}
    for _ in range(rounds):
        for b in bins:
            u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            p = subprocess.run([b, "run", job, "--workers", workers],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            t1 = time.perf_counter()
            u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if p.returncode != 0:
                sys.stderr.write(p.stderr.decode(errors="replace"))
                sys.stderr.write("%s exited %d\n" % (b, p.returncode))
                return 1
            wall[b].append(t1 - t0)
            cpu[b].append((u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime))
    for b in bins:
        print("%-28s wall median %.3f s (%.3f-%.3f)  CPU median %.3f s" % (
            b, statistics.median(wall[b]), min(wall[b]), max(wall[b]),
            statistics.median(cpu[b])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
