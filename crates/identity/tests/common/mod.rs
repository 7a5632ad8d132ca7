//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mizzen_identity::Identity;
use mizzen_identity::ca::CertificateAuthority;
use mizzen_identity::workload::{WorkloadCertificate, generate_csr};

pub fn id(namespace: &str, service_account: &str) -> Identity {
    Identity::in_default_domain(namespace, service_account).unwrap()
}

pub fn new_ca(dir: &Path) -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::load_or_create(dir, "cluster.local").unwrap())
}

/// A certificate for `identity` straight from `ca`, through a real CSR.
pub fn issue(ca: &CertificateAuthority, identity: &Identity, ttl: Duration) -> WorkloadCertificate {
    let (key, csr) = generate_csr(identity).unwrap();
    let chain = ca.sign_csr(&csr, identity, Some(ttl)).unwrap();
    WorkloadCertificate::from_response(identity.clone(), key, &chain.to_response_chain()).unwrap()
}

/// PEM chain and key for a certificate valid only in the past.
pub fn issue_expired(ca: &CertificateAuthority, identity: &Identity) -> (String, String) {
    let (key, csr) = generate_csr(identity).unwrap();
    let now = SystemTime::now();
    let chain = ca
        .sign_csr_for_period(
            &csr,
            identity,
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    (chain.presented_pem(), key.expose().to_string())
}
