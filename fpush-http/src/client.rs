//! [`HttpClient`]: one origin's connection pool and the request path over it.
//!
//! A request leases a stream from the [`Pool`] and sends on it. A stream refused unprocessed
//! (behind a GOAWAY, `REFUSED_STREAM`, a connection that closed before the stream opened) is
//! sent again on another stream, since the server promises it did not act on it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fpush_traits::PoolGauges;
use http::header::{HeaderName, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio_rustls::TlsConnector;

use crate::breaker::{Breaker, ThrottleKey};
use crate::connect::Connector;
use crate::origin::Origin;
use crate::pool::{Http1Conn, Lease, Pool, Stream};
use crate::{HttpConfig, HttpError, HttpResponse, MAX_RESPONSE_BODY};

/// Headers that HTTP/2 forbids (RFC 9113, 8.2.2; `TE` is allowed only as `trailers`, which we
/// never need) or carries as a pseudo-header (`Host`). h2 refuses a request with any of them,
/// and the refusal would read as a connection that takes no more streams.
const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    HOST,
    TE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Tries per request when streams are refused unprocessed (each on a fresh lease).
const MAX_REFUSED: usize = 3;

/// A client for one origin; cheap to clone, all clones share the pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Origin,
    request_timeout: std::time::Duration,
    pool: Arc<Pool>,
    breaker: Breaker,
}

/// How far an HTTP/2 attempt got: a refused one may go to another stream.
enum Attempt {
    /// Not processed by the server; `retire` when the connection takes no new streams.
    Refused {
        error: HttpError,
        retire: bool,
    },
    Failed(HttpError),
}

