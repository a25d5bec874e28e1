//! The sink's output as text: one committed log segment rendered as lines, the committed
//! lineage a follower may print, and the whole lineage written out as the output file (a
//! local file replaced atomically, or a store object uploaded as a stream).

use crate::model::spec::PathMode;
use crate::runtime::log::{segment_values, LogError};
use crate::runtime::store::Store;
use bytes::{Bytes, BytesMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

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
pub fn segment_text(name: &str, data: Bytes) -> Result<Bytes, LogError> {
    let mut out = BytesMut::with_capacity(data.len());
    segment_values(name, &data, &mut out)?;
    Ok(out.freeze())
}

/// Writes the lines of `lineage` to `target`; returns the bytes written. A file is written
/// beside the target and renamed over it once durable, so the target only ever holds a whole
/// output; an upload replaces the object at once when it completes.
pub async fn assemble(
    store: &Store,
    lineage: &[String],
    target: &SinkTarget,
) -> Result<u64, String> {
    match target {
        SinkTarget::File(path) => to_file(store, lineage, path).await,
        SinkTarget::Store(path) => {
            let segs = lineage.to_vec();
            let reader = store.clone();
            let body = futures::stream::unfold(0usize, move |i| {
                let (segs, reader) = (segs.clone(), reader.clone());
                async move {
                    let seg = segs.get(i)?;
                    let text = match reader.get(seg).await {
                        Ok(data) => segment_text(seg, data).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    Some((text, i + 1))
                }
            });
            store
                .put_stream(path, body)
                .await
                .map_err(|e| format!("writing the output {path}: {e}"))
        }
    }
}

async fn to_file(store: &Store, lineage: &[String], path: &std::path::Path) -> Result<u64, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let failed = |e: std::io::Error| format!("writing the output {}: {e}", path.display());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("output path {} names no file", path.display()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    tokio::fs::create_dir_all(&dir).await.map_err(failed)?;
    let tmp = dir.join(format!(
        ".{name}.{}-{}.part",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = async {
        let mut f =
            tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&tmp).await?);
        let mut bytes = 0u64;
        for seg in lineage {
            let data = store.get(seg).await.map_err(std::io::Error::other)?;
            let text = segment_text(seg, data).map_err(std::io::Error::other)?;
            f.write_all(&text).await?;
            bytes += text.len() as u64;
        }
        f.flush().await?;
        f.get_ref().sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, path).await?;
        tokio::fs::File::open(&dir).await?.sync_all().await?;
        Ok::<u64, std::io::Error>(bytes)
    }
    .await;
    if written.is_err() {
        if let Err(e) = tokio::fs::remove_file(&tmp).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %tmp.display(), error = %e, "removing a half-written output failed");
            }
        }
    }
    written.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tuple::Tuple;
    use crate::runtime::log::{encode_record, seal_segment, BatchRecord, LogRecord};

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
        store.put(path, seal_segment(&body, 2)).await.unwrap();
    }

    #[tokio::test]
    async fn the_output_is_the_lineages_values_line_by_line_in_a_file_or_the_store() {
        let store = Store::memory();
        segment(&store, "s/1", &["a", "b,c"]).await;
        segment(&store, "s/2", &["", "d"]).await;
        let lineage = vec!["s/1".to_string(), "s/2".to_string()];
        let want = "a\nb,c\n\nd\n";
        assert_eq!(
            segment_text("s/1", store.get("s/1").await.unwrap()).unwrap(),
            "a\nb,c\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out/o.txt");
        let n = assemble(&store, &lineage, &SinkTarget::File(file.clone()))
            .await
            .unwrap();
        assert_eq!(n, want.len() as u64);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
        // Only the output is left: the temporary file was renamed over it.
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            1
        );
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
