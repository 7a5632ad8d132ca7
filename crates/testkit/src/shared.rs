//! Locating the shared test data.
//!
//! Istio's sample manifests and the conformance cases are large and are
//! not part of this repository: they sit in a `shared` directory next to
//! the repository's root. Tests that need them skip when it is missing.

use std::path::{Path, PathBuf};

/// Environment variable that overrides where the shared data lives.
pub const SHARED_DIR_ENV: &str = "MIZZEN_SHARED_DIR";

/// The shared data directory: `$MIZZEN_SHARED_DIR` if set, else `shared`
/// beside the workspace root. `None` when that directory does not exist.
pub fn shared_dir() -> Option<PathBuf> {
    shared_dir_with(|name| std::env::var_os(name).map(PathBuf::from))
}

/// Like [`shared_dir`], printing a `SKIP:` line when it is `None`, so a
/// test can write `let Some(dir) = skip_without_shared() else { return };`.
pub fn skip_without_shared() -> Option<PathBuf> {
    let dir = shared_dir();
    if dir.is_none() {
        eprintln!("SKIP: ../shared not found (set {SHARED_DIR_ENV} to the shared data directory)");
    }
    dir
}

fn shared_dir_with(lookup: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    let dir = match lookup(SHARED_DIR_ENV) {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => workspace_root().join("..").join("shared"),
    };
    // Canonical so that error messages and paths in test output are
    // readable rather than full of `..`.
    dir.canonicalize().ok().filter(|dir| dir.is_dir())
}

/// The workspace root, two levels above this crate's manifest. Taken at
/// compile time, which is right for tests: they run where they were built.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn env_override_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let found = shared_dir_with(|name| (name == SHARED_DIR_ENV).then(|| path.clone()));
        assert_eq!(found, Some(path.canonicalize().unwrap()));
    }

    #[test]
    fn missing_override_is_none() {
        let found = shared_dir_with(|_| Some(PathBuf::from("/nonexistent/mizzen-shared")));
        assert_eq!(found, None);
    }
}
