//! An in-process APNS provider API: HTTP/2 over TLS (test CA), checking what Apple checks and
//! answering the way Apple answers.
//!
//! Every request to `POST /3/device/<token>` is checked in Apple's order: method and path, the
//! device token (hex, 64 to 200 digits; a token of the prefix convention below, or `ok…`,
//! passes too),
//! no header given twice, `apns-id` (a canonical UUID when present), `apns-topic` (one the
//! client certificate covers, under certificate auth: `TopicDisallowed` otherwise),
//! `apns-push-type` (a VoIP push for `<topic>.voip`, nothing else there), `apns-priority`, `apns-expiration`, `apns-collapse-id`, the provider token (ES256 signature
//! with the test key, `kid`, `iss`, `iat` under an hour old) or the client certificate the TLS
//! handshake verified, then the body (valid JSON object, at most 4096 bytes, 5120 for
//! `apns-push-type: voip`). A request that passes gets, in order of precedence: the next answer
//! queued for its token ([`ApnsTestServer::enqueue`]), the answer of the responder closure
//! ([`ApnsTestServer::set_responder`]), or the answer the token's prefix asks for
//! ([`answer_by_prefix`]); anything else is delivered (200). Every answer carries an `apns-id`.
//! Every request is recorded ([`ApnsTestServer::received`]).
//!
//! Answers can carry faults ([`Fault`]): never answer, drop the connection, send GOAWAY, or
//! answer late; [`ApnsTestServer::hold`] keeps every answer back until released, and
//! [`ApnsTestServer::tls`] can refuse TLS altogether.
//!
//! [`ApnsHarness`] is how tests get one: the server with its CA, a `.p8` key and `.p12` client
//! certificates on disk, and the `apns` settings block that points a module at it.

mod harness;
mod provider_token;

pub use harness::{ApnsHarness, ApnsHarnessOptions, KEY_ID, P12_PASSWORD, TEAM_ID, TOPIC};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use rcgen::KeyPair;

use crate::tls::{
    serve_with, ClientAuth, Connection, IssuedNames, ServeOptions, TestPki, TestServer, TlsError,
};
use provider_token::{Claims, TokenVerifier};

/// Apple's payload limit for regular pushes.
pub const MAX_PAYLOAD: usize = 4096;
/// Apple's payload limit for VoIP (PushKit) pushes.
pub const MAX_VOIP_PAYLOAD: usize = 5120;
/// Apple refuses provider tokens older than this.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A `.p8`-style signing key (ECDSA P-256, PKCS#8 PEM) and its public half.
pub struct ApnsTestKey {
    pub private_pem: String,
    pub public_pem: String,
}

impl ApnsTestKey {
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        Ok(Self {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        })
    }

    /// Writes the private key as Apple hands it out (`AuthKey_<keyid>.p8`).
    pub fn write_p8(&self, path: &Path) -> Result<(), TlsError> {
        std::fs::write(path, &self.private_pem).map_err(|source| TlsError::Io {
            what: path.display().to_string(),
            source,
        })
    }
}

/// What the server accepts: the app's topic and the credentials of its provider.
#[derive(Debug, Clone)]
pub struct ApnsExpect {
    pub topic: String,
    pub team_id: String,
    pub key_id: String,
    /// The public key that verifies provider tokens; `None` refuses token auth.
    pub jwt_public_key_pem: Option<String>,
    /// Accept client certificates issued by the test CA (certificate auth).
    pub accept_client_cert: bool,
}

/// Something to do instead of (or besides) answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Never answer (the stream stays open until the client gives up).
    Stall,
    /// Drop the whole connection while this request is in flight.
    DropConnection,
    /// Send GOAWAY, then answer this request normally.
    GoAway,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApnsAnswer {
    pub status: u16,
    pub reason: Option<String>,
    pub retry_after: Option<u64>,
    pub delay: Option<Duration>,
    pub fault: Fault,
}

impl ApnsAnswer {
    pub fn ok() -> Self {
        Self {
            status: 200,
            ..Self::default()
        }
    }

