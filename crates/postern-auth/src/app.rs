//! `AppId`: which published app a cookie or a sign-in belongs to.
//!
//! Cookies are bound to the app they were issued for (it is part of the AEAD's associated data), so
//! the identifier must be stable for the app's lifetime: use the app's ID from the store, not its
//! display name or host name, which an administrator may change.

use std::fmt;

/// The longest app identifier accepted. It travels in every cookie's associated data, so it is
/// kept small; store IDs (UUIDs, slugs) are far shorter.
pub const MAX_APP_ID_LEN: usize = 128;

/// A published app's stable identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

/// Why a string cannot be an [`AppId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppIdError {
    /// The identifier is empty.
    #[error("an app id must not be empty")]
    Empty,
    /// The identifier is longer than [`MAX_APP_ID_LEN`].
    #[error("app id is {len} bytes long; the limit is {MAX_APP_ID_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl AppId {
    /// Wraps an app's stable identifier.
    pub fn new(id: impl Into<String>) -> Result<Self, AppIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(AppIdError::Empty);
        }
        if id.len() > MAX_APP_ID_LEN {
            return Err(AppIdError::TooLong { len: id.len() });
        }
        Ok(Self(id))
    }

    /// The identifier as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
