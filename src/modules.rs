//! Building the configured push modules: each platform behind its cargo feature, each module with
//! its own ratelimit, dead-token memory and wipe guard.
//!
//! This is the only place in the core that names a platform crate. Building a module opens and
//! checks its credential files but makes no network call, which is what gives `fpush --check` its
//! value before a restart or reload.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use fpush_traits::PushTrait;
use tokio_util::sync::CancellationToken;

use crate::config::{ModuleSettings, Platforms, RatelimitBackend, RejectWith, Settings};
use crate::dispatcher::WipeGuard;
use crate::metrics::{Metrics, ModuleMetrics};
use crate::ratelimit::{
    DeadTokens, RatelimitConfig, Ratelimiter, RedisOptions, RedisStore, RedisUrlError,
};

/// One configured push module, ready to deliver.
pub struct Module {
    /// The id clients name in the publish-options `pushModule` field.
    pub id: String,
    /// The registry's `type_name` of the module's platform.
    pub module_type: &'static str,
    pub push: Arc<dyn PushTrait>,
    pub ratelimit: Arc<Ratelimiter>,
    /// The ratelimit settings `ratelimit` was made with (a reload keeps it when they are equal).
    pub ratelimit_config: RatelimitConfig,
    /// What a push rejected by the ratelimit is answered with.
    pub reject_with: RejectWith,
    pub dead_tokens: Arc<DeadTokens>,
    pub wipe_guard: Arc<WipeGuard>,
    pub metrics: ModuleMetrics,
    /// Cancelled when a reload removes the module: its queued pushes are answered then, and
    /// its sweepers stop. Shared by the versions of a module that a reload keeps.
    pub retired: Arc<CancellationToken>,
}

impl Module {
    /// A module with fresh state around `push` (tests and benchmarks build modules this way).
    pub fn new(
        id: &str,
        module_type: &'static str,
        push: Arc<dyn PushTrait>,
        ratelimit: RatelimitConfig,
        dead_token_memory: std::time::Duration,
        metrics: ModuleMetrics,
    ) -> Self {
        Module {
            id: id.to_owned(),
            module_type,
            push,
            ratelimit: Arc::new(Ratelimiter::new(ratelimit)),
            ratelimit_config: ratelimit,
            reject_with: RejectWith::Wait,
            dead_tokens: Arc::new(DeadTokens::new(dead_token_memory)),
            wipe_guard: Arc::new(WipeGuard::default()),
            metrics,
            retired: Arc::new(CancellationToken::new()),
        }
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.id)
            .field("module_type", &self.module_type)
            .finish_non_exhaustive()
    }
}

/// Why a push names no module that can take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// `pushModule` names a module that is not configured.
    Unknown(String),
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
            set.by_id.insert(module.id.clone(), module);
        }
        set
    }

    /// The module a push goes to. A `pushModule` that names no configured module is an error even
    /// when a default exists: a push must never go out with another app's credentials.
    pub fn lookup(&self, requested: Option<&str>) -> Result<&Arc<Module>, LookupError> {
        match requested {
            Some(id) => self
                .by_id
                .get(id)
                .ok_or_else(|| LookupError::Unknown(id.to_owned())),
            None => self.default.as_ref().ok_or(LookupError::NoDefault),
        }
    }

    /// Modules in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Module>> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    pub fn default_id(&self) -> Option<&str> {
        self.default.as_ref().map(|m| m.id.as_str())
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
}

/// Everything wrong with the modules of a settings file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct BuildErrors(pub Vec<String>);

/// Build every configured module. Collects all problems rather than stopping at the first, so
/// that `fpush --check` shows an operator everything at once.
///
/// With `previous` (a reload), a module whose id and type are unchanged keeps its dead-token
/// memory, wipe guard, identity and ratelimit state (new ratelimit settings apply to what it
/// remembers); its platform is rebuilt from the new settings (credentials may have changed).
pub fn build(
    settings: &Settings,
    metrics: &Metrics,
    previous: Option<&ModuleSet>,
) -> Result<ModuleSet, BuildErrors> {
    let mut errors = Vec::new();
    let mut built = Vec::new();
    let redis = redis_store(settings, previous).unwrap_or_else(|error| {
        errors.push(error.to_string());
        None
    });
    for module_settings in &settings.push_modules {
        match build_platform(module_settings) {
            Ok(push) => {
                let before = previous
                    .and_then(|p| p.by_id.get(&module_settings.id))
                    .filter(|b| b.module_type == module_settings.platform.type_name);
                built.push((
                    assemble(
                        module_settings,
                        push,
                        settings,
                        metrics,
                        before,
                        redis.as_ref(),
                    ),
                    module_settings.is_default_module,
                ));
            }
            Err(message) => errors.push(message),
        }
    }
    if errors.is_empty() {
        Ok(ModuleSet::from_modules(built))
    } else {
        Err(BuildErrors(errors))
    }
}

