//! The Redis ratelimit backend against a real `redis-server` that each test starts on a free
//! loopback port (and kills when it ends, passing or not): limiters of two "instances" sharing one
//! Redis decide exactly as one memory limiter would, also under a race; queued times and key
//! lifetimes are exact; dead tokens are shared; a dead Redis turns into local decisions (counted)
//! and a restarted one is used again.
//!
//! These tests need Debian's `redis-server` (`scripts/install-test-deps.sh` installs it); without
//! it they fail, saying so.

mod common;

use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use fpush::component::{reply_channel, Inbound};
use fpush::dispatcher::Dispatcher;
use fpush::metrics::{Metrics, ModuleMetrics};
use fpush::modules::{Module, ModuleSet};
use fpush::ratelimit::{
    Admission, DeadTokens, Decision, RatelimitConfig, Ratelimiter, RedisOptions, RedisStore,
};
use fpush_testkit::redis_server;
use fpush_testkit::xmpp::{prosody_push_iq, Stanza};
use fpush_traits::{async_trait, Delivered, PushError, PushNotification, PushTrait};
use tokio::time::Instant;

use common::free_port;

const TOKEN: &str = "5e0a3f7c9b1d2e4f6a8c0b2d4e6f8a0c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f";
const PREFIX: &str = "fpush-test:";
const MODULE: &str = "app";

/// A `redis-server` of our own: no persistence, loopback only, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = redis_server::start(dir.path(), &[]);
        RedisServer {
            child: Some(child),
            port,
            dir,
        }
    }

    /// Starts the server again on its port, and returns once it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running already");
        let started = redis_server::start_on(self.port, self.dir.path(), &[]);
        self.child = Some(started.unwrap_or_else(|error| panic!("{error}")));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain connection for looking at the keys.
    fn inspect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.inspect())
            .unwrap();
        keys.sort();
        keys
    }

    fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query(&mut self.inspect())
            .unwrap()
    }

    fn get_u64(&self, key: &str) -> u64 {
        let value: String = redis::cmd("GET")
            .arg(key)
            .query(&mut self.inspect())
            .unwrap();
        value.parse().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one fpush instance holds for module `app`: its own Redis connection, ratelimit and
/// dead-token memory.
struct Instance {
    store: Arc<RedisStore>,
    ratelimit: Ratelimiter,
    dead: DeadTokens,
}

impl Instance {
    fn new(url: &str, window: Duration, options: RedisOptions) -> Self {
        let store = RedisStore::new(url, PREFIX, options).unwrap();
        Instance {
            ratelimit: Ratelimiter::with_redis(config(window), store.clone(), MODULE),
            dead: DeadTokens::with_redis(Duration::from_secs(3600), store.clone(), MODULE),
            store,
        }
    }

    async fn check(&self, token: &str) -> Admission {
        self.ratelimit.admit(&self.dead, token).await
    }

    /// The ratelimit decision, asserting the token is not dead.
    async fn decide(&self, token: &str) -> Decision {
        match self.check(token).await {
            Admission::Decided(decision) => decision,
            other => panic!("token unexpectedly {other:?}"),
        }
    }
}

fn config(window: Duration) -> RatelimitConfig {
    RatelimitConfig {
        enabled: true,
        window,
        cleanup_interval: Duration::from_secs(300),
    }
}

/// Patient enough for a race of a thousand calls on a busy two-core machine.
/// Replaces whatever `key` holds with a hash, as another program writing under fpush's prefix
/// (or a damaged key) would leave it.
fn put_a_hash_at(redis: &RedisServer, key: &str) {
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query(&mut redis.inspect())
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("f")
        .arg("v")
        .query(&mut redis.inspect())
        .unwrap();
}

fn patient() -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(5),
        retry_after: Duration::from_secs(1),
    }
}

