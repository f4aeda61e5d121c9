//! The path of one push after the dispatcher took its provider slot: admitted, then sent now or
//! when its ratelimit window ends (in a task of its own), then settled and answered through the
//! reply table. Every push leaves here with exactly one reply.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
#[cfg(feature = "random_delay_before_push")]
use std::time::Duration;

use fpush_traits::{PushError, SentTo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use fpush_http::LoudLog;

use super::reply_table::{module_reply_for, reply_for};
use crate::component::ReplySender;
use crate::config::RejectWith;
use crate::doors::{tigase, Refusal, Target};
use crate::metrics::Metrics;
use crate::modules::Admitting;
use crate::outcome::Outcome;
use crate::panics::{Contained, Panicked};
use crate::ratelimit::{Admission, Decision};
use crate::request::{self, IqHeader, Reply};

/// What every push task shares: where replies go, the provider slots, and the shutdown signals.
pub(super) struct PushPath {
    pub(super) replies: ReplySender,
    /// Bounds provider calls in flight (`limits.maxConcurrentPushes`).
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) max_in_flight: usize,
    /// Pushes the ratelimit holds back right now, and how many it may (`limits.maxQueuedPushes`).
    pub(super) queued: AtomicUsize,
    pub(super) max_queued: AtomicUsize,
    /// About the bytes the queued pushes hold (see [`QUEUED_BYTES_PER_PLACE`]).
    queued_bytes: AtomicUsize,
    /// Cancelled at shutdown: queued pushes are answered `wait` at once.
    pub(super) stop_queued: CancellationToken,
    /// Cancelled when the shutdown grace is over: pushes still at the provider are answered `wait`.
    pub(super) abort_in_flight: CancellationToken,
    metrics: Arc<Metrics>,
    /// Loud lines about requests no module answers, each cause at most once a minute.
    alarms: LoudLog,
}

