//! A test PKI made at run time and an HTTP/2-over-TLS server to hang test handlers on.
//!
//! [`TestPki`] makes a CA (X.509 v3, basic constraints `CA:TRUE`), a server certificate for
//! `localhost` and `127.0.0.1`, and client certificates signed by the same CA (APNS certificate
//! auth), exportable as PEM or as a password-protected `.p12`. Nothing is read from disk, so
//! every test run gets fresh keys and no certificate ever expires in the repository.
//!
//! [`serve`] runs a TLS server on `127.0.0.1:0` that speaks HTTP/2 (and HTTP/1.1 when the client
//! asks for it through ALPN, as OAuth token endpoints may) and hands every request, its body
//! already collected, to a handler. The handler also receives the [`Connection`] the request
//! came on, so fault injection (GOAWAY, dropping the connection mid-request, stalling) is a
//! matter of what the handler does; refusing TLS altogether is a switch on the [`TestServer`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Concurrent HTTP/2 streams the test server allows per connection (what APNS announces).
pub const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// How a test server's HTTP/2 side behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` announced on every connection.
    pub max_concurrent_streams: u32,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
        }
    }
}

/// Largest request body the test server collects; larger bodies are answered 413.
pub const MAX_TEST_BODY: usize = 1024 * 1024;

/// Why the test PKI or the test server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier could not be built: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PKCS#12 export failed: {0}")]
    Pkcs12(String),
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The ring crypto provider, which every rustls config in this workspace uses explicitly so no
/// process-wide default has to be installed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA with a `localhost` server certificate, able to issue client certificates.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
    issued: IssuedNames,
}

/// The common name of each client certificate a [`TestPki`] issued, so that a server can tell
/// what a verified client certificate was issued for (APNS: the app's topic).
#[derive(Debug, Clone, Default)]
pub struct IssuedNames(Arc<Mutex<HashMap<Vec<u8>, String>>>);

impl IssuedNames {
    /// The common name `cert` was issued with; `None` for a certificate this PKI did not issue.
    pub fn name_of(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let issued = self.0.lock().unwrap_or_else(|e| e.into_inner());
        issued.get(cert.as_ref()).cloned()
    }

    fn insert(&self, cert: &CertificateDer<'_>, name: &str) {
        let mut issued = self.0.lock().unwrap_or_else(|e| e.into_inner());
        issued.insert(cert.to_vec(), name.to_string());
    }
}

impl TestPki {
    /// Makes a fresh CA and server certificate (ECDSA P-256).
    pub fn new() -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name = distinguished_name("fpush test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_der = ca_cert.der().clone();
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server_params.distinguished_name = distinguished_name("localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        Ok(Self {
            issuer,
            server_chain: vec![server_cert.der().clone(), ca_der.clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
            ca_der,
            ca_pem,
            issued: IssuedNames::default(),
        })
    }

    /// The names of the client certificates issued so far and later.
    pub fn issued_names(&self) -> IssuedNames {
        self.issued.clone()
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// The CA certificate, PEM (what `caFilePath` points at).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate as PEM to `path`.
    pub fn write_ca_pem(&self, path: &Path) -> Result<(), TlsError> {
        std::fs::write(path, &self.ca_pem).map_err(|source| TlsError::Io {
            what: path.display().to_string(),
            source,
        })
    }

    /// A root store trusting only this CA (for test clients).
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // The CA was made a moment ago by rcgen; rustls accepts it.
        let _ = roots.add(self.ca_der.clone());
        roots
    }

    /// The server certificate chain (leaf first) for `localhost` / `127.0.0.1`.
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        self.server_chain.clone()
    }

    /// The server's private key.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.server_key.clone_key())
    }

    /// Issues a client certificate (CN = `common_name`, clientAuth) signed by the CA.
    pub fn client_cert(&self, common_name: &str) -> Result<ClientCert, TlsError> {
        self.issue_client_cert(common_name, None)
    }

    /// Like [`TestPki::client_cert`], valid until the start of `(year, month, day)`, UTC (for
    /// tests of expiry monitoring).
    pub fn client_cert_until(
        &self,
        common_name: &str,
        until: (i32, u8, u8),
    ) -> Result<ClientCert, TlsError> {
        self.issue_client_cert(common_name, Some(until))
    }

    fn issue_client_cert(
        &self,
        common_name: &str,
        until: Option<(i32, u8, u8)>,
    ) -> Result<ClientCert, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        if let Some((year, month, day)) = until {
            params.not_after = rcgen::date_time_ymd(year, month, day);
        }
        params.distinguished_name = distinguished_name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        self.issued.insert(cert.der(), common_name);
        Ok(ClientCert {
            common_name: common_name.to_string(),
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pkcs8: key.serialize_der(),
            key_pem: key.serialize_pem(),
            ca_der: self.ca_der.clone(),
        })
    }

    /// A server config with this PKI's server certificate and the given client-certificate
    /// policy. ALPN offers `h2` and `http/1.1`, in that order.
    pub fn server_config(&self, client_auth: ClientAuth) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config_with_alpn(client_auth, &[b"h2", b"http/1.1"])
    }

    /// Like [`TestPki::server_config`], with the ALPN protocols given (e.g. only `http/1.1`, to
    /// check a client falls back to HTTP/1.1).
    pub fn server_config_with_alpn(
        &self,
        client_auth: ClientAuth,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = crypto_provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(self.root_store()),
                    provider,
                );
                let verifier = if client_auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(verifier.build()?)
            }
        };
        let mut config = builder.with_single_cert(self.server_chain(), self.server_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "fpush tests");
    dn
}