impl HttpClient {
    /// Builds the client: parses the origin, loads the CA file and the TLS config. No network
    /// and no runtime needed; connections are made by requests that need them.
    pub fn new(origin: &str, cfg: HttpConfig) -> Result<Self, HttpError> {
        let origin = Origin::parse(origin)?;
        let tls = TlsConnector::from(crate::tls::client_config(&cfg)?);
        let connector = Connector::new(origin.clone(), tls, cfg.connect_timeout, cfg.addresses)?;
        let pool = Pool::new(connector, cfg.max_connections, cfg.idle_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                breaker: Breaker::new(cfg.breaker, origin.text.clone()),
                origin,
                request_timeout: cfg.request_timeout,
                pool: Arc::new(pool),
            }),
        })
    }

    /// Sends one request and reads the whole answer, within the request timeout (waiting for a
    /// free stream included). The request's URI only needs a path (and query): scheme and
    /// authority are the client's origin.
    pub async fn send(&self, req: http::Request<Bytes>) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let head = || self.inner.head_of(&parts);
        self.send_head(head()?, head, body).await
    }

    /// Like [`HttpClient::send`], for a caller that can make the head again: `first` goes on the
    /// first stream, and `again` makes the head for another stream when one is refused
    /// unprocessed (rare), so the common case copies no header map. The heads' URIs must come
    /// from [`HttpClient::uri`]: they are sent as they are.
    pub async fn send_head<F>(
        &self,
        first: http::Request<()>,
        again: F,
        body: Bytes,
    ) -> Result<HttpResponse, HttpError>
    where
        F: Fn() -> Result<http::Request<()>, HttpError>,
    {
        if let Some(left) = self.inner.breaker.remaining() {
            return Err(HttpError::Paused(left));
        }
        let limit = self.inner.request_timeout;
        match tokio::time::timeout(limit, self.inner.send(first, &again, body)).await {
            Ok(result) => result,
            Err(_) => {
                self.inner.pool.check_all();
                Err(HttpError::Timeout(limit))
            }
        }
    }

    /// The absolute URI of `path` on this client's origin, for the heads of
    /// [`HttpClient::send_head`].
    pub fn uri(&self, path: PathAndQuery) -> Result<Uri, HttpError> {
        self.inner.origin.uri_of(path)
    }

    /// The origin this client talks to (`https://host:port`).
    pub fn origin(&self) -> &str {
        &self.inner.origin.text
    }

    /// How many connections this client has opened so far (TLS handshakes completed).
    pub fn connections_opened(&self) -> u64 {
        self.inner.pool.opened()
    }

    /// How many HTTP/2 connections are in the pool now (draining ones not counted).
    pub fn connections_open(&self) -> usize {
        self.inner.pool.open_now()
    }

    /// How often the provider paused this client (503 with `Retry-After`, 429s for many
    /// tokens at once).
    pub fn pauses(&self) -> u64 {
        self.inner.breaker.trips()
    }

    /// What is left of the provider's pause, if one is on.
    pub fn paused_for(&self) -> Option<std::time::Duration> {
        self.inner.breaker.remaining()
    }

    /// Pauses the whole client on an answer the platform read as module-wide (FCM's
    /// project-wide quota): for `retry_after`, or the breaker's default pause without one.
    /// Returns the pause applied; counted and logged like the breaker's own trips.
    pub fn pause(
        &self,
        retry_after: Option<std::time::Duration>,
        cause: &str,
    ) -> std::time::Duration {
        self.inner.breaker.pause(retry_after, cause)
    }

    /// The pool's state for the metrics: its connections now, how many it opened, and the
    /// provider's pause.
    pub fn gauges(&self) -> PoolGauges {
        PoolGauges {
            connections: self.inner.pool.gauges(),
            connections_opened: self.connections_opened(),
            paused_for: self.paused_for(),
            pauses: self.pauses(),
        }
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
    /// A head made from a request's parts: its path on the origin, its method and headers.
    fn head_of(&self, parts: &Parts) -> Result<http::Request<()>, HttpError> {
        let mut head = http::Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = self.origin.uri(&parts.uri)?;
        *head.headers_mut() = parts.headers.clone();
        if let Some(key) = parts.extensions.get::<ThrottleKey>() {
            head.extensions_mut().insert(*key);
        }
        Ok(head)
    }

    async fn send<F>(
        &self,
        first: http::Request<()>,
        again: &F,
        body: Bytes,
    ) -> Result<HttpResponse, HttpError>
    where
        F: Fn() -> Result<http::Request<()>, HttpError>,
    {
        let mut head = Some(first);
        let mut refused = 0;
        loop {
            let next = match head.take() {
                Some(head) => head,
                None => again()?,
            };
            let lease = self.pool.acquire().await?;
            // The provider may have asked for a pause while this request waited for a stream.
            if let Some(left) = self.breaker.remaining() {
                if let Lease::Http1(conn) = lease {
                    self.pool.keep_http1(conn);
                }
                return Err(HttpError::Paused(left));
            }
            let stream = match lease {
                Lease::H2(stream) => stream,
                Lease::Http1(conn) => {
                    let resp = self.send_http1(conn, next, body.clone()).await?;
                    self.observe(again, &resp);
                    return Ok(resp);
                }
            };
            match self.send_h2(&stream, next, body.clone()).await {
                Ok(resp) => {
                    self.observe(again, &resp);
                    return Ok(resp);
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Refused { error, retire }) => {
                    log::debug!(
                        "request to {} refused unprocessed: {error}",
                        self.origin.text
                    );
                    if retire {
                        stream.retire();
                    }
                    refused += 1;
                    if refused == MAX_REFUSED {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Shows a throttling answer to the breaker, with the request's [`ThrottleKey`] (read
    /// from a head made again: it is needed only for these answers).
    fn observe<F>(&self, again: &F, resp: &HttpResponse)
    where
        F: Fn() -> Result<http::Request<()>, HttpError>,
    {
        let status = resp.status.as_u16();
        if status == 429 || status == 503 {
            let key = again().map_or(ThrottleKey::of(""), |head| {
                let given = head.extensions().get::<ThrottleKey>().copied();
                let target = head.uri().path_and_query().map(|p| p.as_str());
                given.unwrap_or_else(|| ThrottleKey::of(target.unwrap_or_default()))
            });
            let retry_after = crate::retry_after(&resp.headers);
            self.breaker.observe(status, retry_after, key);
        }
    }

    async fn send_h2(
        &self,
        stream: &Stream,
        mut head: http::Request<()>,
        body: Bytes,
    ) -> Result<HttpResponse, Attempt> {
        let headers = head.headers_mut();
        // The modules never set them: a look over the few names is cheaper than seven removals.
        if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
            for name in HOP_BY_HOP {
                headers.remove(name);
            }
        }
        let not_started = |e: h2::Error| Attempt::Refused {
            error: HttpError::Refused(e.to_string()),
            retire: true,
        };
        let mut sender = stream
            .conn()
            .sender
            .clone()
            .ready()
            .await
            .map_err(not_started)?;
        let end_of_stream = body.is_empty();
        let (response, mut send) = sender
            .send_request(head, end_of_stream)
            .map_err(not_started)?;
        if !end_of_stream {
            send.send_data(body, true).map_err(in_flight)?;
        }
        let (head, recv) = response.await.map_err(in_flight)?.into_parts();
        let body = read_body(recv).await.map_err(Attempt::Failed)?;
        Ok(HttpResponse {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    async fn send_http1(
        &self,
        mut conn: Http1Conn,
        head: http::Request<()>,
        body: Bytes,
    ) -> Result<HttpResponse, HttpError> {
        let (parts, ()) = head.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut req = http::Request::builder()
            .method(parts.method)
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

        let response = conn.sender.send_request(req).await.map_err(|e| {
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
        self.pool.keep_http1(conn);
        Ok(HttpResponse {
            status: head.status,
            headers: head.headers,
            body,
        })
    }
}

/// Reads an error on a stream that was sent: refused unprocessed (a GOAWAY above its id retires
/// the connection; `REFUSED_STREAM` refuses only the stream), or failed.
fn in_flight(e: h2::Error) -> Attempt {
    let goaway = e.is_go_away() && e.is_remote();
    match HttpError::from_stream(e) {
        error if error.not_sent() => Attempt::Refused {
            error,
            retire: goaway,
        },
        error => Attempt::Failed(error),
    }
}

/// Reads a whole answer body, at most [`MAX_RESPONSE_BODY`] bytes. The answer's head came, so
/// the provider took the request: a stream refused or a GOAWAY now is no "not sent" (which
/// would be sent again, and could notify the user twice), only a failure.
async fn read_body(mut recv: h2::RecvStream) -> Result<Bytes, HttpError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(HttpError::H2)?;
        // Give the window back at once: we hold the bytes, the server may send more.
        let _ = recv.flow_control().release_capacity(chunk.len());
        if body.len() + chunk.len() > MAX_RESPONSE_BODY {
            return Err(HttpError::BodyTooLarge {
                limit: MAX_RESPONSE_BODY,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
