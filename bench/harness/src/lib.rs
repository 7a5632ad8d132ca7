//! Mizzen's benchmark harness.
//!
//! `mizzen-bench run` measures the data plane three ways, interleaved —
//! client straight to the upstream, through mizzen-proxy, through Envoy,
//! both proxies configured by mizzen-pilot with the same config — over
//! HTTP (gateways) and raw TCP (sidecars), then the proxies' memory with a large mesh, then mizzen-pilot serving
//! many simulated proxies. It writes a markdown table and a JSON document.
//!
//! The pieces are usable on their own:
//! - [`load`]: a constant-rate HTTP/1.1 load generator that corrects for
//!   coordinated omission (`mizzen-bench load`);
//! - [`upstream`]: the fixed-response upstream (`mizzen-bench upstream`);
//! - [`tcp`]: the raw TCP upstream (a sink and an echo) and its closed-loop
//!   client (`mizzen-bench tcp-upstream`, `mizzen-bench tcp-load`);
//! - [`meshgen`]: config directories, from the benchmark gateway to
//!   meshes of thousands of services (`mizzen-bench mesh-config`);
//! - [`scale`]: many ADS clients in one process, timing config pushes;
//! - [`procfs`]: CPU and memory of processes and of the machine;
//! - [`tools`]: `wrk` and `h2load`, run and read.

pub mod bench;
pub mod cli;
pub mod load;
pub mod meshgen;
pub mod procfs;
pub mod procs;
pub mod report;
pub mod scale;
pub mod stats;
pub mod tcp;
pub mod tools;
pub mod upstream;
