//! Which listener takes a connection handed off by a `use_original_dst`
//! listener: the one whose address is exactly the original destination, else
//! the one on `0.0.0.0` (`[::]` for IPv6) with the same port. Only listeners
//! with `bind_to_port: false` take part, as in Envoy's sidecars: they exist
//! to receive such connections.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Listeners that accept handed-off connections, by address.
#[derive(Debug)]
pub struct HandoffTable<T> {
    exact: HashMap<SocketAddr, T>,
    /// (is IPv6, port) → listener on the unspecified address.
    wildcard: HashMap<(bool, u16), T>,
}

impl<T> Default for HandoffTable<T> {
    fn default() -> Self {
        HandoffTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> HandoffTable<T> {
    /// Adds a listener; gives it back when another one has the same address.
    pub fn insert(&mut self, addr: SocketAddr, listener: T) -> Result<(), T> {
        if addr.ip().is_unspecified() {
            let key = (addr.is_ipv6(), addr.port());
            if self.wildcard.contains_key(&key) {
                return Err(listener);
            }
            self.wildcard.insert(key, listener);
        } else {
            if self.exact.contains_key(&addr) {
                return Err(listener);
            }
            self.exact.insert(addr, listener);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// The listener for a connection originally headed to `dst`.
    pub fn find(&self, dst: SocketAddr) -> Option<&T> {
        if self.is_empty() {
            return None;
        }
        self.exact
            .get(&dst)
            .or_else(|| self.wildcard.get(&(dst.is_ipv6(), dst.port())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HandoffTable<&'static str> {
        let mut t = HandoffTable::default();
        for (addr, name) in [
            ("0.0.0.0:80", "0.0.0.0_80"),
            ("10.96.0.10:80", "10.96.0.10_80"),
            ("10.96.0.11:3306", "10.96.0.11_3306"),
            ("[::]:80", "[::]_80"),
            ("[fd00::10]:8080", "fd00::10_8080"),
        ] {
            t.insert(addr.parse().unwrap(), name).unwrap();
        }
        t
    }

    #[test]
    fn exact_address_first_then_wildcard_port() {
        let t = table();
        let cases = [
            ("10.96.0.10:80", Some("10.96.0.10_80")),
            ("10.96.0.99:80", Some("0.0.0.0_80")),
            ("10.96.0.11:3306", Some("10.96.0.11_3306")),
            ("10.96.0.12:3306", None),
            ("127.18.0.1:80", Some("0.0.0.0_80")),
            ("[fd00::10]:8080", Some("fd00::10_8080")),
            ("[fd00::11]:80", Some("[::]_80")),
            ("[fd00::11]:8080", None),
        ];
        for (dst, want) in cases {
            assert_eq!(t.find(dst.parse().unwrap()).copied(), want, "{dst}");
        }
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let mut t = table();
        assert_eq!(
            t.insert("0.0.0.0:80".parse().unwrap(), "again"),
            Err("again")
        );
        assert_eq!(
            t.insert("10.96.0.10:80".parse().unwrap(), "again"),
            Err("again")
        );
        assert!(
            HandoffTable::<()>::default()
                .find("1.2.3.4:5".parse().unwrap())
                .is_none()
        );
    }
}
