//! The running daemon: wires the component link, the dispatcher, the modules and the metrics
//! together, applies reloads, and takes everything down in order when asked to stop.
//!
//! Shutdown is explicit and ordered so that no push is lost: stop reading, answer what was
//! already read, let pushes at the providers finish (bounded by `limits.shutdownGrace`), flush
//! their replies, close the stream.
//!
//! A reload (SIGHUP) re-reads the settings file. A file with problems is refused and the running
//! settings stay. Otherwise modules are rebuilt, keeping the state of those whose id and type are
//! unchanged, and put in service without touching the component link — unless the component
//! settings changed, which reconnects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::component::{self, ComponentConfig, LinkState};
use crate::config::{self, Settings, StoreBackend, StoreSettings};
use crate::dispatcher::Dispatcher;
use crate::doors::p2::{Measured, P2Door};
use crate::doors::tigase::TigaseDoor;
use crate::metrics::{self, Metrics, Observed, StateSnapshot};
use crate::modules::{self, ModuleSet};
use crate::store::{self, RegistrationStore, StoreError};
use crate::systemd::notify::{self, ServiceNotifier};

/// How many parsed-but-undispatched stanzas may wait between the link and the dispatcher.
const INBOUND_QUEUE: usize = 1024;
/// The reconnect backoff never waits longer than this (ejabberd drops registrations while the
/// component is away, so downtime must stay short).
const RECONNECT_CAP: Duration = Duration::from_secs(60);
/// How long the link may take to flush the last replies and close the stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a stop may take beyond the grace and the link's close, asked of systemd with them:
/// registration commands still waiting for the store when the grace ends (SQLite waits up to
/// 5 s for a lock) and the flush of the last log lines (up to 2 s).
const STOP_SLACK: Duration = Duration::from_secs(8);
/// How often the registrations are counted for the metrics, and at most how often swept.
const RECOUNT_EVERY: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

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

/// How the outside world steers a running daemon.
#[derive(Clone, Default)]
pub struct Control {
    /// Cancel to stop in order.
    pub shutdown: CancellationToken,
    /// Notify to reload the settings file.
    pub reload: Arc<Notify>,
}

/// Run until `control.shutdown` is cancelled, then stop in order. `state` reports the link's
/// state to whoever watches it (the health check).
pub async fn run(
    settings_path: PathBuf,
    settings: Settings,
    modules: ModuleSet,
    metrics: Arc<Metrics>,
    control: Control,
    state: watch::Sender<LinkState>,
    registrations: Option<Arc<dyn RegistrationStore>>,
) -> Ending {
    let background = CancellationToken::new();
    let mut running = Running::start(
        settings,
        modules,
        registrations,
        &metrics,
        &state,
        &background,
    );
    let ending = running.serve(&settings_path, &control, &metrics).await;
    running.stop(background).await;
    ending
}

/// What runs while the daemon serves: the link, the dispatcher, the doors that need a store,
/// and what steers them.
struct Running {
    settings: Settings,
    dispatcher: Dispatcher,
    /// Whether the server reads our replies as fast as they come.
    replies: component::ReplyBacklog,
    inbound: mpsc::Receiver<component::Inbound>,
    component: watch::Sender<ComponentConfig>,
    link: tokio::task::JoinHandle<Result<(), component::ComponentError>>,
    link_stop: LinkStop,
    p2: Option<Arc<P2Door>>,
    restart_only: RestartOnly,
    service: ServiceNotifier,
}

