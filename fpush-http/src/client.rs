//! [`HttpClient`]: the connection to one origin and the request path over it.
//!
//! The HTTP/2 connection is made by the first request that finds none, under a lock so that a
//! burst of concurrent first requests makes exactly one connection; everyone else clones its
//! cheap `SendRequest` handle. A task per connection drives it, pings it when asked to (after a
//! request timed out, a sign the peer may be gone without a FIN) and on a timer, and forgets it
//! when it ends, so the next request reconnects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, HOST, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::origin::Origin;
use crate::{HttpConfig, HttpError, HttpResponse, MAX_RESPONSE_BODY};

/// How often an idle-or-busy HTTP/2 connection is checked with a PING.
const PING_INTERVAL: Duration = Duration::from_secs(60);
/// Streams opened before the server's SETTINGS arrive (APNS starts low and raises it).
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Idle HTTP/1.1 connections kept for reuse.
const MAX_IDLE_HTTP1: usize = 4;

/// A client for one origin; cheap to clone, all clones share the connection.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Origin,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    connect_timeout: Duration,
    request_timeout: Duration,
    h2: Mutex<Option<H2Conn>>,
    http1_idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    connect_lock: tokio::sync::Mutex<()>,
    connections_opened: AtomicU64,
}

#[derive(Clone)]
struct H2Conn {
    /// Tells this connection apart from its successors, so a dying driver never forgets a
    /// newer connection.
    generation: u64,
    sender: h2::client::SendRequest<Bytes>,
    check_now: Arc<Notify>,
}

enum Fresh {
    H2(H2Conn),
    Http1(http1::SendRequest<Full<Bytes>>),
}

/// How far an HTTP/2 attempt got: a failure before the stream opened leaves the request
/// unsent, so it can move to a new connection.
enum Attempt {
    NotStarted(h2::Error),
    Failed(HttpError),
}

impl HttpClient {
    /// Builds the client: parses the origin, loads the CA file and the TLS config. No network
    /// and no runtime needed; the connection is made by the first request.
    pub fn new(origin: &str, cfg: HttpConfig) -> Result<Self, HttpError> {
        let origin = Origin::parse(origin)?;
        let server_name =
            ServerName::try_from(origin.host.clone()).map_err(|e| HttpError::InvalidOrigin {
                origin: origin.text.clone(),
                reason: e.to_string(),
            })?;
        let tls = crate::tls::client_config(&cfg)?;
        Ok(Self {
            inner: Arc::new(Inner {
                origin,
                server_name,
                connector: TlsConnector::from(tls),
                connect_timeout: cfg.connect_timeout,
                request_timeout: cfg.request_timeout,
                h2: Mutex::new(None),
                http1_idle: Mutex::new(Vec::new()),
                connect_lock: tokio::sync::Mutex::new(()),
                connections_opened: AtomicU64::new(0),
            }),
        })
    }

    /// Sends one request and reads the whole answer, within the request timeout. The request's
    /// URI only needs a path (and query): scheme and authority are the client's origin.
    pub async fn send(&self, req: http::Request<Bytes>) -> Result<HttpResponse, HttpError> {
        let limit = self.inner.request_timeout;
        match tokio::time::timeout(limit, self.inner.send(req)).await {
            Ok(result) => result,
            Err(_) => {
                self.inner.check_connection();
                Err(HttpError::Timeout(limit))
            }
        }
    }

    /// The origin this client talks to (`https://host:port`).
    pub fn origin(&self) -> &str {
        &self.inner.origin.text
    }

    /// How many connections this client has opened so far (TLS handshakes completed).
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections_opened.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("origin", &self.inner.origin.text)
            .finish_non_exhaustive()
    }
}

impl Inner {
    async fn send(self: &Arc<Self>, req: http::Request<Bytes>) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");

