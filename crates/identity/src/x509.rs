//! PEM and X.509 helpers shared by the CA, the workload client and the TLS
//! code. Everything here takes untrusted bytes and returns errors, never
//! panics.

use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::spiffe::Identity;

/// A certificate or key in PEM or DER form that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertParseError {
    #[error("no {0} found in PEM input")]
    Missing(&'static str),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("invalid X.509 certificate: {0}")]
    X509(String),
    #[error("invalid private key: {0}")]
    Key(String),
}

/// What the admin API and the logs show about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Lowercase hex, no separators (as Envoy's `/certs` prints it).
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub is_ca: bool,
}

impl CertInfo {
    /// The first URI SAN that is an Istio SPIFFE identity. Envoy likewise
    /// takes the first URI SAN as the peer principal.
    pub fn spiffe_identity(&self) -> Option<Identity> {
        self.uri_sans.iter().find_map(|u| u.parse().ok())
    }
}

/// Every `CERTIFICATE` block of a PEM bundle, in order. Other blocks (keys,
/// parameters) are skipped so that a combined file still loads.
pub fn parse_certs_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertParseError> {
    let blocks = pem::parse_many(pem).map_err(|e| CertParseError::Pem(e.to_string()))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(CertParseError::Missing("CERTIFICATE"));
    }
    Ok(certs)
}

/// The private key of a PEM file: PKCS#8, SEC1 (`EC PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`), the forms openssl and Istio's tooling write.
pub fn parse_key_pem(pem: &str) -> Result<PrivateKeyDer<'static>, CertParseError> {
    let blocks = pem::parse_many(pem).map_err(|e| CertParseError::Pem(e.to_string()))?;
    for block in blocks {
        let key = match block.tag() {
            "PRIVATE KEY" => PrivateKeyDer::Pkcs8(block.into_contents().into()),
            "EC PRIVATE KEY" => PrivateKeyDer::Sec1(block.into_contents().into()),
            "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(block.into_contents().into()),
            _ => continue,
        };
        return Ok(key);
    }
    Err(CertParseError::Missing("PRIVATE KEY"))
}

pub fn cert_to_pem(der: &[u8]) -> String {
    let block = pem::Pem::new("CERTIFICATE", der.to_vec());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub fn certs_to_pem<'a>(ders: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    ders.into_iter().map(|d| cert_to_pem(d)).collect()
}

/// Reads the fields Mizzen cares about from a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, CertParseError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertParseError::X509(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertParseError::X509(
            "trailing bytes after certificate".into(),
        ));
    }
    let mut uri_sans = Vec::new();
    let mut dns_sans = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertParseError::X509(e.to_string()))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uri_sans.push((*u).to_string()),
                GeneralName::DNSName(d) => dns_sans.push((*d).to_string()),
                _ => {}
            }
        }
    }
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| CertParseError::X509(e.to_string()))?
        .is_some_and(|bc| bc.value.ca);
    Ok(CertInfo {
        serial: serial_hex(cert.raw_serial()),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: to_system_time(cert.validity().not_before.timestamp()),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
        uri_sans,
        dns_sans,
        is_ca,
    })
}

/// The subject public key of a certificate (the content of the SPKI bit
/// string), to check that a private key and a certificate belong together.
pub fn public_key_bits(der: &[u8]) -> Result<Vec<u8>, CertParseError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertParseError::X509(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let trimmed = &raw[start..];
    if trimmed.is_empty() {
        return "0".to_string();
    }
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

/// Certificates may carry dates before 1970 or far in the future; clamp
/// rather than fail, these values are only shown and compared.
fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(unix.unsigned_abs()))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(unix.unsigned_abs()))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_certs_pem("not pem").is_err());
        assert!(parse_certs_pem("").is_err());
        assert!(
            parse_certs_pem("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
                .is_err()
        );
        assert!(inspect(b"\x30\x03\x02\x01\x00").is_err());
        assert!(inspect(&[]).is_err());
        assert!(
            parse_key_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    #[test]
    fn serial_hex_trims_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x7f, 0x01]), "7f01");
        assert_eq!(serial_hex(&[0]), "0");
        assert_eq!(serial_hex(&[]), "0");
    }
}
