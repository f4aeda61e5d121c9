//! An FCM HTTP v1 test server with its OAuth token endpoint, for fpush's FCM tests and the
//! `fake-fcm` binary.
//!
//! One HTTP/2 TLS server (certificate from a run-time test CA) serves both ends a service account
//! talks to:
//! - `POST /token`: the JWT bearer grant. The RS256 assertion is verified with the test service
//!   account's public key (`iss` = `client_email`, `aud` = `token_uri`, the FCM scope, a
//!   short-lived `iat`/`exp`); a good one is traded for an expiring access token.
//! - `POST /v1/projects/{project}/messages:send`: the bearer token must be one this server issued
//!   and not expired, the message must be what FCM accepts (`message.token`, string `data`
//!   values under no reserved key, at most 4096 bytes of `data`, `android.priority == "high"`,
//!   `android.ttl` like `"2419200s"`, no field FCM does not know). The answer then
//!   follows a per-test script, else the shared token-prefix convention (see `answers.rs` and
//!   the `fake-fcm` binary), always in Google's real error layout.
//!
//! Everything is recorded (token requests, every `messages:send` with its answer) so tests
//! assert what reached the provider, not just what the module returned.

mod answers;
mod rsa_key;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::tls::{ClientAuth, Connection, TestPki, TestServer, TlsError};
use crate::work_dir::WorkDir;

pub use answers::{oauth_error, FcmAnswer, THROTTLE_RETRY_AFTER};
pub use rsa_key::RsaTestKey;

/// The OAuth scope an FCM assertion must ask for.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Project id of the test service account unless another is asked for.
pub const DEFAULT_PROJECT_ID: &str = "fpush-test";

/// Lifetime of granted access tokens unless a test changes it (Google grants one hour).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// As good as never, for a token whose announced lifetime does not fit an `Instant`.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Tolerated clock difference for the assertion's `iat`.
const CLOCK_SKEW_SECS: u64 = 300;

/// Why the FCM test server could not start.
#[derive(Debug, thiserror::Error)]
pub enum FcmServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FcmServerError {
    let what = what.into();
    move |source| FcmServerError::Io { what, source }
}

/// A Firebase service account for tests: the JSON Google hands out, with a committed test key.
#[derive(Clone)]
pub struct TestServiceAccount {
    project_id: String,
    client_email: String,
    token_uri: String,
    key: Arc<RsaTestKey>,
}

impl TestServiceAccount {
    /// An account for `project_id` whose `token_uri` is `token_uri`, with the test key the FCM
    /// test server trusts (see [`RsaTestKey::shared`]).
    pub fn generate(project_id: &str, token_uri: &str) -> Self {
        Self::with_key(project_id, token_uri, RsaTestKey::shared())
    }

    /// Like [`TestServiceAccount::generate`] with a given key (e.g. [`RsaTestKey::stranger`],
    /// which the server refuses).
    pub fn with_key(project_id: &str, token_uri: &str, key: Arc<RsaTestKey>) -> Self {
        Self {
            project_id: project_id.to_string(),
            client_email: format!("firebase-adminsdk-test@{project_id}.iam.gserviceaccount.com"),
            token_uri: token_uri.to_string(),
            key,
        }
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The private key, PKCS#8 DER.
    pub fn private_key_pkcs8(&self) -> &[u8] {
        self.key.pkcs8_der()
    }

    /// The public key (PKCS#1 `RSAPublicKey` DER) the token endpoint verifies with.
    pub fn public_key_der(&self) -> &[u8] {
        self.key.public_der()
    }

    /// The service-account JSON, laid out like the file the Firebase console downloads.
    pub fn json(&self) -> String {
        let value = json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": self.key.pkcs8_pem(),
            "client_email": self.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{}", self.client_email),
            "universe_domain": "googleapis.com"
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// Writes [`TestServiceAccount::json`] to `path`.
    pub fn write(&self, path: &Path) -> Result<(), FcmServerError> {
        std::fs::write(path, self.json()).map_err(io_error(path.display().to_string()))
    }
}

/// How the token endpoint behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEndpointMode {
    /// Verify assertions and grant tokens.
    Grant,
    /// FcmAnswer every token request with this status and body.
    Fail { status: u16, body: String },
    /// Never answer.
    Stall,
    /// Drop the connection on every token request.
    DropConnection,
}

/// One `messages:send` request as the server saw it, and what it answered.
#[derive(Debug, Clone)]
pub struct RecordedMessage {
    /// `message.token`, when the body had one.
    pub device_token: Option<String>,
    /// The project in the request path.
    pub project: String,
    pub headers: HeaderMap,
    /// The request body (JSON `null` if it was not JSON).
    pub body: Value,
    /// The status answered (0 for a stall or a dropped connection).
    pub status: u16,
    /// The `errorCode`/`status` answered, `None` on success.
    pub reason: Option<String>,
}

/// Where and how to run the server.
#[derive(Debug, Clone, Default)]
pub struct FcmServerOptions {
    /// Default `127.0.0.1:0`.
    pub listen: Option<SocketAddr>,
    /// Where to write the CA and the service-account file; default a temporary directory removed
    /// when the server is dropped.
    pub dir: Option<PathBuf>,
    /// Append one JSON line per `messages:send` request to this file.
    pub record: Option<PathBuf>,
    /// Default [`DEFAULT_PROJECT_ID`].
    pub project_id: Option<String>,
    /// The server's HTTP/2 settings (e.g. the 100-stream limit Google's front ends announce).
    pub serve: crate::tls::ServeOptions,
}

struct IssuedToken {
    expires_at: Instant,
}

struct State {
    project_id: String,
    client_email: String,
    public_key: Vec<u8>,
    token_uri: OnceLock<String>,
    stop: CancellationToken,
    rng: SystemRandom,

