//! `mizzen up DIR`: runs a user's own mesh directory — in pods when root,
//! on loopback addresses otherwise. A `Workload` says which app runs beside
//! its sidecar with annotations:
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     mizzen.io/app: demo          # the demo app (fake-service style)
//!     mizzen.io/app-port: "8080"   # where it listens (default 8080)
//!     mizzen.io/app-env: |         # its settings, one KEY=VALUE a line
//!       NAME=service-a
//!       UPSTREAM_URIS=http://service-b,http://service-c
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mizzen_api::Resource;
use mizzen_testkit::demo_app::AppConfig;

use crate::local::{AppSpec, LocalMesh, LocalOptions};

pub const APP_ANNOTATION: &str = "mizzen.io/app";
pub const APP_PORT_ANNOTATION: &str = "mizzen.io/app-port";
pub const APP_ENV_ANNOTATION: &str = "mizzen.io/app-env";

/// The apps the directory's Workloads ask for, by `namespace/name`.
pub fn apps(config_dir: &Path) -> anyhow::Result<BTreeMap<String, AppSpec>> {
    let mut out = BTreeMap::new();
    for file in mizzen_pilot::config::yaml_files(config_dir) {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {shown}"))?;
        let resources = mizzen_api::parse_documents(&shown, &text).map_err(|errors| {
            anyhow::anyhow!(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
        for resource in resources {
            let Resource::Workload(workload) = &resource else {
                continue;
            };
            let annotations = workload.metadata.annotations.clone().unwrap_or_default();
            let Some(kind) = annotations.get(APP_ANNOTATION) else {
                continue;
            };
            let key = format!("{}/{}", resource.namespace(), resource.name());
            if kind != "demo" {
                bail!(
                    "{shown}: Workload {key}: annotation {APP_ANNOTATION}: {kind:?} is not a known app (demo)"
                );
            }
            let port = match annotations.get(APP_PORT_ANNOTATION) {
                None => 8080,
                Some(port) => port.parse().map_err(|_| {
                    anyhow::anyhow!("{shown}: Workload {key}: annotation {APP_PORT_ANNOTATION}: {port:?} is not a port")
                })?,
            };
            let mut env = BTreeMap::new();
            for line in annotations
                .get(APP_ENV_ANNOTATION)
                .map(String::as_str)
                .unwrap_or("")
                .lines()
            {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let (name, value) = line.split_once('=').with_context(|| {
                    format!("{shown}: Workload {key}: annotation {APP_ENV_ANNOTATION}: {line:?} is not KEY=VALUE")
                })?;
                env.insert(name.trim().to_string(), value.trim().to_string());
            }
            env.entry("NAME".to_string())
                .or_insert_with(|| resource.name().to_string());
            let config = AppConfig::from_lookup(|name| env.get(name).cloned()).map_err(|e| {
                anyhow::anyhow!("{shown}: Workload {key}: annotation {APP_ENV_ANNOTATION}: {e}")
            })?;
            out.insert(key, AppSpec { config, port });
        }
    }
    Ok(out)
}

pub struct UpOptions {
    pub config_dir: PathBuf,
    pub loopback: bool,
    pub binary: PathBuf,
    pub xds_address: SocketAddr,
    pub debug_address: SocketAddr,
}

pub async fn run(options: UpOptions) -> anyhow::Result<()> {
    let config_dir = options
        .config_dir
        .canonicalize()
        .with_context(|| format!("config directory {}", options.config_dir.display()))?;
    let apps = apps(&config_dir)?;
    if !options.loopback && crate::netns::is_root() {
        let workloads = crate::local::workloads(&config_dir)?;
        let forwards = workloads
            .iter()
            .filter(|w| w.labels.get("istio").map(String::as_str) == Some("ingressgateway"))
            .take(1)
            .flat_map(|w| {
                // HTTP and HTTPS, the gateway Service's usual target ports.
                [8080, 8443].map(|port| {
                    (
                        SocketAddr::from(([127, 0, 0, 1], port)),
                        format!("{}/{}", w.namespace, w.name),
                        port,
                    )
                })
            })
            .collect();
        let log_dir = crate::meshes::home().join("logs");
        let mesh = crate::pods::PodMesh::start(crate::pods::PodOptions {
            config_dir: config_dir.clone(),
            binary: options.binary,
            log_dir: log_dir.clone(),
            debug_address: options.debug_address,
            apps,
            forwards,
            network: Default::default(),
            ca_dir: Some(crate::meshes::home().join("ca")),
        })
        .await?;
        let run_file =
            crate::meshes::register(&config_dir, mesh.pilot.debug_address(), mesh.pods.clone())?;
        println!(
            "mesh of {} running in pods: {}",
            config_dir.display(),
            mesh.pods.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        println!("logs in {}; Ctrl-C stops it", log_dir.display());
        tokio::signal::ctrl_c().await?;
        mesh.stop().await;
        let _ = std::fs::remove_file(run_file);
        return Ok(());
    }
    if !options.loopback {
        println!("not running as root, so no pods: loopback runtime");
    }
    let mut mesh = LocalMesh::start(LocalOptions {
        config_dir: config_dir.clone(),
        xds_address: options.xds_address,
        debug_address: options.debug_address,
        apps,
        ca_dir: Some(crate::meshes::home().join("ca")),
        ca_address: SocketAddr::from(([127, 0, 0, 1], 15012)),
    })
    .await?;
    mesh.register(&config_dir)?;
    println!(
        "mesh of {} running on loopback addresses; Ctrl-C stops it",
        config_dir.display()
    );
    tokio::signal::ctrl_c().await?;
    mesh.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_apps_from_workload_annotations() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("w.yaml"),
            "apiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: a\n  namespace: ns\n  annotations:\n    mizzen.io/app: demo\n    mizzen.io/app-port: \"9090\"\n    mizzen.io/app-env: |\n      UPSTREAM_URIS=http://b,http://c\n      ERROR_RATE=0.5\nspec:\n  address: 127.1.2.3\n",
        )
        .unwrap();
        let apps = apps(dir.path()).unwrap();
        let app = &apps["ns/a"];
        assert_eq!(app.port, 9090);
        assert_eq!(app.config.name, "a");
        assert_eq!(app.config.upstream_uris, vec!["http://b", "http://c"]);
        assert_eq!(app.config.error_rate, 0.5);
    }

    #[test]
    fn bad_annotations_name_the_workload() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("w.yaml"),
            "apiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: a\n  namespace: ns\n  annotations:\n    mizzen.io/app: demo\n    mizzen.io/app-env: \"ERROR_RATE=2\"\nspec:\n  address: 127.1.2.3\n",
        )
        .unwrap();
        let error = apps(dir.path()).unwrap_err().to_string();
        assert!(error.contains("Workload ns/a"), "{error}");
        assert!(error.contains("ERROR_RATE"), "{error}");
    }
}
