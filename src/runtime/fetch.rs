//! Where an executable operator comes from on a worker: a local path in embedded runs, or a
//! copy fetched from the store into the worker's private directory.

use crate::protocol::control::TaskAssignment;
use crate::runtime::store::Store;
use std::path::PathBuf;

/// Resolves the local executable for an operator path (fetching it from the store in cluster
/// mode into `ops_dir`).
pub async fn resolve_exec(
    store: &Store,
    a: &TaskAssignment,
    path: &str,
    ops_dir: &std::path::Path,
) -> Result<PathBuf, String> {
    let local = PathBuf::from(path);
    if a.paths == crate::model::spec::PathMode::Local || (local.is_absolute() && local.exists()) {
        return Ok(local);
    }
    let clean = crate::runtime::store::clean_path(path).map_err(|e| e.to_string())?;
    let target = ops_dir.join(&a.key.job.0).join(&clean);
    if !target.exists() {
        let data = store
            .get(&clean)
            .await
            .map_err(|e| format!("fetching operator: {e}"))?;
        let t = target.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            crate::runtime::store::write_atomic(&t, &data)?;
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("installing operator {}: {e}", target.display()))?;
    }
    Ok(target)
}
