//! The dispatcher with a scripted provider, on tokio's paused clock: every provider outcome maps
//! to its reply, dead tokens are remembered, the wipe guard holds, the ratelimit is exact for a
//! burst, the in-flight bound answers `wait`, shutdown answers every push, and only servers may
//! push, each sending domain within its fair share.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fpush::access::AccessSettings;
use fpush::component::{reply_channel, Inbound, ReplyReceiver};
use fpush::dispatcher::Dispatcher;
use fpush::metrics::{Metrics, ModuleMetrics};
use fpush::modules::{Module, ModuleSet, THROTTLE_HOLD};
use fpush::ratelimit::RatelimitConfig;
use fpush_testkit::xmpp::{prosody_push_iq, Stanza};
use fpush_traits::{
    async_trait, DeadTokenReason, Delivered, PushError, PushNotification, PushTrait,
};

type Outcome = Result<Delivered, PushError>;

/// A provider whose answers are scripted per token (default: delivered) and that counts calls.
/// With a gate, each call waits for a permit, so tests decide when pushes leave the "provider".
#[derive(Default)]
struct ScriptedProvider {
    script: Mutex<HashMap<String, VecDeque<Outcome>>>,
    calls: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl ScriptedProvider {
    fn answer(&self, token: &str, outcome: Outcome) {
        self.script
            .lock()
            .unwrap()
            .entry(token.to_owned())
            .or_default()
            .push_back(outcome);
    }

    fn calls_for(&self, token: &str) -> usize {
        self.calls.lock().unwrap().get(token).copied().unwrap_or(0)
    }
}

#[async_trait]
impl PushTrait for ScriptedProvider {
    async fn send(&self, notification: &PushNotification) -> Outcome {
        self.total.fetch_add(1, Ordering::SeqCst);
        *self
            .calls
            .lock()
            .unwrap()
            .entry(notification.token.clone())
            .or_default() += 1;
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.script
            .lock()
            .unwrap()
            .get_mut(&notification.token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Ok(Delivered::default()))
    }
}

struct Harness {
    dispatcher: Dispatcher,
    replies: ReplyReceiver,
    provider: Arc<ScriptedProvider>,
    next_id: usize,
}

impl Harness {
    fn new(provider: ScriptedProvider, window: Option<Duration>, max_in_flight: usize) -> Self {
        let provider = Arc::new(provider);
        let module = Module::new(
            "app",
            "demo",
            provider.clone(),
            RatelimitConfig {
                enabled: window.is_some(),
                window: window.unwrap_or(Duration::from_secs(20)),
                cleanup_interval: Duration::from_secs(300),
            },
            Duration::from_secs(3600),
            ModuleMetrics::detached(),
        );
        let modules = Arc::new(ModuleSet::from_modules(vec![(module, true)]));
        let (sender, replies) = reply_channel();
        Harness {
            dispatcher: Dispatcher::new(modules, max_in_flight, sender, Metrics::new()),
            replies,
            provider,
            next_id: 0,
        }
    }

    /// Hand one push to the dispatcher; returns its IQ id.
    fn push(&mut self, token: &str) -> String {
        self.push_from("localhost", token)
    }

    /// Hand one push from `from` to the dispatcher; returns its IQ id.
    fn push_from(&mut self, from: &str, token: &str) -> String {
        self.next_id += 1;
        let id = format!("iq-{}", self.next_id);
        let iq = prosody_push_iq(&id, from, "push.localhost", token, Some("app"));
        self.dispatcher
            .handle(Inbound::Stanza(bytes::Bytes::from(iq.into_bytes())));
        id
    }

    async fn reply(&mut self) -> Stanza {
        let bytes = tokio::time::timeout(Duration::from_secs(3600), self.replies.recv())
            .await
            .expect("a reply in time")
            .expect("reply channel open");
        Stanza::parse(String::from_utf8(bytes).unwrap()).unwrap()
    }

