//! The mesh certificate authority run by the pilot.
//!
//! Like istiod, the CA either uses a plugged-in signing certificate from
//! files in Istio's `cacerts` layout, or generates a self-signed root on first
//! start and keeps it in the same directory so that restarts do not change the
//! mesh's trust anchor:
//!
//! | file | content |
//! |---|---|
//! | `ca-cert.pem` | the certificate that signs workload certificates |
//! | `ca-key.pem` | its private key (written with mode 0600) |
//! | `root-cert.pem` | the roots workloads trust (optional for a self-signed CA) |
//! | `cert-chain.pem` | `ca-cert.pem` and the intermediates up to the root (optional) |
//!
//! Workload certificates carry exactly one URI SAN, the identity the caller
//! authenticated as: whatever names a CSR asks for are ignored, as Istio does,
//! because a CSR is self-asserted and the token is not.

pub mod service;

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::spiffe::{Identity, IdentityError, validate_trust_domain};
use crate::tls::{TlsError, TrustBundle};
use crate::x509::{self, CertParseError};

pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// Istio's default workload certificate lifetime.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Istio's default upper bound on a requested lifetime (`MAX_WORKLOAD_CERT_TTL`).
pub const DEFAULT_MAX_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a generated self-signed root, as Istio's (10 years).
pub const ROOT_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Lifetime of the pilot's own serving certificate. It is re-issued at every
/// start, so a year is ample and survives long-running pilots.
pub const SERVING_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start a minute in the past so that a peer whose clock is a
/// little behind does not reject a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(60);
/// Larger than any sane CSR (an RSA-4096 CSR is under 2 KiB); bounds the
/// parsing work an unauthenticated caller can cause.
pub const MAX_CSR_BYTES: usize = 64 * 1024;
/// Smallest RSA key accepted in a CSR (Istio's agent uses 2048).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: {present} exists but {missing} does not; supply both (plugged-in CA) or remove both (self-signed CA)",
        dir.display()
    )]
    IncompleteFiles {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: CertParseError,
    },
    #[error("{}: unusable private key: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{}: the private key does not belong to the certificate in {CA_CERT_FILE}", path.display())]
    KeyMismatch { path: PathBuf },
    #[error("{}: the signing certificate is not a CA (basicConstraints CA:TRUE is missing)", path.display())]
    NotCa { path: PathBuf },
    #[error("{}: the signing certificate's subject is not supported: {reason}", path.display())]
    UnsupportedSubject { path: PathBuf, reason: String },
    #[error("certificates issued by the CA in {} do not verify to its roots: {reason}", dir.display())]
    ChainInvalid { dir: PathBuf, reason: String },
    #[error("invalid trust domain: {0}")]
    TrustDomain(#[source] IdentityError),
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    #[error("the CSR is {size} bytes, more than the {max} accepted")]
    CsrTooLarge { size: usize, max: usize },
    #[error("identity {identity} is outside this CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        identity: Identity,
        trust_domain: String,
    },
    #[error("requested TTL {requested:?} is greater than the max allowed TTL {max:?}")]
    TtlTooLong { requested: Duration, max: Duration },
    #[error("the requested validity ends before it starts")]
    EmptyValidity,
    #[error("{0:?} is neither an IP address nor a valid DNS name")]
    InvalidName(String),
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the system random number generator failed")]
    Random,
}

impl CaError {
    /// Whether the caller sent something wrong (as opposed to a CA failure),
    /// which the gRPC service reports as `invalid_argument`.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            CaError::InvalidCsr(_)
                | CaError::CsrTooLarge { .. }
                | CaError::ForeignTrustDomain { .. }
                | CaError::TtlTooLong { .. }
                | CaError::EmptyValidity
        )
    }
}

/// Where the signing certificate came from, for the startup log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaOrigin {
    /// A self-signed root generated by this start and written to the directory.
    Generated,
    /// A self-signed root generated by an earlier start.
    SelfSigned,
    /// An operator-provided signing certificate (usually an intermediate).
    PluggedIn,
}

/// A signed certificate and the chain to its root, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertChain {
    pub leaf_pem: String,
    /// Between the leaf and the root, nearest the leaf first; one certificate
    /// per entry. Empty when the root signs directly.
    pub intermediates_pem: Vec<String>,
    /// The root bundle (possibly several roots while one is being replaced).
    pub root_pem: String,
}

