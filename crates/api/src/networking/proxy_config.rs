use crate::serde_util::opt_int;
use crate::type_v1beta1::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `networking.istio.io` ProxyConfig: per-workload proxy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Worker threads; 0 means one per core.
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ProxyImage>,
}

/// Which proxy image flavour to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyImage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
}
