//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The shared test-data directory: `$MIZZEN_SHARED_DIR`, else
/// `<workspace root>/../shared`. `None` (after printing why) when absent, so
/// tests depending on it skip instead of failing on machines without it.
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("MIZZEN_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "SKIPPED {test}: shared test data not found at {} (set MIZZEN_SHARED_DIR)",
            dir.display()
        );
        None
    }
}

/// The Istio test-data tree inside the shared directory.
pub fn istio_data(test: &str) -> Option<PathBuf> {
    let dir = shared_dir(test)?.join("conformance/istio-data");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED {test}: {} not found", dir.display());
        None
    }
}

/// Every `.yaml` file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