    token_mode: Mutex<TokenEndpointMode>,
    token_lifetime: Mutex<Duration>,
    issued: Mutex<HashMap<String, IssuedToken>>,
    script: Mutex<VecDeque<FcmAnswer>>,
    answer_delay: Mutex<Duration>,
    seen_device_tokens: Mutex<HashSet<String>>,

    token_requests: AtomicUsize,
    tokens_granted: AtomicUsize,
    expired_tokens_presented: AtomicUsize,
    message_counter: AtomicU64,
    messages: Mutex<Vec<RecordedMessage>>,
    refused_assertions: Mutex<Vec<String>>,
    record: Option<Mutex<std::fs::File>>,
}

impl State {
    fn new(project_id: &str, key: &Arc<RsaTestKey>, record: Option<Mutex<std::fs::File>>) -> Self {
        let provisional = TestServiceAccount::with_key(project_id, "", key.clone());
        Self {
            project_id: project_id.to_string(),
            client_email: provisional.client_email().to_string(),
            public_key: key.public_der().to_vec(),
            token_uri: OnceLock::new(),
            stop: CancellationToken::new(),
            rng: SystemRandom::new(),
            token_mode: Mutex::new(TokenEndpointMode::Grant),
            token_lifetime: Mutex::new(DEFAULT_TOKEN_LIFETIME),
            issued: Mutex::new(HashMap::new()),
            script: Mutex::new(VecDeque::new()),
            answer_delay: Mutex::new(Duration::ZERO),
            seen_device_tokens: Mutex::new(HashSet::new()),
            token_requests: AtomicUsize::new(0),
            tokens_granted: AtomicUsize::new(0),
            expired_tokens_presented: AtomicUsize::new(0),
            message_counter: AtomicU64::new(0),
            messages: Mutex::new(Vec::new()),
            refused_assertions: Mutex::new(Vec::new()),
            record,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running FCM test server; stops when dropped.
pub struct FcmServer {
    server: TestServer,
    state: Arc<State>,
    pki: TestPki,
    account: TestServiceAccount,
    ca_file: PathBuf,
    service_account_file: PathBuf,
    _dir: WorkDir,
}

impl FcmServer {
    /// Starts a server on `127.0.0.1:0` with a fresh CA, writing the CA and the service
    /// account into a temporary directory.
    pub async fn start() -> Result<Self, FcmServerError> {
        Self::start_with(FcmServerOptions::default()).await
    }

    /// Starts a server as `options` say.
    pub async fn start_with(options: FcmServerOptions) -> Result<Self, FcmServerError> {
        let project_id = options
            .project_id
            .unwrap_or_else(|| DEFAULT_PROJECT_ID.to_string());
        let dir =
            WorkDir::new(options.dir, "fpush-fcm-test-").map_err(io_error("work directory"))?;
        let record = match options.record {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_error(path.display().to_string()))?,
            )),
            None => None,
        };
        let key = RsaTestKey::shared();
        let state = Arc::new(State::new(&project_id, &key, record));

        let pki = TestPki::new()?;
        let config = pki.server_config(ClientAuth::None)?;
        let handler_state = state.clone();
        let handler = move |req: Request<Bytes>, conn: Arc<Connection>| {
            let state = handler_state.clone();
            async move { handle(&state, req, &conn).await }
        };
        let listen = options
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let server = crate::tls::serve_with(listen, config, options.serve, handler).await?;

        let token_uri = format!("{}/token", server.origin());
        let _ = state.token_uri.set(token_uri.clone());
        let account = TestServiceAccount::with_key(&project_id, &token_uri, key);
        let ca_file = dir.path().join("fcm-ca.pem");
        pki.write_ca_pem(&ca_file)?;
        let service_account_file = dir.path().join("fcm-service-account.json");
        account.write(&service_account_file)?;

        Ok(Self {
            server,
            state,
            pki,
            account,
            ca_file,
            service_account_file,
            _dir: dir,
        })
    }