impl CertChain {
    /// The `cert_chain` of Istio's `IstioCertificateResponse`: leaf first,
    /// root last.
    pub fn to_response_chain(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.intermediates_pem.len() + 2);
        out.push(self.leaf_pem.clone());
        out.extend(self.intermediates_pem.iter().cloned());
        out.push(self.root_pem.clone());
        out
    }

    /// What a workload presents in a handshake: the leaf and intermediates,
    /// without the root (the peer has it already).
    pub fn presented_pem(&self) -> String {
        let mut out = self.leaf_pem.clone();
        for pem in &self.intermediates_pem {
            out.push_str(pem);
        }
        out
    }
}

/// The mesh CA. Cheap to share behind an `Arc`; signing takes `&self`.
pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    signer_not_after: SystemTime,
    intermediates: Vec<CertificateDer<'static>>,
    intermediates_pem: Vec<String>,
    roots: TrustBundle,
    default_ttl: Duration,
    max_ttl: Duration,
    origin: CaOrigin,
    dir: PathBuf,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("origin", &self.origin)
            .field("dir", &self.dir)
            .field("intermediates", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `dir`, or creates a self-signed root there if the
    /// directory holds neither `ca-cert.pem` nor `ca-key.pem`.
    ///
    /// Loading checks that the key matches the certificate and then issues
    /// and verifies a throwaway certificate, so a broken `cacerts` directory
    /// fails at startup instead of at the first workload handshake.
    pub fn load_or_create(dir: impl AsRef<Path>, trust_domain: &str) -> Result<Self, CaError> {
        validate_trust_domain(trust_domain).map_err(CaError::TrustDomain)?;
        let dir = dir.as_ref();
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let ca = match (exists(&cert_path)?, exists(&key_path)?) {
            (false, false) => Self::create(dir, trust_domain)?,
            (true, true) => Self::load(dir, trust_domain)?,
            (true, false) => {
                return Err(CaError::IncompleteFiles {
                    dir: dir.to_path_buf(),
                    present: CA_CERT_FILE,
                    missing: CA_KEY_FILE,
                });
            }
            (false, true) => {
                return Err(CaError::IncompleteFiles {
                    dir: dir.to_path_buf(),
                    present: CA_KEY_FILE,
                    missing: CA_CERT_FILE,
                });
            }
        };
        ca.self_test()?;
        tracing::info!(
            dir = %dir.display(),
            trust_domain,
            origin = ?ca.origin,
            intermediates = ca.intermediates.len(),
            "certificate authority ready"
        );
        Ok(ca)
    }

    /// Sets the lifetime given when a request names none, and the longest
    /// lifetime a request may ask for.
    pub fn with_ttls(mut self, default_ttl: Duration, max_ttl: Duration) -> Self {
        self.default_ttl = default_ttl;
        self.max_ttl = max_ttl.max(default_ttl);
        self
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn origin(&self) -> CaOrigin {
        self.origin
    }

    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// The roots workloads must trust, as PEM (`root-cert.pem`).
    pub fn root_bundle(&self) -> &str {
        self.roots.pem()
    }

    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.roots
    }

    /// Signs a CSR for `identity`, the identity the caller authenticated as.
    ///
    /// Only the CSR's public key is used (after checking its signature, which
    /// proves the caller holds the private key). `ttl` of `None` means the
    /// default lifetime; longer than the maximum is refused, as Istio does.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Option<Duration>,
    ) -> Result<CertChain, CaError> {
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl > self.max_ttl {
            return Err(CaError::TtlTooLong {
                requested: ttl,
                max: self.max_ttl,
            });
        }
        let now = SystemTime::now();
        let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        let not_after = now.checked_add(ttl).unwrap_or(self.signer_not_after);
        self.sign_csr_for_period(csr_pem, identity, not_before, not_after)
    }

    /// Like [`sign_csr`](Self::sign_csr) with an explicit validity period and
    /// no TTL limit, for tooling and tests (e.g. an already expired
    /// certificate). The end is still capped at the signing certificate's
    /// expiry: a leaf that outlives its issuer would not verify anyway.
    pub fn sign_csr_for_period(
        &self,
        csr_pem: &str,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<CertChain, CaError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: identity.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let public_key = verified_csr_public_key(csr_pem)?;
        let not_after = not_after.min(self.signer_not_after);
        if not_after <= not_before {
            return Err(CaError::EmptyValidity);
        }
        let mut params = CertificateParams::default();
        // Istio's workload certificates have an empty subject; the identity
        // lives in the SAN, which rcgen then marks critical (RFC 5280 4.2.1.6).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(identity.to_uri().try_into().map_err(
                |e: rcgen::Error| CaError::InvalidCsr(e.to_string()),
            )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&public_key, &self.issuer)?;
        Ok(CertChain {
            leaf_pem: leaf.pem(),
            intermediates_pem: self.intermediates_pem.clone(),
            root_pem: self.roots.pem().to_string(),
        })
    }

    /// A TLS server configuration for the pilot's own endpoint (15012):
    /// a fresh key and a certificate signed by this CA for `names`, each an
    /// IP address or a DNS name (e.g. `istiod.istio-system.svc`,
    /// `mizzen-pilot`, `127.0.0.1`). ALPN is `h2`, which gRPC clients such as
    /// grpc-go insist on. Client certificates are not requested: callers
    /// authenticate with a bearer token, as with istiod.
    pub fn serving_config<I, S>(&self, names: I) -> Result<rustls::ServerConfig, CaError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (chain, key) = self.serving_certificate(names)?;
        let mut config = rustls::ServerConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::from)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The certificate chain (leaf first, no root) and key behind
    /// [`serving_config`](Self::serving_config).
    pub fn serving_certificate<I, S>(
        &self,
        names: I,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut sans = Vec::new();
        for name in names {
            let name = name.as_ref();
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.try_into()
                        .map_err(|_| CaError::InvalidName(name.to_string()))?,
                ),
            };
            sans.push(san);
        }
        if sans.is_empty() {
            return Err(CaError::InvalidName(String::new()));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
        params.not_after = now
            .checked_add(SERVING_CERT_VALIDITY)
            .unwrap_or(self.signer_not_after)
            .min(self.signer_not_after)
            .into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.intermediates.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }

    fn create(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        // Istio's self-signed root: O=<trust domain>, no CN.
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
        params.not_after = now.checked_add(ROOT_VALIDITY).unwrap_or(now).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();

        // The key goes first: a crash between the two writes leaves a key
        // without a certificate, which the next start reports instead of
        // silently generating a second root.
        write_atomically(
            &dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_atomically(&dir.join(CA_CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        write_atomically(&dir.join(ROOT_CERT_FILE), cert_pem.as_bytes(), 0o644)?;

        let roots = TrustBundle::from_pem(&cert_pem)?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            issuer: Issuer::new(params, key),
            signer_not_after: now.checked_add(ROOT_VALIDITY).unwrap_or(now),
            intermediates: Vec::new(),
            intermediates_pem: Vec::new(),
            roots,
            default_ttl: DEFAULT_CERT_TTL,
            max_ttl: DEFAULT_MAX_CERT_TTL,
            origin: CaOrigin::Generated,
            dir: dir.to_path_buf(),
        })
    }

    fn load(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let root_path = dir.join(ROOT_CERT_FILE);
        let chain_path = dir.join(CERT_CHAIN_FILE);

        warn_if_key_readable_by_others(&key_path);
        let signer = read_certs(&cert_path)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Parse {
                path: cert_path.clone(),
                source: CertParseError::Missing("CERTIFICATE"),
            })?;
        let signer_info = x509::inspect(&signer).map_err(|source| CaError::Parse {
            path: cert_path.clone(),
            source,
        })?;
        if !signer_info.is_ca {
            return Err(CaError::NotCa { path: cert_path });
        }
        check_subject_supported(&signer).map_err(|reason| CaError::UnsupportedSubject {
            path: cert_path.clone(),
            reason,
        })?;

        let key_pem = read_to_string(&key_path)?;
        let key_der = x509::parse_key_pem(&key_pem).map_err(|source| CaError::Parse {
            path: key_path.clone(),
            source,
        })?;
        let key = KeyPair::try_from(&key_der).map_err(|e| CaError::Key {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let cert_key_bits = x509::public_key_bits(&signer).map_err(|source| CaError::Parse {
            path: cert_path.clone(),
            source,
        })?;
        if rcgen::PublicKeyData::der_bytes(&key) != cert_key_bits.as_slice() {
            return Err(CaError::KeyMismatch { path: key_path });
        }

        let roots_der = if exists(&root_path)? {
            read_certs(&root_path)?
        } else {
            vec![signer.clone()]
        };
        let roots = TrustBundle::from_der(roots_der)?;
        let signer_is_root = roots.contains(&signer);
        let origin = if signer_is_root {
            CaOrigin::SelfSigned
        } else {
            CaOrigin::PluggedIn
        };

        // cert-chain.pem conventionally starts with ca-cert.pem and may end
        // with the root; the chain handed out is everything strictly between
        // the leaf and the roots.
        let mut intermediates: Vec<CertificateDer<'static>> = if exists(&chain_path)? {
            read_certs(&chain_path)?
                .into_iter()
                .filter(|c| !roots.contains(c))
                .collect()
        } else {
            Vec::new()
        };
        if !signer_is_root && intermediates.first() != Some(&signer) {
            intermediates.retain(|c| c != &signer);
            intermediates.insert(0, signer.clone());
        }
        let intermediates_pem = intermediates.iter().map(|c| x509::cert_to_pem(c)).collect();

        let issuer = Issuer::from_ca_cert_der(&signer, key).map_err(|e| CaError::Parse {
            path: cert_path.clone(),
            source: CertParseError::X509(e.to_string()),
        })?;

        Ok(Self {
            trust_domain: trust_domain.to_string(),
            issuer,
            signer_not_after: signer_info.not_after,
            intermediates,
            intermediates_pem,
            roots,
            default_ttl: DEFAULT_CERT_TTL,
            max_ttl: DEFAULT_MAX_CERT_TTL,
            origin,
            dir: dir.to_path_buf(),
        })
    }

    /// Issues a short certificate for a fixed identity and checks it against
    /// the roots exactly as a peer would.
    fn self_test(&self) -> Result<(), CaError> {
        let chain_invalid = |reason: String| CaError::ChainInvalid {
            dir: self.dir.clone(),
            reason,
        };
        let identity = Identity::new(&self.trust_domain, "istio-system", "mizzen-ca-selftest")
            .map_err(CaError::TrustDomain)?;
        let (_, csr) =
            crate::workload::generate_csr(&identity).map_err(|e| chain_invalid(e.to_string()))?;
        let now = SystemTime::now();
        let chain = self.sign_csr_for_period(
            &csr,
            &identity,
            now.checked_sub(BACKDATE).unwrap_or(now),
            now + Duration::from_secs(300),
        )?;
        let ders = x509::parse_certs_pem(&chain.presented_pem())
            .map_err(|e| chain_invalid(e.to_string()))?;
        self.roots
            .verify_chain(&ders, now)
            .map_err(|e| chain_invalid(e.to_string()))
    }
}

