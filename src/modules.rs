//! The push modules in service: each configured app on its platform, with its per-push policy
//! (ratelimit, dead-token memory, wipe guard), and the set a reload swaps whole.
//!
//! The dispatcher asks a module two things per push, once each: [`Module::admit`] before the
//! provider is called and [`Module::settle`] after (see `policy`). How modules are made from the
//! settings is `build`; the platforms this build knows are listed once, in `registry`.

mod build;
mod policy;
mod registry;
mod wipe_guard;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fpush_http::LoudLog;
use fpush_traits::PushTrait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{RegistrationProtocol, RejectWith};
use crate::metrics::{ModuleGauges, ModuleMetrics, PlatformIdentity};
use crate::ratelimit::{DeadTokens, RatelimitConfig, Ratelimiter, RedisStore};

pub use build::{build, build_platform, describe, BuildErrors};
pub use policy::{Admitting, SharedAdmission, THROTTLE_HOLD};
pub use registry::{
    check_web_push_vapid, platforms, web_push_payload_len, PARAM_VAPID_KEY, PARAM_VAPID_TOKEN,
    WEB_PUSH_MAX_PAYLOAD,
};
pub use wipe_guard::WipeGuard;

/// The modules in service; a reload stores a new set while pushes keep flowing.
pub type ModulesInService = Arc<ArcSwap<ModuleSet>>;

/// One configured push module, ready to deliver.
pub struct Module {
    /// The id clients name in the publish-options `pushModule` field.
    pub id: String,
    /// The platform's type name (`pushModules.<id>.type`).
    pub type_name: &'static str,
    pub push: Arc<dyn PushTrait>,
    ratelimit: Arc<Ratelimiter>,
    /// The settings `ratelimit` was made with (a reload keeps it when they are equal).
    ratelimit_config: RatelimitConfig,
    /// What a push refused by the ratelimit is answered with.
    pub reject_with: RejectWith,
    dead_tokens: Arc<DeadTokens>,
    wipe_guard: Arc<WipeGuard>,
    /// The module's loud lines, each cause at most once a minute (kept across reloads).
    alarms: Arc<LoudLog>,
    metrics: ModuleMetrics,
    /// Cancelled when a reload removes the module: its queued pushes are answered then, and
    /// its sweepers stop. Shared by the versions of a module that a reload keeps.
    retired: Arc<CancellationToken>,
    /// The registering protocol the module serves (`registration`), if any.
    pub registration: Option<Registering>,
    /// The provider id clients register with (`registration.provider`, tigase modules).
    pub provider: Option<Arc<str>>,
}

/// What a module that serves registrations needs to answer them.
#[derive(Debug, Clone, Copy)]
pub struct Registering {
    pub protocol: RegistrationProtocol,
    /// The platform's registration service (`fcm`, `apns`).
    pub service: &'static str,
    /// The platform's check of a device token, run before a registration is stored.
    pub plausible_token: fn(&str) -> bool,
}

impl Module {
    /// A module with fresh state on the memory backend around `push` (tests and benchmarks
    /// build modules this way).
    pub fn new(
        id: &str,
        type_name: &'static str,
        push: Arc<dyn PushTrait>,
        ratelimit: RatelimitConfig,
        dead_token_memory: Duration,
        metrics: ModuleMetrics,
    ) -> Self {
        Module {
            id: id.to_owned(),
            type_name,
            push,
            ratelimit: Arc::new(Ratelimiter::new(ratelimit)),
            ratelimit_config: ratelimit,
            reject_with: RejectWith::Wait,
            dead_tokens: Arc::new(DeadTokens::new(dead_token_memory)),
            wipe_guard: Arc::new(WipeGuard::default()),
            alarms: Arc::new(module_alarms(id)),
            metrics,
            retired: Arc::new(CancellationToken::new()),
            registration: None,
            provider: None,
        }
    }

    /// The same module known to registering clients by `provider` (tests and benchmarks).
    pub fn with_provider(self, provider: &str) -> Self {
        Module {
            provider: Some(provider.into()),
            ..self
        }
    }

    /// The same module serving `registering` (tests and benchmarks; `build` reads the settings).
    pub fn serving(self, registering: Registering) -> Self {
        Module {
            registration: Some(registering),
            ..self
        }
    }

    /// Forgets `key` in the dead-token memory: a client registered its token again, which
    /// proves the app holds it.
    pub fn forget_dead(&self, key: &str) {
        self.dead_tokens.forget(key);
    }