    /// `https://localhost:port`, what `fcm.endpoint` should be.
    pub fn endpoint(&self) -> String {
        self.server.origin()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The test CA (PEM), what `fcm.caFilePath` should be.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The service-account file, whose `token_uri` points at this server.
    pub fn service_account_file(&self) -> &Path {
        &self.service_account_file
    }

    /// The service account the server trusts.
    pub fn account(&self) -> &TestServiceAccount {
        &self.account
    }

    pub fn project_id(&self) -> &str {
        &self.state.project_id
    }

    /// The `fcm` settings block of a module that pushes through this server: `fcmSecretPath`,
    /// `endpoint` and `caFilePath`. Tests add what they need (`requestTimeout`, …).
    pub fn settings(&self) -> Value {
        json!({
            "fcmSecretPath": self.service_account_file,
            "endpoint": self.endpoint(),
            "caFilePath": self.ca_file,
        })
    }

    /// The test PKI (e.g. to build a client that trusts the CA).
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The underlying TLS server (connection counts, refusing TLS).
    pub fn tls_server(&self) -> &TestServer {
        &self.server
    }

    /// Queues answers for the next `messages:send` requests that pass authentication and
    /// validation, in order; the token convention applies again once the queue is empty.
    pub fn script(&self, answers: impl IntoIterator<Item = FcmAnswer>) {
        lock(&self.state.script).extend(answers);
    }

    /// How the token endpoint behaves from now on.
    pub fn set_token_endpoint(&self, mode: TokenEndpointMode) {
        *lock(&self.state.token_mode) = mode;
    }

    /// `expires_in` of tokens granted from now on (up to `u64::MAX` seconds, to test what a
    /// broken endpoint may announce).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.token_lifetime) = lifetime;
    }

    /// Makes every token granted so far expire now (a revoked key, a server-side clock jump).
    pub fn expire_issued_tokens(&self) {
        let now = Instant::now();
        for token in lock(&self.state.issued).values_mut() {
            token.expires_at = now;
        }
    }

    /// Delay before every `messages:send` answer (a slow provider).
    pub fn set_answer_delay(&self, delay: Duration) {
        *lock(&self.state.answer_delay) = delay;
    }

    /// Requests received by the token endpoint, granted or not.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Access tokens granted.
    pub fn tokens_granted(&self) -> usize {
        self.state.tokens_granted.load(Ordering::SeqCst)
    }

    /// Why assertions were refused, in order.
    pub fn refused_assertions(&self) -> Vec<String> {
        lock(&self.state.refused_assertions).clone()
    }

    /// `messages:send` requests that carried a token this server issued but which had expired.
    pub fn expired_tokens_presented(&self) -> usize {
        self.state.expired_tokens_presented.load(Ordering::SeqCst)
    }

    /// Every `messages:send` request so far.
    pub fn messages(&self) -> Vec<RecordedMessage> {
        lock(&self.state.messages).clone()
    }

    /// How many `messages:send` requests arrived.
    pub fn message_count(&self) -> usize {
        lock(&self.state.messages).len()
    }

