//! One request from stanza to reply. A push goes: parse → front door (resolve the target) →
//! provider slot → `module.admit` → send → `module.settle` → the reply table; registration
//! commands go to their door (`commands`); everything else is answered on the spot. Every push
//! gets exactly one reply, and the work in flight is bounded (`limits.maxConcurrentPushes`).

mod commands;
mod push2_path;
mod push_path;
mod reply_table;
mod stored_push;
mod tigase_path;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{self, Access, AccessSettings};
use crate::component::{Inbound, ReplySender};
use crate::doors::p2::{self, P2Door};
use crate::doors::tigase::{self, TigaseDoor};
use crate::doors::{self, Refusal};
use crate::metrics::Metrics;
use crate::modules::{ModuleSet, ModulesInService};
use crate::outcome::Outcome;
use crate::request::{self, Condition, ErrorType, IqHeader, PushRequest, Reply, Request};
use push_path::PushPath;

pub use push_path::{DEFAULT_MAX_QUEUED, QUEUED_BYTES_PER_PLACE};

/// Turns inbound stanzas into push tasks and replies.
pub struct Dispatcher {
    pushes: Arc<PushPath>,
    modules: ModulesInService,
    access: Arc<ArcSwap<Access>>,
    metrics: Arc<Metrics>,
    /// The p2 door, once a registration store is open.
    p2: ArcSwapOption<P2Door>,
    /// The tigase door, once a registration store is open.
    tigase: ArcSwapOption<TigaseDoor>,
    /// Bounds registration commands in flight (each waits for the store).
    commands: Arc<Semaphore>,
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
            pushes: Arc::new(PushPath::new(replies, max_in_flight, metrics.clone())),
            modules: Arc::new(ArcSwap::new(modules)),
            access: Arc::new(ArcSwap::from_pointee(
                Access::new(AccessSettings::default()),
            )),
            metrics,
            p2: ArcSwapOption::empty(),
            tigase: ArcSwapOption::empty(),
            commands: Arc::new(Semaphore::new(commands::MAX_IN_FLIGHT)),
            tasks: TaskTracker::new(),
        }
    }

    /// Serve p2 registrations with `door` (its registration store opened).
    pub fn set_p2(&self, door: Arc<P2Door>) {
        self.p2.store(Some(door));
    }

    /// Serve tigase registrations with `door` (its registration store opened).
    pub fn set_tigase(&self, door: Arc<TigaseDoor>) {
        self.tigase.store(Some(door));
    }

    /// Provider calls currently in flight.
    pub fn in_flight(&self) -> usize {
        self.pushes.in_flight()
    }

    /// A way to read the in-flight count from elsewhere (the metrics listener).
    pub fn in_flight_probe(&self) -> Arc<dyn Fn() -> usize + Send + Sync> {
        // The slots only, not the push path: its reply sender must not outlive the dispatcher
        // (the link closes the stream when the last one is gone).
        let (slots, max) = (self.pushes.in_flight.clone(), self.pushes.max_in_flight);
        Arc::new(move || push_path::slots_in_use(&slots, max))
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
            Inbound::Push(push) => self.handle_request(*push),
            Inbound::Oversized { start_tag } => {
                if let Some(iq) = request::parse_oversized(&start_tag) {
                    let text = format_args!(
                        "a stanza from {} over limits.maxStanzaSize or limits.maxDepth was skipped and answered wait",
                        iq.from
                    );
                    self.pushes.alarm("oversized stanza", &text);
                    self.pushes.refuse(&iq, Outcome::too_large.into());
                }
            }
        }
    }

    fn handle_request(&self, request: Request) {
        match request {
            Request::Push { iq, push } => self.push(iq, push),
            Request::InvalidPush { iq, reason } => {
                log::debug!("invalid push IQ from {}: {reason}", iq.from);
                let text = reason.into();
                let refusal = Refusal {
                    outcome: Outcome::bad_request,
                    text,
                };
                self.pushes.refuse(&iq, refusal);
            }
            Request::Push2 { message, push } => self.push2(message, push),
            Request::InvalidPush2 { message, reason } => {
                let refusal = Refusal {
                    outcome: Outcome::bad_request,
                    text: reason.into(),
                };
                self.refuse_message(&message, refusal);
            }
            Request::Command { iq, command } => self.command(iq, command),
            Request::DiscoInfo { iq } => self.disco_info(&iq),
            Request::CommandList { iq } => self.command_list(&iq),
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

    fn push(&self, iq: IqHeader, push: PushRequest) {
        if doors::oversized_header(&iq) {
            return self.pushes.refuse(&iq, Outcome::too_large.into());
        }
        if let Some(refusal) = self.sender_refused(self.access.load().push(&iq.from)) {
            return self.pushes.refuse(&iq, refusal);
        }
        let modules = self.modules.load();
        if p2::claims(&push) && modules.serves(p2::PROTOCOL) {
            return self.stored_push(self.p2.load_full(), iq, push);
        }
        // Not to the default module: the node would reach the provider as a token, be called
        // invalid, and the server would drop a registration a reload put out of service.
        if p2::claims(&push) && modules.retired_protocol(p2::PROTOCOL) {
            return self.pushes.refuse(&iq, Outcome::retired.into());
        }
        if tigase::claims(&push, &modules) || tigase_retired(&modules, &push) {
            return self.stored_push(self.tigase.load_full(), iq, push);
        }
        match doors::token_in_node::resolve(&modules, push) {
            Ok(target) => self.pushes.dispatch(iq, target, &self.tasks),
            Err(refusal) => self.pushes.refuse(&iq, refusal),
        }
    }

    /// The p2 door, when some module serves p2 and the store is open.
    fn p2_door(&self) -> Option<Arc<P2Door>> {
        let door = self.p2.load_full()?;
        self.modules.load().serves(p2::PROTOCOL).then_some(door)
    }

    /// Why the access policy turns a sender away, if it does.
    fn sender_refused(&self, verdict: access::Verdict) -> Option<Refusal> {
        match verdict {
            access::Verdict::Allowed => None,
            access::Verdict::Forbidden => Some(Outcome::forbidden.into()),
            access::Verdict::OverShare => Some(Outcome::domain_limited.into()),
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

/// Whether a push may be for a tigase registration while a reload has stopped serving tigase
/// (within `modules.retiredGrace`): the door still looks its node up, and answers `wait` for a
/// registration no module serves, where the default module or `item-not-found` would make the
/// server drop it.
fn tigase_retired(modules: &ModuleSet, push: &PushRequest) -> bool {
    push.module.is_none() && !p2::claims(push) && modules.retired_protocol(tigase::PROTOCOL)
}
