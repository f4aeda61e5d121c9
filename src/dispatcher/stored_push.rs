//! Pushes that name a stored registration (the p2 and tigase doors): one path from the door
//! to admission, whichever door resolves them.

use std::future::Future;
use std::sync::Arc;

use super::Dispatcher;
use crate::doors::p2::P2Door;
use crate::doors::{bound_request, Refusal, Target};
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
        mut push: PushRequest,
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
        // Cut before it waits for the store, as its target will be after.
        bound_request(&mut push);
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::component::reply_channel;
    use crate::metrics::Metrics;

    /// A door that notes what each push it is asked about holds, and refuses it.
    #[derive(Default)]
    struct Noting {
        bytes: Mutex<Vec<usize>>,
    }

    impl StoreDoor for Noting {
        const NAME: &'static str = "noting";

        async fn target(
            &self,
            _: &ModuleSet,
            _: &str,
            push: PushRequest,
        ) -> Result<Target, Refusal> {
            let summary = &push.summary;
            let texts = [&summary.last_message_body, &summary.last_message_sender];
            let options = push.options.iter().map(|(n, v)| n.len() + v.len());
            let held = texts.into_iter().flatten().map(String::len).chain(options);
            self.bytes.lock().unwrap().push(held.sum());
            Err(Outcome::unknown_registration.into())
        }
    }

    #[tokio::test]
    async fn a_push_waits_for_the_store_cut_to_what_its_target_keeps() {
        let modules = Arc::new(ModuleSet::from_modules(Vec::new()));
        let (replies, mut answered) = reply_channel();
        let dispatcher = Dispatcher::new(modules, 10, replies, Metrics::new());
        let huge = "x".repeat(200 * 1024);
        let mut push = PushRequest::default();
        push.summary.last_message_body = Some(huge.clone());
        push.summary.last_message_sender = Some(huge.clone());
        push.options = vec![("secret".to_owned(), huge)];
        let iq = IqHeader {
            id: "p1".into(),
            from: "example.org".into(),
            to: "push.example.org".into(),
        };
        let door = Arc::new(Noting::default());
        dispatcher.stored_push(Some(door.clone()), iq, push);
        assert!(answered.recv().await.is_some(), "answered");
        let held = door.bytes.lock().unwrap().clone();
        assert_eq!(held.len(), 1);
        assert!(held[0] <= 3 * 1024, "held {} bytes", held[0]);
    }
}
