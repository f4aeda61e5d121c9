//! One push from request to reply: pick the module, consult the dead-token memory and the
//! ratelimit, call the module, and answer with exactly one reply — bounding the work in flight.
//!
//! The decision table lives here (`ARCHITECTURE.md`, "Replies"): what the XMPP server does with a
//! registration depends only on the error *type* we answer, so every outcome maps to one reply.

mod wipe_guard;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use fpush_traits::{DeadTokenReason, Delivered, PushError, PushNotification};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use wipe_guard::WipeGuard;

use crate::component::{Inbound, ReplySender};
use crate::config::RejectWith;
use crate::metrics::{Metrics, Outcome};
use crate::modules::{LookupError, Module, ModuleSet};
use crate::ratelimit::{Decision, Verdict};
use crate::request::{self, Condition, ErrorType, IqHeader, PushRequest, Reply, Request};

/// Error texts: short English sentences for the XMPP server's logs.
mod text {
    pub const NO_DEFAULT: &str =
        "No pushModule was given and no default push module is configured.";
    pub const TOKEN_DEAD: &str = "The device token is no longer valid.";
    pub const RATELIMITED: &str = "Too many pushes for this device; one is already queued.";
    pub const OVERLOADED: &str = "The push server is overloaded; try again later.";
    pub const THROTTLED: &str = "The push provider is throttling; try again later.";
    pub const TIMEOUT: &str = "The push provider did not answer in time.";
    pub const TRANSIENT: &str = "The push provider failed temporarily.";
    pub const MISCONFIGURED: &str = "The push module is misconfigured; the operator was alerted.";
    pub const SHUTTING_DOWN: &str = "The push server is shutting down; try again later.";
    pub const MODULE_REMOVED: &str = "The push module was removed by a reload; try again later.";
    pub const TOO_LARGE: &str = "The stanza exceeds the push server's size limit.";
}

/// What the push tasks share with the dispatcher.
struct Shared {
    replies: ReplySender,
    /// Bounds provider calls in flight (`limits.maxConcurrentPushes`).
    in_flight: Arc<Semaphore>,
    /// Cancelled at shutdown: queued pushes are answered `wait` at once.
    stop_queued: CancellationToken,
    /// Cancelled when the shutdown grace is over: pushes still at the provider are answered `wait`.
    abort_in_flight: CancellationToken,
}

impl Shared {
    fn reply(&self, iq: &IqHeader, reply: Reply<'_>) {
        let mut out = Vec::with_capacity(160 + iq.id.len() + iq.from.len() + iq.to.len());
        request::write_reply(iq, &reply, &mut out);
        self.replies.send(out);
    }

    fn reply_wait(&self, iq: &IqHeader, condition: Condition, text: &str) {
        self.reply(
            iq,
            Reply::Error {
                kind: ErrorType::Wait,
                condition,
                text: Some(text),
            },
        );
    }

    fn reply_cancel(&self, iq: &IqHeader, condition: Condition, text: &str) {
        self.reply(
            iq,
            Reply::Error {
                kind: ErrorType::Cancel,
                condition,
                text: Some(text),
            },
        );
    }
}

/// The modules in service; replaced whole by a reload while pushes keep flowing.
pub type ModulesInService = Arc<RwLock<Arc<ModuleSet>>>;