    /// Stops the server (also on drop): connections close, stalled requests end.
    pub fn stop(&self) {
        self.state.stop.cancel();
        self.server.shutdown();
    }
}

impl Drop for FcmServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(state: &Arc<State>, req: Request<Bytes>, conn: &Connection) -> Response<Bytes> {
    let path = req.uri().path().to_string();
    if req.method() == Method::POST && path == "/token" {
        return token_endpoint(state, req.body(), conn).await;
    }
    let project = path
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"));
    match project {
        Some(project) if req.method() == Method::POST => {
            let project = project.to_string();
            send_endpoint(state, project, req, conn).await
        }
        _ => answer(&FcmAnswer::html(404)),
    }
}

fn answer(answer: &FcmAnswer) -> Response<Bytes> {
    match answer {
        FcmAnswer::Status {
            status,
            body,
            retry_after,
        } => {
            let json = body.starts_with('{');
            let mut builder = Response::builder().status(*status).header(
                http::header::CONTENT_TYPE,
                if json {
                    "application/json; charset=UTF-8"
                } else {
                    "text/html; charset=UTF-8"
                },
            );
            if let Some(seconds) = retry_after {
                builder = builder.header(http::header::RETRY_AFTER, seconds.to_string());
            }
            builder
                .body(Bytes::from(body.clone()))
                .unwrap_or_else(|_| Response::new(Bytes::new()))
        }
        _ => Response::new(Bytes::new()),
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

async fn never_answer(state: &State) -> Response<Bytes> {
    state.stop.cancelled().await;
    answer(&FcmAnswer::unavailable())
}

async fn token_endpoint(state: &State, body: &[u8], conn: &Connection) -> Response<Bytes> {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let mode = lock(&state.token_mode).clone();
    match mode {
        TokenEndpointMode::Grant => {}
        TokenEndpointMode::Fail { status, body } => {
            return answer(&FcmAnswer::Status {
                status,
                body,
                retry_after: None,
            })
        }
        TokenEndpointMode::Stall => return never_answer(state).await,
        TokenEndpointMode::DropConnection => {
            conn.drop_connection();
            return never_answer(state).await;
        }
    }
    match check_grant_request(state, body) {
        Ok(()) => {
            let lifetime = *lock(&state.token_lifetime);
            let mut random = [0u8; 12];
            let _ = state.rng.fill(&mut random);
            let n = state.tokens_granted.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("ya29.fpush-test-{n}-{}", URL_SAFE_NO_PAD.encode(random));
            lock(&state.issued).insert(
                token.clone(),
                IssuedToken {
                    // A lifetime near `u64::MAX` seconds (what a broken endpoint may announce)
                    // means "never" here.
                    expires_at: Instant::now()
                        .checked_add(lifetime)
                        .unwrap_or_else(|| Instant::now() + NEVER),
                },
            );
            json_response(
                StatusCode::OK,
                json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"})
                    .to_string(),
            )
        }
        Err((error, description)) => {
            lock(&state.refused_assertions).push(description.clone());
            json_response(StatusCode::BAD_REQUEST, oauth_error(error, &description))
        }
    }
}

/// Checks a JWT bearer grant request; the error is Google's OAuth `error` and a description.
fn check_grant_request(state: &State, body: &[u8]) -> Result<(), (&'static str, String)> {
    let form = parse_form(body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err(("unsupported_grant_type", "Invalid grant_type.".to_string()));
    }
    let assertion = field("assertion").ok_or((
        "invalid_request",
        "Missing required parameter: assertion".to_string(),
    ))?;
    let invalid = |text: &str| ("invalid_grant", text.to_string());
    let mut parts = assertion.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("Invalid JWT: not three segments."));
    };
    let decode_json = |segment: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
    };
    let header = decode_json(header).ok_or(invalid("Invalid JWT header."))?;
    if header["alg"] != "RS256" {
        return Err(invalid("Invalid JWT: alg must be RS256."));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| invalid("Invalid JWT Signature."))?;
    let signed_len = assertion.len() - assertion.rsplit('.').next().map_or(0, str::len) - 1;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &state.public_key)
        .verify(&assertion.as_bytes()[..signed_len], &signature)
        .map_err(|_| invalid("Invalid JWT Signature."))?;

    let claims = decode_json(claims).ok_or(invalid("Invalid JWT claims."))?;
    if claims["iss"] != state.client_email.as_str() {
        return Err(invalid("Invalid grant: account not found"));
    }
    let token_uri = state.token_uri.get().map(String::as_str).unwrap_or("");
    if claims["aud"] != token_uri {
        return Err(invalid("Invalid JWT: Failed audience check."));
    }
    let scopes = claims["scope"].as_str().unwrap_or("");
    if !scopes.split(' ').any(|s| s == FCM_SCOPE) {
        return Err((
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.".to_string(),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err(invalid("Invalid JWT: iat and exp are required."));
    };
    let timely = iat <= now + CLOCK_SKEW_SECS
        && iat + CLOCK_SKEW_SECS >= now
        && exp > now
        && exp > iat
        && exp - iat <= 3600;
    if !timely {
        return Err(invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, other) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// FCM's limit on a message's `data`, keys and values counted.
pub const MAX_DATA_BYTES: usize = 4096;

/// Why FCM refuses a message: what it says, and the field its `google.rpc.BadRequest` names
/// (none for a message that is too big).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    field: Option<String>,
    text: String,
    /// Refused by the API front end while reading the JSON, before FCM saw the message: no
    /// `FcmError` detail then.
    unreadable: bool,
}

impl Refusal {
    fn about(field: &str, text: &str) -> Self {
        Self {
            field: Some(field.to_string()),
            text: text.to_string(),
            unreadable: false,
        }
    }

    /// Refused by Google's JSON reader as a whole: no field to name.
    fn unreadable(text: &str) -> Self {
        Self {
            field: Some(String::new()),
            text: text.to_string(),
            unreadable: true,
        }
    }

    fn answer(&self) -> FcmAnswer {
        match &self.field {
            Some(field) if self.unreadable => FcmAnswer::unknown_name(field, &self.text),
            Some(field) => FcmAnswer::invalid_argument(field, &self.text),
            None => FcmAnswer::too_big(&self.text),
        }
    }
}

/// The fields FCM v1 knows (proto JSON takes `lowerCamel` and `snake_case` alike), where fpush
/// may write them: any other name is refused ("Unknown name"), for every token.
const KNOWN_FIELDS: [(&str, &[&str]); 3] = [
    ("", &["message", "validate_only", "validateOnly"]),
    (
        "message",
        &[
            "name",
            "data",
            "notification",
            "android",
            "webpush",
            "apns",
            "fcm_options",
            "fcmOptions",
            "token",
            "topic",
            "condition",
        ],
    ),
    (
        "message.android",
        &[
            "collapse_key",
            "collapseKey",
            "priority",
            "ttl",
            "restricted_package_name",
            "restrictedPackageName",
            "data",
            "notification",
            "fcm_options",
            "fcmOptions",
            "direct_boot_ok",
            "directBootOk",
        ],
    ),
];

/// Refuses a name `object` at `at` (one of [`KNOWN_FIELDS`]) does not have, as Google's JSON
/// reader does.
fn check_names(object: &Value, at: &str) -> Result<(), Refusal> {
    let known = KNOWN_FIELDS
        .iter()
        .find(|(path, _)| *path == at)
        .map_or(&[][..], |(_, names)| *names);
    let Some(unknown) = object
        .as_object()
        .and_then(|map| map.keys().find(|key| !known.contains(&key.as_str())))
    else {
        return Ok(());
    };
    let (field, place) = match at {
        "" => ("", String::new()),
        at => (at, format!(" at '{at}'")),
    };
    Err(Refusal {
        field: Some(field.to_string()),
        text: format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\"{place}: Cannot find field."
        ),
        unreadable: true,
    })
}

/// Checks the message the way FCM does; the error names the offending field.
fn check_message(body: &Value) -> Result<&str, Refusal> {
    let bad = Refusal::about;
    let message = body
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| bad("message", "Invalid JSON payload received. Missing message."))?;
    check_names(body, "")?;
    check_names(message, "message")?;
    // No token is no recipient, which FCM blames on the message, not on a token; a token that
    // is not a string never gets past Google's JSON reader.
    let token = match message.get("token") {
        None => return Err(bad("message", "Recipient of the message is not set.")),
        Some(Value::String(token)) => token.as_str(),
        Some(other) => {
            return Err(Refusal {
                field: Some("message.token".to_string()),
                text: format!("Invalid value at 'message.token' (TYPE_STRING), {other}"),
                unreadable: true,
            })
        }
    };
    if let Some(data) = message.get("data") {
        check_data(data)?;
    }
    let android = message
        .get("android")
        .ok_or_else(|| bad("message.android", "fpush sends android.priority = high"))?;
    check_names(android, "message.android")?;
    if android.get("priority").and_then(Value::as_str) != Some("high") {
        return Err(bad(
            "message.android.priority",
            "fpush must send android.priority = \"high\"",
        ));
    }
    if let Some(ttl) = android.get("ttl") {
        let valid = ttl
            .as_str()
            .and_then(|t| t.strip_suffix('s'))
            .is_some_and(|secs| {
                !secs.is_empty()
                    && secs
                        .parse::<f64>()
                        .is_ok_and(|s| (0.0..=2_419_200.0).contains(&s))
            });
        if !valid {
            return Err(bad("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)"));
        }
    }
    Ok(token)
}

