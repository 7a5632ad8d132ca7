//! The `mizzen` command line: the local mesh runtime (`demo`), config changes
//! (`apply`, `delete`) and the demo app (`app`).

pub mod apply;
pub mod demo;
pub mod edge_certs;
pub mod local;
pub mod meshes;
pub mod netns;
pub mod pods;
pub mod up;