        if let Some(conn) = self.cached_h2() {
            match self.send_h2(&conn, &parts, body.clone()).await {
                Ok(resp) => return Ok(resp),
                Err(Attempt::Failed(e)) if !e.not_sent() => return Err(e),
                Err(Attempt::Failed(e)) => {
                    // Refused or behind a GOAWAY: the server promises it did not process the
                    // stream, so a fresh connection gets the request.
                    log::debug!("request to {} refused unprocessed: {e}", self.origin.text);
                    self.forget_h2(conn.generation);
                }
                Err(Attempt::NotStarted(e)) => {
                    // The cached connection died before our stream opened; nothing was sent.
                    log::debug!("HTTP/2 connection to {} unusable: {e}", self.origin.text);
                    self.forget_h2(conn.generation);
                }
            }
        }
        if let Some(sender) = self.idle_http1() {
            return self.send_http1(sender, &parts, path, body).await;
        }
        match self.connect().await? {
            Fresh::H2(conn) => match self.send_h2(&conn, &parts, body).await {
                Ok(resp) => Ok(resp),
                Err(Attempt::Failed(e)) => Err(e),
                Err(Attempt::NotStarted(e)) => {
                    self.forget_h2(conn.generation);
                    Err(HttpError::Refused(e.to_string()))
                }
            },
            Fresh::Http1(sender) => self.send_http1(sender, &parts, path, body).await,
        }
    }

    fn cached_h2(&self) -> Option<H2Conn> {
        self.h2.lock().ok().and_then(|slot| slot.clone())
    }

    fn forget_h2(&self, generation: u64) {
        if let Ok(mut slot) = self.h2.lock() {
            if slot.as_ref().map(|c| c.generation) == Some(generation) {
                *slot = None;
            }
        }
    }

    /// Asks the current connection's driver to prove the peer is still there.
    fn check_connection(&self) {
        if let Some(conn) = self.cached_h2() {
            conn.check_now.notify_one();
        }
    }

    fn idle_http1(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.http1_idle.lock().ok()?;
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn keep_http1(&self, sender: http1::SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.http1_idle.lock() {
            if idle.len() < MAX_IDLE_HTTP1 {
                idle.push(sender);
            }
        }
    }

    async fn send_h2(
        &self,
        conn: &H2Conn,
        parts: &Parts,
        body: Bytes,
    ) -> Result<HttpResponse, Attempt> {
        // The head is cloned, not rebuilt: the map's values are reference-counted, and a
        // refused stream may need the request again on a fresh connection.
        let mut head = http::Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = self.origin.uri(&parts.uri).map_err(Attempt::Failed)?;
        let headers = head.headers_mut();
        *headers = parts.headers.clone();
        // HTTP/2 forbids connection-specific headers; the authority travels as :authority.
        for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE, HOST] {
            headers.remove(name);
        }

        let mut sender = conn
            .sender
            .clone()
            .ready()
            .await
            .map_err(Attempt::NotStarted)?;
        let end_of_stream = body.is_empty();
        let (response, mut stream) = sender
            .send_request(head, end_of_stream)
            .map_err(Attempt::NotStarted)?;
        if !end_of_stream {
            stream
                .send_data(body, true)
                .map_err(|e| Attempt::Failed(HttpError::from_stream(e)))?;
        }
        let response = response
            .await
            .map_err(|e| Attempt::Failed(HttpError::from_stream(e)))?;
        let (head, mut recv) = response.into_parts();
        let mut body = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| Attempt::Failed(HttpError::from_stream(e)))?;
            // Give the window back at once: we hold the bytes, the server may send more.
            let _ = recv.flow_control().release_capacity(chunk.len());
            if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(Attempt::Failed(HttpError::BodyTooLarge {
                    limit: MAX_RESPONSE_BODY,
                }));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status: head.status,
            headers: head.headers,
            body: body.freeze(),
        })
    }

    async fn send_http1(
        &self,
        mut sender: http1::SendRequest<Full<Bytes>>,
        parts: &Parts,
        path: &str,
        body: Bytes,
    ) -> Result<HttpResponse, HttpError> {
        let mut req = http::Request::builder()
            .method(parts.method.clone())
            .uri(path)
            .body(Full::new(body))
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        for (name, value) in &parts.headers {
            if name != HOST {
                req.headers_mut().append(name, value.clone());
            }
        }
        let host = http::HeaderValue::from_str(self.origin.authority.as_str())
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        req.headers_mut().insert(HOST, host);

        let response = sender.send_request(req).await.map_err(|e| {
            // hyper cancels a request it never wrote (the connection closed first).
            if e.is_canceled() {
                HttpError::Refused(e.to_string())
            } else {
                HttpError::Http1(e)
            }
        })?;
        let (head, incoming) = response.into_parts();
        let body = Limited::new(incoming, MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => HttpError::Http1(*e),
                Err(_) => HttpError::BodyTooLarge {
                    limit: MAX_RESPONSE_BODY,
                },
            })?
            .to_bytes();
        self.keep_http1(sender);
        Ok(HttpResponse {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Opens a connection (one at a time), unless another request just did.
    async fn connect(self: &Arc<Self>) -> Result<Fresh, HttpError> {
        let _one_at_a_time = self.connect_lock.lock().await;
        if let Some(conn) = self.cached_h2() {
            return Ok(Fresh::H2(conn));
        }
        let connect_error = |reason: String| HttpError::Connect {
            origin: self.origin.text.clone(),
            reason,
        };
        let tls = tokio::time::timeout(self.connect_timeout, self.open_tls())
            .await
            .map_err(|_| connect_error(format!("timed out after {:?}", self.connect_timeout)))??;
        let speaks_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.connections_opened.fetch_add(1, Ordering::Relaxed);

        if !speaks_h2 {
            let (sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            let origin = self.origin.text.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    log::debug!("HTTP/1.1 connection to {origin} ended: {e}");
                }
            });
            return Ok(Fresh::Http1(sender));
        }

        let handshake = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .handshake::<_, Bytes>(tls);
        let (sender, connection) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| connect_error("HTTP/2 handshake timed out".into()))?
            .map_err(|e| connect_error(format!("HTTP/2 handshake: {e}")))?;
        let conn = H2Conn {
            generation: self.connections_opened.load(Ordering::Relaxed),
            sender,
            check_now: Arc::new(Notify::new()),
        };
        if let Ok(mut slot) = self.h2.lock() {
            *slot = Some(conn.clone());
        }
        tokio::spawn(drive_h2(
            connection,
            Arc::downgrade(self),
            conn.generation,
            conn.check_now.clone(),
            self.connect_timeout,
            self.origin.text.clone(),
        ));
        Ok(Fresh::H2(conn))
    }

    async fn open_tls(&self) -> Result<TlsStream<TcpStream>, HttpError> {
        let connect_error = |reason: String| HttpError::Connect {
            origin: self.origin.text.clone(),
            reason,
        };
        let tcp = TcpStream::connect((self.origin.host.as_str(), self.origin.port))
            .await
            .map_err(|e| connect_error(format!("TCP: {e}")))?;
        let _ = tcp.set_nodelay(true);
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                // rustls reports its own failures (certificates, alerts) as InvalidData carrying
                // a rustls::Error; anything else is the network, e.g. a peer closing mid-handshake.
                let rustls_failure = e
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
                if rustls_failure {
                    HttpError::Tls {
                        origin: self.origin.text.clone(),
                        reason: e.to_string(),
                    }
                } else {
                    connect_error(format!("TLS handshake: {e}"))
                }
            })
    }
}

