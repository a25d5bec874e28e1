//! A flood of connections without the cluster secret (silent ones, slowloris ones whose
//! request headers never end, ones refused with a 401 and left open) must not lock the
//! clients that have the secret out of the leader's API, nor take the leader's descriptors:
//! the leader caps its connections, closing what proves nothing to make room, and closes
//! every connection that sends no request within its header deadline.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// The leader's descriptor limit here: the flood is far beyond it.
const LEADER_NOFILE: u64 = 256;
/// Connections of the flood.
const FLOOD: usize = 1500;

/// Sets this process's soft limit of open descriptors (at most the hard limit).
fn set_nofile(soft: u64) -> std::io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = soft.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One request with the cluster secret on a fresh connection, within `limit`: the status
/// code, or why there was none.
fn with_secret(c: &Cluster, path: &str, limit: Duration) -> Result<u16, String> {
    let addr: std::net::SocketAddr = c.url.trim_start_matches("http://").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        c.token
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    Ok(split_response(&text).0)
}

/// Opens `n` connections without the secret, each silent, a slowloris (an unfinished
/// request), or refused with a 401 and left open; stops early if connecting fails.
fn flood(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for i in 0..n {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            break;
        };
        let sent = match i % 3 {
            0 => Ok(()),
            1 => s.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: "),
            _ => s.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: x\r\n\r\n"),
        };
        if sent.is_ok() {
            open.push(s);
        }
    }
    open
}

/// Whether the leader closed `s` (end of stream, or reset) before `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_flood_without_the_secret_does_not_lock_out_the_clients_with_it() {
    set_nofile(u64::MAX).unwrap();
    let c = Cluster::start_tuned(0, 5.0, &["--api-header-timeout-ms", "2000"], |cmd| {
        // SAFETY: between fork and exec the closure only calls setrlimit.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: LEADER_NOFILE,
                    rlim_max: LEADER_NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let addr: std::net::SocketAddr = c.url.trim_start_matches("http://").parse().unwrap();
    assert_eq!(
        with_secret(&c, "/api/jobs", Duration::from_secs(10)),
        Ok(200)
    );

    // A third of the flood first; the rest floods on while the client with the secret asks.
    let mut held = flood(addr, FLOOD / 3);
    let rest = std::thread::spawn(move || flood(addr, FLOOD - FLOOD / 3));
    let started = Instant::now();
    let answer = with_secret(&c, "/api/jobs", Duration::from_secs(10));
    let took = started.elapsed();
    held.extend(rest.join().unwrap());
    assert_eq!(
        answer,
        Ok(200),
        "the client with the secret during a flood ({} connections open); leader log:\n{}",
        held.len(),
        c.leader_log()
    );
    assert!(took < Duration::from_secs(10), "served in {took:?}");
    eprintln!(
        "served in {took:?} during a flood of {} connections",
        held.len()
    );
    assert_eq!(held.len(), FLOOD, "every flood connection was accepted");
    // Served again at the flood's height, and by the CLI.
    assert_eq!(
        with_secret(&c, "/api/workers", Duration::from_secs(10)),
        Ok(200)
    );
    assert_eq!(c.json(&["jobs", "--json"]), serde_json::json!([]));

    // Every flood connection is closed: to make room, or at the header deadline (2 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let open = held
        .iter_mut()
        .map(|s| closed_by(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(open, 0, "flood connections still open after 30 s");

    // The evictions were counted, not logged one by one.
    let lines = c
        .leader_log()
        .lines()
        .filter(|l| l.contains("HTTP connections refused or closed"))
        .count();
    assert!(
        lines <= 3,
        "{lines} log lines about the flood:\n{}",
        c.leader_log()
    );
}
