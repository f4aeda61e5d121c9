//! The series that describe the daemon's state: set from a [`StateSnapshot`] read when scraped
//! (cache sizes, the link, the platforms' own state: credentials, connection pool, the
//! provider's pause), or counted on rare events (reloads, reconnects). Nothing here is touched
//! per push.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use fpush_traits::{PoolGauges, ProviderSnapshot, PushTrait};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::redis::{CauseLabel, RedisFallbacks};
use super::{registered, ModuleLabel};
use crate::component::LinkState;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnectionLabels {
    module: String,
    connection: String,
}

/// The sizes and state of one module an operator watches, read when scraped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleGauges {
    pub module: String,
    pub ratelimit_entries: usize,
    pub dead_tokens: usize,
    /// "Not for this app" answers are being treated as a misconfiguration (see the wipe guard).
    pub wipe_guard_tripped: bool,
    /// What the module's platform reports about itself.
    pub provider: ProviderSnapshot,
    /// Which platform object reported it: a reload that rebuilds the platform changes it, and
    /// the platform's own counts start over.
    pub platform: PlatformIdentity,
    /// Registrations stored for the module, when it serves a registering protocol.
    pub registrations: Option<u64>,
}

/// Which platform object a snapshot came from. It holds the object's allocation (not the object)
/// while the metrics remember it, so that a platform built after two reloads cannot be given the
/// same address and pass for the one whose count was seen last.
#[derive(Clone, Default)]
pub struct PlatformIdentity(Option<Weak<dyn PushTrait>>);

impl PlatformIdentity {
    pub fn of(platform: &Arc<dyn PushTrait>) -> Self {
        PlatformIdentity(Some(Arc::downgrade(platform)))
    }
}

impl PartialEq for PlatformIdentity {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(one), Some(other)) => Weak::ptr_eq(one, other),
            (one, other) => one.is_none() && other.is_none(),
        }
    }
}

impl Eq for PlatformIdentity {}

impl fmt::Debug for PlatformIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = self.0.as_ref().map(|weak| weak.as_ptr().cast::<()>());
        f.debug_tuple("PlatformIdentity").field(&address).finish()
    }
}

/// Everything the gauges show, read at one scrape.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    pub modules: Vec<ModuleGauges>,
    pub in_flight: usize,
    pub link: LinkState,
}

/// Counters that follow a count kept elsewhere, by what they last saw per module (one scrape
/// at a time).
#[derive(Default)]
struct Followed {
    token_refresh_failures: HashMap<String, (PlatformIdentity, u64)>,
    connections_opened: HashMap<String, (PlatformIdentity, u64)>,
    pauses: HashMap<String, (PlatformIdentity, u64)>,
}

/// How much `counter` must grow to follow a count kept by `source` (a platform's pool), now
/// `now`: a reload that rebuilds the platform makes a new source whose count starts over, and
/// then all of it is new, however far it got before this scrape; a count lower than the last
/// one seen is new as well.
fn follow(
    seen: &mut HashMap<String, (PlatformIdentity, u64)>,
    module: &str,
    source: &PlatformIdentity,
    now: u64,
    counter: &Counter,
) {
    let before = seen
        .insert(module.to_owned(), (source.clone(), now))
        .filter(|(was, before)| was == source && *before <= now)
        .map_or(0, |(_, before)| before);
    counter.inc_by(now - before);
}

/// The families that show state.
pub(super) struct StateSeries {
    in_flight: Gauge,
    ratelimit_entries: Family<ModuleLabel, Gauge>,
    dead_tokens: Family<ModuleLabel, Gauge>,
    registrations: Family<ModuleLabel, Gauge>,
    wipe_guard_tripped: Family<ModuleLabel, Gauge>,
    credential_expiry: Family<ModuleLabel, Gauge>,
    token_refresh_failures: Family<ModuleLabel, Counter>,
    pool_connections: Family<ModuleLabel, Gauge>,
    pool_streams: Family<ConnectionLabels, Gauge>,
    pool_stream_limit: Family<ConnectionLabels, Gauge>,
    pool_opened: Family<ModuleLabel, Counter>,
    provider_pause: Family<ModuleLabel, Gauge>,
    provider_pauses: Family<ModuleLabel, Counter>,
    connected: Gauge,
    reconnects: Counter,
    reloads: Family<ReloadLabel, Counter>,
    redis_fallbacks: Family<CauseLabel, Counter>,
    followed: Mutex<Followed>,
}

