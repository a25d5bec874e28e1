//! The identity operators run under (`worker --run-as USER`): looked up once, set once per
//! process, and applied to every operator process between fork and `exec` (see `process`).

use std::sync::OnceLock;

/// The unprivileged identity operators run as (`worker --run-as USER`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name.
    pub name: String,
    /// Its uid.
    pub uid: libc::uid_t,
    /// Its primary group.
    pub gid: libc::gid_t,
    /// Every group it belongs to (primary included).
    pub groups: Vec<libc::gid_t>,
}

impl RunAs {
    /// Looks a user up by name (the system's user database); an error if there is no such user.
    pub fn lookup(name: &str) -> anyhow::Result<RunAs> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| anyhow::anyhow!("--run-as {name:?}: not a user name"))?;
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pw`'s fields.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            anyhow::bail!(
                "--run-as {name}: looking the user up failed: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if result.is_null() {
            anyhow::bail!("--run-as {name}: no such user");
        }
        let (uid, gid) = (pw.pw_uid, pw.pw_gid);
        let mut n: libc::c_int = 64;
        let mut groups: Vec<libc::gid_t> = vec![0; n as usize];
        loop {
            let mut got = n;
            // SAFETY: `groups` has room for `got` entries.
            let rc =
                unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut got) };
            if rc >= 0 {
                groups.truncate(got.max(0) as usize);
                break;
            }
            if got <= n || n > 65536 {
                groups = vec![gid];
                break;
            }
            n = got;
            groups = vec![0; n as usize];
        }
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Ok(RunAs {
            name: name.to_string(),
            uid,
            gid,
            groups,
        })
    }
}

/// The identity operators of this process run as (one per process: it is the worker's).
static RUN_AS: OnceLock<RunAs> = OnceLock::new();

/// Makes every operator this process starts from now on run as `who`. Needs root (or the
/// user's own uid); set once per process.
pub fn run_operators_as(who: RunAs) -> anyhow::Result<()> {
    if who.uid == 0 {
        anyhow::bail!(
            "--run-as {}: that is root; operators must run as an unprivileged user",
            who.name
        );
    }
    // SAFETY: plain syscall.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && euid != who.uid {
        anyhow::bail!(
            "--run-as {}: this worker runs as uid {euid}, and only root can start processes as another user",
            who.name
        );
    }
    if RUN_AS.get() == Some(&who) {
        return Ok(());
    }
    let name = who.name.clone();
    RUN_AS.set(who).map_err(|_| {
        anyhow::anyhow!("--run-as {name}: operators of this process already have an identity")
    })
}

/// The identity set by [`run_operators_as`], if any: what every operator starts as.
pub(super) fn current() -> Option<RunAs> {
    RUN_AS.get().cloned()
}

impl RunAs {
    /// Fails unless this user can reach `dir` (every directory from `/` down to it grants it
    /// search permission) — where the worker caches operators it fetched from the store: a
    /// worker whose data dir is private would otherwise start and then fail every operator
    /// with "permission denied".
    pub fn check_reachable(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = &dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("--run-as {}: {}: {e}", self.name, dir.display()))?;
        let mut at = std::path::PathBuf::new();
        for part in dir.components() {
            at.push(part);
            let m = std::fs::metadata(&at)
                .map_err(|e| anyhow::anyhow!("--run-as {}: {}: {e}", self.name, at.display()))?;
            let mode = m.mode();
            let search = if m.uid() == self.uid {
                mode & 0o100
            } else if self.groups.contains(&m.gid()) {
                mode & 0o010
            } else {
                mode & 0o001
            };
            if search == 0 {
                anyhow::bail!(
                    "--run-as {}: operators fetched from the store are kept in {}, but {} \
                     (mode {:o}) does not let {} through; give the worker a --data-dir that \
                     user can traverse (e.g. chmod o+x {})",
                    self.name,
                    dir.display(),
                    at.display(),
                    mode & 0o7777,
                    self.name,
                    at.display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn nobody() -> RunAs {
        RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        }
    }

    #[test]
    fn a_private_directory_on_the_way_to_the_operator_cache_is_named() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let ops = data.join("ops");
        std::fs::create_dir_all(&ops).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&ops, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = nobody().check_reachable(&ops).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} (mode 700)", data.display())),
            "{err}"
        );
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).unwrap();
        nobody().check_reachable(&ops).unwrap();
    }

    #[test]
    fn root_is_not_an_unprivileged_identity() {
        let root = RunAs {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        let err = run_operators_as(root).unwrap_err().to_string();
        assert!(err.contains("unprivileged"), "{err}");
    }
}
