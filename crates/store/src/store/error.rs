//! What can go wrong with a store, and the mappings of local I/O errors to it.

/// A store failure, with whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{0}: not found in the store")]
    NotFound(String),
    /// The path is not a valid store path.
    #[error("{0:?} is not a valid store path (relative, no '..')")]
    BadPath(String),
    /// The path holds a byte no store path may hold (a NUL, a control character), or is
    /// longer than a file system or S3 can name.
    #[error("{path:?} is not a valid store path: {why}")]
    BadByte {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A local store's path crosses a symbolic link inside its directory: the store never
    /// follows one, so no store path can name a file outside the store.
    #[error("{0}: crosses a symbolic link inside the store directory; the store does not follow symbolic links")]
    Symlink(String),
    /// Local I/O failed.
    #[error("store i/o on {path}: {cause}")]
    Io {
        /// Store path.
        path: String,
        /// Cause: in the message, so not a `source` too (a printed chain would repeat it).
        cause: std::io::Error,
    },
    /// The leader's store API failed.
    #[error("store request {0}")]
    Http(String),
    /// The leader's store could not be reached: no answer, or one from a leader starting or
    /// stopping (502, 503, 504). A log write retries this for longer than other errors
    /// (`log::WRITE_PATIENCE`): a leader restart makes it, and passes.
    #[error("store request {0} (the leader did not answer)")]
    Unreachable(String),
    /// The object store (local directory or S3) failed.
    #[error("object store, {path}: {msg}")]
    Object {
        /// Store path.
        path: String,
        /// Cause.
        msg: String,
    },
}

/// Whether a local I/O error says the path names nothing: missing, or under a file used as
/// a folder (`a/b` where `a` is a file, `ENOTDIR`), which is as absent as a missing one.
pub(super) fn names_nothing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Maps a local I/O error on store path `path`: a path that names nothing
/// ([`names_nothing`]) is [`StoreError::NotFound`].
pub(super) fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |cause| {
        if names_nothing(&cause) {
            StoreError::NotFound(path.to_string())
        } else {
            StoreError::Io {
                path: path.to_string(),
                cause,
            }
        }
    }
}

/// The error of an upload whose body stream failed part-way.
pub(super) fn upload_broke(clean: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: clean.to_string(),
        cause: std::io::Error::other(format!("upload broke: {e}")),
    }
}
