//! TLS in the mesh's Envoy config: Istio mutual TLS between sidecars
//! (automatic, or `ISTIO_MUTUAL` in a DestinationRule), TLS origination
//! (`SIMPLE`, `MUTUAL`) and the inbound filter chains PeerAuthentication
//! asks for.
//!
//! The shapes are Istio's, so that a real Envoy behaves the same:
//! certificates come over SDS under the names `default` (the workload's
//! chain and key) and `ROOTCA` (the mesh roots), from the `sds-grpc` cluster
//! (the pilot-agent's Unix socket in Istio; mizzen-proxy serves them
//! itself). Clusters to sidecars carry `transport_socket_matches` that pick
//! mutual TLS for endpoints labelled `tlsMode: istio` in EDS and plaintext
//! for the others, and the client checks the server's SPIFFE ID against the
//! identities that may serve the service (secure naming).

use mizzen_api::networking::{ClientTlsMode, ClientTlsSettings};
use mizzen_xds::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use mizzen_xds::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService, TransportSocket,
    api_config_source::ApiType,
    config_source::ConfigSourceSpecifier,
    data_source,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    transport_socket,
};
use mizzen_xds::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use mizzen_xds::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use mizzen_xds::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use mizzen_xds::pb::google::protobuf::{BoolValue, Struct};

use super::ads_config_source;

/// The SDS cluster of Istio's bootstrap (the pilot-agent's socket).
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The workload certificate's SDS name.
pub const WORKLOAD_SECRET: &str = "default";
/// The mesh roots' SDS name.
pub const ROOT_SECRET: &str = "ROOTCA";
/// Endpoint metadata key that `transport_socket_matches` look at.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// Envoy's TLS transport socket.
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_BUFFER_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// Where Debian keeps the system roots: Istio verifies `SIMPLE` origination
/// against them when the DestinationRule names no CA.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// ALPN a mesh client offers, by what it will speak (Istio's values: the
/// `istio*` entries tell a PERMISSIVE server that mesh mTLS is coming).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshAlpn {
    Http11,
    Http2,
    Tcp,
}

impl MeshAlpn {
    fn offer(self) -> Vec<String> {
        let list: &[&str] = match self {
            MeshAlpn::Http11 => &["istio-http/1.1", "istio", "http/1.1"],
            MeshAlpn::Http2 => &["istio-h2", "istio", "h2"],
            MeshAlpn::Tcp => &["istio-peer-exchange", "istio"],
        };
        list.iter().map(|s| s.to_string()).collect()
    }
}

/// What a server's TLS inspector must see in the ALPN offer to pick the
/// mesh mTLS chain of a PERMISSIVE port.
pub const MESH_ALPNS: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// The mesh ALPN values of TCP clients, for ports whose protocol is unknown.
pub const MESH_TCP_ALPNS: [&str; 2] = ["istio-peer-exchange", "istio"];
/// The mesh ALPN values of HTTP clients, for ports whose protocol is
/// unknown: they pick the HTTP chain over the TCP one.
pub const MESH_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];

/// `{api_config_source: GRPC to sds-grpc}` as Istio's proxies get it.
fn sds_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: ApiType::Grpc as i32,
            transport_api_version: ApiVersion::V3 as i32,
            grpc_services: vec![GrpcService {
                target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                    cluster_name: SDS_CLUSTER.to_string(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            set_node_on_first_message_only: true,
            ..Default::default()
        })),
        initial_fetch_timeout: Some(super::duration(std::time::Duration::ZERO)),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub(super) fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(sds_source()),
    }
}

/// A secret the pilot serves over ADS (a `credentialName`).
pub(super) fn ads_secret(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads_config_source()),
    }
}

fn tls_params() -> Option<TlsParameters> {
    Some(TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    })
}

pub(super) fn uri_sans(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .map(|san| SubjectAltNameMatcher {
            san_type: if san.contains("://") {
                SanType::Uri as i32
            } else {
                SanType::Dns as i32
            },
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(san.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// Peer validation with trust anchors from the secret `roots` and `sans`
/// the peer must present one of (none: any name the roots vouch for).
pub(super) fn sds_validation(
    roots: SdsSecretConfig,
    sans: Vec<SubjectAltNameMatcher>,
) -> ValidationContextType {
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: sans,
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(roots),
        ..Default::default()
    })
}

/// A file on the proxy's filesystem.
pub(super) fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// The workload certificate and the mesh roots, with `sans` (SPIFFE IDs)
/// the peer must present one of (none: any mesh identity).
fn mesh_common(alpn: Vec<String>, sans: &[String]) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: tls_params(),
        alpn_protocols: alpn,
        tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_SECRET)],
        validation_context_type: Some(sds_validation(sds(ROOT_SECRET), uri_sans(sans))),
        ..Default::default()
    }
}

pub(super) fn tls_socket<T: prost::Message + prost::Name>(context: &T) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(mizzen_xds::pack(
            context,
        ))),
    }
}