/// Turns inbound stanzas into push tasks and replies.
pub struct Dispatcher {
    shared: Arc<Shared>,
    modules: ModulesInService,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    tasks: TaskTracker,
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
            shared: Arc::new(Shared {
                replies,
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                stop_queued: CancellationToken::new(),
                abort_in_flight: CancellationToken::new(),
            }),
            modules: Arc::new(RwLock::new(modules)),
            metrics,
            max_in_flight,
            tasks: TaskTracker::new(),
        }
    }

    /// Provider calls currently in flight.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.shared.in_flight.available_permits()
    }

    /// A way to read the in-flight count from elsewhere (the metrics listener).
    pub fn in_flight_probe(&self) -> Arc<dyn Fn() -> usize + Send + Sync> {
        let semaphore = self.shared.in_flight.clone();
        let max = self.max_in_flight;
        Arc::new(move || max - semaphore.available_permits())
    }

    /// The modules in service, shared with whoever reports on them.
    pub fn modules(&self) -> ModulesInService {
        self.modules.clone()
    }

    fn current_modules(&self) -> Arc<ModuleSet> {
        match self.modules.read() {
            Ok(modules) => modules.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Put a new set of modules in service (a reload). Pushes already dispatched finish with
    /// the module they started with; queued pushes of modules that are gone are answered
    /// `wait` when they wake.
    pub fn replace_modules(&self, new: Arc<ModuleSet>) {
        let old = {
            let mut guard = match self.modules.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::replace(&mut *guard, new.clone())
        };
        for module in old.iter() {
            let kept = new
                .lookup(Some(&module.id))
                .is_ok_and(|m| Arc::ptr_eq(&m.retired, &module.retired));
            if !kept {
                module.retired.cancel();
            }
        }
    }

    /// Handle one inbound stanza. Never blocks: pushes run in their own tasks.
    pub fn handle(&self, inbound: Inbound) {
        match inbound {
            Inbound::Stanza(bytes) => self.handle_request(request::parse(&bytes)),
            Inbound::Oversized { start_tag } => {
                if let Some(iq) = request::parse_oversized(&start_tag) {
                    log::warn!("stanza from {} over the size limit answered", iq.from);
                    self.metrics.unattributed().count(Outcome::bad_request);
                    self.shared.reply(
                        &iq,
                        Reply::Error {
                            kind: ErrorType::Modify,
                            condition: Condition::PolicyViolation,
                            text: Some(text::TOO_LARGE),
                        },
                    );
                }
            }
        }
    }

    fn handle_request(&self, request: Request) {
        match request {
            Request::Push { iq, push } => self.dispatch_push(iq, push),
            Request::InvalidPush { iq, reason } => {
                log::debug!("invalid push IQ from {}: {reason}", iq.from);
                self.metrics.unattributed().count(Outcome::bad_request);
                self.shared.reply(
                    &iq,
                    Reply::Error {
                        kind: ErrorType::Modify,
                        condition: Condition::BadRequest,
                        text: Some(&reason),
                    },
                );
            }
            Request::DiscoInfo { iq } => self.shared.reply(&iq, Reply::DiscoInfo),
            Request::Ping { iq } => self.shared.reply(&iq, Reply::Result),
            Request::Unsupported { iq } => self.shared.reply(
                &iq,
                Reply::Error {
                    kind: ErrorType::Cancel,
                    condition: Condition::ServiceUnavailable,
                    text: None,
                },
            ),
            Request::Response { .. } | Request::Ignored => {}
        }
    }

    fn dispatch_push(&self, iq: IqHeader, push: PushRequest) {
        let modules = self.current_modules();
        let module = match modules.lookup(push.module.as_deref()) {
            Ok(module) => module.clone(),
            Err(LookupError::Unknown(name)) => {
                log::debug!("push for unknown module {name:?} from {}", iq.from);
                self.metrics.unattributed().count(Outcome::unknown_module);
                let text = format!("The push module '{name}' is not configured.");
                self.shared
                    .reply_cancel(&iq, Condition::ItemNotFound, &text);
                return;
            }
            Err(LookupError::NoDefault) => {
                self.metrics.unattributed().count(Outcome::unknown_module);
                self.shared
                    .reply_cancel(&iq, Condition::ItemNotFound, text::NO_DEFAULT);
                return;
            }
        };
        module.metrics.received();
        if module.ratelimit.is_shared() {
            self.dispatch_shared(iq, module, push);
            return;
        }
        if module.dead_tokens.is_dead(&push.token) {
            reply_known_dead(&self.shared, &module, &iq, &push.token);
            return;
        }
        let Some(permit) = self.provider_slot(&iq, &module) else {
            return;
        };
        let notification = notification_for(&module, push);
        match module.ratelimit.check(&notification.token) {
            Decision::Send => {
                let shared = self.shared.clone();
                self.tasks.spawn(async move {
                    deliver(&shared, &module, &iq, &notification, permit).await;
                });
            }
            Decision::SendAt(at) => {
                // A queued push holds no provider slot while it waits.
                drop(permit);
                note_queued(&module, &notification);
                let shared = self.shared.clone();
                self.tasks.spawn(async move {
                    send_when_due(&shared, &module, &iq, &notification, at).await;
                });
            }
            Decision::Reject => {
                drop(permit);
                reply_ratelimited(&self.shared, &module, &iq, &notification);
            }
        }
    }

    /// A push for a module whose ratelimit and dead tokens live in Redis: the verdict takes a
    /// round trip, so the push's task awaits it. The provider slot is taken first and held
    /// meanwhile, which also bounds the Redis calls in flight; the verdict always comes within
    /// the store's timeout (a local one when Redis fails).
    fn dispatch_shared(&self, iq: IqHeader, module: Arc<Module>, push: PushRequest) {
        let Some(permit) = self.provider_slot(&iq, &module) else {
            return;
        };
        let notification = notification_for(&module, push);
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let verdict = module
                .ratelimit
                .check_shared(&module.dead_tokens, &notification.token)
                .await;
            match verdict {
                Verdict::Decided(Decision::Send) => {
                    deliver(&shared, &module, &iq, &notification, permit).await;
                }
                Verdict::Decided(Decision::SendAt(at)) => {
                    drop(permit);
                    note_queued(&module, &notification);
                    send_when_due(&shared, &module, &iq, &notification, at).await;
                }
                Verdict::Decided(Decision::Reject) => {
                    drop(permit);
                    reply_ratelimited(&shared, &module, &iq, &notification);
                }
                Verdict::Dead => {
                    drop(permit);
                    reply_known_dead(&shared, &module, &iq, &notification.token);
                }
            }
        });
    }

    /// A provider slot for one push, or `None` after answering it `wait` (overload).
    fn provider_slot(&self, iq: &IqHeader, module: &Module) -> Option<OwnedSemaphorePermit> {
        let permit = self.shared.in_flight.clone().try_acquire_owned().ok();
        if permit.is_none() {
            log::debug!("{} pushes in flight: answering wait", self.max_in_flight);
            module.metrics.count(Outcome::overloaded);
            self.shared
                .reply_wait(iq, Condition::ResourceConstraint, text::OVERLOADED);
        }
        permit
    }

    /// Stop: answer queued pushes `wait` now, give pushes at the provider up to `grace` to finish
    /// (their replies go out as usual), then answer the rest `wait` too. Every push gets its reply.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.stop_queued.cancel();
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
            self.shared.abort_in_flight.cancel();
            self.tasks.wait().await;
        }
    }
}