impl PushPath {
    pub(super) fn new(replies: ReplySender, max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        PushPath {
            replies,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            queued: AtomicUsize::new(0),
            max_queued: AtomicUsize::new(DEFAULT_MAX_QUEUED),
            queued_bytes: AtomicUsize::new(0),
            stop_queued: CancellationToken::new(),
            abort_in_flight: CancellationToken::new(),
            metrics,
            alarms: LoudLog::new("dispatcher"),
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        slots_in_use(&self.in_flight, self.max_in_flight)
    }

    pub(super) fn provider_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Take a provider slot (or answer `wait` at once: overload), ask the module, and go on.
    /// The slot is taken before admission, so it also bounds the Redis decisions in flight.
    pub(super) fn dispatch(self: &Arc<Self>, iq: IqHeader, target: Target, tasks: &TaskTracker) {
        target.module.count_received();
        let Some(slot) = self.provider_slot() else {
            log::debug!("{} pushes in flight: answering wait", self.max_in_flight);
            self.finish(&iq, &target, Outcome::overloaded);
            return;
        };
        self.admit(iq, target, slot, tasks);
    }

    /// Ask the module about a push that holds its provider slot already.
    pub(super) fn admit(
        self: &Arc<Self>,
        iq: IqHeader,
        target: Target,
        slot: OwnedSemaphorePermit,
        tasks: &TaskTracker,
    ) {
        match target.admit() {
            Admitting::Now(admission) => self.proceed(iq, target, slot, admission, tasks),
            Admitting::Shared(pending) => {
                let pushes = self.clone();
                let tracker = tasks.clone();
                tasks.spawn(async move {
                    let admission = pending.decided().await;
                    pushes.proceed(iq, target, slot, admission, &tracker);
                });
            }
        }
    }

    /// A request a door (or the parser) answers itself: counted for no module.
    pub(super) fn refuse(&self, iq: &IqHeader, refusal: Refusal) {
        if refusal.outcome == Outcome::retired {
            let text = format_args!("{} (from {}); answered wait", refusal.text, iq.from);
            self.alarms.log(log::Level::Warn, "retired module", &text);
        } else if refusal.outcome == Outcome::unknown_in_new_store {
            let text = format_args!(
                "a push from {} names a registration that the registration store, made less \
                 than modules.retiredGrace ago, lacks; answered wait. If registrations were \
                 kept elsewhere, point store.path (or redis.keyPrefix) there",
                iq.from
            );
            self.alarms.log(log::Level::Warn, "new store", &text);
        } else {
            log::debug!("request from {} refused: {}", iq.from, refusal.text);
        }
        self.metrics.unattributed().count(refusal.outcome);
        let text = (!refusal.text.is_empty()).then_some(&*refusal.text);
        if let Some(reply) = reply_for(refusal.outcome, RejectWith::Wait, text) {
            self.reply(iq, reply);
        }
    }

    /// Logs a loud line about `cause`, at most once a minute.
    pub(super) fn alarm(&self, cause: &'static str, text: &dyn std::fmt::Display) {
        self.alarms.log(log::Level::Warn, cause, text);
    }

    /// One admitted push: sent now or when its window ends (in a task of its own), or answered
    /// at once. A queued push holds no provider slot while it waits.
    pub(super) fn proceed(
        self: &Arc<Self>,
        iq: IqHeader,
        target: Target,
        slot: OwnedSemaphorePermit,
        admission: Admission,
        tasks: &TaskTracker,
    ) {
        let pushes = self.clone();
        match admission {
            Admission::Decided(Decision::Send) => {
                // Boxed: the task's cell, its output and its end then move a pointer, where
                // each moved the whole future.
                tasks.spawn(Box::pin(
                    async move { pushes.send(&iq, &target, slot).await },
                ));
            }
            Admission::Decided(Decision::SendAt(at)) => {
                drop(slot);
                let target = target.trimmed_for_queue();
                let size = target.queued_size() + iq.id.len() + iq.from.len() + iq.to.len();
                let Some(place) = self.queue_place(size) else {
                    target.unqueue(at);
                    return self.finish(&iq, &target, Outcome::overloaded);
                };
                // Counted here, not at admission: a push the full queue turned away was never held.
                target.module.count(Outcome::queued);
                tasks.spawn(Box::pin(async move {
                    let turn = pushes.wait_for_turn(&iq, &target, at).await;
                    drop(place);
                    if let Some(slot) = turn {
                        pushes.send(&iq, &target, slot).await;
                    }
                }));
            }
            Admission::Decided(Decision::Reject) => self.finish(&iq, &target, Outcome::ratelimited),
            Admission::KnownDead if target.registration().is_some() => {
                tasks.spawn(async move {
                    // Known dead by the key of the token the push was meant for.
                    let to = target.notification.planned();
                    pushes.settled(&iq, &target, Outcome::known_dead, to).await;
                });
            }
            Admission::KnownDead => self.finish(&iq, &target, Outcome::known_dead),
            Admission::Held => self.finish(&iq, &target, Outcome::throttled),
        }
    }

    /// A place among the queued pushes for one of about `bytes`, or `None` when
    /// `limits.maxQueuedPushes` are queued or the queue's bytes would pass its budget.
    fn queue_place(self: &Arc<Self>, bytes: usize) -> Option<QueuePlace> {
        let max = self.max_queued.load(Ordering::Relaxed);
        let taken = self.queued.fetch_add(1, Ordering::Relaxed);
        let held = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let place = QueuePlace {
            path: self.clone(),
            bytes,
        };
        let budget = max.saturating_mul(QUEUED_BYTES_PER_PLACE);
        (taken < max && held + bytes <= budget).then_some(place)
    }

    /// A queued push waits until `at`, then takes a slot again. At shutdown, when its module is
    /// removed, when the provider throttled its token meanwhile and the pause is not over, or
    /// when no slot is free, it is answered `wait` instead (`None`). A push leaving before `at`
    /// gives its queued send back: on a shared Redis every instance would otherwise refuse the
    /// token as already queued until `at`, and none would send then. So does one that finds no
    /// slot at `at`: no send was attempted, so its token's window still counts from the last one.
    async fn wait_for_turn(
        &self,
        iq: &IqHeader,
        target: &Target,
        at: Instant,
    ) -> Option<OwnedSemaphorePermit> {
        let removed = tokio::select! {
            _ = tokio::time::sleep_until(at) => None,
            _ = self.stop_queued.cancelled() => Some(Outcome::shutdown),
            _ = target.module.retired() => Some(Outcome::retired),
        };
        if removed.is_some() {
            target.unqueue(at);
        }
        // Sending during the provider's pause would only be throttled again, and may extend it.
        let removed = removed.or_else(|| {
            let held = target.module.is_held(target.key());
            held.then_some(Outcome::throttled)
        });
        if let Some(outcome) = removed {
            self.finish(iq, target, outcome);
            return None;
        }
        let slot = self.provider_slot();
        if slot.is_none() {
            target.unqueue(at);
            self.finish(iq, target, Outcome::overloaded);
        }
        slot
    }

    /// Call the provider and answer. Holds `_slot` until the call ends.
    async fn send(&self, iq: &IqHeader, target: &Target, _slot: OwnedSemaphorePermit) {
        #[cfg(feature = "random_delay_before_push")]
        tokio::time::sleep(random_jitter()).await;

        let module = &target.module;
        let started = Instant::now();
        let sent = &target.notification;
        // Only a push meant for the second token may go elsewhere: the platform says where.
        let attributed = std::pin::pin!(async {
            match sent.planned() {
                SentTo::SecondToken => module.push.send_attributed(sent).await,
                SentTo::Token => (module.push.send(sent).await, SentTo::Token),
            }
        });
        let (result, to) = tokio::select! {
            answer = Contained(attributed) => {
                answer.unwrap_or_else(|Panicked| {
                    let failed = PushError::Transient("the push module panicked".to_owned());
                    (Err(failed), sent.planned())
                })
            }
            _ = self.abort_in_flight.cancelled() => {
                self.finish(iq, target, Outcome::shutdown);
                return;
            }
        };
        // The answer is about the token the platform asked, which is not always the planned one.
        let sent_to = tigase::key_sent_to(target, to);
        let key = sent_to.as_deref().unwrap_or(target.key());
        let outcome = module.settle(key, &result, started.elapsed(), target.ratelimited_by());
        self.settled(iq, target, outcome, to).await;
    }

    /// A push to `to` ended: a stored registration learns how, then the server is answered.
    async fn settled(&self, iq: &IqHeader, target: &Target, outcome: Outcome, to: SentTo) {
        let outcome = match target.registration() {
            Some(registration) => {
                let sent = &target.notification;
                registration.settle(outcome, sent, to).await
            }
            None => outcome,
        };
        self.finish(iq, target, outcome);
    }

    /// Count how the push ended and send its reply (a message error for a push2 push).
    pub(super) fn finish(&self, iq: &IqHeader, target: &Target, outcome: Outcome) {
        let module = &target.module;
        module.count(outcome);
        if target.by_message {
            return self.reply_by_message(iq, outcome, None);
        }
        if let Some(reply) = module_reply_for(outcome, module.reject_with) {
            self.reply(iq, reply);
        }
    }

    pub(super) fn reply(&self, iq: &IqHeader, reply: Reply<'_>) {
        let mut out = Vec::with_capacity(160 + iq.id.len() + iq.from.len() + iq.to.len());
        request::write_reply(iq, &reply, &mut out);
        self.replies.send(out);
    }
}

/// Provider slots taken, of `max`.
pub(super) fn slots_in_use(slots: &Semaphore, max: usize) -> usize {
    max - slots.available_permits()
}

/// `limits.maxQueuedPushes` by default.
pub const DEFAULT_MAX_QUEUED: usize = 100_000;

/// The queue's byte budget per place of `limits.maxQueuedPushes`: twice an everyday push
/// (about 1 KiB with its task), so everyday pushes only meet the count, while pushes made as
/// large as a stanza allows (about 20 KiB) fill at most this many bytes (200 MiB at the
/// default), not twenty times as many.
pub const QUEUED_BYTES_PER_PLACE: usize = 2048;

/// One queued push's place and bytes, given back when dropped.
struct QueuePlace {
    path: Arc<PushPath>,
    bytes: usize,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.path.queued.fetch_sub(1, Ordering::Relaxed);
        self.path
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Up to one second of jitter, from the standard library's per-process random hash keys.
#[cfg(feature = "random_delay_before_push")]
fn random_jitter() -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(random % 1000)
}
