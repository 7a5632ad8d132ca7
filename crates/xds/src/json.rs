//! Rendering of xDS resources in Envoy's JSON shape.
