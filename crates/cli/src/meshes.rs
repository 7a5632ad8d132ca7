//! Running local meshes, recorded so that `mizzen apply` and friends find
//! the one that runs without being told where it is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct RunningMesh {
    pub pid: u32,
    pub config_dir: PathBuf,
    pub debug_address: SocketAddr,
    /// Pods by `namespace/name`, with their network namespace (pod runtime).
    #[serde(default)]
    pub pods: std::collections::BTreeMap<String, String>,
}

/// Mizzen's own directory: `$MIZZEN_HOME`, else `~/.mizzen`.
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("MIZZEN_HOME") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".mizzen")
}

fn run_dir() -> PathBuf {
    home().join("run")
}

pub fn register(
    config_dir: &Path,
    debug_address: SocketAddr,
    pods: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<PathBuf> {
    let dir = run_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mesh = RunningMesh {
        pid: std::process::id(),
        config_dir: config_dir
            .canonicalize()
            .unwrap_or_else(|_| config_dir.to_path_buf()),
        debug_address,
        pods,
    };
    let file = dir.join(format!("{}.json", mesh.pid));
    std::fs::write(&file, serde_json::to_vec_pretty(&mesh)?)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// The meshes whose process still runs; files of dead ones are removed.
pub fn running() -> Vec<RunningMesh> {
    let Ok(entries) = std::fs::read_dir(run_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match serde_json::from_str::<RunningMesh>(&text) {
            Ok(mesh) if Path::new(&format!("/proc/{}", mesh.pid)).exists() => out.push(mesh),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}

/// The config directory to change: the one given, else that of the only
/// running mesh.
pub fn config_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    let mut meshes = running();
    match meshes.len() {
        0 => bail!("no local mesh is running; start one with `mizzen demo` or pass --config-dir"),
        1 => Ok(meshes.remove(0).config_dir),
        n => bail!(
            "{n} local meshes are running ({}); choose one with --config-dir",
            meshes
                .iter()
                .map(|m| m.config_dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The only running mesh, or an error saying why there is none to pick.
pub fn the_running_mesh() -> anyhow::Result<RunningMesh> {
    let mut meshes = running();
    match meshes.len() {
        0 => bail!("no local mesh is running; start one with `mizzen demo`"),
        1 => Ok(meshes.remove(0)),
        n => bail!("{n} local meshes are running; stop all but one"),
    }
}

/// The network namespace of a pod, by `name` or `namespace/name`.
pub fn pod_netns(mesh: &RunningMesh, pod: &str) -> anyhow::Result<String> {
    if let Some(netns) = mesh.pods.get(pod) {
        return Ok(netns.clone());
    }
    let matches: Vec<(&String, &String)> = mesh
        .pods
        .iter()
        .filter(|(key, _)| key.rsplit('/').next() == Some(pod))
        .collect();
    match matches.as_slice() {
        [(_, netns)] => Ok((*netns).clone()),
        [] if mesh.pods.is_empty() => {
            bail!("the running mesh has no pods (it runs in loopback mode)")
        }
        [] => bail!(
            "no pod {pod}; pods: {}",
            mesh.pods.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => bail!(
            "{pod} names several pods ({}); say NAMESPACE/NAME",
            matches
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
