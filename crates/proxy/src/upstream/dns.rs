//! Background resolution of DNS clusters.
//!
//! One task per STRICT_DNS or LOGICAL_DNS cluster looks its names up with
//! the system resolver (`getaddrinfo` on tokio's blocking pool, so the data
//! path never waits on DNS), hands every round's result to a callback (the
//! config state, which republishes the snapshot when the addresses
//! changed), then sleeps for the cluster's refresh rate. A name that fails
//! to resolve keeps its last addresses, as in Envoy; one that never
//! resolved contributes no host, so requests get 503 UH.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::dns::{DnsConfig, DnsFamily};

/// Looks names up: the system resolver in production, a fixed table in tests
/// (which must never reach the network).
pub trait Resolver: Send + Sync + 'static {
    /// Every address of `name`, in the resolver's order.
    fn lookup(&self, name: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// `getaddrinfo` (`/etc/hosts`, then DNS, as the host is configured).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, name: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let name = name.to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), port)).await?;
            Ok(found.map(|a| a.ip()).collect())
        })
    }
}

/// The addresses of `name` for `family`.
pub async fn resolve(
    resolver: &dyn Resolver,
    name: &str,
    port: u16,
    family: DnsFamily,
) -> io::Result<Vec<IpAddr>> {
    Ok(family.select(resolver.lookup(name, port).await?))
}

/// What each target of a cluster resolved to, round after round.
#[derive(Debug)]
pub struct Resolutions {
    /// `Some` once the name resolved at least once.
    pub addresses: Vec<Option<Vec<IpAddr>>>,
    /// Whether the last attempt failed, so that failures are logged once.
    failing: Vec<bool>,
}

impl Resolutions {
    pub fn new(targets: usize) -> Resolutions {
        Resolutions {
            addresses: vec![None; targets],
            failing: vec![false; targets],
        }
    }

    /// Records one lookup of target `i`.
    pub fn record(
        &mut self,
        cluster: &str,
        config: &DnsConfig,
        i: usize,
        r: io::Result<Vec<IpAddr>>,
    ) {
        let (name, _) = &config.targets[i];
        match r {
            Ok(ips) => {
                if ips.is_empty() && !self.failing[i] {
                    tracing::warn!(cluster, host = %name, family = ?config.family, "DNS resolution found no address of the cluster's family");
                } else if !ips.is_empty() && self.failing[i] {
                    tracing::info!(cluster, host = %name, "DNS resolution succeeds again");
                }
                self.failing[i] = ips.is_empty();
                self.addresses[i] = Some(ips);
            }
            Err(e) => {
                if !self.failing[i] {
                    tracing::warn!(cluster, host = %name, error = %e, "DNS resolution failed; the host keeps its last addresses, if any");
                }
                self.failing[i] = true;
            }
        }
    }
}

/// Resolves `config`'s names every refresh period and calls `update` with
/// the results, until `update` returns false (the cluster went away).
pub async fn run(
    resolver: Arc<dyn Resolver>,
    cluster: Arc<str>,
    config: Arc<DnsConfig>,
    mut update: impl FnMut(&Resolutions) -> bool,
) {
    let mut state = Resolutions::new(config.targets.len());
    loop {
        for (i, (name, port)) in config.targets.iter().enumerate() {
            let r = resolve(&*resolver, name, *port, config.family).await;
            state.record(&cluster, &config, i, r);
        }
        if !update(&state) {
            return;
        }
        tokio::time::sleep(config.refresh).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let v4 = resolve(&SystemResolver, "localhost", 80, DnsFamily::V4Only)
            .await
            .unwrap();
        assert!(!v4.is_empty());
        assert!(
            v4.iter().all(|ip| ip.is_loopback() && ip.is_ipv4()),
            "{v4:?}"
        );
    }

    #[test]
    fn failures_keep_the_last_addresses() {
        let c = crate::config::dns::tests::dns_cluster(
            "c",
            mizzen_xds::pb::envoy::config::cluster::v3::cluster::DiscoveryType::StrictDns,
            &[("a.example", 80)],
        );
        let scope = crate::config::Scope::new("cluster", "c");
        let config =
            crate::config::dns::compile(&scope, &c, crate::config::dns::DnsMode::Strict).unwrap();
        let mut r = Resolutions::new(1);
        r.record("c", &config, 0, Err(io::Error::other("timeout")));
        assert_eq!(r.addresses[0], None);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        r.record("c", &config, 0, Ok(vec![ip]));
        r.record("c", &config, 0, Err(io::Error::other("timeout")));
        assert_eq!(r.addresses[0], Some(vec![ip]));
        // An answer without addresses is an answer: the host goes away.
        r.record("c", &config, 0, Ok(Vec::new()));
        assert_eq!(r.addresses[0], Some(Vec::new()));
    }
}