/// Drives one HTTP/2 connection until it ends or stops answering PINGs, then forgets it.
async fn drive_h2(
    connection: h2::client::Connection<TlsStream<TcpStream>, Bytes>,
    client: Weak<Inner>,
    generation: u64,
    check_now: Arc<Notify>,
    pong_timeout: Duration,
    origin: String,
) {
    let mut connection = connection;
    let mut ping_pong = connection.ping_pong();
    tokio::pin!(connection);
    loop {
        tokio::select! {
            ended = &mut connection => {
                if let Err(e) = ended {
                    log::debug!("HTTP/2 connection to {origin} ended: {e}");
                }
                break;
            }
            _ = tokio::time::sleep(PING_INTERVAL) => {}
            _ = check_now.notified() => {}
        }
        let Some(pings) = ping_pong.as_mut() else {
            continue;
        };
        let answered = tokio::select! {
            ended = &mut connection => {
                if let Err(e) = ended {
                    log::debug!("HTTP/2 connection to {origin} ended: {e}");
                }
                break;
            }
            pong = tokio::time::timeout(pong_timeout, pings.ping(h2::Ping::opaque())) => {
                matches!(pong, Ok(Ok(_)))
            }
        };
        if !answered {
            log::warn!("HTTP/2 connection to {origin} does not answer PING; dropping it");
            break;
        }
    }
    if let Some(client) = client.upgrade() {
        client.forget_h2(generation);
    }
}
