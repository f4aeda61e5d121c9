//! The platforms this build of fpush knows: the only place in the core that names them.
//!
//! Adding a platform is a crate that exports its `Platform` entry and one line here (behind the
//! cargo feature that compiles it in).

use std::sync::Arc;

use fpush_traits::PushTrait;

use crate::config::{Platforms, Push2Settings};

/// What the push2 door hands the Web Push module: the names of the parameters that carry the
/// VAPID token and key, and the largest payload it posts; and the module's own checks of them,
/// so that what the door lets through never fails in the module as the service's refusal.
pub use fpush_webpush::request::{
    check_vapid as check_web_push_vapid, payload_len as web_push_payload_len,
    MAX_PAYLOAD as WEB_PUSH_MAX_PAYLOAD, PARAM_VAPID_KEY, PARAM_VAPID_TOKEN,
};

/// The type name of the push2 relay's built-in Web Push module.
pub const WEB_PUSH_TYPE: &str = "webpush";

/// The platforms compiled into this build, and those a feature left out (so a settings file
/// that needs one hears which feature to enable).
pub fn platforms() -> Platforms {
    let mut platforms = Platforms::default();
    #[cfg(feature = "enable_apns_support")]
    platforms.compiled.push(fpush_apns::PLATFORM);
    #[cfg(not(feature = "enable_apns_support"))]
    platforms
        .not_compiled
        .push(("apple", "enable_apns_support"));
    #[cfg(feature = "enable_fcm_support")]
    platforms.compiled.push(fpush_fcm::PLATFORM);
    #[cfg(not(feature = "enable_fcm_support"))]
    platforms
        .not_compiled
        .push(("google", "enable_fcm_support"));
    #[cfg(feature = "enable_demo_support")]
    platforms.compiled.push(fpush_demo::PLATFORM);
    #[cfg(not(feature = "enable_demo_support"))]
    platforms.not_compiled.push(("demo", "enable_demo_support"));
    platforms
}

/// The push2 relay's Web Push client, built from the `push2` settings (no network call).
pub fn web_push(push2: &Push2Settings) -> Result<Arc<dyn PushTrait>, String> {
    let defaults = fpush_webpush::WebPushSettings::default();
    let settings = fpush_webpush::WebPushSettings {
        origins: push2.web_push_origins.clone().unwrap_or(defaults.origins),
        ttl: push2.ttl,
        ca_file: push2.ca_file_path.clone(),
        max_origins: push2.max_origins,
        connections_per_origin: push2.max_connections_per_origin,
        request_timeout: push2.request_timeout,
    };
    match fpush_webpush::WebPush::new(settings) {
        Ok(client) => Ok(Arc::new(client)),
        Err(error) => Err(format!("push2.{error}")),
    }
}
