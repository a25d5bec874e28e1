//! Multi-host: a leader and workers on separate "hosts" (network namespaces, each with its own
//! IP on a bridge), driven from the host through the bridge. A worker is then cut off by
//! taking its link down: a partition, not a crash — the worker lives on as a zombie while its
//! tasks recover elsewhere. Skipped (with a message) where namespaces cannot be created.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

extern "C" {
    fn geteuid() -> u32;
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Net {
    id: u32,
    hosts: usize,
    procs: Vec<Child>,
}

impl Net {
    fn ns(&self, n: usize) -> String {
        format!("rs{}-{n}", self.id)
    }
    fn addr(&self, n: usize) -> String {
        format!("10.78.{}.{n}", self.id % 200)
    }
    fn veth(&self, n: usize) -> String {
        format!("rs{}v{n}", self.id)
    }
    fn bridge(&self) -> String {
        format!("rsb{}", self.id)
    }

    /// Creates `hosts` namespaces on a bridge, or None if this machine cannot.
    fn create(hosts: usize) -> Option<Net> {
        // SAFETY: plain libc call.
        if unsafe { geteuid() } != 0 || !ip(&["-V"]) {
            return None;
        }
        let net = Net {
            id: std::process::id() % 100_000,
            hosts: 0,
            procs: Vec::new(),
        };
        let mut net = net;
        let br = net.bridge();
        let subnet_host = format!("10.78.{}.254/24", net.id % 200);
        if !(ip(&["link", "add", &br, "type", "bridge"])
            && ip(&["addr", "add", &subnet_host, "dev", &br])
            && ip(&["link", "set", &br, "up"]))
        {
            return None;
        }
        for n in 1..=hosts {
            net.hosts = n;
            let (ns, veth, addr) = (net.ns(n), net.veth(n), format!("{}/24", net.addr(n)));
            let ok = ip(&["netns", "add", &ns])
                && ip(&[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ])
                && ip(&["link", "set", &veth, "master", &br, "up"])
                && ip(&[
                    "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0",
                ])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }

    fn spawn(&mut self, host: usize, args: &[&str], log: &std::path::Path) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), bin()])
            .args(args)
            .env("RAINSTORM_LOG", "info")
            .env("RAINSTORM_TOKEN", "multihost-test-secret-0123456789")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.procs.push(child);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in 1..=self.hosts {
            ip(&["netns", "del", &self.ns(n)]);
        }
        ip(&["link", "del", &self.bridge()]);
    }
}

#[test]
fn cluster_across_hosts_survives_a_partitioned_worker() {
    let Some(mut net) = Net::create(3) else {
        eprintln!("skipped: cannot create network namespaces here (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}:7070", net.addr(1));
    let leader_dir = dir.path().join("leader");
    net.spawn(
        1,
        &[
            "leader",
            "--listen",
            &format!("{}:7070", net.addr(1)),
            "--data-dir",
            leader_dir.to_str().unwrap(),
            "--heartbeat-timeout",
            "1.5",
            "--heartbeat-ms",
            "100",
        ],
        &dir.path().join("leader.log"),
    );
    for host in [2, 3] {
        let wdir = dir.path().join(format!("worker-{host}"));
        // Host 3 binds every address, as an operator often does: it must advertise the one its
        // peers reach it at (the route toward the leader), not a host name that resolves to
        // loopback there.
        let listen = match host {
            3 => "0.0.0.0:0".to_string(),
            _ => format!("{}:0", net.addr(host)),
        };
        net.spawn(
            host,
            &[
                "worker",
                "--leader",
                &url,
                "--slots",
                "64",
                "--data-dir",
                wdir.to_str().unwrap(),
                "--listen",
                &listen,
            ],
            &dir.path().join(format!("worker-{host}.log")),
        );
    }
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .env("RAINSTORM_LEADER", &url)
            .env("RAINSTORM_TOKEN", "multihost-test-secret-0123456789")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rainstorm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(bin())
            .args(args)
            .env("RAINSTORM_LEADER", &url)
            .env("RAINSTORM_TOKEN", "multihost-test-secret-0123456789")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let ws = wait_for(
        "both workers to join across the bridge",
        Duration::from_secs(30),
        || {
            let ws = json(&["workers", "--json"]);
            (ws.as_array()?
                .iter()
                .filter(|w| w["state"] == "alive")
                .count()
                == 2)
                .then_some(ws)
        },
    );
    let advertised: Vec<String> = ws
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["address"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        advertised
            .iter()
            .any(|a| a.starts_with(&format!("{}:", net.addr(3)))),
        "the wildcard-bound worker advertises its address toward the leader: {advertised:?}"
    );
    let signs = Signs::generate(12000, 31);
    signs.write(&dir.path().join("signs.csv"));
    cli(&["put", "signs.csv", "signs.csv"]);
    std::fs::write(
        dir.path().join("app2.toml"),
        job_toml(
            "app2",
            "signs.csv",
            "out/app2.txt",
            3000.0,
            "exactly-once",
            &[
                (3, "filter", &["Punched Telespar"]),
                (3, "count-by", &["9"]),
            ],
        ),
    )
    .unwrap();
    let id = cli(&["submit", "app2.toml"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    wait_for("the job to get going", Duration::from_secs(60), || {
        (json(&["job", &id, "--json"])["source_tuples"].as_u64()? >= 3000).then_some(())
    });
    // Partition host 3: its worker keeps running but can reach no one.
    assert!(ip(&["link", "set", &net.veth(3), "down"]));
    let cut = net.addr(3);
    wait_for(
        "the partitioned worker to be declared dead",
        Duration::from_secs(20),
        || {
            let ws = json(&["workers", "--json"]);
            ws.as_array()?
                .iter()
                .any(|w| {
                    w["address"].as_str().is_some_and(|a| a.starts_with(&cut))
                        && w["state"] == "dead"
                })
                .then_some(())
        },
    );
    let j = wait_for("the job to end", Duration::from_secs(120), || {
        let j = json(&["job", &id, "--json"]);
        (j["status"] != "running").then_some(j)
    });
    assert_eq!(j["status"], "succeeded", "{j}");
    let out = std::fs::read_to_string(leader_dir.join("store/out/app2.txt")).unwrap();
    assert_same("output across hosts", &sorted_lines(&out), &signs.app2());
}
