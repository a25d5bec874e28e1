//! The process's limit on open files. Every link of the data plane holds a descriptor at each
//! end for the whole job, so the soft limit a shell hands out (often 1024) would cap a worker
//! far below what the system allows: every process raises it to the hard limit at start-up,
//! and the data plane is then fitted to what it got (`DataConfig::fit_to_fds`).

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force
/// afterwards (the old one if raising failed, which is logged). `None` when it cannot even be
/// read.
pub fn raise_nofile() -> Option<u64> {
    let (soft, hard) = match nofile() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            return None;
        }
    };
    if soft >= hard {
        tracing::info!(limit = soft, "open-files limit (already the hard limit)");
        return Some(soft);
    }
    // `hard` is the limit as read back (RLIM_INFINITY included): it is given back as is.
    let want = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass; no memory is shared.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(limit = soft, hard, error = %e, "cannot raise the open-files limit; keeping it");
        return Some(soft);
    }
    tracing::info!(
        from = soft,
        limit = hard,
        "open-files limit raised to the hard limit"
    );
    Some(hard)
}

/// The soft and hard `RLIMIT_NOFILE` of this process (`RLIM_INFINITY` is `u64::MAX` on
/// Linux, so no limit reads as the largest one).
pub fn nofile() -> std::io::Result<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((l.rlim_cur, l.rlim_max))
}

/// The descriptors this process may open now (its soft limit), for fitting the data plane;
/// a limit that cannot be read counts as the usual default of 1024.
pub fn open_files() -> u64 {
    nofile().map(|(soft, _)| soft).unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_limit() {
        let got = super::raise_nofile().expect("readable");
        let (soft, hard) = super::nofile().unwrap();
        assert_eq!(got, soft);
        assert_eq!(soft, hard);
    }
}
