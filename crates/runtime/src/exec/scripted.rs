//! The simulation's stand-ins for executables: a scripted line transformer run as an
//! in-process task on in-memory pipes, speaking the same line protocol as a real operator, so
//! the simulation exercises the same operator code as a real run.

use super::process::Proc;
use super::PIPE_BUF;
use crate::model::tuple::Tuple;
use crate::protocol::line::{decode_line, encode_line};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter, DuplexStream};

/// A stand-in for an executable: makes a fresh line transformer for each attempt (so state
/// never leaks from one attempt to the next, as with a real process).
pub type ScriptFn = Arc<dyn Fn() -> Box<dyn FnMut(Tuple) -> Vec<Tuple> + Send> + Send + Sync>;

/// Stand-ins for executables by operator path; empty outside the simulation.
#[derive(Clone, Default)]
pub struct Scripts(Arc<HashMap<String, ScriptFn>>);

impl Scripts {
    /// Stand-ins by path.
    pub fn new(map: HashMap<String, ScriptFn>) -> Self {
        Scripts(Arc::new(map))
    }

    /// The stand-in for `path`, if there is one.
    pub fn get(&self, path: &str) -> Option<ScriptFn> {
        self.0.get(path).cloned()
    }
}

/// Starts a fresh transformer of `script` as a task on in-memory pipes; returns it as the
/// operator's process, with the write end of its stdin and the read end of its stdout.
pub(super) fn start(script: ScriptFn) -> (Proc, DuplexStream, DuplexStream) {
    let (stdin_w, stdin_r) = tokio::io::duplex(PIPE_BUF);
    let (stdout_w, stdout_r) = tokio::io::duplex(PIPE_BUF);
    let mut f = script();
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
            for o in f(t) {
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
        if let Err(e) = out.shutdown().await {
            tracing::debug!(error = %e, "scripted operator: closing stdout failed");
        }
    });
    (Proc::Scripted(Some(task), 0), stdin_w, stdout_r)
}
