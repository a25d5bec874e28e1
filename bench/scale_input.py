#!/usr/bin/env python3
"""Issue 19, target 6: does RainStorm's wall time grow linearly with the input?

    cargo build --release
    python3 bench/scale_input.py [--sizes 1000000,5000000,20000000] [--repeat 2]

For each size (smallest first) it generates the signs dataset (examples/gen_signs.py, seed
425) in --dir (default: a temp dir under /tmp), runs app1 (filter -> select) and app2
(filter -> count-by) with built-in operators, exactly-once, on the embedded cluster
(`rainstorm run --workers 3`, 3 tasks per stage) --repeat times each, interleaved, and
deletes the dataset before the next size (20M lines are ~2.9 GB). Every run is measured the
way bench/run.py measures one (wall time, CPU time, peak RSS of every process in its tree,
sampled from /proc every 50 ms).

Output check without holding the output in memory: the expected output (computed from the
CSV with examples/reference.py's parsing and quoting, streamed) and the sink file are each
reduced to a line count and an order-independent digest (the sum, mod 2^64, of each line's
64-bit BLAKE2b). Equal count and digest means equal multisets (up to a hash collision). At
1M lines or fewer the full multiset comparison of bench/run.py is done as well.

Prints one row per run, then per app: median wall, median time per line, the ratio of the
largest size's time per line to the one before it (target: within 10%, i.e. <= 1.10), and
the largest peak RSS of any single process (target: < 256 MB at 20M).
"""

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = load("bench_run", os.path.join(HERE, "run.py"))
ref = bench.load_reference()

MASK = (1 << 64) - 1
RSS_LIMIT_KB = 256 * 1024


def line_hash(text):
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "little")