impl Running {
    /// Starts the link, the dispatcher, the doors and the background tasks (which end with
    /// `background`).
    fn start(
        settings: Settings,
        modules: ModuleSet,
        registrations: Option<Arc<dyn RegistrationStore>>,
        metrics: &Arc<Metrics>,
        state: &watch::Sender<LinkState>,
        background: &CancellationToken,
    ) -> Self {
        let modules = Arc::new(modules);
        modules.spawn_sweepers(None);
        metrics::spawn_summary_log(metrics.clone(), background.clone());
        spawn_reconnect_counter(state.subscribe(), metrics.clone(), background.clone());
        let service = ServiceNotifier::spawn(state.subscribe(), background.clone());
        let (reply_tx, reply_rx) = component::reply_channel();
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let (component, component_rx) = watch::channel(component_config(&settings));
        let link_stop = LinkStop::default();
        let link = tokio::spawn(component::run_reconfigurable(
            component_rx,
            inbound_tx,
            reply_rx,
            state.clone(),
            link_stop.reading.clone(),
            link_stop.handed_over.clone(),
        ));
        let replies = reply_tx.backlog();
        let dispatcher = start_dispatcher(modules, &settings, reply_tx, metrics, background);
        let p2 =
            registrations.map(|store| serve_p2(store, &settings, &dispatcher, metrics, background));
        if let Some(listen) = settings.metrics.as_ref().map(|m| m.listen) {
            let probe = state_probe(&dispatcher, state.subscribe(), p2.clone());
            spawn_metrics_listener(listen, probe, metrics, background);
        }
        Running {
            restart_only: RestartOnly::of(&settings, p2.is_some()),
            settings,
            dispatcher,
            replies,
            inbound,
            component,
            link,
            link_stop,
            p2,
            service,
        }
    }

    /// Hands what the link reads to the dispatcher and applies reloads, until asked to stop or
    /// the link ends.
    async fn serve(
        &mut self,
        settings_path: &Path,
        control: &Control,
        metrics: &Metrics,
    ) -> Ending {
        loop {
            tokio::select! {
                biased;
                _ = control.shutdown.cancelled() => return Ending::Asked,
                _ = control.reload.notified() => self.reload(settings_path, metrics),
                // Replies pile up faster than the server reads them: no more stanzas until half
                // of them went out (the link's reader waits meanwhile).
                () = self.replies.drained(), if self.replies.is_backlogged() => {
                    log::debug!("the reply queue drained; reading stanzas again");
                }
                inbound = self.inbound.recv(), if !self.replies.is_backlogged() => match inbound {
                    Some(inbound) => self.dispatcher.handle(inbound),
                    None => {
                        log::error!("the component link ended unexpectedly");
                        return Ending::LinkLost;
                    }
                },
            }
        }
    }

    fn reload(&mut self, settings_path: &Path, metrics: &Metrics) {
        self.service.reloading();
        let (settings, link) = (&mut self.settings, &self.component);
        reload(
            settings_path,
            settings,
            &self.dispatcher,
            metrics,
            link,
            &self.restart_only,
        );
        if self.p2.is_none() && self.settings.serves_registrations() {
            log::warn!("a registration block added by a reload takes effect at the next restart (the store opens at start-up)");
        }
        self.service.reloaded();
    }

    /// Stops in order (see [`stop_in_order`]), then the background tasks, and waits (bounded)
    /// for the link to close the stream.
    async fn stop(self, background: CancellationToken) {
        let grace = self.settings.limits.shutdown_grace;
        self.service.stopping(grace + CLOSE_TIMEOUT + STOP_SLACK);
        stop_in_order(self.dispatcher, self.inbound, self.link_stop, grace).await;
        background.cancel();
        // Queued sends taken back in Redis for pushes the full queue refused: cut short, they
        // would leave those tokens refused by every instance until their queued time.
        let take_backs = crate::ratelimit::finish_take_backs(CLOSE_TIMEOUT);
        tokio::join!(await_link_end(self.link), take_backs);
    }
}

