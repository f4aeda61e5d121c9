//! Making the modules of a settings file: each platform built from its parsed block, each
//! module given its ratelimit, dead-token memory and wipe guard — carried over from the running
//! module on a reload when its id and type are unchanged.
//!
//! Building opens and checks credential files but makes no network call, which is what gives
//! `fpush --check` its value before a restart or reload.

use std::sync::Arc;
use std::time::Duration;

use fpush_traits::PushTrait;

use super::{module_alarms, Module, ModuleSet, Registering};
use crate::config::{
    ModuleSettings, Push2Settings, RatelimitBackend, RedisSettings, Settings, WEB_PUSH_MODULE,
};
use crate::metrics::Metrics;
use crate::ratelimit::{
    DeadTokens, RatelimitConfig, Ratelimiter, RedisOptions, RedisServers, RedisStore, RedisUrlError,
};

/// Everything wrong with the modules of a settings file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct BuildErrors(pub Vec<String>);

/// Build every configured module. Collects all problems rather than stopping at the first, so
/// that `fpush --check` shows an operator everything at once.
///
/// With `previous` (a reload), a module whose id and type are unchanged keeps its dead-token
/// memory, wipe guard, identity and ratelimit state (new ratelimit and dead-token settings apply
/// to what it remembers); its platform is rebuilt from the new settings (credentials may have changed).
pub fn build(
    settings: &Settings,
    metrics: &Metrics,
    previous: Option<&ModuleSet>,
) -> Result<ModuleSet, BuildErrors> {
    let mut errors = Vec::new();
    let redis = redis_store(settings, metrics, previous).unwrap_or_else(|error| {
        errors.push(error.to_string());
        None
    });
    let mut platforms = Vec::new();
    for module_settings in &settings.push_modules {
        match build_platform(module_settings) {
            Ok(push) => platforms.push((module_settings, push)),
            Err(message) => errors.push(message),
        }
    }
    let web_push = settings.push2.as_ref().map(|push2| {
        web_push_client(push2, previous)
            .map(|push| (push2, push))
            .map_err(|message| errors.push(message))
    });
    // Only now are the modules made: each registers its metrics series, which a refused set
    // must not leave behind for modules that never ran.
    if !errors.is_empty() {
        return Err(BuildErrors(errors));
    }
    let mut built = Vec::new();
    for (module_settings, push) in platforms {
        let before = previous
            .and_then(|p| p.by_id.get(&module_settings.id))
            .filter(|b| b.type_name == module_settings.platform.type_name);
        let module = assemble(
            module_settings,
            push,
            settings,
            metrics,
            before,
            redis.as_ref(),
        );
        built.push((module, module_settings.is_default_module));
    }
    if let Some(Ok((push2, push))) = web_push {
        built.push((
            web_push_module(push2, push, settings, metrics, previous),
            false,
        ));
    }
    let mut set = ModuleSet::from_modules(built).with_retired_grace(settings.modules.retired_grace);
    set.push2 = settings.push2.clone();
    if let Some(previous) = previous {
        set.remember_retired(previous, settings.modules.retired_grace);
    }
    Ok(set)
}

/// The Redis store of the modules whose ratelimit backend is `redis`: the previous one when a
/// reload keeps the URL and prefix (and so its connection), else a new one (connecting lazily).
fn redis_store(
    settings: &Settings,
    metrics: &Metrics,
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
    let servers = redis_servers(redis);
    let kept = previous
        .into_iter()
        .flat_map(ModuleSet::iter)
        .find_map(|module| {
            module
                .redis_store()
                .filter(|store| store.is_for(&servers, &redis.key_prefix))
        });
    match kept {
        Some(store) => Ok(Some(store.clone())),
        None => RedisStore::open(
            servers,
            &redis.key_prefix,
            RedisOptions::default(),
            metrics.redis_fallbacks(),
        )
        .map(Some),
    }
}