def stream_lines(path):
    """The lines of a file as reference.read_lines gives them, one at a time."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield raw.decode("utf-8", "surrogateescape")


def expected_digest(app, path):
    """(lines, digest) of the reference output, streamed (memory: one counter per category)."""
    n = total = 0
    needle = ref.DEFAULT_FILTER
    if app == "app1":
        cols = ref.parse_columns(ref.APP_DEFAULTS["app1"]["select"])
        for line in stream_lines(path):
            if needle not in line:
                continue
            fields = ref.parse_record(line)
            out = ref.write_record([fields[c - 1] if c <= len(fields) else "" for c in cols])
            total = (total + line_hash(out)) & MASK
            n += 1
        return n, total
    col = ref.APP_DEFAULTS["app2"]["count_col"]
    totals = {}
    for line in stream_lines(path):
        if needle not in line:
            continue
        fields = ref.parse_record(line)
        cat = fields[col - 1] if len(fields) >= col else ""
        totals[cat] = totals.get(cat, 0) + 1
    for cat, k in totals.items():
        for i in range(1, k + 1):
            total = (total + line_hash("%s,%d" % (cat, i))) & MASK
            n += 1
    return n, total


def output_digest(path):
    """(lines, digest) of a sink file, read the way reference.read_output splits it."""
    n = total = 0
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            total = (total + line_hash(raw.decode("utf-8", "surrogateescape"))) & MASK
            n += 1
    return n, total


def run_once(args, tmp, data, lines, app, rnd, expected):
    name = "%s-%d-r%d" % (app, lines, rnd)
    d = os.path.join(tmp, "runs", name)
    os.makedirs(d, exist_ok=True)
    job = os.path.join(d, "job.toml")
    sink = os.path.join(d, "out", "sink.txt")
    bench.write_job(job, name, "exactly-once", data, 0, sink,
                    bench.engine_stages(app, "builtin"), args.tasks)
    argv = [args.bin, "run", job, "--workers", str(args.workers), "--summary-json",
            os.path.join(d, "summary.json")]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    log("- %s (load %s): %s" % (name, load, " ".join(argv)))
    # stdout carries every output line too; keep it out of the way.
    res = bench.measure(argv, d, os.devnull, os.path.join(d, "stderr.txt"), args.timeout)
    row = {"app": app, "lines": lines, "res": res, "check": "—", "load": load}
    if not bench.succeeded(res) or not os.path.exists(sink):
        row["check"] = bench.Suite.status_text(res) if not bench.succeeded(res) else "no sink"
        log("  !! failed; stderr:\n" + bench.tail(os.path.join(d, "stderr.txt")))
    else:
        got = output_digest(sink)
        row["check"] = "ok" if got == expected else "DIFF: %d lines, expected %d" % (
            got[0], expected[0])
        if lines <= 1_000_000:
            r = ref.compare(ref.reference_lines(app, data), ref.read_output(sink))
            full = "ok" if r["equal"] else "DIFF"
            if full != ("ok" if row["check"] == "ok" else "DIFF"):
                row["check"] += " (full comparison says %s!)" % full
        row["out_lines"] = got[0]
    row["max_proc_kb"] = max([res["mem"]["main"]] +
                             [mx for _, mx in res["mem"]["kinds"].values()])
    log("  %s s wall, %s s CPU, check %s, peak RSS: rainstorm %s MB, any process %s MB, "
        "tree %s MB" % ("%.2f" % res["wall"] if res["wall"] else "—",
                        "%.1f" % res["cpu"] if res["cpu"] is not None else "—", row["check"],
                        bench.fmt_mb(res["mem"]["main"]), bench.fmt_mb(row["max_proc_kb"]),
                        bench.fmt_mb(res["tree_kb"])))
    shutil.rmtree(d, ignore_errors=True)  # the output at 20M is ~200 MB
    return row


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ok(row):
    return bench.succeeded(row["res"]) and row["check"] == "ok"


def render(rows, args, sizes):
    out = ["| App | Input lines | Run | Wall s | µs per line | CPU s | CPU µs per line "
           "| Load avg at start | Output lines | Check | Peak RSS MB: rainstorm "
           "| Peak RSS MB: tree |", "|" + "---|" * 12]
    for r in rows:
        res = r["res"]
        wall = res["wall"] if bench.succeeded(res) else None
        out.append(bench.md_row([
            r["app"], bench.fmt_int(r["lines"]), r["round"],
            "%.2f" % wall if wall else "—",
            "%.3f" % (wall / r["lines"] * 1e6) if wall else "—",
            "%.1f" % res["cpu"] if res["cpu"] is not None else "—",
            "%.3f" % (res["cpu"] / r["lines"] * 1e6) if wall else "—", r["load"],
            bench.fmt_int(r.get("out_lines", 0)), r["check"],
            bench.fmt_mb(res["mem"]["main"]), bench.fmt_mb(res["tree_kb"])]))
    out += ["", "| App | " + " | ".join("µs/line at %s (median wall s)" % bench.fmt_int(s)
                                         for s in sizes) +
            " | µs/line %s ÷ %s (target ≤ 1.10) | CPU µs/line, same ratio | max RSS of any "
            "process at %s (target < 256 MB) |"
            % (short(sizes[-1]), short(sizes[-2]) if len(sizes) > 1 else "—",
               short(sizes[-1])),
            "|" + "---|" * (len(sizes) + 4)]
    for app in args.apps:
        per_line, cpu_line = {}, {}
        cells = [app]
        for s in sizes:
            done = [r["res"] for r in rows if r["app"] == app and r["lines"] == s and ok(r)]
            m = bench.median([res["wall"] for res in done])
            c = bench.median([res["cpu"] for res in done])
            per_line[s] = m / s * 1e6 if m else None
            cpu_line[s] = c / s * 1e6 if c else None
            cells.append("%.3f (%.2f s, n=%d)" % (per_line[s], m, len(done)) if m else "—")
        if len(sizes) > 1 and per_line[sizes[-1]] and per_line[sizes[-2]]:
            x = per_line[sizes[-1]] / per_line[sizes[-2]]
            cells.append("%.2f %s" % (x, "met" if x <= 1.10 else "missed"))
            cells.append("%.3f / %.3f = %.2f" % (cpu_line[sizes[-1]], cpu_line[sizes[-2]],
                                                  cpu_line[sizes[-1]] / cpu_line[sizes[-2]]))
        else:
            cells += ["—", "—"]
        big = [r["max_proc_kb"] for r in rows if r["app"] == app and r["lines"] == sizes[-1]]
        if big:
            mx = max(big)
            cells.append("%s MB %s" % (bench.fmt_mb(mx), "met" if mx < RSS_LIMIT_KB
                                       else "missed"))
        else:
            cells.append("—")
        out.append(bench.md_row(cells))
    return "\n".join(out)


def short(n):
    return "%gM" % (n / 1e6) if n >= 1_000_000 else bench.fmt_int(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sizes", default="1000000,5000000,20000000",
                    help="comma-separated input sizes in lines, run smallest first")
    ap.add_argument("--apps", default="app1,app2")
    ap.add_argument("--repeat", type=int, default=1, help="runs per app and size")
    ap.add_argument("--seed", type=int, default=425)
    ap.add_argument("--bin", default=bench.DEFAULT_BIN)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    ap.add_argument("--dir", help="where to put datasets and runs (default: a temp dir)")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    args.apps = [a for a in args.apps.split(",") if a]
    for a in args.apps:
        if a not in bench.APPS:
            ap.error("unknown app %r" % a)
    if not os.access(args.bin, os.X_OK):
        ap.error("no rainstorm binary at %s (cargo build --release)" % args.bin)
    tmp = tempfile.mkdtemp(prefix="rainstorm-scale-", dir=args.dir)
    rows = []
    try:
        for size in sizes:
            data = os.path.join(tmp, "signs-%d.csv" % size)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, os.path.join(bench.EXAMPLES, "gen_signs.py"),
                            "--lines", str(size), "--seed", str(args.seed), "--out", data],
                           check=True)
            log("generated %s lines, %.0f MB, in %.0f s" % (
                bench.fmt_int(size), os.path.getsize(data) / 1e6, time.perf_counter() - t0))
            expected = {}
            for app in args.apps:
                t0 = time.perf_counter()
                expected[app] = expected_digest(app, data)
                log("reference %s: %s lines (%.0f s)" % (app, bench.fmt_int(expected[app][0]),
                                                         time.perf_counter() - t0))
            for rnd in range(1, args.repeat + 1):
                for app in args.apps:
                    row = run_once(args, tmp, data, size, app, rnd, expected[app])
                    row["round"] = rnd
                    rows.append(row)
            os.remove(data)
        table = render(rows, args, sizes)
        print("Machine: %s\n" % bench.machine_info())
        print(table)
        return 0 if all(ok(r) for r in rows) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
