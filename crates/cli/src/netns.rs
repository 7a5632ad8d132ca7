//! Pods as Linux network namespaces: a namespace per pod with a veth pair on
//! a bridge of Mizzen's own, `lo` up, a per-pod `/etc/hosts` (which
//! `ip netns exec` mounts over the real one) and processes started inside
//! under their own uid. Everything created is recorded so that a later run
//! removes what a crashed one left — and only that.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// A pod network: a bridge and a private range with no route to the host's
/// other networks (the host does not forward for it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub bridge: String,
    pub cidr: (Ipv4Addr, u8),
    /// The host's address on the bridge: pods reach the pilot there.
    pub host_address: Ipv4Addr,
    /// Prefix of the network namespaces, so runs never meet.
    pub netns_prefix: String,
}

impl Default for NetworkConfig {
    /// The demo's network.
    fn default() -> Self {
        NetworkConfig {
            bridge: "mizzen0".to_string(),
            cidr: (Ipv4Addr::new(10, 213, 0, 0), 16),
            host_address: Ipv4Addr::new(10, 213, 0, 1),
            netns_prefix: "mzn-".to_string(),
        }
    }
}

impl NetworkConfig {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (base, bits) = self.cidr;
        let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(base) & mask
    }
}
const OWNERS_DIR: &str = "/run/mizzen/owners";
/// Per-pod credentials (`POD_SECRETS_DIR/<netns>/`), removed with the
/// pod's namespace so that a failed or crashed run leaves no tokens behind.
pub const POD_SECRETS_DIR: &str = "/run/mizzen/secrets";

/// Whether this process may create namespaces (runs as root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// What one run created, on disk so that a later run can clean up after a
/// crash.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Owned {
    pid: u32,
    namespaces: Vec<String>,
    /// The bridge this run created.
    bridge: Option<String>,
}

/// One record per network: a process may run several (tests do), and
/// each must find only its own.
fn owners_file(pid: u32, bridge: &str) -> PathBuf {
    Path::new(OWNERS_DIR).join(format!("{pid}-{bridge}.json"))
}

/// The pod network of this process.
pub struct PodNetwork {
    config: NetworkConfig,
    owned: Owned,
    pods: BTreeMap<String, Pod>,
}

/// A process to start in a pod, as `uid`, logging to `log`.
pub struct Process<'a> {
    pub label: &'a str,
    pub uid: u32,
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub log: &'a Path,
}

/// One pod: a network namespace and the processes in it.
pub struct Pod {
    pub netns: String,
    pub ip: Ipv4Addr,
    children: Vec<(String, Child)>,
}

fn veth_name(netns: &str) -> String {
    // Interface names are limited to 15 bytes: a stable hash keeps them unique.
    let hash = netns.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("mzv{hash:08x}")
}

