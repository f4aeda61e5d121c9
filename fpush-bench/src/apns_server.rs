//! A lean APNS test server on its own thread: HTTP/2 over TLS with a client certificate from the
//! test CA (certificate auth, so no provider token is verified per request), answering every
//! `POST /3/device/<token>` with 200 and an `apns-id`, optionally after a delay. Answers can be
//! held back on demand ([`ApnsServer::hold`]), so a scenario can have pushes in flight at the
//! provider at a moment of its choosing.
//!
//! It runs on a dedicated single-threaded runtime so its CPU time can be read apart from the
//! generator's and shown next to fpush's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fpush_testkit::tls::{serve, ClientAuth, P12Cipher, TestPki};
use http::{Response, StatusCode};

use crate::BenchError;

/// The `.p12` password fpush is configured with.
pub const P12_PASSWORD: &str = "bench";

/// A running APNS test server; stopped when dropped.
pub struct ApnsServer {
    /// `https://localhost:PORT`, for `apns.endpoint`.
    pub origin: String,
    /// The test CA (PEM), for `apns.caFilePath`.
    pub ca_path: PathBuf,
    /// The client certificate and key, for `apns.certFilePath`.
    pub p12_path: PathBuf,
    stat_path: PathBuf,
    requests: Arc<AtomicU64>,
    hold: tokio::sync::watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApnsServer {
    /// Makes a fresh PKI in `dir` and starts serving; every answer waits `delay` first.
    pub fn start(dir: &Path, delay: Duration) -> Result<Self, BenchError> {
        let pki = TestPki::new().map_err(|e| BenchError::Setup(format!("test PKI: {e}")))?;
        let ca_path = dir.join("ca.pem");
        pki.write_ca_pem(&ca_path)
            .map_err(|e| BenchError::Setup(format!("CA file: {e}")))?;
        let p12_path = dir.join("client.p12");
        pki.client_cert("org.example.bench")
            .and_then(|c| c.write_p12(&p12_path, P12_PASSWORD, P12Cipher::Modern))
            .map_err(|e| BenchError::Setup(format!("client certificate: {e}")))?;
        let config = pki
            .server_config(ClientAuth::Required)
            .map_err(|e| BenchError::Setup(format!("TLS server config: {e}")))?;

        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let (hold, held) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("apns-test-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let handler = move |req: http::Request<Bytes>, _conn| {
                        let counter = counter.clone();
                        let mut held = held.clone();
                        async move {
                            // A closed channel means the server is stopping: answer at once.
                            let _ = held.wait_for(|hold| !*hold).await;
                            answer(req, &counter, delay).await
                        }
                    };
                    let server = match serve(config, handler).await {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("listen: {e}")));
                            return;
                        }
                    };
                    let stat = crate::procfs::current_thread_stat().map_err(|e| e.to_string());
                    let _ = ready_tx.send(stat.map(|stat| (server.origin(), stat)));
                    let _ = stop_rx.await;
                    drop(server);
                });
            })
            .map_err(|e| BenchError::Setup(format!("APNS server thread: {e}")))?;
        let (origin, stat_path) = ready_rx
            .recv()
            .map_err(|_| BenchError::Setup("the APNS server thread died".into()))?
            .map_err(|e| BenchError::Setup(format!("APNS server: {e}")))?;
        Ok(Self {
            origin,
            ca_path,
            p12_path,
            stat_path,
            requests,
            hold,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Requests answered (or being answered) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// While `true`, requests are taken but not answered; `false` releases them all.
    pub fn hold(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// CPU seconds the server's thread used so far.
    pub fn cpu_seconds(&self) -> f64 {
        crate::procfs::cpu_seconds(&self.stat_path).unwrap_or(0.0)
    }
}

impl Drop for ApnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(
    req: http::Request<Bytes>,
    counter: &AtomicU64,
    delay: Duration,
) -> Response<Bytes> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Bytes::new());
    if req.method() != http::Method::POST || !req.uri().path().starts_with("/3/device/") {
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    if let Ok(id) = http::HeaderValue::from_str(&format!("00000000-0000-4000-8000-{n:012X}")) {
        response.headers_mut().insert("apns-id", id);
    }
    response
}
