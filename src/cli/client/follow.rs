//! Following a job's output: stream its lines to the user's output until the job ends, and
//! survive a leader restart by reconnecting from the byte reached, so no line is printed twice
//! or skipped.

use super::{refusal, Client};
use crate::cli::output::OutputWriter;
use crate::model::backoff::Backoff;
use crate::protocol::control::{JobInfo, OutputEvent};
use anyhow::{anyhow, Context};
use futures::{Stream, StreamExt};
use reqwest::Method;
use std::time::{Duration, Instant};
use tracing::warn;

impl Client {
    /// Streams a job's output lines into `out` until the job ends; returns its final record
    /// once every line is written.
    ///
    /// Survives a leader restart: when the stream breaks before the final status (connection
    /// refused or reset, a 5xx, a body cut short), it reconnects with backoff and asks for the
    /// output from the byte it had reached (`?offset=`), so no line is printed twice or
    /// skipped. It gives up after [`FOLLOW_PATIENCE`]'s time without a successful connection,
    /// or when the leader breaks the stream as many times in a row as it allows before
    /// sending anything; an unknown job, a refused secret or any other 4xx is final at once.
    pub async fn follow(&self, id: &str, out: OutputWriter) -> anyhow::Result<JobInfo> {
        self.follow_until(id, out, FOLLOW_PATIENCE).await
    }

    /// [`Client::follow`] with the given limits.
    async fn follow_until(
        &self,
        id: &str,
        mut out: OutputWriter,
        patience: Patience,
    ) -> anyhow::Result<JobInfo> {
        let res = self.follow_into(id, &mut out, patience).await;
        // Whatever happened, what was received is written out before we return.
        let written = out.finish().await;
        let info = res?;
        written?;
        Ok(info)
    }

