#!/usr/bin/env python3
"""RainStorm benchmark suite: one command, one table.

    cargo build --release
    python3 bench/run.py [--lines N] [--out docs/benchmarks.md] [--quick]

What it does, in one run:
  * generates the signs dataset deterministically (examples/gen_signs.py) in a temp dir;
  * (a) runs app1 (filter -> select) and app2 (filter -> count-by) on the embedded cluster
    (`rainstorm run --workers 3`, 3 tasks per stage), with built-in and with executable
    Python operators, in each delivery mode;
  * (b) runs the same work as plain Unix pipelines (grep | cut, grep | awk), the baseline;
    for app2 also the batch pipe issue 19's target 1 names (awk | sort | uniq -c: a count per
    Category at the end, not a running count per line);
  * (c) runs the same Python operators chained by a shell pipe, no engine;
  * (d) measures end-to-end latency (source emit -> sink write, as reported by the engine's
    --summary-json) for a job fed at a fixed rate, exactly-once.
For each run: wall time, input lines per second, wall time relative to the Unix baseline,
CPU time, whether the output matches examples/reference.py, and peak resident memory per
kind of process (the rainstorm process itself, the operator processes, the whole tree),
sampled from /proc every 50 ms.

A run that fails or times out is reported as such in the table; the suite carries on.

One run only, e.g. app2 with built-ins, exactly-once, on 5M lines, no baselines or latency:

    python3 bench/run.py --apps app2 --kinds builtin --modes exactly-once --lines 5000000 \
        --baselines none --latency-jobs none

The ratio table (Unix pipe, Python ops in a pipe, built-in exactly-once / at-least-once,
Python exactly-once; medians over interleaved rounds of one invocation):

    python3 bench/run.py --compare [--repeat 3] [--out docs/benchmarks.md]
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
OPS = os.path.join(EXAMPLES, "ops")
DEFAULT_BIN = os.path.join(REPO, "target", "release", "rainstorm")
MODES = ["exactly-once", "at-least-once", "at-most-once"]
APPS = ["app1", "app2"]
BASELINES = ["unix", "python", "unix-batch"]
UNIX_BATCH = "Unix awk | sort | uniq -c"
PY_PIPE = "Python ops in a shell pipe"
# The engine runs --compare sets against the baselines, in this order.
COMPARE_ENGINE = [("builtin", "exactly-once"), ("builtin", "at-least-once"),
                  ("chain", "exactly-once"), ("chain", "at-least-once"),
                  ("exec", "exactly-once"), ("exec", "at-least-once")]
NEEDLE = "Punched Telespar"
# The worker's default input-log commit interval (`DEFAULT_LOG_COMMIT_MS` in the dataplane
# crate), shown for latency runs whose job file leaves `commit_interval_ms` out.
DEFAULT_COMMIT_MS = int(os.environ.get("RAINSTORM_LOG_COMMIT_MS") or 100)
BEGIN_MARK = "<!-- BEGIN bench/run.py results -->"
END_MARK = "<!-- END bench/run.py results -->"
# --compare writes its own section, so that it never replaces the full run's.
COMPARE_BEGIN_MARK = "<!-- BEGIN bench/run.py --compare results -->"
COMPARE_END_MARK = "<!-- END bench/run.py --compare results -->"
SAMPLE_EVERY = 0.05  # seconds between /proc samples


def load_reference():
    spec = importlib.util.spec_from_file_location("reference",
                                                  os.path.join(EXAMPLES, "reference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------
# The workloads


def engine_stages(app, kind):
    """Stage list for app1/app2 with built-in ("builtin") or executable ("exec") operators,
    or the two built-ins chained in one stage ("chain")."""
    if kind == "chain":
        return [{"chain": engine_stages(app, "builtin")}]
    if app == "app1":
        if kind == "builtin":
            return [{"op": "filter", "args": [NEEDLE]}, {"op": "select", "args": ["3-5"]}]
        return [{"exec": os.path.join(OPS, "filter_contains.py"), "args": [NEEDLE]},
                {"exec": os.path.join(OPS, "select.py"), "args": ["3-5"]}]
    if kind == "builtin":
        return [{"op": "filter", "args": [NEEDLE]}, {"op": "count-by", "args": ["9"]}]
    # The filter re-keys by Category so that the count stage's routing groups categories.
    return [{"exec": os.path.join(OPS, "filter.py"), "args": ["7", NEEDLE, "--key-col", "9"]},
            {"exec": os.path.join(OPS, "count.py"), "args": ["9"]}]


def toml_str(s):
    return json.dumps(s)  # a JSON string literal is a valid TOML basic string


def write_job(path, name, delivery, source, rate, sink, stages, tasks, commit_ms=None):
    lines = ["name = %s" % toml_str(name), "delivery = %s" % toml_str(delivery)]
    if commit_ms is not None:
        lines.append("commit_interval_ms = %d" % commit_ms)
    lines += ["",
             "[source]", "path = %s" % toml_str(source), "rate = %d" % rate, "",
             "[sink]", "path = %s" % toml_str(sink)]
    for st in stages:
        lines += ["", "[[stages]]", "tasks = %d" % tasks]
        if "chain" in st:
            lines.append("chain = [%s]" % ", ".join(
                "{ op = %s, args = [%s] }" % (toml_str(c["op"]), ", ".join(
                    toml_str(a) for a in c["args"])) for c in st["chain"]))
            continue
        if "op" in st:
            lines.append("op = %s" % toml_str(st["op"]))
        else:
            lines.append("exec = %s" % toml_str(st["exec"]))
        lines.append("args = [%s]" % ", ".join(toml_str(a) for a in st["args"]))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def unix_pipeline(app, data, out):
    q = shlex.quote
    if app == "app1":
        return "LC_ALL=C grep -F %s %s | cut -d, -f3-5 > %s" % (q(NEEDLE), q(data), q(out))
    return ("LC_ALL=C grep -F %s %s | awk -F, '{ n[$9]++; print $9 \",\" n[$9] }' > %s"
            % (q(NEEDLE), q(data), q(out)))


def unix_batch_pipeline(data, out):
    """app2 as a batch: each Category's final count, the pipe issue 19's target 1 names."""
    q = shlex.quote
    return ("LC_ALL=C awk -F, -v n=%s 'index($0, n) { print $9 }' %s | LC_ALL=C sort "
            "| LC_ALL=C uniq -c > %s" % (q(NEEDLE), q(data), q(out)))


def python_pipeline(app, data, out):
    """The Python operators chained by a shell pipe, fed `FILE:LINE<TAB>line` by awk.

    The dataset has no tabs or backslashes, so awk needs no escaping and `cut -f2-` (the
    sink: keep the value) needs no unescaping.
    """
    q = shlex.quote
    feed = ("awk -v f=%s '{ printf \"%%s:%%d\\t%%s\\n\", f, NR, $0 }' %s"
            % (q(os.path.basename(data)), q(data)))
    if app == "app1":
        ops = [[os.path.join(OPS, "filter_contains.py"), NEEDLE],
               [os.path.join(OPS, "select.py"), "3-5"]]
    else:
        ops = [[os.path.join(OPS, "filter.py"), "7", NEEDLE, "--key-col", "9"],
               [os.path.join(OPS, "count.py"), "9"]]
    stages = [feed] + [" ".join(q(a) for a in op) for op in ops] + ["cut -f2-"]
    return " | ".join(stages) + " > " + q(out)


# ---------------------------------------------------------------------------------------------
# Running one measurement: wall time, rusage, and a /proc sampler for the process tree


def read_status(pid):
    """(VmHWM kB, VmRSS kB) of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            text = f.read()
    except OSError:
        return None
    hwm = rss = 0
    for line in text.split(b"\n"):
        if line.startswith(b"VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith(b"VmRSS:"):
            rss = int(line.split()[1])
    return hwm, rss


def read_ppid(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def read_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def classify(argv):
    for a in argv:
        if a.startswith(OPS + os.sep):
            return "py-op" if a.endswith(".py") else "op:" + os.path.basename(a)
    return os.path.basename(argv[0]) if argv else "?"


class TreeSampler:
    """Peak memory of a process tree: the root process, and its descendants by kind."""

    def __init__(self, root):
        self.root = root
        self.ppid = {}        # pid -> parent pid (read once per pid)
        self.who = {}         # pid -> (kind, peak VmHWM kB, argv) of its current program
        self.peak_total = 0   # max over samples of the whole tree's summed VmRSS

    def sample(self):
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        live = set(pids)
        for pid in [p for p in self.ppid if p not in live]:
            del self.ppid[pid]
        for pid in pids:
            if pid not in self.ppid:
                pp = read_ppid(pid)
                if pp is not None:
                    self.ppid[pid] = pp
        children = {}
        for pid, pp in self.ppid.items():
            children.setdefault(pp, []).append(pid)
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        total = 0
        for pid in tree:
            st = read_status(pid)
            if st is None or st == (0, 0):  # gone, or a zombie
                continue
            total += st[1]
            argv = read_cmdline(pid)
            old = self.who.get(pid)
            # A process seen between fork and exec still runs its parent's program (and
            # memory); once it execs it is a new program with a fresh VmHWM, so only its
            # last program counts.
            if old is None or old[2] != argv:
                kind = "main" if pid == self.root else classify(argv)
                self.who[pid] = (kind, st[0], argv)
            else:
                self.who[pid] = (old[0], max(old[1], st[0]), argv)
        self.peak_total = max(self.peak_total, total)

    def report(self):
        """{"main": peak kB of the root, "kinds": {kind: (procs, max kB of one)}}."""
        kinds, main = {}, 0
        for pid, (kind, hwm, _) in self.who.items():
            if pid == self.root:
                main = hwm
                continue
            n, mx = kinds.get(kind, (0, 0))
            kinds[kind] = (n + 1, max(mx, hwm))
        return {"main": main, "kinds": kinds}


def group_members(pgid):
    """Live (non-zombie) processes in process group pgid."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p, "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(rest) > 2 and int(rest[2]) == pgid and rest[0] != b"Z":
            found.append(int(p))
    return found


def measure(argv, cwd, stdout_path, stderr_path, timeout):
    """Run argv in its own session; return a dict describing how it went."""
    res = {"rc": None, "wall": None, "cpu": None, "timed_out": False, "error": None,
           "mem": {"main": 0, "kinds": {}}, "tree_kb": 0, "leftovers": False}
    try:
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        res["error"] = str(e)
        return res
    pid = proc.pid
    done = threading.Event()
    outcome = {}

    def reap():
        _, status, usage = os.wait4(pid, 0)
        outcome["t1"] = time.perf_counter()
        outcome["status"] = status
        outcome["usage"] = usage
        done.set()

    try:
        sampler = TreeSampler(pid)
        threading.Thread(target=reap, daemon=True).start()
        deadline = t0 + timeout
        while not done.is_set():
            sampler.sample()
            if time.perf_counter() > deadline:
                res["timed_out"] = True
                stop_group(pid, done)
                break
            done.wait(SAMPLE_EVERY)
    except BaseException:
        # E.g. Ctrl-C: the run has its own session, so the terminal's SIGINT did not reach
        # it. Do not leave it running.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise
    done.wait(30)
    if "status" not in outcome:
        res["error"] = "could not reap the process"
        return res
    proc.returncode = os.waitstatus_to_exitcode(outcome["status"])  # keep Popen quiet
    res["rc"] = proc.returncode
    res["wall"] = outcome["t1"] - t0
    u = outcome["usage"]
    res["cpu"] = u.ru_utime + u.ru_stime  # the process plus the children it reaped
    # Anything still alive in the process group after the root exited was left behind.
    if group_members(pid):
        res["leftovers"] = True
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # (ru_maxrss is no substitute for a process too short-lived to sample: it also counts
    # the memory the child shared with this script between fork and exec.)
    res["mem"] = sampler.report()
    # The tree's sampled sum can miss the root's peak, which VmHWM keeps; it is never less.
    res["tree_kb"] = max(sampler.peak_total, res["mem"]["main"])
    return res


def succeeded(res):
    return res["rc"] == 0 and not res["timed_out"] and not res["error"]


def stop_group(pid, done):
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if done.wait(grace):
            return


def tail(path, n=12):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


# ---------------------------------------------------------------------------------------------
# The suite


def add_note(row, text):
    row["note"] = row["note"] + "; " + text if row.get("note") else text


class Suite:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.ref = load_reference()
        self.rows = []       # throughput rows
        self.lat_rows = []   # latency rows
        self.unix_wall = {}  # app -> wall seconds of the Unix baseline
        self.expected = {}   # (data path, app) -> sorted expected lines
        self.failures = 0

    def log(self, msg):
        print(msg, file=sys.stderr, flush=True)

    def expected_lines(self, data, app):
        key = (data, app)
        if key not in self.expected:
            self.expected[key] = self.ref.reference_lines(app, data)
        return self.expected[key]

    def check_final_counts(self, data, out_path):
        """A batch count (`uniq -c` lines) against each Category's last running count."""
        if not os.path.exists(out_path):
            return "no output"
        want = {}
        for line in self.expected_lines(data, "app2"):
            cat, _, n = line.rpartition(",")
            want[cat] = max(want.get(cat, 0), int(n))
        got = {}
        with open(out_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                n, _, cat = line.strip().partition(" ")
                got[cat] = int(n)
        wrong = sum(1 for k in want if want[k] != got.get(k))
        extra = sum(1 for k in got if k not in want)
        if not wrong and not extra:
            return "ok"
        return "DIFF: %d of %d counts wrong, %d keys extra" % (wrong, len(want), extra)

    def check(self, data, app, out_path):
        if not os.path.exists(out_path):
            return "no output"
        r = self.ref.compare(self.expected_lines(data, app), self.ref.read_output(out_path))
        if r["equal"]:
            return "ok"
        parts = []
        if r["missing"]:
            parts.append("%d missing" % r["missing"])
        if r["extra"]:
            dup = r["extra_duplicates"]
            parts.append("%d extra%s" % (r["extra"], " (%d dup)" % dup if dup else ""))
        return "DIFF: " + ", ".join(parts)

    def rundir(self, name):
        d = os.path.join(self.tmp, "runs", name)
        os.makedirs(d, exist_ok=True)
        return d

    def log_result(self, res, row):
        if succeeded(res):
            self.log("    %.2f s wall, %.1f s CPU, check: %s; memory: main %s MB, tree %s MB; "
                     "children: %s" % (res["wall"], res["cpu"], row.get("check", "—"),
                                       fmt_mb(res["mem"]["main"]), fmt_mb(res["tree_kb"]),
                                       mem_detail(res) or "none seen"))

    def describe_failure(self, name, res, errpath):
        self.failures += 1
        if res["error"] and res["rc"] is not None:
            why = res["error"]
        elif res["error"]:
            why = "could not start: %s" % res["error"]
        elif res["timed_out"]:
            why = "timed out after %ds" % self.args.timeout
        else:
            why = "exit code %s" % res["rc"]
        self.log("  !! %s failed (%s); last lines of stderr:\n%s"
                 % (name, why, "\n".join("     " + l for l in tail(errpath).splitlines())))

    @staticmethod
    def status_text(res):
        if res["error"] and res["rc"] is not None:
            return "FAILED (exit %s: %s)" % (res["rc"], res["error"])
        if res["error"]:
            return "FAILED (did not start)"
        if res["timed_out"]:
            return "TIMEOUT"
        return "FAILED (exit %s)" % res["rc"]

    # -- one shell pipeline (baselines) -----------------------------------------------------

    def run_shell(self, app, runner, script, out_path, data, lines, check=None):
        name = "%s-%s" % (app, "-".join(runner.split()[:2]).lower())
        d = self.rundir(name)
        errpath = os.path.join(d, "stderr.txt")
        self.log("- %s: %s" % (name, script))
        res = measure(["bash", "-o", "pipefail", "-c", script], d,
                      os.path.join(d, "stdout.txt"), errpath, self.args.timeout)
        row = {"app": app, "runner": runner, "delivery": "—", "res": res, "lines": lines}
        if succeeded(res):
            row["check"] = check() if check else self.check(data, app, out_path)
            row["out_lines"] = count_lines(out_path)
            self.log_result(res, row)
        else:
            self.describe_failure(name, res, errpath)
        if res["leftovers"]:
            add_note(row, "left processes running after exit")
        self.rows.append(row)
        return row

    # -- one engine job ----------------------------------------------------------------------

    def run_engine(self, name, app, kind, delivery, data, rate, lines, commit_ms=None):
        a = self.args
        d = self.rundir(name)
        job = os.path.join(d, "job.toml")
        sink = os.path.join(d, "out", "sink.txt")
        summary = os.path.join(d, "summary.json")
        stdout_path = os.path.join(d, "stdout.txt")
        errpath = os.path.join(d, "stderr.txt")
        write_job(job, name, delivery, data, rate, sink, engine_stages(app, kind), a.tasks,
                  commit_ms)
        argv = [a.bin, "run", job, "--workers", str(a.workers), "--summary-json", summary]
        if kind == "exec":
            # Executables run only from directories the operator allows (issue 10).
            argv += ["--allow-exec", OPS]
        self.log("- %s: %s" % (name, " ".join(shlex.quote(x) for x in argv)))
        res = measure(argv, d, stdout_path, errpath, a.timeout)
        row = {"app": app, "kind": kind, "delivery": delivery, "res": res, "lines": lines,
               "runner": "RainStorm, %s ops" % {"builtin": "built-in",
                                                "chain": "chained built-in"}.get(
                                                    kind, "Python exec")}
        if res["rc"] == 0 and not res["timed_out"] and not os.path.exists(sink):
            res["error"] = "exited 0 but wrote no sink file"
        if succeeded(res):
            out_path = sink
            row["check"] = self.check(data, app, out_path)
            row["out_lines"] = count_lines(out_path)
            printed = count_lines(stdout_path)
            if printed != row["out_lines"]:
                add_note(row, "stdout has %d lines, sink %d" % (printed, row["out_lines"]))
            try:
                with open(summary) as f:
                    row["summary"] = json.load(f)
                st = row["summary"].get("status")
                if st != "succeeded":
                    add_note(row, "summary status %r" % (st,))
            except (OSError, ValueError, AttributeError) as e:
                row["summary"] = None
                add_note(row, "no usable --summary-json (%s)" % e.__class__.__name__)
            self.log_result(res, row)
        else:
            self.describe_failure(name, res, errpath)
        if res["leftovers"]:
            add_note(row, "left processes running after exit")
        return row

    # -- the plan ----------------------------------------------------------------------------

    def baseline(self, app, which, data, lines):
        """One baseline run: "unix" (grep | cut/awk) or "python" (the operators in a pipe)."""
        out = os.path.join(self.rundir("%s-%s" % (app, which)), "out.txt")
        if which == "unix":
            runner = "Unix grep | cut" if app == "app1" else "Unix grep | awk"
            row = self.run_shell(app, runner, unix_pipeline(app, data, out), out, data, lines)
            if succeeded(row["res"]):
                self.unix_wall[app] = row["res"]["wall"]
        elif which == "unix-batch":
            row = self.run_shell(app, UNIX_BATCH, unix_batch_pipeline(data, out), out, data,
                                 lines, check=lambda: self.check_final_counts(data, out))
        else:
            row = self.run_shell(app, PY_PIPE, python_pipeline(app, data, out), out, data,
                                 lines)
        row["config"] = which
        return row

    def engine(self, app, kind, mode, data, lines):
        name = "%s-%s-%s" % (app, kind, mode)
        row = self.run_engine(name, app, kind, mode, data, 0, lines)
        row["config"] = "%s-%s" % (kind, mode)
        self.rows.append(row)
        return row

    def throughput(self, data, lines):
        a = self.args
        for app in a.apps:
            for which in a.baselines:
                if which != "unix-batch" or app == "app2":
                    self.baseline(app, which, data, lines)
            for kind in a.kinds:
                for mode in a.modes:
                    self.engine(app, kind, mode, data, lines)

    def compare(self, data, lines):
        """The runs behind the ratio table, interleaved round by round (--repeat)."""
        a = self.args
        for r in range(a.repeat):
            if a.repeat > 1:
                self.log("round %d of %d" % (r + 1, a.repeat))
            for app in a.apps:
                for which in ("unix", "python") + (("unix-batch",) if app == "app2" else ()):
                    self.baseline(app, which, data, lines)
                for kind, mode in COMPARE_ENGINE:
                    self.engine(app, kind, mode, data, lines)

    def latency(self, data, lines):
        a = self.args
        for commit_ms in a.latency_commit_ms:
            for spec in a.latency_jobs:
                app, _, kind = spec.partition("-")
                kind = "exec" if kind == "exec" else "builtin"
                name = "latency-%s-%s" % (app, kind)
                if commit_ms is not None:
                    name += "-commit-%dms" % commit_ms
                row = self.run_engine(name, app, kind, "exactly-once", data, a.latency_rate,
                                      lines, commit_ms)
                row["rate"] = a.latency_rate
                row["commit_ms"] = commit_ms
                self.lat_rows.append(row)


# ---------------------------------------------------------------------------------------------
# Reporting


def fmt_mb(kb):
    return "%.0f" % (kb / 1024.0) if kb else "—"


def fmt_int(n):
    return "{:,}".format(int(n))


def mem_cells(res):
    mem = res.get("mem") or {}
    kinds = mem.get("kinds") or {}
    procs = sum(n for n, _ in kinds.values())
    biggest = max([mx for _, mx in kinds.values()] or [0])
    child = "%s × %d" % (fmt_mb(biggest), procs) if procs else "—"
    return fmt_mb(mem.get("main", 0)), child, fmt_mb(res.get("tree_kb", 0))


def mem_detail(res):
    kinds = (res.get("mem") or {}).get("kinds") or {}
    return ", ".join("%s: %d × ≤%s MB" % (k, n, fmt_mb(mx)) for k, (n, mx) in sorted(kinds.items()))


def md_row(cells):
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def throughput_table(suite):
    head = ("| App | Runner | Delivery | Wall s | Lines/s | × Unix | CPU s | Output lines "
            "| Check | RSS MB: main | RSS MB: per child × n | RSS MB: tree |")
    rows = [head, "|" + "---|" * 12]
    for r in suite.rows:
        res = r["res"]
        ok = succeeded(res)
        main_mb, ops_mb, tree_mb = mem_cells(res)
        if ok:
            wall = res["wall"]
            unix = suite.unix_wall.get(r["app"])
            ratio = ("%.1f" % (wall / unix)) if unix else "—"
            cells = ["%.2f" % wall, fmt_int(r["lines"] / wall), ratio, "%.1f" % res["cpu"],
                     fmt_int(r.get("out_lines", 0)), r.get("check", "—")]
        else:
            cells = [Suite.status_text(res), "—", "—",
                     "%.1f" % res["cpu"] if res["cpu"] is not None else "—", "—", "—"]
        if r.get("note"):
            cells[-1] += " (%s)" % r["note"]
        rows.append(md_row([r["app"], r["runner"], r["delivery"]] + cells +
                           [main_mb, ops_mb, tree_mb]))
    return "\n".join(rows)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return None if n == 0 else (xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2)


# (label, numerator config, denominator config, target) for the ratio table's columns; the
# targets are issue 19's (1: built-ins against the Unix pipe, for app2 the batch pipe the issue
# names, `awk | sort | uniq -c`; the running-count awk is shown beside it, a stricter floor;
# 2: exactly-once against at-least-once; 3: Python operators in the engine against the same
# scripts in a pipe).
RATIOS = [
    ("built-in EO ÷ Unix", "builtin-exactly-once", "unix", {"app1": 2.5}),
    ("built-in EO ÷ awk | sort | uniq -c", "builtin-exactly-once", "unix-batch", {"app2": 1.0}),
    ("built-in ALO ÷ Unix", "builtin-at-least-once", "unix", None),
    ("Python pipe ÷ Unix", "python", "unix", None),
    ("Python EO ÷ Unix", "exec-exactly-once", "unix", None),
    ("Python EO ÷ Python pipe", "exec-exactly-once", "python", 1.3),
    ("chained EO ÷ Unix", "chain-exactly-once", "unix", {"app1": 2.5}),
    ("chained EO ÷ awk | sort | uniq -c", "chain-exactly-once", "unix-batch", {"app2": 1.0}),
    ("built-in EO ÷ built-in ALO", "builtin-exactly-once", "builtin-at-least-once", 1.10),
    ("chained EO ÷ chained ALO", "chain-exactly-once", "chain-at-least-once", 1.10),
    ("Python EO ÷ Python ALO", "exec-exactly-once", "exec-at-least-once", 1.25),
]
RATIO_WALLS = [("Unix", "unix"), ("awk | sort | uniq -c", "unix-batch"),
               ("Python pipe", "python"),
               ("built-in EO", "builtin-exactly-once"),
               ("built-in ALO", "builtin-at-least-once"),
               ("chained EO", "chain-exactly-once"), ("chained ALO", "chain-at-least-once"),
               ("Python EO", "exec-exactly-once"),
               ("Python ALO", "exec-at-least-once")]


def compare_walls(suite):
    """{app: {config: [wall seconds of each successful run whose output checked]}}.

    The Unix baselines' check is expected to differ (they do not parse CSV), so only their
    exit status counts.
    """
    walls = {}
    for r in suite.rows:
        res = r["res"]
        if "config" not in r or not succeeded(res):
            continue
        if not r["config"].startswith("unix") and r.get("check") != "ok":
            continue
        walls.setdefault(r["app"], {}).setdefault(r["config"], []).append(res["wall"])
    return walls


def ratio_table(suite):
    """Median wall per runner and their ratios, every number from this invocation."""
    walls = compare_walls(suite)
    head = (["App"] + ["%s s" % label for label, _ in RATIO_WALLS] +
            ["%s%s" % (label, "" if t is None else " (target %s)" % (
                ", ".join("%s ≤ %g" % kv for kv in sorted(t.items())) if isinstance(t, dict)
                else "≤ %g" % t)) for label, _, _, t in RATIOS])
    rows = [md_row(head), "|" + "---|" * len(head)]
    for app in suite.args.apps:
        w = walls.get(app, {})
        med = {cfg: median(w.get(cfg, [])) for _, cfg in RATIO_WALLS}
        cells = [app]
        for _, cfg in RATIO_WALLS:
            m = med[cfg]
            cells.append("—" if m is None else "%.2f (n=%d)" % (m, len(w[cfg])))
        for _, num, den, target in RATIOS:
            if med[num] is None or not med[den]:
                cells.append("—")
                continue
            x = med[num] / med[den]
            t = target.get(app) if isinstance(target, dict) else target
            verdict = "" if t is None else (" met" if x <= t else " missed")
            cells.append("%.2f×%s" % (x, verdict))
        rows.append(md_row(cells))
    return "\n".join(rows)


def latency_table(suite):
    rows = ["| Job | Operators | Commit interval ms | Rate (tuples/s) | Input lines | p50 ms "
            "| p99 ms | max ms | Source tuples/s achieved | Check |", "|" + "---|" * 10]
    for r in suite.lat_rows:
        res = r["res"]
        kind = "built-in" if r["kind"] == "builtin" else "Python exec"
        cm = r.get("commit_ms")
        commit = "default (%s)" % DEFAULT_COMMIT_MS if cm is None else str(cm)
        if not succeeded(res):
            rows.append(md_row([r["app"], kind, commit, fmt_int(r["rate"]),
                                fmt_int(r["lines"]), Suite.status_text(res), "—", "—", "—",
                                "—"]))
            continue
        s = r.get("summary") or {}
        lat = s.get("latency_ms") or {}

        def g(k):
            v = lat.get(k)
            return "%.1f" % v if isinstance(v, (int, float)) else "—"

        src, el = s.get("source_tuples"), s.get("elapsed_ms")
        achieved = fmt_int(src / (el / 1000.0)) if src and el else "—"
        check = r.get("check", "—") + (" (%s)" % r["note"] if r.get("note") else "")
        rows.append(md_row([r["app"], kind, commit, fmt_int(r["rate"]), fmt_int(r["lines"]),
                            g("p50"), g("p99"), g("max"), achieved, check]))
    return "\n".join(rows)


def machine_info():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
                    break
    except OSError:
        pass
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()
    return "%s CPUs (nproc), %s, %s RAM; Linux %s; Python %s" % (
        ncpu, model, mem, platform.release(), platform.python_version())


def git_rev():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "no commit yet"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip()
                                     else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render(suite, args, command, data_info, started):
    parts = [
        "## Benchmark ratios (`bench/run.py --compare`)" if args.compare
        else "## Benchmark results",
        "",
        "Produced by `%s` on %s (git %s)." % (command, started, git_rev()),
        "",
        "- Machine: %s" % machine_info(),
        "- Dataset: %s" % data_info,
        "- Engine: `rainstorm run --workers %d`, %d tasks per stage, each job alone on the "
        "machine." % (args.workers, args.tasks),
        "",
    ]
    if suite.rows:
        parts += ["### Throughput", "", throughput_table(suite), ""]
    if args.compare:
        parts += ["### Ratios (medians of %d round%s, same invocation)" % (
            args.repeat, "" if args.repeat == 1 else "s"), "", ratio_table(suite), "",
            "Each ratio divides two median wall times from this invocation (lower is "
            "better); EO = exactly-once, ALO = at-least-once, *Python* = the "
            "`examples/ops/` scripts (EO: as RainStorm executable operators; pipe: chained "
            "by a shell pipe, no engine). A run that failed, or whose output did not match "
            "the reference, is left out of the medians (n counts the rest).", ""]
    if suite.lat_rows:
        parts += ["### Latency (source emit → sink write, measured by the engine)", "",
                  latency_table(suite), ""]
    parts += [
        "How to read it:",
        "",
        "- *Wall s*: from process start to exit; *Lines/s* = input lines / wall time; "
        "*× Unix* = wall time divided by the Unix pipeline's for the same app (lower is "
        "better); *CPU s* = user + system time of the process and the children it reaped.",
        "- *Check*: the output compared, as a multiset, with `examples/reference.py` "
        "(Python's csv module). The Unix pipelines split on every comma, so they get the "
        "records with quoted commas wrong; their DIFF is expected and shows how many.",
        "- *RSS*: peak resident memory from `/proc/PID/status` (VmHWM per process, VmRSS "
        "summed over the tree), sampled every 50 ms. *main* is the `rainstorm` process (or "
        "the `bash` running a pipeline), *per child × n* the largest child process and how "
        "many children were seen (operators, or the pipeline's commands), *tree* the peak "
        "of the sum over all of them.",
        "- A run that failed shows FAILED with its exit code (or TIMEOUT); the others still "
        "ran.",
    ]
    return "\n".join(parts) + "\n"


def write_section(path, section, begin=BEGIN_MARK, end_mark=END_MARK):
    block = begin + "\n" + section + end_mark + "\n"
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = "# Benchmarks\n\n"
    start, end = old.find(begin), old.find(end_mark)
    if start >= 0 and end > start:
        new = old[:start] + block + old[end + len(end_mark):].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="RainStorm benchmark suite (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--lines", type=int, help="dataset lines (default 1000000; 100000 "
                    "with --quick)")
    ap.add_argument("--seed", type=int, default=425, help="dataset seed")
    ap.add_argument("--out", help="markdown file in which to write/replace the results "
                    "section (e.g. docs/benchmarks.md)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 100k lines, "
                    "exactly-once only, a short latency run")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="the rainstorm binary")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=3, help="tasks per stage")
    ap.add_argument("--modes", help="comma-separated delivery modes (default: all three; "
                    "exactly-once with --quick)")
    ap.add_argument("--kinds", default="builtin,chain,exec",
                    help="operator kinds to run on the engine: builtin, chain (the two "
                    "built-ins chained in one stage), exec; 'none' for "
                    "no engine run")
    ap.add_argument("--apps", default="app1,app2", help="comma-separated: app1, app2")
    ap.add_argument("--baselines", default="unix,python",
                    help="baselines to run: unix (grep | cut/awk), python (the operators in "
                    "a shell pipe), unix-batch (app2 only: awk | sort | uniq -c, final "
                    "counts); 'none' for none")
    ap.add_argument("--data", help="use this dataset instead of generating one (its lines "
                    "are counted; --lines and --seed are then ignored)")
    ap.add_argument("--compare", action="store_true",
                    help="run, per app, the Unix pipe, the Python ops in a shell pipe, and "
                    "RainStorm built-in exactly-once, built-in at-least-once and Python "
                    "exactly-once, then print their ratios (ignores --modes, --kinds, "
                    "--baselines; no latency runs unless --latency-jobs is given)")
    ap.add_argument("--repeat", type=int, default=1, help="with --compare: rounds, "
                    "interleaved; the ratios use median wall times")
    ap.add_argument("--latency-lines", type=int, help="input lines for the latency runs "
                    "(default 100000; 20000 with --quick)")
    ap.add_argument("--latency-rate", type=int, default=10000, help="tuples per second")
    ap.add_argument("--latency-commit-ms", default="default",
                    help="comma-separated commit intervals (the job file's "
                    "commit_interval_ms) to run each latency job with; 'default' leaves the "
                    "field out (the worker's setting, %s ms unless RAINSTORM_LOG_COMMIT_MS "
                    "says otherwise); e.g. default,40,20" % DEFAULT_COMMIT_MS)
    ap.add_argument("--latency-jobs", help="comma-separated, from app1, app1-exec, app2, "
                    "app2-exec (default app1,app1-exec; app1 with --quick); 'none' to skip")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds allowed per run")
    ap.add_argument("--baselines-only", action="store_true",
                    help="run only the Unix and shell-pipe baselines (no engine needed)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (data, job "
                    "files, outputs, logs) and print its path")
    args = ap.parse_args(argv)
    if args.lines is None:
        args.lines = 100_000 if args.quick else 1_000_000
    if args.latency_lines is None:
        args.latency_lines = 20_000 if args.quick else 100_000
    args.modes = (args.modes.split(",") if args.modes
                  else (["exactly-once"] if args.quick else list(MODES)))
    for m in args.modes:
        if m not in MODES:
            ap.error("unknown delivery mode %r" % m)
    args.kinds = [] if args.kinds == "none" else [k for k in args.kinds.split(",") if k]
    for k in args.kinds:
        if k not in ("builtin", "chain", "exec"):
            ap.error("unknown operator kind %r" % k)
    args.apps = [x for x in args.apps.split(",") if x]
    for x in args.apps:
        if x not in APPS:
            ap.error("unknown app %r" % x)
    args.baselines = ([] if args.baselines == "none"
                      else [x for x in args.baselines.split(",") if x])
    for x in args.baselines:
        if x not in BASELINES:
            ap.error("unknown baseline %r" % x)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.repeat > 1 and not args.compare:
        ap.error("--repeat goes with --compare")
    if args.compare and args.baselines_only:
        ap.error("--compare needs the engine: drop --baselines-only")
    if args.data:
        args.data = os.path.abspath(args.data)
        if not os.path.isfile(args.data):
            ap.error("no dataset at %s" % args.data)
    lj = args.latency_jobs or ("none" if args.compare else
                               "app1" if args.quick else "app1,app1-exec")
    args.latency_jobs = [] if lj == "none" else lj.split(",")
    try:
        args.latency_commit_ms = [None if c == "default" else int(c)
                                  for c in args.latency_commit_ms.split(",")]
    except ValueError:
        ap.error("--latency-commit-ms takes 'default' or integers, comma-separated")
    for j in args.latency_jobs:
        if j not in ("app1", "app1-exec", "app2", "app2-exec"):
            ap.error("unknown latency job %r" % j)
    if (args.lines < 2 and not args.data) or args.latency_lines < 1:
        ap.error("need at least 2 lines")
    args.bin = os.path.abspath(args.bin)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = "python3 bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    needs_engine = args.compare or (args.kinds and not args.baselines_only) or (
        args.latency_jobs and not args.baselines_only)
    if needs_engine and not os.access(args.bin, os.X_OK):
        print("rainstorm binary not found at %s.\nBuild it first:  cargo build --release\n"
              "(or pass --bin PATH, or --baselines-only to run just the baselines)"
              % args.bin, file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tmp = tempfile.mkdtemp(prefix="rainstorm-bench-")
    try:
        suite = Suite(args, tmp)
        if args.data:
            data = args.data
            args.lines = count_lines(data)
            size = os.path.getsize(data)
            data_info = "%s lines, %.0f MB (%.0f bytes/line), `%s`" % (
                fmt_int(args.lines), size / 1e6, size / max(args.lines, 1), data)
        else:
            data = os.path.join(tmp, "signs.csv")
            suite.log("generating %s lines (seed %d) into %s"
                      % (fmt_int(args.lines), args.seed, data))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, os.path.join(EXAMPLES, "gen_signs.py"), "--lines",
                            str(args.lines), "--seed", str(args.seed), "--out", data],
                           check=True)
            gen_s = time.perf_counter() - t0
            size = os.path.getsize(data)
            data_info = ("%s lines, %.0f MB (%.0f bytes/line), `examples/gen_signs.py --seed "
                         "%d`, generated in %.1f s" % (fmt_int(args.lines), size / 1e6,
                                                       size / args.lines, args.seed, gen_s))
        suite.log("computing reference outputs")
        for app in args.apps:
            suite.expected_lines(data, app)

        if args.baselines_only:
            args.kinds = []
        if args.compare:
            suite.compare(data, args.lines)
        else:
            suite.throughput(data, args.lines)

        if args.latency_jobs and not args.baselines_only:
            lat_data = os.path.join(tmp, "latency.csv")
            n = 0
            with open(data, "rb") as src, open(lat_data, "wb") as dst:
                for line in src:
                    if n == args.latency_lines:
                        break
                    dst.write(line)
                    n += 1
            suite.log("latency runs: %s lines at %s tuples/s"
                      % (fmt_int(n), fmt_int(args.latency_rate)))
            suite.latency(lat_data, n)

        section = render(suite, args, command, data_info, started)
        print(section)
        if args.out:
            if args.compare:
                write_section(args.out, section, COMPARE_BEGIN_MARK, COMPARE_END_MARK)
            else:
                write_section(args.out, section)
            suite.log("results written to %s" % args.out)
        if suite.failures:
            suite.log("%d run(s) failed; see above" % suite.failures)
        return 0
    finally:
        if args.keep:
            print("kept %s" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
