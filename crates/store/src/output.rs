//! The sink's output as text: one committed log segment rendered as lines, and a whole
//! lineage written out as the output file (a local file replaced atomically, or a store
//! object uploaded as a stream), and how far a job's output has come, for followers.

use crate::log::{segment_values, segment_values_written, LogError};
use crate::model::spec::PathMode;
use crate::seal::SealKey;
use crate::store::{write_stream_atomic, Access, Store, StoreError};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::path::PathBuf;

/// Progress of a job's output, followed by streaming clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// The job's end is being settled: its sink's log is about to be removed, so followers
    /// stop reading it (a read that overlapped the removal is discarded) and wait for
    /// `finished`.
    pub closing: bool,
    /// The job reached a final status and its output file is final.
    pub finished: bool,
}

/// Where a job's output goes.
#[derive(Clone, Debug)]
pub enum SinkTarget {
    /// A local file (embedded runs): written beside it, then renamed over it.
    File(PathBuf),
    /// A store object (clusters), uploaded as a stream.
    Store(String),
}

/// The target of output path `path` under path mode `paths`.
pub fn target(paths: PathMode, path: &str) -> SinkTarget {
    match paths {
        PathMode::Local => SinkTarget::File(PathBuf::from(path)),
        PathMode::Store => SinkTarget::Store(path.to_string()),
    }
}

/// The lines a sink log segment commits: each logged value and a newline, in log order.
pub fn segment_text(seal: &SealKey, name: &str, data: Bytes) -> Result<Bytes, LogError> {
    let mut out = BytesMut::with_capacity(data.len());
    segment_values(seal, name, &data, &mut out)?;
    Ok(out.freeze())
}

/// [`segment_text`] of a segment this process wrote itself or has checked already (a sink's
/// spool of what it commits or replays): its tag is not checked again.
pub fn segment_text_written(name: &str, data: Bytes) -> Result<Bytes, LogError> {
    let mut out = BytesMut::with_capacity(data.len());
    segment_values_written(name, &data, &mut out)?;
    Ok(out.freeze())
}

/// What [`assemble`] wrote: the output's size and its lines, which is what a job reports as
/// its lines out once the output is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the output.
    pub bytes: u64,
    /// Lines of the output.
    pub lines: u64,
}

/// Writes the lines of `lineage` to `target` and says how much it wrote. Both targets are
/// replaced whole or not at all: a local file through `store::write_stream_atomic`, a store
/// object by an upload that takes effect when it completes. One segment is in memory at a
/// time.
pub async fn assemble(
    store: &Store,
    lineage: &[String],
    target: &SinkTarget,
) -> Result<Written, OutputError> {
    let lines = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = lines.clone();
    let reader = store.clone();
    // Read ahead a few segments at once (in order): through the leader each read is a round
    // trip, and one at a time made a long job's output take seconds per thousand segments.
    let body = futures::stream::iter(lineage.to_vec())
        .map(move |seg| {
            let reader = reader.clone();
            async move {
                let data = reader.get(&seg).await.map_err(|e| e.to_string())?;
                segment_text(reader.seal(), &seg, data).map_err(|e| e.to_string())
            }
        })
        .buffered(READ_AHEAD)
        .inspect(move |text| {
            if let Ok(t) = text {
                let n = t.iter().filter(|b| **b == b'\n').count() as u64;
                counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        });
    let bytes = write_body(store, target, body)
        .await
        .map_err(OutputError::Write)?;
    let lines = lines.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Written { bytes, lines })
}

/// Segments read at once while assembling an output.
const READ_AHEAD: usize = 8;

/// Writes `body` as the output at `target`: a local file replaced atomically, or a store
/// object written as a stream. The bytes written.
pub async fn write_body<S, E>(
    store: &Store,
    target: &SinkTarget,
    body: S,
) -> Result<u64, StoreError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    match target {
        SinkTarget::File(path) => {
            write_stream_atomic(path, &path.display().to_string(), body, Access::Output).await
        }
        SinkTarget::Store(path) => store.put_stream(path, body).await,
    }
}

/// Why a job's output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The sink's log could not be read.
    #[error("sink log: {0}")]
    Log(#[from] LogError),
    /// A newer attempt of the sink fenced this one: that attempt writes the output instead.
    #[error("fenced: a newer attempt of the sink took over")]
    Fenced,
    /// Reading a segment or writing the target failed (nothing was committed).
    #[error("writing the output: {0}")]
    Write(StoreError),
    /// The sink's log in the store holds fewer group commits than the sink made: its newest
    /// objects were deleted behind its back (a gap in the middle is `LogError::Missing`), so
    /// the output would end early. Nothing is written; no attempt can do better.
    #[error(
        "the sink's log holds {found} of the {made} group commits this sink made or replayed: \
         committed output was deleted from the store, so the output is not written"
    )]
    Lost {
        /// Group commits the sink made or replayed.
        made: u64,
        /// Group commits its log in the store holds.
        found: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{encode_record, seal_segment, BatchRecord, LogRecord};
    use crate::model::tuple::Tuple;

    async fn segment(store: &Store, path: &str, values: &[&str]) {
        let mut body = BytesMut::new();
        encode_record(
            &mut body,
            &LogRecord::Batch(BatchRecord {
                from: 0,
                first_seq: 1,
                emit_ns: 0,
                tuples: values.iter().map(|v| Tuple::new("k", *v)).collect(),
            }),
        );
        encode_record(
            &mut body,
            &LogRecord::Eos {
                from: 0,
                last_seq: 9,
            },
        );
        store
            .put(path, seal_segment(&body, 2, store.seal(), path))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_output_is_the_lineages_values_line_by_line_in_a_file_or_the_store() {
        let store = Store::memory();
        segment(&store, "s/1", &["a", "b,c"]).await;
        segment(&store, "s/2", &["", "d"]).await;
        let lineage = vec!["s/1".to_string(), "s/2".to_string()];
        let want = "a\nb,c\n\nd\n";
        assert_eq!(
            segment_text(store.seal(), "s/1", store.get("s/1").await.unwrap()).unwrap(),
            "a\nb,c\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out/o.txt");
        let n = assemble(&store, &lineage, &SinkTarget::File(file.clone()))
            .await
            .unwrap();
        assert_eq!(
            n,
            Written {
                bytes: want.len() as u64,
                lines: 4
            }
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
        // Only the output is left: the temporary file was renamed over it.
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            1
        );
        // Made as any file is (0666 less the umask), not private to the writer; written again,
        // it keeps the mode its owner gave it.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let umask = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
            .unwrap();
        assert_eq!(mode(&file), 0o666 & !umask);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assemble(&store, &lineage, &SinkTarget::File(file.clone()))
            .await
            .unwrap();
        assert_eq!(mode(&file), 0o640);
        assemble(&store, &lineage, &SinkTarget::Store("o.txt".into()))
            .await
            .unwrap();
        assert_eq!(store.get("o.txt").await.unwrap(), want.as_bytes());
        // A segment that cannot be read fails the write and leaves the old output whole.
        let broken = vec!["s/1".to_string(), "s/missing".to_string()];
        assert!(assemble(&store, &broken, &SinkTarget::File(file.clone()))
            .await
            .is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            1
        );
    }
}
