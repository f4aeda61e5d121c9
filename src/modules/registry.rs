//! The platforms this build of fpush knows: the only place in the core that names them.
//!
//! Adding a platform is a crate that exports its `Platform` entry and one line here (behind the
//! cargo feature that compiles it in).

use crate::config::Platforms;

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