/// Checks the CSR's self-signature and returns its public key. All other
/// fields of the request are deliberately ignored.
fn verified_csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CaError> {
    if csr_pem.len() > MAX_CSR_BYTES {
        return Err(CaError::CsrTooLarge {
            size: csr_pem.len(),
            max: MAX_CSR_BYTES,
        });
    }
    let block = pem::parse(csr_pem).map_err(|e| CaError::InvalidCsr(e.to_string()))?;
    if !matches!(
        block.tag(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(CaError::InvalidCsr(format!(
            "expected a CERTIFICATE REQUEST PEM block, got {:?}",
            block.tag()
        )));
    }
    let (_, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| CaError::InvalidCsr(e.to_string()))?;
    csr.verify_signature()
        .map_err(|e| CaError::InvalidCsr(format!("bad signature: {e}")))?;
    let subject_pki = &csr.certification_request_info.subject_pki;
    if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = subject_pki.parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(CaError::InvalidCsr(format!(
            "RSA key of {} bits; at least {MIN_RSA_BITS} required",
            rsa.key_size()
        )));
    }
    let spki = subject_pki.raw;
    SubjectPublicKeyInfo::from_der(spki)
        .map_err(|e| CaError::InvalidCsr(format!("unsupported public key: {e}")))
}

/// 128 random bits, positive, never starting with a zero byte (which DER
/// would have to strip, shortening the serial).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = crate::random_bytes::<16>().ok_or(CaError::Random)?;
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 0x01;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

/// rcgen re-encodes the issuer name from the parsed CA certificate and only
/// supports one attribute per RDN; refuse anything else up front instead of
/// issuing certificates whose issuer does not match.
fn check_subject_supported(der: &[u8]) -> Result<(), String> {
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    for rdn in cert.subject().iter() {
        if rdn.iter().count() != 1 {
            return Err("multi-valued or empty RDNs are not supported".to_string());
        }
    }
    Ok(())
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let pem = read_to_string(path)?;
    x509::parse_certs_pem(&pem).map_err(|source| CaError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn warn_if_key_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "CA private key is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_key_readable_by_others(_path: &Path) {}

/// Writes through a temporary file and a rename, so a crash never leaves a
/// truncated key or certificate behind.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let io_err = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&tmp).map_err(io_err)?;
    // The mode above only applies when the file is created; a leftover
    // temporary file keeps its old mode, so set it again.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)
}
