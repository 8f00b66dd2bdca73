//! The issuer as the edge sees it: discovery, the cached JWKS, and its rate-limited refresh.
//!
//! This is the crate's only I/O, kept thin: it fetches two JSON documents with the caller's
//! `reqwest::Client` (so the edge decides TLS roots, proxies and timeouts) and hands them to the
//! pure parsers in `discovery` and `idtoken`.
//!
//! **Invariant:** a token naming an unknown `kid` causes at most one JWKS fetch per
//! [`ProviderSettings::min_refresh_interval`] (30 s by default), however many such tokens arrive,
//! so random `kid`s cannot make the edge hammer the issuer. Concurrent refreshes are merged into one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use url::Url;

use crate::discovery::{DiscoveryError, IssuerUrl, ProviderMetadata};
use crate::idtoken::{self, Expectations, IdTokenClaims, Jwks, JwksError, TokenError};
use crate::unix_time::UnixTime;

/// The shortest time between two JWKS fetches caused by unknown `kid`s.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How long one fetch may take before the edge gives up on it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery document or JWKS read: real ones are a few kilobytes.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Tunables of a [`Provider`], each defaulting to the constant of the same name.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// See [`DEFAULT_MIN_REFRESH_INTERVAL`].
    pub min_refresh_interval: Duration,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`DEFAULT_MAX_DOCUMENT_BYTES`].
    pub max_document_bytes: usize,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }
}

/// Why fetching the discovery document or the JWKS failed. Every variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request did not complete (connection, TLS, timeout).
    #[error("fetching {url} failed: {source}")]
    Request {
        /// What was fetched.
        url: Url,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The issuer answered with an error status.
    #[error("fetching {url} returned HTTP {status}")]
    Status {
        /// What was fetched.
        url: Url,
        /// The status.
        status: u16,
    },
    /// The document is larger than [`ProviderSettings::max_document_bytes`].
    #[error("{url} is larger than {limit_bytes} bytes")]
    TooLarge {
        /// What was fetched.
        url: Url,
        /// The limit.
        limit_bytes: usize,
    },
    /// The discovery document was refused.
    #[error("{url}: {source}")]
    Discovery {
        /// What was fetched.
        url: Url,
        /// Why it was refused.
        source: DiscoveryError,
    },
    /// The JWKS was refused.
    #[error("{url}: {source}")]
    Jwks {
        /// What was fetched.
        url: Url,
        /// Why it was refused.
        source: JwksError,
    },
}

impl FetchError {
    /// Whether trying again later may help: network trouble and server-side errors, as opposed to
    /// a document that is wrong and stays wrong until someone fixes the configuration.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Request { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            FetchError::TooLarge { .. }
            | FetchError::Discovery { .. }
            | FetchError::Jwks { .. } => false,
        }
    }
}

/// Why [`Provider::verify`] refused a token.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token itself is bad.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token names a key the cached JWKS lacks, and fetching the JWKS again failed: the token
    /// may be fine, so this is the issuer's or the network's problem, not the user's.
    #[error("token names key {kid:?}, and refreshing the JWKS failed: {source}")]
    JwksRefresh {
        /// The unknown key id.
        kid: String,
        /// Why the refresh failed.
        source: FetchError,
    },
}

/// What [`Provider::refresh_jwks`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Fetched and installed a new JWKS.
    Fetched,
    /// Skipped: the last fetch was too recent. Try again after `retry_in`.
    TooSoon {
        /// Time left until a fetch is allowed.
        retry_in: Duration,
    },
}

/// Allows one event per interval. Pure: the caller passes the time.
#[derive(Debug)]
pub struct RefreshLimiter {
    min_interval: Duration,
    last: Option<Instant>,
}

impl RefreshLimiter {
    /// A limiter that has not fired yet.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last: None,
        }
    }

    /// Records an event at `now` if allowed, else says how long to wait.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last);
            if elapsed < self.min_interval {
                return Err(self.min_interval - elapsed);
            }
        }
        self.last = Some(now);
        Ok(())
    }
}

/// One OpenID Connect issuer: its metadata and its current keys.
pub struct Provider {
    http: reqwest::Client,
    issuer: IssuerUrl,
    metadata: ProviderMetadata,
    settings: ProviderSettings,
    jwks: ArcSwap<Jwks>,
    /// Held across a refresh, so that concurrent callers wait for one fetch instead of each
    /// starting their own.
    refresh: tokio::sync::Mutex<RefreshLimiter>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("jwks", &self.jwks.load())
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Fetches the discovery document and the JWKS with default settings.
    pub async fn discover(http: reqwest::Client, issuer: IssuerUrl) -> Result<Self, FetchError> {
        Self::discover_with(http, issuer, ProviderSettings::default()).await
    }

