//! The progress line of `submit --follow`, `follow` and `run`: while a job's output streams to
//! stdout, a line on stderr (a terminal only) says how far the job is — tuples in and out,
//! their recent rates, the share of the source read, the elapsed time — redrawn in place
//! twice a second from the leader's record of the job (`GET /api/jobs/{id}`).
//!
//! [`render`] is a pure function of the numbers (tested alone); [`follow_to_stdout`] runs the
//! follow and the polling side by side in one task, so both end together and nothing is left
//! running; `output` decides where the line is drawn so that it never splits an output line.

use crate::cli::client::Client;
use crate::cli::output::{OutputWriter, StatusLine};
use crate::protocol::control::JobInfo;
use std::collections::VecDeque;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(500);

/// Over how long the rates are measured: several of the workers' reports (every half
/// second by default), so a rate does not flicker between zero and double.
const RATE_WINDOW_MS: u64 = 2_000;

/// Samples kept for the rates (more than the window ever needs at [`REDRAW`]).
const SAMPLES_KEPT: usize = 8;

/// The terminal width when it cannot be asked (nor `COLUMNS` says).
const DEFAULT_WIDTH: usize = 80;

/// What the line shows of one reading of the job's record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Tuples the source read and emitted.
    pub tuples_in: u64,
    /// Tuples the sink wrote.
    pub tuples_out: u64,
    /// The job's run time, ms (the leader's clock, so rates are not skewed by the polling).
    pub elapsed_ms: u64,
    /// The source file's size and how much of it is read, bytes, when the leader says.
    pub source: Option<(u64, u64)>,
    /// Task restarts so far.
    pub restarts: u64,
}

impl Sample {
    /// The numbers of a job's record.
    pub fn of(info: &JobInfo) -> Sample {
        Sample {
            tuples_in: info.source_tuples,
            tuples_out: info.sink_tuples,
            elapsed_ms: info.elapsed_ms,
            source: info.source_bytes.zip(info.source_read_bytes),
            restarts: info.recoveries,
        }
    }
}

/// Tuples per second in and out over the recent past; `None` until two readings apart.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Out of the source.
    pub tuples_in: Option<f64>,
    /// Into the sink.
    pub tuples_out: Option<f64>,
}

/// The last few readings, for the rates.
#[derive(Default)]
pub struct History(VecDeque<Sample>);

impl History {
    /// Adds a reading (a job restarted by a new leader may count from less: the older
    /// readings are then dropped) and returns the rates over the window up to it.
    pub fn push(&mut self, s: Sample) -> Rates {
        if self.0.back().is_some_and(|b| {
            s.elapsed_ms < b.elapsed_ms || s.tuples_in < b.tuples_in || s.tuples_out < b.tuples_out
        }) {
            self.0.clear();
        }
        if self.0.len() >= SAMPLES_KEPT {
            self.0.pop_front();
        }
        // The oldest reading still inside the window (or the newest one before it).
        while self.0.len() >= 2
            && s.elapsed_ms.saturating_sub(self.0[1].elapsed_ms) >= RATE_WINDOW_MS
        {
            self.0.pop_front();
        }
        let rates = match self.0.front() {
            Some(old) if s.elapsed_ms > old.elapsed_ms => {
                let secs = (s.elapsed_ms - old.elapsed_ms) as f64 / 1000.0;
                Rates {
                    tuples_in: Some(s.tuples_in.saturating_sub(old.tuples_in) as f64 / secs),
                    tuples_out: Some(s.tuples_out.saturating_sub(old.tuples_out) as f64 / secs),
                }
            }
            _ => Rates::default(),
        };
        self.0.push_back(s);
        rates
    }
}

/// The progress line for `s` at `rates`, at most `width - 1` characters (the last column is
/// left free: writing there makes some terminals wrap, and `\r` would then redraw only the
/// second row). The richest form that fits is chosen; a terminal narrower than the
/// shortest form gets a cut one.
pub fn render(s: &Sample, rates: &Rates, width: usize) -> String {
    let room = width.saturating_sub(1);
    let pct = s
        .source
        .map(|(size, read)| format!("{}% read", percent(read, size)));
    let flow = |n: u64, r: Option<f64>, with_rate: bool| match r {
        Some(r) if with_rate => format!("{} ({}/s)", group(n), group(r.round() as u64)),
        _ => group(n),
    };
    let restarts = match s.restarts {
        0 => None,
        1 => Some("1 restart".to_string()),
        n => Some(format!("{n} restarts")),
    };
    let clock = clock(s.elapsed_ms);
    let full = |prefix: bool, with_restarts: bool, with_rate: bool| {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(pct.clone());
        parts.push(format!(
            "in {}",
            flow(s.tuples_in, rates.tuples_in, with_rate)
        ));
        parts.push(format!(
            "out {}",
            flow(s.tuples_out, rates.tuples_out, with_rate)
        ));
        if with_restarts {
            parts.extend(restarts.clone());
        }
        parts.push(clock.clone());
        let line = parts.join(" · ");
        if prefix {
            format!("rainstorm: {line}")
        } else {
            line
        }
    };
    let shortest = {
        let mut parts: Vec<String> = pct.iter().map(|p| p.replace(" read", "")).collect();
        parts.push(format!("{}>{}", group(s.tuples_in), group(s.tuples_out)));
        parts.push(clock.clone());
        parts.join(" ")
    };
    let forms = [
        full(true, true, true),
        full(false, true, true),
        full(false, false, true),
        full(false, false, false),
        shortest,
    ];
    for f in &forms {
        if f.chars().count() <= room {
            return f.clone();
        }
    }
    forms[forms.len() - 1].chars().take(room).collect()
}