/// The dispatcher with the settings' limits and access policy, its idle domains swept until
/// `stop`.
fn start_dispatcher(
    modules: Arc<ModuleSet>,
    settings: &Settings,
    replies: component::ReplySender,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Dispatcher {
    let limits = &settings.limits;
    let dispatcher = Dispatcher::new(
        modules,
        limits.max_concurrent_pushes,
        replies,
        metrics.clone(),
    );
    dispatcher.set_access(settings.access.clone());
    dispatcher.set_max_queued(limits.max_queued_pushes);
    dispatcher.spawn_access_sweeper(stop.clone());
    dispatcher
}

/// Said loudly at start-up: a `store.path` changed by mistake makes an empty store, and every
/// push for a registration it lacks is answered item-not-found, ending it.
fn warn_of_a_new_store(settings: &StoreSettings) {
    let Some(path) = settings.path.as_deref() else {
        return;
    };
    if settings.backend == StoreBackend::Sqlite && !path.exists() {
        log::warn!(
            "registration store: {} does not exist; creating an empty one. If registrations \
             were kept elsewhere, stop fpush and point store.path there within \
             modules.retiredGrace: after it, pushes for registrations this store lacks end them",
            path.display()
        );
    }
}

/// The registration store of `settings`, when some module serves a registering protocol:
/// created or migrated here (off the runtime's thread), and never otherwise.
pub async fn open_registrations(
    settings: &Settings,
) -> Result<Option<Arc<dyn RegistrationStore>>, StoreError> {
    if !settings.serves_registrations() {
        return Ok(None);
    }
    let store_settings = settings.store.clone().unwrap_or_default();
    warn_of_a_new_store(&store_settings);
    let redis = settings.redis.clone();
    let opening = tokio::task::spawn_blocking(move || {
        store::open(&store_settings, redis.as_ref(), (&store_settings).into())
    });
    let status = "opening the registration store";
    let opened = notify::extending_start_up(status, opening)
        .await
        .map_err(|error| StoreError::Unusable(format!("opening the store failed: {error}")))?;
    let store = opened?;
    say_if_new(&*store, settings.modules.retired_grace).await;
    Ok(Some(store))
}

/// Notes a Redis store's age while it is still empty (SQLite notes it when opened), and says
/// when the store is new enough that the registrations it lacks are answered `wait`.
async fn say_if_new(store: &dyn RegistrationStore, grace: Duration) {
    match store.created().await {
        Ok(Some(created)) => {
            let age = created.elapsed().unwrap_or_default();
            if let Some(left) = grace.checked_sub(age) {
                log::info!(
                    "registration store: made {}s ago; for {}s more (modules.retiredGrace), \
                     pushes for registrations it lacks are answered wait",
                    age.as_secs(),
                    left.as_secs()
                );
            }
        }
        Ok(None) => {}
        Err(error) => log::warn!("registration store: its age could not be read: {error}"),
    }
}

/// Serves p2 with `store` (measured): its door in the dispatcher, the expiry sweep, and the
/// count of registrations the metrics show, until `stop`.
fn serve_p2(
    store: Arc<dyn RegistrationStore>,
    settings: &Settings,
    dispatcher: &Dispatcher,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Arc<P2Door> {
    let measured: Arc<dyn RegistrationStore> =
        Arc::new(Measured::new(store, metrics.registrations().clone()));
    let jid = &settings.component.component_hostname;
    let door = Arc::new(P2Door::new(measured.clone(), jid.as_str()));
    dispatcher.set_p2(door.clone());
    dispatcher.set_tigase(Arc::new(TigaseDoor::new(measured.clone())));
    let expire_after = settings.store.clone().unwrap_or_default().expire_after;
    store::spawn_sweeper(
        measured,
        SWEEP_EVERY.min(expire_after),
        expire_after,
        stop.clone(),
    );
    let (counting, stop) = (door.clone(), stop.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RECOUNT_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => counting.recount().await,
            }
        }
    });
    door
}

/// Waits (bounded) for the link to flush the last replies and close the stream.
async fn await_link_end(link: tokio::task::JoinHandle<Result<(), component::ComponentError>>) {
    match tokio::time::timeout(CLOSE_TIMEOUT, link).await {
        Ok(Ok(Ok(()))) => log::info!("stream closed; bye"),
        Ok(Ok(Err(error))) => log::warn!("component link ended with an error: {error}"),
        Ok(Err(join_error)) => log::error!("component link task failed: {join_error}"),
        Err(_) => log::warn!("the component link did not close in time"),
    }
}

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Asked to (SIGTERM, SIGINT): exit 0.
    Asked,
    /// The component link task ended on its own, which it never should: exit non-zero so that
    /// systemd restarts fpush.
    LinkLost,
}

/// How the link is stopped: `reading` asks it to read no more; it cancels `handed_over` once
/// every stanza it had read is on the inbound queue.
#[derive(Default)]
struct LinkStop {
    reading: CancellationToken,
    handed_over: CancellationToken,
}