    async fn follow_into(
        &self,
        id: &str,
        out: &mut OutputWriter,
        patience: Patience,
    ) -> anyhow::Result<JobInfo> {
        let mut written = 0u64;
        let mut backoff = Backoff::new(FOLLOW_RETRY_FIRST, FOLLOW_RETRY_CAP);
        // When the leader was last seen answering: a stream is a sign of life until it
        // breaks (or when we started).
        let mut reached = Instant::now();
        // Connections in a row that broke before delivering anything.
        let mut fruitless = 0u32;

        loop {
            let lost = match self.follow_once(id, &mut written, out).await {
                Ok(info) => return Ok(info),
                Err(Break::Fatal(e)) => return Err(e),
                Err(Break::Lost {
                    connected,
                    progressed,
                    error,
                }) => {
                    if connected {
                        reached = Instant::now();
                    }
                    if progressed {
                        backoff.reset();
                        fruitless = 0;
                    } else if connected {
                        fruitless += 1;
                    }
                    error
                }
            };
            if fruitless >= patience.fruitless {
                return Err(lost.context(format!(
                    "the leader at {} broke job {id}'s output stream {fruitless} times in a row \
                     before sending anything",
                    self.base
                )));
            }
            // A leader that never answered this client is most likely a mistyped address: given
            // up on sooner than one that answered and restarts.
            if !self.answered() && reached.elapsed() >= patience.first_contact {
                return Err(lost.context(format!(
                    "the leader at {} did not answer within {} s",
                    self.base,
                    patience.first_contact.as_secs()
                )));
            }
            if reached.elapsed() >= patience.give_up {
                return Err(lost.context(format!(
                    "lost the leader at {} while following job {id}: no connection for {} s",
                    self.base,
                    patience.give_up.as_secs()
                )));
            }
            let wait = backoff.next();
            warn!(
                job = id,
                leader = %self.base,
                offset = written,
                retry_in_ms = wait.as_millis() as u64,
                error = %format!("{lost:#}"),
                "the job's output stream broke; reconnecting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One connection of a follower: relays the output from byte `written` on, counting what
    /// it hands to `out`.
    async fn follow_once(
        &self,
        id: &str,
        written: &mut u64,
        out: &mut OutputWriter,
    ) -> Result<JobInfo, Break> {
        let req = self
            .request(
                Method::GET,
                &format!("/api/jobs/{}/output", super::job_segment(id)),
            )
            .query(&[("offset", *written)]);
        let resp = req.send().await.map_err(|e| Break::Lost {
            connected: false,
            progressed: false,
            error: anyhow::Error::new(e)
                .context(format!("cannot reach the leader at {}", self.base)),
        })?;
        self.heard();
        let status = resp.status();
        if !status.is_success() {
            let error = refusal(resp).await;
            return Err(if status.is_server_error() {
                // A leader starting or stopping, or a proxy in front of a dead one.
                Break::Lost {
                    connected: false,
                    progressed: false,
                    error,
                }
            } else {
                Break::Fatal(error)
            });
        }
        relay(resp.bytes_stream(), out, written).await
    }
}

/// When a follower gives up reconnecting.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Time without a successful connection.
    pub give_up: Duration,
    /// Time without a first connection (a leader that never answered this follower).
    pub first_contact: Duration,
    /// Connections in a row that broke before delivering anything: a leader that always cuts
    /// the stream at once (an output file it can no longer read) must not be retried
    /// forever, while a restart costs one such break.
    pub fruitless: u32,
}

/// A follower's limits: two minutes is long enough for a leader to be restarted by hand.
pub const FOLLOW_PATIENCE: Patience = Patience {
    give_up: Duration::from_secs(120),
    first_contact: Duration::from_secs(10),
    fruitless: 30,
};

/// A follower's first wait before reconnecting, and the most it waits between attempts.
const FOLLOW_RETRY_FIRST: Duration = Duration::from_millis(100);
const FOLLOW_RETRY_CAP: Duration = Duration::from_secs(2);

/// Why one connection of a follower ended without the job's final status.
enum Break {
    /// The leader or the connection failed: reconnecting can help. `connected`: the leader
    /// had answered with the stream; `progressed`: the stream delivered output before it
    /// broke.
    Lost {
        connected: bool,
        progressed: bool,
        error: anyhow::Error,
    },
    /// Retrying cannot help: the leader refused (unknown job, secret), the stream is not one
    /// we understand, or our own output failed.
    Fatal(anyhow::Error),
}

impl Break {
    /// The error, whatever kind of break it was.
    #[cfg(test)]
    fn into_error(self) -> anyhow::Error {
        match self {
            Break::Lost { error, .. } | Break::Fatal(error) => error,
        }
    }
}

/// Relays an NDJSON output stream: each data chunk goes to `out` as it arrives (and its
/// length is added to `written`), until the final record. A chunk is written whole or not at
/// all, so `written` is always the start of the first line not written yet.
async fn relay<E>(
    body: impl Stream<Item = Result<bytes::Bytes, E>>,
    out: &mut OutputWriter,
    written: &mut u64,
) -> Result<JobInfo, Break>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut progressed = false;
    let mut body = std::pin::pin!(body);
    // Bytes received and not yet parsed; the first `scanned` of them hold no line end. An
    // event may span many chunks: each chunk is searched once (a search from the start on
    // every chunk, and a drain per event, made a large output cost quadratic time).
    let mut pending: Vec<u8> = Vec::new();
    let mut scanned = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Break::Lost {
            connected: true,
            progressed,
            error: anyhow::Error::new(e).context("output stream broke"),
        })?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &pending[scanned..]) {
            let end = scanned + i + 1;
            let ev: OutputEvent = serde_json::from_slice(&pending[start..end])
                .context("bad event in the output stream")
                .map_err(Break::Fatal)?;
            (start, scanned) = (end, end);
            match ev {
                OutputEvent::Data(text) => {
                    let len = text.len() as u64;
                    out.write(text.into_bytes()).await.map_err(Break::Fatal)?;
                    *written += len;
                    progressed = true;
                }
                OutputEvent::End(info) => {
                    if let Some(by) = &info.output_replaced {
                        eprintln!(
                            "rainstorm: the output of job {} at {} was written over or removed since it ended ({by}); what was not printed of it cannot be",
                            info.id, info.sink
                        );
                    }
                    return Ok(info);
                }
            }
        }
        pending.drain(..start);
        scanned = pending.len();
    }
    Err(Break::Lost {
        connected: true,
        progressed,
        error: anyhow!("the output stream ended without a final status"),
    })
}

#[cfg(test)]
mod tests;
