//! Runs the conformance suite as part of `cargo test`: every case must pass
//! on Envoy (the translation is right), and on mizzen-proxy every case not
//! listed in `conformance/known-gaps.txt` must pass while every listed one
//! must still fail, so the list stays true.

use std::collections::BTreeMap;
use std::path::Path;

use mizzen_conformance::{Case, DataPlane, Outcome};

fn known_gaps(root: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(root.join("conformance/known-gaps.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, why)| (name.trim().to_string(), why.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cases = Case::load_dir(&root.join("conformance/cases")).unwrap();
    let gaps = known_gaps(&root);
    for name in gaps.keys() {
        assert!(
            cases.iter().any(|c| &c.name == name),
            "known-gaps.txt names no case {name}"
        );
    }
    let shared = mizzen_testkit::shared_dir();
    let mut problems = Vec::new();
    for case in &cases {
        for plane in [DataPlane::Mizzen, DataPlane::Envoy] {
            let outcome = mizzen_conformance::run(case, plane, shared.as_deref()).await;
            let gap = plane == DataPlane::Mizzen && gaps.contains_key(&case.name);
            match (&outcome, gap) {
                (Outcome::Skip(reason), _) => {
                    println!("SKIP: {} on {}: {reason}", case.name, plane.name())
                }
                (Outcome::Pass, false) => println!("pass: {} on {}", case.name, plane.name()),
                (Outcome::Fail(reason), true) => {
                    println!("known gap: {} on {}: {reason}", case.name, plane.name())
                }
                (Outcome::Fail(reason), false) => {
                    problems.push(format!("{} on {}: {reason}", case.name, plane.name()))
                }
                (Outcome::Pass, true) => problems.push(format!(
                    "{} now passes on {}: remove it from conformance/known-gaps.txt",
                    case.name,
                    plane.name()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
