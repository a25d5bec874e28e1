//! The output half of the operator line protocol: a task of its own reads the operator's
//! stdout, decodes each `key<TAB>value` line and pushes it to the router, so a child blocked
//! on a full stdout never deadlocks a task blocked on a full stdin.

use super::PIPE_BUF;
use crate::dataplane::router::{Closed, Router};
use crate::protocol::line::decode_line;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

/// Parses the operator's stdout into the router until it closes; returns the router.
pub(super) fn spawn_reader(
    stdout: impl AsyncRead + Send + Unpin + 'static,
    router: Router,
    emit: Arc<AtomicU64>,
) -> JoinHandle<Result<Router, Closed>> {
    tokio::spawn(async move {
        let mut router = router;
        let mut rd = BufReader::with_capacity(PIPE_BUF, stdout);
        let mut buf = Vec::with_capacity(1024);
        loop {
            buf.clear();
            match rd.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            let line = String::from_utf8_lossy(&buf);
            router
                .push(decode_line(&line), emit.load(Ordering::Relaxed))
                .await?;
            if rd.buffer().is_empty() {
                router.flush().await?;
            }
        }
        router.flush().await?;
        Ok(router)
    })
}
