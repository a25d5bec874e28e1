#!/usr/bin/env python3
"""Issue 19, target 6 in cluster mode: every process's peak memory for one job.

Starts a leader and 3 workers as separate processes on loopback (a temporary directory, the
default store under the leader), `put`s the dataset given, runs app2 with built-ins
exactly-once (filter -> count-by, 3 tasks each) with `submit --follow`, and prints each
process's peak resident memory (VmHWM) and the output's line count.

    cargo build --release
    python3 examples/gen_signs.py --lines 20000000 --seed 425 --out /tmp/in20m.csv
    python3 bench/cluster_memory.py /tmp/in20m.csv
"""
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RAINSTORM_BIN", os.path.join(REPO, "target", "release", "rainstorm"))
TOKEN = "bench-cluster-memory-secret-0123456789"
JOB = '''name = "cluster-memory"
delivery = "exactly-once"
[source]
path = "in.csv"
[sink]
path = "out.txt"
[[stages]]
tasks = 3
op = "filter"
args = ["Punched Telespar"]
[[stages]]
tasks = 3
op = "count-by"
args = ["9"]
'''


def peak_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024
    return None


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: cluster_memory.py DATASET")
    data = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="rainstorm-clmem-")
    env = dict(os.environ, RAINSTORM_TOKEN=TOKEN)
    procs = {}

    def spawn(name, argv):
        with open(os.path.join(tmp, name + ".log"), "wb") as out:
            procs[name] = subprocess.Popen([BIN] + argv, cwd=tmp, stdout=out,
                                           stderr=subprocess.STDOUT, env=env)

    def cli(*argv):
        r = subprocess.run([BIN] + list(argv), cwd=tmp, env=env, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit("rainstorm %s: %s" % (" ".join(argv), r.stderr.strip()))
        return r.stdout

    try:
        spawn("leader", ["leader", "--listen", "127.0.0.1:0", "--data-dir", "lead"])
        deadline, url = time.time() + 20, None
        while url is None:
            with open(os.path.join(tmp, "leader.log"), errors="replace") as f:
                for line in f:
                    if "listening on http://" in line:
                        url = line.split("listening on ", 1)[1].split()[0]
            if url is None and time.time() > deadline:
                raise SystemExit("the leader did not start; see %s/leader.log" % tmp)
            time.sleep(0.05)
        env["RAINSTORM_LEADER"] = url
        for w in range(1, 4):
            spawn("worker-%d" % w, ["worker", "--data-dir", "w%d" % w, "--slots", "4"])
        deadline = time.time() + 30
        while len([w for w in json.loads(cli("workers", "--json"))
                   if w["state"] == "alive"]) < 3:
            if time.time() > deadline:
                raise SystemExit("the workers did not register")
            time.sleep(0.1)
        t0 = time.time()
        cli("put", data, "in.csv")
        print("put: %.1f s" % (time.time() - t0))
        with open(os.path.join(tmp, "job.toml"), "w") as f:
            f.write(JOB)
        t0 = time.time()
        cli("submit", "job.toml", "--follow")
        print("job: %.1f s" % (time.time() - t0))
        print("peak RSS (MB): " + ", ".join("%s %s" % (n, peak_mb(p.pid))
                                           for n, p in procs.items()))
        with open(os.path.join(tmp, "lead", "store", "out.txt"), "rb") as f:
            print("output lines: %d" % sum(1 for _ in f))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            p.wait()


if __name__ == "__main__":
    main()
