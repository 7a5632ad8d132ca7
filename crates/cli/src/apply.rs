//! `mizzen apply -f` and `mizzen delete -f`: change a local mesh's config
//! directory the way `kubectl apply` changes a cluster.
//!
//! The directory stays the single source of truth (the pilot watches it and
//! it survives restarts): a resource that already exists is replaced where it
//! is defined, a new one gets a file of its own, a deleted one is cut out of
//! its file. Documents are moved as text, so comments and formatting stay.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mizzen_api::ResourceKey;

/// One YAML document of a file, as text.
struct Document {
    text: String,
    key: Option<ResourceKey>,
}

fn split_documents(origin: &str, text: &str) -> Vec<Document> {
    let mut chunks = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else if let Some(last) = chunks.last_mut() {
            last.push_str(line);
        }
    }
    chunks
        .into_iter()
        .map(|text| {
            let key = match mizzen_api::parse_documents(origin, &text) {
                Ok(resources) if resources.len() == 1 => Some(resources[0].key()),
                _ => None,
            };
            Document { text, key }
        })
        .collect()
}

fn join_documents(documents: &[Document]) -> String {
    let parts: Vec<&str> = documents
        .iter()
        .map(|d| d.text.as_str())
        .filter(|t| !t.trim().is_empty())
        .collect();
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(part);
        if !part.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Writes through a hidden temporary file so the watcher never reads half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config.yaml");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Reads and validates the file to apply; nothing is changed when it is invalid.
fn read_input(file: &Path) -> anyhow::Result<Vec<Document>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let origin = file.display().to_string();
    if let Err(errors) = mizzen_api::parse_documents(&origin, &text) {
        bail!(
            "{}\nnothing was changed",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(split_documents(&origin, &text)
        .into_iter()
        .filter(|d| d.key.is_some())
        .collect())
}

struct Located {
    file: PathBuf,
    documents: Vec<Document>,
}

fn load_dir(config_dir: &Path) -> anyhow::Result<Vec<Located>> {
    if !config_dir.is_dir() {
        bail!("config directory {} does not exist", config_dir.display());
    }
    let mut out = Vec::new();
    for file in mizzen_pilot::config::yaml_files(config_dir) {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let documents = split_documents(&file.display().to_string(), &text);
        out.push(Located { file, documents });
    }
    Ok(out)
}

fn find<'a>(files: &'a mut [Located], key: &ResourceKey) -> Option<(&'a mut Located, usize)> {
    files.iter_mut().find_map(|located| {
        let index = located
            .documents
            .iter()
            .position(|d| d.key.as_ref() == Some(key))?;
        Some((located, index))
    })
}

fn describe(key: &ResourceKey) -> String {
    format!(
        "{}/{} (namespace {})",
        key.kind.to_string().to_lowercase(),
        key.name,
        key.namespace
    )
}

/// Applies every resource of `file`; returns one line per resource.
pub fn apply(config_dir: &Path, file: &Path) -> anyhow::Result<Vec<String>> {
    let input = read_input(file)?;
    let mut files = load_dir(config_dir)?;
    let mut report = Vec::new();
    for document in input {
        let Some(key) = document.key.clone() else {
            continue;
        };
        match find(&mut files, &key) {
            Some((located, index)) => {
                if located.documents[index].text.trim() == document.text.trim() {
                    report.push(format!("{} unchanged", describe(&key)));
                    continue;
                }
                located.documents[index] = document;
                write_atomically(&located.file, &join_documents(&located.documents))?;
                report.push(format!("{} configured", describe(&key)));
            }
            None => {
                let path = config_dir.join(format!(
                    "{}-{}-{}.yaml",
                    key.kind.to_string().to_lowercase(),
                    key.namespace,
                    key.name
                ));
                let text = join_documents(std::slice::from_ref(&document));
                write_atomically(&path, &text)?;
                files.push(Located {
                    file: path,
                    documents: vec![document],
                });
                report.push(format!("{} created", describe(&key)));
            }
        }
    }
    Ok(report)
}

/// Deletes every resource named in `file`; returns one line per resource.
pub fn delete(config_dir: &Path, file: &Path) -> anyhow::Result<Vec<String>> {
    let input = read_input(file)?;
    let mut files = load_dir(config_dir)?;
    let mut report = Vec::new();
    for document in input {
        let Some(key) = document.key else { continue };
        let Some((located, index)) = find(&mut files, &key) else {
            report.push(format!("{} not found", describe(&key)));
            continue;
        };
        located.documents.remove(index);
        let remaining = join_documents(&located.documents);
        if located.documents.iter().all(|d| {
            d.key.is_none()
                && d.text
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        }) {
            std::fs::remove_file(&located.file)
                .with_context(|| format!("removing {}", located.file.display()))?;
        } else {
            write_atomically(&located.file, &remaining)?;
        }
        report.push(format!("{} deleted", describe(&key)));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: c\n  namespace: ns\nspec:\n  hosts: [c]\n  http:\n  - route:\n    - destination:\n        host: c\n";
    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: c\n  namespace: ns\nspec:\n  ports:\n  - name: http\n    port: 80\n";

    #[test]
    fn apply_creates_replaces_and_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        std::fs::write(config.join("all.yaml"), format!("# mesh\n{SVC}---\n{VS}")).unwrap();
        let input = dir.path().join("vs.yaml");
        std::fs::write(
            &input,
            VS.replace("host: c\n", "host: c\n        subset: v1\n"),
        )
        .unwrap();

        let report = apply(&config, &input).unwrap();
        assert_eq!(report, vec!["virtualservice/c (namespace ns) configured"]);
        let text = std::fs::read_to_string(config.join("all.yaml")).unwrap();
        assert!(text.starts_with("# mesh\n"), "{text}");
        assert!(text.contains("subset: v1"), "{text}");
        assert_eq!(
            apply(&config, &input).unwrap(),
            vec!["virtualservice/c (namespace ns) unchanged"]
        );

        let report = delete(&config, &input).unwrap();
        assert_eq!(report, vec!["virtualservice/c (namespace ns) deleted"]);
        let text = std::fs::read_to_string(config.join("all.yaml")).unwrap();
        assert!(!text.contains("VirtualService"), "{text}");
        assert!(text.contains("kind: Service"), "{text}");

        let report = apply(&config, &input).unwrap();
        assert_eq!(report, vec!["virtualservice/c (namespace ns) created"]);
        assert!(config.join("virtualservice-ns-c.yaml").exists());
    }

    #[test]
    fn invalid_input_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("bad.yaml");
        std::fs::write(&input, VS.replace("hosts:", "hostz:")).unwrap();
        let error = apply(dir.path(), &input).unwrap_err().to_string();
        assert!(error.contains("hostz"), "{error}");
        assert!(error.contains("nothing was changed"), "{error}");
    }
}
