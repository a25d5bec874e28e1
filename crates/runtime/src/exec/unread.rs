//! The input an operator's process left in its stdin pipe when it exited 0: lines it never
//! took, which the task counts as discarded. Without this, a process that exited 0 without
//! reading (`head -n 3`, or one that never reads) was silent whenever all its input fit in
//! the pipe before it exited: only tuples fed after the exit were counted (hostile probe 12).
//!
//! The pipe is read through a second read end, opened by its `/proc/self/fd` path (Linux
//! opens the same pipe again): a reader holds no write end, so the process still sees its
//! input end when the task closes its own, and the lines are read out only once it exited.

use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;

/// A second read end of an operator's stdin pipe.
pub(super) struct Probe(std::fs::File);

impl Probe {
    /// Opens one on the pipe whose write end is `fd` (which the caller must hold open
    /// meanwhile); none where that cannot be done (not a pipe, no `/proc`): the count is
    /// then the lower bound it was.
    pub(super) fn open(fd: RawFd) -> Option<Probe> {
        let path = format!("/proc/self/fd/{fd}");
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => Some(Probe(f)),
            Err(e) => {
                tracing::debug!(%path, error = %e, "no second read end of an operator's stdin; its unread input goes uncounted");
                None
            }
        }
    }

    /// The lines still in the pipe, read out (a line cut short counts: its tuple was not
    /// taken whole). Never blocks: the pipe holds at most its capacity.
    pub(super) fn unread_lines(mut self) -> u64 {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut lines, mut last) = (0u64, b'\n');
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                    last = buf[n - 1];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Empty (a writer still holds it) or anything else: what was read is all.
                Err(_) => break,
            }
        }
        lines + u64::from(last != b'\n')
    }
}

/// The lines in bytes written but not yet sent to the pipe (a writer's buffer).
pub(super) fn lines_in(buffered: &[u8]) -> u64 {
    let n = buffered.iter().filter(|b| **b == b'\n').count() as u64;
    n + u64::from(buffered.last().is_some_and(|b| *b != b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn lines_left_in_a_pipe_are_counted_once_its_reader_has_gone() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"a\tone\nb\ttwo\nc\tthr").unwrap();
        let probe = Probe::open(writer.as_raw_fd()).expect("a second read end");
        // The process took the first line and exited.
        let mut first = [0u8; 6];
        (&reader).read_exact(&mut first).unwrap();
        drop(reader);
        drop(writer);
        assert_eq!(probe.unread_lines(), 2);
    }

    #[test]
    fn a_pipe_read_to_the_end_has_nothing_unread() {
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"a\tone\n").unwrap();
        let probe = Probe::open(writer.as_raw_fd()).unwrap();
        drop(writer);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(probe.unread_lines(), 0);
        assert_eq!(lines_in(b"x\ny"), 2);
        assert_eq!(lines_in(b""), 0);
    }
}
