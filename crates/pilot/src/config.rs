//! The local config source: a directory of YAML watched for changes.
//!
//! Every `*.yaml`/`*.yml` file below the directory is parsed on its own. A
//! file that stops parsing keeps contributing the resources it last parsed
//! to (last good config) and its errors are reported — in the log and at
//! `/debug/configz` — until it is fixed. The same resource defined twice is
//! an error too: the first file in path order wins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mizzen_api::{Resource, ResourceKey};
use notify::Watcher;
use tokio::sync::mpsc;

/// One problem with the config directory, for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Default)]
struct FileEntry {
    text: String,
    /// The resources of the last version of this file that parsed.
    resources: Vec<Resource>,
    errors: Vec<String>,
}

/// The parsed contents of a config directory.
#[derive(Default)]
pub struct ConfigStore {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
}

/// A consistent view of the store handed to model building.
#[derive(Clone, Default)]
pub struct ConfigSnapshot {
    pub resources: Vec<(PathBuf, Resource)>,
    pub problems: Vec<ConfigProblem>,
}

impl ConfigStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    /// Reads the directory again; returns whether anything changed.
    pub fn rescan(&mut self) -> bool {
        let mut seen = BTreeSet::new();
        let mut changed = false;
        for path in yaml_files(&self.dir) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                // Vanished between listing and reading: the next event tells.
                continue;
            };
            seen.insert(path.clone());
            let is_new = !self.files.contains_key(&path);
            let entry = self.files.entry(path.clone()).or_default();
            if !is_new && entry.text == text {
                continue;
            }
            changed = true;
            entry.text = text;
            let shown = display_path(&self.dir, &path);
            match mizzen_api::parse_documents(&shown, &entry.text) {
                Ok(resources) => {
                    if !entry.errors.is_empty() {
                        tracing::info!(file = %shown, "config file is valid again");
                    }
                    entry.resources = resources;
                    entry.errors.clear();
                }
                Err(errors) => {
                    entry.errors = errors.iter().map(ToString::to_string).collect();
                    for error in &entry.errors {
                        tracing::error!("{error} (keeping the last good version of this file)");
                    }
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|path, _| seen.contains(path));
        changed || before != self.files.len()
    }

    pub fn snapshot(&self) -> ConfigSnapshot {
        let mut owners: BTreeMap<ResourceKey, PathBuf> = BTreeMap::new();
        let mut snapshot = ConfigSnapshot::default();
        for (path, entry) in &self.files {
            for error in &entry.errors {
                snapshot.problems.push(ConfigProblem {
                    file: path.clone(),
                    message: error.clone(),
                });
            }
            for resource in &entry.resources {
                let key = resource.key();
                if let Some(owner) = owners.get(&key) {
                    snapshot.problems.push(ConfigProblem {
                        file: path.clone(),
                        message: format!(
                            "{}: {} {}/{} is already defined in {}; this copy is ignored",
                            display_path(&self.dir, path),
                            key.kind,
                            key.namespace,
                            key.name,
                            display_path(&self.dir, owner)
                        ),
                    });
                    continue;
                }
                owners.insert(key, path.clone());
                snapshot.resources.push((path.clone(), resource.clone()));
            }
        }
        snapshot
    }
}

fn display_path(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

/// All YAML files below `dir`, in a stable order; hidden entries are skipped
/// (editors keep their swap files there).
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// How long a burst of file events is given to settle before a rescan: an
/// editor's save is often several events.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A rescan also runs this often, in case the file system drops events.
const POLL: Duration = Duration::from_secs(2);

/// Watches `dir` and calls `on_change` with a fresh snapshot after every change
/// (and once at start). Runs until the returned task is aborted.
pub fn watch(
    dir: PathBuf,
    on_change: Arc<dyn Fn(ConfigSnapshot) + Send + Sync>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("config directory {} does not exist", dir.display()),
        ));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(std::io::Error::other)?;
    let mut store = ConfigStore::new(dir);
    store.rescan();
    on_change(store.snapshot());
    Ok(tokio::spawn(async move {
        // The watcher lives as long as the task.
        let _watcher = watcher;
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            if store.rescan() {
                on_change(store.snapshot());
            }
        }
    }))
}
