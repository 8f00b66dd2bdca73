//! `UnixTime`: the wall-clock instants that tokens and cookies carry.
//!
//! Every check in this crate takes "now" as a parameter instead of reading the clock, so that tests
//! can stand at any instant and the edge reads the clock once per request. Only [`UnixTime::now`]
//! reads it, for the shell around the pure core.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Whole seconds since the Unix epoch, as JWT `NumericDate`s and cookie expiries count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(u64);

impl UnixTime {
    /// The instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0
    }

    /// Reads the system clock. A clock set before 1970 reads as the epoch, which makes every
    /// token look expired rather than valid forever.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self(secs)
    }

    /// `self + d`, pinned at the largest representable instant rather than wrapping.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_secs()))
    }

    /// `self - d`, pinned at the epoch rather than wrapping.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.as_secs()))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (unix seconds)", self.0)
    }
}
