//! XEP-0357 as Monal (and most servers' default) uses it: the device token travels in every push
//! as the `publish` node, and the app is named by the publish-options field `pushModule` (or is
//! the default module). Nothing is registered beforehand.

use fpush_traits::PushNotification;

use super::{Refusal, Target, TargetKey};
use crate::modules::{LookupError, ModuleSet};
use crate::outcome::Outcome;
use crate::request::PushRequest;

const NO_DEFAULT: &str = "No pushModule was given and no default push module is configured.";

/// The module named by the push (or the default one) and the push's token as its target.
pub fn resolve(modules: &ModuleSet, push: PushRequest) -> Result<Target, Refusal> {
    let module = match modules.lookup(push.module.as_deref()) {
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
