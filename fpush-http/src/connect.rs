//! [`Connector`]: opening one connection to the origin (TCP, TLS, then HTTP/2 or HTTP/1.1 as
//! ALPN decides), bounded by the connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::origin::Origin;
use crate::HttpError;

/// Streams opened before the server's SETTINGS arrive (APNS starts low and raises it).
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Largest header block of an answer. Providers send well under a kilobyte; h2's own default
/// (16 MiB) would let each stream in flight hold that much.
const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// An HTTP/2 connection as the handshake leaves it: the handle requests use and the
/// connection future someone must drive.
pub(crate) type H2Handshake = (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<TlsStream<TcpStream>, Bytes>,
);

/// A connection just made.
pub(crate) enum Fresh {
    H2(Box<H2Handshake>),
    Http1(http1::SendRequest<Full<Bytes>>),
}

/// Everything needed to open a connection to one origin.
pub(crate) struct Connector {
    pub(crate) origin: Origin,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    pub(crate) connect_timeout: Duration,
    /// Where to connect when the caller fixed it ([`crate::HttpConfig::addresses`]).
    addresses: Vec<SocketAddr>,
}

impl Connector {
    pub(crate) fn new(
        origin: Origin,
        tls: TlsConnector,
        connect_timeout: Duration,
        addresses: Vec<SocketAddr>,
    ) -> Result<Self, HttpError> {
        let server_name =
            ServerName::try_from(origin.host.clone()).map_err(|e| HttpError::InvalidOrigin {
                origin: origin.text.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            origin,
            server_name,
            tls,
            connect_timeout,
            addresses,
        })
    }

    fn connect_error(&self, reason: String) -> HttpError {
        HttpError::Connect {
            origin: self.origin.text.clone(),
            reason,
        }
    }

    /// Opens one connection: TCP, TLS, and the HTTP handshake ALPN chose, each bounded by the
    /// connect timeout.
    pub(crate) async fn open(&self) -> Result<Fresh, HttpError> {
        let limit = self.connect_timeout;
        let tls = tokio::time::timeout(limit, self.open_tls())
            .await
            .map_err(|_| self.connect_error(format!("timed out after {limit:?}")))??;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            let (sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| self.connect_error(e.to_string()))?;
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
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            // Nothing reads pushed streams, and h2 holds every one promised (without a bound of
            // its own) as long as the request it came with: a push is a protocol error.
            .enable_push(false)
            .handshake::<_, Bytes>(tls);
        let pair = tokio::time::timeout(limit, handshake)
            .await
            .map_err(|_| self.connect_error("HTTP/2 handshake timed out".into()))?
            .map_err(|e| self.connect_error(format!("HTTP/2 handshake: {e}")))?;
        Ok(Fresh::H2(Box::new(pair)))
    }

    async fn open_tls(&self) -> Result<TlsStream<TcpStream>, HttpError> {
        let tcp = if self.addresses.is_empty() {
            TcpStream::connect((self.origin.host.as_str(), self.origin.port)).await
        } else {
            TcpStream::connect(&self.addresses[..]).await
        };
        let tcp = tcp.map_err(|e| self.connect_error(format!("TCP: {e}")))?;
        let _ = tcp.set_nodelay(true);
        self.tls
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
                    self.connect_error(format!("TLS handshake: {e}"))
                }
            })
    }
}
