//! What can go wrong talking to a provider, and whether a retry is safe.

use std::path::PathBuf;
use std::time::Duration;

/// A failed request or a client that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid origin {origin:?}: {reason}")]
    InvalidOrigin { origin: String, reason: String },
    #[error("cannot read CA file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {} holds no usable certificate", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("TLS configuration rejected: {0}")]
    TlsConfig(#[source] rustls::Error),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// TCP connect, TLS or protocol handshake failed: nothing was sent.
    #[error("connecting to {origin} failed: {reason}")]
    Connect { origin: String, reason: String },
    /// The TLS handshake failed (certificate rejected either way, protocol mismatch): nothing
    /// was sent, and retrying rarely helps, so callers usually treat it as misconfiguration.
    #[error("TLS handshake with {origin} failed: {reason}")]
    Tls { origin: String, reason: String },
    /// The request did not finish within the request timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The server refused the stream or announced GOAWAY before processing it.
    #[error("request refused before processing: {0}")]
    Refused(String),
    /// The connection failed while the request was in flight; the server may have processed it.
    #[error("HTTP/2 request failed: {0}")]
    H2(#[source] h2::Error),
    /// The HTTP/1.1 exchange failed; the server may have processed the request.
    #[error("HTTP/1.1 request failed: {0}")]
    Http1(#[source] hyper::Error),
    #[error("response body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The provider asked this client to pause; the request was not sent. The duration is what
    /// is left of the pause.
    #[error("provider asked for a pause; {}s left", .0.as_secs())]
    Paused(Duration),
}

impl HttpError {
    /// True when the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Timeout(_))
    }

    /// True when the server cannot have processed the request (connect/TLS failed, stream
    /// refused, GOAWAY before the stream was processed): only then may the caller retry.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. } | HttpError::Tls { .. } | HttpError::Refused(_)
        )
    }

    /// True when the TLS handshake failed (as opposed to the network or the server).
    pub fn is_tls(&self) -> bool {
        matches!(self, HttpError::Tls { .. })
    }

    /// Classifies an `h2` error on an in-flight stream. A remote GOAWAY reaches only the
    /// streams above its last-stream-id (the server promises it did not process them), and
    /// `REFUSED_STREAM` means the same for one stream (RFC 9113, section 8.7).
    pub(crate) fn from_stream(err: h2::Error) -> Self {
        let refused = err.reason() == Some(h2::Reason::REFUSED_STREAM);
        if (err.is_go_away() && err.is_remote()) || refused {
            HttpError::Refused(err.to_string())
        } else {
            HttpError::H2(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsent_failures_allow_a_retry() {
        let connect = HttpError::Connect {
            origin: "https://a".into(),
            reason: "refused".into(),
        };
        assert!(connect.not_sent());
        assert!(!connect.is_timeout());
        assert!(HttpError::Refused("goaway".into()).not_sent());
        let timeout = HttpError::Timeout(Duration::from_secs(1));
        assert!(timeout.is_timeout());
        assert!(!timeout.not_sent());
        assert!(!HttpError::BodyTooLarge { limit: 1 }.not_sent());
    }

    #[test]
    fn refused_stream_is_unsent_but_other_resets_are_not() {
        assert!(HttpError::from_stream(h2::Error::from(h2::Reason::REFUSED_STREAM)).not_sent());
        assert!(!HttpError::from_stream(h2::Error::from(h2::Reason::INTERNAL_ERROR)).not_sent());
    }
}
