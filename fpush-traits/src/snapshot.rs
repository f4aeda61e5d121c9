//! What a platform knows about its own health that an operator watches (credential expiry,
//! failed auth-token refreshes, its connection pool and the provider's pause), read when
//! metrics are scraped.

use std::time::{Duration, SystemTime};

/// A platform's state, read at scrape time through [`crate::PushTrait::snapshot`], never per push.
///
/// Build it with `..ProviderSnapshot::default()` so that fields added later do not break a
/// platform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderSnapshot {
    /// When the credentials stop working (a `.p12` client certificate's notAfter); `None` when
    /// they do not expire on a known date.
    pub credentials_expire_at: Option<SystemTime>,
    /// Failed attempts to get a fresh auth token from the provider (FCM's OAuth access token)
    /// since the module was built; only ever grows.
    pub token_refresh_failures: u64,
    /// The platform's connection pool to its provider, when it keeps one (`None`: no pool).
    pub pool: Option<PoolGauges>,
}

/// A provider connection pool: its connections now, and what happened to it so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolGauges {
    /// The connections that take requests now, oldest first.
    pub connections: Vec<ConnectionGauge>,
    /// Connections opened since the module was built; only ever grows.
    pub connections_opened: u64,
    /// What is left of a module-wide pause the provider asked for (its breaker is open), or
    /// `None` while requests go out.
    pub paused_for: Option<Duration>,
    /// How often the provider paused the module since it was built; only ever grows.
    pub pauses: u64,
}

/// One pooled provider connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionGauge {
    /// Requests on this connection now.
    pub streams_in_flight: u32,
    /// The concurrent streams the provider allows on it (its HTTP/2 `MAX_CONCURRENT_STREAMS`).
    pub max_streams: u32,
}