/// `message.data` as FCM takes it: string values, no reserved key (`from`, `message_type`,
/// `google…`, `gcm…`; `notification`, though documented as reserved, is taken), and at most
/// [`MAX_DATA_BYTES`] of keys and values. A message over the limit is refused whole, with
/// FCM's "too big" answer, whatever the token.
fn check_data(data: &Value) -> Result<(), Refusal> {
    let Some(map) = data
        .as_object()
        .filter(|map| map.values().all(Value::is_string))
    else {
        return Err(Refusal::about(
            "message.data",
            "Invalid value at 'message.data': data values must be strings",
        ));
    };
    let reserved = |key: &str| {
        key == "from"
            || key == "message_type"
            || key.starts_with("google")
            || key.starts_with("gcm")
    };
    if let Some(key) = map.keys().find(|key| reserved(key)) {
        return Err(Refusal::about(
            "message.data",
            &format!("Invalid data payload key: {key}"),
        ));
    }
    let size: usize = map
        .iter()
        .map(|(key, value)| key.len() + value.as_str().map_or(0, str::len))
        .sum();
    if size > MAX_DATA_BYTES {
        return Err(Refusal {
            field: None,
            text: "Android message is too big".to_string(),
            unreadable: false,
        });
    }
    Ok(())
}

async fn send_endpoint(
    state: &Arc<State>,
    project: String,
    req: Request<Bytes>,
    conn: &Connection,
) -> Response<Bytes> {
    let parsed = serde_json::from_slice::<Value>(req.body()).ok();
    let chosen = choose_answer(state, &project, req.headers(), parsed.as_ref());
    let body = parsed.unwrap_or(Value::Null);
    let device_token = body["message"]["token"].as_str().map(str::to_string);

    let status = match &chosen {
        FcmAnswer::Status { status, .. } => *status,
        FcmAnswer::Accept | FcmAnswer::GoawayThenAccept => 200,
        FcmAnswer::Stall | FcmAnswer::DropConnection => 0,
    };
    let record = RecordedMessage {
        device_token,
        project,
        headers: req.headers().clone(),
        body,
        status,
        reason: chosen.reason(),
    };
    write_record(state, &record);
    lock(&state.messages).push(record);

    let delay = *lock(&state.answer_delay);
    if !delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = state.stop.cancelled() => {}
        }
    }
    match chosen {
        FcmAnswer::Accept => accept(state),
        FcmAnswer::GoawayThenAccept => {
            conn.goaway();
            accept(state)
        }
        FcmAnswer::Stall => never_answer(state).await,
        FcmAnswer::DropConnection => {
            conn.drop_connection();
            never_answer(state).await
        }
        status @ FcmAnswer::Status { .. } => answer(&status),
    }
}

