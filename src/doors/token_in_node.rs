//! XEP-0357 as Monal (and most servers' default) uses it: the device token travels in every push
//! as the `publish` node, and the app is named by the publish-options field `pushModule` (or is
//! the default module). Nothing is registered beforehand.

use fpush_traits::PushNotification;

use super::{Refusal, Target, TargetKey};
use crate::config::WEB_PUSH_MODULE;
use crate::modules::{LookupError, ModuleSet};
use crate::outcome::Outcome;
use crate::request::PushRequest;

const NO_DEFAULT: &str = "No pushModule was given and no default push module is configured.";

/// The module named by the push (or the default one) and the push's token as its target.
pub fn resolve(modules: &ModuleSet, push: PushRequest) -> Result<Target, Refusal> {
    // The push2 relay's module is in the set under a reserved id, but it is no `pushModule`:
    // it takes only push2's encrypted payloads, and would answer every push `wait`.
    let named = push.module.as_deref();
    let lookup = match named {
        Some(WEB_PUSH_MODULE) => Err(LookupError::Unknown(WEB_PUSH_MODULE.to_owned())),
        _ => modules.lookup(named),
    };
    let module = match lookup {
        Ok(module) => module.clone(),
        Err(LookupError::Unknown(name)) => {
            return Err(Refusal {
                outcome: Outcome::unknown_module,
                text: format!("The push module '{name}' is not configured.").into(),
            });
        }
        Err(LookupError::Retired(name)) => {
            return Err(Refusal {
                outcome: Outcome::retired,
                text: format!("The push module '{name}' was removed by a reload; try again later.")
                    .into(),
            });
        }
        Err(LookupError::NoDefault) => {
            return Err(Refusal {
                outcome: Outcome::unknown_module,
                text: NO_DEFAULT.into(),
            });
        }
    };
    let notification = PushNotification {
        token: push.token,
        module_id: module.id.clone(),
        summary: push.summary,
        options: push.options,
        ..PushNotification::default()
    };
    Ok(Target::new(module, notification, TargetKey::Token).bounded())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use fpush_traits::{async_trait, Delivered, PushError, PushNotification, PushTrait};

    use super::*;
    use crate::metrics::ModuleMetrics;
    use crate::modules::Module;
    use crate::ratelimit::RatelimitConfig;

    struct Silent;

    #[async_trait]
    impl PushTrait for Silent {
        async fn send(&self, _: &PushNotification) -> Result<Delivered, PushError> {
            Ok(Delivered::default())
        }
    }

    fn module(id: &str, type_name: &'static str) -> Module {
        let metrics = ModuleMetrics::detached();
        let ratelimit = RatelimitConfig::default();
        let memory = Duration::from_secs(3600);
        Module::new(id, type_name, Arc::new(Silent), ratelimit, memory, metrics)
    }

    fn push_naming(module: &str) -> PushRequest {
        PushRequest {
            token: "https://fcm.googleapis.com/fcm/send/abc".to_owned(),
            module: Some(module.to_owned()),
            ..PushRequest::default()
        }
    }

    #[test]
    fn the_push2_relay_module_is_no_push_module_a_push_can_name() {
        let modules = ModuleSet::from_modules(vec![
            (module("app", "demo"), true),
            (module(WEB_PUSH_MODULE, "webpush"), false),
        ]);
        let refusal = resolve(&modules, push_naming(WEB_PUSH_MODULE)).expect_err("refused");
        assert_eq!(refusal.outcome, Outcome::unknown_module);
        assert!(refusal.text.contains(WEB_PUSH_MODULE), "{}", refusal.text);
        let target = resolve(&modules, push_naming("app")).expect("a target");
        assert_eq!(target.module.id, "app");
    }
}
