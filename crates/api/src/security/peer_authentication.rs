use crate::serde_util::{int_keyed_map, string_enum};
use crate::type_v1beta1::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `security.istio.io` PeerAuthentication: which mutual TLS a workload
/// accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PeerAuthentication {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port overrides keyed by port number. `Some` of an empty map is
    /// kept apart from absence because Istio rejects the former.
    #[serde(
        deserialize_with = "int_keyed_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub port_level_mtls: Option<BTreeMap<u32, MutualTls>>,
}

string_enum! {
    /// Mutual TLS mode.
    pub enum MtlsMode {
        Unset = "UNSET",
        Disable = "DISABLE",
        Permissive = "PERMISSIVE",
        Strict = "STRICT",
    }
}

/// Mutual TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MutualTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}
