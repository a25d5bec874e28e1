//! Processes an operator detached from its group (`setsid`, a double fork) are not killed
//! with the group. A worker makes itself their subreaper, so such a process becomes the
//! worker's child once its parent exits, and every time an operator ends the worker kills
//! (and reaps) each child of its own that is not a live operator. Operators must not leave
//! processes behind; this makes that true even for one that tries.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether this process adopts orphans (a worker; never a test or tool process).
static ADOPTING: AtomicBool = AtomicBool::new(false);

/// Operator processes this process started and has not reaped: never swept.
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Makes this process the subreaper of everything its operators leave behind. Called once
/// by a worker at start.
pub fn adopt_orphans() -> std::io::Result<()> {
    // SAFETY: plain prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    ADOPTING.store(true, Ordering::Relaxed);
    Ok(())
}

/// Runs `spawn` (which starts an operator and returns its pid) with the live set locked, so
/// a sweep can never see the new child before it is known as live.
pub(super) fn spawn_live<T>(
    spawn: impl FnOnce() -> std::io::Result<(T, u32)>,
) -> std::io::Result<T> {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let (v, pid) = spawn()?;
    live.insert(pid);
    Ok(v)
}

/// An operator process was reaped (or given up): it is no longer live.
pub(super) fn reaped(pid: u32) {
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
}

/// Kills and reaps every child of this process that is not a live operator: what operators
/// detached and left behind (adopted as orphans). Does nothing outside a worker.
pub(super) fn sweep() {
    if !ADOPTING.load(Ordering::Relaxed) {
        return;
    }
    // Read /proc without the lock (no I/O under it), then decide under it: an operator
    // being spawned holds the lock until it is in `LIVE`, so a child that existed at the
    // scan and is an operator is known as one by the time it is checked. Each child is held
    // by a pidfd from the scan on: an operator reaped by its task between the scan and the
    // check (and so no longer in `LIVE`) is then seen as gone, where a pid would have been
    // taken for an orphan, and could even name a new process by then.
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let children: Vec<(u32, Pidfd)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid > 1 && parent_of(*pid) == Some(me))
        .filter_map(|pid| Some((pid, Pidfd::open(pid)?)))
        .collect();
    if !children.is_empty() {
        settle(children);
    }
}

/// Kills and reaps each of `children` (found by a scan) that is not a live operator and has
/// not been reaped since; returns the pids it killed.
fn settle(children: Vec<(u32, Pidfd)>) -> Vec<u32> {
    let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let mut killed = Vec::new();
    for (pid, fd) in children.into_iter().filter(|(p, _)| !live.contains(p)) {
        if fd.kill() {
            tracing::warn!(pid, "killing a process an operator left behind");
            fd.reap();
            killed.push(pid);
        }
    }
    killed
}

/// How long a sweep waits for a process it SIGKILLed to end, to reap it: without the wait,
/// it was left a zombie until the next sweep, which an idle worker may never run.
const REAP_WAIT_MS: i32 = 1000;

/// A process held by a pid file descriptor: signals and waits reach that process only, never
/// one that took its pid after it was reaped.
struct Pidfd(std::os::fd::OwnedFd);

impl Pidfd {
    /// A descriptor for `pid`; none if it is gone.
    fn open(pid: u32) -> Option<Pidfd> {
        // SAFETY: plain syscall; on success it returns a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a valid descriptor that nothing else owns.
        Some(Pidfd(unsafe {
            std::os::fd::FromRawFd::from_raw_fd(fd as std::os::fd::RawFd)
        }))
    }

    /// SIGKILLs the process; false if it was reaped already (by its own task).
    fn kill(&self) -> bool {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.0);
        // SAFETY: plain syscall on a descriptor we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }

    /// Reaps the process once it has ended (it is this process's child: an adopted orphan).
    /// A SIGKILLed process ends within moments, so the wait is bounded by [`REAP_WAIT_MS`]:
    /// one not reaped by then (stuck in the kernel) is reaped by a later sweep.
    fn reap(&self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.0);
        let mut ready = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: plain syscalls on a descriptor we own; `ready` and `info` are ours.
        unsafe {
            // A pidfd reads ready once its process has exited.
            libc::poll(&mut ready, 1, REAP_WAIT_MS);
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PIDFD,
                fd as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            );
        }
    }
}

/// The parent pid of `pid`, from `/proc/PID/stat` (the field after the command name, which is
/// in parentheses and may itself hold spaces or parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(parse_ppid("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parse_ppid("garbage"), None);
    }

    fn sleeper() -> (std::process::Child, u32) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        (child, pid)
    }

    #[test]
    fn an_operator_reaped_between_the_scan_and_the_check_is_not_taken_for_an_orphan() {
        // Its task reaps it after the scan has seen it as a child: by the check it is no
        // longer live, and its pid names nothing (or, later, another process).
        let mut child = spawn_live(|| Ok(sleeper())).unwrap();
        let pid = child.id();
        let fd = Pidfd::open(pid).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        reaped(pid);
        assert_eq!(settle(vec![(pid, fd)]), Vec::<u32>::new());
    }

    #[test]
    fn a_child_that_is_no_operator_is_killed_and_reaped() {
        let (child, pid) = sleeper();
        let fd = Pidfd::open(pid).unwrap();
        assert_eq!(settle(vec![(pid, fd)]), vec![pid]);
        // Reaped by the sweep itself: not left a zombie until a next sweep that may never
        // come. (The Child handle must not reap it again.)
        std::mem::forget(child);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} is left: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
}
