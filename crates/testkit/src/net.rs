//! Addresses for tests to bind.
//!
//! Istio's ports are fixed (15001 outbound capture, 15006 inbound, 8080 for
//! many samples), and tests want to use the real numbers so that generated
//! config matches what Istio produces. Two tests binding 127.0.0.1:15001 at
//! once would collide, so each test takes its own loopback address instead:
//! Linux routes all of 127.0.0.0/8 to `lo`, and no setup is needed.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};

use rand::Rng;

/// Addresses already handed out by this process, so two tests in one test
/// binary never get the same one. Across processes the range is large enough
/// (about a million addresses) that a clash is unlikely.
static HANDED_OUT: Mutex<Option<HashSet<Ipv4Addr>>> = Mutex::new(None);

/// Returns a random address in 127.16.0.0/12 (127.16.0.1 – 127.31.255.254)
/// that this process has not returned before and that can be bound.
///
/// The range keeps clear of 127.0.0.0/16, where 127.0.0.1 and the
/// addresses other tools like to use (127.0.0.53 for systemd-resolved) live.
pub fn free_loopback_ip() -> Ipv4Addr {
    let mut rng = rand::rng();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let mut ip = Ipv4Addr::LOCALHOST;
    for _ in 0..100 {
        ip = Ipv4Addr::new(
            127,
            rng.random_range(16..=31),
            rng.random(),
            rng.random_range(1..=254),
        );
        if handed_out.contains(&ip) {
            continue;
        }
        // Binding proves the address is usable here (a network namespace
        // whose `lo` is down, or a host whose `lo` holds only 127.0.0.1/32,
        // would refuse it).
        if TcpListener::bind((ip, 0)).is_ok() {
            break;
        }
    }
    // After many refusals, hand the last address out anyway and let the
    // caller's own bind report the real error.
    handed_out.insert(ip);
    ip
}

/// Returns a TCP port that was free on 127.0.0.1 a moment ago.
///
/// Prefer binding port 0 and asking the listener for its port; this is for
/// the cases where a port must be named before anything can bind it (for
/// example in a config file given to another process). Another process can
/// take the port between this call and its use.
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// Like [`free_port`], on a given address.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    TcpListener::bind(SocketAddr::from((ip, 0)))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|err| panic!("cannot bind a TCP port on {ip}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ips_are_distinct_and_in_range() {
        let ips: Vec<Ipv4Addr> = (0..200).map(|_| free_loopback_ip()).collect();
        let unique: HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len());
        for ip in ips {
            let [a, b, _, d] = ip.octets();
            assert_eq!(a, 127);
            assert!((16..=31).contains(&b), "{ip}");
            assert!((1..=254).contains(&d), "{ip}");
        }
    }

    #[test]
    fn fixed_port_on_two_loopback_ips() {
        // The reason the helper exists: the same port on two addresses.
        let port = free_port();
        let a = TcpListener::bind((free_loopback_ip(), port)).unwrap();
        let b = TcpListener::bind((free_loopback_ip(), port)).unwrap();
        assert_eq!(
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port()
        );
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
