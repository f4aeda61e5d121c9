//! The benchmark's APNS provider: the testkit's [`ApnsHarness`] (certificate auth, so no
//! provider token is verified per request) on its own thread, not keeping the requests it
//! answers. Answers can be held back on demand ([`ApnsServer::hold`]), so a scenario can have
//! pushes in flight at the provider at a moment of its choosing.
//!
//! It runs on a dedicated single-threaded runtime so its CPU time can be read apart from the
//! generator's and shown next to fpush's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fpush_testkit::apns::{ApnsAnswer, ApnsHarness, ApnsHarnessOptions};
use fpush_testkit::tls::{P12Cipher, ServeOptions};
use tokio::sync::{oneshot, watch};

use crate::scenario::Provider;
use crate::BenchError;

/// The `.p12` password fpush is configured with.
pub use fpush_testkit::apns::P12_PASSWORD;

/// The topic fpush's module sends.
const TOPIC: &str = "org.example.bench";

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
    connections: Arc<AtomicU64>,
    hold: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the server thread reports once it listens.
struct Ready {
    origin: String,
    ca_path: PathBuf,
    p12_path: PathBuf,
    stat_path: PathBuf,
}

impl ApnsServer {
    /// Writes the credentials into `dir` and starts serving as `provider` says (answer delay,
    /// streams per connection).
    pub fn start(dir: &Path, provider: Provider) -> Result<Self, BenchError> {
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (hold, held) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let serve = Serve {
            dir: dir.to_path_buf(),
            provider,
            requests: requests.clone(),
            connections: connections.clone(),
            held,
            stop: stop_rx,
        };
        let thread = std::thread::Builder::new()
            .name("apns-test-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(serve.run(ready_tx)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                    }
                }
            })
            .map_err(|e| BenchError::Setup(format!("APNS server thread: {e}")))?;
        let ready = ready_rx
            .recv()
            .map_err(|_| BenchError::Setup("the APNS server thread died".into()))?
            .map_err(|e| BenchError::Setup(format!("APNS server: {e}")))?;
        Ok(Self {
            origin: ready.origin,
            ca_path: ready.ca_path,
            p12_path: ready.p12_path,
            stat_path: ready.stat_path,
            requests,
            connections,
            hold,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Requests answered (or being answered) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Connections that carried requests so far (the highest connection number seen).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
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

/// What the server thread runs.
struct Serve {
    dir: PathBuf,
    provider: Provider,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    held: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
}

impl Serve {
    async fn run(mut self, ready: std::sync::mpsc::Sender<Result<Ready, String>>) {
        let harness = match self.start().await {
            Ok(harness) => harness,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(self.ready(&harness));
        loop {
            tokio::select! {
                _ = &mut self.stop => break,
                changed = self.held.changed() => match changed {
                    Ok(()) => harness.server.hold(*self.held.borrow_and_update()),
                    Err(_) => break,
                },
            }
        }
        drop(harness);
    }

    async fn start(&self) -> Result<ApnsHarness, String> {
        let options = ApnsHarnessOptions {
            dir: Some(self.dir.clone()),
            topic: TOPIC.into(),
            serve: ServeOptions {
                max_concurrent_streams: self.provider.streams,
            },
            ..ApnsHarnessOptions::default()
        };
        let harness = ApnsHarness::start_with(options)
            .await
            .map_err(|e| format!("listen: {e}"))?;
        harness.server.set_recording(false);
        let counter = self.requests.clone();
        let connections = self.connections.clone();
        harness.server.set_observer(move |received| {
            counter.fetch_add(1, Ordering::Relaxed);
            connections.fetch_max(received.connection, Ordering::Relaxed);
        });
        let delay = self.provider.delay;
        if !delay.is_zero() {
            harness
                .server
                .set_responder(move |_| Some(ApnsAnswer::ok().delayed(delay)));
        }
        Ok(harness)
    }

    fn ready(&self, harness: &ApnsHarness) -> Result<Ready, String> {
        let p12_path = harness
            .p12_file(P12Cipher::Modern)
            .map_err(|e| format!("client certificate: {e}"))?;
        Ok(Ready {
            origin: harness.origin(),
            ca_path: harness.ca_file().to_path_buf(),
            p12_path,
            stat_path: crate::procfs::current_thread_stat().map_err(|e| e.to_string())?,
        })
    }
}
