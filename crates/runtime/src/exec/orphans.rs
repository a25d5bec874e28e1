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
    // scan and is an operator is known as one by the time it is checked.
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let children: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid > 1 && parent_of(*pid) == Some(me))
        .collect();
    if children.is_empty() {
        return;
    }
    let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    for pid in children.into_iter().filter(|p| !live.contains(p)) {
        tracing::warn!(pid, "killing a process an operator left behind");
        // SAFETY: plain syscalls on one process (pid > 1) that is our own child; waitpid on
        // that pid only, so no other child's status is taken from its owner.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG);
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
}