fn kind(decision: Decision) -> &'static str {
    match decision {
        Decision::Send => "send",
        Decision::SendAt(_) => "queued",
        Decision::Reject => "reject",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_give_the_memory_limiters_sequence() {
    let redis = RedisServer::start();
    let window = Duration::from_secs(60);
    let a = Instance::new(&redis.url(), window, patient());
    let b = Instance::new(&redis.url(), window, patient());
    let memory = Ratelimiter::new(config(window));

    let mut shared = Vec::new();
    for (i, instance) in [&a, &b, &a, &b, &b].into_iter().enumerate() {
        shared.push(kind(instance.decide(TOKEN).await));
        assert_eq!(
            kind(memory.check(TOKEN)),
            shared[i],
            "push {i} differs from the memory limiter"
        );
    }
    assert_eq!(shared, ["send", "queued", "reject", "reject", "reject"]);
    assert_eq!(a.store.fallbacks() + b.store.fallbacks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_racing_checks_across_two_instances_send_one_and_queue_one() {
    let redis = RedisServer::start();
    let window = Duration::from_secs(60);
    let a = Arc::new(Instance::new(&redis.url(), window, patient()));
    let b = Arc::new(Instance::new(&redis.url(), window, patient()));
    // Connect both first, so the race is about decisions, not about who connects first.
    let _ = a.decide("warm-up-a").await;
    let _ = b.decide("warm-up-b").await;

    let start = Arc::new(tokio::sync::Barrier::new(1000));
    let racers: Vec<_> = (0..1000)
        .map(|i| {
            let instance = if i % 2 == 0 { a.clone() } else { b.clone() };
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                instance.decide(TOKEN).await
            })
        })
        .collect();
    let (mut sent, mut queued, mut rejected) = (0, 0, 0);
    for racer in racers {
        match racer.await.unwrap() {
            Decision::Send => sent += 1,
            Decision::SendAt(_) => queued += 1,
            Decision::Reject => rejected += 1,
        }
    }
    assert_eq!((sent, queued, rejected), (1, 1, 998));
    assert_eq!(
        a.store.fallbacks() + b.store.fallbacks(),
        0,
        "every decision came from Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queued_send_is_the_last_send_plus_the_window_and_keys_carry_their_lifetime() {
    let redis = RedisServer::start();
    let window = Duration::from_secs(20);
    let a = Instance::new(&redis.url(), window, patient());
    let b = Instance::new(&redis.url(), window, patient());

    let before_first = Instant::now();
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    let keys = redis.keys("*");
    assert_eq!(keys.len(), 1, "one key per token: {keys:?}");
    let key = &keys[0];
    let digest = key
        .strip_prefix("fpush-test:app:{")
        .and_then(|rest| rest.strip_suffix("}:rl"))
        .unwrap_or_else(|| panic!("key {key} is not <keyPrefix><module>:{{<digest>}}:rl"));
    assert_eq!(digest.len(), 32);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!key.contains(TOKEN), "the token is not stored in clear");
    let first_send = redis.get_u64(key);
    let ttl = redis.pttl(key);
    assert!(
        (19_000..=20_000).contains(&ttl),
        "a send's entry lives one window: PTTL {ttl}"
    );

    let Decision::SendAt(at) = b.decide(TOKEN).await else {
        panic!("the second push is queued");
    };
    let after_second = Instant::now();
    assert_eq!(
        redis.get_u64(key),
        first_send + 20_000_000,
        "the queued send is recorded at last send + window, in Redis's microseconds"
    );
    assert!(
        at >= before_first + window && at <= after_second + window,
        "the local send time is the last send + window"
    );
    let ttl = redis.pttl(key);
    assert!(
        (38_000..=40_000).contains(&ttl),
        "a queued entry lives until a window after its send: PTTL {ttl}"
    );
    assert_eq!(a.decide(TOKEN).await, Decision::Reject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_from_before_a_clock_step_back_does_not_block_its_token() {
    let redis = RedisServer::start();
    let a = Instance::new(&redis.url(), Duration::from_secs(20), patient());
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    let key = redis.keys("*").remove(0);
    // As if written by a Redis whose clock ran an hour ahead of the one that now answers.
    let from_the_future = redis.get_u64(&key) + 3_600_000_000;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(from_the_future)
        .query(&mut redis.inspect())
        .unwrap();

    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    assert!(redis.get_u64(&key) < from_the_future);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_by_themselves_and_the_token_is_then_free() {
    let redis = RedisServer::start();
    let a = Instance::new(&redis.url(), Duration::from_millis(200), patient());
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    assert_eq!(redis.keys("*").len(), 1);

    let deadline = Instant::now() + Duration::from_secs(5);
    while !redis.keys("*").is_empty() {
        assert!(Instant::now() < deadline, "the key did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_starting_while_a_push_is_queued_rejects() {
    let redis = RedisServer::start();
    let window = Duration::from_secs(60);
    let a = Instance::new(&redis.url(), window, patient());
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    assert!(matches!(a.decide(TOKEN).await, Decision::SendAt(_)));

    let late = Instance::new(&redis.url(), window, patient());
    assert_eq!(late.decide(TOKEN).await, Decision::Reject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_provider_throttled_is_held_until_the_pause_ends_then_redis_decides() {
    let redis = RedisServer::start();
    let window = Duration::from_millis(100);
    let a = Instance::new(&redis.url(), window, patient());
    let other = "0f".repeat(32);
    assert_eq!(kind(a.decide(TOKEN).await), "send");
    a.ratelimit.hold(TOKEN, Duration::from_millis(600));
    tokio::time::sleep(window * 2).await;
    // The window is long over, so only the hold refuses; other tokens go out as before.
    assert_eq!(a.check(TOKEN).await, Admission::Held);
    assert_eq!(kind(a.decide(&other).await), "send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kind(a.decide(TOKEN).await), "send", "the hold ended");
    assert_eq!(kind(a.decide(TOKEN).await), "queued", "Redis decides again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_are_shared_between_instances() {
    let redis = RedisServer::start();
    let window = Duration::from_secs(60);
    let a = Instance::new(&redis.url(), window, patient());
    let b = Instance::new(&redis.url(), window, patient());

    a.dead.remember_dead(TOKEN).await;
    assert_eq!(b.check(TOKEN).await, Admission::KnownDead);
    assert!(
        !b.dead.is_dead(TOKEN),
        "instance b learnt it from Redis, not from its own memory"
    );
    let keys = redis.keys("*");
    assert_eq!(keys.len(), 1, "a dead token records no send: {keys:?}");
    assert!(
        keys[0].starts_with("fpush-test:app:{") && keys[0].ends_with("}:dead"),
        "{}",
        keys[0]
    );
    let ttl = redis.pttl(&keys[0]);
    assert!((3_590_000..=3_600_000).contains(&ttl), "PTTL {ttl}");

    assert_eq!(b.decide("another-token").await, Decision::Send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_a_token_dead_writes_it_to_redis_in_the_background() {
    let redis = RedisServer::start();
    let a = Instance::new(&redis.url(), Duration::from_secs(60), patient());
    let b = Instance::new(&redis.url(), Duration::from_secs(60), patient());

    a.dead.mark_dead(TOKEN);
    assert!(a.dead.is_dead(TOKEN), "known locally at once");
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("fpush-test:app:{*}:dead").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dead token never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.check(TOKEN).await, Admission::KnownDead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_turns_into_counted_local_decisions_and_a_restarted_one_is_used_again() {
    let mut redis = RedisServer::start();
    let window = Duration::from_secs(60);
    let options = RedisOptions {
        timeout: Duration::from_millis(250),
        retry_after: Duration::from_millis(100),
    };
    let a = Instance::new(&redis.url(), window, options);
    let b = Instance::new(&redis.url(), window, options);
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    assert!(matches!(b.decide(TOKEN).await, Decision::SendAt(_)));

    redis.kill();
    // Each instance keeps deciding, within the timeout, with its local limiter, which mirrors
    // what Redis decided for it: a still knows its send, b its queued push.
    let started = Instant::now();
    assert!(matches!(a.decide(TOKEN).await, Decision::SendAt(_)));
    assert_eq!(b.decide(TOKEN).await, Decision::Reject);
    for i in 0..20 {
        let token = format!("during-outage-{i}");
        assert_eq!(a.decide(&token).await, Decision::Send);
        assert_eq!(
            b.decide(&token).await,
            Decision::Send,
            "b alone knows nothing of a"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "42 decisions without Redis took {:?}",
        started.elapsed()
    );
    assert!(
        a.store.fallbacks() >= 21,
        "a counted {}",
        a.store.fallbacks()
    );
    assert!(
        b.store.fallbacks() >= 21,
        "b counted {}",
        b.store.fallbacks()
    );

    redis.restart();
    for instance in [&a, &b] {
        wait_until_redis_decides(instance).await;
    }
    let token = "after-the-outage";
    assert_eq!(a.decide(token).await, Decision::Send);
    assert!(matches!(b.decide(token).await, Decision::SendAt(_)));
    assert_eq!(a.decide(token).await, Decision::Reject);
    assert_eq!(b.decide(token).await, Decision::Reject);
}

/// Decides throw-away tokens until one decision is Redis's (the fallback count stays put).
async fn wait_until_redis_decides(instance: &Instance) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for probe in 0.. {
        let fallbacks = instance.store.fallbacks();
        let _ = instance.decide(&format!("probe-{probe}")).await;
        if instance.store.fallbacks() == fallbacks {
            return;
        }
        assert!(Instant::now() < deadline, "Redis was not used again");
        // The retry period: until it is over, decisions stay local without trying Redis.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_redis_every_decision_is_local_and_prompt() {
    // Nothing listens there: the first call fails fast, later ones skip Redis until the retry.
    let a = Instance::new(
        &format!("redis://127.0.0.1:{}/", free_port()),
        Duration::from_secs(60),
        RedisOptions::default(),
    );
    let started = Instant::now();
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    assert!(matches!(a.decide(TOKEN).await, Decision::SendAt(_)));
    assert_eq!(a.decide(TOKEN).await, Decision::Reject);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(a.store.fallbacks(), 3);
}

/// A provider that answers at once and counts its calls.
#[derive(Default)]
struct CountingProvider {
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl PushTrait for CountingProvider {
    async fn send(&self, _: &PushNotification) -> Result<Delivered, PushError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Delivered::default())
    }
}

/// The dispatcher of one instance, its module on the Redis backend.
fn dispatcher_on_redis(
    url: &str,
    window: Duration,
) -> (
    Dispatcher,
    fpush::component::ReplyReceiver,
    Arc<CountingProvider>,
) {
    let provider = Arc::new(CountingProvider::default());
    let store = RedisStore::new(url, PREFIX, patient()).unwrap();
    let module = Module::new(
        MODULE,
        "demo",
        provider.clone(),
        config(window),
        Duration::from_secs(3600),
        ModuleMetrics::detached(),
    )
    .on_redis(store, Duration::from_secs(3600));
    let modules = Arc::new(ModuleSet::from_modules(vec![(module, true)]));
    let (sender, replies) = reply_channel();
    (
        Dispatcher::new(modules, 100, sender, Metrics::new()),
        replies,
        provider,
    )
}

async fn next_reply(replies: &mut fpush::component::ReplyReceiver) -> Stanza {
    let bytes = tokio::time::timeout(Duration::from_secs(10), replies.recv())
        .await
        .expect("a reply in time")
        .expect("reply channel open");
    Stanza::parse(String::from_utf8(bytes).unwrap()).unwrap()
}

fn push(dispatcher: &Dispatcher, id: &str, token: &str) {
    let iq = prosody_push_iq(id, "localhost", "push.localhost", token, Some(MODULE));
    dispatcher.handle(Inbound::Stanza(bytes::Bytes::from(iq.into_bytes())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn two_dispatchers_on_one_redis_send_one_push_now_one_after_the_window_and_refuse_the_rest() {
    let redis = RedisServer::start();
    let window = Duration::from_millis(500);
    let (first, mut first_replies, first_provider) = dispatcher_on_redis(&redis.url(), window);
    let (second, mut second_replies, second_provider) = dispatcher_on_redis(&redis.url(), window);

    let started = Instant::now();
    push(&first, "p1", TOKEN);
    let reply = next_reply(&mut first_replies).await;
    assert_eq!(
        (reply.attr("id"), reply.attr("type")),
        (Some("p1"), Some("result"))
    );

    // Racing for the token: whichever Redis decides first is queued, the other refused at once.
    push(&second, "p2", TOKEN);
    push(&first, "p3", TOKEN);
    let (refused, queued) = tokio::select! {
        refused = next_reply(&mut first_replies) => (refused, next_reply(&mut second_replies).await),
        refused = next_reply(&mut second_replies) => (refused, next_reply(&mut first_replies).await),
    };
    assert_eq!(
        (
            refused.error_type.as_deref(),
            refused.error_condition.as_deref()
        ),
        (Some("wait"), Some("resource-constraint"))
    );
    assert_eq!(queued.attr("type"), Some("result"));
    assert_ne!(queued.attr("id"), refused.attr("id"));
    assert!(
        started.elapsed() >= window,
        "the queued push went out only when the window ended"
    );
    let calls = |p: &CountingProvider| p.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(calls(&first_provider) + calls(&second_provider), 2);
    first.shutdown(Duration::from_secs(1)).await;
    second.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_queued_at_shutdown_gives_its_queued_send_back_to_the_other_instances() {
    let redis = RedisServer::start();
    let window = Duration::from_secs(30);
    let (leaving, mut leaving_replies, _) = dispatcher_on_redis(&redis.url(), window);
    push(&leaving, "p1", TOKEN);
    assert_eq!(
        next_reply(&mut leaving_replies).await.attr("type"),
        Some("result")
    );
    push(&leaving, "p2", TOKEN);
    while leaving.queued() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    leaving.shutdown(Duration::from_secs(1)).await;
    let answered = next_reply(&mut leaving_replies).await;
    assert_eq!(
        (answered.attr("id"), answered.error_type.as_deref()),
        (Some("p2"), Some("wait"))
    );
    assert!(fpush::ratelimit::finish_take_backs(Duration::from_secs(10)).await);

    // The send p2 held is free again: the staying instance queues the token's next push for
    // the window's end instead of refusing it as already queued.
    let (staying, mut staying_replies, _) = dispatcher_on_redis(&redis.url(), window);
    push(&staying, "p3", TOKEN);
    let queued = async {
        while staying.queued() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = queued => {}
        refused = next_reply(&mut staying_replies) => panic!("not queued: {refused:?}"),
    }
    staying.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_one_dispatcher_found_dead_is_answered_dead_by_the_other() {
    let redis = RedisServer::start();
    let window = Duration::from_secs(60);
    let a = Instance::new(&redis.url(), window, patient());
    a.dead.remember_dead(TOKEN).await;

    let (dispatcher, mut replies, provider) = dispatcher_on_redis(&redis.url(), window);
    push(&dispatcher, "p1", TOKEN);
    let reply = next_reply(&mut replies).await;
    assert_eq!(
        (
            reply.error_type.as_deref(),
            reply.error_condition.as_deref()
        ),
        (Some("cancel"), Some("item-not-found"))
    );
    assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    dispatcher.shutdown(Duration::from_secs(1)).await;
}

/// A "Redis" that answers every script run with `{1, i64::MAX}` (send after ~292,000 years) and
/// every other command with `+OK`.
async fn broken_redis() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    // One answer per command: a client may pipeline several in one write.
                    let request = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                    let mut answers = Vec::new();
                    for command in request.split("\r\n*").filter(|c| !c.is_empty()) {
                        answers.extend_from_slice(if command.contains("EVAL") {
                            b"*2\r\n:1\r\n:9223372036854775807\r\n"
                        } else {
                            b"+OK\r\n"
                        });
                    }
                    if socket.write_all(&answers).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_redis_answer_to_wait_for_ages_is_cut_to_one_window() {
    let port = broken_redis().await;
    let url = format!("redis://127.0.0.1:{port}/");
    let store = RedisStore::new(&url, PREFIX, patient()).unwrap();
    let window = Duration::from_secs(20);
    let limiter = Ratelimiter::with_redis(config(window), store.clone(), MODULE);
    let dead = DeadTokens::with_redis(Duration::from_secs(3600), store, MODULE);
    let before = Instant::now();
    match limiter.admit(&dead, TOKEN).await {
        Admission::Decided(Decision::SendAt(at)) => {
            assert!(
                at <= Instant::now() + window,
                "parked until {:?}",
                at - before
            );
        }
        other => panic!("expected a queued send, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_the_wrong_type_is_replaced_and_takes_redis_down_for_no_one() {
    let redis = RedisServer::start();
    let a = Instance::new(&redis.url(), Duration::from_secs(20), patient());
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    let key = redis.keys("*").remove(0);
    // A damaged entry: something else wrote a hash under the token's key.
    put_a_hash_at(&redis, &key);

    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    assert!(
        matches!(a.decide(TOKEN).await, Decision::SendAt(_)),
        "the entry was rewritten and limits its token again"
    );
    assert_eq!(
        a.decide("another-token").await,
        Decision::Send,
        "other tokens are decided in Redis too"
    );
    assert_eq!(a.store.fallbacks(), 0, "one bad key is no Redis outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_forgotten_while_redis_was_down_is_not_answered_dead_once_it_is_back() {
    let redis = RedisServer::start();
    let quick = RedisOptions {
        timeout: Duration::from_millis(300),
        retry_after: Duration::from_millis(500),
    };
    let a = Instance::new(&redis.url(), Duration::from_secs(20), quick);
    let b = Instance::new(&redis.url(), Duration::from_secs(20), patient());
    a.dead.remember_dead(TOKEN).await;
    assert_eq!(b.check(TOKEN).await, Admission::KnownDead);

    // Redis stops answering for a moment (keeping its data): `a` counts it down.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .query(&mut redis.inspect())
        .unwrap();
    let _ = a.check("another-token").await;
    assert!(a.store.fallbacks() > 0, "the pause took Redis down for `a`");
    // The client registers its token again meanwhile: it is alive.
    a.dead.forget(TOKEN);
    // Once the pause is over and a retry is due, a push finds Redis answering again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let fallbacks = a.store.fallbacks();
        let _ = a.check("a-third-token").await;
        if a.store.fallbacks() == fallbacks {
            break;
        }
        assert!(Instant::now() < deadline, "Redis never answered `a` again");
    }
    let fallbacks = a.store.fallbacks();
    assert_eq!(
        a.check(TOKEN).await,
        Admission::Decided(Decision::Send),
        "the stale entry in Redis must not answer a registration that was just made"
    );
    assert_eq!(a.store.fallbacks(), fallbacks, "decided in Redis");
    // The shared entry is deleted once Redis answers again, for every instance.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.check(TOKEN).await == Admission::KnownDead {
        assert!(
            Instant::now() < deadline,
            "the shared entry was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A module whose ratelimit is off and whose dead-token memory is off has nothing to ask Redis:
/// its pushes neither wait for it nor count (and alert) as decisions taken without it.
#[tokio::test]
async fn a_module_that_shares_nothing_never_asks_redis() {
    let store = RedisStore::new("redis://127.0.0.1:1/", PREFIX, patient()).unwrap();
    let off = RatelimitConfig {
        enabled: false,
        ..config(Duration::from_secs(20))
    };
    let limiter = Ratelimiter::with_redis(off, store.clone(), MODULE);
    let dead = DeadTokens::with_redis(Duration::ZERO, store.clone(), MODULE);
    for _ in 0..3 {
        assert_eq!(
            limiter.admit(&dead, TOKEN).await,
            Admission::Decided(Decision::Send)
        );
    }
    assert_eq!(store.fallbacks(), 0);
}

/// What an instance decided alone while Redis did not answer is not forgotten when Redis answers
/// again: Redis never heard of that send (nor of the push queued after it), so the instance
/// would send again at once, and the push it queued would go out too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_does_not_forget_its_own_fallback_decisions_when_redis_answers_again() {
    let mut redis = RedisServer::start();
    let options = RedisOptions {
        timeout: Duration::from_millis(250),
        retry_after: Duration::from_millis(100),
    };
    let a = Instance::new(&redis.url(), Duration::from_secs(60), options);
    wait_until_redis_decides(&a).await;

    redis.kill();
    // Decided locally: sent now, the next one queued for the window's end.
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    assert!(matches!(a.decide(TOKEN).await, Decision::SendAt(_)));

    redis.restart();
    wait_until_redis_decides(&a).await;
    // One push of this token went out seconds ago and one is queued, in this very instance:
    // a third push within the window must be refused, not sent.
    assert_eq!(
        a.decide(TOKEN).await,
        Decision::Reject,
        "a third send within the window, from the instance that already sent and queued one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_entry_of_the_wrong_type_does_not_answer_its_token_dead() {
    let redis = RedisServer::start();
    let a = Instance::new(&redis.url(), Duration::from_secs(20), patient());
    assert_eq!(a.decide(TOKEN).await, Decision::Send);
    let key = redis.keys("*:rl").remove(0).replace(":rl", ":dead");
    // Something else wrote a hash under the token's dead-token key: no provider said "dead".
    put_a_hash_at(&redis, &key);

    let b = Instance::new(&redis.url(), Duration::from_secs(20), patient());
    assert!(
        matches!(
            b.check(TOKEN).await,
            Admission::Decided(Decision::SendAt(_))
        ),
        "decided by its ratelimit entry, not answered dead"
    );
    assert_eq!(b.store.fallbacks(), 0, "one bad key is no Redis outage");
}
