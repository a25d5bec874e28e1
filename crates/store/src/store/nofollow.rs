//! A local store never follows a symbolic link inside its directory. `object_store`'s local
//! backend follows them on purpose, so a link planted in the store directory (`evil ->
//! /etc`) would let a store path (`evil/passwd`) read or write outside the store. Every
//! operation of a local store first checks, with `lstat` on each component below the root,
//! that its path crosses no link; a listing leaves out what is reached through one; a file
//! opened for reading refuses a link as its last component (`O_NOFOLLOW`), which narrows the
//! window between the check and the open to the directories above it.

use super::object::Objects;
use super::{io_err, ObjectMeta, StoreError};
use std::collections::HashMap;
use std::path::Path;

/// Fails with [`StoreError::Symlink`] if a component of store path `clean` (already clean)
/// below `root` is a symbolic link. Components that do not exist end the check: nothing is
/// there to follow (a write creates them as plain directories), and an operation on a path
/// that cannot exist reports its own error. Blocking (a few `lstat` calls).
pub(super) fn check(root: &Path, clean: &str) -> Result<(), StoreError> {
    let mut at = root.to_path_buf();
    for part in clean.split('/') {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(StoreError::Symlink(clean.to_string()))
            }
            Ok(_) => {}
            // Missing, or below a file: nothing further down exists, so there is nothing to
            // follow; the operation itself meets and reports the same condition.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
            Err(e) => return Err(io_err(clean)(e)),
        }
    }
    Ok(())
}

/// The objects of a listing whose paths cross no symbolic link below `root` (each directory
/// checked once). Blocking.
fn without_links(root: &Path, listed: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let mut dirs: HashMap<String, bool> = HashMap::new();
    listed
        .into_iter()
        .filter(|o| {
            let dir_ok = match o.path.rsplit_once('/') {
                None => true,
                Some((dir, _)) => *dirs
                    .entry(dir.to_string())
                    .or_insert_with(|| check(root, dir).is_ok()),
            };
            dir_ok
                && std::fs::symlink_metadata(root.join(&o.path))
                    .is_ok_and(|m| !m.file_type().is_symlink())
        })
        .collect()
}

impl Objects {
    /// For a local store: fails if `clean` crosses a symbolic link in the store directory
    /// (see [`check`]). Other stores have no links to follow.
    pub(super) async fn no_symlink(&self, clean: &str) -> Result<(), StoreError> {
        let Some(root) = self.root.clone() else {
            return Ok(());
        };
        let name = clean.to_string();
        tokio::task::spawn_blocking(move || check(&root, &name))
            .await
            .map_err(|e| io_err(clean)(std::io::Error::other(e)))?
    }

    /// For a local store: the listing without what lies behind a symbolic link.
    pub(super) async fn unlinked(
        &self,
        listed: Vec<ObjectMeta>,
        prefix: &str,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        let Some(root) = self.root.clone() else {
            return Ok(listed);
        };
        tokio::task::spawn_blocking(move || without_links(&root, listed))
            .await
            .map_err(|e| io_err(prefix)(std::io::Error::other(e)))
    }
}