/// Stop reading, answer what was already read, and let the pushes in flight finish (bounded by
/// `grace`). Consuming the dispatcher drops the last reply sender: the link then flushes the
/// replies and closes the stream.
async fn stop_in_order(
    dispatcher: Dispatcher,
    mut inbound_rx: mpsc::Receiver<component::Inbound>,
    link: LinkStop,
    grace: Duration,
) {
    log::info!(
        "shutting down: {} pushes in flight, waiting up to {}",
        dispatcher.in_flight(),
        humantime::format_duration(grace)
    );
    link.reading.cancel();
    // Closing the queue at once would leave what the link had read but not yet queued (behind
    // a full queue, or still in its buffer) without an answer.
    loop {
        tokio::select! {
            biased;
            inbound = inbound_rx.recv() => match inbound {
                Some(inbound) => dispatcher.handle(inbound),
                None => break,
            },
            _ = link.handed_over.cancelled() => break,
        }
    }
    inbound_rx.close();
    while let Some(inbound) = inbound_rx.recv().await {
        dispatcher.handle(inbound);
    }
    dispatcher.shutdown(grace).await;
}

/// Serve `/metrics` and `/health` on `listen` until `stop`.
fn spawn_metrics_listener(
    listen: std::net::SocketAddr,
    state: Arc<dyn Fn() -> StateSnapshot + Send + Sync>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) {
    let observed = Arc::new(Observed {
        metrics: metrics.clone(),
        state,
    });
    let stop = stop.clone();
    tokio::spawn(async move {
        if let Err(error) = metrics::serve(listen, observed, stop).await {
            log::error!("cannot serve metrics on {listen}: {error}");
        }
    });
}

/// Settings and the modules built from them, ready to run.
pub struct Prepared {
    pub settings: Settings,
    pub modules: ModuleSet,
    /// Unknown or unused keys, in the settings and in the platform blocks.
    pub warnings: Vec<config::ConfigWarning>,
}

/// Why a settings file cannot be run: what was wrong (the settings or the modules built from
/// them) and every problem found.
#[derive(Debug)]
pub struct Problems {
    pub part: &'static str,
    pub problems: Vec<String>,
    /// The settings' warnings, shown with the problems: an unknown key is often the misspelt
    /// name of one reported missing.
    pub warnings: Vec<String>,
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} have {} problem(s):",
            self.part,
            self.problems.len()
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        if !self.warnings.is_empty() {
            write!(f, "\nand {} warning(s):", self.warnings.len())?;
        }
        for warning in &self.warnings {
            write!(f, "\n  {warning}")?;
        }
        Ok(())
    }
}

/// Load `path` and build its modules (carrying state over from `previous` on a reload): the one
/// path shared by `fpush --check`, start-up and reload, so they accept and refuse alike.
pub fn prepare(
    path: &Path,
    metrics: &Metrics,
    previous: Option<&ModuleSet>,
) -> Result<Prepared, Problems> {
    let loaded = config::load(path, &modules::platforms()).map_err(|errors| {
        // Modules whose entries did read get their credentials checked all the same.
        let built = errors.modules.iter().map(modules::build_platform);
        let problems = errors.errors.iter().map(ToString::to_string);
        Problems {
            part: "settings",
            problems: problems.chain(built.filter_map(Result::err)).collect(),
            warnings: errors.warnings.iter().map(ToString::to_string).collect(),
        }
    })?;
    let modules =
        modules::build(&loaded.settings, metrics, previous).map_err(|errors| Problems {
            part: "push modules",
            problems: errors.0,
            warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
        })?;
    let warnings = loaded.warnings;
    Ok(Prepared {
        settings: loaded.settings,
        modules,
        warnings,
    })
}

/// Re-read the settings file and apply it, or keep the running settings if it has problems.
fn reload(
    path: &Path,
    current: &mut Settings,
    dispatcher: &Dispatcher,
    metrics: &Metrics,
    component: &watch::Sender<ComponentConfig>,
    restart_only: &RestartOnly,
) {
    log::info!("reloading {}", path.display());
    let previous = dispatcher.modules().load_full();
    let prepared = match prepare(path, metrics, Some(&previous)) {
        Ok(prepared) => prepared,
        Err(problems) => {
            log::error!(
                "{}: {problems}\nkeeping the running settings",
                path.display()
            );
            metrics.count_reload(false);
            return;
        }
    };
    for warning in &prepared.warnings {
        log::warn!("{}: {warning}", path.display());
    }
    let new = prepared.settings;
    let modules = Arc::new(prepared.modules);
    modules.spawn_sweepers(Some(&previous));
    dispatcher.replace_modules(modules);
    dispatcher.set_access(new.access.clone());
    dispatcher.set_max_queued(new.limits.max_queued_pushes);
    for module in &new.push_modules {
        log::info!("{}", modules::describe(module));
    }
    let link_settings = component_config(&new);
    if link_settings != *component.borrow() {
        component.send_replace(link_settings);
    }
    // Before the line that ends a reload, so that a reader of the log sees them with it.
    restart_only.warn_about(&new);
    *current = new;
    metrics.count_reload(true);
    log::info!("reloaded {}", path.display());
}