/// What the module is given for one push request.
fn notification_for(module: &Module, push: PushRequest) -> PushNotification {
    PushNotification {
        token: push.token,
        module_id: module.id.clone(),
        summary: push.summary,
        options: push.options,
        ..PushNotification::default()
    }
}

/// A push for a token a provider declared dead a while ago: answered without asking again.
fn reply_known_dead(shared: &Shared, module: &Module, iq: &IqHeader, token: &str) {
    log::debug!(
        "module {}: token {}… is known dead",
        module.id,
        fpush_traits::token_prefix(token)
    );
    module.metrics.count(Outcome::known_dead);
    shared.reply_cancel(iq, Condition::ItemNotFound, text::TOKEN_DEAD);
}

/// Counts a push the ratelimit queued, when the decision is taken.
fn note_queued(module: &Module, notification: &PushNotification) {
    log::debug!(
        "module {}: push for {}… queued by the ratelimit",
        module.id,
        notification.token_prefix()
    );
    module.metrics.count(Outcome::queued);
}

/// A push the ratelimit queued: wait (holding no provider slot) until `at`, then deliver it; at
/// shutdown or when its module is removed, answer `wait` at once instead.
async fn send_when_due(
    shared: &Shared,
    module: &Module,
    iq: &IqHeader,
    notification: &PushNotification,
    at: tokio::time::Instant,
) {
    tokio::select! {
        _ = tokio::time::sleep_until(at) => {}
        _ = shared.stop_queued.cancelled() => {
            module.metrics.count(Outcome::shutdown);
            shared.reply_wait(iq, Condition::InternalServerError, text::SHUTTING_DOWN);
            return;
        }
        _ = module.retired.cancelled() => {
            module.metrics.count(Outcome::shutdown);
            shared.reply_wait(iq, Condition::InternalServerError, text::MODULE_REMOVED);
            return;
        }
    }
    let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
        module.metrics.count(Outcome::overloaded);
        shared.reply_wait(iq, Condition::ResourceConstraint, text::OVERLOADED);
        return;
    };
    deliver(shared, module, iq, notification, permit).await;
}

