//! Starting a real Envoy. Skipped when Envoy is not installed.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mizzen_testkit::envoy::{self, EnvoyOptions, skip_without_envoy};
use mizzen_testkit::free_port;
use serde_json::json;

/// Options for an Envoy whose xDS server does not exist: the admin
/// interface still comes up, which is all these tests need.
fn options_without_xds() -> EnvoyOptions {
    EnvoyOptions {
        xds_address: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
        node_id: "sidecar~127.0.0.1~launcher-test.default~default.svc.cluster.local".into(),
        node_cluster: "launcher-test.default".into(),
        log_level: "warning".into(),
        ..EnvoyOptions::default()
    }
}

async fn admin_closed(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// True once the process is gone or a zombie waiting to be reaped: either
/// way it no longer runs.
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn admin_answers_and_drop_kills_envoy() {
    let Some(_) = skip_without_envoy() else {
        return;
    };
    let opts = options_without_xds();
    let node_id = opts.node_id.clone();
    let envoy = envoy::start(opts).await.unwrap();
    let admin = envoy.admin_address();
    assert_ne!(admin.port(), 0, "port 0 must be resolved to the real port");

    let (status, body) = envoy.admin_get("/server_info").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{info}"
    );
    assert_eq!(info["command_line_options"]["concurrency"], 1);
    // With no xDS server, Envoy waits for its first LDS/CDS answer.
    assert_ne!(info["state"], "LIVE", "{info}");

    let dump = envoy.config_dump().await.unwrap();
    let bootstrap = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|config| {
            config["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("BootstrapConfigDump"))
        })
        .expect("config dump has the bootstrap");
    assert_eq!(bootstrap["bootstrap"]["node"]["id"], node_id.as_str());

    let stats = envoy.stats().await.unwrap();
    assert!(stats.contains("cluster.xds-grpc."), "no xds-grpc stats");

    let pid = envoy.pid().unwrap();
    drop(envoy);
    assert!(
        admin_closed(admin, Duration::from_secs(10)).await,
        "admin port still open after drop"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_ended(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(process_ended(pid), "Envoy {pid} still runs after drop");
}

#[tokio::test]
async fn envoy_opens_an_http2_stream_to_the_xds_server() {
    use tokio::io::AsyncReadExt as _;

    let Some(_) = skip_without_envoy() else {
        return;
    };
    let xds = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let opts = EnvoyOptions {
        xds_address: xds.local_addr().unwrap(),
        ..options_without_xds()
    };
    let envoy = envoy::start(opts).await.unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), xds.accept())
        .await
        .expect("Envoy did not connect to the xDS address")
        .unwrap();
    // gRPC over HTTP/2 with prior knowledge starts with the client preface.
    let mut preface = [0u8; 24];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut preface))
        .await
        .expect("Envoy sent nothing")
        .unwrap();
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    envoy.stop().await.unwrap();
}

#[tokio::test]
async fn wait_ready_reports_what_it_saw() {
    let Some(_) = skip_without_envoy() else {
        return;
    };
    let mut envoy = envoy::start(options_without_xds()).await.unwrap();
    let err = envoy
        .wait_ready(Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not ready"), "{err}");
    assert!(err.contains("/ready: 503"), "{err}");
    envoy.stop().await.unwrap();
}

#[tokio::test]
async fn static_bootstrap_becomes_ready_and_stops_cleanly() {
    let Some(_) = skip_without_envoy() else {
        return;
    };
    let opts = options_without_xds();
    // No dynamic resources: nothing to wait for, so Envoy is live at once.
    let mut bootstrap = opts.bootstrap();
    let fields = bootstrap.as_object_mut().unwrap();
    fields.remove("dynamic_resources");
    fields.insert("static_resources".into(), json!({}));
    let mut envoy = envoy::start_with_bootstrap(opts, bootstrap).await.unwrap();
    envoy.wait_ready(Duration::from_secs(20)).await.unwrap();
    let admin = envoy.admin_address();
    envoy.stop().await.unwrap();
    assert!(admin_closed(admin, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn bad_bootstrap_fails_with_the_log() {
    let Some(_) = skip_without_envoy() else {
        return;
    };
    let opts = options_without_xds();
    let mut bootstrap = opts.bootstrap();
    bootstrap["static_resources"]["clusters"][0]["type"] = json!("NOT_A_TYPE");
    let err = envoy::start_with_bootstrap(opts, bootstrap)
        .await
        .map(|_| ())
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("Envoy exited"), "{message}");
    assert!(message.contains("NOT_A_TYPE"), "{message}");
}