    /// The same module with its ratelimit and dead tokens on the Redis backend in `store`.
    pub fn on_redis(self, store: Arc<RedisStore>, dead_token_memory: Duration) -> Self {
        Module {
            ratelimit: Arc::new(Ratelimiter::with_redis(
                self.ratelimit_config,
                store.clone(),
                &self.id,
            )),
            dead_tokens: Arc::new(DeadTokens::with_redis(dead_token_memory, store, &self.id)),
            ..self
        }
    }

    /// The same module remembering at most `max` dead tokens (`deadTokens.maxEntries`).
    pub fn with_max_dead_tokens(self, max: usize) -> Self {
        let dead_tokens = match Arc::try_unwrap(self.dead_tokens) {
            Ok(dead) => dead.with_max_entries(max),
            Err(shared) => {
                return Module {
                    dead_tokens: shared,
                    ..self
                }
            }
        };
        Module {
            dead_tokens: Arc::new(dead_tokens),
            ..self
        }
    }

    /// Whether this module's ratelimit holds pushes back at all.
    pub fn ratelimit_enabled(&self) -> bool {
        self.ratelimit_config.enabled
    }

    /// Resolves when a reload has removed this module.
    pub async fn retired(&self) {
        self.retired.cancelled().await
    }

    /// The Redis store this module decides with, if it is on the Redis backend.
    pub fn redis_store(&self) -> Option<&Arc<RedisStore>> {
        self.ratelimit.redis_store()
    }

    /// The sizes an operator watches, read now.
    fn gauges(&self) -> ModuleGauges {
        ModuleGauges {
            module: self.id.clone(),
            ratelimit_entries: self.ratelimit.len(),
            dead_tokens: self.dead_tokens.len(),
            wipe_guard_tripped: self.wipe_guard.is_tripped(),
            provider: self.push.snapshot(),
            platform: PlatformIdentity::of(&self.push),
            registrations: None,
        }
    }
}

/// The protocol a module serves registrations for and the name they are stored under: its
/// provider id (tigase), else its platform's registration service (p2).
fn registered_under(module: &Module) -> Option<(RegistrationProtocol, Arc<str>)> {
    let registering = module.registration?;
    let name = module.provider.clone();
    Some((
        registering.protocol,
        name.unwrap_or_else(|| registering.service.into()),
    ))
}

/// The loud log of module `id`.
fn module_alarms(id: &str) -> LoudLog {
    LoudLog::new(format!("push module \"{id}\""))
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.id)
            .field("type", &self.type_name)
            .finish_non_exhaustive()
    }
}

/// Why a push names no module that can take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// `pushModule` names a module that is not configured.
    Unknown(String),
    /// `pushModule` names a module a reload removed less than `modules.retiredGrace` ago.
    Retired(String),
    /// No `pushModule` in the push and no default module configured.
    NoDefault,
}

/// All configured modules, by id, plus the default one.
#[derive(Debug, Default)]
pub struct ModuleSet {
    by_id: HashMap<String, Arc<Module>>,
    default: Option<Arc<Module>>,
    /// Ids in file order, for summaries.
    order: Vec<String>,
    /// The registering protocols some module serves (read for every push that could be one).
    protocols: Vec<RegistrationProtocol>,
    /// Modules removed by a reload, until when their pushes are answered `wait`: a removed or
    /// renamed module answered `item-not-found` at once would make the servers delete every
    /// registration of that app.
    retired: HashMap<String, Instant>,
    /// The default module a reload took away with no other in its place, until when pushes
    /// naming no module are answered `wait` for it (for the same reason as `retired`).
    retired_default: Option<(String, Instant)>,
    /// The registering protocols a reload stopped serving, until when their pushes (which name
    /// no module) are answered `wait`, for the same reason as `retired`.
    retired_protocols: Vec<(RegistrationProtocol, Instant)>,
    /// The names registrations are stored under (a p2 service such as `fcm`, a tigase provider
    /// id) that a reload stopped serving while their protocol is still served, until when their
    /// registrations' pushes are answered `wait` (for the same reason as `retired`); past it,
    /// like a module no configuration names.
    retired_services: Vec<(RegistrationProtocol, Arc<str>, Instant)>,
    /// The push2 relay names (`apns:<environment>:<topic>`) of apps a reload stopped serving,
    /// until when their push2 pushes are answered `wait` (for the same reason as `retired`).
    retired_relays: Vec<(String, Instant)>,
    /// The `push2` section the relay's module was built from (a reload keeps the module's
    /// client when it is unchanged).
    push2: Option<crate::config::Push2Settings>,
    /// `modules.retiredGrace`; zero (no grace) unless the set was built from settings.
    retired_grace: Duration,
}

