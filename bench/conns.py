#!/usr/bin/env python3
"""Connections by process, not by task pair (issue 19, target 8).

    cargo build --release
    python3 bench/conns.py [--workers 2] [--tasks 64,62] [--wide-lines 40000]
                           [--lines 1000000] [--repeat 3] [--out docs/benchmarks.md]

Two measurements, each with links multiplexed (the default) and with `RAINSTORM_DATA_MUX=0`
(one TCP connection per link):

  * connections: a leader and --workers workers as separate processes on loopback run one
    exactly-once job with two adjacent stages of built-in `identity`, --tasks tasks each
    (64 and 62 by default: 64 + 64*62 + 62 = 4,094 links, the most a job may open is 4,096),
    over --wide-lines lines at --wide-rate lines/s. While it runs, /proc/net/tcp is sampled
    every 100 ms: the most data-plane TCP connections open at once (connections whose server
    end is a worker's data port), and the most descriptors any worker process held; then the
    job's wall time (submit to succeeded) and whether its output is its input.
  * throughput: app1 (built-in filter -> select, exactly-once, `rainstorm run --workers 3`,
    3 tasks per stage) over --lines lines of examples/gen_signs.py, runs of the two settings
    interleaved --repeat times; median wall time, lines/s and CPU time (user + system of the
    `rainstorm run` process: what the engine spent, whatever else the machine ran), output
    checked against examples/reference.py.

With --out FILE the results replace the marked section of FILE (or are appended).
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "rainstorm")
TOKEN = "bench-conns-secret-0123456789abcdef"
BEGIN = "<!-- BEGIN bench/conns.py results -->"
END = "<!-- END bench/conns.py results -->"
SETTINGS = [("multiplexed", {}), ("per link", {"RAINSTORM_DATA_MUX": "0"})]


def log(msg):
    print("[conns] " + msg, file=sys.stderr, flush=True)


class Cluster:
    """A leader and workers as child processes, in a temporary directory."""

    def __init__(self, binary, tmp, workers, slots, env):
        self.bin, self.tmp, self.workers, self.slots = binary, tmp, workers, slots
        self.env = dict(os.environ, RAINSTORM_TOKEN=TOKEN, **env)
        self.procs = []
        self.url = None

    def spawn(self, name, argv):
        out = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen([self.bin] + argv, cwd=self.tmp, stdout=out,
                             stderr=subprocess.STDOUT, env=self.env)
        out.close()
        self.procs.append(p)
        return p

    def start(self):
        self.spawn("leader", ["leader", "--listen", "127.0.0.1:0", "--data-dir", "lead"])
        path = os.path.join(self.tmp, "leader.log")
        deadline = time.time() + 20
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
        for w in range(1, self.workers + 1):
            self.spawn("w%d" % w, ["worker", "--data-dir", "w%d" % w,
                                   "--slots", str(self.slots)])
        deadline = time.time() + 30
        while True:
            alive = [w for w in self.api("GET", "/api/workers") if w.get("state") == "alive"]
            if len(alive) >= self.workers:
                self.data_ports = {int(w["address"].rsplit(":", 1)[1]) for w in alive}
                return
            if time.time() > deadline:
                raise SystemExit("only %d of %d workers registered" % (len(alive),
                                                                      self.workers))
            time.sleep(0.05)

    def cli(self, *argv):
        r = subprocess.run([self.bin] + list(argv), cwd=self.tmp, env=self.env,
                           capture_output=True, text=True, timeout=300)
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
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def data_connections(ports):
    """Established TCP connections whose server end is one of `ports` (counted once, at the
    connecting end: both ends are on this host)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) < 4 or cols[3] != "01":
                        continue
                    local = int(cols[1].rsplit(":", 1)[1], 16)
                    remote = int(cols[2].rsplit(":", 1)[1], 16)
                    if remote in ports and local not in ports:
                        n += 1
        except OSError:
            pass
    return n


def fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def wide(args, name, env, tmp):
    """The wide job on a fresh cluster; its numbers."""
    d = os.path.join(tmp, "wide-" + name.replace(" ", "-"))
    os.makedirs(d)
    tasks = [int(t) for t in args.tasks.split(",")]
    slots = -(-sum(tasks) // args.workers) + 1
    c = Cluster(args.bin, d, args.workers, slots, env)
    try:
        c.start()
        lines = "".join("line %d\n" % i for i in range(1, args.wide_lines + 1))
        with open(os.path.join(d, "in.txt"), "w") as f:
            f.write(lines)
        c.cli("put", "in.txt", "in.txt")
        stages = "".join('[[stages]]\ntasks = %d\nop = "identity"\n' % t for t in tasks)
        with open(os.path.join(d, "wide.toml"), "w") as f:
            f.write('name = "wide"\ndelivery = "exactly-once"\n[source]\npath = "in.txt"\n'
                    'rate = %s\n[sink]\npath = "out/wide.txt"\n%s' % (args.wide_rate, stages))
        links = tasks[0] + sum(a * b for a, b in zip(tasks, tasks[1:])) + tasks[-1]
        workers = [p.pid for p in c.procs[1:]]
        t0 = time.time()
        job = c.cli("submit", "wide.toml").strip().splitlines()[-1].strip()
        most_conns, most_fds, status = 0, 0, None
        while time.time() - t0 < args.timeout:
            most_conns = max(most_conns, data_connections(c.data_ports))
            most_fds = max([most_fds] + [fds(p) for p in workers])
            status = c.api("GET", "/api/jobs/" + job).get("status")
            if status not in ("running", "pending"):
                break
            time.sleep(0.1)
        wall = time.time() - t0
        out = c.cli("get", "out/wide.txt", "got.txt") if status == "succeeded" else None
        exact = False
        if out is not None:
            with open(os.path.join(d, "got.txt")) as f:
                exact = sorted(f.read().splitlines()) == sorted(lines.splitlines())
        row = {"setting": name, "links": links, "conns": most_conns, "fds": most_fds,
               "status": status, "wall": wall, "exact": exact}
        log("wide job, %s: %s" % (name, row))
        return row
    finally:
        c.stop()


def app1(args, name, env, tmp, data, i):
    """One app1 run; its wall time and whether its output matches the reference."""
    d = os.path.join(tmp, "app1-%s-%d" % (name.replace(" ", "-"), i))
    os.makedirs(d)
    job = os.path.join(d, "app1.toml")
    with open(job, "w") as f:
        f.write('name = "app1"\ndelivery = "exactly-once"\n[source]\npath = "%s"\nrate = 0\n'
                '[sink]\npath = "%s"\n[[stages]]\ntasks = 3\nop = "filter"\n'
                'args = ["Punched Telespar"]\n[[stages]]\ntasks = 3\nop = "select"\n'
                'args = ["3-5"]\n' % (data, os.path.join(d, "out.txt")))
    t0, ru0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([args.bin, "run", job, "--workers", "3"], cwd=d,
                       env=dict(os.environ, **env), capture_output=True, text=True,
                       timeout=args.timeout)
    wall, ru1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    ok = r.returncode == 0 and subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "reference.py"), "app1", data,
         "--compare", os.path.join(d, "out.txt")], capture_output=True).returncode == 0
    log("app1, %s, run %d: %.2f s, %.2f s CPU%s" % (name, i + 1, wall, cpu,
                                                   "" if ok else " (WRONG OUTPUT)"))
    return wall, cpu, ok


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "%d CPUs (nproc), %s; Linux %s" % (len(os.sched_getaffinity(0)), model,
                                             platform.release())


def render(args, rows, runs, command):
    out = ["_Generated by `%s` on %s (%s)._\n" % (
        command, datetime.date.today().isoformat(), machine())]
    tasks = args.tasks.replace(",", " and ")
    out.append("\nA job with two adjacent stages of %s built-in `identity` tasks "
               "(exactly-once, %d lines at %s lines/s) on %d worker processes:\n" % (
                   tasks, args.wide_lines, args.wide_rate, args.workers))
    out.append("\n| links | data-plane TCP connections (most at once) | most descriptors "
               "of a worker | job wall time | output |\n|---|---:|---:|---:|---|\n")
    for r in rows:
        out.append("| %s: %d | %d | %d | %.1f s | %s |\n" % (
            r["setting"], r["links"], r["conns"], r["fds"], r["wall"],
            "exact" if r["exact"] else "status %s, not exact" % r["status"]))
    out.append("\napp1 (built-in, exactly-once, `rainstorm run --workers 3`, 3 tasks per "
               "stage) over %d lines, %d interleaved runs each:\n" % (args.lines,
                                                                       args.repeat))
    out.append("\n| links | median wall time | lines/s | median CPU time | runs: wall / CPU (s) "
               "| output |\n|---|---:|---:|---:|---|---|\n")
    for name, _ in SETTINGS:
        walls = [w for w, _, _ in runs[name]]
        cpus = [c for _, c, _ in runs[name]]
        med = statistics.median(walls)
        out.append("| %s | %.2f s | %s | %.2f s | %s | %s |\n" % (
            name, med, "{:,}".format(int(args.lines / med)), statistics.median(cpus),
            ", ".join("%.2f / %.2f" % (w, c) for w, c in zip(walls, cpus)),
            "matches the reference" if all(ok for _, _, ok in runs[name]) else "WRONG"))
    return "".join(out)


def write_section(path, section):
    block = BEGIN + "\n" + section + END + "\n"
    with open(path) as f:
        old = f.read()
    start, end = old.find(BEGIN), old.find(END)
    if start >= 0 and end > start:
        new = old[:start] + block + old[end + len(END):].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", default="64,62")
    ap.add_argument("--wide-lines", type=int, default=40000)
    ap.add_argument("--wide-rate", default="8000")
    ap.add_argument("--lines", type=int, default=1000000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    args.bin = os.path.abspath(args.bin)
    if not os.access(args.bin, os.X_OK):
        raise SystemExit("no binary at %s: cargo build --release" % args.bin)
    command = "python3 bench/conns.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="rs-conns-") as tmp:
        rows = [wide(args, name, env, tmp) for name, env in SETTINGS]
        data = os.path.join(tmp, "signs.csv")
        subprocess.run([sys.executable, os.path.join(REPO, "examples", "gen_signs.py"),
                        "--lines", str(args.lines), "--out", data], check=True)
        runs = {name: [] for name, _ in SETTINGS}
        for i in range(args.repeat):
            for name, env in SETTINGS:
                runs[name].append(app1(args, name, env, tmp, data, i))
    section = render(args, rows, runs, command.strip())
    print(section)
    if args.out:
        write_section(args.out, section)


if __name__ == "__main__":
    main()
