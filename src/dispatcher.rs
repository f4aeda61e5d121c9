//! One request from stanza to reply. A push goes: parse → front door (resolve the target) →
//! provider slot → `module.admit` → send → `module.settle` → the reply table; everything that is
//! not a push is answered on the spot. Every push gets exactly one reply, and the work in flight
//! is bounded (`limits.maxConcurrentPushes`).

mod push2_path;
mod push_path;
mod reply_table;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fpush_http::LoudLog;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{self, Access, AccessSettings};
use crate::component::{Inbound, ReplySender};
use crate::config::RejectWith;
use crate::doors::{self, Refusal, Target};
use crate::metrics::Metrics;
use crate::modules::{Admitting, ModuleSet, ModulesInService};
use crate::outcome::Outcome;
use crate::request::{self, Condition, ErrorType, IqHeader, Reply, Request};
use push_path::PushPath;
use reply_table::reply_for;

pub use push_path::DEFAULT_MAX_QUEUED;

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

impl Dispatcher {
    pub fn new(
        modules: Arc<ModuleSet>,
        max_in_flight: usize,
        replies: ReplySender,
        metrics: Arc<Metrics>,
    ) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            pushes: Arc::new(PushPath::new(replies, max_in_flight)),
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
            Request::Push2 { message, push } => self.push2(message, push),
            Request::InvalidPush2 { message, reason } => {
                let refusal = Refusal {
                    outcome: Outcome::bad_request,
                    text: reason.into(),
                };
                self.refuse_message(&message, refusal);
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
            self.pushes.finish(&iq, &target, Outcome::overloaded);
            return;
        };
        match target.admit() {
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
