//! Traffic capture.
//!
//! 1. `istio_goldens`: for each of Istio's capture scenarios
//!    (`tools/istio-iptables/pkg/capture/testdata/*.golden` in the shared
//!    data), the same options given to `mizzen_proxy::capture::rules` must
//!    have the same effect: per IP version and table, the same chains, and
//!    the same rules in each chain in the same order (rules compared
//!    clause by clause, so flag order and spelling may differ).
//! 2. `captured_pod`: as root, a pod in a network namespace with the
//!    capture rules installed by `mizzen-proxy capture`, its sidecar
//!    (`mizzen-proxy proxy sidecar` run as uid/gid 1337) fed by an ADS
//!    server in this test; an app's outbound connections must go through the
//!    sidecar, and inbound connections must reach the app from 127.0.0.6.
//!    The ADS server and the "outside world" servers run in this process in
//!    the host namespace, reached over a veth pair; the pod's processes (the
//!    proxy, and this test binary re-run as the app: see `netns_helper`) are
//!    started with `ip netns exec`, so no thread has to enter a namespace.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mizzen_proxy::capture::effect::{Effect, parse_blocks, split_families};
use mizzen_proxy::capture::{self, CaptureConfig, Family, Selection, parse_cidr};
use support::*;

// ---------------------------------------------------------------------------
// Istio's goldens
// ---------------------------------------------------------------------------

/// Istio's test base (`constructTestConfig` in Istio's capture tests):
/// ports 15001/15006/15008, uid and gid 1337, all owner groups, no inbound
/// ports, no outbound CIDRs.
fn istio_test_base() -> CaptureConfig {
    CaptureConfig {
        inbound_ports: Selection::none(),
        inbound_ports_exclude: Vec::new(),
        outbound_cidrs: Selection::none(),
        ..CaptureConfig::default()
    }
}

