//! One request from stanza to reply. A push goes: parse → front door (resolve the target) →
//! provider slot → `module.admit` → send → `module.settle` → the reply table; everything that is
//! not a push is answered on the spot. Every push gets exactly one reply, and the work in flight
//! is bounded (`limits.maxConcurrentPushes`).

mod reply_table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fpush_http::LoudLog;
use fpush_traits::PushError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{self, Access, AccessSettings};
use crate::component::{Inbound, ReplySender};
use crate::config::RejectWith;
use crate::doors::{self, Refusal, Target};
use crate::metrics::Metrics;
use crate::modules::{Admitting, Module, ModuleSet, ModulesInService};
use crate::outcome::Outcome;
use crate::panics::{Contained, Panicked};
use crate::ratelimit::{Admission, Decision};
use crate::request::{self, Condition, ErrorType, IqHeader, Reply, Request};
use reply_table::reply_for;

/// Turns inbound stanzas into push tasks and replies.
pub struct Dispatcher {
    pushes: Arc<PushPath>,
    modules: ModulesInService,
    access: Arc<ArcSwap<Access>>,
    metrics: Arc<Metrics>,
    /// Loud lines about requests no module answers, each cause at most once a minute.
    alarms: LoudLog,
    tasks: TaskTracker,
}

/// What every push task shares: where replies go, the provider slots, and the shutdown signals.
struct PushPath {
    replies: ReplySender,
    /// Bounds provider calls in flight (`limits.maxConcurrentPushes`).
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Pushes the ratelimit holds back right now, and how many it may (`limits.maxQueuedPushes`).
    queued: AtomicUsize,
    max_queued: AtomicUsize,
    /// Cancelled at shutdown: queued pushes are answered `wait` at once.
    stop_queued: CancellationToken,
    /// Cancelled when the shutdown grace is over: pushes still at the provider are answered `wait`.
    abort_in_flight: CancellationToken,
}

