//! The HTTP data path: listeners, routing and forwarding.

pub mod body;
pub(crate) mod listener;
mod respond;
pub(crate) mod router;
