//! `networking.istio.io` resources.

mod destination_rule;
mod envoy_filter;
mod gateway;
mod proxy_config;
mod service_entry;
mod sidecar;
mod string_match;
mod virtual_service;
mod workload_entry;

pub use destination_rule::*;
pub use envoy_filter::*;
pub use gateway::*;
pub use proxy_config::*;
pub use service_entry::*;
pub use sidecar::*;
pub use string_match::StringMatch;
pub use virtual_service::*;
pub use workload_entry::*;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `labels`-style selector used by networking resources (Sidecar,
/// ServiceEntry, EnvoyFilter). Compare [`crate::type_v1beta1::WorkloadSelector`],
/// which spells it `matchLabels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