/// The answer in Google's order: the access token first (401 whatever the rest says), then the
/// project (403), then the body as Google's JSON reader takes it (`None`: not JSON), then what
/// FCM checks of the message, and only then a script or the token's prefix.
fn choose_answer(
    state: &State,
    project: &str,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> FcmAnswer {
    if let Err(refusal) = authenticate(state, headers) {
        return refusal;
    }
    if project != state.project_id {
        return FcmAnswer::permission_denied(project);
    }
    let checked = match body {
        None => Err(Refusal::unreadable(
            "Invalid JSON payload received. Unexpected token.",
        )),
        Some(body) if !body.is_object() => Err(Refusal::unreadable(
            "Invalid JSON payload received. Unknown name \"\": Root element must be a message.",
        )),
        Some(body) => check_message(body),
    };
    match checked {
        Err(refusal) => refusal.answer(),
        Ok(token) => {
            let scripted = lock(&state.script).pop_front();
            scripted.unwrap_or_else(|| {
                let first = lock(&state.seen_device_tokens).insert(token.to_string());
                answers::for_token(token, first)
            })
        }
    }
}

fn accept(state: &State) -> Response<Bytes> {
    let n = state.message_counter.fetch_add(1, Ordering::SeqCst) + 1;
    json_response(
        StatusCode::OK,
        json!({"name": format!("projects/{}/messages/0:{n}%fpushtest", state.project_id)})
            .to_string(),
    )
}

/// The access token's check, answered as Google does: a request without credentials, with a
/// token never issued, and with an expired one each get their own 401.
fn authenticate(state: &State, headers: &HeaderMap) -> Result<(), FcmAnswer> {
    let Some(authorization) = headers.get(http::header::AUTHORIZATION) else {
        return Err(FcmAnswer::credentials_missing());
    };
    let Some(token) = authorization
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(FcmAnswer::unauthenticated());
    };
    match lock(&state.issued).get(token) {
        Some(issued) if Instant::now() < issued.expires_at => Ok(()),
        Some(_) => {
            state
                .expired_tokens_presented
                .fetch_add(1, Ordering::SeqCst);
            Err(FcmAnswer::access_token_expired())
        }
        None => Err(FcmAnswer::unauthenticated()),
    }
}

