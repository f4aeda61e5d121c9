//! [`ProviderAnswer`]: what one attempt at a push came to, in the terms the retry policy needs.
//! Each platform reads its provider's answer into one; the transport's own failures are read
//! here, the same way for every platform.

use std::time::Duration;

use fpush_traits::{Delivered, PushError};

use crate::HttpError;

/// What one attempt at delivering a push came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAnswer {
    Delivered(Delivered),
    /// Final: the push is answered with this error.
    Failed(PushError),
    /// The provider cannot have accepted the push (a 5xx answer, a request that never went
    /// out): one more try may deliver it.
    Retry(String),
    /// The provider refused our credentials: renew them and try once more (a platform that
    /// cannot renew them answers `Failed` instead).
    Renew(String),
}

impl ProviderAnswer {
    /// Reads a failed request. Only a request that cannot have reached the provider is retried:
    /// a retry after a timeout or a reset could notify the user twice.
    pub fn from_http_error(error: &HttpError) -> Self {
        if let HttpError::Paused(left) = error {
            ProviderAnswer::Failed(PushError::ProviderThrottled {
                retry_after: Some(*left),
            })
        } else if error.is_timeout() {
            ProviderAnswer::Failed(PushError::Timeout)
        } else if error.not_sent() {
            ProviderAnswer::Retry(error.to_string())
        } else {
            ProviderAnswer::Failed(PushError::Transient(error.to_string()))
        }
    }
}

/// The longest `Retry-After` believed. Providers ask for seconds to minutes; a huge value
/// must not park a module or a token (or overflow a deadline) on the word of one answer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` header in delta-seconds (what Apple and Google send), at most
/// [`MAX_RETRY_AFTER`]; an HTTP date is not honoured.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than a u64 holds still ask for a long pause, not for none.
    let secs = text.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsent_requests_are_retried() {
        let timeout = HttpError::Timeout(Duration::from_secs(1));
        assert_eq!(
            ProviderAnswer::from_http_error(&timeout),
            ProviderAnswer::Failed(PushError::Timeout)
        );
        let refused = HttpError::Refused("goaway".into());
        assert!(matches!(
            ProviderAnswer::from_http_error(&refused),
            ProviderAnswer::Retry(_)
        ));
        let paused = HttpError::Paused(Duration::from_secs(3));
        assert_eq!(
            ProviderAnswer::from_http_error(&paused),
            ProviderAnswer::Failed(PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(3))
            })
        );
        let too_large = HttpError::BodyTooLarge { limit: 1 };
        assert!(matches!(
            ProviderAnswer::from_http_error(&too_large),
            ProviderAnswer::Failed(PushError::Transient(_))
        ));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, " 5 ".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(5)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
        assert_eq!(retry_after(&http::HeaderMap::new()), None);
    }

    #[test]
    fn a_huge_retry_after_is_clamped() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "999999999".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            http::header::RETRY_AFTER,
            u64::MAX.to_string().parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        // Beyond what a u64 holds is still a long pause, not none.
        headers.insert(
            http::header::RETRY_AFTER,
            "99999999999999999999999".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn garbage_in_retry_after_is_no_retry_after() {
        let mut headers = http::HeaderMap::new();
        for garbage in ["", "-5", "1.5", "5s", "0x10", "99999999999999999999999x"] {
            headers.insert(http::header::RETRY_AFTER, garbage.parse().unwrap());
            assert_eq!(retry_after(&headers), None, "{garbage:?}");
        }
    }
}