impl Dispatcher {
    pub fn new(
        modules: Arc<ModuleSet>,
        max_in_flight: usize,
        replies: ReplySender,
        metrics: Arc<Metrics>,
    ) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            pushes: Arc::new(PushPath {
                replies,
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
                queued: AtomicUsize::new(0),
                max_queued: AtomicUsize::new(DEFAULT_MAX_QUEUED),
                stop_queued: CancellationToken::new(),
                abort_in_flight: CancellationToken::new(),
            }),
            modules: Arc::new(ArcSwap::new(modules)),
            access: Arc::new(ArcSwap::from_pointee(
                Access::new(AccessSettings::default()),
            )),
            metrics,
            alarms: LoudLog::new("dispatcher"),
            tasks: TaskTracker::new(),
        }
    }

    /// Provider calls currently in flight.
    pub fn in_flight(&self) -> usize {
        self.pushes.in_flight()
    }

    /// A way to read the in-flight count from elsewhere (the metrics listener).
    pub fn in_flight_probe(&self) -> Arc<dyn Fn() -> usize + Send + Sync> {
        let pushes = self.pushes.clone();
        Arc::new(move || pushes.in_flight())
    }

    /// The modules in service, shared with whoever reports on them.
    pub fn modules(&self) -> ModulesInService {
        self.modules.clone()
    }

    /// Put a new set of modules in service (a reload). Pushes already dispatched finish with
    /// the module they started with; queued pushes of modules that are gone are answered
    /// `wait` when they wake.
    pub fn replace_modules(&self, new: Arc<ModuleSet>) {
        let old = self.modules.swap(new.clone());
        old.retire_all_but(&new);
    }

    /// At most `max` pushes held back by the ratelimit at once; beyond, `wait` (a reload may
    /// change it).
    pub fn set_max_queued(&self, max: usize) {
        self.pushes.max_queued.store(max, Ordering::Relaxed);
    }

    /// Pushes held back by the ratelimit right now.
    pub fn queued(&self) -> usize {
        self.pushes.queued.load(Ordering::Relaxed)
    }

    /// Apply new access settings (start-up, reload); the domains' buckets carry over.
    pub fn set_access(&self, settings: AccessSettings) {
        let next = self.access.load().reconfigured(settings);
        self.access.store(Arc::new(next));
    }

    /// Sending domains with a bucket now.
    pub fn sending_domains(&self) -> usize {
        self.access.load().domains()
    }

    /// Forgets idle sending domains' buckets now and then, until `stop`, so that the map of
    /// buckets holds the domains that are busy now.
    pub fn spawn_access_sweeper(&self, stop: CancellationToken) {
        let access = self.access.clone();
        tokio::spawn(async move {
            loop {
                let period = access.load().sweep_period();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                let swept = access.load().sweep();
                log::debug!("{swept} idle sending domains forgotten");
            }
        });
    }

    /// Handle one inbound stanza. Never blocks: pushes run in their own tasks.
    pub fn handle(&self, inbound: Inbound) {
        match inbound {
            Inbound::Stanza(bytes) => self.handle_request(request::parse(&bytes)),
            Inbound::Oversized { start_tag } => {
                if let Some(iq) = request::parse_oversized(&start_tag) {
                    let text = format_args!(
                        "a stanza from {} over limits.maxStanzaSize was skipped and answered wait",
                        iq.from
                    );
                    self.alarms.log(log::Level::Warn, "oversized stanza", &text);
                    self.refuse(&iq, Outcome::too_large.into());
                }
            }
        }
    }

    fn handle_request(&self, request: Request) {
        match request {
            Request::Push { iq, push } => {
                if doors::oversized_header(&iq) {
                    return self.refuse(&iq, Outcome::too_large.into());
                }
                if let Some(refusal) = self.sender_refused(self.access.load().push(&iq.from)) {
                    return self.refuse(&iq, refusal);
                }
                match doors::token_in_node::resolve(&self.modules.load(), push) {
                    Ok(target) => self.dispatch(iq, target),
                    Err(refusal) => self.refuse(&iq, refusal),
                }
            }
            Request::InvalidPush { iq, reason } => {
                log::debug!("invalid push IQ from {}: {reason}", iq.from);
                let text = reason.into();
                let refusal = Refusal {
                    outcome: Outcome::bad_request,
                    text,
                };
                self.refuse(&iq, refusal);
            }
            Request::DiscoInfo { iq } => self.pushes.reply(&iq, Reply::DiscoInfo),
            Request::Ping { iq } => self.pushes.reply(&iq, Reply::Result),
            Request::Unsupported { iq } => self.pushes.reply(
                &iq,
                Reply::Error {
                    kind: ErrorType::Cancel,
                    condition: Condition::ServiceUnavailable,
                    text: None,
                },
            ),
            Request::Response | Request::Ignored => {}
        }
    }

    /// Why the access policy turns a sender away, if it does.
    fn sender_refused(&self, verdict: access::Verdict) -> Option<Refusal> {
        match verdict {
            access::Verdict::Allowed => None,
            access::Verdict::Forbidden => Some(Outcome::forbidden.into()),
            access::Verdict::OverShare => Some(Outcome::domain_limited.into()),
        }
    }

    /// A request a door (or the parser) answers itself: counted for no module.
    fn refuse(&self, iq: &IqHeader, refusal: Refusal) {
        if refusal.outcome == Outcome::retired {
            let text = format_args!("{} (from {}); answered wait", refusal.text, iq.from);
            self.alarms.log(log::Level::Warn, "retired module", &text);
        } else {
            log::debug!("request from {} refused: {}", iq.from, refusal.text);
        }
        self.metrics.unattributed().count(refusal.outcome);
        let text = (!refusal.text.is_empty()).then_some(&*refusal.text);
        if let Some(reply) = reply_for(refusal.outcome, RejectWith::Wait, text) {
            self.pushes.reply(iq, reply);
        }
    }

    /// Take a provider slot (or answer `wait` at once: overload), ask the module, and go on.
    /// The slot is taken before admission, so it also bounds the Redis decisions in flight.
    fn dispatch(&self, iq: IqHeader, target: Target) {
        target.module.count_received();
        let Some(slot) = self.pushes.provider_slot() else {
            log::debug!(
                "{} pushes in flight: answering wait",
                self.pushes.max_in_flight
            );
            self.pushes.finish(&iq, &target.module, Outcome::overloaded);
            return;
        };
        match target.module.admit(target.key()) {
            Admitting::Now(admission) => {
                self.pushes
                    .proceed(iq, target, slot, admission, &self.tasks)
            }
            Admitting::Shared(pending) => {
                let pushes = self.pushes.clone();
                let tasks = self.tasks.clone();
                self.tasks.spawn(async move {
                    let admission = pending.decided().await;
                    pushes.proceed(iq, target, slot, admission, &tasks);
                });
            }
        }
    }

    /// Stop: answer queued pushes `wait` now, give pushes at the provider up to `grace` to finish
    /// (their replies go out as usual), then answer the rest `wait` too. Every push gets its reply.
    pub async fn shutdown(self, grace: Duration) {
        self.pushes.stop_queued.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            log::warn!(
                "{} pushes still in flight after {}: answering them wait",
                self.tasks.len(),
                humantime::format_duration(grace)
            );
            self.pushes.abort_in_flight.cancel();
            self.tasks.wait().await;
        }
    }
}

