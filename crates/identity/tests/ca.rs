//! The certificate authority: issuing, persistence, plugged-in intermediates.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::{id, new_ca};
use mizzen_identity::ca::{
    CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, CaError, CaOrigin, CertificateAuthority,
    ROOT_CERT_FILE,
};
use mizzen_identity::tls::TrustBundle;
use mizzen_identity::workload::generate_csr;
use mizzen_identity::x509;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use x509_parser::prelude::{FromDer, X509Certificate};

fn verify(chain_pem: &str, roots_pem: &str) {
    let chain = x509::parse_certs_pem(chain_pem).unwrap();
    TrustBundle::from_pem(roots_pem)
        .unwrap()
        .verify_chain(&chain, SystemTime::now())
        .unwrap();
}

#[test]
fn signs_a_leaf_like_istio() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    assert_eq!(ca.origin(), CaOrigin::Generated);
    let sleep = id("default", "sleep");
    let (_key, csr) = generate_csr(&sleep).unwrap();
    let before = SystemTime::now();
    let chain = ca.sign_csr(&csr, &sleep, None).unwrap();
    assert!(chain.intermediates_pem.is_empty());
    assert_eq!(chain.root_pem, ca.root_bundle());
    assert_eq!(chain.to_response_chain().len(), 2);
    verify(&chain.presented_pem(), ca.root_bundle());

    let der = x509::parse_certs_pem(&chain.leaf_pem).unwrap().remove(0);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(
        cert.subject().iter().next().is_none(),
        "subject must be empty"
    );
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN must be critical with an empty subject");
    let uris: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(uris, ["URI(spiffe://cluster.local/ns/default/sa/sleep)"]);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(cert.issuer().to_string(), "O=cluster.local");

    let info = x509::inspect(&der).unwrap();
    let backdate = before.duration_since(info.not_before).unwrap();
    assert!(backdate >= Duration::from_secs(59) && backdate <= Duration::from_secs(62));
    let ttl = info.not_after.duration_since(before).unwrap();
    assert!(ttl >= Duration::from_secs(24 * 3600 - 2) && ttl <= Duration::from_secs(24 * 3600 + 2));
    assert!(
        info.serial.len() >= 30,
        "serial {} is too short",
        info.serial
    );

    // Serials are random, not derived from the key or the identity.
    let again = ca.sign_csr(&csr, &sleep, None).unwrap();
    let der2 = x509::parse_certs_pem(&again.leaf_pem).unwrap().remove(0);
    assert_ne!(x509::inspect(&der2).unwrap().serial, info.serial);
}

#[test]
fn root_is_persisted_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let first = new_ca(dir.path());
    let root = first.root_bundle().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let root_der = x509::parse_certs_pem(&root).unwrap().remove(0);
    let info = x509::inspect(&root_der).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.subject, "O=cluster.local");
    let years = info
        .not_after
        .duration_since(info.not_before)
        .unwrap()
        .as_secs()
        / (365 * 24 * 3600);
    assert_eq!(years, 10);

    let second = new_ca(dir.path());
    assert_eq!(second.origin(), CaOrigin::SelfSigned);
    assert_eq!(second.root_bundle(), root);
    // A certificate from the reloaded CA verifies against the original root.
    let sleep = id("default", "sleep");
    let (_, csr) = generate_csr(&sleep).unwrap();
    let chain = second.sign_csr(&csr, &sleep, None).unwrap();
    verify(&chain.presented_pem(), &root);
}

#[test]
fn only_the_authenticated_identity_is_issued() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    // A CSR asking for other names than the caller's identity.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "admin");
    params.subject_alt_names = vec![
        SanType::URI(
            "spiffe://cluster.local/ns/istio-system/sa/istiod"
                .try_into()
                .unwrap(),
        ),
        SanType::DnsName("istiod.istio-system.svc".try_into().unwrap()),
    ];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let sleep = id("default", "sleep");
    let chain = ca.sign_csr(&csr, &sleep, None).unwrap();
    let der = x509::parse_certs_pem(&chain.leaf_pem).unwrap().remove(0);
    let info = x509::inspect(&der).unwrap();
    assert_eq!(
        info.uri_sans,
        ["spiffe://cluster.local/ns/default/sa/sleep"]
    );
    assert!(info.dns_sans.is_empty());
    assert_eq!(info.subject, "");
    assert!(!info.is_ca);
    assert_eq!(info.spiffe_identity(), Some(sleep));
}

/// Istio's agent sends RSA-2048 CSRs unless told to use ECDSA.
#[test]
fn rsa_csrs_are_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let sleep = id("default", "sleep");
    let chain = ca.sign_csr(&csr, &sleep, None).unwrap();
    verify(&chain.presented_pem(), ca.root_bundle());
    let leaf = x509::parse_certs_pem(&chain.leaf_pem).unwrap().remove(0);
    assert_eq!(
        x509::public_key_bits(&leaf).unwrap(),
        rcgen::PublicKeyData::der_bytes(&key)
    );
}