/// One Redis or a Redis Cluster, as the settings give it.
fn redis_servers(redis: &RedisSettings) -> RedisServers {
    if redis.cluster.is_empty() {
        RedisServers::Single(redis.url.clone())
    } else {
        RedisServers::Cluster(redis.cluster.clone())
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
    let max = settings.dead_tokens.max_entries;
    let dead_tokens = match (same_backend, redis) {
        (Some(before), _) => kept_dead_tokens(&before.dead_tokens, remember, max),
        (None, Some(store)) => Arc::new(
            DeadTokens::with_redis(remember, store.clone(), &module.id).with_max_entries(max),
        ),
        (None, None) => Arc::new(DeadTokens::new(remember).with_max_entries(max)),
    };
    Module {
        id: module.id.clone(),
        type_name: module.platform.type_name,
        push,
        ratelimit,
        ratelimit_config,
        reject_with: module.ratelimit.reject_with,
        dead_tokens,
        wipe_guard: before.map_or_else(Default::default, |b| b.wipe_guard.clone()),
        alarms: before.map_or_else(|| Arc::new(module_alarms(&module.id)), |b| b.alarms.clone()),
        metrics: metrics.module(&module.id),
        retired: before.map_or_else(Default::default, |b| b.retired.clone()),
        registration: registering(module),
        provider: module.registration_provider.as_deref().map(Arc::from),
    }
}

/// The push2 relay's Web Push client: the running module's, with the connections it holds,
/// when a reload leaves the `push2` section unchanged, else a new one.
fn web_push_client(
    push2: &Push2Settings,
    previous: Option<&ModuleSet>,
) -> Result<Arc<dyn PushTrait>, String> {
    let before = previous
        .and_then(|p| p.by_id.get(WEB_PUSH_MODULE))
        .filter(|b| b.type_name == super::registry::WEB_PUSH_TYPE);
    let unchanged = previous.is_some_and(|p| p.push2.as_ref() == Some(push2));
    match before.filter(|_| unchanged) {
        Some(before) => Ok(before.push.clone()),
        None => super::registry::web_push(push2),
    }
}

/// The push2 relay's Web Push module around `push`: its ratelimit (off unless enabled) keys on
/// the `client`. A reload keeps its state (dead endpoints, ratelimit).
fn web_push_module(
    push2: &Push2Settings,
    push: Arc<dyn PushTrait>,
    settings: &Settings,
    metrics: &Metrics,
    previous: Option<&ModuleSet>,
) -> Module {
    let id = WEB_PUSH_MODULE;
    let type_name = super::registry::WEB_PUSH_TYPE;
    let before = previous
        .and_then(|p| p.by_id.get(id))
        .filter(|b| b.type_name == type_name);
    let ratelimit = RatelimitConfig {
        enabled: push2.ratelimit.enabled,
        window: push2.ratelimit.ratelimit_time,
        cleanup_interval: push2.ratelimit.ratelimit_cleanup_interval,
    };
    let remember = settings.dead_tokens.remember;
    let fresh = Module::new(id, type_name, push, ratelimit, remember, metrics.module(id))
        .with_max_dead_tokens(settings.dead_tokens.max_entries);
    let Some(before) = before else {
        return fresh;
    };
    Module {
        ratelimit: match before.ratelimit_config == ratelimit {
            true => before.ratelimit.clone(),
            false => Arc::new(before.ratelimit.reconfigured(ratelimit)),
        },
        dead_tokens: kept_dead_tokens(
            &before.dead_tokens,
            settings.dead_tokens.remember,
            settings.dead_tokens.max_entries,
        ),
        wipe_guard: before.wipe_guard.clone(),
        alarms: before.alarms.clone(),
        retired: before.retired.clone(),
        ..fresh
    }
}

/// A kept module's dead-token memory under the reloaded `deadTokens.*`: the same one while they
/// are unchanged, else one sharing its tokens with the new settings applied.
fn kept_dead_tokens(before: &Arc<DeadTokens>, remember: Duration, max: usize) -> Arc<DeadTokens> {
    if before.is_set_to(remember, max) {
        before.clone()
    } else {
        Arc::new(before.reconfigured(remember, max))
    }
}

/// What the module needs to serve its `registration` block, if it has one (validation made
/// sure its platform has a registration service).
fn registering(module: &ModuleSettings) -> Option<Registering> {
    let platform = &module.platform;
    Some(Registering {
        protocol: module.registration?,
        service: platform.capabilities.registration_service?,
        plausible_token: platform.plausible_token,
    })
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
    let notes: String = module
        .config
        .notes()
        .iter()
        .map(|note| format!("; {note}"))
        .collect();
    format!(
        "module {}: type {}{}, {ratelimit}{notes}",
        module.id,
        module.platform.type_name,
        if module.is_default_module {
            ", default"
        } else {
            ""
        }
    )
}
