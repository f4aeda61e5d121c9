//! One push from request to reply: pick the module, consult the dead-token memory and the
//! ratelimit, call the module, and answer with exactly one reply — bounding the work in flight.
//!
//! The decision table lives here (`ARCHITECTURE.md`, "Replies"): what the XMPP server does with a
//! registration depends only on the error *type* we answer, so every outcome maps to one reply.

mod wipe_guard;

use std::sync::Arc;
use std::time::Duration;

use fpush_traits::{DeadTokenReason, Delivered, PushError, PushNotification};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use wipe_guard::WipeGuard;

use crate::component::{Inbound, ReplySender};
use crate::config::RejectWith;
use crate::modules::{LookupError, Module, ModuleSet};
use crate::ratelimit::Decision;
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

/// Turns inbound stanzas into push tasks and replies.
pub struct Dispatcher {
    shared: Arc<Shared>,
    modules: Arc<ModuleSet>,
    max_in_flight: usize,
    tasks: TaskTracker,
}

impl Dispatcher {
    pub fn new(modules: Arc<ModuleSet>, max_in_flight: usize, replies: ReplySender) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            shared: Arc::new(Shared {
                replies,
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                stop_queued: CancellationToken::new(),
                abort_in_flight: CancellationToken::new(),
            }),
            modules,
            max_in_flight,
            tasks: TaskTracker::new(),
        }
    }

    /// Provider calls currently in flight.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.shared.in_flight.available_permits()
    }

    /// Handle one inbound stanza. Never blocks: pushes run in their own tasks.
    pub fn handle(&self, inbound: Inbound) {
        match inbound {
            Inbound::Stanza(bytes) => self.handle_request(request::parse(&bytes)),
            Inbound::Oversized { start_tag } => {
                if let Some(iq) = request::parse_oversized(&start_tag) {
                    log::warn!("stanza from {} over the size limit answered", iq.from);
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
        let module = match self.modules.lookup(push.module.as_deref()) {
            Ok(module) => module.clone(),
            Err(LookupError::Unknown(name)) => {
                log::debug!("push for unknown module {name:?} from {}", iq.from);
                let text = format!("The push module '{name}' is not configured.");
                self.shared
                    .reply_cancel(&iq, Condition::ItemNotFound, &text);
                return;
            }
            Err(LookupError::NoDefault) => {
                self.shared
                    .reply_cancel(&iq, Condition::ItemNotFound, text::NO_DEFAULT);
                return;
            }
        };
        if module.dead_tokens.is_dead(&push.token) {
            log::debug!(
                "module {}: token {}… is known dead",
                module.id,
                fpush_traits::token_prefix(&push.token)
            );
            self.shared
                .reply_cancel(&iq, Condition::ItemNotFound, text::TOKEN_DEAD);
            return;
        }
        let Ok(permit) = self.shared.in_flight.clone().try_acquire_owned() else {
            log::debug!("{} pushes in flight: answering wait", self.max_in_flight);
            self.shared
                .reply_wait(&iq, Condition::ResourceConstraint, text::OVERLOADED);
            return;
        };
        let notification = PushNotification {
            token: push.token,
            module_id: module.id.clone(),
            summary: push.summary,
            options: push.options,
        };
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
                log::debug!(
                    "module {}: push for {}… queued by the ratelimit",
                    module.id,
                    notification.token_prefix()
                );
                let shared = self.shared.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = shared.stop_queued.cancelled() => {
                            shared.reply_wait(&iq, Condition::InternalServerError, text::SHUTTING_DOWN);
                            return;
                        }
                    }
                    let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
                        shared.reply_wait(&iq, Condition::ResourceConstraint, text::OVERLOADED);
                        return;
                    };
                    deliver(&shared, &module, &iq, &notification, permit).await;
                });
            }
            Decision::Reject => {
                drop(permit);
                log::debug!(
                    "module {}: push for {}… rejected by the ratelimit",
                    module.id,
                    notification.token_prefix()
                );
                match module.reject_with {
                    RejectWith::Wait => self.shared.reply_wait(
                        &iq,
                        Condition::ResourceConstraint,
                        text::RATELIMITED,
                    ),
                    RejectWith::Result => self.shared.reply(&iq, Reply::Result),
                }
            }
        }
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

    let result = tokio::select! {
        result = module.push.send(notification) => result,
        _ = shared.abort_in_flight.cancelled() => {
            shared.reply_wait(iq, Condition::InternalServerError, text::SHUTTING_DOWN);
            return;
        }
    };
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
            shared.reply_cancel(iq, Condition::ItemNotFound, text::TOKEN_DEAD);
        }
        Err(error) => {
            module.wipe_guard.record_other();
            let (condition, text) = match &error {
                PushError::ProviderThrottled { .. } => {
                    (Condition::ResourceConstraint, text::THROTTLED)
                }
                PushError::Timeout => (Condition::RemoteServerTimeout, text::TIMEOUT),
                PushError::Misconfigured(_) => {
                    (Condition::InternalServerError, text::MISCONFIGURED)
                }
                PushError::Transient(_) | PushError::TokenInvalid(_) => {
                    (Condition::InternalServerError, text::TRANSIENT)
                }
            };
            log::warn!("module {}: push for {token}… failed: {error}", module.id);
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