/// Whether the test server asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate requested.
    None,
    /// Requested and verified against the test CA when presented; connections without one are
    /// accepted (the handler sees `client_cert == None`). This is what an APNS test server
    /// serving both auth modes wants.
    Optional,
    /// A certificate from the test CA is required to complete the handshake.
    Required,
}

/// A client certificate issued by a [`TestPki`].
#[derive(Clone)]
pub struct ClientCert {
    pub common_name: String,
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    pub key_pem: String,
    ca_der: CertificateDer<'static>,
}

/// How a `.p12` is encrypted: what current tools write, or what older `openssl pkcs12` and
/// Apple's Keychain exports wrote (3DES, SHA-1 MAC), which fpush must still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum P12Cipher {
    Modern,
    Legacy3Des,
}

impl ClientCert {
    /// The certificate chain (leaf, then CA) and key as rustls types.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert_der.clone(), self.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone())),
        )
    }

    /// Exports key, certificate and CA as a PKCS#12 archive protected by `password`.
    pub fn to_p12(&self, password: &str, cipher: P12Cipher) -> Result<Vec<u8>, TlsError> {
        use p12_keystore::{
            Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
            PrivateKeyChain,
        };
        let p12 = |e: p12_keystore::error::Error| TlsError::Pkcs12(e.to_string());
        let key = PrivateKey::from_der(&self.key_pkcs8).map_err(p12)?;
        let leaf = Certificate::from_der(&self.cert_der).map_err(p12)?;
        let ca = Certificate::from_der(&self.ca_der).map_err(p12)?;
        let chain = PrivateKeyChain::new("fpush-test-key-id", key, [leaf, ca]);
        let mut store = KeyStore::new();
        store.add_entry(&self.common_name, KeyStoreEntry::PrivateKeyChain(chain));
        let writer = store.writer(password);
        let writer = match cipher {
            P12Cipher::Modern => writer,
            P12Cipher::Legacy3Des => writer
                .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
                .mac_algorithm(MacAlgorithm::HmacSha1),
        };
        writer.write().map_err(p12)
    }

    /// Writes [`ClientCert::to_p12`] to `path`.
    pub fn write_p12(
        &self,
        path: &Path,
        password: &str,
        cipher: P12Cipher,
    ) -> Result<(), TlsError> {
        let bytes = self.to_p12(password, cipher)?;
        std::fs::write(path, bytes).map_err(|source| TlsError::Io {
            what: path.display().to_string(),
            source,
        })
    }
}

/// One accepted TLS connection, as a handler sees it.
pub struct Connection {
    /// Sequence number of the connection on its server, starting at 1.
    pub id: u64,
    pub peer: SocketAddr,
    /// The ALPN protocol the client and server agreed on (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The leaf certificate the client presented, verified against the test CA.
    pub client_cert: Option<CertificateDer<'static>>,
    goaway: CancellationToken,
    drop_now: CancellationToken,
}

impl Connection {
    /// Starts a graceful shutdown: HTTP/2 GOAWAY, in-flight streams finish, new ones are refused.
    pub fn goaway(&self) {
        self.goaway.cancel();
    }

    /// Drops the connection at once, in-flight requests included (a reset as the client sees it).
    pub fn drop_connection(&self) {
        self.drop_now.cancel();
    }
}

/// A running test server. Dropping it stops accepting and closes every connection.
pub struct TestServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    state: Arc<ServerState>,
}

#[derive(Default)]
struct ServerState {
    connections: AtomicU64,
    refuse_tls: AtomicBool,
}

impl TestServer {
    /// The bound address (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:port`, the origin clients should use (the certificate names
    /// `localhost` and `127.0.0.1`).
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// How many TCP connections were accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// While set, new TCP connections are closed before the TLS handshake.
    pub fn set_refuse_tls(&self, refuse: bool) {
        self.state.refuse_tls.store(refuse, Ordering::SeqCst);
    }