impl ModuleSet {
    /// Build from already-made modules (tests and benchmarks use this with their own
    /// `PushTrait` implementations).
    pub fn from_modules(modules: Vec<(Module, bool)>) -> Self {
        let mut set = ModuleSet::default();
        for (module, is_default) in modules {
            let module = Arc::new(module);
            if is_default {
                set.default = Some(module.clone());
            }
            set.order.push(module.id.clone());
            if let Some(registering) = module.registration {
                if !set.protocols.contains(&registering.protocol) {
                    set.protocols.push(registering.protocol);
                }
            }
            set.by_id.insert(module.id.clone(), module);
        }
        set
    }

    /// The module a push goes to. A `pushModule` that names no configured module is an error even
    /// when a default exists: a push must never go out with another app's credentials.
    pub fn lookup(&self, requested: Option<&str>) -> Result<&Arc<Module>, LookupError> {
        match requested {
            Some(id) => self.by_id.get(id).ok_or_else(|| {
                let retired = self
                    .retired
                    .get(id)
                    .is_some_and(|until| Instant::now() < *until);
                match retired {
                    true => LookupError::Retired(id.to_owned()),
                    false => LookupError::Unknown(id.to_owned()),
                }
            }),
            None => self
                .default
                .as_ref()
                .ok_or_else(|| match &self.retired_default {
                    Some((id, until)) if Instant::now() < *until => {
                        LookupError::Retired(id.clone())
                    }
                    _ => LookupError::NoDefault,
                }),
        }
    }

    /// Carries the retired modules over from `previous` (the set a reload replaces), adding those
    /// of its modules this set lacks, each answered `wait` for `grace` from now; likewise its
    /// default module when this set has none, and the registering protocols it no longer serves.
    pub fn remember_retired(&mut self, previous: &ModuleSet, grace: Duration) {
        let now = Instant::now();
        let gone = previous
            .order
            .iter()
            .filter(|id| !self.by_id.contains_key(*id))
            .map(|id| (id.clone(), now + grace));
        let still = previous
            .retired
            .iter()
            .filter(|(id, until)| **until > now && !self.by_id.contains_key(*id))
            .map(|(id, until)| (id.clone(), *until));
        self.retired = still.chain(gone).collect();
        self.retired_default = match (&self.default, &previous.default) {
            (Some(_), _) => None,
            (None, Some(was)) => Some((was.id.clone(), now + grace)),
            (None, None) => previous
                .retired_default
                .clone()
                .filter(|(_, until)| *until > now),
        };
        let dropped = previous
            .protocols
            .iter()
            .map(|protocol| (*protocol, now + grace));
        let still = previous
            .retired_protocols
            .iter()
            .filter(|(_, until)| *until > now)
            .copied();
        self.retired_protocols = still
            .chain(dropped)
            .filter(|(protocol, _)| !self.serves(*protocol))
            .collect();
        self.remember_retired_services(previous, now + grace);
        self.remember_retired_relays(previous, now + grace);
    }

    /// Carries over `previous`'s retired relay names, adding those it served and this set does
    /// not, answered `wait` until `until`.
    fn remember_retired_relays(&mut self, previous: &ModuleSet, until: Instant) {
        let now = Instant::now();
        let dropped = previous
            .iter()
            .filter_map(|module| module.push.relay_name())
            .map(|name| (name.to_owned(), until));
        let still = previous
            .retired_relays
            .iter()
            .filter(|(_, until)| *until > now)
            .cloned();
        let served: Vec<&str> = self.iter().filter_map(|m| m.push.relay_name()).collect();
        let retired = still
            .chain(dropped)
            .filter(|(name, _)| !served.contains(&name.as_str()))
            .collect();
        self.retired_relays = retired;
    }

    /// Whether a reload stopped serving the push2 relay name `name` less than
    /// `modules.retiredGrace` ago.
    pub fn retired_relay(&self, name: &str) -> bool {
        let now = Instant::now();
        self.retired_relays
            .iter()
            .any(|(retired, until)| retired == name && now < *until)
    }

    /// Carries over `previous`'s retired registration services, adding those it served and
    /// this set does not, answered `wait` until `until`.
    fn remember_retired_services(&mut self, previous: &ModuleSet, until: Instant) {
        let now = Instant::now();
        let dropped = previous
            .iter()
            .filter_map(|module| registered_under(module))
            .map(|(protocol, name)| (protocol, name, until));
        let still = previous
            .retired_services
            .iter()
            .filter(|(_, _, until)| *until > now)
            .cloned();
        let served: Vec<_> = self.iter().filter_map(|m| registered_under(m)).collect();
        self.retired_services = still
            .chain(dropped)
            .filter(|(protocol, name, _)| !served.contains(&(*protocol, name.clone())))
            .collect();
    }

