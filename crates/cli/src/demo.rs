//! `mizzen demo`: the fake-service walkthrough on one machine.
//!
//! service-a calls service-b and service-c; service-c has a v1 and a v2, and
//! v2 fails half of its requests. Traffic enters through the ingress gateway
//! on http://127.0.0.1:8080.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mizzen_testkit::demo_app::AppConfig;

use crate::local::{AppSpec, LocalMesh, LocalOptions};

/// The demo's config directory contents, written afresh at every start.
pub const CONFIG_FILES: [(&str, &str); 4] = [
    ("services.yaml", include_str!("../demo/services.yaml")),
    ("workloads.yaml", include_str!("../demo/workloads.yaml")),
    ("gateway.yaml", include_str!("../demo/gateway.yaml")),
    (
        "service-c-dr.yaml",
        include_str!("../demo/service-c-dr.yaml"),
    ),
];
/// Files for the walkthrough's later steps, applied by the user.
pub const EXAMPLE_FILES: [(&str, &str); 2] = [
    (
        "service-c-route.yaml",
        include_str!("../demo/service-c-route.yaml"),
    ),
    (
        "peer-auth-strict.yaml",
        include_str!("../demo/peer-auth-strict.yaml"),
    ),
];

/// The host the gateway serves over HTTPS, and the Secret holding its
/// certificate (the seed's names).
pub const EDGE_HOST: &str = "istioinaction.io";
pub const EDGE_SECRET: &str = "istioinaction-cert";

/// The port every demo app listens on (the Services' target port).
const APP_PORT: u16 = 8080;

pub struct DemoOptions {
    pub dir: PathBuf,
    pub xds_address: SocketAddr,
    pub debug_address: SocketAddr,
    /// Run on loopback addresses even as root.
    pub loopback: bool,
    /// The `mizzen` binary that pods run.
    pub binary: PathBuf,
}

/// Writes the demo's config and example files below `dir`; `pods` puts the
/// workloads on the pod network instead of loopback addresses.
pub fn write_files(dir: &Path, pods: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let config = dir.join("config");
    let examples = dir.join("examples");
    if config.exists() {
        std::fs::remove_dir_all(&config)
            .with_context(|| format!("resetting {}", config.display()))?;
    }
    for (target, files) in [
        (&config, &CONFIG_FILES[..]),
        (&examples, &EXAMPLE_FILES[..]),
    ] {
        std::fs::create_dir_all(target)
            .with_context(|| format!("creating {}", target.display()))?;
        for (name, text) in files {
            let text = if pods && *name == "workloads.yaml" {
                crate::pods::pod_addresses(text)
            } else {
                text.to_string()
            };
            std::fs::write(target.join(name), text).with_context(|| format!("writing {name}"))?;
        }
    }
    Ok((config, examples))
}

fn app(vars: &[(&str, &str)]) -> anyhow::Result<AppSpec> {
    let vars: BTreeMap<&str, &str> = vars.iter().copied().collect();
    let config = AppConfig::from_lookup(|key| vars.get(key).map(|v| v.to_string()))?;
    Ok(AppSpec {
        config,
        port: APP_PORT,
    })
}