impl PodNetwork {
    /// Removes what crashed runs left, then creates the bridge.
    pub fn create(config: NetworkConfig) -> anyhow::Result<PodNetwork> {
        if !is_root() {
            bail!("pods need root: network namespaces, veth pairs and iptables");
        }
        clean_leftovers();
        if run("ip", &["link", "show", &config.bridge]).is_ok() {
            bail!(
                "the bridge {} exists and belongs to another running mesh; stop it first (`ip link del {}` if nothing runs)",
                config.bridge,
                config.bridge
            );
        }
        let mut network = PodNetwork {
            owned: Owned {
                pid: std::process::id(),
                ..Default::default()
            },
            config,
            pods: BTreeMap::new(),
        };
        let bridge = network.config.bridge.clone();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        network.owned.bridge = Some(bridge.clone());
        network.save()?;
        let address = format!("{}/{}", network.config.host_address, network.config.cidr.1);
        run("ip", &["addr", "add", &address, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        Ok(network)
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(OWNERS_DIR).with_context(|| format!("creating {OWNERS_DIR}"))?;
        std::fs::write(
            owners_file(self.owned.pid, &self.config.bridge),
            serde_json::to_vec(&self.owned)?,
        )
        .context("recording created pods")?;
        Ok(())
    }

    /// Creates a pod's namespace, wired to the bridge, with its hosts file.
    pub fn add_pod(&mut self, key: &str, ip: Ipv4Addr, hosts: &str) -> anyhow::Result<()> {
        let netns = format!("{}{}", self.config.netns_prefix, key.replace('/', "-"));
        // Recorded before creation: a failure half way is cleaned up too.
        self.owned.namespaces.push(netns.clone());
        self.save()?;
        run("ip", &["netns", "add", &netns])?;
        let veth = veth_name(&netns);
        // The veth of a namespace of the same name lives on until the
        // kernel has freed that namespace (its last sockets can linger for
        // a minute after a quick restart); the name is ours, so remove it.
        if run("ip", &["link", "show", &veth]).is_ok() {
            let _ = run("ip", &["link", "del", &veth]);
        }
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        run(
            "ip",
            &["link", "set", &veth, "master", &self.config.bridge, "up"],
        )?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns.as_str()];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        exec(&["ip", "link", "set", "lo", "up"])?;
        exec(&[
            "ip",
            "addr",
            "add",
            &format!("{ip}/{}", self.config.cidr.1),
            "dev",
            "eth0",
        ])?;
        exec(&["ip", "link", "set", "eth0", "up"])?;
        exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &self.config.host_address.to_string(),
        ])?;
        // Apps run unprivileged but listen on ports such as 80, as in a pod.
        exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_unprivileged_port_start=0",
        ])?;
        let etc = Path::new("/etc/netns").join(&netns);
        std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
        std::fs::write(etc.join("hosts"), hosts).context("writing the pod's hosts file")?;
        // No nameserver: names resolve from the hosts file only.
        std::fs::write(etc.join("resolv.conf"), "options ndots:5\n")
            .context("writing the pod's resolv.conf")?;
        self.pods.insert(
            key.to_string(),
            Pod {
                netns,
                ip,
                children: Vec::new(),
            },
        );
        Ok(())
    }

    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.get(key)
    }

    pub fn pods(&self) -> impl Iterator<Item = (&String, &Pod)> {
        self.pods.iter()
    }

    /// Runs a command in a pod to completion (an init step).
    pub fn exec(&self, key: &str, args: &[&str]) -> anyhow::Result<String> {
        let pod = self
            .pods
            .get(key)
            .with_context(|| format!("no pod {key}"))?;
        let mut all = vec!["netns", "exec", pod.netns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Starts a long-running process in a pod.
    pub fn spawn(&mut self, key: &str, process: Process<'_>) -> anyhow::Result<()> {
        let Process {
            label,
            uid,
            program,
            args,
            env,
            log,
        } = process;
        let pod = self
            .pods
            .get_mut(key)
            .with_context(|| format!("no pod {key}"))?;
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &pod.netns, "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "--"])
            .arg(program)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {label} in pod {key}"))?;
        pod.children.push((label.to_string(), child));
        Ok(())
    }

    /// Stops every process and removes every namespace, veth and the bridge.
    pub fn destroy(mut self) {
        for pod in self.pods.values_mut() {
            stop_children(&mut pod.children);
        }
        for netns in &self.owned.namespaces {
            remove_netns(netns);
        }
        if let Some(bridge) = &self.owned.bridge {
            let _ = run("ip", &["link", "del", bridge]);
        }
        let _ = std::fs::remove_file(owners_file(self.owned.pid, &self.config.bridge));
        self.owned = Owned::default();
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // A failed start drops the network without destroy(): clean up anyway.
        if self.owned.pid != 0 {
            for pod in self.pods.values_mut() {
                stop_children(&mut pod.children);
            }
            for netns in &self.owned.namespaces {
                remove_netns(netns);
            }
            if let Some(bridge) = &self.owned.bridge {
                let _ = run("ip", &["link", "del", bridge]);
            }
            let _ = std::fs::remove_file(owners_file(self.owned.pid, &self.config.bridge));
        }
    }
}

fn stop_children(children: &mut Vec<(String, Child)>) {
    for (_, child) in children.iter_mut() {
        // `ip netns exec` execs setpriv which execs the program: the pid is
        // the program's own, so SIGTERM reaches it and it can drain.
        let _ = run("kill", &["-TERM", &child.id().to_string()]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for (_, child) in children.iter_mut() {
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}

fn remove_netns(netns: &str) {
    // Processes a crashed run left in the namespace go first.
    if let Ok(pids) = run("ip", &["netns", "pids", netns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    let _ = run("ip", &["netns", "del", netns]);
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(netns));
    let _ = std::fs::remove_dir_all(Path::new(POD_SECRETS_DIR).join(netns));
}

/// Removes what runs that no longer exist created.
fn clean_leftovers() {
    let Ok(entries) = std::fs::read_dir(OWNERS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(owned) = serde_json::from_str::<Owned>(&text) else {
            continue;
        };
        // A live process, this one included, still owns what it recorded.
        if Path::new(&format!("/proc/{}", owned.pid)).exists() {
            continue;
        }
        tracing::warn!(
            pid = owned.pid,
            "removing pods left by a run that ended without cleaning up"
        );
        for netns in &owned.namespaces {
            remove_netns(netns);
        }
        if let Some(bridge) = &owned.bridge {
            let _ = run("ip", &["link", "del", bridge]);
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// A pod's `/etc/hosts`: itself, every service by the names a pod in
/// `namespace` may use (short names only for its own namespace, as the
/// Kubernetes DNS search path gives), and `external` names (the hosts of
/// ServiceEntries) as they are, in every namespace.
pub fn hosts_file(
    pod_name: &str,
    pod_ip: Ipv4Addr,
    namespace: &str,
    services: &[(String, String, std::net::IpAddr)],
    external: &[(String, std::net::IpAddr)],
    domain_suffix: &str,
) -> String {
    let mut out = String::from("127.0.0.1 localhost\n::1 localhost\n");
    out.push_str(&format!("{pod_ip} {pod_name}\n"));
    for (name, service_namespace, address) in services {
        let mut names = Vec::new();
        if service_namespace == namespace {
            names.push(name.clone());
        }
        names.push(format!("{name}.{service_namespace}"));
        names.push(format!("{name}.{service_namespace}.svc"));
        names.push(format!("{name}.{service_namespace}.svc.{domain_suffix}"));
        out.push_str(&format!("{address} {}\n", names.join(" ")));
    }
    for (name, address) in external {
        out.push_str(&format!("{address} {name}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_give_short_names_only_in_the_own_namespace() {
        let services = vec![
            (
                "service-b".to_string(),
                "istioinaction".to_string(),
                "10.96.0.5".parse().unwrap(),
            ),
            (
                "other".to_string(),
                "default".to_string(),
                "10.96.0.6".parse().unwrap(),
            ),
        ];
        let hosts = hosts_file(
            "service-a",
            Ipv4Addr::new(10, 213, 0, 11),
            "istioinaction",
            &services,
            &[(
                "api.example.com".to_string(),
                "203.0.113.7".parse().unwrap(),
            )],
            "cluster.local",
        );
        assert!(hosts.contains("203.0.113.7 api.example.com\n"));
        assert!(hosts.contains(
            "10.96.0.5 service-b service-b.istioinaction service-b.istioinaction.svc service-b.istioinaction.svc.cluster.local\n"
        ));
        assert!(hosts.contains(
            "10.96.0.6 other.default other.default.svc other.default.svc.cluster.local\n"
        ));
        assert!(hosts.contains("10.213.0.11 service-a\n"));
    }

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let name = veth_name("mzn-istioinaction-a-very-long-workload-name");
        assert!(name.len() <= 15, "{name}");
        assert_ne!(veth_name("mzn-a"), veth_name("mzn-b"));
    }
}