/// The Redis store of the modules whose ratelimit backend is `redis`: the previous one when a
/// reload keeps the URL and prefix (and so its connection), else a new one (connecting lazily).
fn redis_store(
    settings: &Settings,
    previous: Option<&ModuleSet>,
) -> Result<Option<Arc<RedisStore>>, RedisUrlError> {
    let wanted = settings
        .push_modules
        .iter()
        .any(|module| module.ratelimit.backend == RatelimitBackend::Redis);
    // Validation requires the `redis` section whenever a module wants it.
    let Some(redis) = settings.redis.as_ref().filter(|_| wanted) else {
        return Ok(None);
    };
    let kept = previous
        .into_iter()
        .flat_map(ModuleSet::iter)
        .find_map(|module| {
            module
                .ratelimit
                .redis_store()
                .filter(|store| store.is_for(&redis.url, &redis.key_prefix))
        });
    match kept {
        Some(store) => Ok(Some(store.clone())),
        None => RedisStore::new(&redis.url, &redis.key_prefix, RedisOptions::default()).map(Some),
    }
}

fn assemble(
    module: &ModuleSettings,
    push: Arc<dyn PushTrait>,
    settings: &Settings,
    metrics: &Metrics,
    before: Option<&Arc<Module>>,
    redis: Option<&Arc<RedisStore>>,
) -> Module {
    let ratelimit_config = RatelimitConfig {
        enabled: module.ratelimit.enabled,
        window: module.ratelimit.ratelimit_time,
        cleanup_interval: module.ratelimit.ratelimit_cleanup_interval,
    };
    // The module's store when its backend is Redis (`build` made one if any module needs it).
    let redis = redis.filter(|_| module.ratelimit.backend == RatelimitBackend::Redis);
    // A reload keeps the module's ratelimit and dead tokens only on the same backend (and the
    // same store); its wipe guard and queued pushes stay in any case.
    let same_backend = before.filter(|b| match (b.ratelimit.redis_store(), redis) {
        (None, None) => true,
        (Some(was), Some(is)) => Arc::ptr_eq(was, is),
        _ => false,
    });
    let ratelimit = match (same_backend, redis) {
        (Some(before), _) if before.ratelimit_config == ratelimit_config => {
            before.ratelimit.clone()
        }
        (Some(before), _) => Arc::new(before.ratelimit.reconfigured(ratelimit_config)),
        (_, Some(store)) => Arc::new(Ratelimiter::with_redis(
            ratelimit_config,
            store.clone(),
            &module.id,
        )),
        (_, None) => Arc::new(Ratelimiter::new(ratelimit_config)),
    };
    let remember = settings.dead_tokens.remember;
    let dead_tokens = match (same_backend, redis) {
        (Some(before), _) => before.dead_tokens.clone(),
        (None, Some(store)) => {
            Arc::new(DeadTokens::with_redis(remember, store.clone(), &module.id))
        }
        (None, None) => Arc::new(DeadTokens::new(remember)),
    };
    Module {
        id: module.id.clone(),
        module_type: module.platform.type_name,
        push,
        ratelimit,
        ratelimit_config,
        reject_with: module.ratelimit.reject_with,
        dead_tokens,
        wipe_guard: before.map_or_else(Default::default, |b| b.wipe_guard.clone()),
        metrics: metrics.module(&module.id),
        retired: before.map_or_else(Default::default, |b| b.retired.clone()),
    }
}

/// Construct the module's platform from its parsed block, or say why not.
pub fn build_platform(module: &ModuleSettings) -> Result<Arc<dyn PushTrait>, String> {
    module
        .config
        .build(&module.id)
        .map_err(|error| module.build_error(&error).to_string())
}

