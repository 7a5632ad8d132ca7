//! Which mutual TLS a workload accepts, from its PeerAuthentication
//! policies, resolved as Istio does.
//!
//! Three levels apply, most specific first: a policy in the workload's
//! namespace whose selector matches its labels, the namespace's policy
//! without selector, and the mesh policy (no selector, in the root
//! namespace). A level whose mode is `UNSET` (or absent) inherits from the
//! next; with no policy at all the mode is `PERMISSIVE`. `portLevelMtls`
//! overrides the mode for one workload port (Istio only honours it on
//! policies with a selector); an `UNSET` port inherits the workload's mode.
//! When two policies tie at a level, the oldest wins in Istio; the local
//! registry has no creation times, so the first by namespace/name does.

use std::collections::BTreeMap;

use mizzen_api::security::{MtlsMode, MutualTls, PeerAuthentication};

use crate::model::{Config, ROOT_NAMESPACE, labels_match};

/// The effective mutual TLS mode of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerMode {
    /// Plaintext only.
    Disable,
    /// Mutual TLS and plaintext on the same port.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl PeerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerMode::Disable => "DISABLE",
            PeerMode::Permissive => "PERMISSIVE",
            PeerMode::Strict => "STRICT",
        }
    }
}

/// A workload's modes: one for the workload and overrides per port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub mode: PeerMode,
    pub ports: BTreeMap<u16, PeerMode>,
    /// The policy that decided `mode` (`namespace/name`), for debugging.
    pub source: Option<String>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        PeerPolicy {
            mode: PeerMode::Permissive,
            ports: BTreeMap::new(),
            source: None,
        }
    }
}

impl PeerPolicy {
    pub fn for_port(&self, port: u16) -> PeerMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }

    /// Whether a client may send mutual TLS to this port.
    pub fn accepts_mtls(&self, port: u16) -> bool {
        self.for_port(port) != PeerMode::Disable
    }
}

fn set_mode(mtls: Option<&MutualTls>) -> Option<PeerMode> {
    match mtls.and_then(|m| m.mode) {
        None | Some(MtlsMode::Unset) => None,
        Some(MtlsMode::Disable) => Some(PeerMode::Disable),
        Some(MtlsMode::Permissive) => Some(PeerMode::Permissive),
        Some(MtlsMode::Strict) => Some(PeerMode::Strict),
    }
}

/// The policy of a workload in `namespace` with `labels`. `policies` must be
/// sorted by namespace and name (the model keeps them so).
pub fn resolve(
    policies: &[Config<PeerAuthentication>],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> PeerPolicy {
    let selected = |p: &&Config<PeerAuthentication>| {
        p.spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty() && labels_match(&s.match_labels, labels))
    };
    let unselected = |p: &&Config<PeerAuthentication>| {
        p.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let workload_level = policies
        .iter()
        .filter(|p| p.namespace == namespace)
        .find(selected);
    let namespace_level = policies
        .iter()
        .filter(|p| p.namespace == namespace)
        .find(unselected);
    let mesh_level = policies
        .iter()
        .filter(|p| p.namespace == ROOT_NAMESPACE)
        .find(unselected);

    let mut policy = PeerPolicy::default();
    for level in [mesh_level, namespace_level, workload_level]
        .into_iter()
        .flatten()
    {
        if let Some(mode) = set_mode(level.spec.mtls.as_ref()) {
            policy.mode = mode;
            policy.source = Some(format!("{}/{}", level.namespace, level.name));
        }
    }
    if let Some(workload) = workload_level {
        for (port, mtls) in workload.spec.port_level_mtls.iter().flatten() {
            let (Ok(port), Some(mode)) = (u16::try_from(*port), set_mode(Some(mtls))) else {
                continue;
            };
            policy.ports.insert(port, mode);
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_api::type_v1beta1::WorkloadSelector;

    fn policy(
        namespace: &str,
        name: &str,
        selector: Option<&[(&str, &str)]>,
        mode: Option<MtlsMode>,
        ports: &[(u32, MtlsMode)],
    ) -> Config<PeerAuthentication> {
        Config {
            name: name.into(),
            namespace: namespace.into(),
            spec: PeerAuthentication {
                selector: selector.map(|s| WorkloadSelector {
                    match_labels: s
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
                mtls: Some(MutualTls { mode }),
                port_level_mtls: (!ports.is_empty()).then(|| {
                    ports
                        .iter()
                        .map(|(p, m)| (*p, MutualTls { mode: Some(*m) }))
                        .collect()
                }),
            },
        }
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string())].into()
    }

    #[test]
    fn default_is_permissive() {
        let p = resolve(&[], "default", &labels("a"));
        assert_eq!(p.mode, PeerMode::Permissive);
        assert!(p.accepts_mtls(80));
    }

    #[test]
    fn most_specific_set_level_wins() {
        let policies = vec![
            policy("istio-system", "default", None, Some(MtlsMode::Strict), &[]),
            policy("shop", "default", None, Some(MtlsMode::Unset), &[]),
            policy(
                "shop",
                "legacy",
                Some(&[("app", "legacy")]),
                Some(MtlsMode::Disable),
                &[],
            ),
        ];
        // Namespace UNSET inherits the mesh's STRICT.
        let p = resolve(&policies, "shop", &labels("cart"));
        assert_eq!(p.mode, PeerMode::Strict);
        assert_eq!(p.source.as_deref(), Some("istio-system/default"));
        assert_eq!(
            resolve(&policies, "shop", &labels("legacy")).mode,
            PeerMode::Disable
        );
        assert_eq!(
            resolve(&policies, "other", &labels("legacy")).mode,
            PeerMode::Strict
        );
    }

    #[test]
    fn port_level_overrides_only_its_port() {
        let policies = vec![
            policy("shop", "default", None, Some(MtlsMode::Strict), &[]),
            policy(
                "shop",
                "web",
                Some(&[("app", "web")]),
                None,
                &[(8080, MtlsMode::Disable), (9090, MtlsMode::Unset)],
            ),
        ];
        let p = resolve(&policies, "shop", &labels("web"));
        assert_eq!(p.mode, PeerMode::Strict);
        assert_eq!(p.for_port(8080), PeerMode::Disable);
        assert_eq!(p.for_port(9090), PeerMode::Strict);
        assert_eq!(p.for_port(7000), PeerMode::Strict);
    }

    #[test]
    fn root_namespace_selector_policies_do_not_apply_mesh_wide() {
        let policies = vec![policy(
            "istio-system",
            "gw",
            Some(&[("app", "web")]),
            Some(MtlsMode::Strict),
            &[],
        )];
        assert_eq!(
            resolve(&policies, "shop", &labels("web")).mode,
            PeerMode::Permissive
        );
    }
}