impl PushPath {
    fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    fn provider_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// One admitted push: sent now or when its window ends (in a task of its own), or answered
    /// at once. A queued push holds no provider slot while it waits.
    fn proceed(
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
                tasks.spawn(async move { pushes.send(&iq, &target, slot).await });
            }
            Admission::Decided(Decision::SendAt(at)) => {
                drop(slot);
                let Some(place) = self.queue_place() else {
                    return self.finish(&iq, &target.module, Outcome::overloaded);
                };
                let target = target.trimmed_for_queue();
                tasks.spawn(async move {
                    let turn = pushes.wait_for_turn(&iq, &target.module, at).await;
                    drop(place);
                    if let Some(slot) = turn {
                        pushes.send(&iq, &target, slot).await;
                    }
                });
            }
            Admission::Decided(Decision::Reject) => {
                self.finish(&iq, &target.module, Outcome::ratelimited)
            }
            Admission::KnownDead => self.finish(&iq, &target.module, Outcome::known_dead),
        }
    }

    /// A place among the queued pushes, or `None` when `limits.maxQueuedPushes` are queued.
    fn queue_place(self: &Arc<Self>) -> Option<QueuePlace> {
        let max = self.max_queued.load(Ordering::Relaxed);
        let taken = self.queued.fetch_add(1, Ordering::Relaxed);
        let place = QueuePlace(self.clone());
        (taken < max).then_some(place)
    }

    /// A queued push waits until `at`, then takes a slot again. At shutdown, when its module is
    /// removed, or when no slot is free, it is answered `wait` instead (`None`).
    async fn wait_for_turn(
        &self,
        iq: &IqHeader,
        module: &Module,
        at: Instant,
    ) -> Option<OwnedSemaphorePermit> {
        let removed = tokio::select! {
            _ = tokio::time::sleep_until(at) => None,
            _ = self.stop_queued.cancelled() => Some(Outcome::shutdown),
            _ = module.retired() => Some(Outcome::retired),
        };
        if let Some(outcome) = removed {
            self.finish(iq, module, outcome);
            return None;
        }
        let slot = self.provider_slot();
        if slot.is_none() {
            self.finish(iq, module, Outcome::overloaded);
        }
        slot
    }

    /// Call the provider and answer. Holds `_slot` until the call ends.
    async fn send(&self, iq: &IqHeader, target: &Target, _slot: OwnedSemaphorePermit) {
        #[cfg(feature = "random_delay_before_push")]
        tokio::time::sleep(random_jitter()).await;

        let module = &target.module;
        let started = Instant::now();
        let result = tokio::select! {
            result = Contained(module.push.send(&target.notification)) => {
                result.unwrap_or_else(|Panicked| {
                    Err(PushError::Transient("the push module panicked".to_owned()))
                })
            }
            _ = self.abort_in_flight.cancelled() => {
                self.finish(iq, module, Outcome::shutdown);
                return;
            }
        };
        let outcome = module.settle(target.key(), &result, started.elapsed());
        self.finish(iq, module, outcome);
    }

    /// Count how the push ended and send its reply.
    fn finish(&self, iq: &IqHeader, module: &Module, outcome: Outcome) {
        module.count(outcome);
        if let Some(reply) = reply_for(outcome, module.reject_with, None) {
            self.reply(iq, reply);
        }
    }

    fn reply(&self, iq: &IqHeader, reply: Reply<'_>) {
        let mut out = Vec::with_capacity(160 + iq.id.len() + iq.from.len() + iq.to.len());
        request::write_reply(iq, &reply, &mut out);
        self.replies.send(out);
    }
}

/// `limits.maxQueuedPushes` by default.
pub const DEFAULT_MAX_QUEUED: usize = 100_000;

/// One queued push's place, given back when dropped.
struct QueuePlace(Arc<PushPath>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
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