    /// An error answer with Apple's JSON body `{"reason": reason}`.
    pub fn error(status: u16, reason: &str) -> Self {
        Self {
            status,
            reason: Some(reason.to_string()),
            ..Self::default()
        }
    }

    pub fn fault(fault: Fault) -> Self {
        Self {
            fault,
            ..Self::ok()
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// The shared token-prefix convention of the fake providers: `dead…` → 410 `Unregistered`,
/// `baddevice…` → 400 `BadDeviceToken`, `unavailable…` → 503, `throttled…` → 429
/// `TooManyRequests` (without `Retry-After`: Apple documents none, so the client's own hold
/// applies; [`ApnsAnswer::with_retry_after`] adds one), `stall…` → no answer, `unavailable-once…` / `throttled-once…` → that answer
/// for the token's first request and 200 after, `ok…` → 200. `None` means "deliver".
pub fn answer_by_prefix(token: &str, earlier_requests: u64) -> Option<ApnsAnswer> {
    let unavailable = || ApnsAnswer::error(503, "ServiceUnavailable");
    let throttled = || ApnsAnswer::error(429, "TooManyRequests");
    if token.starts_with("unavailable-once") {
        return (earlier_requests == 0).then(unavailable);
    }
    if token.starts_with("throttled-once") {
        return (earlier_requests == 0).then(throttled);
    }
    if token.starts_with("dead") {
        Some(ApnsAnswer::error(410, "Unregistered"))
    } else if token.starts_with("baddevice") {
        Some(ApnsAnswer::error(400, "BadDeviceToken"))
    } else if token.starts_with("unavailable") {
        Some(unavailable())
    } else if token.starts_with("throttled") {
        Some(throttled())
    } else if token.starts_with("stall") {
        Some(ApnsAnswer::fault(Fault::Stall))
    } else {
        None
    }
}

/// A token of the prefix convention: readable, so that a test can say what it wants answered;
/// `ok…` asks for delivery. Any other token must look like Apple's.
fn is_readable_token(token: &str) -> bool {
    token.starts_with("ok") || answer_by_prefix(token, 0).is_some()
}

/// One request as the server saw it, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub token: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The provider token (without `bearer `), when one was sent.
    pub jwt: Option<String>,
    /// Whether the connection presented a (verified) client certificate.
    pub client_cert: bool,
    /// The topic that certificate was issued for (its common name).
    pub cert_topic: Option<String>,
    /// The connection's sequence number on this server.
    pub connection: u64,
    /// What was answered; 0 when a fault meant no answer.
    pub status: u16,
    pub reason: Option<String>,
}

/// Decides an answer for a request that passed Apple's checks.
pub type Responder = Arc<dyn Fn(&Received) -> Option<ApnsAnswer> + Send + Sync>;
/// Sees every request after it is answered (e.g. to write a record file).
pub type Observer = Arc<dyn Fn(&Received) + Send + Sync>;

struct State {
    expect: ApnsExpect,
    /// What each client certificate was issued for: the topics certificate auth may push to.
    issued: IssuedNames,
    verifier: Option<TokenVerifier>,
    verified: Mutex<HashMap<String, Claims>>,
    /// Keep every request (and count them per token); off for load runs.
    recording: AtomicBool,
    hold: tokio::sync::watch::Sender<bool>,
    queued: Mutex<HashMap<String, VecDeque<ApnsAnswer>>>,
    seen: Mutex<HashMap<String, u64>>,
    responder: Mutex<Option<Responder>>,
    observer: Mutex<Option<Observer>>,
    received: Mutex<Vec<Received>>,
    next_id: AtomicU64,
}

/// A running APNS test server; stops when dropped.
pub struct ApnsTestServer {
    server: TestServer,
    state: Arc<State>,
}

impl ApnsTestServer {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(pki: &TestPki, expect: ApnsExpect) -> Result<Self, TlsError> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), pki, expect).await
    }

    pub async fn start_on(
        addr: SocketAddr,
        pki: &TestPki,
        expect: ApnsExpect,
    ) -> Result<Self, TlsError> {
        Self::start_with(addr, pki, expect, ServeOptions::default()).await
    }

    /// Like [`ApnsTestServer::start_on`], announcing the HTTP/2 settings given (e.g. a stream
    /// limit other than Apple's 1000).
    pub async fn start_with(
        addr: SocketAddr,
        pki: &TestPki,
        expect: ApnsExpect,
        options: ServeOptions,
    ) -> Result<Self, TlsError> {
        let client_auth = if expect.accept_client_cert {
            ClientAuth::Optional
        } else {
            ClientAuth::None
        };
        let state = Arc::new(State::new(expect, pki.issued_names())?);
        let handler_state = state.clone();
        // HTTP/2 only, as Apple: a client that fell back to HTTP/1.1 fails here, not in production.
        let tls = pki.server_config_with_alpn(client_auth, &[b"h2"])?;
        let server = serve_with(addr, tls, options, move |req, conn| {
            let state = handler_state.clone();
            async move { state.handle(req, conn).await }
        })
        .await?;
        Ok(Self { server, state })
    }

    /// `https://localhost:port`, what `apns.endpoint` should be.
    pub fn origin(&self) -> String {
        self.server.origin()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The underlying TLS server (connection count, refusing TLS).
    pub fn tls(&self) -> &TestServer {
        &self.server
    }

    /// Queues answers for the next requests for `token` (they pass Apple's checks first).
    pub fn enqueue(&self, token: &str, answers: impl IntoIterator<Item = ApnsAnswer>) {
        if let Ok(mut queued) = self.state.queued.lock() {
            queued.entry(token.to_string()).or_default().extend(answers);
        }
    }

    /// Decides answers for requests with nothing queued; `None` falls through to the prefix
    /// convention.
    pub fn set_responder(
        &self,
        responder: impl Fn(&Received) -> Option<ApnsAnswer> + Send + Sync + 'static,
    ) {
        if let Ok(mut slot) = self.state.responder.lock() {
            *slot = Some(Arc::new(responder));
        }
    }

    pub fn set_observer(&self, observer: impl Fn(&Received) + Send + Sync + 'static) {
        if let Ok(mut slot) = self.state.observer.lock() {
            *slot = Some(Arc::new(observer));
        }
    }

    /// While `false`, requests are neither kept nor counted per token (a load run sends
    /// millions; an observer still sees each); the prefix convention then sees every request
    /// as a token's first.
    pub fn set_recording(&self, recording: bool) {
        self.state.recording.store(recording, Ordering::SeqCst);
    }

    /// While `true`, requests are taken but not answered; `false` releases them all.
    pub fn hold(&self, hold: bool) {
        self.state.hold.send_replace(hold);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many distinct provider tokens passed the checks so far: Apple refuses a key whose
    /// token changes more often than every 20 minutes (`TooManyProviderTokenUpdates`).
    pub fn provider_tokens_seen(&self) -> usize {
        self.state.verified.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// How many requests for `token` arrived.
    pub fn count_for(&self, token: &str) -> usize {
        self.state
            .received
            .lock()
            .map(|r| r.iter().filter(|r| r.token == token).count())
            .unwrap_or(0)
    }
}

impl State {
    fn new(expect: ApnsExpect, issued: IssuedNames) -> Result<Self, TlsError> {
        let verifier = match &expect.jwt_public_key_pem {
            Some(pem) => Some(
                TokenVerifier::new(pem, &expect.key_id, &expect.team_id).map_err(|e| {
                    TlsError::Io {
                        what: "APNS test public key".into(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    }
                })?,
            ),
            None => None,
        };
        Ok(Self {
            expect,
            issued,
            verifier,
            verified: Mutex::default(),
            recording: AtomicBool::new(true),
            hold: tokio::sync::watch::channel(false).0,
            queued: Mutex::default(),
            seen: Mutex::default(),
            responder: Mutex::default(),
            observer: Mutex::default(),
            received: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    async fn handle(&self, req: Request<Bytes>, conn: Arc<Connection>) -> Response<Bytes> {
        let (parts, body) = req.into_parts();
        let token = parts
            .uri
            .path()
            .strip_prefix("/3/device/")
            .unwrap_or_default()
            .to_string();
        let jwt = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bearer "))
            .map(str::to_string);
        let mut received = Received {
            token,
            headers: parts.headers,
            body,
            jwt,
            client_cert: conn.client_cert.is_some(),
            cert_topic: conn
                .client_cert
                .as_ref()
                .and_then(|c| self.issued.name_of(c)),
            connection: conn.id,
            status: 0,
            reason: None,
        };
        let earlier = self.seen(&received.token);
        let answer = match self.check(&parts.method, parts.uri.path(), &received) {
            Err(refusal) => refusal,
            Ok(()) => self
                .queued_answer(&received.token)
                .or_else(|| self.responder_answer(&received))
                .or_else(|| answer_by_prefix(&received.token, earlier))
                .unwrap_or_else(ApnsAnswer::ok),
        };
        if answer.fault == Fault::None || answer.fault == Fault::GoAway {
            received.status = answer.status;
            received.reason = answer.reason.clone();
        }
        self.record(&received);

        // A held request waits for the release, or ends with its connection when the server
        // stops.
        let mut held = self.hold.subscribe();
        let _ = held.wait_for(|hold| !*hold).await;
        if let Some(delay) = answer.delay {
            tokio::time::sleep(delay).await;
        }
        match answer.fault {
            Fault::None => {}
            Fault::Stall => std::future::pending::<()>().await,
            Fault::DropConnection => {
                conn.drop_connection();
                std::future::pending::<()>().await;
            }
            Fault::GoAway => conn.goaway(),
        }
        self.respond(&answer, received.headers.get("apns-id"))
    }

    fn seen(&self, token: &str) -> u64 {
        if !self.recording.load(Ordering::Relaxed) {
            return 0;
        }
        let Ok(mut seen) = self.seen.lock() else {
            return 0;
        };
        let count = seen.entry(token.to_string()).or_insert(0);
        *count += 1;
        *count - 1
    }

    fn queued_answer(&self, token: &str) -> Option<ApnsAnswer> {
        self.queued.lock().ok()?.get_mut(token)?.pop_front()
    }

    fn responder_answer(&self, received: &Received) -> Option<ApnsAnswer> {
        let responder = self.responder.lock().ok()?.clone()?;
        responder(received)
    }

    fn record(&self, received: &Received) {
        if self.recording.load(Ordering::Relaxed) {
            if let Ok(mut all) = self.received.lock() {
                all.push(received.clone());
            }
        }
        let observer = self.observer.lock().ok().and_then(|o| o.clone());
        if let Some(observer) = observer {
            observer(received);
        }
    }

    /// The answer as Apple sends it: every one, error or not, carries an `apns-id`, the
    /// request's own when it had a valid one, else a new UUID.
    fn respond(&self, answer: &ApnsAnswer, request_id: Option<&HeaderValue>) -> Response<Bytes> {
        let mut builder = Response::builder().status(answer.status);
        builder = match request_id.filter(|id| is_canonical_uuid(id.as_bytes())) {
            Some(id) => builder.header("apns-id", id.clone()),
            None => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                builder.header("apns-id", format!("00000000-0000-4000-8000-{id:012X}"))
            }
        };
        if let Some(seconds) = answer.retry_after {
            builder = builder.header(http::header::RETRY_AFTER, seconds);
        }
        let body = match &answer.reason {
            Some(reason) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(error_body(answer.status, reason))
            }
            None => Bytes::new(),
        };
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(Bytes::new()))
    }

    /// Apple's checks, in Apple's order; `Err` is the refusal.
    fn check(&self, method: &Method, path: &str, r: &Received) -> Result<(), ApnsAnswer> {
        let refuse = |status: u16, reason: &str| Err(ApnsAnswer::error(status, reason));
        if method != Method::POST {
            return refuse(405, "MethodNotAllowed");
        }
        if !path.starts_with("/3/device/") {
            return refuse(404, "BadPath");
        }
        if r.token.is_empty() {
            return refuse(400, "MissingDeviceToken");
        }
        if !is_device_token(&r.token) && !is_readable_token(&r.token) {
            return refuse(400, "BadDeviceToken");
        }
        if has_repeated_header(&r.headers) {
            return refuse(400, "DuplicateHeaders");
        }
        if let Some(id) = r.headers.get("apns-id") {
            if !is_canonical_uuid(id.as_bytes()) {
                return refuse(400, "BadMessageId");
            }
        }
        let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
        if let (None, Some(certified), Some(topic)) = (&r.jwt, &r.cert_topic, header("apns-topic"))
        {
            if !certificate_covers(certified, topic) {
                return refuse(400, "TopicDisallowed");
            }
        }
        match header("apns-topic") {
            None => return refuse(400, "MissingTopic"),
            // PushKit pushes go to the app's `<topic>.voip`.
            Some(topic)
                if topic != self.expect.topic
                    && topic.strip_suffix(".voip") != Some(self.expect.topic.as_str()) =>
            {
                return refuse(400, "DeviceTokenNotForTopic")
            }
            Some(_) => {}
        }
        let push_type = header("apns-push-type");
        if !matches!(
            push_type,
            Some("alert" | "background" | "voip" | "complication" | "fileprovider" | "mdm")
                | Some("location" | "liveactivity" | "pushtotalk")
        ) {
            return refuse(400, "InvalidPushType");
        }
        check_voip_topic(header("apns-topic"), push_type)?;
        match (header("apns-priority"), push_type) {
            (Some("10"), Some("background")) => return refuse(400, "BadPriority"),
            (Some("10" | "5" | "1") | None, _) => {}
            _ => return refuse(400, "BadPriority"),
        }
        if let Some(expiration) = header("apns-expiration") {
            if expiration.parse::<u64>().is_err() {
                return refuse(400, "BadExpirationDate");
            }
        }
        if let Some(collapse) = r.headers.get("apns-collapse-id") {
            if collapse.len() > 64 {
                return refuse(400, "BadCollapseId");
            }
        }
        self.check_auth(r)?;
        if r.body.is_empty() {
            return refuse(400, "PayloadEmpty");
        }
        if r.body.len() > max_payload(push_type) {
            return refuse(413, "PayloadTooLarge");
        }
        match serde_json::from_slice::<serde_json::Value>(&r.body) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => refuse(400, "BadPayload"),
        }
    }

    fn check_auth(&self, r: &Received) -> Result<(), ApnsAnswer> {
        let refuse = |reason: &str| Err(ApnsAnswer::error(403, reason));
        let Some(jwt) = &r.jwt else {
            return if r.client_cert && self.expect.accept_client_cert {
                Ok(())
            } else {
                refuse("MissingProviderToken")
            };
        };
        let claims = match self.verified_claims(jwt) {
            Some(claims) => claims,
            None => return refuse("InvalidProviderToken"),
        };
        let now = unix_now();
        if claims.iat > now + 60 {
            return refuse("InvalidProviderToken");
        }
        if now.saturating_sub(claims.iat) > TOKEN_LIFETIME.as_secs() {
            return refuse("ExpiredProviderToken");
        }
        Ok(())
    }

    /// The claims of a provider token whose signature, `kid` and `iss` are right. Verified
    /// tokens are remembered (providers reuse one for up to an hour), which keeps the test
    /// server cheap enough for load tests.
    fn verified_claims(&self, jwt: &str) -> Option<Claims> {
        if let Some(claims) = self.verified.lock().ok()?.get(jwt) {
            return Some(claims.clone());
        }
        let claims = self.verifier.as_ref()?.verify(jwt)?;
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(jwt.to_string(), claims.clone());
        }
        Some(claims)
    }
}

/// Apple's error body: `{"reason": …}`, and for a 410 the `timestamp` (milliseconds since the
/// epoch) at which Apple last knew the token was no longer valid for the topic.
fn error_body(status: u16, reason: &str) -> String {
    let mut body = serde_json::json!({ "reason": reason });
    if status == 410 {
        body["timestamp"] = (unix_now() * 1000).saturating_sub(60_000).into();
    }
    body.to_string()
}

/// Apple's device tokens: 32 bytes in hex today, and Apple says not to hard-code the size, so
/// any even number of hex digits from 64 to 200 (100 bytes). Anything else is no token Apple
/// gave out (`BadDeviceToken`): a test pushing it proves nothing about a real token.
fn is_device_token(token: &str) -> bool {
    (64..=200).contains(&token.len())
        && token.len().is_multiple_of(2)
        && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Apple refuses a request that repeats a header (`DuplicateHeaders`) rather than guess which
/// value counts.
fn has_repeated_header(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| headers.get_all(name).iter().nth(1).is_some())
}

/// `apns-id` must be a canonical UUID: 32 hex digits (either case) grouped 8-4-4-4-12 by
/// hyphens; Apple refuses anything else with `BadMessageId`.
fn is_canonical_uuid(id: &[u8]) -> bool {
    id.len() == 36
        && id.iter().enumerate().all(|(at, b)| match at {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Whether a certificate issued for `certified` may push to `topic`: Apple's push certificates
/// name the app's topic and its `.voip` and `.complication` topics; a VoIP Services certificate
/// (issued for `<app>.voip`) names only that one.
fn certificate_covers(certified: &str, topic: &str) -> bool {
    topic == certified
        || topic
            .strip_prefix(certified)
            .is_some_and(|suffix| matches!(suffix, ".voip" | ".complication"))
}

/// PushKit pushes go to `<topic>.voip` and only there: Apple answers a VoIP push for the app's
/// own topic `DeviceTokenNotForTopic` (which reads as a dead token), and any other push type
/// for the `.voip` topic `InvalidPushType`.
fn check_voip_topic(topic: Option<&str>, push_type: Option<&str>) -> Result<(), ApnsAnswer> {
    let voip_topic = topic.is_some_and(|topic| topic.ends_with(".voip"));
    match (push_type == Some("voip"), voip_topic) {
        (true, false) => Err(ApnsAnswer::error(400, "DeviceTokenNotForTopic")),
        (false, true) => Err(ApnsAnswer::error(400, "InvalidPushType")),
        _ => Ok(()),
    }
}

/// Apple's limit for a push type: PushKit calls may carry 5 KB, everything else 4 KB.
fn max_payload(push_type: Option<&str>) -> usize {
    match push_type {
        Some("voip") => MAX_VOIP_PAYLOAD,
        _ => MAX_PAYLOAD,
    }
}

/// Unix seconds, shifted by however far tokio's test clock was advanced, so a test that
/// advances time sees provider tokens age (the APNS module reckons `iat` the same way).
pub fn unix_now() -> u64 {
    let advanced = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(std::time::Instant::now());
    (SystemTime::now() + advanced)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server state that takes client certificates, so requests pass authentication.
    fn cert_state() -> State {
        State::new(
            ApnsExpect {
                topic: "com.example.chat".into(),
                team_id: "TEAM".into(),
                key_id: "KEY".into(),
                jwt_public_key_pem: None,
                accept_client_cert: true,
            },
            IssuedNames::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_certificate_covers_its_apps_topics_and_no_other_apps() {
        let state = cert_state();
        let path = format!("/3/device/{}", "0123abcd".repeat(8));
        let refusal = |topic: &str, push_type: &str| {
            let request = request(topic, push_type, 20);
            let answer = state.check(&Method::POST, &path, &request).err();
            answer.and_then(|answer| answer.reason)
        };
        assert_eq!(refusal("com.example.chat", "alert"), None);
        assert_eq!(refusal("com.example.chat.voip", "voip"), None);
        let other = Some("TopicDisallowed".to_owned());
        assert_eq!(refusal("com.example.other", "alert"), other);
        assert_eq!(refusal("com.example.chatroom", "alert"), other);
        assert!(certificate_covers(
            "com.example.chat",
            "com.example.chat.complication"
        ));
        assert!(!certificate_covers(
            "com.example.chat.voip",
            "com.example.chat"
        ));
    }

    /// A request for `topic` as `push_type` whose JSON body is exactly `size` bytes.
    fn request(topic: &str, push_type: &str, size: usize) -> Received {
        let mut headers = HeaderMap::new();
        headers.insert("apns-topic", topic.parse().unwrap());
        headers.insert("apns-push-type", push_type.parse().unwrap());
        let padding = "x".repeat(size - r#"{"p":""}"#.len());
        let body = Bytes::from(format!(r#"{{"p":"{padding}"}}"#));
        assert_eq!(body.len(), size);
        Received {
            token: "0123abcd".repeat(8),
            headers,
            body,
            jwt: None,
            client_cert: true,
            cert_topic: Some("com.example.chat".into()),
            connection: 1,
            status: 0,
            reason: None,
        }
    }

    /// A request that passes every check, with `name: value` set on top.
    fn with_header(name: &'static str, value: &str) -> Received {
        let mut r = request("com.example.chat", "alert", 20);
        r.headers.insert(name, value.parse().unwrap());
        r
    }

    fn refusal(state: &State, r: &Received) -> Option<(u16, String)> {
        state
            .check(&Method::POST, &format!("/3/device/{}", r.token), r)
            .err()
            .map(|answer| (answer.status, answer.reason.unwrap_or_default()))
    }

    #[test]
    fn an_apns_id_that_is_not_a_canonical_uuid_is_refused_as_bad_message_id() {
        let state = cert_state();
        for good in [
            "123e4567-e89b-12d3-a456-426655440000",
            "123E4567-E89B-12D3-A456-426655440000",
        ] {
            assert_eq!(
                refusal(&state, &with_header("apns-id", good)),
                None,
                "{good}"
            );
        }
        for bad in [
            "123e4567e89b12d3a456426655440000",
            "{123e4567-e89b-12d3-a456-426655440000}",
            "123e4567-e89b-12d3-a456-42665544000",
            "123e4567-e89b-12d3-a456-4266554400000",
            "123e4567-e89b-12d3-a4567-26655440000",
            "g23e4567-e89b-12d3-a456-426655440000",
            "",
            "1",
        ] {
            assert_eq!(
                refusal(&state, &with_header("apns-id", bad)),
                Some((400, "BadMessageId".to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_device_token_that_is_not_hex_of_apple_s_length_is_refused_as_bad_device_token() {
        let state = cert_state();
        let to = |token: &str| {
            let mut r = request("com.example.chat", "alert", 20);
            r.token = token.to_string();
            refusal(&state, &r)
        };
        for good in [
            "0123abcd".repeat(8),
            "0123ABCD".repeat(8),
            "ab".repeat(100),
            // The prefix convention scripts Apple's answers with readable tokens.
            "dead-token-1".to_string(),
            "throttled-once-1".to_string(),
            "ok-delivered-1".to_string(),
        ] {
            assert_eq!(to(&good), None, "{good}");
        }
        for bad in [
            "0123abcd".to_string(),
            "0123abcd".repeat(8)[1..].to_string(),
            "0123abcd".repeat(8) + "0",
            "ab".repeat(101),
            "0123abcz".repeat(8),
            "token-1".to_string(),
            "0123abcd-".repeat(7) + "0123abcd",
        ] {
            assert_eq!(
                to(&bad),
                Some((400, "BadDeviceToken".to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_repeated_header_is_refused_as_duplicate_headers() {
        let state = cert_state();
        for name in [
            "apns-topic",
            "apns-push-type",
            "apns-priority",
            "authorization",
        ] {
            let mut r = request("com.example.chat", "alert", 20);
            let value = r
                .headers
                .get(name)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("10"));
            r.headers.append(name, value.clone());
            r.headers.append(name, value);
            assert_eq!(
                refusal(&state, &r),
                Some((400, "DuplicateHeaders".to_string())),
                "{name}"
            );
        }
    }

    fn check(state: &State, r: &Received) -> Result<(), u16> {
        state
            .check(&Method::POST, &format!("/3/device/{}", r.token), r)
            .map_err(|refusal| refusal.status)
    }

    #[test]
    fn a_410_body_carries_apple_s_timestamp_other_errors_only_the_reason() {
        let state = cert_state();
        let body = |answer: ApnsAnswer| -> serde_json::Value {
            serde_json::from_slice(state.respond(&answer, None).body()).unwrap()
        };
        let gone = body(ApnsAnswer::error(410, "Unregistered"));
        assert_eq!(gone["reason"], "Unregistered");
        let timestamp = gone["timestamp"]
            .as_u64()
            .expect("a timestamp in milliseconds");
        assert!(timestamp > 1_600_000_000_000 && timestamp <= unix_now() * 1000);
        let bad = body(ApnsAnswer::error(400, "BadDeviceToken"));
        assert_eq!(bad, serde_json::json!({"reason": "BadDeviceToken"}));
    }

    #[test]
    fn every_answer_carries_an_apns_id_the_request_s_own_when_it_had_one() {
        let state = cert_state();
        let id_of = |response: Response<Bytes>| {
            response
                .headers()
                .get("apns-id")
                .map(|id| id.to_str().unwrap().to_string())
        };
        for answer in [ApnsAnswer::ok(), ApnsAnswer::error(410, "Unregistered")] {
            let new = id_of(state.respond(&answer, None)).expect("a new apns-id");
            assert_eq!(new.len(), 36, "a UUID: {new}");
            let own = HeaderValue::from_static("123e4567-e89b-12d3-a456-4266554400a0");
            let echoed = id_of(state.respond(&answer, Some(&own)));
            assert_eq!(
                echoed.as_deref(),
                Some("123e4567-e89b-12d3-a456-4266554400a0")
            );
        }
    }

    #[test]
    fn voip_pushes_go_to_the_voip_topic_and_only_there() {
        let state = cert_state();
        let refusal = |topic: &str, push_type: &str| {
            state
                .check(
                    &Method::POST,
                    &format!("/3/device/{}", "0123abcd".repeat(8)),
                    &request(topic, push_type, 20),
                )
                .err()
                .map(|answer| (answer.status, answer.reason.unwrap_or_default()))
        };
        let (app, voip) = ("com.example.chat", "com.example.chat.voip");
        assert_eq!(refusal(voip, "voip"), None);
        assert_eq!(refusal(app, "alert"), None);
        assert_eq!(refusal(app, "background"), None);
        assert_eq!(
            refusal(app, "voip"),
            Some((400, "DeviceTokenNotForTopic".to_string()))
        );
        assert_eq!(
            refusal(voip, "alert"),
            Some((400, "InvalidPushType".to_string()))
        );
    }

    #[test]
    fn voip_pushes_may_carry_5120_bytes_others_4096() {
        let state = cert_state();
        let voip = "com.example.chat.voip";
        assert_eq!(check(&state, &request(voip, "voip", 5120)), Ok(()));
        assert_eq!(check(&state, &request(voip, "voip", 5121)), Err(413));
        let topic = "com.example.chat";
        assert_eq!(check(&state, &request(topic, "alert", 4096)), Ok(()));
        assert_eq!(check(&state, &request(topic, "alert", 4097)), Err(413));
        assert_eq!(check(&state, &request(topic, "background", 4097)), Err(413));
    }

    #[test]
    fn prefix_convention() {
        assert_eq!(answer_by_prefix("dead1", 0).unwrap().status, 410);
        assert_eq!(answer_by_prefix("baddevice1", 0).unwrap().status, 400);
        assert_eq!(answer_by_prefix("unavailable1", 3).unwrap().status, 503);
        let throttled = answer_by_prefix("throttled1", 0).unwrap();
        assert_eq!((throttled.status, throttled.retry_after), (429, None));
        assert_eq!(answer_by_prefix("stall1", 0).unwrap().fault, Fault::Stall);
        assert_eq!(
            answer_by_prefix("unavailable-once1", 0).unwrap().status,
            503
        );
        assert_eq!(answer_by_prefix("unavailable-once1", 1), None);
        assert_eq!(answer_by_prefix("throttled-once1", 0).unwrap().status, 429);
        assert_eq!(answer_by_prefix("throttled-once1", 1), None);
        assert_eq!(answer_by_prefix("0123abcd", 0), None);
    }
}
