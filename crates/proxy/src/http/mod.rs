//! The HTTP data path: connection manager, routing and forwarding.

pub mod body;
pub(crate) mod conn;
mod respond;
pub(crate) mod router;
mod upgrade;