/// The demo's apps, keyed by workload.
pub fn apps() -> anyhow::Result<BTreeMap<String, AppSpec>> {
    Ok(BTreeMap::from([
        (
            "istioinaction/service-a".to_string(),
            app(&[
                ("NAME", "service-a"),
                ("VERSION", "v1"),
                ("UPSTREAM_URIS", "http://service-b:80,http://service-c:80"),
            ])?,
        ),
        (
            "istioinaction/service-b".to_string(),
            app(&[("NAME", "service-b"), ("VERSION", "v1")])?,
        ),
        (
            "istioinaction/service-c-v1".to_string(),
            app(&[("NAME", "service-c"), ("VERSION", "v1")])?,
        ),
        (
            "istioinaction/service-c-v2".to_string(),
            app(&[
                ("NAME", "service-c"),
                ("VERSION", "v2"),
                ("ERROR_RATE", "0.5"),
                ("ERROR_CODE", "500"),
            ])?,
        ),
    ]))
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let pods = !options.loopback && crate::netns::is_root();
    let (config_dir, examples) = write_files(&options.dir, pods)?;
    if pods {
        println!("Mizzen demo: pods in network namespaces with iptables capture.");
    } else if options.loopback {
        println!("Mizzen demo: local loopback runtime (asked for with --loopback).");
    } else {
        println!(
            "Mizzen demo: not running as root, so no pods: local loopback runtime, apps use their sidecar as an HTTP proxy."
        );
    }
    println!("config directory: {}", config_dir.display());
    let edge = crate::edge_certs::write(
        &options.dir.join("edge-ca"),
        &config_dir,
        "istio-system",
        EDGE_SECRET,
        &[EDGE_HOST],
    )?;
    println!(
        "demo CA for https://{EDGE_HOST}:8443: {}",
        edge.ca_cert.display()
    );
    if pods {
        let log_dir = options.dir.join("logs");
        let mesh = crate::pods::PodMesh::start(crate::pods::PodOptions {
            config_dir: config_dir.clone(),
            binary: options.binary.clone(),
            log_dir: log_dir.clone(),
            debug_address: options.debug_address,
            apps: apps()?,
            forwards: [8080, 8443]
                .into_iter()
                .map(|port| {
                    (
                        SocketAddr::from(([127, 0, 0, 1], port)),
                        "istio-system/istio-ingressgateway".to_string(),
                        port,
                    )
                })
                .collect(),
            network: Default::default(),
            ca_dir: Some(options.dir.join("ca")),
        })
        .await?;
        let run_file =
            crate::meshes::register(&config_dir, mesh.pilot.debug_address(), mesh.pods.clone())?;
        println!(
            "pilot: xDS on {}, debug on http://{}/debug/syncz",
            mesh.pilot.xds_address(),
            mesh.pilot.debug_address()
        );
        println!(
            "pods: {} (logs in {})",
            mesh.pods.keys().cloned().collect::<Vec<_>>().join(", "),
            log_dir.display()
        );
        print_tour(&examples, &edge.ca_cert);
        println!("  mizzen exec service-b -- curl -s http://service-c/");
        println!(
            "Sidecars talk mutual TLS; the legacy pod (no sidecar) still gets through in plain text:"
        );
        println!(
            "  mizzen exec legacy -- curl -s http://service-a.istioinaction.svc.cluster.local/"
        );
        println!(
            "Require mutual TLS in istioinaction; the legacy pod is then refused (curl exit 56):"
        );
        println!(
            "  mizzen apply -f {}",
            examples.join("peer-auth-strict.yaml").display()
        );
        println!("Ctrl-C stops the mesh and removes the pods.");
        tokio::signal::ctrl_c().await?;
        println!("stopping");
        mesh.stop().await;
        let _ = std::fs::remove_file(run_file);
        return Ok(());
    }
    let mut mesh = LocalMesh::start(LocalOptions {
        config_dir: config_dir.clone(),
        xds_address: options.xds_address,
        debug_address: options.debug_address,
        apps: apps()?,
        ca_dir: Some(options.dir.join("ca")),
        ca_address: SocketAddr::from(([127, 0, 0, 1], 15012)),
    })
    .await?;
    mesh.register(&config_dir)?;
    println!(
        "pilot: xDS on {}, debug on http://{}/debug/syncz",
        mesh.pilot.xds_address(),
        mesh.pilot.debug_address()
    );
    for (name, proxy) in &mesh.proxies {
        println!("proxy {name}: admin on http://{}/", proxy.admin_address());
    }
    print_tour(&examples, &edge.ca_cert);
    println!("Ctrl-C stops the mesh.");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    mesh.stop().await;
    Ok(())
}

fn print_tour(examples: &Path, ca_cert: &Path) {
    println!();
    println!("The mesh is ready. Try:");
    println!(
        "  for i in $(seq 10); do curl -s -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.1:8080/; done"
    );
    println!("  curl -s http://127.0.0.1:8080/");
    println!(
        "  curl -s --cacert {} https://{EDGE_HOST}:8443/ --resolve {EDGE_HOST}:8443:127.0.0.1",
        ca_cert.display()
    );
    println!("service-c v2 fails half of its requests. Send service-c to v1 only:");
    println!(
        "  mizzen apply -f {}",
        examples.join("service-c-route.yaml").display()
    );
}
