//! The simulation's stand-ins for executable operators: a scripted line transformer run as an
//! in-process task on in-memory pipes, speaking the same line protocol as a real operator. The
//! hosts' [`Launch`] starts them, so the simulation runs the real `ExecOperator` code (line
//! protocol, reader, feeding, early exit, kill) around them.

use rainstorm::model::tuple::Tuple;
use rainstorm::protocol::line::{decode_line, encode_line};
use rainstorm::runtime::exec::{ExecError, Launch, Launched, OperatorProcess, PIPE_BUF};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::task::JoinHandle;

/// A line transformer: what a stand-in does to each input tuple, and (given `None`) what it
/// writes when its input ends.
pub type Transform = Box<dyn FnMut(Option<Tuple>) -> Vec<Tuple> + Send>;

/// A transformer that answers each tuple as it comes and writes nothing at the end.
pub fn per_line(mut f: impl FnMut(Tuple) -> Vec<Tuple> + Send + 'static) -> Transform {
    Box::new(move |t: Option<Tuple>| t.map_or_else(Vec::new, &mut f))
}

/// A stand-in for an executable: makes a fresh transformer for each attempt (so state never
/// leaks from one attempt to the next, as with a real process).
pub type ScriptFn = Arc<dyn Fn() -> Transform + Send + Sync>;

/// The stand-ins by executable path: the simulated workers' operator factory.
pub struct StandIns(HashMap<String, ScriptFn>);

impl StandIns {
    /// Stand-ins by path.
    pub fn new(map: HashMap<String, ScriptFn>) -> Self {
        StandIns(map)
    }
}

impl Launch for StandIns {
    fn launch(&self, path: &Path, _args: &[String]) -> Result<Launched, ExecError> {
        let Some(script) = path.to_str().and_then(|p| self.0.get(p)) else {
            return Err(ExecError::Spawn {
                path: path.display().to_string(),
                cause: std::io::ErrorKind::NotFound.into(),
            });
        };
        Ok(start(script()))
    }
}

/// Starts transformer `f` as a task on in-memory pipes; returns it as the operator's process,
/// with the write end of its stdin and the read end of its stdout.
fn start(mut f: Transform) -> Launched {
    let (stdin_w, stdin_r) = tokio::io::duplex(PIPE_BUF);
    let (stdout_w, stdout_r) = tokio::io::duplex(PIPE_BUF);
    let task = tokio::spawn(async move {
        let mut rd = BufReader::new(stdin_r);
        let mut out = BufWriter::new(stdout_w);
        let mut line = String::new();
        let mut enc = Vec::new();
        loop {
            line.clear();
            match rd.read_line(&mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let t = decode_line(line.trim_end_matches('\n'));
            for o in f(Some(t)) {
                enc.clear();
                encode_line(&o, &mut enc);
                if out.write_all(&enc).await.is_err() {
                    return;
                }
            }
            if rd.buffer().is_empty() && out.flush().await.is_err() {
                return;
            }
        }
        // The end of its input: what it held back.
        for o in f(None) {
            enc.clear();
            encode_line(&o, &mut enc);
            if out.write_all(&enc).await.is_err() {
                return;
            }
        }
        if let Err(e) = out.shutdown().await {
            tracing::debug!(error = %e, "scripted operator: closing stdout failed");
        }
    });
    Launched {
        process: Box::new(Scripted {
            task: Some(task),
            code: 0,
        }),
        stdin: Box::new(stdin_w),
        stdout: Box::new(stdout_r),
    }
}

/// A stand-in's task in the place of a process: exit code 0 when it returned, 9 (as if
/// killed) when it panicked or was aborted.
struct Scripted {
    /// The task while it runs.
    task: Option<JoinHandle<()>>,
    /// Its exit code, once it ended.
    code: i32,
}

impl OperatorProcess for Scripted {
    fn pid(&self) -> u32 {
        0
    }

    fn wait(&mut self) -> futures::future::BoxFuture<'_, std::io::Result<ExitStatus>> {
        Box::pin(async move {
            if let Some(task) = self.task.as_mut() {
                self.code = match task.await {
                    Ok(()) => 0,
                    Err(_) => 9,
                };
                self.task = None;
            }
            Ok(ExitStatus::from_raw(self.code))
        })
    }

    fn kill(&mut self) -> futures::future::BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            if let Some(h) = self.task.take() {
                h.abort();
                if let Err(e) = h.await {
                    if !e.is_cancelled() {
                        tracing::warn!(error = %e, "scripted operator panicked");
                    }
                }
            }
            Ok(())
        })
    }
}
