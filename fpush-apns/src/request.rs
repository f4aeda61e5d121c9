//! The request Apple gets for one push: `POST /3/device/<token>` with the module's fixed headers
//! (prepared once), a fresh `apns-expiration` and the provider token when there is one.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use fpush_traits::PushError;
use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::clock::unix_now;
use crate::config::{ApnsConfig, ApnsPushType};

/// Apple's limit on `apns-collapse-id`.
const MAX_COLLAPSE_ID: usize = 64;
/// Device tokens are 64 hex digits today; leave room, but keep them sane for a URL path.
const MAX_TOKEN_LEN: usize = 200;
/// Where a push for one device token goes; the token follows.
const DEVICE_PATH: &str = "/3/device/";
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// What every request of one module shares.
pub(crate) struct RequestTemplate {
    /// The headers every request carries, built once: a request starts from a clone
    /// (reference-counted values) instead of hashing each name in again.
    headers: HeaderMap,
    expiration: Duration,
    /// The last `apns-expiration` value and the unix second it was computed for: thousands
    /// of pushes a second share one.
    expiration_header: Mutex<(u64, HeaderValue)>,
}

impl RequestTemplate {
    /// Checks the header settings; the error says which one is wrong.
    pub fn new(cfg: &ApnsConfig) -> Result<Self, String> {
        let header = |key: &str, value: &str| {
            HeaderValue::from_str(value)
                .map_err(|_| format!("{key} {value:?} is not a valid header value"))
        };
        if cfg.topic.trim().is_empty() {
            return Err("topic (the app's bundle id) is empty".into());
        }
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(APNS_TOPIC, header("topic", &cfg.topic)?);
        headers.insert(
            APNS_PUSH_TYPE,
            HeaderValue::from_static(cfg.push_type.header_value()),
        );
        headers.insert(APNS_PRIORITY, HeaderValue::from(u16::from(priority(cfg)?)));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(id) = &cfg.collapse_id {
            if id.len() > MAX_COLLAPSE_ID {
                return Err(format!("collapseId is over {MAX_COLLAPSE_ID} bytes"));
            }
            headers.insert(APNS_COLLAPSE_ID, header("collapseId", id)?);
        }
        Ok(Self {
            headers,
            expiration: cfg.expiration,
            expiration_header: Mutex::new((0, HeaderValue::from_static("0"))),
        })
    }

    /// The request for `token`; `plausible_token` must have passed.
    pub fn request(
        &self,
        token: &str,
        body: Bytes,
        bearer: Option<&HeaderValue>,
    ) -> Result<http::Request<Bytes>, PushError> {
        let mut path = String::with_capacity(DEVICE_PATH.len() + token.len());
        path.push_str(DEVICE_PATH);
        path.push_str(token);
        // Takes the string without copying it; `plausible_token` already kept the path valid.
        let path = PathAndQuery::try_from(path)
            .map_err(|e| PushError::Transient(format!("cannot build the request: {e}")))?;
        let mut request = http::Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from(path);
        let headers = request.headers_mut();
        *headers = self.headers.clone();
        headers.insert(APNS_EXPIRATION, self.expiration_value());
        if let Some(bearer) = bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        Ok(request)
    }

    /// `apns-expiration`: unix seconds after which Apple drops an undelivered push (`0`: try
    /// once). Formatted once per second, not once per push.
    fn expiration_value(&self) -> HeaderValue {
        if self.expiration.is_zero() {
            return HeaderValue::from_static("0");
        }
        let expiration = unix_now().saturating_add(self.expiration.as_secs());
        match self.expiration_header.lock() {
            Ok(mut cached) => {
                if cached.0 != expiration {
                    *cached = (expiration, HeaderValue::from(expiration));
                }
                cached.1.clone()
            }
            Err(_) => HeaderValue::from(expiration),
        }
    }
}

/// `apns-priority`: 10 for alerts, 5 for background pushes unless set; Apple refuses 10 for
/// background pushes.
fn priority(cfg: &ApnsConfig) -> Result<u8, String> {
    match (cfg.priority, cfg.push_type) {
        (None, ApnsPushType::Alert) => Ok(10),
        (None, ApnsPushType::Background) => Ok(5),
        (Some(10), ApnsPushType::Background) => {
            Err("background pushes must use priority 5 or 1".into())
        }
        (Some(p @ (1 | 5 | 10)), _) => Ok(p),
        (Some(p), _) => Err(format!("priority {p} is not 10, 5 or 1")),
    }
}

/// Tokens go into the URL path: anything but letters, digits, `-`, `_` and `.` cannot be a
/// device token, so Apple is not asked.
pub(crate) fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_before_they_reach_a_url() {
        assert!(plausible_token("0123abcdef"));
        assert!(plausible_token("dead-token_1.x"));
        assert!(!plausible_token(""));
        assert!(!plausible_token("a/b"));
        assert!(!plausible_token("a?b"));
        assert!(!plausible_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }
}
