//! Mizzen's own workload format and the common view of a workload.

use crate::networking::WorkloadEntry;
use crate::object::{Object, meta_labels};
use crate::serde_util::opt_int;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The label that tells Istio whether a workload terminates Istio mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A workload run by the local runtime (`kind: Workload`).
///
/// It plays the part a Pod plays in Kubernetes: something with an address,
/// labels that Services and policies select on, and an identity. It means the
/// same thing as an Istio `WorkloadEntry`, with a field saying whether a
/// sidecar runs next to it.
///
/// ```yaml
/// apiVersion: mizzen.io/v1alpha1
/// kind: Workload
/// metadata:
///   name: reviews-v1-0
///   namespace: default          # optional, defaults to "default"
///   labels: {app: reviews, version: v1}
/// spec:
///   address: 127.0.0.11         # required, an IP address
///   serviceAccount: bookinfo-reviews   # optional, defaults to "default"
///   ports:                      # optional, port name -> port number
///     http: 9080
///   sidecar: true               # optional, defaults to true
///   locality: region/zone/subzone   # optional
///   network: net1               # optional
///   weight: 1                   # optional load balancing weight
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub sidecar: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub weight: Option<u32>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            address: String::new(),
            service_account: None,
            ports: BTreeMap::new(),
            sidecar: true,
            locality: None,
            network: None,
            weight: None,
        }
    }
}

impl Workload {
    /// The service account, `default` when unset.
    pub fn service_account(&self) -> &str {
        self.service_account.as_deref().unwrap_or("default")
    }
}

/// A workload as the control plane sees it, whether it came from a
/// [`Workload`] or from an Istio [`WorkloadEntry`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadInstance {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub address: String,
    pub ports: BTreeMap<String, u32>,
    /// Whether a sidecar runs next to the workload (it then speaks Istio mTLS).
    pub sidecar: bool,
    pub locality: Option<String>,
    pub network: Option<String>,
    pub weight: Option<u32>,
}

impl From<&Object<Workload>> for WorkloadInstance {
    fn from(obj: &Object<Workload>) -> Self {
        WorkloadInstance {
            name: obj.name().to_string(),
            namespace: obj.namespace().to_string(),
            labels: obj.labels().clone(),
            service_account: obj.spec.service_account().to_string(),
            address: obj.spec.address.clone(),
            ports: obj.spec.ports.clone(),
            sidecar: obj.spec.sidecar,
            locality: obj.spec.locality.clone(),
            network: obj.spec.network.clone(),
            weight: obj.spec.weight,
        }
    }
}

impl From<&Object<WorkloadEntry>> for WorkloadInstance {
    /// Labels are the spec labels overlaid with the metadata labels, which
    /// win, as in Istio. Istio decides whether the workload speaks Istio mTLS
    /// from the `security.istio.io/tlsMode` label, or, without it, from
    /// whether a service account is set; that is what `sidecar` reports.
    fn from(obj: &Object<WorkloadEntry>) -> Self {
        let spec = &obj.spec;
        let mut labels = spec.labels.clone();
        for (k, v) in meta_labels(&obj.metadata) {
            labels.insert(k.clone(), v.clone());
        }
        let sidecar = match labels.get(TLS_MODE_LABEL) {
            Some(mode) => mode == "istio",
            None => spec
                .service_account
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
        };
        WorkloadInstance {
            name: obj.name().to_string(),
            namespace: obj.namespace().to_string(),
            labels,
            service_account: spec
                .service_account
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            address: spec.address.clone().unwrap_or_default(),
            ports: spec.ports.clone(),
            sidecar,
            locality: spec.locality.clone(),
            network: spec.network.clone(),
            weight: spec.weight,
        }
    }
}
