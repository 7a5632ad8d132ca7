//! Mizzen's conformance suite: declarative cases (Istio config, the services
//! behind it, requests and what must come back) run twice, with
//! mizzen-proxy and with a real Envoy as the data plane, both configured by
//! mizzen-pilot. A case Envoy passes and mizzen-proxy fails is a proxy bug;
//! a case both fail is a translation (or case) bug.

pub mod case;
mod protocols;
pub mod runner;

pub use case::Case;
pub use runner::{DataPlane, Outcome, run};
