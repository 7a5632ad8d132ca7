//! The server side of TLS on a Gateway server (`tls` of a Gateway server):
//! Envoy's `DownstreamTlsContext` as Istio builds it.
//!
//! Certificates come from a Kubernetes Secret over SDS on the ADS stream
//! (`credentialName` → `kubernetes://NAME`, and for MUTUAL the CA as
//! `kubernetes://NAME-cacert`), from files on the gateway
//! (`serverCertificate`, `privateKey`, `caCertificates`), or, for
//! ISTIO_MUTUAL, from the gateway's own workload certificate (`default`,
//! `ROOTCA`, as sidecars get them).

use mizzen_api::networking::{ServerTlsMode, ServerTlsSettings, TlsProtocol};
use mizzen_xds::pb::envoy::config::core::v3::TransportSocket;
use mizzen_xds::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    TlsParameters, common_tls_context::ValidationContextType,
    tls_parameters::TlsProtocol as EnvoyTlsProtocol,
};
use mizzen_xds::pb::google::protobuf::BoolValue;

use super::mtls;
use super::secret::{CA_SUFFIX, KUBERNETES_PREFIX};

/// ALPN an HTTPS server offers (Istio's `ALPNHttp`).
const HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// Whether a server's TLS mode terminates TLS on the gateway.
pub fn terminates(tls: Option<&ServerTlsSettings>) -> bool {
    matches!(
        tls.and_then(|t| t.mode),
        Some(
            ServerTlsMode::Simple
                | ServerTlsMode::Mutual
                | ServerTlsMode::OptionalMutual
                | ServerTlsMode::IstioMutual
        )
    )
}

fn protocol(version: Option<TlsProtocol>) -> i32 {
    (match version {
        None | Some(TlsProtocol::TlsAuto) => EnvoyTlsProtocol::TlsAuto,
        Some(TlsProtocol::Tlsv1_0) => EnvoyTlsProtocol::TlSv10,
        Some(TlsProtocol::Tlsv1_1) => EnvoyTlsProtocol::TlSv11,
        Some(TlsProtocol::Tlsv1_2) => EnvoyTlsProtocol::TlSv12,
        Some(TlsProtocol::Tlsv1_3) => EnvoyTlsProtocol::TlSv13,
    }) as i32
}

/// Protocol versions and cipher suites, only when the server sets them
/// (Envoy's defaults otherwise, as Istio leaves them).
fn tls_params(tls: &ServerTlsSettings) -> Option<TlsParameters> {
    let set = tls
        .min_protocol_version
        .is_some_and(|v| v != TlsProtocol::TlsAuto)
        || tls
            .max_protocol_version
            .is_some_and(|v| v != TlsProtocol::TlsAuto)
        || !tls.cipher_suites.is_empty()
        || !tls.ecdh_curves.is_empty();
    set.then(|| TlsParameters {
        tls_minimum_protocol_version: protocol(tls.min_protocol_version),
        tls_maximum_protocol_version: protocol(tls.max_protocol_version),
        cipher_suites: tls.cipher_suites.clone(),
        ecdh_curves: tls.ecdh_curves.clone(),
        ..Default::default()
    })
}

/// The transport socket of a terminating server's filter chain; `http`
/// says whether an HTTP connection manager follows (ALPN h2, http/1.1).
/// None for modes that do not terminate TLS.
pub fn server_transport_socket(tls: &ServerTlsSettings, http: bool) -> Option<TransportSocket> {
    let mode = tls.mode?;
    let mut common = CommonTlsContext {
        tls_params: tls_params(tls),
        alpn_protocols: if http {
            HTTP_ALPN.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let sans = mtls::uri_sans(&tls.subject_alt_names);
    let require_client_certificate = match mode {
        ServerTlsMode::IstioMutual => {
            common.tls_certificate_sds_secret_configs = vec![mtls::sds(mtls::WORKLOAD_SECRET)];
            common.validation_context_type =
                Some(mtls::sds_validation(mtls::sds(mtls::ROOT_SECRET), sans));
            true
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let verify_clients = mode != ServerTlsMode::Simple;
            let credentials: Vec<&String> = tls
                .credential_name
                .iter()
                .chain(tls.credential_names.iter())
                .collect();
            if let Some(first) = credentials.first() {
                // Several credentials serve several key types (RSA and
                // ECDSA); the CA comes with the first.
                common.tls_certificate_sds_secret_configs = credentials
                    .iter()
                    .map(|name| mtls::ads_secret(format!("{KUBERNETES_PREFIX}{name}")))
                    .collect();
                if verify_clients {
                    let ca = tls
                        .ca_cert_credential_name
                        .clone()
                        .unwrap_or_else(|| format!("{first}{CA_SUFFIX}"));
                    common.validation_context_type = Some(mtls::sds_validation(
                        mtls::ads_secret(format!("{KUBERNETES_PREFIX}{ca}")),
                        sans,
                    ));
                }
            } else {
                let pairs =
                    tls.server_certificate
                        .as_ref()
                        .zip(tls.private_key.as_ref())
                        .into_iter()
                        .chain(tls.tls_certificates.iter().filter_map(|c| {
                            c.server_certificate.as_ref().zip(c.private_key.as_ref())
                        }));
                common.tls_certificates = pairs
                    .map(|(cert, key)| TlsCertificate {
                        certificate_chain: Some(mtls::file(cert)),
                        private_key: Some(mtls::file(key)),
                        ..Default::default()
                    })
                    .collect();
                if verify_clients && let Some(ca) = &tls.ca_certificates {
                    common.validation_context_type = Some(
                        ValidationContextType::ValidationContext(CertificateValidationContext {
                            trusted_ca: Some(mtls::file(ca)),
                            match_typed_subject_alt_names: sans,
                            ..Default::default()
                        }),
                    );
                }
            }
            mode == ServerTlsMode::Mutual
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => return None,
    };
    Some(mtls::tls_socket(&DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: require_client_certificate,
        }),
        ..Default::default()
    }))
}