/// A one-line description of a module for `fpush --check` and the start-up log.
pub fn describe(module: &ModuleSettings) -> String {
    let ratelimit = if module.ratelimit.enabled {
        let backend = match module.ratelimit.backend {
            crate::config::RatelimitBackend::Memory => "in memory",
            crate::config::RatelimitBackend::Redis => "shared on Redis",
        };
        format!(
            "ratelimit {} {backend} (entries kept {})",
            humantime::format_duration(module.ratelimit.ratelimit_time),
            humantime::format_duration(module.ratelimit.ratelimit_cleanup_interval)
        )
    } else {
        "ratelimit off".to_owned()
    };
    format!(
        "module {}: type {}{}, {ratelimit}",
        module.id,
        module.platform.type_name,
        if module.is_default_module {
            ", default"
        } else {
            ""
        }
    )
}

/// The platforms this build knows.
pub fn platforms() -> Platforms {
    let mut platforms = Platforms::default();
    for (entry, type_name, feature) in [
        (bridge::APNS, "apple", "enable_apns_support"),
        (bridge::FCM, "google", "enable_fcm_support"),
        (bridge::DEMO, "demo", "enable_demo_support"),
    ] {
        match entry {
            Some(platform) => platforms.compiled.push(platform),
            None => platforms.not_compiled.push((type_name, feature)),
        }
    }
    platforms
}

/// Registry entries made from the platform crates' config types and constructors.
#[cfg_attr(
    not(any(
        feature = "enable_apns_support",
        feature = "enable_fcm_support",
        feature = "enable_demo_support"
    )),
    allow(dead_code)
)]
mod bridge {
    use std::fmt;
    use std::sync::Arc;

    use fpush_traits::{BlockError, BuildError, ParsedConfig, Platform, PlatformConfig, PushTrait};
    use serde::de::DeserializeOwned;

    type Make<C> = fn(&str, C) -> Result<Arc<dyn PushTrait>, BuildError>;

    struct Entry<C>(C, Make<C>);

    impl<C: fmt::Debug> fmt::Debug for Entry<C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt(f)
        }
    }

    impl<C: fmt::Debug + Clone + Send + Sync> PlatformConfig for Entry<C> {
        fn build(&self, module_id: &str) -> Result<Arc<dyn PushTrait>, BuildError> {
            (self.1)(module_id, self.0.clone())
        }
    }

    fn parse<C>(block: &serde_json::Value, make: Make<C>) -> Result<ParsedConfig, BlockError>
    where
        C: DeserializeOwned + fmt::Debug + Clone + Send + Sync + 'static,
    {
        let (config, ignored_keys) = fpush_traits::parse_block::<C>(block)?;
        Ok(ParsedConfig {
            config: Box::new(Entry(config, make)),
            ignored_keys,
        })
    }

    const fn entry(
        type_name: &'static str,
        settings_key: &'static str,
        cargo_feature: &'static str,
        registration_service: Option<&'static str>,
        parse: fn(&serde_json::Value) -> Result<ParsedConfig, BlockError>,
    ) -> Platform {
        Platform {
            type_name,
            settings_key,
            cargo_feature,
            capabilities: fpush_traits::Capabilities {
                voip: false,
                encrypted_payloads: false,
                registration_service,
            },
            parse,
        }
    }

    #[cfg(feature = "enable_apns_support")]
    pub const APNS: Option<Platform> = Some(entry(
        "apple",
        "apns",
        "enable_apns_support",
        Some("apns"),
        |block| {
            parse(block, |id, config| {
                Ok(Arc::new(fpush_apns::ApnsPush::new(id, config)?))
            })
        },
    ));
    #[cfg(not(feature = "enable_apns_support"))]
    pub const APNS: Option<Platform> = None;

    #[cfg(feature = "enable_fcm_support")]
    pub const FCM: Option<Platform> = Some(entry(
        "google",
        "fcm",
        "enable_fcm_support",
        Some("fcm"),
        |block| {
            parse(block, |id, config| {
                Ok(Arc::new(fpush_fcm::FcmPush::new(id, config)?))
            })
        },
    ));
    #[cfg(not(feature = "enable_fcm_support"))]
    pub const FCM: Option<Platform> = None;

    #[cfg(feature = "enable_demo_support")]
    pub const DEMO: Option<Platform> = Some(entry(
        "demo",
        "demo",
        "enable_demo_support",
        None,
        |block| {
            parse(block, |id, config| {
                Ok(Arc::new(fpush_demo::DemoPush::new(id, config)))
            })
        },
    ));
    #[cfg(not(feature = "enable_demo_support"))]
    pub const DEMO: Option<Platform> = None;
}