    /// A handle that stops the server when cancelled (the server also stops on drop).
    pub fn shutdown_handle(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves HTTP/2 (or HTTP/1.1 via ALPN) over TLS on `127.0.0.1:0`, calling `handler` for every
/// request with its body collected (at most [`MAX_TEST_BODY`] bytes). Must be called inside a
/// tokio runtime.
pub async fn serve<H, F>(config: Arc<ServerConfig>, handler: H) -> Result<TestServer, TlsError>
where
    H: Fn(Request<Bytes>, Arc<Connection>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Bytes>> + Send + 'static,
{
    serve_on(
        "127.0.0.1:0".parse().map_err(|e| TlsError::Io {
            what: "127.0.0.1:0".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?,
        config,
        handler,
    )
    .await
}

/// Like [`serve`], on a given address (e.g. a port chosen on the command line).
pub async fn serve_on<H, F>(
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    handler: H,
) -> Result<TestServer, TlsError>
where
    H: Fn(Request<Bytes>, Arc<Connection>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Bytes>> + Send + 'static,
{
    serve_with(addr, config, ServeOptions::default(), handler).await
}

/// Like [`serve_on`], with the HTTP/2 behaviour given (e.g. a provider's stream limit).
pub async fn serve_with<H, F>(
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    options: ServeOptions,
    handler: H,
) -> Result<TestServer, TlsError>
where
    H: Fn(Request<Bytes>, Arc<Connection>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Bytes>> + Send + 'static,
{
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| TlsError::Io {
            what: format!("bind {addr}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| TlsError::Io {
        what: "local_addr".into(),
        source,
    })?;
    let shutdown = CancellationToken::new();
    let state = Arc::new(ServerState::default());
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(config),
        Arc::new(handler),
        shutdown.clone(),
        state.clone(),
        options,
    ));
    Ok(TestServer {
        addr,
        shutdown,
        state,
    })
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handler: Arc<H>,
    shutdown: CancellationToken,
    state: Arc<ServerState>,
    options: ServeOptions,
) where
    H: Fn(Request<Bytes>, Arc<Connection>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Bytes>> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    log::warn!("test server accept failed: {e}");
                    continue;
                }
            },
        };
        let id = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if state.refuse_tls.load(Ordering::SeqCst) {
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                tls = acceptor.accept(tcp) => match tls {
                    Ok(tls) => tls,
                    Err(e) => {
                        log::debug!("test server TLS handshake with {peer} failed: {e}");
                        return;
                    }
                },
            };
            let (_, session) = tls.get_ref();
            let conn = Arc::new(Connection {
                id,
                peer,
                alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                client_cert: session
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|c| c.clone().into_owned()),
                goaway: CancellationToken::new(),
                drop_now: CancellationToken::new(),
            });
            serve_connection(tls, conn, handler, shutdown, options).await;
        });
    }
}

async fn serve_connection<H, F>(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    conn: Arc<Connection>,
    handler: Arc<H>,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    H: Fn(Request<Bytes>, Arc<Connection>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Bytes>> + Send + 'static,
{
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let conn = service_conn.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = match Limited::new(body, MAX_TEST_BODY).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                    return Ok::<_, Infallible>(resp);
                }
            };
            let resp = handler(Request::from_parts(parts, body), conn).await;
            Ok(resp.map(Full::new))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Apple announces 1000 concurrent streams per connection; hyper's default is lower.
    builder
        .http2()
        .max_concurrent_streams(options.max_concurrent_streams);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(served);
    let mut goaway_sent = false;
    loop {
        tokio::select! {
            _ = served.as_mut() => return,
            _ = conn.drop_now.cancelled() => return,
            _ = shutdown.cancelled() => return,
            _ = conn.goaway.cancelled(), if !goaway_sent => {
                goaway_sent = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_makes_v3_ca_and_server_certificate() {
        let pki = TestPki::new().unwrap();
        assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        // X.509 v3: the version field [0] EXPLICIT INTEGER 2 follows the TBS header.
        let der = pki.ca_der();
        assert!(der.windows(5).any(|w| w == [0xa0, 0x03, 0x02, 0x01, 0x02]));
        assert_eq!(pki.server_chain().len(), 2);
    }

    #[test]
    fn client_cert_exports_to_p12_in_both_ciphers() {
        let pki = TestPki::new().unwrap();
        let client = pki.client_cert("com.example.app").unwrap();
        for cipher in [P12Cipher::Modern, P12Cipher::Legacy3Des] {
            let bytes = client.to_p12("secret", cipher).unwrap();
            let store = p12_keystore::KeyStore::from_pkcs12(
                &bytes,
                "secret",
                p12_keystore::Pkcs12ImportPolicy::Strict,
            )
            .unwrap();
            let (_, chain) = store.private_key_chain().unwrap();
            assert_eq!(chain.certs()[0].as_der(), client.cert_der.as_ref());
            assert!(p12_keystore::KeyStore::from_pkcs12(
                &bytes,
                "wrong",
                p12_keystore::Pkcs12ImportPolicy::Strict
            )
            .is_err());
        }
    }

    #[tokio::test]
    async fn server_answers_over_tls_and_counts_connections() {
        let pki = TestPki::new().unwrap();
        let config = pki.server_config(ClientAuth::None).unwrap();
        let server = serve(
            config,
            |req: Request<Bytes>, conn: Arc<Connection>| async move {
                Response::new(Bytes::from(format!("{} {}", conn.id, req.uri().path())))
            },
        )
        .await
        .unwrap();

        let client_config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(pki.root_store())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("1 /hello"), "{answer}");
        assert_eq!(server.connections_accepted(), 1);
    }
}
