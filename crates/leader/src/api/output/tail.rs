//! One follower's place in a job's output (`output.rs`): the sink's log while the job runs,
//! the output file once it ended, and the status its stream ends with.

use super::super::committed::{io, whole_lines, LogCursor, Seek, CHUNK};
use super::super::InUse;
use crate::model::ids::JobId;
use crate::protocol::control::JobInfo;
use crate::state::lock;
use crate::Leader;
use rainstorm_store::output::{SinkProgress, SinkTarget};
use rainstorm_store::store::ObjectReader;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

/// Why a follower's offset is refused.
pub(super) enum Refused {
    Bad(String),
    Io(std::io::Error),
}

/// One follower's stream: where it is in the output.
pub(super) struct Tail {
    pub(super) leader: Arc<Leader>,
    pub(super) id: JobId,
    pub(super) progress: watch::Receiver<SinkProgress>,
    /// The sink's commits as its worker reports them: each wakes the stream to read.
    pub(super) commits: watch::Receiver<(u32, u64)>,
    /// Where the follower is in the sink's log, the output while the job runs.
    pub(super) log: LogCursor,
    /// The output file, read once the job ended.
    pub(super) target: SinkTarget,
    /// The next byte of the output to hand out (always the start of a line).
    pub(super) offset: u64,
    /// The output file, opened at `offset`, with the bytes read past the last whole line (in
    /// a mutex only to make the stream `Sync`; it is only ever borrowed mutably, never locked).
    pub(super) fin: Option<(std::sync::Mutex<ObjectReader>, Vec<u8>)>,
    pub(super) done: bool,
    /// The job's status as its record expired (`JobRec::last_word`).
    pub(super) last_word: Arc<std::sync::OnceLock<JobInfo>>,
    pub(super) _open: InUse,
    /// Counted in the job's followers, which hold its record from expiring (a while).
    pub(super) _following: InUse,
}

/// Why a stream ends short: its job's output was removed before the follower read it all.
pub(super) const REMOVED: &str = "removed before this follower read all of it";

/// Why a stream ends short: its job's record expired before the follower read all of it.
pub(super) const EXPIRED: &str =
    "the job's record expired (retention_s) before this follower read all of its output";

impl Tail {
    /// The job's status for the end of the stream: its record's, or once the record expired
    /// the one it had then; `cut` says why the stream ends short, if it does. None only for
    /// a job whose record went without a last word (the leader restarted in between).
    pub(super) fn status(&self, cut: Option<&str>) -> Option<JobInfo> {
        let now = lock(&self.leader.state).job_info(&self.id);
        let gone = now.is_none();
        let mut info = now.or_else(|| self.last_word.get().cloned())?;
        if let Some(why) = cut.filter(|_| gone || cut == Some(REMOVED)) {
            info.output_replaced.get_or_insert_with(|| why.to_string());
        }
        Some(info)
    }

    /// Refuses an offset that is past the output so far or inside a line.
    pub(super) async fn check_offset(&mut self) -> Result<(), Refused> {
        if self.offset == 0 {
            return Ok(());
        }
        let beyond = |have: u64| {
            Refused::Bad(format!(
                "offset {} is beyond the output of job {} ({have} bytes so far)",
                self.offset, self.id
            ))
        };
        let inside = || {
            Refused::Bad(format!(
                "offset {} is not at the start of a line of job {}'s output",
                self.offset, self.id
            ))
        };
        if self.progress.borrow().closing {
            // The log is going away: check against the output file once it is final.
            if self.progress.wait_for(|p| p.finished).await.is_err() {
                return Err(Refused::Io(io("the job's record went away")));
            }
        }
        if self.progress.borrow().finished {
            let (mut rd, have) = self
                .open_final(self.offset - 1)
                .await
                .map_err(Refused::Io)?;
            if self.offset > have {
                return Err(beyond(have));
            }
            let mut b = [0u8; 1];
            rd.read_exact(&mut b).await.map_err(Refused::Io)?;
            return if b[0] == b'\n' { Ok(()) } else { Err(inside()) };
        }
        match self
            .log
            .seek(&self.leader.store, self.offset)
            .await
            .map_err(Refused::Io)?
        {
            Seek::LineStart => Ok(()),
            Seek::InsideLine => Err(inside()),
            Seek::Beyond(have) => Err(beyond(have)),
        }
    }

