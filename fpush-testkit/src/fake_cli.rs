//! What the fake provider binaries (`fake-apns`, `fake-fcm`) share: the runtime they run on,
//! the one JSON line that tells a harness where they listen, and serving until a signal.

use std::future::Future;
use std::io::Write;

/// Print `announce` as one JSON line on stdout and flush it: the harness reads this line to
/// learn the port and the credential files before it starts fpush.
pub fn announce(announce: &serde_json::Value) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{announce}").map_err(|e| e.to_string())?;
    stdout.flush().map_err(|e| e.to_string())
}

/// Wait for SIGTERM or SIGINT: how a harness stops a fake provider.
pub async fn until_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Run `serve` with the parsed `options` on a two-thread runtime; on any error print it as
/// `name: error` and exit with status 2.
pub fn main<O, F, Fut>(name: &str, options: Result<O, String>, serve: F)
where
    F: FnOnce(O) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let result = options.and_then(|options| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(serve(options))
    });
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(2);
    }
}
