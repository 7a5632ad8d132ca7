//! Golden tests of translation: each directory under `tests/golden` holds a
//! `config.yaml` and, per proxy, the Envoy configuration the pilot computes
//! for it in Envoy's config_dump JSON. `MIZZEN_UPDATE_GOLDEN=1` rewrites the
//! expected files after a deliberate change; review the diff.

use std::net::IpAddr;
use std::path::Path;

use mizzen_pilot::config::{ConfigSnapshot, ConfigStore};
use mizzen_pilot::model::{MeshSettings, Model};
use mizzen_pilot::node::{InterceptionMode, ProxyKind, ProxyNode};

fn model(dir: &Path, mtls: bool) -> Model {
    let mut store = ConfigStore::new(dir);
    store.rescan();
    let snapshot: ConfigSnapshot = store.snapshot();
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    let mut settings = MeshSettings::new("cluster.local");
    settings.mtls = mtls;
    Model::build_with(&snapshot, &settings)
}

fn proxy(
    kind: ProxyKind,
    ip: &str,
    name: &str,
    namespace: &str,
    labels: &[(&str, &str)],
) -> ProxyNode {
    let ip: IpAddr = ip.parse().unwrap();
    ProxyNode {
        id: format!(
            "{}~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local",
            if kind == ProxyKind::Sidecar {
                "sidecar"
            } else {
                "router"
            }
        ),
        kind,
        ip,
        name: name.to_string(),
        namespace: namespace.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: "default".to_string(),
        interception: InterceptionMode::None,
        app_host: "127.0.0.1".parse().unwrap(),
        locality: None,
    }
}

fn captured(proxy: ProxyNode) -> ProxyNode {
    ProxyNode {
        interception: InterceptionMode::Redirect,
        app_host: proxy.ip,
        ..proxy
    }
}

fn check(case: &str, file: &str, proxy: &ProxyNode) {
    check_mesh(case, file, proxy, false)
}

/// `mtls`: the pilot runs a CA, so the mesh runs mutual TLS.
fn check_mesh(case: &str, file: &str, proxy: &ProxyNode, mtls: bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case);
    let model = model(&dir, mtls);
    let actual =
        serde_json::to_string_pretty(&mizzen_pilot::translate::dump(&model, proxy)).unwrap() + "\n";
    let expected_path = dir.join(file);
    if std::env::var_os("MIZZEN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with MIZZEN_UPDATE_GOLDEN=1",
            expected_path.display()
        )
    });
    pretty_assertions::assert_eq!(expected, actual, "{}", expected_path.display());
}

#[test]
fn routing_sidecar_of_productpage() {
    check(
        "routing",
        "productpage-sidecar.json",
        &proxy(
            ProxyKind::Sidecar,
            "10.0.0.1",
            "productpage-v1",
            "bookinfo",
            &[("app", "productpage"), ("version", "v1")],
        ),
    );
}

#[test]
fn demo_gateway_and_sidecar() {
    check(
        "demo",
        "ingressgateway.json",
        &proxy(
            ProxyKind::Router,
            "127.0.0.1",
            "istio-ingressgateway",
            "istio-system",
            &[("istio", "ingressgateway")],
        ),
    );
    check(
        "demo",
        "service-a-sidecar.json",
        &proxy(
            ProxyKind::Sidecar,
            "127.10.0.1",
            "service-a",
            "istioinaction",
            &[("app", "service-a"), ("version", "v1")],
        ),
    );
}

#[test]
fn captured_sidecar_with_http_tcp_and_sniffed_ports() {
    check(
        "captured",
        "web-sidecar.json",
        &captured(proxy(
            ProxyKind::Sidecar,
            "10.213.0.5",
            "web-1",
            "shop",
            &[("app", "web")],
        )),
    );
}

#[test]
fn mutual_tls_peer_authentication_and_destination_rule_tls() {
    let web = proxy(
        ProxyKind::Sidecar,
        "10.213.0.5",
        "web-1",
        "shop",
        &[("app", "web")],
    );
    check_mesh(
        "mtls",
        "web-sidecar-captured.json",
        &captured(web.clone()),
        true,
    );
    check_mesh("mtls", "web-sidecar-loopback.json", &web, true);
}