fn cidrs(list: &[&str]) -> Vec<capture::Cidr> {
    list.iter().map(|c| parse_cidr(c).unwrap()).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

type Options = fn(&mut CaptureConfig);

/// Scenario name → the options Istio's capture test sets for it (on top of
/// [`istio_test_base`]), or why it is skipped.
///
/// | golden | options |
/// |---|---|
/// | empty | (base) |
/// | ipv6-empty-inbound-ports | inbound ports "", IPv6 |
/// | ip-range | -x 1.1.0.0/16, -i 9.9.0.0/16, DNS to 127.0.0.53, -g 1,2, -u 3,4 |
/// | ipv6-inbound-ports | -b 4000,5000, IPv6 |
/// | ipv6-virt-interfaces | -b 4000,5000, -k eth0,eth1, IPv6 |
/// | ipv6-ipnets | -b 4000,5000, -d 6000,7000, -k eth0,eth1, -x/-i 2001:db8::/32, IPv6 |
/// | ipv6-uid-gid | as ipv6-ipnets, -g 1,2, -u 3,4 |
/// | ipv6-outbound-ports | -q 32000,31000, IPv6 |
/// | kube-virt-interfaces | -k eth1,eth2, -i * |
/// | ipnets | -i 10.0.0.0/8 |
/// | ipnets-with-kube-virt-interfaces | -k eth1,eth2, -i 10.0.0.0/8 |
/// | inbound-ports-include | -b 32000,31000 |
/// | inbound-ports-wildcard | -b * |
/// | dns-uid-gid | DNS to 127.0.0.53 and ::127.0.0.53, -g 1,2, -u 3,4, IPv6 |
/// | ipv6-dns-uid-gid | DNS without servers (so none), -g 1,2, -u 3,4, IPv6 |
/// | outbound-owner-groups | owner groups java,202 |
/// | outbound-owner-groups-exclude | owner groups * except 888,ftp |
/// | ipv6-dns-outbound-owner-groups | IPv6, DNS without servers, owner groups java,202 |
/// | ipv6-dns-outbound-owner-groups-exclude | IPv6, DNS without servers, except 888,ftp |
/// | outbound-ports-include | -q 32000,31000 |
/// | loopback-outbound-iprange | -i 127.1.2.3/32, DNS to 127.0.0.53, -g 1,2, -u 3,4 |
/// | basic-exclude-nic | -c not-istio-nic |
/// | drop-invalid | --drop-invalid |
/// | host-ipv4-loopback-cidr | loopback CIDR 127.0.0.1/8 |
/// | tproxy, inbound-ports-tproxy, inbound-ports-wildcard-tproxy | skipped: TPROXY |
/// | logging | skipped: iptables trace logging (no golden shipped) |
const SCENARIOS: &[(&str, Result<Options, &str>)] = &[
    ("empty", Ok(|_| {})),
    (
        "ipv6-empty-inbound-ports",
        Ok(|c| {
            c.inbound_ports = Selection::none();
            c.enable_ipv6 = true;
        }),
    ),
    (
        "ip-range",
        Ok(|c| {
            c.outbound_cidrs_exclude = cidrs(&["1.1.0.0/16"]);
            c.outbound_cidrs = Selection::Only(cidrs(&["9.9.0.0/16"]));
            c.redirect_dns = true;
            c.proxy_gids = strings(&["1", "2"]);
            c.proxy_uids = strings(&["3", "4"]);
            c.dns_servers_v4 = vec![Ipv4Addr::new(127, 0, 0, 53)];
        }),
    ),
    (
        "ipv6-inbound-ports",
        Ok(|c| {
            c.inbound_ports = Selection::Only(strings(&["4000", "5000"]));
            c.enable_ipv6 = true;
        }),
    ),
    (
        "ipv6-virt-interfaces",
        Ok(|c| {
            c.inbound_ports = Selection::Only(strings(&["4000", "5000"]));
            c.kube_virt_interfaces = strings(&["eth0", "eth1"]);
            c.enable_ipv6 = true;
        }),
    ),
    (
        "ipv6-ipnets",
        Ok(|c| {
            c.inbound_ports = Selection::Only(strings(&["4000", "5000"]));
            c.inbound_ports_exclude = capture::split_list("6000,7000,");
            c.kube_virt_interfaces = strings(&["eth0", "eth1"]);
            c.outbound_cidrs_exclude = cidrs(&["2001:db8::/32"]);
            c.outbound_cidrs = Selection::Only(cidrs(&["2001:db8::/32"]));
            c.enable_ipv6 = true;
        }),
    ),
    (
        "ipv6-uid-gid",
        Ok(|c| {
            c.inbound_ports = Selection::Only(strings(&["4000", "5000"]));
            c.inbound_ports_exclude = strings(&["6000", "7000"]);
            c.kube_virt_interfaces = strings(&["eth0", "eth1"]);
            c.proxy_gids = strings(&["1", "2"]);
            c.proxy_uids = strings(&["3", "4"]);
            c.enable_ipv6 = true;
            c.outbound_cidrs_exclude = cidrs(&["2001:db8::/32"]);
            c.outbound_cidrs = Selection::Only(cidrs(&["2001:db8::/32"]));
        }),
    ),
    (
        "ipv6-outbound-ports",
        Ok(|c| {
            c.inbound_ports = Selection::none();
            c.outbound_ports_include = strings(&["32000", "31000"]);
            c.enable_ipv6 = true;
        }),
    ),
    (
        "kube-virt-interfaces",
        Ok(|c| {
            c.kube_virt_interfaces = strings(&["eth1", "eth2"]);
            c.outbound_cidrs = Selection::All;
        }),
    ),
    (
        "ipnets",
        Ok(|c| c.outbound_cidrs = Selection::Only(cidrs(&["10.0.0.0/8"]))),
    ),
    (
        "ipnets-with-kube-virt-interfaces",
        Ok(|c| {
            c.kube_virt_interfaces = strings(&["eth1", "eth2"]);
            c.outbound_cidrs = Selection::Only(cidrs(&["10.0.0.0/8"]));
        }),
    ),
    (
        "inbound-ports-include",
        Ok(|c| c.inbound_ports = Selection::Only(strings(&["32000", "31000"]))),
    ),
    (
        "inbound-ports-wildcard",
        Ok(|c| c.inbound_ports = Selection::All),
    ),
    (
        "dns-uid-gid",
        Ok(|c| {
            c.redirect_dns = true;
            c.dns_servers_v4 = vec![Ipv4Addr::new(127, 0, 0, 53)];
            c.dns_servers_v6 = vec!["::127.0.0.53".parse::<Ipv6Addr>().unwrap()];
            c.proxy_gids = strings(&["1", "2"]);
            c.proxy_uids = strings(&["3", "4"]);
            c.enable_ipv6 = true;
        }),
    ),
    (
        "ipv6-dns-uid-gid",
        Ok(|c| {
            c.enable_ipv6 = true;
            c.redirect_dns = true;
            c.proxy_gids = strings(&["1", "2"]);
            c.proxy_uids = strings(&["3", "4"]);
        }),
    ),
    (
        "outbound-owner-groups",
        Ok(|c| c.owner_groups = Selection::Only(strings(&["java", "202"]))),
    ),
    (
        "outbound-owner-groups-exclude",
        Ok(|c| c.owner_groups_exclude = strings(&["888", "ftp"])),
    ),
    (
        "ipv6-dns-outbound-owner-groups",
        Ok(|c| {
            c.enable_ipv6 = true;
            c.redirect_dns = true;
            c.owner_groups = Selection::Only(strings(&["java", "202"]));
        }),
    ),
    (
        "ipv6-dns-outbound-owner-groups-exclude",
        Ok(|c| {
            c.enable_ipv6 = true;
            c.redirect_dns = true;
            c.owner_groups_exclude = strings(&["888", "ftp"]);
        }),
    ),
    (
        "outbound-ports-include",
        Ok(|c| c.outbound_ports_include = strings(&["32000", "31000"])),
    ),
    (
        "loopback-outbound-iprange",
        Ok(|c| {
            c.outbound_cidrs = Selection::Only(cidrs(&["127.1.2.3/32"]));
            c.redirect_dns = true;
            c.dns_servers_v4 = vec![Ipv4Addr::new(127, 0, 0, 53)];
            c.proxy_gids = strings(&["1", "2"]);
            c.proxy_uids = strings(&["3", "4"]);
        }),
    ),
    (
        "basic-exclude-nic",
        Ok(|c| c.exclude_interfaces = strings(&["not-istio-nic"])),
    ),
    ("drop-invalid", Ok(|c| c.drop_invalid = true)),
    (
        "host-ipv4-loopback-cidr",
        Ok(|c| c.ipv4_loopback_cidr = parse_cidr("127.0.0.1/8").unwrap()),
    ),
    (
        "tproxy",
        Err("TPROXY inbound interception is not supported (REDIRECT only)"),
    ),
    (
        "inbound-ports-tproxy",
        Err("TPROXY inbound interception is not supported (REDIRECT only)"),
    ),
    (
        "inbound-ports-wildcard-tproxy",
        Err("TPROXY inbound interception is not supported (REDIRECT only)"),
    ),
    (
        "logging",
        Err("iptables trace logging (TRACE rules) is not supported"),
    ),
];

#[test]
fn istio_goldens() {
    let Some(shared) = mizzen_testkit::skip_without_shared() else {
        return;
    };
    let dir = shared.join("conformance/istio-data/tools/istio-iptables/pkg/capture/testdata");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".golden"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    let mut passed = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let Some((_, options)) = SCENARIOS.iter().find(|(n, _)| n == name) else {
            eprintln!("SKIP: {name}: no option mapping for this scenario yet");
            continue;
        };
        let options = match options {
            Ok(o) => o,
            Err(why) => {
                eprintln!("SKIP: {name}: {why}");
                continue;
            }
        };
        let mut cfg = istio_test_base();
        options(&mut cfg);
        let golden = std::fs::read_to_string(dir.join(format!("{name}.golden"))).unwrap();
        let (want_v4, want_v6) = split_families(parse_blocks(&golden));
        let ours = capture::rules(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut diffs = Effect::of(&ours.blocks(Family::V4)).diff(&Effect::of(&want_v4));
        diffs.extend(
            Effect::of(&ours.blocks(Family::V6))
                .diff(&Effect::of(&want_v6))
                .into_iter()
                .map(|d| format!("IPv6 {d}")),
        );
        if diffs.is_empty() {
            passed.push(name.clone());
        } else {
            failures.push(format!(
                "{name} (ours left, Istio's right):\n{}",
                diffs.join("\n")
            ));
        }
    }
    eprintln!(
        "capture goldens with the same effect: {}",
        passed.join(", ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        passed.len() >= 20,
        "only {} scenarios compared: {passed:?}",
        passed.len()
    );
}

// ---------------------------------------------------------------------------
// A captured pod (root)
// ---------------------------------------------------------------------------

const HELPER_ENV: &str = "MIZZEN_NETNS_HELPER";

/// Not a test of its own: the pod's app when this binary is re-run inside
/// the namespace with `MIZZEN_NETNS_HELPER` set (`serve:ADDR` runs an echo
/// server that first says who connected; `connect:ADDR:MSG` sends MSG and
/// prints the answer). Without the variable it does nothing.
#[test]
fn netns_helper() {
    let Ok(task) = std::env::var(HELPER_ENV) else {
        return;
    };
    if let Some(addr) = task.strip_prefix("serve:") {
        let listener = TcpListener::bind(addr).expect("app cannot bind");
        println!("READY");
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                let _ = stream.write_all(format!("app saw {peer}:").as_bytes());
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    } else if let Some(rest) = task.strip_prefix("connect:") {
        let (addr, msg) = rest.rsplit_once('|').expect("connect:ADDR|MSG");
        let result = (|| -> std::io::Result<String> {
            let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(msg.as_bytes())?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match result {
            Ok(out) => println!("RESULT:{out}"),
            Err(e) => println!("RESULT-ERROR:{e}"),
        }
    }
}

fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn have(program: &str) -> bool {
    ["", "/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"]
        .iter()
        .any(|dir| {
            Command::new(format!("{dir}{program}"))
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespace, its veth pair and the processes in it; all removed on
/// drop, also when the test fails.
struct Pod {
    ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
    children: Vec<(String, Child, PathBuf)>,
}

impl Pod {
    fn create() -> Result<Pod, String> {
        let id = std::process::id() % 10_000 * 100 + u32::from(rand_byte()) % 100;
        let subnet = rand_byte();
        let pod = Pod {
            ns: format!("mzcap{id}"),
            host_if: format!("mzh{id}"),
            host_ip: Ipv4Addr::new(10, 248, subnet, 1),
            pod_ip: Ipv4Addr::new(10, 248, subnet, 2),
            children: Vec::new(),
        };
        let pod_if = format!("mzp{}", &pod.host_if[3..]);
        let host_cidr = format!("{}/30", pod.host_ip);
        let pod_cidr = format!("{}/30", pod.pod_ip);
        let host_ip = pod.host_ip.to_string();
        run(&["ip", "netns", "add", &pod.ns])?;
        let ns = pod.ns.as_str();
        for cmd in [
            vec![
                "ip",
                "link",
                "add",
                &pod.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &pod_if,
            ],
            vec!["ip", "link", "set", &pod_if, "netns", ns],
            vec!["ip", "addr", "add", &host_cidr, "dev", &pod.host_if],
            vec!["ip", "link", "set", &pod.host_if, "up"],
            vec!["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
            vec![
                "ip", "netns", "exec", ns, "ip", "addr", "add", &pod_cidr, "dev", &pod_if,
            ],
            vec![
                "ip", "netns", "exec", ns, "ip", "link", "set", &pod_if, "up",
            ],
            vec![
                "ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", &host_ip,
            ],
        ] {
            run(&cmd)?;
        }
        Ok(pod)
    }

    /// Runs `args` in the namespace to completion.
    fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Starts `args` in the namespace, output to a log file.
    fn spawn(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
        let log = std::env::temp_dir().join(format!("{}-{name}.log", self.ns));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        self.children.push((name.to_string(), child, log));
        Ok(())
    }

    fn log(&self, name: &str) -> String {
        self.children
            .iter()
            .find(|(n, _, _)| n == name)
            .and_then(|(_, _, p)| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    fn stop(&mut self, name: &str) {
        if let Some((_, child, _)) = self.children.iter_mut().find(|(n, _, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for (name, child, log) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {name} ({}) ---", log.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
            let _ = std::fs::remove_file(&*log);
        }
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

fn rand_byte() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos / 1000 % 251) as u8 + 2
}

fn proxy_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mizzen-proxy"))
}

/// Runs this test binary in the pod (namespace `ns`) as the app client.
fn app_connect(ns: &str, to: SocketAddr, msg: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let task = format!("connect:{to}|{msg}");
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&exe)
        .args(["--exact", "netns_helper", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, &task)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        // The test harness may print its own text on the same line.
        .find_map(|l| l.split_once("RESULT:").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("app client in the pod failed: {stdout}"))
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_pod() {
    if euid() != Some(0) {
        eprintln!("SKIP: needs root");
        return;
    }
    for tool in ["ip", "iptables-restore", "iptables-save", "setpriv"] {
        if !have(tool) {
            eprintln!("SKIP: {tool} not found");
            return;
        }
    }
    let mut pod = match Pod::create() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIP: cannot create a network namespace: {e}");
            return;
        }
    };
    let host = IpAddr::V4(pod.host_ip);
    let pod_ip = pod.pod_ip;

    // The outside world, in the host namespace.
    let service = echo_server((host, 0).into(), "service").await;
    let direct = echo_server((host, 0).into(), "direct").await;
    let vip: SocketAddr = "10.96.0.10:9000".parse().unwrap();
    let app_port = 8080;
    let resources = Resources {
        clusters: vec![
            passthrough_cluster(),
            inbound_passthrough_cluster(),
            blackhole_cluster(),
            static_cluster(
                "outbound|9000||service.test.svc.cluster.local",
                &[service.addr],
                None,
            ),
            static_cluster(
                &format!("inbound|{app_port}||"),
                &[(pod_ip, app_port).into()],
                Some("127.0.0.6"),
            ),
        ],
        listeners: vec![
            virtual_outbound("0.0.0.0:15001".parse().unwrap(), true),
            virtual_inbound(
                "0.0.0.0:15006".parse().unwrap(),
                vec![inbound_tcp_chain(app_port)],
            ),
            outbound_tcp_listener(vip, "outbound|9000||service.test.svc.cluster.local"),
        ],
        routes: vec![],
    };
    let ads = start_ads((host, 0).into(), resources).await;

    // Capture: inbound port 8080 only, so the admin port stays reachable.
    let bin = proxy_binary().to_str().unwrap();
    pod.exec(&[bin, "capture", "-b", &app_port.to_string()])
        .expect("capture rules");
    let nat = pod.exec(&["iptables-save", "-t", "nat"]).unwrap();
    assert!(
        nat.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{nat}"
    );

    // The app, as root (captured), and its sidecar as 1337 (not captured).
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let serve = format!("serve:0.0.0.0:{app_port}");
    pod.spawn(
        "app",
        &[
            exe,
            "--exact",
            "netns_helper",
            "--nocapture",
            "--test-threads=1",
        ],
        &[(HELPER_ENV, serve.as_str())],
    )
    .unwrap();
    let xds = format!("http://{}", ads.addr);
    let admin: SocketAddr = (pod_ip, 15000).into();
    let admin_arg = admin.to_string();
    let pod_ip_arg = pod_ip.to_string();
    pod.spawn(
        "proxy",
        &[
            "setpriv",
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            bin,
            "proxy",
            "sidecar",
            "--xds-address",
            &xds,
            "--admin-address",
            &admin_arg,
            "--instance-ip",
            &pod_ip_arg,
            "--drain-timeout",
            "1s",
        ],
        &[],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = tokio::task::spawn_blocking(move || http_get(admin, "/ready"))
            .await
            .unwrap();
        if ready.is_some_and(|r| r.contains("LIVE")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sidecar not ready:\n{}",
            pod.log("proxy")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pod.log("app").contains("READY") || {
            tokio::time::sleep(Duration::from_millis(500)).await;
            pod.log("app").contains("READY")
        }
    );

    // Outbound to a service VIP: captured to 15001, handed off to the VIP's
    // listener, sent to the service from the pod's address.
    let ns = pod.ns.clone();
    let got = tokio::task::spawn_blocking(move || app_connect(&ns, vip, "to-vip"))
        .await
        .unwrap();
    assert_eq!(got, format!("service saw {pod_ip}:to-vip"));

    // Outbound to an address without a listener: PassthroughCluster.
    let direct_addr = direct.addr;
    let ns = pod.ns.clone();
    let got = tokio::task::spawn_blocking(move || app_connect(&ns, direct_addr, "direct"))
        .await
        .unwrap();
    assert_eq!(got, format!("direct saw {pod_ip}:direct"));

    // Inbound to the app's port: captured to 15006, sent to the app from
    // 127.0.0.6 (without capture the app would see the host's address).
    let got = send_line((pod_ip, app_port).into(), b"inbound\r\n").await;
    assert_eq!(got, "app saw 127.0.0.6:inbound\r\n");

    let stats = tokio::task::spawn_blocking(move || http_get(admin, "/stats"))
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(
        stat(&stats, "listener.0.0.0.0_15001.downstream_cx_total"),
        1,
        "{stats}"
    );
    assert_eq!(
        stat(&stats, "listener.10.96.0.10_9000.downstream_cx_total"),
        1
    );
    assert_eq!(
        stat(&stats, "cluster.PassthroughCluster.upstream_cx_total"),
        1
    );
    assert_eq!(
        stat(&stats, "listener.0.0.0.0_15006.downstream_cx_total"),
        1
    );
    assert_eq!(
        stat(
            &stats,
            &format!("tcp.inbound|{app_port}||.downstream_cx_total")
        ),
        1
    );

    // Cleanup removes every rule and chain.
    pod.stop("proxy");
    pod.exec(&[bin, "capture", "--cleanup", "-b", &app_port.to_string()])
        .expect("capture cleanup");
    let nat = pod.exec(&["iptables-save", "-t", "nat"]).unwrap();
    assert!(!nat.contains("ISTIO"), "{nat}");
}