/// A push the ratelimit turned away because one for its token is already queued.
fn reply_ratelimited(
    shared: &Shared,
    module: &Module,
    iq: &IqHeader,
    notification: &PushNotification,
) {
    log::debug!(
        "module {}: push for {}… rejected by the ratelimit",
        module.id,
        notification.token_prefix()
    );
    module.metrics.count(Outcome::ratelimited);
    match module.reject_with {
        RejectWith::Wait => {
            shared.reply_wait(iq, Condition::ResourceConstraint, text::RATELIMITED);
        }
        RejectWith::Result => shared.reply(iq, Reply::Result),
    }
}

/// Call the module and answer the push. Holds `_permit` (a provider slot) until the call ends.
async fn deliver(
    shared: &Shared,
    module: &Module,
    iq: &IqHeader,
    notification: &PushNotification,
    _permit: OwnedSemaphorePermit,
) {
    #[cfg(feature = "random_delay_before_push")]
    tokio::time::sleep(random_jitter()).await;

    let started = tokio::time::Instant::now();
    let result = tokio::select! {
        result = module.push.send(notification) => result,
        _ = shared.abort_in_flight.cancelled() => {
            module.metrics.count(Outcome::shutdown);
            shared.reply_wait(iq, Condition::InternalServerError, text::SHUTTING_DOWN);
            return;
        }
    };
    module.metrics.observe_latency(started.elapsed());
    answer(shared, module, iq, notification, result);
}

/// Map a module's result to the reply (the table in ARCHITECTURE.md) and update the module's
/// dead-token memory and wipe guard.
fn answer(
    shared: &Shared,
    module: &Module,
    iq: &IqHeader,
    notification: &PushNotification,
    result: Result<Delivered, PushError>,
) {
    let token = notification.token_prefix();
    match result {
        Ok(_) => {
            log::debug!("module {}: push for {token}… delivered", module.id);
            module.metrics.count(Outcome::delivered);
            module.wipe_guard.record_success();
            shared.reply(iq, Reply::Result);
        }
        Err(PushError::TokenInvalid(reason)) => {
            if reason == DeadTokenReason::NotForThisApp
                && module.wipe_guard.record_not_for_app(&notification.token)
            {
                log::error!(
                    "module {}: the provider says most tokens belong to another app; check its \
                     topic/project. Answering wait instead of disabling registrations",
                    module.id
                );
                module.metrics.count(Outcome::misconfigured);
                shared.reply_wait(iq, Condition::InternalServerError, text::MISCONFIGURED);
                return;
            }
            if reason != DeadTokenReason::NotForThisApp {
                module.wipe_guard.record_other();
            }
            log::info!(
                "module {}: token {token}… is dead ({reason:?}); disabling it",
                module.id
            );
            module.dead_tokens.mark_dead(&notification.token);
            module.metrics.count(Outcome::token_invalid);
            shared.reply_cancel(iq, Condition::ItemNotFound, text::TOKEN_DEAD);
        }
        Err(error) => {
            module.wipe_guard.record_other();
            let (outcome, condition, text) = match &error {
                PushError::ProviderThrottled { .. } => (
                    Outcome::throttled,
                    Condition::ResourceConstraint,
                    text::THROTTLED,
                ),
                PushError::Timeout => (
                    Outcome::timeout,
                    Condition::RemoteServerTimeout,
                    text::TIMEOUT,
                ),
                PushError::Misconfigured(_) => (
                    Outcome::misconfigured,
                    Condition::InternalServerError,
                    text::MISCONFIGURED,
                ),
                PushError::Transient(_) | PushError::TokenInvalid(_) => (
                    Outcome::transient,
                    Condition::InternalServerError,
                    text::TRANSIENT,
                ),
            };
            module.metrics.count(outcome);
            // Per push at debug only: the module logs the cause (at most once a minute) and the
            // summary line counts these, so a failing provider cannot flood the log.
            log::debug!("module {}: push for {token}… failed: {error}", module.id);
            shared.reply_wait(iq, condition, text);
        }
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