    /// Fetches the discovery document and the JWKS.
    pub async fn discover_with(
        http: reqwest::Client,
        issuer: IssuerUrl,
        settings: ProviderSettings,
    ) -> Result<Self, FetchError> {
        let url = issuer.discovery_url();
        let body = fetch(&http, &url, &settings).await?;
        let metadata = ProviderMetadata::from_json(&body, &issuer)
            .map_err(|source| FetchError::Discovery { url, source })?;
        let jwks = fetch_jwks(&http, &metadata.jwks_uri, &settings).await?;
        Ok(Self {
            http,
            issuer,
            metadata,
            jwks: ArcSwap::from_pointee(jwks),
            refresh: tokio::sync::Mutex::new(RefreshLimiter::new(settings.min_refresh_interval)),
            settings,
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &IssuerUrl {
        &self.issuer
    }

    /// The discovery document's endpoints.
    pub fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    /// The current keys (a cheap, lock-free snapshot).
    pub fn jwks(&self) -> Arc<Jwks> {
        self.jwks.load_full()
    }

    /// Fetches the JWKS again unless the last refresh was less than the minimum interval ago.
    /// A failed fetch counts as a refresh too: a failing issuer is not retried in a tight loop.
    pub async fn refresh_jwks(&self) -> Result<Refresh, FetchError> {
        let mut limiter = self.refresh.lock().await;
        if let Err(retry_in) = limiter.try_acquire(Instant::now()) {
            return Ok(Refresh::TooSoon { retry_in });
        }
        let jwks = fetch_jwks(&self.http, &self.metadata.jwks_uri, &self.settings).await?;
        self.jwks.store(Arc::new(jwks));
        Ok(Refresh::Fetched)
    }

    /// Verifies a token with the cached keys; if it names a key they lack, refreshes the JWKS
    /// (rate-limited) and tries once more.
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expectations<'_>,
        now: UnixTime,
    ) -> Result<IdTokenClaims, VerifyError> {
        let first = idtoken::verify(token, &self.jwks(), expect, now);
        let kid = match first {
            Err(TokenError::UnknownKey { kid }) => kid,
            other => return Ok(other?),
        };
        // Another request may have refreshed while this one verified: look before fetching.
        if !self.jwks().contains_kid(&kid) {
            match self.refresh_jwks().await {
                Ok(Refresh::Fetched) => {
                    tracing::info!(issuer = %self.issuer, %kid, "refreshed the JWKS for an unknown key id");
                }
                Ok(Refresh::TooSoon { .. }) => {
                    return Err(TokenError::UnknownKey { kid }.into());
                }
                Err(source) => return Err(VerifyError::JwksRefresh { kid, source }),
            }
        }
        Ok(idtoken::verify(token, &self.jwks(), expect, now)?)
    }
}

async fn fetch_jwks(
    http: &reqwest::Client,
    url: &Url,
    settings: &ProviderSettings,
) -> Result<Jwks, FetchError> {
    let body = fetch(http, url, settings).await?;
    let jwks = Jwks::from_json(&body).map_err(|source| FetchError::Jwks {
        url: url.clone(),
        source,
    })?;
    for skipped in jwks.skipped() {
        tracing::debug!(%url, kid = ?skipped.kid, reason = %skipped.reason, "JWKS key skipped");
    }
    Ok(jwks)
}

/// GETs a JSON document, reading at most `max_document_bytes` of it.
async fn fetch(
    http: &reqwest::Client,
    url: &Url,
    settings: &ProviderSettings,
) -> Result<Vec<u8>, FetchError> {
    let request_failed = |source| FetchError::Request {
        url: url.clone(),
        source,
    };
    let mut response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(settings.request_timeout)
        .send()
        .await
        .map_err(request_failed)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.clone(),
            status: response.status().as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.clone(),
        limit_bytes: settings.max_document_bytes,
    };
    if response
        .content_length()
        .is_some_and(|len| len > settings.max_document_bytes as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_failed)? {
        if body.len() + chunk.len() > settings.max_document_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_one_event_per_interval() {
        let t0 = Instant::now();
        let mut limiter = RefreshLimiter::new(Duration::from_secs(30));
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut check = |secs: u64, expected: Result<(), Duration>| {
            assert_eq!(limiter.try_acquire(at(secs)), expected, "at {secs} s");
        };
        check(0, Ok(()));
        check(0, Err(Duration::from_secs(30)));
        check(29, Err(Duration::from_secs(1)));
        check(30, Ok(()));
        check(45, Err(Duration::from_secs(15)));
        check(100, Ok(()));
    }
}
