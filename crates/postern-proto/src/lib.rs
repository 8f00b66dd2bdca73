//! Pure definitions that both ends of a Postern tunnel agree on.
//!
//! Nothing here does I/O (the one body adapter only observes a body it is given): the tunnel stream metadata codec, the connector's config document, the
//! registration messages, the JSON error shape of every Postern API, and the rules for text
//! someone else reported (`text`). Both the edge and the
//! connector depend on this crate, so a wire change shows up as a compile error on both sides.

pub mod api;
pub mod body;
pub mod config;
pub mod hop;
pub mod limits;
pub mod text;
pub mod tunnel;

pub use config::{AppId, AppRoute, ConnectorConfig};
pub use tunnel::{StreamMeta, TunnelRefusal};
