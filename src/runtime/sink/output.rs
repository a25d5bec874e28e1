//! Where a sink writes its lines: a local file (opened fresh, or cut back to its committed
//! length when resumed) or memory (the simulation), behind one small `Out` type.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Where the sink writes: a file, or memory (the simulation).
#[derive(Clone, Debug)]
pub enum SinkTarget {
    /// A local file (created with its directories).
    File(PathBuf),
    /// A buffer in memory.
    Memory(Arc<Mutex<Vec<u8>>>),
}

/// The open output of a sink.
pub(super) enum Out {
    File(tokio::io::BufWriter<tokio::fs::File>),
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Out {
    /// Opens the target: a resumed sink truncates it to its committed length, epoch 0
    /// truncates it, a later at-least-once epoch appends to what earlier epochs wrote (ending
    /// a half-written line first). Returns the output and its current length.
    pub(super) async fn open(
        target: &SinkTarget,
        epoch: u32,
        resume: Option<u64>,
    ) -> std::io::Result<(Out, u64)> {
        if let Some(len) = resume {
            return Out::resume(target, len).await;
        }
        match target {
            SinkTarget::Memory(buf) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                if epoch == 0 {
                    b.clear();
                } else if b.last().is_some_and(|c| *c != b'\n') {
                    b.push(b'\n');
                }
                Ok((Out::Memory(buf.clone()), b.len() as u64))
            }
            SinkTarget::File(path) => {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let mut file = if epoch == 0 {
                    tokio::fs::File::create(path).await?
                } else {
                    tokio::fs::OpenOptions::new()
                        .append(true)
                        .open(path)
                        .await?
                };
                let mut len = file.metadata().await?.len();
                if len > 0 && !ends_with_newline(path, len).await? {
                    // A cancelled epoch may have left half a line: end it, so the next line
                    // is not glued onto it.
                    file.write_all(b"\n").await?;
                    len += 1;
                }
                Ok((
                    Out::File(tokio::io::BufWriter::with_capacity(1 << 20, file)),
                    len,
                ))
            }
        }
    }

    /// Reopens the target cut back to `len`, its committed length: whatever was written after
    /// the last commit is written again (by the re-sent input), never kept twice.
    pub(super) async fn resume(target: &SinkTarget, len: u64) -> std::io::Result<(Out, u64)> {
        match target {
            SinkTarget::Memory(buf) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.truncate(len as usize);
                Ok((Out::Memory(buf.clone()), b.len() as u64))
            }
            SinkTarget::File(path) => {
                let file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
                let have = file.metadata().await?.len();
                if have < len {
                    return Err(std::io::Error::other(format!(
                        "{} holds {have} bytes but {len} were committed",
                        path.display()
                    )));
                }
                file.set_len(len).await?;
                file.sync_all().await?;
                drop(file);
                let file = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .await?;
                Ok((
                    Out::File(tokio::io::BufWriter::with_capacity(1 << 20, file)),
                    len,
                ))
            }
        }
    }

    pub(super) async fn write_line(&mut self, value: &str) -> std::io::Result<()> {
        match self {
            Out::File(f) => {
                f.write_all(value.as_bytes()).await?;
                f.write_all(b"\n").await
            }
            Out::Memory(b) => {
                let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
                b.extend_from_slice(value.as_bytes());
                b.push(b'\n');
                Ok(())
            }
        }
    }

    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::File(f) => f.flush().await,
            Out::Memory(_) => Ok(()),
        }
    }

    pub(super) async fn sync(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        match self {
            Out::File(f) => f.get_ref().sync_all().await,
            Out::Memory(_) => Ok(()),
        }
    }
}

/// Whether the first `len` bytes of a file end a line (a resumed sink must cut at one).
async fn ends_with_newline(path: &std::path::Path, len: u64) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(len - 1)).await?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).await?;
    Ok(b[0] == b'\n')
}
