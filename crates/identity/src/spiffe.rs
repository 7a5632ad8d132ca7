//! SPIFFE identities in Istio's shape:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Istio only ever issues and checks this one path layout, so the type keeps
//! the three parts instead of an arbitrary path: authorization policies match
//! on namespace and service account, and keeping them apart avoids re-parsing
//! on every request.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The trust domain Istio uses unless the mesh config says otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// Why a string is not an Istio SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with spiffe://")]
    NotSpiffe(String),
    #[error("identity {0:?} has an empty trust domain")]
    EmptyTrustDomain(String),
    #[error("trust domain {0:?} may only hold lowercase letters, digits, '.', '-' and '_'")]
    InvalidTrustDomain(String),
    #[error("identity {0:?} must have the path /ns/<namespace>/sa/<service-account>")]
    InvalidPath(String),
    #[error("{field} {value:?} may only hold letters, digits, '.', '-' and '_'")]
    InvalidSegment { field: &'static str, value: String },
}

/// A workload identity: trust domain, namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl Identity {
    /// Builds an identity, checking each part so that formatting it always
    /// yields a string that parses back to the same identity.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let trust_domain = trust_domain.into();
        let namespace = namespace.into();
        let service_account = service_account.into();
        if trust_domain.is_empty() {
            return Err(IdentityError::EmptyTrustDomain(trust_domain));
        }
        check_trust_domain(&trust_domain)?;
        check_segment("namespace", &namespace)?;
        check_segment("service account", &service_account)?;
        Ok(Self {
            trust_domain,
            namespace,
            service_account,
        })
    }

    /// An identity in the default trust domain, `cluster.local`.
    pub fn in_default_domain(
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        Self::new(DEFAULT_TRUST_DOMAIN, namespace, service_account)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form, as it appears in a certificate's URI SAN.
    pub fn to_uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffe(s.to_string()))?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if trust_domain.is_empty() {
            return Err(IdentityError::EmptyTrustDomain(s.to_string()));
        }
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
                Identity::new(trust_domain, ns, sa)
            }
            _ => Err(IdentityError::InvalidPath(s.to_string())),
        }
    }
}

impl TryFrom<&str> for Identity {
    type Error = IdentityError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl Serialize for Identity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Checks a trust domain on its own, e.g. one read from the mesh config.
pub fn validate_trust_domain(td: &str) -> Result<(), IdentityError> {
    if td.is_empty() {
        return Err(IdentityError::EmptyTrustDomain(td.to_string()));
    }
    check_trust_domain(td)
}

/// SPIFFE restricts trust domains to lowercase letters, digits, dots, dashes
/// and underscores (no port, no userinfo), which also keeps them out of the
/// way of URI parsing.
fn check_trust_domain(td: &str) -> Result<(), IdentityError> {
    let ok = td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidTrustDomain(td.to_string()))
    }
}

/// Kubernetes names are stricter than this (DNS labels); Istio itself does not
/// re-validate them, so accept what SPIFFE allows in a path segment without
/// percent-encoding, and refuse anything that could change the path layout.
fn check_segment(field: &'static str, value: &str) -> Result<(), IdentityError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidSegment {
            field,
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id: Identity = "spiffe://cluster.local/ns/istioinaction/sa/webapp"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "istioinaction");
        assert_eq!(id.service_account(), "webapp");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/istioinaction/sa/webapp"
        );
        assert_eq!(
            Identity::in_default_domain("istioinaction", "webapp").unwrap(),
            id
        );
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            ("http://cluster.local/ns/a/sa/b", "NotSpiffe"),
            ("spiffe:///ns/a/sa/b", "EmptyTrustDomain"),
            ("spiffe://cluster.local", "InvalidPath"),
            ("spiffe://cluster.local/ns/a", "InvalidPath"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "InvalidPath"),
            ("spiffe://cluster.local/sa/b/ns/a", "InvalidPath"),
            ("spiffe://cluster.local/ns//sa/b", "InvalidSegment"),
            ("spiffe://cluster.local/ns/a/sa/", "InvalidSegment"),
            ("spiffe://cluster.local/ns/../sa/b", "InvalidSegment"),
            ("spiffe://cluster.local/ns/a b/sa/b", "InvalidSegment"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "InvalidTrustDomain"),
            ("spiffe://cluster.local:80/ns/a/sa/b", "InvalidTrustDomain"),
            (
                "spiffe://user@cluster.local/ns/a/sa/b",
                "InvalidTrustDomain",
            ),
            ("", "NotSpiffe"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Identity>().unwrap_err();
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{input:?}: got {got}, want {want}");
        }
    }

    #[test]
    fn serializes_as_uri() {
        let id = Identity::in_default_domain("default", "sleep").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"spiffe://cluster.local/ns/default/sa/sleep\""
        );
    }
}
