use super::WorkloadSelector;
use crate::serde_util::{opt_int, string_enum};
use crate::type_v1beta1::PolicyTargetReference;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `networking.istio.io` EnvoyFilter: patches to the generated Envoy
/// configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

string_enum! {
    /// The kind of Envoy object a patch applies to.
    pub enum ApplyTo {
        Invalid = "INVALID",
        Listener = "LISTENER",
        FilterChain = "FILTER_CHAIN",
        NetworkFilter = "NETWORK_FILTER",
        HttpFilter = "HTTP_FILTER",
        RouteConfiguration = "ROUTE_CONFIGURATION",
        VirtualHost = "VIRTUAL_HOST",
        HttpRoute = "HTTP_ROUTE",
        Cluster = "CLUSTER",
        ExtensionConfig = "EXTENSION_CONFIG",
        Bootstrap = "BOOTSTRAP",
        ListenerFilter = "LISTENER_FILTER",
    }
}

string_enum! {
    /// Which generated configuration a patch applies to.
    pub enum PatchContext {
        Any = "ANY",
        SidecarInbound = "SIDECAR_INBOUND",
        SidecarOutbound = "SIDECAR_OUTBOUND",
        Gateway = "GATEWAY",
        Waypoint = "WAYPOINT",
    }
}

/// One patch: what it applies to, where, and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyConfigObjectPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_to: Option<ApplyTo>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub r#match: Option<EnvoyConfigObjectMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Patch>,
}

/// Selects the Envoy objects a patch applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyConfigObjectMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<PatchContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_configuration: Option<RouteConfigurationMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointMatch>,
}

/// Conditions on the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyMatch {
    /// Regular expression on the proxy version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_version: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Conditions on a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ListenerMatch {
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_chain: Option<FilterChainMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Conditions on a filter chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FilterChainMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_protocols: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMatch>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<String>,
}

/// Conditions on a network filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FilterMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_filter: Option<SubFilterMatch>,
}

/// Conditions on a filter inside a network filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SubFilterMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Conditions on a route configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteConfigurationMatch {
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhost: Option<VirtualHostMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Conditions on a virtual host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VirtualHostMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteMatch>,
}

string_enum! {
    /// The action of a route to match.
    pub enum RouteMatchAction {
        Any = "ANY",
        Route = "ROUTE",
        Redirect = "REDIRECT",
        DirectResponse = "DIRECT_RESPONSE",
    }
}

/// Conditions on a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<RouteMatchAction>,
}

/// Conditions on a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClusterMatch {
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Conditions on waypoint configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WaypointMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<WaypointRouteMatch>,
    #[serde(deserialize_with = "opt_int", skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
}

/// Conditions on a waypoint route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WaypointRouteMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

string_enum! {
    /// How a patch is applied.
    pub enum PatchOperation {
        Invalid = "INVALID",
        Merge = "MERGE",
        Add = "ADD",
        Remove = "REMOVE",
        InsertBefore = "INSERT_BEFORE",
        InsertAfter = "INSERT_AFTER",
        InsertFirst = "INSERT_FIRST",
        Replace = "REPLACE",
        MergeAndReplaceList = "MERGE_AND_REPLACE_LIST",
    }
}

string_enum! {
    /// Where an added HTTP filter goes relative to Istio's own filters.
    pub enum FilterClass {
        Unspecified = "UNSPECIFIED",
        Authn = "AUTHN",
        Authz = "AUTHZ",
        Stats = "STATS",
    }
}

/// The patch itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Patch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<PatchOperation>,
    /// Envoy configuration (a protobuf `Struct`), kept as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_class: Option<FilterClass>,
}