    /// [`Tail::check_offset`], checked again against the output file if the job started
    /// closing meanwhile (its log may have been removed under the first check).
    pub(super) async fn check(&mut self) -> Result<(), Refused> {
        let first = self.check_offset().await;
        if self.progress.borrow().closing {
            return self.check_offset().await;
        }
        first
    }

    /// The committed lines from `offset` on (see [`LogCursor::next`]).
    pub(super) async fn committed_lines(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.log
            .next(&self.leader.store, &self.progress, &mut self.offset)
            .await
    }

    /// Whether the job's sink wrote any output: then an output file not found was removed.
    pub(super) fn had_output(&self) -> bool {
        let info = lock(&self.leader.state).job_info(&self.id);
        let info = info.or_else(|| self.last_word.get().cloned());
        self.offset > 0 || info.is_some_and(|i| i.sink_tuples > 0)
    }

    /// The output file from byte `at`, and its length.
    pub(super) async fn open_final(&self, at: u64) -> std::io::Result<(ObjectReader, u64)> {
        match &self.target {
            SinkTarget::File(path) => {
                let mut f = match tokio::fs::File::open(path).await {
                    Ok(f) => f,
                    // A job that ended before its sink wrote anything has no output.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.had_output() => {
                        return Ok((Box::new(tokio::io::empty()), 0))
                    }
                    Err(e) => return Err(e),
                };
                let len = f.metadata().await?.len();
                f.seek(std::io::SeekFrom::Start(at.min(len))).await?;
                Ok((Box::new(f), len))
            }
            SinkTarget::Store(path) => {
                let len = match self.leader.store.size(path).await {
                    Ok(n) => n,
                    Err(rainstorm_store::store::StoreError::NotFound(_)) if !self.had_output() => {
                        return Ok((Box::new(tokio::io::empty()), 0))
                    }
                    // Removed (its retention ran out) before this follower read it all.
                    Err(rainstorm_store::store::StoreError::NotFound(p)) => {
                        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, p))
                    }
                    Err(e) => return Err(io(e)),
                };
                let mut rd = self.leader.store.open(path).await.map_err(io)?;
                tokio::io::copy(&mut (&mut rd).take(at.min(len)), &mut tokio::io::sink()).await?;
                Ok((rd, len))
            }
        }
    }

    /// The next whole lines of the ended job's output file, about a chunk at a time (its last
    /// line even without a newline); `None` at its end.
    pub(super) async fn final_lines(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.fin.is_none() {
            // Its output was never written, or another's stands at its path: none of it is
            // this job's (a follower of `run` printed an old file's lines from its offset).
            let foreign = lock(&self.leader.state)
                .jobs
                .get(&self.id)
                .is_some_and(|j| j.output_replaced.is_some());
            if foreign {
                return Ok(None);
            }
            let (rd, _) = self.open_final(self.offset).await?;
            self.fin = Some((std::sync::Mutex::new(rd), Vec::new()));
        }
        let Some((rd, carry)) = self.fin.as_mut() else {
            return Ok(None);
        };
        let rd = rd.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut buf = std::mem::take(carry);
        loop {
            if buf.len() >= CHUNK {
                if let Some(n) = whole_lines(&buf) {
                    *carry = buf.split_off(n);
                    self.offset += n as u64;
                    return Ok(Some(buf));
                }
            }
            buf.reserve(CHUNK);
            if rd.read_buf(&mut buf).await? == 0 {
                self.offset += buf.len() as u64;
                return Ok((!buf.is_empty()).then_some(buf));
            }
        }
    }
}