/// The settings only a restart applies, as the process runs with them. A reload is compared
/// with these, not with the file it replaces: a change is said again at every reload until the
/// restart, and one that puts back what runs is no change.
struct RestartOnly {
    max_concurrent_pushes: usize,
    metrics_listen: Option<std::net::SocketAddr>,
    /// The registration store's settings, when it is open (it opens at start-up only).
    store: Option<config::StoreSettings>,
    /// The `redis` section the open store uses, when its backend is Redis: a reload moves the
    /// ratelimits and dead tokens to a changed one, not the registrations.
    store_redis: Option<Option<config::RedisSettings>>,
}

impl RestartOnly {
    fn of(settings: &Settings, store_open: bool) -> Self {
        let store_backend = settings.store.as_ref().map(|store| store.backend);
        let store_on_redis = store_backend == Some(config::StoreBackend::Redis);
        RestartOnly {
            max_concurrent_pushes: settings.limits.max_concurrent_pushes,
            metrics_listen: settings.metrics.as_ref().map(|m| m.listen),
            store: store_open.then(|| settings.store.clone().unwrap_or_default()),
            store_redis: (store_open && store_on_redis).then(|| settings.redis.clone()),
        }
    }

    /// Warns about each of them that `new` changes.
    fn warn_about(&self, new: &Settings) {
        if new.limits.max_concurrent_pushes != self.max_concurrent_pushes {
            log::warn!("limits.maxConcurrentPushes changes take effect at the next restart");
        }
        if new.metrics.as_ref().map(|m| m.listen) != self.metrics_listen {
            log::warn!("metrics.listen changes take effect at the next restart");
        }
        let store = new.store.clone().unwrap_or_default();
        if self.store.as_ref().is_some_and(|running| *running != store) {
            log::warn!("store changes take effect at the next restart");
        }
        if self
            .store_redis
            .as_ref()
            .is_some_and(|running| *running != new.redis)
        {
            log::warn!(
                "redis changes reach the ratelimits and dead tokens now, the registration store \
                 (backend redis) at the next restart"
            );
        }
    }
}

/// Reads what the gauges show, for the metrics listener; with `p2`, the registrations its
/// modules hold at the last count.
fn state_probe(
    dispatcher: &Dispatcher,
    link: watch::Receiver<LinkState>,
    p2: Option<Arc<P2Door>>,
) -> Arc<dyn Fn() -> StateSnapshot + Send + Sync> {
    let modules = dispatcher.modules();
    let in_flight = dispatcher.in_flight_probe();
    Arc::new(move || {
        let modules = modules.load();
        let mut gauges = modules.gauges();
        if let Some(door) = &p2 {
            for (gauge, module) in gauges.iter_mut().zip(modules.iter()) {
                // A tigase module's registrations are stored under its provider id.
                let service = module.provider.as_deref();
                let service = service.or(module.registration.map(|r| r.service));
                gauge.registrations = service.and_then(|service| door.registrations(service));
            }
        }
        StateSnapshot {
            modules: gauges,
            in_flight: in_flight(),
            link: link.borrow().clone(),
        }
    })
}

/// Count every re-established link (each `Up` after the first).
fn spawn_reconnect_counter(
    mut state: watch::Receiver<LinkState>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut ups = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = state.changed() => if changed.is_err() { return },
            }
            if matches!(*state.borrow_and_update(), LinkState::Up { .. }) {
                ups += 1;
                if ups > 1 {
                    metrics.count_reconnect();
                }
            }
        }
    });
}