    /// Replies available without waiting for the clock.
    async fn settle(&mut self) -> Vec<Stanza> {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        while let Some(bytes) = self.replies.try_recv() {
            out.push(Stanza::parse(String::from_utf8(bytes).unwrap()).unwrap());
        }
        out
    }
}

fn error_of(stanza: &Stanza) -> (Option<&str>, Option<&str>) {
    (
        stanza.error_type.as_deref(),
        stanza.error_condition.as_deref(),
    )
}

#[tokio::test(start_paused = true)]
async fn every_provider_outcome_maps_to_its_reply() {
    let provider = ScriptedProvider::default();
    /// (token, what the provider answers, the expected error type and condition; `None`: result)
    type Case = (&'static str, Outcome, Option<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        ("ok", Ok(Delivered::default()), None),
        (
            "dead",
            Err(PushError::TokenInvalid(DeadTokenReason::Unregistered)),
            Some(("cancel", "item-not-found")),
        ),
        (
            "bad",
            Err(PushError::TokenInvalid(DeadTokenReason::BadToken)),
            Some(("cancel", "item-not-found")),
        ),
        (
            "throttled",
            Err(PushError::ProviderThrottled { retry_after: None }),
            Some(("wait", "resource-constraint")),
        ),
        (
            "paused",
            Err(PushError::ProviderPaused {
                retry_after: Duration::from_secs(30),
            }),
            Some(("wait", "resource-constraint")),
        ),
        (
            "timeout",
            Err(PushError::Timeout),
            Some(("wait", "remote-server-timeout")),
        ),
        (
            "transient",
            Err(PushError::Transient("503".into())),
            Some(("wait", "internal-server-error")),
        ),
        (
            "misconfigured",
            Err(PushError::Misconfigured("bad key".into())),
            Some(("wait", "internal-server-error")),
        ),
    ];
    for (token, outcome, _) in &cases {
        provider.answer(token, outcome.clone());
    }
    let mut harness = Harness::new(provider, None, 100);
    for (token, _, expected) in &cases {
        let id = harness.push(token);
        let reply = harness.reply().await;
        assert_eq!(reply.attr("id"), Some(id.as_str()), "{token}");
        match expected {
            None => assert_eq!(reply.kind(), Some("result"), "{token}: {}", reply.raw),
            Some((kind, condition)) => {
                assert_eq!(reply.kind(), Some("error"), "{token}");
                assert_eq!(error_of(&reply), (Some(*kind), Some(*condition)), "{token}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn dead_tokens_are_answered_without_asking_the_provider_again() {
    let provider = ScriptedProvider::default();
    provider.answer(
        "gone",
        Err(PushError::TokenInvalid(DeadTokenReason::Unregistered)),
    );
    let mut harness = Harness::new(provider, None, 100);
    harness.push("gone");
    assert_eq!(
        error_of(&harness.reply().await),
        (Some("cancel"), Some("item-not-found"))
    );
    harness.push("gone");
    assert_eq!(
        error_of(&harness.reply().await),
        (Some("cancel"), Some("item-not-found"))
    );
    assert_eq!(harness.provider.calls_for("gone"), 1);
}

#[tokio::test(start_paused = true)]
async fn not_for_this_app_answers_for_everyone_are_treated_as_misconfiguration() {
    every_token_refused_is_treated_as_misconfiguration(DeadTokenReason::NotForThisApp).await;
}

/// APNS answers `BadDeviceToken` for every token of a module whose `environment` is wrong.
#[tokio::test(start_paused = true)]
async fn bad_token_answers_for_everyone_are_treated_as_misconfiguration() {
    every_token_refused_is_treated_as_misconfiguration(DeadTokenReason::BadToken).await;
}

async fn every_token_refused_is_treated_as_misconfiguration(reason: DeadTokenReason) {
    let provider = ScriptedProvider::default();
    for i in 0..30 {
        provider.answer(&format!("t{i}"), Err(PushError::TokenInvalid(reason)));
    }
    let mut harness = Harness::new(provider, None, 100);
    let mut cancels = 0;
    let mut waits = 0;
    for i in 0..30 {
        harness.push(&format!("t{i}"));
        match error_of(&harness.reply().await) {
            (Some("cancel"), Some("item-not-found")) => cancels += 1,
            (Some("wait"), Some("internal-server-error")) => waits += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    // The guard trips at the 20th distinct token; from then on nothing is disabled.
    assert_eq!(cancels, 19);
    assert_eq!(waits, 11);
    // A success proves the configuration works again: the next such answer is believed.
    harness.push("works");
    assert_eq!(harness.reply().await.kind(), Some("result"));
    harness
        .provider
        .answer("t-late", Err(PushError::TokenInvalid(reason)));
    harness.push("t-late");
    assert_eq!(
        error_of(&harness.reply().await),
        (Some("cancel"), Some("item-not-found"))
    );
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_burst_for_one_token_sends_one_queues_one_and_rejects_the_rest() {
    let mut harness = Harness::new(
        ScriptedProvider::default(),
        Some(Duration::from_secs(20)),
        10_000,
    );
    for _ in 0..1000 {
        harness.push("hot-token");
    }
    let immediate = harness.settle().await;
    let results = immediate
        .iter()
        .filter(|r| r.kind() == Some("result"))
        .count();
    let waits = immediate
        .iter()
        .filter(|r| error_of(r) == (Some("wait"), Some("resource-constraint")))
        .count();
    assert_eq!((results, waits, immediate.len()), (1, 998, 999));
    assert_eq!(harness.provider.calls_for("hot-token"), 1);

    // The queued one goes out when the window ends, and is answered then.
    tokio::time::advance(Duration::from_secs(19)).await;
    assert!(harness.settle().await.is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    let later = harness.settle().await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].kind(), Some("result"));
    assert_eq!(harness.provider.calls_for("hot-token"), 2);
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn the_in_flight_bound_answers_wait_and_queued_pushes_hold_no_slot() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let provider = ScriptedProvider {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let mut harness = Harness::new(provider, Some(Duration::from_secs(5)), 2);
    harness.push("a");
    harness.push("a"); // queued for 5 s: holds no slot
    harness.push("b");
    let overflow = harness.push("c");
    let now = harness.settle().await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].attr("id"), Some(overflow.as_str()));
    assert_eq!(
        error_of(&now[0]),
        (Some("wait"), Some("resource-constraint"))
    );
    assert_eq!(harness.dispatcher.in_flight(), 2);
    gate.add_permits(10);
    let done = harness.settle().await;
    assert_eq!(
        done.iter().filter(|r| r.kind() == Some("result")).count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_queued_pushes_and_those_still_at_the_provider() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let provider = ScriptedProvider {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let mut harness = Harness::new(provider, Some(Duration::from_secs(20)), 100);
    let stuck = harness.push("slow");
    let queued = harness.push("slow");
    assert!(harness.settle().await.is_empty());
    let Harness {
        dispatcher,
        mut replies,
        ..
    } = harness;
    dispatcher.shutdown(Duration::from_secs(10)).await;
    let mut answered = Vec::new();
    while let Some(bytes) = replies.try_recv() {
        answered.push(Stanza::parse(String::from_utf8(bytes).unwrap()).unwrap());
    }
    assert_eq!(answered.len(), 2);
    for reply in &answered {
        assert_eq!(
            error_of(reply),
            (Some("wait"), Some("internal-server-error"))
        );
    }
    let ids: Vec<_> = answered.iter().filter_map(|r| r.attr("id")).collect();
    assert!(ids.contains(&queued.as_str()) && ids.contains(&stuck.as_str()));
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_push_from_a_full_jid_is_forbidden_and_never_reaches_the_provider() {
    let mut harness = Harness::new(ScriptedProvider::default(), None, 100);
    let id = harness.push_from("mallory@evil.example/res", "victim-token");
    let replies = harness.settle().await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].attr("id"), Some(id.as_str()));
    assert_eq!(error_of(&replies[0]), (Some("auth"), Some("forbidden")));
    assert_eq!(harness.provider.total.load(Ordering::SeqCst), 0);
    // The victim's ratelimit window was not touched: its next real push goes out at once.
    harness.push("victim-token");
    let replies = harness.settle().await;
    assert_eq!(replies[0].kind(), Some("result"));
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_domain_not_allowed_is_forbidden() {
    let mut harness = Harness::new(ScriptedProvider::default(), None, 100);
    harness.dispatcher.set_access(AccessSettings {
        allowed_domains: vec!["*.example.org".into()],
        ..AccessSettings::default()
    });
    let served = harness.push_from("chat.example.org", "a");
    let refused = harness.push_from("evil.example", "b");
    let replies = harness.settle().await;
    let reply = |id: &str| replies.iter().find(|r| r.attr("id") == Some(id)).unwrap();
    assert_eq!(reply(&served).kind(), Some("result"));
    assert_eq!(error_of(reply(&refused)), (Some("auth"), Some("forbidden")));
    assert_eq!(harness.provider.total.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn one_flooding_domain_does_not_delay_another() {
    let mut harness = Harness::new(ScriptedProvider::default(), None, 100_000);
    harness.dispatcher.set_access(AccessSettings {
        allowed_domains: Vec::new(),
        per_domain_rate: 100.0,
        per_domain_burst: 500.0,
    });
    for i in 0..5_000 {
        harness.push_from("flood.example", &format!("flood-{i}"));
    }
    let quiet = harness.push_from("quiet.example", "quiet-token");
    let replies = harness.settle().await;
    let limited = replies
        .iter()
        .filter(|r| error_of(r) == (Some("wait"), Some("resource-constraint")))
        .count();
    // The flood gets its burst, the rest is turned away at once; the other domain is served now.
    assert_eq!(limited, 4_500);
    let answer = replies
        .iter()
        .find(|r| r.attr("id") == Some(quiet.as_str()));
    assert_eq!(answer.and_then(|r| r.kind()), Some("result"));
    assert_eq!(harness.provider.calls_for("quiet-token"), 1);
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn queued_pushes_are_capped_and_the_rest_answered_wait() {
    let mut harness = Harness::new(
        ScriptedProvider::default(),
        Some(Duration::from_secs(20)),
        1_000,
    );
    harness.dispatcher.set_max_queued(5);
    for i in 0..20 {
        harness.push(&format!("token-{i}"));
    }
    assert_eq!(harness.settle().await.len(), 20);
    for i in 0..20 {
        harness.push(&format!("token-{i}"));
    }
    let refused = harness.settle().await;
    assert_eq!(refused.len(), 15);
    for reply in &refused {
        assert_eq!(error_of(reply), (Some("wait"), Some("resource-constraint")));
    }
    assert_eq!(harness.dispatcher.queued(), 5);
    // The five queued ones go out when their window ends, and give their places back.
    tokio::time::advance(Duration::from_secs(20)).await;
    let later = harness.settle().await;
    assert_eq!(later.len(), 5);
    assert!(later.iter().all(|r| r.kind() == Some("result")));
    assert_eq!(harness.dispatcher.queued(), 0);
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn large_pushes_fill_the_queue_s_byte_budget_before_its_count() {
    let mut harness = Harness::new(
        ScriptedProvider::default(),
        Some(Duration::from_secs(20)),
        1_000,
    );
    // Seven places: a budget of 7 × 2 KiB = 14 KiB.
    harness.dispatcher.set_max_queued(7);
    assert_eq!(fpush::dispatcher::QUEUED_BYTES_PER_PLACE, 2048);
    let push = |harness: &mut Harness, i: usize| {
        let id = format!("{i:0>4000}");
        let iq = prosody_push_iq(
            &id,
            "localhost",
            "push.localhost",
            &format!("t{i}"),
            Some("app"),
        );
        let stanza = bytes::Bytes::from(iq.into_bytes());
        harness.dispatcher.handle(Inbound::Stanza(stanza));
    };
    for i in 0..7 {
        push(&mut harness, i);
    }
    assert_eq!(
        harness.settle().await.len(),
        7,
        "the first push of each token goes out"
    );
    // Each push holds its 4,000-byte id, 1 KiB for its structures and about 100 bytes of
    // other text, about 5.1 KiB: two fit in 14 KiB, three do not.
    for i in 0..7 {
        push(&mut harness, i);
    }
    let refused = harness.settle().await;
    assert_eq!(refused.len(), 5);
    for reply in &refused {
        assert_eq!(error_of(reply), (Some("wait"), Some("resource-constraint")));
    }
    assert_eq!(harness.dispatcher.queued(), 2);
    // Their bytes come back with their places: everyday pushes fill all seven places again.
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(harness.settle().await.len(), 2);
    for round in 0..2 {
        for i in 0..7 {
            harness.push(&format!("everyday-{i}"));
        }
        assert_eq!(harness.settle().await.len(), 7 * (1 - round));
    }
    assert_eq!(harness.dispatcher.queued(), 7);
}

/// A provider with a bug: it panics for every push.
struct PanickingProvider;

#[async_trait]
impl PushTrait for PanickingProvider {
    async fn send(&self, _: &PushNotification) -> Outcome {
        panic!("a bug in the platform");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_push_module_costs_one_push_answered_wait() {
    let module = Module::new(
        "app",
        "demo",
        Arc::new(PanickingProvider),
        RatelimitConfig::default(),
        Duration::from_secs(3600),
        ModuleMetrics::detached(),
    );
    let modules = Arc::new(ModuleSet::from_modules(vec![(module, true)]));
    let (sender, mut replies) = reply_channel();
    let dispatcher = Dispatcher::new(modules, 10, sender, Metrics::new());
    for (id, token) in [("p1", "t1"), ("p2", "t2")] {
        let iq = prosody_push_iq(id, "localhost", "push.localhost", token, Some("app"));
        dispatcher.handle(Inbound::Stanza(bytes::Bytes::from(iq.into_bytes())));
    }
    for _ in 0..2 {
        let bytes = tokio::time::timeout(Duration::from_secs(10), replies.recv())
            .await
            .expect("a reply")
            .expect("channel open");
        let reply = Stanza::parse(String::from_utf8(bytes).unwrap()).unwrap();
        assert_eq!(
            error_of(&reply),
            (Some("wait"), Some("internal-server-error"))
        );
    }
    assert_eq!(dispatcher.in_flight(), 0);
}

/// A provider that answers every push with the same dead-token reason.
struct DeadProvider(DeadTokenReason);

#[async_trait]
impl PushTrait for DeadProvider {
    async fn send(&self, _: &PushNotification) -> Outcome {
        Err(PushError::TokenInvalid(self.0))
    }
}

/// Sends `count` pushes for distinct tokens through one module answering `reason`, draining
/// the replies as it goes; returns the module set.
async fn flood_of_dead_tokens(reason: DeadTokenReason, cap: usize, count: usize) -> Arc<ModuleSet> {
    let module = Module::new(
        "app",
        "demo",
        Arc::new(DeadProvider(reason)),
        RatelimitConfig::default(),
        Duration::from_secs(24 * 3600),
        ModuleMetrics::detached(),
    )
    .with_max_dead_tokens(cap);
    let modules = Arc::new(ModuleSet::from_modules(vec![(module, true)]));
    let (sender, mut replies) = reply_channel();
    let dispatcher = Dispatcher::new(modules.clone(), 100_000, sender, Metrics::new());
    // One sending domain pushes them all: no fair share in the way.
    dispatcher.set_access(AccessSettings {
        per_domain_rate: 0.0,
        ..AccessSettings::default()
    });
    for chunk in 0..count / 1_000 {
        for i in 0..1_000 {
            let token = format!("{:064x}", chunk * 1_000 + i);
            let iq = prosody_push_iq("id", "localhost", "push.localhost", &token, Some("app"));
            dispatcher.handle(Inbound::Stanza(bytes::Bytes::from(iq.into_bytes())));
        }
        for _ in 0..1_000 {
            let reply = tokio::time::timeout(Duration::from_secs(10), replies.recv()).await;
            assert!(matches!(reply, Ok(Some(_))), "every push is answered");
        }
    }
    modules
}

#[tokio::test(start_paused = true)]
async fn implausible_tokens_are_answered_but_never_remembered() {
    let modules = flood_of_dead_tokens(DeadTokenReason::Implausible, 1_000_000, 100_000).await;
    // Remembering them cost ~145 bytes each; nothing of them is kept now, not even a
    // ratelimit entry, so the memory a flood of them costs stays flat.
    let gauges = &modules.gauges()[0];
    assert_eq!((gauges.dead_tokens, gauges.ratelimit_entries), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn provider_dead_tokens_stay_within_the_cap() {
    let modules = flood_of_dead_tokens(DeadTokenReason::Unregistered, 10_000, 100_000).await;
    assert_eq!(modules.gauges()[0].dead_tokens, 10_000);
}

#[tokio::test(start_paused = true)]
async fn pushes_larger_than_any_server_sends_never_reach_a_module() {
    let mut harness = Harness::new(
        ScriptedProvider::default(),
        Some(Duration::from_secs(20)),
        100,
    );
    let long_id = "i".repeat(5_000);
    let iq = prosody_push_iq(
        &long_id,
        "localhost",
        "push.localhost",
        "token",
        Some("app"),
    );
    harness
        .dispatcher
        .handle(Inbound::Stanza(bytes::Bytes::from(iq.into_bytes())));
    let long_token = harness.push(&"a".repeat(5_000));
    let replies = harness.settle().await;
    assert_eq!(replies.len(), 2);
    assert_eq!(
        error_of(&replies[0]),
        (Some("wait"), Some("policy-violation"))
    );
    assert_eq!(replies[1].attr("id"), Some(long_token.as_str()));
    // A token longer than any platform's is no push at all (the parser says so).
    assert_eq!(error_of(&replies[1]), (Some("modify"), Some("bad-request")));
    assert_eq!(harness.provider.total.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn idle_sending_domains_are_forgotten() {
    let mut harness = Harness::new(ScriptedProvider::default(), None, 100);
    harness.dispatcher.set_access(AccessSettings {
        allowed_domains: Vec::new(),
        per_domain_rate: 10.0,
        per_domain_burst: 20.0,
    });
    let stop = tokio_util::sync::CancellationToken::new();
    harness.dispatcher.spawn_access_sweeper(stop.clone());
    for i in 0..50 {
        harness.push_from(&format!("server{i}.example"), "token");
    }
    harness.settle().await;
    assert_eq!(harness.dispatcher.sending_domains(), 50);
    // A full bucket refills in 2 s: after that every one of them is idle, and swept.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(harness.dispatcher.sending_domains(), 0);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_push_refused_for_a_full_queue_is_not_counted_as_queued() {
    let metrics = Metrics::new();
    let module = Module::new(
        "app",
        "demo",
        Arc::new(ScriptedProvider::default()),
        RatelimitConfig::default(),
        Duration::from_secs(3600),
        metrics.module("app"),
    );
    let modules = Arc::new(ModuleSet::from_modules(vec![(module, true)]));
    let (sender, replies) = reply_channel();
    let mut harness = Harness {
        dispatcher: Dispatcher::new(modules, 1_000, sender, metrics.clone()),
        replies,
        provider: Arc::default(),
        next_id: 0,
    };
    harness.dispatcher.set_max_queued(5);
    for round in 0..2 {
        for i in 0..20 {
            harness.push(&format!("token-{i}"));
        }
        assert_eq!(harness.settle().await.len(), 20 - 5 * round);
    }
    let totals = metrics.totals();
    let count = |outcome: fpush::outcome::Outcome| totals[outcome.index()];
    assert_eq!(harness.dispatcher.queued(), 5);
    // Fifteen were answered `overloaded` at once: they were never held.
    assert_eq!(count(fpush::outcome::Outcome::overloaded), 15);
    assert_eq!(count(fpush::outcome::Outcome::queued), 5);
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_push_refused_for_a_full_queue_leaves_its_token_free_to_queue_the_next() {
    let mut harness = Harness::new(
        ScriptedProvider::default(),
        Some(Duration::from_secs(20)),
        1_000,
    );
    harness.dispatcher.set_max_queued(1);
    harness.push("a");
    harness.push("b");
    assert_eq!(harness.settle().await.len(), 2);
    harness.push("a"); // queued: the queue is full
    harness.push("b"); // no room: answered wait, never sent
    let refused = harness.settle().await;
    assert_eq!(refused.len(), 1);
    assert_eq!(
        error_of(&refused[0]),
        (Some("wait"), Some("resource-constraint"))
    );

    // The next push for "b" within the window is queued (room again), not refused as if one
    // were already waiting, and it goes out when the window ends.
    harness.dispatcher.set_max_queued(10);
    tokio::time::advance(Duration::from_secs(10)).await;
    harness.push("b");
    assert!(harness.settle().await.is_empty(), "queued, not refused");
    tokio::time::advance(Duration::from_secs(10)).await;
    let later = harness.settle().await;
    assert_eq!(later.len(), 2);
    assert!(later.iter().all(|r| r.kind() == Some("result")));
    assert_eq!(harness.provider.calls_for("b"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_module_wide_pause_holds_no_token() {
    // The provider paused the whole module: its client answers at once until the pause ends,
    // so holding every token pushed meanwhile would only grow the ratelimit's memory.
    let provider = ScriptedProvider::default();
    let paused = PushError::ProviderPaused {
        retry_after: Duration::from_secs(600),
    };
    let throttled = PushError::ProviderThrottled {
        retry_after: Some(Duration::from_secs(600)),
    };
    provider.answer("paused", Err(paused.clone()));
    provider.answer("paused", Err(paused));
    provider.answer("throttled", Err(throttled));
    let mut harness = Harness::new(provider, None, 100);
    for token in ["paused", "paused", "throttled", "throttled"] {
        harness.push(token);
        let reply = harness.reply().await;
        assert_eq!(
            error_of(&reply),
            (Some("wait"), Some("resource-constraint"))
        );
    }
    assert_eq!(harness.provider.calls_for("paused"), 2, "asked again");
    assert_eq!(harness.provider.calls_for("throttled"), 1, "held");
}

/// A token the provider throttled (with `retry_after`) is held for `hold`, and no longer.
async fn throttled_token_is_held_for(retry_after: Option<Duration>, hold: Duration) {
    let provider = ScriptedProvider::default();
    provider.answer("t", Err(PushError::ProviderThrottled { retry_after }));
    let mut harness = Harness::new(provider, None, 100);
    harness.push("t");
    let first = harness.reply().await;
    assert_eq!(
        error_of(&first),
        (Some("wait"), Some("resource-constraint"))
    );
    tokio::time::advance(hold - Duration::from_secs(1)).await;
    harness.push("t");
    let held = harness.reply().await;
    assert_eq!(error_of(&held), (Some("wait"), Some("resource-constraint")));
    assert_eq!(
        harness.provider.calls_for("t"),
        1,
        "held until a second before"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    harness.push("t");
    assert_eq!(harness.reply().await.kind(), Some("result"));
    assert_eq!(harness.provider.calls_for("t"), 2, "sent after the hold");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_token_is_held_until_the_provider_s_retry_after_and_no_longer() {
    throttled_token_is_held_for(Some(Duration::from_secs(30)), Duration::from_secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn a_token_throttled_without_retry_after_is_held_for_the_default_hold() {
    // APNS answers its per-token 429 without Retry-After.
    throttled_token_is_held_for(None, THROTTLE_HOLD).await;
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_queued_push_is_not_sent_while_the_provider_holds_its_token() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let provider = ScriptedProvider {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    provider.answer(
        "t",
        Err(PushError::ProviderThrottled {
            retry_after: Some(Duration::from_secs(60)),
        }),
    );
    let mut harness = Harness::new(provider, Some(Duration::from_secs(20)), 1_000);
    harness.push("t"); // at the provider
    harness.push("t"); // queued until 20 s
    assert!(harness.settle().await.is_empty());
    gate.add_permits(10);
    let throttled = harness.settle().await;
    assert_eq!(throttled.len(), 1);
    assert_eq!(
        error_of(&throttled[0]),
        (Some("wait"), Some("resource-constraint"))
    );

    // The queued push wakes within the provider's pause: answered wait, not sent.
    tokio::time::advance(Duration::from_secs(20)).await;
    let woken = harness.settle().await;
    assert_eq!(woken.len(), 1);
    assert_eq!(
        error_of(&woken[0]),
        (Some("wait"), Some("resource-constraint"))
    );
    assert_eq!(harness.provider.calls_for("t"), 1);
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_push_for_a_held_token_is_answered_wait_whatever_the_ratelimit_answers() {
    // rejectWith "result" is for pushes a queued one covers; during the provider's pause none
    // is queued, so reporting success would hide a push that never goes out.
    let provider = Arc::new(ScriptedProvider::default());
    provider.answer(
        "t",
        Err(PushError::ProviderThrottled {
            retry_after: Some(Duration::from_secs(600)),
        }),
    );
    let metrics = Metrics::new();
    let mut module = Module::new(
        "app",
        "demo",
        provider.clone(),
        RatelimitConfig::default(),
        Duration::from_secs(3600),
        metrics.module("app"),
    );
    module.reject_with = fpush::config::RejectWith::Result;
    let modules = Arc::new(ModuleSet::from_modules(vec![(module, true)]));
    let (sender, replies) = reply_channel();
    let mut harness = Harness {
        dispatcher: Dispatcher::new(modules, 100, sender, metrics.clone()),
        replies,
        provider,
        next_id: 0,
    };
    harness.push("t");
    assert_eq!(
        error_of(&harness.reply().await),
        (Some("wait"), Some("resource-constraint"))
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    harness.push("t");
    let held = harness.reply().await;
    assert_eq!(
        error_of(&held),
        (Some("wait"), Some("resource-constraint")),
        "answered {:?} during the provider's pause",
        held.kind()
    );
    assert_eq!(harness.provider.calls_for("t"), 1);
    let totals = metrics.totals();
    assert_eq!(totals[fpush::outcome::Outcome::throttled.index()], 2);
}

#[tokio::test(start_paused = true)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn a_queued_push_that_finds_no_slot_at_its_turn_leaves_its_token_free() {
    let gate = Arc::new(tokio::sync::Semaphore::new(1));
    let provider = ScriptedProvider {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let mut harness = Harness::new(provider, Some(Duration::from_secs(20)), 1);
    harness.push("t"); // sent at 0 s
    assert_eq!(harness.reply().await.kind(), Some("result"));
    harness.push("t"); // queued until 20 s
    tokio::time::advance(Duration::from_secs(19)).await;
    harness.push("busy"); // holds the only provider slot
    assert!(harness.settle().await.is_empty());

    // The queued push's time comes while every slot is taken: answered wait, never sent.
    tokio::time::advance(Duration::from_secs(1)).await;
    let woken = harness.settle().await;
    assert_eq!(woken.len(), 1);
    assert_eq!(
        error_of(&woken[0]),
        (Some("wait"), Some("resource-constraint"))
    );
    gate.add_permits(10);
    assert_eq!(harness.settle().await.len(), 1, "busy answered");

    // No send was attempted at 20 s: the token's last send is still the one at 0 s.
    tokio::time::advance(Duration::from_secs(1)).await;
    harness.push("t");
    let next = harness.settle().await;
    assert_eq!(next.len(), 1, "queued for a window after a send never made");
    assert_eq!(next[0].kind(), Some("result"));
    assert_eq!(harness.provider.calls_for("t"), 2);
}
