//! An in-process Web Push service (RFC 8030): HTTPS with the test CA, HTTP/2 and HTTP/1.1 (or
//! HTTP/1.1 only), answering `POST` to any path with scripted statuses (201 by default) and
//! recording every request it got, body and headers included. A message the real services
//! refuse is refused first, whatever is scripted: no `TTL` (400), an `Urgency` other than
//! RFC 8030's four or a `Topic` over 32 base64url characters (400), a payload not encoded
//! `aes128gcm` (415) or over 4096 bytes (413), a VAPID token that does not verify, names
//! another origin or has expired (403). Every error answer carries a JSON body saying why.
//!
//! [`verify_vapid`] checks an `Authorization: vapid t=…, k=…` header the way a push service
//! does (RFC 8292): the ES256 signature of the token under the key `k`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};

use crate::tls::{serve, ClientAuth, Connection, TestPki, TestServer, TlsError};

/// The largest payload the service takes (RFC 8030, section 7.2).
pub const MAX_PAYLOAD: usize = 4096;

/// Which HTTP versions the service offers through ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// `h2` and `http/1.1`, as the big browser services do.
    Both,
    /// `http/1.1` only.
    Http1Only,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPushAnswer {
    pub status: u16,
    pub retry_after: Option<u64>,
}

impl WebPushAnswer {
    pub fn status(status: u16) -> Self {
        WebPushAnswer {
            status,
            retry_after: None,
        }
    }
}

/// One request as the service saw it.
#[derive(Debug, Clone)]
pub struct WebPushReceived {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The ALPN protocol of the connection (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// What was answered.
    pub status: u16,
}

impl WebPushReceived {
    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    /// `https://localhost:port`, the `aud` a VAPID token must name.
    origin: OnceLock<String>,
    answers: Mutex<VecDeque<WebPushAnswer>>,
    received: Mutex<Vec<WebPushReceived>>,
}

/// A running Web Push test service.
pub struct WebPushTestServer {
    server: TestServer,
    state: Arc<State>,
}

impl WebPushTestServer {
    /// Starts on `127.0.0.1:0` with a certificate from `pki`.
    pub async fn start(pki: &TestPki, versions: Versions) -> Result<Self, TlsError> {
        let alpn: &[&[u8]] = match versions {
            Versions::Both => &[b"h2", b"http/1.1"],
            Versions::Http1Only => &[b"http/1.1"],
        };
        let config = pki.server_config_with_alpn(ClientAuth::None, alpn)?;
        let state = Arc::new(State::default());
        let handler_state = state.clone();
        let server = serve(config, move |req, conn| {
            let state = handler_state.clone();
            async move { handle(&state, req, &conn) }
        })
        .await?;
        let _ = state.origin.set(server.origin());
        Ok(WebPushTestServer { server, state })
    }

