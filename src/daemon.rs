//! The running daemon: wires the component link, the dispatcher and the modules together, and
//! takes them down in order when asked to stop.
//!
//! Shutdown is explicit and ordered so that no push is lost: stop reading, answer what was
//! already read, let pushes at the providers finish (bounded by `limits.shutdownGrace`), flush
//! their replies, close the stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::component::{self, ComponentConfig, LinkState};
use crate::config::Settings;
use crate::dispatcher::Dispatcher;
use crate::modules::ModuleSet;

/// How many parsed-but-undispatched stanzas may wait between the link and the dispatcher.
const INBOUND_QUEUE: usize = 1024;
/// The reconnect backoff never waits longer than this (ejabberd drops registrations while the
/// component is away, so downtime must stay short).
const RECONNECT_CAP: Duration = Duration::from_secs(60);
/// How long the link may take to flush the last replies and close the stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The component link settings derived from the settings file.
pub fn component_config(settings: &Settings) -> ComponentConfig {
    let component = &settings.component;
    ComponentConfig {
        jid: component.component_hostname.clone(),
        secret: component.component_key.clone(),
        server_host: component.server_hostname.clone(),
        server_port: component.server_port,
        reconnect_base: settings.timeout.xmpp_connection_error,
        reconnect_cap: RECONNECT_CAP.max(settings.timeout.xmpp_connection_error),
        keepalive_interval: settings.timeout.keepalive_interval,
        keepalive_timeout: settings.timeout.keepalive_timeout,
        max_stanza_size: settings.limits.max_stanza_size,
        max_depth: settings.limits.max_depth,
    }
}

/// Run until `shutdown` is cancelled, then stop in order. `state` reports the link's state to
/// whoever watches it (logs, health checks).
pub async fn run(
    settings: &Settings,
    modules: ModuleSet,
    shutdown: CancellationToken,
    state: watch::Sender<LinkState>,
) {
    let modules = Arc::new(modules);
    let sweepers = CancellationToken::new();
    modules.spawn_sweepers(&sweepers);

    let (reply_tx, reply_rx) = component::reply_channel();
    let (inbound_tx, mut inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let stop_reading = CancellationToken::new();
    let link = tokio::spawn(component::run(
        component_config(settings),
        inbound_tx,
        reply_rx,
        state,
        stop_reading.clone(),
    ));
    let dispatcher = Dispatcher::new(
        modules.clone(),
        settings.limits.max_concurrent_pushes,
        reply_tx,
    );

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            inbound = inbound_rx.recv() => match inbound {
                Some(inbound) => dispatcher.handle(inbound),
                None => {
                    log::error!("the component link ended unexpectedly");
                    break;
                }
            },
        }
    }

    log::info!(
        "shutting down: {} pushes in flight, waiting up to {}",
        dispatcher.in_flight(),
        humantime::format_duration(settings.limits.shutdown_grace)
    );
    stop_reading.cancel();
    // Stanzas already read are answered like any other.
    inbound_rx.close();
    while let Some(inbound) = inbound_rx.recv().await {
        dispatcher.handle(inbound);
    }
    // Consuming the dispatcher drops the last reply sender: the link flushes and closes the stream.
    dispatcher.shutdown(settings.limits.shutdown_grace).await;
    sweepers.cancel();
    match tokio::time::timeout(CLOSE_TIMEOUT, link).await {
        Ok(Ok(Ok(()))) => log::info!("stream closed; bye"),
        Ok(Ok(Err(error))) => log::warn!("component link ended with an error: {error}"),
        Ok(Err(join_error)) => log::error!("component link task failed: {join_error}"),
        Err(_) => log::warn!("the component link did not close in time"),
    }
}
