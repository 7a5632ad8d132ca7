//! Workload identity for Mizzen, compatible with Istio's.
//!
//! * [`spiffe`]: identities `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//! * [`ca`]: the mesh CA run by the pilot (self-signed root or Istio's
//!   plugged-in `cacerts` layout) and [`ca::service`], Istio's
//!   `IstioCertificateService` gRPC API in front of it.
//! * [`auth`]: how the CA authenticates callers (bearer tokens).
//! * [`workload`]: what a proxy does: key and CSR generation, the CA client,
//!   and the [`workload::CertificateManager`] that renews the certificate at
//!   half-life.
//! * [`sds`]: Envoy's Secret Discovery Service for the workload
//!   certificate over a Unix socket (Istio's pilot-agent role).
//! * [`tls`]: rustls configurations for mesh mTLS with secure naming (the
//!   client checks the server's SPIFFE ID) and Istio's ALPN values.
//!
//! One TLS stack throughout: rustls with the aws-lc-rs provider, passed
//! explicitly to every configuration (no process-wide default is needed,
//! and ring is never compiled in).

pub mod auth;
pub mod ca;
pub mod sds;
pub mod spiffe;
pub mod tls;
pub mod workload;
pub mod x509;

/// Code generated from `proto/istio/v1/auth/ca.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("istio.v1.auth");
}

use std::sync::{Arc, OnceLock};

pub use ca::{CaError, CertChain, CertificateAuthority};
pub use spiffe::{DEFAULT_TRUST_DOMAIN, Identity, IdentityError};
pub use workload::{CertificateManager, WorkloadCertificate, WorkloadError};

/// The rustls crypto provider used by every configuration in this crate
/// (aws-lc-rs), built once.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// `N` bytes from the operating system's CSPRNG, or `None` if it failed.
pub(crate) fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(bytes)
}
