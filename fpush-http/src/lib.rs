//! The provider transport shared by the APNS and FCM modules.
//!
//! One [`HttpClient`] talks to one origin (`https://host:port`) over a pool of multiplexed
//! HTTP/2 connections, opened on demand up to [`HttpConfig::max_connections`] within each
//! connection's advertised stream limit (see `pool`). It is built on `h2` directly because the client sits on the hot path of every push and
//! plain `h2` costs the least CPU per request of the stacks measured here; when a server picks
//! HTTP/1.1 through ALPN (some OAuth token endpoints do) the client falls back to hyper's
//! HTTP/1.1 connection, one request per connection at a time.
//!
//! Every request is bounded by [`HttpConfig::request_timeout`], answer body included, and
//! [`HttpError::not_sent`] tells the caller when a retry cannot deliver a message twice. When
//! the provider asks for a pause (a 503 with `Retry-After`, 429s for many targets at once), the
//! client answers [`HttpError::Paused`] without calling it until the pause ends (see `breaker`);
//! a platform can pause it too ([`HttpClient::pause`]). [`HttpClient::gauges`] shows the pool
//! and the pause to the metrics.
//!
//! Above the transport, what APNS and FCM both do lives here once: the retry policy
//! ([`RetryPolicy`] over [`ProviderAnswer`]s) and the rate-limited loud log ([`LoudLog`]).

mod answer;
mod breaker;
mod client;
mod connect;
mod driver;
mod error;
mod loud_log;
mod origin;
mod pool;
mod retry;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use answer::{retry_after, ProviderAnswer, MAX_RETRY_AFTER};
pub use breaker::{BreakerConfig, ThrottleKey};
pub use client::HttpClient;
pub use error::HttpError;
pub use loud_log::{LoudLog, PushLabel, LOUD_LOG_INTERVAL};
pub use retry::{RetryPolicy, Tries};

/// Largest response body accepted; provider answers are a few hundred bytes, so anything near
/// this is a misbehaving peer, not an answer.
pub const MAX_RESPONSE_BODY: usize = 256 * 1024;

/// How to reach one origin.
#[derive(Debug)]
pub struct HttpConfig {
    /// An extra trusted CA (PEM, one or more certificates), added to the webpki roots. Lets a
    /// module talk to a test server or a TLS-intercepting proxy.
    pub ca_file: Option<PathBuf>,
    /// The TLS client certificate to present (APNS certificate auth).
    pub client_identity: Option<ClientIdentity>,
    /// Bound on TCP connect plus TLS and HTTP/2 handshakes.
    pub connect_timeout: Duration,
    /// Bound on a whole request: waiting for a connection or a free stream, sending, and
    /// reading the answer.
    pub request_timeout: Duration,
    /// Most connections kept to the origin; more open only when every one is full. HTTP/1.1
    /// connections (one request each at a time) count against it too.
    pub max_connections: usize,
    /// How long an extra connection (not the last one) may carry nothing before it is closed.
    pub idle_timeout: Duration,
    /// When the provider's answers pause the whole client.
    pub breaker: BreakerConfig,
    /// The only addresses connections go to, as the caller looked them up (and checked):
    /// the host is then never looked up again, so a DNS answer that changes cannot send a
    /// connection elsewhere. Empty: each connection looks the host up.
    pub addresses: Vec<SocketAddr>,
}

/// Default of [`HttpConfig::max_connections`] (`apns.maxConnections`, `fcm.maxConnections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            client_identity: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(90),
            breaker: BreakerConfig::default(),
            addresses: Vec::new(),
        }
    }
}

/// A TLS client certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}
