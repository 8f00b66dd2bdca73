//! Observability shared by the edge and the connector: the metrics every crate records through
//! the `metrics` facade (`metrics.rs`, one function per metric, so names and label sets are
//! declared once), the listener that serves `/metrics`, `/healthz` and `/readyz` (`listener.rs`),
//! W3C trace context (`trace.rs`, a pure parser) and the access log (`access.rs`: one JSON line
//! per request, written by its own task off the request path).
//!
//! **Invariant:** no metric has a user, a path or an address as a label: apps are labelled by
//! their published name (unknown hosts share one label), everything else by a fixed set of codes.

pub mod access;
pub mod listener;
pub mod metrics;
pub mod process;
pub mod trace;
