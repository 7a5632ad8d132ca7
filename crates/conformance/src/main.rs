//! `mizzen-conformance DIR...`: runs every case on both data planes and
//! prints the table, ending with `N passed, M failed`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mizzen_conformance::{Case, DataPlane, Outcome};

#[derive(Parser, Debug)]
#[command(name = "mizzen-conformance")]
struct Args {
    /// Directories of case files (`*.yaml`).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Run only cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Run on one data plane only.
    #[arg(long, value_parser = ["mizzen", "envoy"])]
    only: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cases = Vec::new();
    for dir in &args.dirs {
        match Case::load_dir(dir) {
            Ok(found) => cases.extend(found),
            Err(error) => {
                eprintln!("{error:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    cases.retain(|c| {
        args.filter
            .as_ref()
            .is_none_or(|f| c.name.contains(f.as_str()))
    });
    let planes: Vec<DataPlane> = match args.only.as_deref() {
        Some("mizzen") => vec![DataPlane::Mizzen],
        Some("envoy") => vec![DataPlane::Envoy],
        _ => vec![DataPlane::Mizzen, DataPlane::Envoy],
    };
    let shared = mizzen_testkit::shared_dir();
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(4).max(4);
    print!("{:width$}", "case");
    for plane in &planes {
        print!("  {:14}", plane.name());
    }
    println!();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        print!("{:width$}", case.name);
        for plane in &planes {
            let outcome = mizzen_conformance::run(case, *plane, shared.as_deref()).await;
            let cell = match &outcome {
                Outcome::Pass => {
                    passed += 1;
                    "pass".to_string()
                }
                Outcome::Fail(reason) => {
                    failed += 1;
                    failures.push(format!("{} on {}: {reason}", case.name, plane.name()));
                    "FAIL".to_string()
                }
                Outcome::Skip(reason) => {
                    skipped += 1;
                    failures.push(format!(
                        "{} on {} skipped: {reason}",
                        case.name,
                        plane.name()
                    ));
                    "skip".to_string()
                }
            };
            print!("  {cell:14}");
        }
        println!();
    }
    if !failures.is_empty() {
        println!();
        for line in &failures {
            println!("{line}");
        }
    }
    println!();
    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