    /// `https://localhost:port`.
    pub fn origin(&self) -> String {
        self.server.origin()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// The next requests get these answers, in order; then 201 again.
    pub fn enqueue(&self, answer: WebPushAnswer) {
        lock(&self.state.answers).push_back(answer);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<WebPushReceived> {
        lock(&self.state.received).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.server.connections_accepted()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn handle(state: &State, req: Request<Bytes>, conn: &Connection) -> Response<Bytes> {
    let (answer, why) = match *req.method() {
        Method::POST => match check(req.headers(), req.body(), origin(state)) {
            Err(refusal) => (WebPushAnswer::status(refusal.status), Some(refusal.message)),
            Ok(()) => (
                lock(&state.answers)
                    .pop_front()
                    .unwrap_or(WebPushAnswer::status(201)),
                None,
            ),
        },
        _ => (
            WebPushAnswer::status(405),
            Some("A message is delivered by POST."),
        ),
    };
    let (parts, body) = req.into_parts();
    lock(&state.received).push(WebPushReceived {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers: parts.headers,
        body,
        alpn: conn
            .alpn
            .as_ref()
            .map(|alpn| String::from_utf8_lossy(alpn).into_owned()),
        status: answer.status,
    });
    respond(&answer, why)
}

/// The answer as the services send it: 201 with the message's `Location`; an error with a JSON
/// body saying why (Mozilla's `{"code", "error", "message"}`), which is what a sender logs.
fn respond(answer: &WebPushAnswer, why: Option<&str>) -> Response<Bytes> {
    let mut response = Response::builder().status(answer.status);
    if answer.status == 201 {
        response = response.header("location", "https://localhost/m/1");
    }
    if let Some(seconds) = answer.retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    let body = if answer.status >= 400 {
        response = response.header(http::header::CONTENT_TYPE, "application/json");
        Bytes::from(error_body(answer.status, why))
    } else {
        Bytes::new()
    };
    response
        .body(body)
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

/// `{"code", "error", "message"}`: the status, its name, and why (a scripted answer says what
/// its status means).
fn error_body(status: u16, why: Option<&str>) -> String {
    let name = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Error");
    let message = why.unwrap_or(match status {
        404 | 410 => "The subscription has expired or was removed.",
        413 => "The payload is too large.",
        429 => "Too many messages; retry later.",
        500..=599 => "The push service failed; retry later.",
        _ => "The push service refused the message.",
    });
    serde_json::json!({"code": status, "error": name, "message": message}).to_string()
}

/// Why the service refuses a message: the status, and a sentence for the error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    status: u16,
    message: &'static str,
}

impl Refusal {
    fn new(status: u16, message: &'static str) -> Self {
        Self { status, message }
    }
}

/// What a push service checks before it takes a message (RFC 8030, section 5); `Err` is the
/// status it refuses with, before any scripted answer.
fn check(headers: &HeaderMap, body: &[u8], origin: &str) -> Result<(), Refusal> {
    // A message without a `TTL` (whole seconds) is refused: the service cannot tell how long
    // to keep it.
    let ttl = headers.get("ttl").and_then(|value| value.to_str().ok());
    if !ttl.is_some_and(|ttl| !ttl.is_empty() && ttl.bytes().all(|b| b.is_ascii_digit())) {
        return Err(Refusal::new(
            400,
            "A TTL header of whole seconds is required.",
        ));
    }
    // RFC 8030, section 5.3: an urgency is one of four.
    let urgency = headers.get("urgency").map(|value| value.as_bytes());
    if urgency.is_some_and(|urgency| !URGENCIES.iter().any(|u| urgency.eq_ignore_ascii_case(u))) {
        return Err(Refusal::new(
            400,
            "Urgency must be very-low, low, normal or high.",
        ));
    }
    // RFC 8030, section 5.4: a topic is at most 32 characters of the base64url alphabet.
    let topic = headers.get("topic").map(|value| value.as_bytes());
    if topic.is_some_and(|topic| !is_topic(topic)) {
        return Err(Refusal::new(
            400,
            "Topic must be 1 to 32 characters of the base64url alphabet.",
        ));
    }
    // RFC 8291, section 4: a payload is encrypted as `aes128gcm`; the service cannot deliver
    // any other encoding to a browser.
    let encoding = headers.get(http::header::CONTENT_ENCODING);
    if !body.is_empty()
        && !encoding.is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"aes128gcm"))
    {
        return Err(Refusal::new(
            415,
            "A payload must have Content-Encoding: aes128gcm.",
        ));
    }
    // RFC 8030, section 7.2: a service must take 4096 bytes of payload and may refuse more;
    // the browser services do.
    if body.len() > MAX_PAYLOAD {
        return Err(Refusal::new(413, "The payload is over 4096 bytes."));
    }
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match authorization {
        Some(vapid) if vapid.starts_with("vapid ") => check_vapid(vapid, origin, unix_now())
            .map_err(|status| {
                Refusal::new(status, "The VAPID token is not valid for this service.")
            }),
        _ => Ok(()),
    }
}

/// A VAPID authorization as the services take it (RFC 8292): signed by its `k`, for this
/// service's origin, not expired and expiring within 24 hours. A token that fails is refused
/// with 403 (section 4.2); a message without one goes to an unrestricted subscription.
fn check_vapid(authorization: &str, origin: &str, now: u64) -> Result<(), u16> {
    let claims = verify_vapid(authorization).map_err(|_| 403u16)?.claims;
    let exp = claims["exp"].as_u64().unwrap_or(0);
    if claims["aud"] != origin || exp <= now || exp > now + VAPID_MAX_LIFETIME {
        return Err(403);
    }
    Ok(())
}

fn is_topic(topic: &[u8]) -> bool {
    (1..=32).contains(&topic.len())
        && topic
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// RFC 8030's `Urgency` values (section 5.3).
const URGENCIES: [&[u8]; 4] = [b"very-low", b"low", b"normal", b"high"];

/// RFC 8292, section 2: `exp` no more than 24 hours after the request.
const VAPID_MAX_LIFETIME: u64 = 24 * 3600;

fn origin(state: &State) -> &str {
    state.origin.get().map_or("", String::as_str)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What a VAPID token said, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapidClaims {
    /// The JWT's claims, as JSON.
    pub claims: serde_json::Value,
    /// The key of `k`, raw (an uncompressed P-256 point).
    pub key: Vec<u8>,
}

/// Checks an `Authorization: vapid t=JWT, k=KEY` value as RFC 8292 says: `k` is base64url
/// without padding, and the token is an ES256 JWT signed by that key.
pub fn verify_vapid(authorization: &str) -> Result<VapidClaims, String> {
    let rest = authorization
        .strip_prefix("vapid ")
        .ok_or("not a vapid authorization")?;
    let (mut token, mut key) = (None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => token = Some(value.trim()),
            Some(("k", value)) => key = Some(value.trim()),
            _ => return Err(format!("unexpected part {part:?}")),
        }
    }
    let (token, key) = (token.ok_or("no t")?, key.ok_or("no k")?);
    if key.contains(['+', '/', '=']) {
        return Err("k is not base64url without padding".into());
    }
    let key = URL_SAFE_NO_PAD.decode(key).map_err(|e| format!("k: {e}"))?;
    let (signed, signature) = token.rsplit_once('.').ok_or("t is not a JWT")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("signature: {e}"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "the signature does not verify under k".to_owned())?;
    let (header, claims) = signed.split_once('.').ok_or("t is not a JWT")?;
    let json = |part: &str| -> Result<serde_json::Value, String> {
        let raw = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
        serde_json::from_slice(&raw).map_err(|e| e.to_string())
    };
    if json(header)?["alg"] != "ES256" {
        return Err("alg is not ES256".into());
    }
    Ok(VapidClaims {
        claims: json(claims)?,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    const ORIGIN: &str = "https://localhost:4443";

    /// `vapid t=…, k=…` for `claims`, signed by a fresh key.
    fn vapid(claims: serde_json::Value) -> String {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ES256"}"#);
        let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = key.sign(&rng, signed.as_bytes()).unwrap();
        let k = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        format!(
            "vapid t={signed}.{}, k={k}",
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn a_vapid_token_must_verify_name_this_service_and_be_current() {
        let now = 1_800_000_000;
        let claims = |aud: &str, exp: u64| serde_json::json!({"aud": aud, "exp": exp, "sub": "mailto:ops@example.org"});
        let good = vapid(claims(ORIGIN, now + 3600));
        assert_eq!(check_vapid(&good, ORIGIN, now), Ok(()));
        for (why, token) in [
            (
                "another origin",
                vapid(claims("https://other.example", now + 3600)),
            ),
            ("expired", vapid(claims(ORIGIN, now - 1))),
            ("over 24 h", vapid(claims(ORIGIN, now + 24 * 3600 + 1))),
            ("no exp", vapid(serde_json::json!({"aud": ORIGIN}))),
        ] {
            assert_eq!(check_vapid(&token, ORIGIN, now), Err(403), "{why}");
        }
        // Signed by another key than its `k`.
        let (signed, _) = good.split_once(", k=").unwrap();
        let other = vapid(claims(ORIGIN, now + 3600));
        let (_, other_k) = other.split_once(", k=").unwrap();
        let forged = format!("{signed}, k={other_k}");
        assert_eq!(check_vapid(&forged, ORIGIN, now), Err(403));
        // Through the whole check, with the service's clock.
        let mut request = headers(&[]);
        let bad = vapid(claims("https://other.example", unix_now() + 3600));
        request.insert("authorization", bad.parse().unwrap());
        assert_eq!(status(check(&request, b"", ORIGIN)), Err(403));
        let fresh = vapid(claims(ORIGIN, unix_now() + 3600));
        request.insert("authorization", fresh.parse().unwrap());
        assert_eq!(status(check(&request, b"", ORIGIN)), Ok(()));
    }

    fn status(checked: Result<(), Refusal>) -> Result<(), u16> {
        checked.map_err(|refusal| refusal.status)
    }

    /// The headers of a message, with `extra` set on top of a good `TTL`.
    fn headers(extra: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("ttl", "60".parse().unwrap());
        for (name, value) in extra {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_message_without_a_ttl_is_refused() {
        assert_eq!(status(check(&headers(&[]), b"", ORIGIN)), Ok(()));
        assert_eq!(
            status(check(&headers(&[("ttl", "0")]), b"", ORIGIN)),
            Ok(())
        );
        let mut missing = headers(&[]);
        missing.remove("ttl");
        assert_eq!(status(check(&missing, b"", ORIGIN)), Err(400));
        for bad in ["", "4w", "-1", "1.5"] {
            assert_eq!(
                status(check(&headers(&[("ttl", bad)]), b"", ORIGIN)),
                Err(400),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_body_must_be_encrypted_as_aes128gcm() {
        let body = [0u8; 100];
        let with = |encoding: &str| headers(&[("content-encoding", encoding)]);
        assert_eq!(status(check(&with("aes128gcm"), &body, ORIGIN)), Ok(()));
        for other in ["aesgcm", "gzip", "identity", "AES128GCM2", ""] {
            assert_eq!(
                status(check(&with(other), &body, ORIGIN)),
                Err(415),
                "{other:?}"
            );
        }
        assert_eq!(status(check(&headers(&[]), &body, ORIGIN)), Err(415));
        // A message without a body needs no encoding.
        assert_eq!(status(check(&headers(&[]), b"", ORIGIN)), Ok(()));
    }

    #[test]
    fn urgency_is_one_of_rfc_8030_s_four_values() {
        // RFC 8030's ABNF names them, and ABNF strings are case-insensitive.
        for good in ["very-low", "low", "normal", "high", "High"] {
            let request = headers(&[("urgency", good)]);
            assert_eq!(status(check(&request, b"", ORIGIN)), Ok(()), "{good}");
        }
        for bad in ["urgent", "very low", "very_low", "", "5"] {
            let request = headers(&[("urgency", bad)]);
            assert_eq!(status(check(&request, b"", ORIGIN)), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn a_topic_is_at_most_32_characters_of_base64url() {
        for good in ["a", "chat-room_7", &"A".repeat(32)] {
            let request = headers(&[("topic", good)]);
            assert_eq!(status(check(&request, b"", ORIGIN)), Ok(()), "{good}");
        }
        for bad in [&"A".repeat(33), "chat room", "a+b/c=", ""] {
            let request = headers(&[("topic", bad)]);
            assert_eq!(status(check(&request, b"", ORIGIN)), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn every_error_answer_carries_a_body_that_says_why() {
        let refused = check(&HeaderMap::new(), b"", ORIGIN).unwrap_err();
        for (answer, why) in [
            (WebPushAnswer::status(refused.status), Some(refused.message)),
            (WebPushAnswer::status(410), None),
            (WebPushAnswer::status(429), None),
        ] {
            let response = respond(&answer, why);
            assert_eq!(response.status().as_u16(), answer.status);
            assert_eq!(
                response.headers()["content-type"],
                "application/json",
                "{answer:?}"
            );
            let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["code"], answer.status);
            assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
            assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
        }
        let created = respond(&WebPushAnswer::status(201), None);
        assert!(created.body().is_empty());
        assert!(created.headers().contains_key("location"));
    }

    #[test]
    fn a_payload_over_4096_bytes_is_refused_as_too_large() {
        let encoded = headers(&[("content-encoding", "aes128gcm")]);
        assert_eq!(status(check(&encoded, &[0; 4096], ORIGIN)), Ok(()));
        assert_eq!(status(check(&encoded, &[0; 4097], ORIGIN)), Err(413));
    }
}
