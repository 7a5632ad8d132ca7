//! Istio's sample applications parse.

mod common;

use mizzen_api::{Kind, Resource, parse_documents, parse_documents_lenient};

fn show(errs: &[mizzen_api::ConfigError]) -> String {
    errs.iter().map(|e| format!("  {e}\n")).collect()
}

#[test]
fn bookinfo_networking_parses_strictly() {
    let Some(data) = common::istio_data("bookinfo_networking_parses_strictly") else {
        return;
    };
    let files = common::yaml_files(&data.join("samples/bookinfo/networking"));
    assert!(!files.is_empty());
    let mut total = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        match parse_documents(&f.display().to_string(), &text) {
            Ok(resources) => {
                assert!(!resources.is_empty(), "{} has no resources", f.display());
                total += resources.len();
            }
            Err(errs) => panic!("{} failed:\n{}", f.display(), show(&errs)),
        }
    }
    println!(
        "bookinfo networking: {} files, {total} resources",
        files.len()
    );
}

#[test]
fn bookinfo_platform_parses_leniently() {
    let Some(data) = common::istio_data("bookinfo_platform_parses_leniently") else {
        return;
    };
    let f = data.join("samples/bookinfo/platform/kube/bookinfo.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let parsed = parse_documents_lenient("bookinfo.yaml", &text)
        .unwrap_or_else(|errs| panic!("bookinfo.yaml failed:\n{}", show(&errs)));
    let services: Vec<&str> = parsed
        .resources
        .iter()
        .filter(|r| r.kind() == Kind::Service)
        .map(Resource::name)
        .collect();
    assert_eq!(services, ["details", "ratings", "reviews", "productpage"]);
    let mut skipped: Vec<&str> = parsed.skipped.iter().map(|s| s.kind.as_str()).collect();
    skipped.sort_unstable();
    skipped.dedup();
    assert_eq!(skipped, ["Deployment", "ServiceAccount"]);
    // Strict parsing refuses the same file, naming the first Deployment.
    let errs = parse_documents("bookinfo.yaml", &text).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.message.contains("unknown kind \"Deployment\""))
    );
}

#[test]
fn other_samples_parse() {
    let Some(data) = common::istio_data("other_samples_parse") else {
        return;
    };
    let mut files = common::yaml_files(&data.join("samples/httpbin"));
    files.extend(common::yaml_files(&data.join("samples/tcp-echo")));
    assert!(files.len() >= 5);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let parsed = parse_documents_lenient(&f.display().to_string(), &text)
            .unwrap_or_else(|errs| panic!("{} failed:\n{}", f.display(), show(&errs)));
        assert!(
            !parsed.resources.is_empty() || !parsed.skipped.is_empty(),
            "{} is empty",
            f.display()
        );
    }
}
