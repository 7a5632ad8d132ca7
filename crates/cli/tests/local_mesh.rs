//! End to end in one process: the pilot, mizzen-proxy sidecars and gateway,
//! and the demo apps on private loopback addresses. Changing a VirtualService
//! file shifts the traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mizzen_cli::local::{LocalMesh, LocalOptions};
use mizzen_testkit::free_loopback_ip;

/// Writes the demo config with fresh loopback addresses, so that this test
/// never meets a running demo or another test. Returns the gateway address.
fn write_config(dir: &Path) -> std::net::Ipv4Addr {
    let gateway = free_loopback_ip();
    for (name, text) in mizzen_cli::demo::CONFIG_FILES {
        let mut text = text.to_string();
        if name == "workloads.yaml" {
            for original in ["127.10.0.1", "127.10.0.2", "127.10.0.3", "127.10.0.4"] {
                text = text.replace(original, &free_loopback_ip().to_string());
            }
            text = text.replace("127.0.0.1", &gateway.to_string());
        }
        std::fs::write(dir.join(name), text).unwrap();
    }
    // The gateway's HTTPS certificate, as `mizzen demo` writes it.
    mizzen_cli::edge_certs::write(
        &dir.join(".edge-ca"),
        dir,
        "istio-system",
        mizzen_cli::demo::EDGE_SECRET,
        &[mizzen_cli::demo::EDGE_HOST],
    )
    .unwrap();
    gateway
}

async fn status_codes(gateway: SocketAddr, count: usize) -> BTreeMap<u16, usize> {
    let mut codes = BTreeMap::new();
    for _ in 0..count {
        let (status, _, _) =
            mizzen_testkit::http_get(&gateway.to_string(), "example.com", "/", &[])
                .await
                .expect("request through the gateway");
        *codes.entry(status.as_u16()).or_default() += 1;
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_change_shifts_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let gateway_ip = write_config(dir.path());
    let mesh = LocalMesh::start(LocalOptions {
        config_dir: dir.path().to_path_buf(),
        xds_address: "127.0.0.1:0".parse().unwrap(),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        apps: mizzen_cli::demo::apps().unwrap(),
        ..LocalOptions::new(dir.path())
    })
    .await
    .unwrap();
    let gateway = SocketAddr::from((gateway_ip, 8080));

    // service-c v2 fails half of its requests and gets half of service-c's
    // traffic: about one request in four fails. P(no 500 in 60) ≈ 3e-8.
    let before = status_codes(gateway, 60).await;
    assert!(
        before.get(&500).copied().unwrap_or(0) > 0,
        "expected some 500s: {before:?}"
    );
    assert!(
        before.get(&200).copied().unwrap_or(0) > 0,
        "expected some 200s: {before:?}"
    );
    assert_eq!(
        before.keys().filter(|c| **c != 200 && **c != 500).count(),
        0,
        "{before:?}"
    );

    // The walkthrough's fix: all of service-c's traffic to v1.
    std::fs::write(
        dir.path().join("service-c-route.yaml"),
        mizzen_cli::demo::EXAMPLE_FILES[0].1,
    )
    .unwrap();
    let written = Instant::now();
    // The shift happened when the streak of successes that follows began.
    let mut streak_start = Instant::now();
    let mut consecutive_ok = 0;
    while consecutive_ok < 40 {
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "traffic never shifted to v1"
        );
        let codes = status_codes(gateway, 1).await;
        if codes.contains_key(&200) {
            if consecutive_ok == 0 {
                streak_start = Instant::now();
            }
            consecutive_ok += 1;
        } else {
            consecutive_ok = 0;
        }
    }
    let shift = streak_start.duration_since(written);
    assert!(
        shift < Duration::from_secs(2),
        "traffic shifted {shift:?} after the change, not within 2 s"
    );
    let after = status_codes(gateway, 60).await;
    assert_eq!(after, BTreeMap::from([(200, 60)]), "after the shift");

    // Every proxy acknowledged every type it was sent.
    let syncz = mesh.pilot.state().sync.to_json();
    for proxy in syncz.as_array().unwrap() {
        for (short, state) in proxy["types"].as_object().unwrap() {
            assert_eq!(
                state["state"], "SYNCED",
                "{} {short}: {state}",
                proxy["proxy"]
            );
        }
    }
    mesh.stop().await;
}

/// Whether a plaintext request straight to a sidecar's inbound listener gets
/// an HTTP answer (PERMISSIVE) or is refused (STRICT).
async fn plaintext_answered(sidecar: SocketAddr) -> bool {
    mizzen_testkit::http_get(&sidecar.to_string(), "service-a", "/", &[])
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_loopback_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let gateway_ip = write_config(&config);
    let gateway = SocketAddr::from((gateway_ip, 8080));
    let mesh = LocalMesh::start(LocalOptions {
        apps: mizzen_cli::demo::apps().unwrap(),
        ca_dir: Some(dir.path().join("ca")),
        ..LocalOptions::new(&config)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let service_a = mizzen_cli::local::workloads(&config)
        .unwrap()
        .into_iter()
        .find(|w| w.name == "service-a")
        .unwrap();
    let sidecar_a = SocketAddr::new(service_a.address, 8080);

    // The whole call chain works over mutual TLS: gateway → a → b, c.
    let codes = status_codes(gateway, 20).await;
    assert_eq!(
        codes.keys().filter(|c| **c != 200 && **c != 500).count(),
        0,
        "{codes:?}"
    );
    // HTTPS at the gateway with the demo CA's certificate for
    // istioinaction.io, delivered to the gateway as a Secret over ADS.
    let ca = config.join(".edge-ca/ca.crt");
    let resolve = format!("istioinaction.io:8443:{gateway_ip}");
    let mut https = String::new();
    for _ in 0..50 {
        let output = std::process::Command::new("curl")
            .args(["-sS", "-m", "5", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &resolve, "https://istioinaction.io:8443/"])
            .output();
        let Ok(output) = output else {
            https = "SKIP: curl is not installed".into();
            break;
        };
        https = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        if https.contains("\"service-a\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        https.contains("\"service-a\"") || https.starts_with("SKIP"),
        "HTTPS through the gateway: {https}"
    );
    // Each proxy holds a SPIFFE certificate from the pilot's CA.
    let (_, _, certs) = mizzen_testkit::http_get(
        &SocketAddr::new(service_a.address, 15000).to_string(),
        "admin",
        "/certs",
        &[],
    )
    .await
    .unwrap();
    let certs = String::from_utf8_lossy(&certs);
    assert!(
        certs.contains("spiffe://cluster.local/ns/istioinaction/sa/service-a"),
        "{certs}"
    );
    // PERMISSIVE by default: plaintext from outside the mesh is accepted.
    assert!(plaintext_answered(sidecar_a).await);

    std::fs::write(
        config.join("strict.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while plaintext_answered(sidecar_a).await {
        assert!(Instant::now() < deadline, "STRICT never refused plaintext");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Mesh traffic is unaffected.
    let codes = status_codes(gateway, 20).await;
    assert!(codes.get(&200).copied().unwrap_or(0) > 0, "{codes:?}");
    assert_eq!(
        codes.keys().filter(|c| **c != 200 && **c != 500).count(),
        0,
        "{codes:?}"
    );
    let syncz = mesh.pilot.state().sync.to_json();
    for proxy in syncz.as_array().unwrap() {
        for (short, state) in proxy["types"].as_object().unwrap() {
            assert_eq!(
                state["state"], "SYNCED",
                "{} {short}: {state}",
                proxy["proxy"]
            );
        }
    }
    mesh.stop().await;
}