fn write_record(state: &State, record: &RecordedMessage) {
    let Some(file) = &state.record else {
        return;
    };
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(name, value)| {
            let value = if name == http::header::AUTHORIZATION {
                "Bearer <redacted>".to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_string(), Value::String(value))
        })
        .collect();
    let line = json!({
        "token": record.device_token,
        "status": record.status,
        "reason": record.reason,
        "headers": headers,
        "body": record.body,
    });
    let mut file = lock(file);
    let _ = writeln!(file, "{line}");
    let _ = file.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server state for project `p1` that issued the access token `good`, and the headers of
    /// a request presenting `bearer`.
    fn state_and_headers(bearer: Option<&str>) -> (State, HeaderMap) {
        let state = State::new("p1", &RsaTestKey::shared(), None);
        let expires_at = Instant::now() + Duration::from_secs(600);
        lock(&state.issued).insert("good".into(), IssuedToken { expires_at });
        lock(&state.issued).insert(
            "old".into(),
            IssuedToken {
                expires_at: Instant::now(),
            },
        );
        let mut headers = HeaderMap::new();
        if let Some(bearer) = bearer {
            let value = format!("Bearer {bearer}").parse().unwrap();
            headers.insert(http::header::AUTHORIZATION, value);
        }
        (state, headers)
    }

    /// The status and JSON body of a status answer.
    fn status_and_body(answer: FcmAnswer) -> (u16, Value) {
        let FcmAnswer::Status { status, body, .. } = answer else {
            panic!("not a status answer: {answer:?}");
        };
        (status, serde_json::from_str(&body).unwrap())
    }

    #[test]
    fn the_access_token_is_checked_before_the_project_and_the_body() {
        let message = json!({"message": {"token": "t", "android": {"priority": "high"}}});
        for bearer in [None, Some("unknown"), Some("old")] {
            let (state, headers) = state_and_headers(bearer);
            for (project, body) in [("p2", None), ("p1", None), ("p2", Some(&message))] {
                let (status, body) =
                    status_and_body(choose_answer(&state, project, &headers, body));
                assert_eq!(status, 401, "{bearer:?} {project}");
                assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
            }
        }
        let (state, headers) = state_and_headers(Some("good"));
        let (status, body) = status_and_body(choose_answer(&state, "p2", &headers, None));
        assert_eq!(
            (status, &body["error"]["status"]),
            (403, &json!("PERMISSION_DENIED"))
        );
        assert_eq!(
            choose_answer(&state, "p1", &headers, Some(&message)),
            FcmAnswer::Accept
        );
    }

    #[test]
    fn a_missing_or_expired_access_token_is_refused_with_google_s_reason() {
        for (bearer, text, reason) in [
            (
                None,
                "Request is missing required authentication credential.",
                "CREDENTIALS_MISSING",
            ),
            (
                Some("old"),
                "Request had invalid authentication credentials.",
                "ACCESS_TOKEN_EXPIRED",
            ),
        ] {
            let (state, headers) = state_and_headers(bearer);
            let (status, body) = status_and_body(choose_answer(&state, "p1", &headers, None));
            let error = &body["error"];
            assert_eq!((status, &error["code"]), (401, &json!(401)), "{bearer:?}");
            assert_eq!(error["status"], "UNAUTHENTICATED");
            assert!(
                error["message"].as_str().unwrap().starts_with(text),
                "{error}"
            );
            let details = error["details"].as_array().unwrap();
            assert_eq!(
                details[0]["@type"],
                "type.googleapis.com/google.rpc.ErrorInfo"
            );
            assert_eq!(details[0]["reason"], reason);
            assert_eq!(details[0]["metadata"]["service"], "fcm.googleapis.com");
        }
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_refused_by_google_s_json_reader() {
        let (state, headers) = state_and_headers(Some("good"));
        for body in [None, Some(json!([])), Some(json!("message"))] {
            let (status, error) =
                status_and_body(choose_answer(&state, "p1", &headers, body.as_ref()));
            assert_eq!(status, 400, "{body:?}");
            let error = &error["error"];
            assert_eq!(error["code"], 400);
            assert_eq!(error["status"], "INVALID_ARGUMENT");
            let text = error["message"].as_str().unwrap();
            assert!(text.starts_with("Invalid JSON payload received."), "{text}");
            // FCM never saw a message: a BadRequest, no FcmError, no field blamed.
            let details = error["details"].as_array().unwrap();
            assert_eq!(details.len(), 1, "{error}");
            assert_eq!(
                details[0]["@type"],
                "type.googleapis.com/google.rpc.BadRequest"
            );
            assert_eq!(details[0]["fieldViolations"][0]["field"], "");
        }
    }

    #[test]
    fn form_values_are_percent_decoded() {
        let form = parse_form(b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c&x=1+2%");
        assert_eq!(form[0].1, "urn:ietf:params:oauth:grant-type:jwt-bearer");
        assert_eq!(form[1], ("assertion".to_string(), "a.b.c".to_string()));
        assert_eq!(form[2].1, "1 2%");
    }

    #[test]
    fn messages_are_checked_like_fcm_does() {
        let ok = json!({"message": {"token": "t", "data": {"a": "b"}, "android": {"priority": "high", "ttl": "2419200s"}}});
        assert_eq!(check_message(&ok), Ok("t"));
        let cases = [
            (
                json!({"message": {"token": 5, "android": {"priority": "high"}}}),
                "message.token",
            ),
            (
                json!({"message": {"token": "t", "data": {"a": 1}, "android": {"priority": "high"}}}),
                "message.data",
            ),
            (
                json!({"message": {"token": "t", "android": {"priority": "normal"}}}),
                "message.android.priority",
            ),
            (
                json!({"message": {"token": "t", "android": {"priority": "high", "ttl": "4w"}}}),
                "message.android.ttl",
            ),
            (
                json!({"message": {"token": "t", "android": {"priority": "high", "ttl": "2419201s"}}}),
                "message.android.ttl",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(
                check_message(&body).unwrap_err().field.as_deref(),
                Some(field),
                "{body}"
            );
        }
    }

    #[test]
    fn a_message_without_a_token_has_no_recipient_and_blames_no_token() {
        let refused =
            check_message(&json!({"message": {"android": {"priority": "high"}}})).unwrap_err();
        assert_eq!(refused.field.as_deref(), Some("message"));
        assert_eq!(refused.text, "Recipient of the message is not set.");
        let FcmAnswer::Status { status, body, .. } = refused.answer() else {
            panic!("not a status answer");
        };
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 400);
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    }

    #[test]
    fn unknown_names_are_refused_as_google_s_json_reader_does() {
        let ok = json!({"validate_only": false, "message": {"token": "t", "android": {"priority": "high", "collapseKey": "c", "collapse_key": "c"}}});
        assert_eq!(check_message(&ok), Ok("t"));
        for (body, at, name) in [
            (
                json!({"message": {"token": "t", "android": {"priority": "high"}}, "dryRun": true}),
                "",
                "dryRun",
            ),
            (
                json!({"message": {"token": "t", "ttl": "60s", "android": {"priority": "high"}}}),
                "message",
                "ttl",
            ),
            (
                json!({"message": {"token": "t", "android": {"priority": "high", "time_to_live": 60}}}),
                "message.android",
                "time_to_live",
            ),
        ] {
            let refused = check_message(&body).unwrap_err();
            assert_eq!(refused.field.as_deref(), Some(at), "{body}");
            assert!(
                refused.text.contains(&format!("Unknown name \"{name}\"")),
                "{}",
                refused.text
            );
            let FcmAnswer::Status { status, body, .. } = refused.answer() else {
                panic!("not a status answer");
            };
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(status, 400);
            assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
            let details = body["error"]["details"].as_array().unwrap();
            assert_eq!(details.len(), 1, "only the BadRequest, no FcmError: {body}");
        }
    }

    #[test]
    fn data_over_4096_bytes_is_refused_as_fcm_does() {
        let message = |value: String| json!({"message": {"token": "t", "data": {"body": value}, "android": {"priority": "high"}}});
        // Keys and values count: "body" is 4 bytes.
        assert_eq!(check_message(&message("x".repeat(4092))), Ok("t"));
        let refused = check_message(&message("x".repeat(4093))).unwrap_err();
        assert_eq!(
            refused.answer(),
            FcmAnswer::too_big("Android message is too big")
        );
    }

    #[test]
    fn reserved_data_keys_are_refused_as_fcm_does() {
        for key in [
            "from",
            "message_type",
            "google.c.a.e",
            "gcm.n.e",
            "googleish",
        ] {
            let body = json!({"message": {"token": "t", "data": {key: "v"}, "android": {"priority": "high"}}});
            let refused = check_message(&body).unwrap_err();
            assert_eq!(refused.field.as_deref(), Some("message.data"), "{key}");
            assert!(refused.text.contains(key), "{}", refused.text);
        }
        // FCM lists `notification` among reserved words but takes it in `data`.
        for key in ["notification", "kind", "fromage"] {
            let body = json!({"message": {"token": "t", "data": {key: "v"}, "android": {"priority": "high"}}});
            assert_eq!(check_message(&body), Ok("t"), "{key}");
        }
    }

    #[test]
    fn service_account_json_has_the_fields_fcm_clients_read() {
        let account = TestServiceAccount::generate("p1", "https://localhost:1/token");
        let json: Value = serde_json::from_str(&account.json()).unwrap();
        assert_eq!(json["type"], "service_account");
        assert_eq!(json["project_id"], "p1");
        assert_eq!(json["token_uri"], "https://localhost:1/token");
        assert!(json["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(
            json["client_email"],
            "firebase-adminsdk-test@p1.iam.gserviceaccount.com"
        );
    }
}
