//! [`ProviderAnswer`]: what one attempt at a push came to, in the terms the retry policy needs.
//! Each platform reads its provider's answer into one; the transport's own failures are read
//! here, the same way for every platform.

use std::time::{Duration, SystemTime};

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
            ProviderAnswer::Failed(PushError::ProviderPaused { retry_after: *left })
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

/// A `Retry-After` header in delta-seconds (what Apple and Google send) or as an HTTP date (one
/// already past reads as no wait), at most [`MAX_RETRY_AFTER`]; anything else reads as none.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds still ask for a long pause, not for none.
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

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
            ProviderAnswer::Failed(PushError::ProviderPaused {
                retry_after: Duration::from_secs(3)
            })
        );
        let too_large = HttpError::BodyTooLarge { limit: 1 };
        assert!(matches!(
            ProviderAnswer::from_http_error(&too_large),
            ProviderAnswer::Failed(PushError::Transient(_))
        ));
    }

    fn header(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, value.parse().unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(retry_after(&header(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(&http::HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_reads_an_http_date_as_the_wait_until_then() {
        // 2015-10-21 07:28:00 UTC.
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let at = |value: &str| retry_after_at(&header(value), now);
        assert_eq!(
            at("Wed, 21 Oct 2015 07:30:00 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            at("Tue, 01 Mar 2016 00:00:00 GMT"),
            Some(MAX_RETRY_AFTER),
            "months later: clamped"
        );
        assert_eq!(at("Fri, 31 Dec 9999 23:59:59 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("Wed, 21 Oct 2015 07:27:59 GMT"), Some(Duration::ZERO));
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            at("Tue, 29 Feb 2000 12:00:00 GMT").map(|_| ()),
            Some(()),
            "a leap day"
        );
        assert_eq!(
            at("Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60)),
            "the obsolete RFC 850 form, which RFC 9110 asks recipients to read"
        );
        assert_eq!(
            at("Wed Oct 21 07:29:30 2015"),
            Some(Duration::from_secs(90)),
            "asctime's form"
        );
    }

    #[test]
    fn garbage_in_retry_after_is_no_retry_after() {
        for garbage in [
            "",
            "-5",
            "1.5",
            "5s",
            "0x10",
            "99999999999999999999999x",
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Wed, 21 Foo 2015 07:28:00 GMT",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 24:28:00 GMT",
            "Wed, +1 Oct 2015 07:28:00 GMT",
            "Wed 21 Oct 2015 07:28:00 GMT ",
        ] {
            assert_eq!(retry_after(&header(garbage)), None, "{garbage:?}");
        }
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
}
