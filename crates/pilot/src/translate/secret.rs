//! SDS over ADS: the Kubernetes Secrets that `credentialName` names, as
//! Envoy `Secret` resources (`kubernetes://NAME`).
//!
//! As in Istio, a proxy only gets Secrets of its own namespace. A Secret
//! holds a key pair as `tls.crt`/`tls.key` (type `kubernetes.io/tls`) or
//! `cert`/`key` (generic), and optionally a CA as `ca.crt` or `cacert`.
//! `kubernetes://NAME-cacert` is the CA: from a Secret named `NAME-cacert`
//! if there is one, else from NAME's own CA entry.

use mizzen_xds::pb::envoy::config::core::v3::{DataSource, data_source};
use mizzen_xds::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use mizzen_xds::server::Resource;

use super::resource;
use crate::model::Model;
use crate::node::ProxyNode;

/// The prefix of Istio's SDS names for Kubernetes Secrets.
pub const KUBERNETES_PREFIX: &str = "kubernetes://";
/// The suffix naming a credential's CA.
pub const CA_SUFFIX: &str = "-cacert";

fn inline(bytes: &[u8]) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    })
}

/// The requested secrets the proxy may read; unknown names are left out
/// (Envoy keeps waiting for them, and handshakes using them fail).
pub fn secrets(model: &Model, proxy: &ProxyNode, names: &[String]) -> Vec<Resource> {
    let mut out = Vec::new();
    for name in names {
        let Some(credential) = name.strip_prefix(KUBERNETES_PREFIX) else {
            continue;
        };
        let data = |secret: &str| model.secret_data(&proxy.namespace, secret);
        let ca_only = credential
            .strip_suffix(CA_SUFFIX)
            .filter(|_| data(credential).is_none());
        let body = match ca_only {
            Some(base) => data(base).and_then(|d| d.ca.clone()).map(|ca| {
                secret::Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: inline(&ca),
                    ..Default::default()
                })
            }),
            None => data(credential).and_then(|d| {
                if let (Some(cert), Some(key)) = (&d.cert, &d.key) {
                    Some(secret::Type::TlsCertificate(TlsCertificate {
                        certificate_chain: inline(cert),
                        private_key: inline(key),
                        ..Default::default()
                    }))
                } else {
                    d.ca.as_ref().map(|ca| {
                        secret::Type::ValidationContext(CertificateValidationContext {
                            trusted_ca: inline(ca),
                            ..Default::default()
                        })
                    })
                }
            }),
        };
        if let Some(body) = body {
            out.push(resource(
                name.clone(),
                &Secret {
                    name: name.clone(),
                    r#type: Some(body),
                },
            ));
        }
    }
    out
}
