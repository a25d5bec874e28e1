//! A leader's address as a user types it, checked before anything is sent.

/// A leader's URL as typed (`http://HOST:PORT`, `https://…`, or `HOST:PORT`), checked at once:
/// a mistyped one is an error before anything is sent, not a connection retried (hostile probe
/// 14: `htp://x` became `http://htp://x`, and a worker retried it for ever).
pub(super) fn leader_url(typed: &str) -> Result<String, String> {
    let t = typed.trim();
    let full = if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    };
    let bad = |why: &str| Err(format!("{why}; expected http://HOST:PORT"));
    let Ok(u) = reqwest::Url::parse(&full) else {
        return bad("not a URL");
    };
    if !matches!(u.scheme(), "http" | "https") {
        return bad(&format!("scheme {:?} is not http or https", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return bad("no host");
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty()
    {
        return bad("a leader's URL has no path, query, fragment or user");
    }
    // Scheme, host and port only (a default port left out).
    Ok(u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::leader_url;

    /// A leader's address is checked as typed: the forms a user types are taken, a mistyped
    /// one is refused saying why.
    #[test]
    fn a_leader_url_is_checked_as_typed() {
        for (typed, want) in [
            ("http://127.0.0.1:7070", "http://127.0.0.1:7070"),
            ("127.0.0.1:7070", "http://127.0.0.1:7070"),
            ("https://leader.example:443/", "https://leader.example"),
            (" http://[::1]:7070/ ", "http://[::1]:7070"),
            ("leader:7070", "http://leader:7070"),
        ] {
            assert_eq!(leader_url(typed).as_deref(), Ok(want), "{typed}");
        }
        for (typed, why) in [
            ("htp://x", "scheme \"htp\""),
            ("ftp://h:1", "scheme"),
            ("http://", "not a URL"),
            ("", "not a URL"),
            ("http://h:1/api", "no path"),
            ("http://h:1?x=1", "no path"),
            ("http://u@h:1", "no path"),
            ("http://h:99999", "not a URL"),
        ] {
            let err = leader_url(typed).unwrap_err();
            assert!(err.contains(why), "{typed}: {err}");
        }
    }
}