#[test]
fn bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let sleep = id("default", "sleep");
    let (_, csr) = generate_csr(&sleep).unwrap();

    let garbage = ca.sign_csr("not a csr", &sleep, None).unwrap_err();
    assert!(matches!(garbage, CaError::InvalidCsr(_)), "{garbage}");
    assert!(garbage.is_bad_request());

    let cert_not_csr = ca.sign_csr(ca.root_bundle(), &sleep, None).unwrap_err();
    assert!(
        matches!(cert_not_csr, CaError::InvalidCsr(_)),
        "{cert_not_csr}"
    );

    // Flip a byte of the signature: the self-signature no longer verifies.
    let block = pem::parse(&csr).unwrap();
    let mut der = block.contents().to_vec();
    let last = der.len() - 3;
    der[last] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = ca.sign_csr(&tampered, &sleep, None).unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");

    let huge = "A".repeat(100_000);
    assert!(matches!(
        ca.sign_csr(&huge, &sleep, None),
        Err(CaError::CsrTooLarge { .. })
    ));

    let too_long = ca
        .sign_csr(&csr, &sleep, Some(Duration::from_secs(91 * 24 * 3600)))
        .unwrap_err();
    assert!(matches!(too_long, CaError::TtlTooLong { .. }), "{too_long}");

    let foreign = mizzen_identity::Identity::new("example.org", "default", "sleep").unwrap();
    assert!(matches!(
        ca.sign_csr(&csr, &foreign, None),
        Err(CaError::ForeignTrustDomain { .. })
    ));
}

#[test]
fn incomplete_or_mismatched_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    new_ca(dir.path());
    fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap_err();
    assert!(matches!(err, CaError::IncompleteFiles { .. }), "{err}");

    // A key from another CA next to the certificate.
    let other = tempfile::tempdir().unwrap();
    new_ca(other.path());
    fs::copy(other.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");

    let bad = tempfile::tempdir().unwrap();
    fs::write(bad.path().join(CA_CERT_FILE), "junk").unwrap();
    fs::write(bad.path().join(CA_KEY_FILE), "junk").unwrap();
    let err = CertificateAuthority::load_or_create(bad.path(), "cluster.local").unwrap_err();
    assert!(matches!(err, CaError::Parse { .. }), "{err}");

    let err = CertificateAuthority::load_or_create(bad.path(), "Not A Domain").unwrap_err();
    assert!(matches!(err, CaError::TrustDomain(_)), "{err}");
}

/// A root and an intermediate made outside Mizzen, as an operator would
/// with openssl or Istio's Makefile, in Istio's cacerts layout.
fn write_cacerts(
    dir: &std::path::Path,
    intermediate_alg: &'static rcgen::SignatureAlgorithm,
) -> String {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut root_params = CertificateParams::default();
    root_params.distinguished_name = rcgen::DistinguishedName::new();
    root_params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Example Root CA");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let int_key = if intermediate_alg == &rcgen::PKCS_RSA_SHA256 {
        KeyPair::generate_rsa_for(intermediate_alg, rcgen::RsaKeySize::_2048).unwrap()
    } else {
        KeyPair::generate_for(intermediate_alg).unwrap()
    };
    let mut int_params = CertificateParams::default();
    int_params.distinguished_name = rcgen::DistinguishedName::new();
    int_params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    int_params
        .distinguished_name
        .push(DnType::CommonName, "Intermediate CA cluster1");
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    int_params.use_authority_key_identifier_extension = true;
    let int_cert = int_params.signed_by(&int_key, &root_issuer).unwrap();

    fs::write(dir.join(CA_CERT_FILE), int_cert.pem()).unwrap();
    fs::write(dir.join(CA_KEY_FILE), int_key.serialize_pem()).unwrap();
    fs::write(dir.join(ROOT_CERT_FILE), root.pem()).unwrap();
    fs::write(
        dir.join(CERT_CHAIN_FILE),
        format!("{}{}", int_cert.pem(), root.pem()),
    )
    .unwrap();
    root.pem()
}

#[test]
fn plugged_in_intermediate_signs() {
    for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_RSA_SHA256] {
        let dir = tempfile::tempdir().unwrap();
        let root_pem = write_cacerts(dir.path(), alg);
        let ca = new_ca(dir.path());
        assert_eq!(ca.origin(), CaOrigin::PluggedIn);
        assert_eq!(
            x509::parse_certs_pem(ca.root_bundle()).unwrap(),
            x509::parse_certs_pem(&root_pem).unwrap()
        );

        let sleep = id("default", "sleep");
        let (_, csr) = generate_csr(&sleep).unwrap();
        let chain = ca.sign_csr(&csr, &sleep, None).unwrap();
        // leaf, intermediate, root: the root from cert-chain.pem is not repeated.
        assert_eq!(chain.intermediates_pem.len(), 1);
        let response = chain.to_response_chain();
        assert_eq!(response.len(), 3);
        assert_eq!(
            x509::parse_certs_pem(&response[2]).unwrap(),
            x509::parse_certs_pem(&root_pem).unwrap()
        );
        let leaf = x509::parse_certs_pem(&chain.leaf_pem).unwrap().remove(0);
        assert_eq!(
            x509::inspect(&leaf).unwrap().issuer,
            "O=Example Corp, CN=Intermediate CA cluster1"
        );
        // Leaf + intermediate verify to the external root, and not without
        // the intermediate.
        verify(&chain.presented_pem(), &root_pem);
        let roots = TrustBundle::from_pem(&root_pem).unwrap();
        assert!(roots.verify_chain(&[leaf], SystemTime::now()).is_err());
    }
}