/// Whole percent of `read` in `size`, rounded down so that 100% means all of it (an empty
/// file is all read).
fn percent(read: u64, size: u64) -> u64 {
    if size == 0 {
        return 100;
    }
    (u128::from(read.min(size)) * 100 / u128::from(size)) as u64
}

/// A count with thousands separated by commas.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Elapsed time as `m:ss`, or `h:mm:ss` from an hour on.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The width of the terminal on stderr: as the terminal says, else `COLUMNS`, else 80.
/// Asked at every frame, so a resized window is followed.
fn width() -> usize {
    stderr_columns()
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .filter(|w| *w > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

/// The columns of the terminal on stderr, if it is one that says.
fn stderr_columns() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, which outlives the
    // call; on a descriptor that is not a terminal it fails and writes nothing.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// Redraws the progress line of job `id` from its record until `stop`, then erases it.
/// A failed reading is logged (debug) and the line keeps its last frame: progress is a
/// courtesy, never a reason to stop following.
pub async fn show(client: &Client, id: &str, mut line: StatusLine, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REDRAW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut history = History::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let info = tokio::select! {
            _ = stop.cancelled() => break,
            info = client.job(id) => info,
        };
        match info {
            Ok(info) if info.status.is_terminal() => break,
            Ok(info) => {
                let s = Sample::of(&info);
                let rates = history.push(s.clone());
                line.draw(&render(&s, &rates, width()));
            }
            Err(e) => {
                tracing::debug!(job = id, error = %format!("{e:#}"), "progress: cannot read the job")
            }
        }
    }
    line.erase();
}

/// Follows job `id` to stdout (see [`Client::follow`]), with a progress line on stderr when
/// stderr is a terminal.
pub async fn follow_to_stdout(client: &Client, id: &str) -> anyhow::Result<JobInfo> {
    with_status(client, id, |out| client.follow(id, out)).await
}

/// [`follow_to_stdout`] for `run`, whose leader runs in this process: the output is taken
/// straight from it (`leader::api::output_chunks`), with no HTTP hop and no JSON either side.
/// At a job's end the lines its follower had not yet taken come in one burst, on the job's
/// path to exit: over HTTP that burst was encoded, sent and decoded (about 10 ms of a
/// 1M-line job). The progress line still polls the API.
pub async fn follow_local_to_stdout(
    leader: &std::sync::Arc<crate::leader::Leader>,
    client: &Client,
    id: &str,
) -> anyhow::Result<JobInfo> {
    with_status(client, id, |out| follow_local(leader, id, out)).await
}

/// Writes job `id`'s output chunks from the in-process `leader` to `out` until its final
/// status; what was received is written out before it returns, whatever happened.
async fn follow_local(
    leader: &std::sync::Arc<crate::leader::Leader>,
    id: &str,
    mut out: OutputWriter,
) -> anyhow::Result<JobInfo> {
    use crate::leader::api::{output_chunks, OutputChunk};
    use futures::StreamExt;
    let job = crate::model::ids::JobId(id.to_string());
    let res = async {
        let mut chunks = output_chunks(leader.clone(), job, 0)
            .await
            .map_err(|(_, why)| anyhow::anyhow!("following job {id}: {why}"))?;
        while let Some(chunk) = chunks.next().await {
            match chunk.map_err(|e| anyhow::anyhow!("reading job {id}'s output: {e}"))? {
                OutputChunk::Lines(lines) => out.write(lines).await?,
                OutputChunk::End(info) => return Ok(*info),
            }
        }
        anyhow::bail!("job {id}'s output ended without its final status")
    }
    .await;
    let written = out.finish().await;
    let info = res?;
    written?;
    Ok(info)
}

/// Runs `follow` into stdout, with the progress line beside it when stderr is a terminal;
/// both end together.
async fn with_status<F, Fut>(client: &Client, id: &str, follow: F) -> anyhow::Result<JobInfo>
where
    F: FnOnce(OutputWriter) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<JobInfo>>,
{
    let (out, status) = OutputWriter::stdout_with_status()?;
    let Some(status) = status else {
        return follow(out).await;
    };
    let stop = CancellationToken::new();
    let follow = async {
        let info = follow(out).await;
        stop.cancel();
        info
    };
    let (info, ()) = tokio::join!(follow, show(client, id, status, stop.clone()));
    info
}

#[cfg(test)]
mod tests;
