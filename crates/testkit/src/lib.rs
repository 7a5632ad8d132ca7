//! Building blocks for Mizzen's tests.
//!
//! Mizzen is checked against a real Envoy: a scenario runs once through
//! Envoy and once through `mizzen-proxy`, and both must behave alike. This
//! crate holds what those scenarios are made of:
//!
//! - [`demo_app`]: a small HTTP/1.1 + h2c service that reports who answered
//!   and what its upstreams answered, so a test can read the path a request
//!   took through the mesh from a single JSON body.
//! - [`envoy`]: finds an Envoy binary, starts it against a given xDS server
//!   and reads its admin interface.
//! - [`client`]: one-shot HTTP/1.1 and h2c requests, with no pooling and no
//!   retries, so each request is exactly what the test says it is.
//! - [`net`]: private loopback addresses and free ports, so tests can bind
//!   Istio's fixed port numbers without colliding with each other.
//! - [`shared`]: locates the shared test data (Istio samples, conformance
//!   cases) that lives beside the repository.
//!
//! Helpers that depend on something outside the repository (Envoy, shared
//! data) come with a `skip_without_*` function: it returns `None` and prints
//! a `SKIP:` line, so a test can return early instead of failing on a
//! machine that lacks it.

pub mod client;
pub mod demo_app;
pub mod envoy;
pub mod net;
pub mod shared;

pub use client::{h2c_get, http_get};
pub use net::{free_loopback_ip, free_port};
pub use shared::{shared_dir, skip_without_shared};