fn plaintext_socket() -> TransportSocket {
    TransportSocket {
        name: RAW_BUFFER_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(mizzen_xds::pack(
            &RawBuffer::default(),
        ))),
    }
}

/// Istio's SNI for mesh mTLS: `outbound_.PORT_.SUBSET_.HOST`.
pub fn mesh_sni(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// Istio mutual TLS to a sidecar.
pub fn istio_mutual(sni: String, sans: &[String], alpn: MeshAlpn) -> TransportSocket {
    tls_socket(&UpstreamTlsContext {
        common_tls_context: Some(mesh_common(alpn.offer(), sans)),
        sni,
        ..Default::default()
    })
}

/// Automatic mutual TLS: mTLS to endpoints EDS marks `tlsMode: istio`,
/// plaintext to the others.
pub fn auto_mtls_matches(
    sni: String,
    sans: &[String],
    alpn: MeshAlpn,
) -> Vec<TransportSocketMatch> {
    let tls_mode = tls_mode_istio();
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".to_string(),
            r#match: Some(tls_mode),
            transport_socket: Some(istio_mutual(sni, sans, alpn)),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".to_string(),
            r#match: Some(Struct::default()),
            transport_socket: Some(plaintext_socket()),
        },
    ]
}

/// `{tlsMode: istio}`: the endpoint metadata (under
/// [`TRANSPORT_SOCKET_MATCH`]) and the match of the mTLS socket.
pub fn tls_mode_istio() -> Struct {
    let mut map = serde_json::Map::new();
    map.insert("tlsMode".into(), "istio".into());
    mizzen_xds::structs::to_struct(&map)
}

/// What a cluster's TLS is, once DestinationRule and auto mTLS are
/// combined.
pub enum ClusterTls {
    /// Plaintext.
    None,
    /// One transport socket for every endpoint.
    Socket(Box<TransportSocket>),
    /// Chosen per endpoint by its metadata.
    Matches(Vec<TransportSocketMatch>),
}

/// A DestinationRule's `tls` for a cluster. `sni`/`sans` are the mesh
/// defaults used by ISTIO_MUTUAL; `host` is the destination's hostname.
/// `credential_namespace` is where a `credentialName` Secret lives.
pub fn destination_rule_tls(
    settings: &ClientTlsSettings,
    mesh_sni: String,
    mesh_sans: &[String],
    alpn: MeshAlpn,
    host: &str,
) -> ClusterTls {
    match settings.mode.unwrap_or(ClientTlsMode::Disable) {
        ClientTlsMode::Disable => ClusterTls::None,
        ClientTlsMode::IstioMutual => {
            let sni = settings.sni.clone().unwrap_or(mesh_sni);
            let sans = if settings.subject_alt_names.is_empty() {
                mesh_sans
            } else {
                &settings.subject_alt_names
            };
            ClusterTls::Socket(Box::new(istio_mutual(sni, sans, alpn)))
        }
        mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
            let mut common = CommonTlsContext {
                tls_params: tls_params(),
                ..Default::default()
            };
            let verify = !settings.insecure_skip_verify.unwrap_or(false);
            if let Some(credential) = &settings.credential_name {
                // Istio's convention: the key pair in NAME, the CA in NAME
                // or NAME-cacert.
                if mode == ClientTlsMode::Mutual {
                    common.tls_certificate_sds_secret_configs =
                        vec![ads_secret(format!("kubernetes://{credential}"))];
                }
                if verify {
                    common.validation_context_type = Some(sds_validation(
                        ads_secret(format!("kubernetes://{credential}-cacert")),
                        uri_sans(&settings.subject_alt_names),
                    ));
                }
            } else {
                if mode == ClientTlsMode::Mutual
                    && let (Some(cert), Some(key)) =
                        (&settings.client_certificate, &settings.private_key)
                {
                    common.tls_certificates = vec![TlsCertificate {
                        certificate_chain: Some(file(cert)),
                        private_key: Some(file(key)),
                        ..Default::default()
                    }];
                }
                if verify {
                    let ca = settings.ca_certificates.as_deref().unwrap_or(SYSTEM_ROOTS);
                    common.validation_context_type = Some(
                        ValidationContextType::ValidationContext(CertificateValidationContext {
                            trusted_ca: Some(file(ca)),
                            match_typed_subject_alt_names: uri_sans(&settings.subject_alt_names),
                            ..Default::default()
                        }),
                    );
                }
            }
            ClusterTls::Socket(Box::new(tls_socket(&UpstreamTlsContext {
                common_tls_context: Some(common),
                sni: settings.sni.clone().unwrap_or_else(|| host.to_string()),
                ..Default::default()
            })))
        }
    }
}

/// The server side of mesh mTLS on an inbound chain: the workload
/// certificate, client certificates required and checked against the mesh
/// roots (any mesh identity: authorization decides who may call).
pub fn inbound_mtls() -> TransportSocket {
    tls_socket(&DownstreamTlsContext {
        common_tls_context: Some(mesh_common(
            vec!["h2".to_string(), "http/1.1".to_string()],
            &[],
        )),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    })
}
