#!/usr/bin/env python3
"""How long a job's output pauses around a live rescale (issue 17, item 3).

    cargo build --release
    python3 bench/rescale.py [--plan 1:4,2:4,1:2,2:2] [--rate 2000] [--gap 14]
                             [--commit-ms MS] [--keep] [--detail FILE]

A leader and three workers (4 slots each) run as separate processes on loopback, with the
default store (under the leader's data dir). One exactly-once job (`--delivery` for another mode) reads `k<i % 97>,<i>` at a
fixed rate through built-in `identity` (2 tasks, max_tasks 4) and built-in `count-by 1`
(2 tasks, max_tasks 4). Its `[autoscale]` watermarks are set so the autoscaler never decides
(low 0, high 1e9): only the script rescales, with `rainstorm scale`:

    steady state (--gap s) → stage 1: 2→4 → stage 2: 2→4 → stage 1: 4→2 → stage 2: 4→2

(`--plan` changes it), waiting after each until `stage_tasks` shows it, then --gap seconds.
Then `set-rate 0` lets the rest of the input through at full speed and the job ends (if it
does not within --timeout seconds, the script cancels it and reports what it got).

What is measured:
  * the follower: the job's NDJSON output stream (`GET /api/jobs/{id}/output`, what `submit
    --follow` reads), every line stamped with this script's clock when its chunk arrived;
  * the sink's log (the job keeps its logs): each segment's mtime is when the sink committed
    it, each batch record carries its source emit time, so the sink latency (source emit →
    sink commit) can be taken over any window, not only cumulatively as `job --json` has it;
  * each line's *schedule delay*: the source paces line i to `start + i / rate` (and catches
    up after a stall), and a count-by line `kK,C` is the C-th line of key K, i.e. line
    `K + 97 (C-1)`; delay = arrival at the follower − that due time. It includes any time the
    source was held back, which the engine's own latency (from the actual emit) does not. The
    start is the earliest emit time in the sink's log (line 0 is emitted when it is due).
    Count-by lines of one key can leave the identity stage out of order; pairing the C-th
    arrival with the C-th due time then under-states single lines but not a pause.

For each rescale the table gives its outcome and `took_ms` (the job's scaling list: from the
request until every upstream task's switch was confirmed; a rebuild of moved state after that
is not in it) and, in the window from 3 s before the rescale started to 3 s after it was done
("around") against the window of the same length just before it ("steady", which for the
first rescale is the initial steady state): the longest gap between consecutive lines at the
follower, the p99 schedule delay at the follower, and the p99 sink latency, which is also
given for each second from 3 s before the rescale started to 3 s after. Keys whose output
stopped long before the others' are reported too. The final output is checked, exactly (as a
multiset), against running counts per key computed here; the script prints PASS or FAIL and
exits 1 on FAIL. `--detail FILE` adds the follower's lines per 100 ms in every window.
"""

