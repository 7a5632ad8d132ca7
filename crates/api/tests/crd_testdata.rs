//! Istio's CRD validation test data: every `*-valid.yaml` document is
//! accepted and every `*-invalid.yaml` document is rejected for the reason
//! Istio gives.

mod common;

use mizzen_api::{ConfigError, parse_documents};
use std::path::Path;

/// Invalid documents whose rejection we cannot attribute the way Istio does,
/// as `(file, metadata.name, reason)`. Each is still required to be
/// rejected.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

struct Case {
    name: String,
    expected: Option<String>,
    text: String,
}

/// Splits a test file into its documents, taking out the `_err` key.
fn cases(text: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let mut chunks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            chunks.push(Vec::new());
        } else if let Some(last) = chunks.last_mut() {
            last.push(line);
        }
    }
    for chunk in chunks {
        let mut expected = None;
        let mut body = String::new();
        for line in chunk {
            if line.starts_with("_err:") {
                let v: std::collections::BTreeMap<String, String> =
                    serde_saphyr::from_str(line).expect("_err line parses");
                expected = v.get("_err").cloned();
                // Keep line numbers stable.
                body.push('\n');
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
        let has_content = body
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if !has_content {
            continue;
        }
        let name = body
            .lines()
            .skip_while(|l| !l.starts_with("metadata:"))
            .find_map(|l| l.trim().strip_prefix("name:").map(|n| n.trim().to_string()))
            .unwrap_or_default();
        out.push(Case {
            name,
            expected,
            text: body,
        });
    }
    out
}

/// The field path Istio's message names, if it names one: `path: ...` or
/// `path in body ...`.
fn istio_path(message: &str) -> Option<&str> {
    let first = message.split_whitespace().next()?;
    if let Some(p) = first.strip_suffix(':')
        && (p.starts_with("spec") || p.starts_with("metadata"))
    {
        return Some(p);
    }
    let rest = &message[first.len()..];
    if rest.starts_with(" in body") {
        return Some(first);
    }
    None
}

fn path_matches(ours: &str, istio: &str) -> bool {
    // Kubernetes shortens some paths to their last element(s).
    ours == istio || ours.ends_with(&format!(".{istio}"))
}

fn matches(errs: &[ConfigError], expected: &str) -> bool {
    match istio_path(expected) {
        Some(path) => errs
            .iter()
            .any(|e| e.field.as_deref().is_some_and(|f| path_matches(f, path))),
        None => errs.iter().any(|e| e.message.contains(expected)),
    }
}

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

#[test]
fn valid_documents_are_accepted() {
    let Some(data) = common::istio_data("valid_documents_are_accepted") else {
        return;
    };
    let dir = data.join("pkg/config/validation/testdata/crds");
    let mut count = 0;
    let mut failures = Vec::new();
    for f in files(&dir, "-valid.yaml") {
        let file = f.file_name().unwrap().to_string_lossy().to_string();
        for case in cases(&std::fs::read_to_string(&f).unwrap()) {
            count += 1;
            if let Err(errs) = parse_documents(&file, &case.text) {
                for e in errs {
                    failures.push(format!("{file} {}: {e}", case.name));
                }
            }
        }
    }
    println!("{count} valid documents checked");
    assert!(count > 30, "too few documents: {count}");
    assert!(
        failures.is_empty(),
        "rejected valid documents:\n{}",
        failures.join("\n")
    );
}

#[test]
fn invalid_documents_are_rejected_for_istios_reason() {
    let Some(data) = common::istio_data("invalid_documents_are_rejected_for_istios_reason") else {
        return;
    };
    let dir = data.join("pkg/config/validation/testdata/crds");
    let mut count = 0;
    let mut failures = Vec::new();
    for f in files(&dir, "-invalid.yaml") {
        let file = f.file_name().unwrap().to_string_lossy().to_string();
        for case in cases(&std::fs::read_to_string(&f).unwrap()) {
            count += 1;
            let expected = case.expected.clone().unwrap_or_default();
            match parse_documents(&file, &case.text) {
                Ok(_) => failures.push(format!(
                    "{file} {}: accepted (Istio: {expected})",
                    case.name
                )),
                Err(errs) => {
                    for e in &errs {
                        println!("{} | Istio: {expected}\n    ours: {e}", case.name);
                    }
                    let excepted = EXCEPTIONS
                        .iter()
                        .any(|(f, n, _)| *f == file && *n == case.name);
                    if !excepted && !matches(&errs, &expected) {
                        let ours: Vec<String> = errs.iter().map(ToString::to_string).collect();
                        failures.push(format!(
                            "{file} {}: Istio says {expected:?}, we said:\n    {}",
                            case.name,
                            ours.join("\n    ")
                        ));
                    }
                }
            }
        }
    }
    println!("{count} invalid documents checked");
    assert!(count > 60, "too few documents: {count}");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