impl StateSeries {
    pub(super) fn register(r: &mut Registry) -> Self {
        let series = StateSeries {
            in_flight: registered(r, "pushes_in_flight", "Provider calls in flight", Gauge::default()),
            ratelimit_entries: registered(r, "ratelimit_entries", "Tokens the module's ratelimit remembers", Family::default()),
            dead_tokens: registered(r, "dead_tokens", "Dead tokens the module remembers", Family::default()),
            registrations: registered(r, "registrations", "Registrations stored for the module (counted about once a minute)", Family::default()),
            wipe_guard_tripped: registered(r, "wipe_guard_tripped", "1 while the module answers \"not for this app\" with wait (operator mistake suspected)", Family::default()),
            credential_expiry: registered(r, "credential_expiry_timestamp_seconds", "When the module's credentials expire (a .p12 certificate's notAfter), Unix time", Family::default()),
            token_refresh_failures: registered(r, "token_refresh_failures", "Failed attempts to get a fresh provider auth token", Family::default()),
            pool_connections: registered(r, "pool_connections", "Provider connections the module's pool holds open", Family::default()),
            pool_streams: registered(r, "pool_streams_in_flight", "Requests on one pooled provider connection", Family::default()),
            pool_stream_limit: registered(r, "pool_max_streams", "Concurrent requests the provider allows on one pooled connection", Family::default()),
            pool_opened: registered(r, "pool_connections_opened", "Provider connections the module's pool opened", Family::default()),
            provider_pause: registered(r, "provider_pause_seconds", "Seconds left of a pause the provider asked of the whole module (0: pushes go out)", Family::default()),
            provider_pauses: registered(r, "provider_pauses", "Times the provider paused the whole module (503 with Retry-After, a project-wide quota, 429s for many tokens)", Family::default()),
            connected: registered(r, "component_connected", "1 while the component stream is up and authenticated", Gauge::default()),
            reconnects: registered(r, "component_reconnects", "Times the component link was re-established", Counter::default()),
            reloads: registered(r, "config_reloads", "Settings reloads (SIGHUP) by result", Family::default()),
            redis_fallbacks: registered(r, "redis_fallbacks", "Ratelimit decisions taken locally because Redis was unreachable, slow or refusing, by cause", Family::default()),
            followed: Mutex::default(),
        };
        for result in ["ok", "error"] {
            series.reloads.get_or_create_owned(&ReloadLabel { result });
        }
        series.redis_fallbacks();
        series
    }

    /// Creates the module's counters at 0 (gauges appear with the first snapshot).
    pub(super) fn add_module(&self, id: &str) {
        self.token_refresh_failures
            .get_or_create_owned(&ModuleLabel {
                module: id.to_owned(),
            });
    }

    pub(super) fn count_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabel { result }).inc();
    }

    /// The handles a Redis store counts its fallbacks with (all causes exist from start-up).
    pub(super) fn redis_fallbacks(&self) -> RedisFallbacks {
        RedisFallbacks::in_family(&self.redis_fallbacks)
    }

    pub(super) fn count_reconnect(&self) {
        self.reconnects.inc();
    }

    /// Set every state series from `state`. Gauges of modules no longer in `state` disappear.
    pub(super) fn apply(&self, state: &StateSnapshot) {
        let mut followed = self
            .followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.in_flight.set(to_i64(state.in_flight));
        self.connected
            .set(i64::from(matches!(state.link, LinkState::Up { .. })));
        for family in [
            &self.ratelimit_entries,
            &self.dead_tokens,
            &self.registrations,
            &self.wipe_guard_tripped,
            &self.credential_expiry,
            &self.pool_connections,
            &self.provider_pause,
        ] {
            family.clear();
        }
        self.pool_streams.clear();
        self.pool_stream_limit.clear();
        for gauges in &state.modules {
            self.apply_module(gauges, &mut followed);
        }
    }

    fn apply_module(&self, gauges: &ModuleGauges, followed: &mut Followed) {
        let label = ModuleLabel {
            module: gauges.module.clone(),
        };
        let set = |family: &Family<ModuleLabel, Gauge>, value: i64| {
            family.get_or_create(&label).set(value);
        };
        set(&self.ratelimit_entries, to_i64(gauges.ratelimit_entries));
        set(&self.dead_tokens, to_i64(gauges.dead_tokens));
        if let Some(registrations) = gauges.registrations {
            set(
                &self.registrations,
                i64::try_from(registrations).unwrap_or(i64::MAX),
            );
        }
        set(
            &self.wipe_guard_tripped,
            i64::from(gauges.wipe_guard_tripped),
        );
        let provider = &gauges.provider;
        if let Some(expires) = provider.credentials_expire_at {
            set(&self.credential_expiry, unix_seconds(expires));
        }
        let failures = self.token_refresh_failures.get_or_create(&label);
        let module = gauges.module.as_str();
        let refresh_failures = provider.token_refresh_failures;
        // Followed by its value alone: modules built from an unchanged service-account file
        // share one token cache across a reload, so this count may go on past a rebuild.
        follow(
            &mut followed.token_refresh_failures,
            module,
            &PlatformIdentity::default(),
            refresh_failures,
            &failures,
        );
        if let Some(pool) = &provider.pool {
            self.apply_pool(&label, pool, &gauges.platform, followed);
        }
    }

    /// The pool's gauges, and its counters created at 0 with the first snapshot that has one.
    fn apply_pool(
        &self,
        label: &ModuleLabel,
        pool: &PoolGauges,
        platform: &PlatformIdentity,
        followed: &mut Followed,
    ) {
        let module = label.module.as_str();
        let connections = to_i64(pool.connections.len());
        self.pool_connections.get_or_create(label).set(connections);
        for (index, connection) in pool.connections.iter().enumerate() {
            let labels = ConnectionLabels {
                module: module.to_owned(),
                connection: index.to_string(),
            };
            let streams = i64::from(connection.streams_in_flight);
            self.pool_streams.get_or_create(&labels).set(streams);
            let limit = i64::from(connection.max_streams);
            self.pool_stream_limit.get_or_create(&labels).set(limit);
        }
        let left = pool
            .paused_for
            .map_or(0, |left| left.as_secs_f64().ceil() as i64);
        self.provider_pause.get_or_create(label).set(left);
        let opened = self.pool_opened.get_or_create(label);
        follow(
            &mut followed.connections_opened,
            module,
            platform,
            pool.connections_opened,
            &opened,
        );
        let pauses = self.provider_pauses.get_or_create(label);
        follow(&mut followed.pauses, module, platform, pool.pauses, &pauses);
    }
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch (negative before it).
fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
