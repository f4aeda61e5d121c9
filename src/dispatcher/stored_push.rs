//! Pushes that name a stored registration (the p2 and tigase doors): one path from the door
//! to admission, whichever door resolves them.

use std::future::Future;
use std::sync::Arc;

use super::Dispatcher;
use crate::doors::p2::P2Door;
use crate::doors::{Refusal, Target};
use crate::modules::ModuleSet;
use crate::outcome::Outcome;
use crate::request::{IqHeader, PushRequest};

/// A door whose pushes are resolved through the registration store.
pub(super) trait StoreDoor: Send + Sync + 'static {
    /// The door's name in logs.
    const NAME: &'static str;

    /// The push's target, or why it is refused.
    fn target(
        &self,
        modules: &ModuleSet,
        from: &str,
        push: PushRequest,
    ) -> impl Future<Output = Result<Target, Refusal>> + Send;

    /// The push's target while no registration store is open (a reload added the door's first
    /// module; the store opens at start-up only): `wait`, since the store may hold its
    /// registration, unless the door can tell the push is not one of its own.
    fn without_store(modules: &ModuleSet, push: PushRequest) -> Result<Target, Refusal> {
        let _ = (modules, push);
        Err(Outcome::store_failed.into())
    }
}

impl StoreDoor for P2Door {
    const NAME: &'static str = "p2";

    fn target(
        &self,
        modules: &ModuleSet,
        from: &str,
        push: PushRequest,
    ) -> impl Future<Output = Result<Target, Refusal>> + Send {
        self.resolve(modules, from, push)
    }
}

impl Dispatcher {
    /// A push resolved by `door` (`None` while no registration store is open): its provider
    /// slot is taken before the store is asked, so the slots bound the look-ups in flight too.
    pub(super) fn stored_push<D: StoreDoor>(
        &self,
        door: Option<Arc<D>>,
        iq: IqHeader,
        push: PushRequest,
    ) {
        let Some(door) = door else {
            return match D::without_store(&self.modules.load(), push) {
                Ok(target) => self.pushes.dispatch(iq, target, &self.tasks),
                Err(refusal) => {
                    log::debug!(
                        "a {} push arrived while no registration store is open",
                        D::NAME
                    );
                    self.pushes.refuse(&iq, refusal)
                }
            };
        };
        let Some(slot) = self.pushes.provider_slot() else {
            return self.pushes.refuse(&iq, Outcome::overloaded.into());
        };
        let (pushes, modules, tasks) = (
            self.pushes.clone(),
            self.modules.clone(),
            self.tasks.clone(),
        );
        self.tasks.spawn(async move {
            let modules = modules.load_full();
            match door.target(&modules, &iq.from, push).await {
                Ok(target) => {
                    target.module.count_received();
                    pushes.admit(iq, target, slot, &tasks);
                }
                Err(refusal) => pushes.refuse(&iq, refusal),
            }
        });
    }
}
