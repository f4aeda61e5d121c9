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

use crate::config::{ConfigError, ConfigWarning, ModuleSettings, ModuleType, RejectWith, Settings};
use crate::dispatcher::WipeGuard;
use crate::ratelimit::{DeadTokens, RatelimitConfig, Ratelimiter};

/// One configured push module, ready to deliver.
pub struct Module {
    /// The id clients name in the publish-options `pushModule` field.
    pub id: String,
    pub module_type: ModuleType,
    pub push: Arc<dyn PushTrait>,
    pub ratelimit: Arc<Ratelimiter>,
    /// What a push rejected by the ratelimit is answered with.
    pub reject_with: RejectWith,
    pub dead_tokens: Arc<DeadTokens>,
    pub wipe_guard: WipeGuard,
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

    /// Start the periodic sweeps of every module's ratelimit and dead-token caches.
    pub fn spawn_sweepers(&self, shutdown: &CancellationToken) {
        for module in self.iter() {
            module.ratelimit.spawn_sweeper(shutdown.clone());
            module.dead_tokens.spawn_sweeper(shutdown.clone());
        }
    }
}

/// Everything wrong with the modules of a settings file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct BuildErrors(pub Vec<String>);

/// Build every configured module. Collects all problems rather than stopping at the first, so
/// that `fpush --check` shows an operator everything at once.
pub fn build(settings: &Settings) -> Result<(ModuleSet, Vec<ConfigWarning>), BuildErrors> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut built = Vec::new();
    for module_settings in &settings.push_modules {
        match build_platform(module_settings) {
            Ok((push, platform_warnings)) => {
                warnings.extend(platform_warnings);
                built.push((
                    assemble(module_settings, push, settings),
                    module_settings.is_default_module,
                ));
            }
            Err(message) => errors.push(message),
        }
    }
    if errors.is_empty() {
        Ok((ModuleSet::from_modules(built), warnings))
    } else {
        Err(BuildErrors(errors))
    }
}

fn assemble(module: &ModuleSettings, push: Arc<dyn PushTrait>, settings: &Settings) -> Module {
    let ratelimit = RatelimitConfig {
        enabled: module.ratelimit.enabled,
        window: module.ratelimit.ratelimit_time,
        cleanup_interval: module.ratelimit.ratelimit_cleanup_interval,
    };
    Module {
        id: module.id.clone(),
        module_type: module.module_type,
        push,
        ratelimit: Arc::new(Ratelimiter::new(ratelimit)),
        reject_with: module.ratelimit.reject_with,
        dead_tokens: Arc::new(DeadTokens::new(settings.dead_tokens.remember)),
        wipe_guard: WipeGuard::default(),
    }
}

type Built = (Arc<dyn PushTrait>, Vec<ConfigWarning>);

/// Deserialise the module's platform block and construct the platform, or say why not.
fn build_platform(module: &ModuleSettings) -> Result<Built, String> {
    let config_error = |e: ConfigError| e.to_string();
    match module.module_type {
        #[cfg(feature = "enable_apns_support")]
        ModuleType::Apple => {
            let (cfg, warnings) = module
                .platform_config::<fpush_apns::ApnsConfig>()
                .map_err(config_error)?;
            let push = fpush_apns::ApnsPush::new(&module.id, cfg)
                .map_err(|e| format!("pushModules.{}.{}: {e}", module.id, module.platform_key()))?;
            Ok((Arc::new(push), warnings))
        }
        #[cfg(feature = "enable_fcm_support")]
        ModuleType::Google => {
            let (cfg, warnings) = module
                .platform_config::<fpush_fcm::FcmConfig>()
                .map_err(config_error)?;
            let push = fpush_fcm::FcmPush::new(&module.id, cfg)
                .map_err(|e| format!("pushModules.{}.{}: {e}", module.id, module.platform_key()))?;
            Ok((Arc::new(push), warnings))
        }
        #[cfg(feature = "enable_demo_support")]
        ModuleType::Demo => {
            let (cfg, warnings) = module
                .platform_config::<fpush_demo::DemoConfig>()
                .map_err(config_error)?;
            Ok((
                Arc::new(fpush_demo::DemoPush::new(&module.id, cfg)),
                warnings,
            ))
        }
        // Settings validation already rejects types whose feature is off, naming the feature;
        // this arm only keeps the match total in such builds.
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "pushModules.{}: module type {other:?} is not compiled into this build",
            module.id
        )),
    }
}

/// A one-line description of a module for `fpush --check` and the start-up log.
pub fn describe(module: &ModuleSettings) -> String {
    let ratelimit = if module.ratelimit.enabled {
        format!(
            "ratelimit {} (entries kept {})",
            humantime::format_duration(module.ratelimit.ratelimit_time),
            humantime::format_duration(module.ratelimit.ratelimit_cleanup_interval)
        )
    } else {
        "ratelimit off".to_owned()
    };
    format!(
        "module {}: type {}{}, {ratelimit}",
        module.id,
        type_name(module.module_type),
        if module.is_default_module {
            ", default"
        } else {
            ""
        }
    )
}

/// The settings-file spelling of a module type.
pub fn type_name(module_type: ModuleType) -> &'static str {
    match module_type {
        ModuleType::Apple => "apple",
        ModuleType::Google => "google",
        ModuleType::Demo => "demo",
    }
}
