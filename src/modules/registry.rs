//! The platforms this build of fpush knows: the only place in the core that names them.
//!
//! Adding a platform is a crate that exports its `Platform` entry and one line here (behind the
//! cargo feature that compiles it in).

use std::sync::Arc;

use fpush_traits::PushTrait;

use crate::config::{ConfigError, ConfigWarning, ModuleSettings, ModuleType};

/// The settings-file spelling of a module's type.
pub(super) fn type_name(module: &ModuleSettings) -> &'static str {
    match module.module_type {
        ModuleType::Apple => "apple",
        ModuleType::Google => "google",
        ModuleType::Demo => "demo",
    }
}

type Built = (Arc<dyn PushTrait>, Vec<ConfigWarning>);

/// Deserialise the module's platform block and construct the platform, or say why not.
pub(super) fn build_platform(module: &ModuleSettings) -> Result<Built, String> {
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
