//! Which address a process tells its peers to use for its data listener.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// The host to advertise for a listener bound to `bound`: the bound IP itself, or, for a
/// wildcard bind (`0.0.0.0`), the address of the interface this host reaches `toward` (the
/// leader) from, when that is not loopback — the address its peers on other hosts reach it
/// at too; else this host's name when it resolves, else loopback. (The host name alone, as it
/// was, often resolves to 127.0.0.1 in `/etc/hosts`: peers elsewhere then dialled themselves.)
pub fn advertise_host(bound: IpAddr, toward: Option<SocketAddr>) -> String {
    if !bound.is_unspecified() {
        return bound.to_string();
    }
    if let Some(ip) = toward.and_then(route_source) {
        return ip.to_string();
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

/// The data address to advertise for `--advertise a` on a listener bound to `port`: `a` as
/// given when it names a port, else its host with that port. A host alone (`--advertise
/// 10.0.0.5`) was sent as it was, and the leader refused every registration ("data_addr
/// must be HOST:PORT") while the worker retried for ever.
pub fn advertised(a: &str, port: u16) -> String {
    if a.parse::<SocketAddr>().is_ok() {
        return a.to_string();
    }
    if let Ok(ip) = a.parse::<IpAddr>() {
        return SocketAddr::new(ip, port).to_string();
    }
    if a.starts_with('[') && a.ends_with(']') {
        return format!("{a}:{port}");
    }
    match a.rsplit_once(':') {
        Some((host, p))
            if !host.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            a.to_string()
        }
        _ => format!("{a}:{port}"),
    }
}

/// The local address this host would send from to reach `peer`, if it is neither loopback
/// nor unspecified. Connecting a UDP socket only picks a route: nothing is sent.
fn route_source(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(any).ok()?;
    sock.connect(peer).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_host_without_a_port_takes_the_listener_s() {
        for (given, want) in [
            ("10.0.0.5:7100", "10.0.0.5:7100"),
            ("10.0.0.5", "10.0.0.5:7200"),
            ("node-3.example", "node-3.example:7200"),
            ("node-3.example:7100", "node-3.example:7100"),
            ("::1", "[::1]:7200"),
            ("[::1]", "[::1]:7200"),
            ("[::1]:7100", "[::1]:7100"),
        ] {
            assert_eq!(advertised(given, 7200), want, "{given}");
        }
    }

    #[test]
    fn specific_binds_advertise_themselves() {
        assert_eq!(
            advertise_host("10.1.2.3".parse().unwrap(), None),
            "10.1.2.3"
        );
        assert!(!advertise_host("0.0.0.0".parse().unwrap(), None).is_empty());
        // Toward a leader on loopback the route's source is loopback: not what peers elsewhere
        // could use, so the host name (or loopback) it is, as without a leader.
        let leader: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        assert_eq!(route_source(leader), None);
        assert_eq!(
            advertise_host("0.0.0.0".parse().unwrap(), Some(leader)),
            advertise_host("0.0.0.0".parse().unwrap(), None)
        );
    }
}
