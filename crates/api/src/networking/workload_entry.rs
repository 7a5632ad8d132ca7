use crate::serde_util::{int, opt_int};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `networking.istio.io` WorkloadEntry: a non-Kubernetes workload (a VM, a
/// bare-metal host), also used inline as a ServiceEntry endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadEntry {
    /// IP, hostname or `unix://` socket path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port name to number.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// `networking.istio.io` WorkloadGroup: a template for auto-registered
/// WorkloadEntries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupObjectMeta>,
    pub template: WorkloadEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

/// Labels and annotations copied to generated WorkloadEntries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadGroupObjectMeta {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Health check run by the proxy on the workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadinessProbe {
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheckConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheckConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
}

/// HTTP GET health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheckConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(deserialize_with = "int")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// A header sent with an HTTP health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeader {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// TCP connect health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheckConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(deserialize_with = "int")]
    pub port: u32,
}

/// Command health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecHealthCheckConfig {
    pub command: Vec<String>,
}

/// gRPC health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcHealthCheckConfig {
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}