import argparse
import http.client
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = os.path.join(REPO, "examples", "ops")
DEFAULT_BIN = os.path.join(REPO, "target", "release", "rainstorm")
TOKEN = "rescale-bench-secret-0123456789abcdef"
KEYS = 97
WORKERS = 3
SLOTS = 4  # 2 + 4 + 2 tasks at the widest point (identity 4 then count-by 4): 8 ≤ 12
STAGES = 2
SINK_STAGE = STAGES + 1
SIDE = 3.0  # seconds around a rescale


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    """A leader and workers as child processes of this script, in a temporary directory."""

    def __init__(self, binary, tmp, commit_ms=None):
        self.bin = binary
        self.commit_ms = commit_ms
        self.tmp = tmp
        self.procs = []
        self.env = dict(os.environ, RAINSTORM_TOKEN=TOKEN)
        self.url = None

    def spawn(self, name, argv, env=None):
        out = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen([self.bin] + argv, cwd=self.tmp, stdout=out,
                             stderr=subprocess.STDOUT, env=env or self.env)
        out.close()
        self.procs.append(p)
        return p

    def start(self):
        # The example operators may run (`--exec`).
        self.spawn("leader", ["leader", "--listen", "127.0.0.1:0", "--data-dir", "lead",
                              "--allow-exec", OPS])
        deadline = time.time() + 20
        path = os.path.join(self.tmp, "leader.log")
        while self.url is None:
            with open(path, errors="replace") as f:
                for line in f:
                    if "listening on http://" in line:
                        self.url = line.split("listening on ", 1)[1].split()[0]
                        break
            if self.url is None:
                if time.time() > deadline or self.procs[0].poll() is not None:
                    raise SystemExit("the leader did not start; see %s" % path)
                time.sleep(0.05)
        self.env["RAINSTORM_LEADER"] = self.url
        u = urllib.parse.urlsplit(self.url)
        self.host, self.port = u.hostname, u.port
        wenv = dict(self.env)
        # The sink's commit times are its segments' mtimes: a merged object has one for all
        # the segments it holds, so the sink's log is kept uncompacted here.
        wenv["RAINSTORM_LOG_COMPACT_FANIN"] = "0"
        if self.commit_ms is not None:
            wenv["RAINSTORM_LOG_COMMIT_MS"] = str(self.commit_ms)
        for w in range(1, WORKERS + 1):
            self.spawn("w%d" % w, ["worker", "--data-dir", "w%d" % w, "--slots", str(SLOTS),
                                   "--allow-exec", OPS],
                       env=wenv)
        deadline = time.time() + 30
        while True:
            alive = [w for w in self.api("GET", "/api/workers") if w.get("state") == "alive"]
            if len(alive) >= WORKERS:
                return
            if time.time() > deadline:
                raise SystemExit("only %d of %d workers registered" % (len(alive), WORKERS))
            time.sleep(0.05)

    def cli(self, *argv):
        r = subprocess.run([self.bin] + list(argv), cwd=self.tmp, env=self.env,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise SystemExit("rainstorm %s failed (%d): %s" % (" ".join(argv), r.returncode,
                                                               r.stderr.strip()))
        return r.stdout

    def api(self, method, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            c.request(method, path, headers={"Authorization": "Bearer " + TOKEN})
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError("%s %s: %d %s" % (method, path, r.status, body[:200]))
            return json.loads(body)
        finally:
            c.close()

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Follower(threading.Thread):
    """Reads a job's output stream, stamping each line with when its chunk arrived."""

    def __init__(self, cluster, job):
        super().__init__(daemon=True)
        self.c, self.job = cluster, job
        self.lines = []  # (arrival time, line)
        self.end = None
        self.error = None
        self.offset = 0
        self.reconnects = 0

    def run(self):
        while self.end is None:
            try:
                self.one_connection()
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.reconnects += 1
                if self.reconnects > 20:
                    self.error = "output stream: %s" % e
                    return
                time.sleep(0.2)

    def one_connection(self):
        c = http.client.HTTPConnection(self.c.host, self.c.port, timeout=60)
        try:
            c.request("GET", "/api/jobs/%s/output?offset=%d" % (self.job, self.offset),
                      headers={"Authorization": "Bearer " + TOKEN})
            r = c.getresponse()
            if r.status != 200:
                raise ValueError("HTTP %d: %s" % (r.status, r.read()[:200]))
            while True:
                raw = r.readline()
                if not raw:
                    raise ValueError("the stream ended without a final status")
                now = time.time()
                ev = json.loads(raw)
                if "data" in ev:
                    text = ev["data"]
                    self.offset += len(text.encode())
                    self.lines.extend((now, l) for l in text.splitlines())
                elif "end" in ev:
                    self.end = ev["end"]
                    return
        finally:
            c.close()


# ---------------------------------------------------------------------------------------------
# The sink's log: (commit time, emit time, lines) per batch record


def read_sink_log(store, job):
    """Every batch record of the sink's kept log: (segment mtime s, emit s, [lines])."""
    d = os.path.join(store, "logs", job, "%d.0" % SINK_STAGE)
    out, attempts = [], set()
    for name in sorted(os.listdir(d)):
        if not name.endswith(".seg"):
            continue
        attempts.add(name.split("-", 1)[0])
        path = os.path.join(d, name)
        mtime = os.stat(path).st_mtime_ns / 1e9
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] != b"RSEG":
            raise ValueError("%s is not a segment" % path)
        (count,) = struct.unpack_from(">I", data, 4)
        at = 8
        for _ in range(count):
            kind = data[at]
            at += 1
            if kind == 2:
                at += 12
                continue
            if kind != 1:
                raise ValueError("%s: record kind %d" % (path, kind))
            _frm, _first, emit_ns, n = struct.unpack_from(">IQQI", data, at)
            at += 24
            lines = []
            for _ in range(n):
                for part in range(2):
                    (ln,) = struct.unpack_from(">I", data, at)
                    at += 4
                    if part == 1:
                        lines.append(data[at:at + ln].decode())
                    at += ln
            out.append((mtime, emit_ns / 1e9, lines))
    return out, attempts


# ---------------------------------------------------------------------------------------------
# Numbers


def quantile(values, q):
    """The q-quantile by rank (the value at ceil(q·n)), or None."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, int(-(-q * len(v) // 1)) - 1))]


def due_index(line):
    """The source line whose count a count-by output `kK,C` is (see the module doc)."""
    key, count = line.split(",")
    return int(key[1:]) + KEYS * (int(count) - 1)


def window_stats(arrivals, delays, sink, a, b):
    """Longest gap, p99 schedule delay (follower) and p99 sink latency in [a, b]."""
    gap = 0.0
    times = sorted(set(arrivals))
    for t0, t1 in zip(times, times[1:]):
        if t1 > a and t0 < b:
            gap = max(gap, min(t1, b) - max(t0, a))
    d = [x for t, x in delays if a <= t <= b]
    lat = []
    for commit, emit, n in sink:
        if a <= commit <= b:
            lat.extend([commit - emit] * n)
    return {"gap_ms": gap * 1000, "delay_p99_ms": ms(quantile(d, 0.99)),
            "sink_p99_ms": ms(quantile(lat, 0.99)), "lines": len(d)}


def ms(s):
    return None if s is None else s * 1000


def buckets(arrivals, a, b, width=0.1):
    n = int((b - a) / width + 0.5)
    out = [0] * n
    for t in arrivals:
        i = int((t - a) / width)
        if 0 <= i < n:
            out[i] += 1
    return out


def fmt(v):
    return "—" if v is None else "%.0f" % v


# ---------------------------------------------------------------------------------------------
# The run


def stages(exec_ops):
    """The two stages: built-ins, or (`--exec`) the example Python operators doing the same."""
    if not exec_ops:
        return '[[stages]]\ntasks = 2\nop = "identity"\n[[stages]]\ntasks = 2\nop = "count-by"\nargs = ["1"]\n'
    return ('[[stages]]\ntasks = 2\nexec = "%s"\nargs = ["1"]\n'
            '[[stages]]\ntasks = 2\nexec = "%s"\nargs = ["1"]\n'
            % (os.path.join(OPS, "keyby.py"), os.path.join(OPS, "count.py")))


def write_job(path, rate, exec_ops=False, delivery="exactly-once"):
    with open(path, "w") as f:
        f.write("""name = "rescale-bench"
delivery = "%s"
keep_logs = true
[source]
path = "in.txt"
rate = %s
[sink]
path = "out.txt"
[autoscale]                  # standby tasks to grow into; the watermarks never trigger
low = 0
high = 1000000000
max_tasks = 4
cooldown_s = 0
scale_down_grace_s = 3600
""" % (delivery, rate) + stages(exec_ops))


def reference(n):
    counts = [0] * KEYS
    want = []
    for i in range(n):
        counts[i % KEYS] += 1
        want.append("k%d,%d" % (i % KEYS, counts[i % KEYS]))
    return sorted(want)


def wait_scaled(c, job, stage, tasks, seen, timeout=30):
    """Polls the job until the rescale of `stage` asked for (the first entry of its scaling
    list after the `seen` first ones) has ended and, if done, `stage_tasks` shows it; returns
    that entry (outcome "timeout" if it did not end in time)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = c.api("GET", "/api/jobs/" + job)
        new = [s for s in j.get("scaling", [])[seen:] if s["stage"] == stage]
        if new and new[0]["outcome"] in ("refused", "aborted"):
            return new[0]
        if new and new[0]["outcome"] == "done" and j["stage_tasks"][stage - 1] == tasks:
            return new[0]
        if j["status"] not in ("running", "pending"):
            return {"stage": stage, "outcome": "job " + j["status"]}
        time.sleep(0.05)
    return {"stage": stage, "to": tasks, "outcome": "timeout"}


def wait_end(c, job, fol, timeout):
    """Waits for the job's end (the follower's final event); cancels it if it does not come."""
    fol.join(timeout=timeout)
    if fol.end is not None:
        return True
    log("the job did not end within %gs; cancelling it" % timeout)
    try:
        c.cli("cancel", job)
    except SystemExit as e:
        log(str(e))
    fol.join(timeout=20)
    return False


def run(args, tmp):
    plan = [tuple(int(x) for x in step.split(":")) for step in args.plan.split(",")]
    run_s = args.gap + len(plan) * (args.gap + 3) + 10
    lines = args.lines or int(args.rate * run_s)
    c = Cluster(args.bin, tmp, args.commit_ms)
    try:
        c.start()
        log("leader %s, %d workers × %d slots" % (c.url, WORKERS, SLOTS))
        with open(os.path.join(tmp, "in.txt"), "w") as f:
            f.writelines("k%d,%d\n" % (i % KEYS, i) for i in range(lines))
        c.cli("put", "in.txt", "in.txt")
        write_job(os.path.join(tmp, "job.toml"), args.rate, args.exec, args.delivery)
        job = c.cli("submit", "job.toml").strip().splitlines()[-1].strip()
        log("job %s: %d lines at %d lines/s" % (job, lines, args.rate))
        fol = Follower(c, job)
        fol.start()
        deadline = time.time() + 30
        while not fol.lines:
            if time.time() > deadline or fol.error:
                raise SystemExit("no output after 30 s: %s" % (fol.error or c.api(
                    "GET", "/api/jobs/" + job)))
            time.sleep(0.02)
        time.sleep(args.gap)
        before = c.api("GET", "/api/jobs/" + job)
        for stage, tasks in plan:
            seen = len(c.api("GET", "/api/jobs/" + job).get("scaling", []))
            log("scale stage %d to %d" % (stage, tasks))
            c.cli("scale", job, str(stage), str(tasks))
            s = wait_scaled(c, job, stage, tasks, seen)
            log("  %s%s" % (s["outcome"], " in %d ms" % s["took_ms"] if s.get("took_ms")
                                                 is not None else ""))
            time.sleep(args.gap)
        after = c.api("GET", "/api/jobs/" + job)
        c.cli("set-rate", job, "0")
        log("rest of the input unthrottled; waiting for the job to end")
        ended = wait_end(c, job, fol, args.timeout)
        final = c.api("GET", "/api/jobs/" + job)
        got = None
        try:
            c.cli("get", "out.txt", "got.txt")
            with open(os.path.join(tmp, "got.txt")) as f:
                got = sorted(f.read().splitlines())
        except SystemExit as e:
            log("no output file: %s" % e)
        try:
            sink, attempts = read_sink_log(os.path.join(tmp, "lead", "store"), job)
        except (OSError, ValueError, struct.error) as e:
            log("cannot read the sink's log: %s" % e)
            sink, attempts = [], set()
        return analyse(args, lines, fol, sink, attempts, before, after, final, got, ended)
    finally:
        c.stop()


def analyse(args, n, fol, sink, attempts, before, after, final, got, ended):
    want = reference(n)
    followed = sorted(l for _, l in fol.lines)
    ok = final["status"] == "succeeded" and got == want and followed == want
    arrivals = [t for t, _ in fol.lines]
    if sink:
        start = min(emit for _, emit, _ in sink)  # line 0's emit: when the source started
        delays = [(t, t - (start + due_index(l) / args.rate)) for t, l in fol.lines]
    else:
        delays = []
    sink_n = [(commit, emit, len(ls)) for commit, emit, ls in sink]
    rows, detail = [], []
    timed = [s for s in final["scaling"] if s.get("took_ms") is not None]
    prev_end = arrivals[0] + 2.0 if arrivals else 0.0  # the first window after the warm-up
    for s in timed:
        t0 = s["time_ms"] / 1000.0
        t1 = t0 + s["took_ms"] / 1000.0
        a, b = t0 - SIDE, t1 + SIDE
        # The steady window: as long as "around", just before it, and never reaching back
        # into the previous rescale's window (then it is shorter; the table says so).
        sa = max(a - (b - a), prev_end)
        prev_end = b
        around = window_stats(arrivals, delays, sink_n, a, b)
        steady = window_stats(arrivals, delays, sink_n, sa, a)
        steady["short"] = a - sa < (b - a) - 0.05
        around["sink_p99_per_s"] = [window_stats([], [], sink_n, t0 + k, t0 + k + 1)
                                    ["sink_p99_ms"] for k in range(-int(SIDE), int(SIDE))]
        rows.append((s, around, steady))
        detail.append({"scaling": s, "around": around, "steady": steady,
                       "window": [a, b], "steady_window": [sa, a],
                       "lines_per_100ms_around": buckets(arrivals, a, b),
                       "lines_per_100ms_steady": buckets(arrivals, sa, a)})

    def lat(j):
        l = j.get("latency_ms")
        return "—" if not l else "p50 %s ms, p99 %s ms, max %s ms" % tuple(
            fmt(l[k]) for k in ("p50", "p99", "max"))

    print()
    print("Machine: %s" % machine())
    ops = ("keyby.py 1 (2 tasks) → count.py 1" if args.exec
           else "identity (2 tasks) → count-by 1")
    print("Job: %d lines `k<i%%%d>,<i>` at %d lines/s, %s, %s (2 tasks), "
          "max_tasks 4, %d workers × %d slots, gap %g s, RAINSTORM_LOG_COMMIT_MS %s"
          % (n, KEYS, args.rate, args.delivery, ops, WORKERS, SLOTS, args.gap,
             "default" if args.commit_ms is None else args.commit_ms))
    print()
    print("| Rescale | outcome | took_ms | longest gap at the follower, ms: around / steady | "
          "p99 schedule delay at the follower, ms: around / steady (added) | "
          "p99 sink latency (emit → commit), ms: around / steady (added) | "
          "p99 sink latency per second, ms, -3 s … ▸ rescale … +3 s |")
    print("|---|---|---|---|---|---|---|")
    for s, ar, st in rows:
        kind = ("stateless" if s["stage"] == 1 else "count-by") if not args.exec else (
            "keyby.py" if s["stage"] == 1 else "count.py")

        def add(k):
            if ar[k] is None or st[k] is None:
                return "—"
            return "%+d" % round(ar[k] - st[k])

        per_s = [fmt(v) for v in ar["sink_p99_per_s"]]
        half = len(per_s) // 2
        print("| stage %d (%s) %d→%d | %s | %d | %s / %s%s | %s / %s (%s) | %s / %s (%s) | %s |" % (
            s["stage"], kind, s["from"], s["to"], s["outcome"], s["took_ms"],
            fmt(ar["gap_ms"]), fmt(st["gap_ms"]), " (short window)" if st["short"] else "",
            fmt(ar["delay_p99_ms"]), fmt(st["delay_p99_ms"]), add("delay_p99_ms"),
            fmt(ar["sink_p99_ms"]), fmt(st["sink_p99_ms"]), add("sink_p99_ms"),
            " ".join(per_s[:half]) + " ▸ " + " ".join(per_s[half:])))
    print()
    if delays:
        all_d = [d for _, d in delays]
        print("Whole run, schedule delay at the follower: p50 %s ms, p99 %s ms, max %s ms"
              % (fmt(ms(quantile(all_d, 0.5))), fmt(ms(quantile(all_d, 0.99))),
                 fmt(ms(max(all_d)))))
    print("Engine latency (job --json, cumulative): before the first rescale %s; "
          "after the last one %s" % (lat(before), lat(after)))
    for s in final["scaling"]:
        if s["outcome"] != "done":
            print("Rescale of stage %d %s→%s: %s (%s)" % (s["stage"], s.get("from"), s.get("to"),
                                                       s["outcome"], s.get("cause")))
    if len(attempts) > 1:
        print("Note: the sink ran %d attempts (%s)" % (len(attempts), sorted(attempts)))
    stalled = stopped_keys(fol.lines)
    if stalled:
        print("Output stopped early for %d of %d keys: the last line of each came at +%.1f s"
              " (median) while others went on to +%.1f s" % stalled)
    print("Job %s%s, %d restarts; output file %s lines, follower %d lines, reference %d lines "
          "(follower reconnects: %d)" % (
              final["status"], "" if ended else " (cancelled by this script)",
              final["recoveries"], "no" if got is None else len(got), len(followed),
              len(want), fol.reconnects))
    if ok:
        print("PASS: the output equals the reference exactly")
    else:
        why = []
        if final["status"] != "succeeded":
            why.append("the job %s" % final["status"])
        if got is None:
            why.append("no output file")
        elif got != want:
            why.append("output file: %d lines missing, %d unexpected" % diff_counts(got, want))
        if followed != want:
            why.append("followed output: %d lines missing, %d unexpected"
                       % diff_counts(followed, want))
        print("FAIL: " + "; ".join(why))
    if args.detail:
        with open(args.detail, "w") as f:
            json.dump({"rescales": detail, "before": before, "after": after,
                       "final": final}, f, indent=1)
    return ok


def stopped_keys(lines, slack=5.0):
    """Keys whose output stopped more than `slack` s before the last line (a stall)."""
    if not lines:
        return None
    first, last_all = lines[0][0], lines[-1][0]
    last = {}
    for t, l in lines:
        last[l.split(",", 1)[0]] = t
    early = sorted(t for t in last.values() if t < last_all - slack)
    if not early:
        return None
    return len(early), len(last), early[len(early) // 2] - first, last_all - first


def diff_counts(got, want):
    from collections import Counter
    g, w = Counter(got), Counter(want)
    return sum((w - g).values()), sum((g - w).values())


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "%d CPUs (nproc), %s; Linux %s" % (len(os.sched_getaffinity(0)), model,
                                               platform.release())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=DEFAULT_BIN, help="rainstorm binary (release build)")
    p.add_argument("--rate", type=int, default=2000, help="source lines per second")
    p.add_argument("--gap", type=float, default=14.0,
                   help="seconds of steady state before the first rescale and after each")
    p.add_argument("--lines", type=int, default=0,
                   help="input lines (default: enough for the whole plan at --rate)")
    p.add_argument("--commit-ms", type=int,
                   help="RAINSTORM_LOG_COMMIT_MS for the workers (default: theirs, 100 ms)")
    p.add_argument("--plan", default="1:4,2:4,1:2,2:2",
                   help="rescales in order, STAGE:TASKS comma-separated")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds for the job's end after the plan (then it is cancelled)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--delivery", default="exactly-once",
                   choices=["exactly-once", "at-least-once", "at-most-once"],
                   help="the job's delivery mode (count-by moves its state live in every one)")
    p.add_argument("--exec", action="store_true",
                   help="run the stages as the example Python operators (keyby.py, count.py)")
    p.add_argument("--detail", help="write per-rescale details (100 ms buckets) as JSON here")
    args = p.parse_args()
    args.bin = os.path.abspath(args.bin)
    if not os.access(args.bin, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "--bin", "rainstorm"], cwd=REPO,
                       check=True)
    if args.gap < 2 * SIDE + 1:
        p.error("--gap must leave a steady window between rescales (≥ %g)" % (2 * SIDE + 1))
    tmp = tempfile.mkdtemp(prefix="rescale-bench-")
    try:
        ok = run(args, tmp)
    finally:
        if args.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
