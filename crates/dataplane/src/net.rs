//! Which address a process tells its peers to use for its data listener.

use std::net::{IpAddr, ToSocketAddrs};

/// The host to advertise for a listener bound to `bound`: the bound IP itself, or, for a
/// wildcard bind (`0.0.0.0`), this host's name when it resolves (so peers on other hosts can
/// reach it), else loopback.
pub fn advertise_host(bound: IpAddr) -> String {
    if !bound.is_unspecified() {
        return bound.to_string();
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if !name.is_empty()
        && (name.as_str(), 0)
            .to_socket_addrs()
            .is_ok_and(|mut a| a.next().is_some())
    {
        return name;
    }
    tracing::warn!(hostname = %name, "listening on a wildcard address and the host name does not resolve; advertising 127.0.0.1 (pass an explicit advertise address for a multi-host cluster)");
    "127.0.0.1".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_binds_advertise_themselves() {
        assert_eq!(advertise_host("10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert!(!advertise_host("0.0.0.0".parse().unwrap()).is_empty());
    }
}