    /// Whether a reload stopped serving `protocol` registrations stored under `name` (a p2
    /// service, a tigase provider id) less than `modules.retiredGrace` ago.
    pub fn retired_service(&self, protocol: RegistrationProtocol, name: &str) -> bool {
        let now = Instant::now();
        self.retired_services
            .iter()
            .any(|(p, n, until)| *p == protocol && &**n == name && now < *until)
    }

    /// The set with `modules.retiredGrace` set to `grace`.
    pub fn with_retired_grace(mut self, grace: Duration) -> Self {
        self.retired_grace = grace;
        self
    }

    /// `modules.retiredGrace`: also how long a new registration store answers `wait` for the
    /// registrations it lacks.
    pub fn retired_grace(&self) -> Duration {
        self.retired_grace
    }

    /// Whether a reload stopped serving `protocol` less than `modules.retiredGrace` ago.
    pub fn retired_protocol(&self, protocol: RegistrationProtocol) -> bool {
        let now = Instant::now();
        self.retired_protocols
            .iter()
            .any(|(retired, until)| *retired == protocol && now < *until)
    }

    /// The module serving `protocol` registrations for `service` (at most one, validation says).
    pub fn registration_module(
        &self,
        protocol: RegistrationProtocol,
        service: &str,
    ) -> Option<&Arc<Module>> {
        self.iter().find(|module| {
            module
                .registration
                .is_some_and(|r| r.protocol == protocol && r.service == service)
        })
    }

    /// The module registering clients name by `provider` (at most one, validation says).
    pub fn provider_module(
        &self,
        protocol: RegistrationProtocol,
        provider: &str,
    ) -> Option<&Arc<Module>> {
        self.iter().find(|module| {
            module.registration.is_some_and(|r| r.protocol == protocol)
                && module.provider.as_deref() == Some(provider)
        })
    }

    /// The provider ids `protocol` is served for, in file order.
    pub fn providers(&self, protocol: RegistrationProtocol) -> impl Iterator<Item = &str> + '_ {
        self.iter()
            .filter(move |module| module.registration.is_some_and(|r| r.protocol == protocol))
            .filter_map(|module| module.provider.as_deref())
    }

    /// Whether some module serves `protocol` registrations.
    pub fn serves(&self, protocol: RegistrationProtocol) -> bool {
        self.protocols.contains(&protocol)
    }

    /// The registration services `protocol` is served for, in file order.
    pub fn registration_services(
        &self,
        protocol: RegistrationProtocol,
    ) -> impl Iterator<Item = &'static str> + '_ {
        self.iter()
            .filter_map(|module| module.registration)
            .filter(move |r| r.protocol == protocol)
            .map(|r| r.service)
    }

    /// Modules in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Module>> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    /// Each module's sizes, in file order, for the metrics.
    pub fn gauges(&self) -> Vec<ModuleGauges> {
        self.iter().map(|module| module.gauges()).collect()
    }

    /// Start the periodic sweeps of the modules' ratelimit and dead-token caches, except those
    /// a reload carried over from `previous` (their sweepers are running already). A sweeper
    /// stops when its module is retired or its cache dropped.
    pub fn spawn_sweepers(&self, previous: Option<&ModuleSet>) {
        for module in self.iter() {
            let before = previous.and_then(|p| p.by_id.get(&module.id));
            let stop = CancellationToken::clone(&module.retired);
            if !before.is_some_and(|b| Arc::ptr_eq(&b.ratelimit, &module.ratelimit)) {
                module.ratelimit.spawn_sweeper(stop.clone());
            }
            if !before.is_some_and(|b| Arc::ptr_eq(&b.dead_tokens, &module.dead_tokens)) {
                module.dead_tokens.spawn_sweeper(stop);
            }
        }
    }

    /// Retire the modules of this (outgoing) set that `next` does not carry on: their queued
    /// pushes are answered and their sweepers stop.
    pub fn retire_all_but(&self, next: &ModuleSet) {
        for module in self.iter() {
            let kept = next
                .by_id
                .get(&module.id)
                .is_some_and(|m| Arc::ptr_eq(&m.retired, &module.retired));
            if !kept {
                module.retired.cancel();
            }
        }
    }
}
