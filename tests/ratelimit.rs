//! The ratelimit and the dead-token memory through their public API: the send / queue / reject
//! sequence on tokio's paused clock, exactness under concurrency, the sweep and its task, and the
//! memory one cached token costs.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use fpush::ratelimit::{DeadTokens, Decision, RatelimitConfig, Ratelimiter};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "6d2b1f0c9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060f5e";
const OTHER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn limiter(window_secs: u64, cleanup_secs: u64) -> Ratelimiter {
    Ratelimiter::new(RatelimitConfig {
        enabled: true,
        window: Duration::from_secs(window_secs),
        cleanup_interval: Duration::from_secs(cleanup_secs),
    })
}

#[tokio::test(start_paused = true)]
async fn first_push_is_sent_second_is_queued_for_the_window_end_third_is_rejected() {
    let limiter = limiter(20, 300);
    let first = Instant::now();
    assert_eq!(limiter.check(TOKEN), Decision::Send);

    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        limiter.check(TOKEN),
        Decision::SendAt(first + Duration::from_secs(20))
    );

    sleep(Duration::from_secs(1)).await;
    assert_eq!(limiter.check(TOKEN), Decision::Reject);
    assert_eq!(limiter.check(TOKEN), Decision::Reject);
}

#[tokio::test(start_paused = true)]
async fn the_window_restarts_at_the_queued_send() {
    let limiter = limiter(20, 300);
    let first = Instant::now();
    assert_eq!(limiter.check(TOKEN), Decision::Send);
    let queued_at = first + Duration::from_secs(20);
    assert_eq!(limiter.check(TOKEN), Decision::SendAt(queued_at));

    // Until the queued send has happened, everything else is turned away.
    tokio::time::sleep_until(queued_at - Duration::from_millis(1)).await;
    assert_eq!(limiter.check(TOKEN), Decision::Reject);

    // Once it has, the next push waits for a whole window from the queued send, not from the first.
    tokio::time::sleep_until(queued_at + Duration::from_secs(1)).await;
    assert_eq!(
        limiter.check(TOKEN),
        Decision::SendAt(queued_at + Duration::from_secs(20))
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_window_a_push_is_sent_at_once() {
    let limiter = limiter(20, 300);
    assert_eq!(limiter.check(TOKEN), Decision::Send);
    sleep(Duration::from_secs(20)).await;
    assert_eq!(limiter.check(TOKEN), Decision::Send);
    sleep(Duration::from_secs(25)).await;
    assert_eq!(limiter.check(TOKEN), Decision::Send);
}

#[tokio::test(start_paused = true)]
async fn different_tokens_are_independent() {
    let limiter = limiter(20, 300);
    assert_eq!(limiter.check(TOKEN), Decision::Send);
    assert!(matches!(limiter.check(TOKEN), Decision::SendAt(_)));
    assert_eq!(limiter.check(TOKEN), Decision::Reject);
    assert_eq!(limiter.check(OTHER), Decision::Send);
    assert!(matches!(limiter.check(OTHER), Decision::SendAt(_)));
    assert_eq!(limiter.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_limiter_always_sends_and_remembers_nothing() {
    let limiter = Arc::new(Ratelimiter::new(RatelimitConfig {
        enabled: false,
        ..RatelimitConfig::default()
    }));
    for _ in 0..5 {
        assert_eq!(limiter.check(TOKEN), Decision::Send);
    }
    assert_eq!(limiter.len(), 0);
    assert_eq!(limiter.sweep(), 0);
    let sweeper = limiter.spawn_sweeper(CancellationToken::new());
    assert!(tokio::time::timeout(Duration::from_secs(1), sweeper)
        .await
        .is_ok());
}

#[test]
fn the_defaults_are_on_twenty_seconds_and_five_minutes() {
    assert_eq!(
        RatelimitConfig::default(),
        RatelimitConfig {
            enabled: true,
            window: Duration::from_secs(20),
            cleanup_interval: Duration::from_secs(300),
        }
    );
}

// The multi-threaded runtime cannot run on the paused clock; the outcome does not depend on time
// as long as all checks happen within the (one hour) window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_pushes_for_one_token_give_one_send_one_queued_and_rejections() {
    const PUSHES: usize = 1000;
    let limiter = Arc::new(limiter(3600, 7200));
    let barrier = Arc::new(tokio::sync::Barrier::new(PUSHES));
    let tasks: Vec<_> = (0..PUSHES)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                limiter.check(TOKEN)
            })
        })
        .collect();

    let (mut sent, mut queued, mut rejected) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Decision::Send => sent += 1,
            Decision::SendAt(_) => queued += 1,
            Decision::Reject => rejected += 1,
        }
    }
    assert_eq!((sent, queued, rejected), (1, 1, 998));
}

/// Two threads push for the same fresh token at once, many times over: each time one push is
/// sent and the other queued, whichever of them read the clock first.
#[test]
fn two_pushes_racing_for_a_new_token_give_one_send_and_one_queued() {
    const ROUNDS: usize = 20_000;
    let limiter = Arc::new(limiter(3600, 7200));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let racer = || {
        let limiter = Arc::clone(&limiter);
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            let mut decisions = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                barrier.wait();
                // Long tokens: hashing one takes a while, as a burst of real pushes would.
                decisions.push(limiter.check(&format!("{round:0>4096}")));
            }
            decisions
        })
    };
    let (a, b) = (racer(), racer());
    let (Ok(a), Ok(b)) = (a.join(), b.join()) else {
        panic!("a racing thread panicked");
    };
    let lost = a
        .iter()
        .zip(&b)
        .filter(|pair| {
            !matches!(
                pair,
                (Decision::Send, Decision::SendAt(_)) | (Decision::SendAt(_), Decision::Send)
            )
        })
        .count();
    assert_eq!(lost, 0, "rounds without one send and one queued push");
}

#[tokio::test(start_paused = true)]
async fn the_sweep_drops_old_entries_and_keeps_live_and_queued_ones() {
    let limiter = limiter(20, 60);
    assert_eq!(limiter.check("old"), Decision::Send);
    assert_eq!(limiter.check("queued"), Decision::Send);
    sleep(Duration::from_secs(50)).await;
    // Sent 50 s after the first pushes, then a second push queues it until 70 s.
    assert_eq!(limiter.check("queued"), Decision::Send);
    assert!(matches!(limiter.check("queued"), Decision::SendAt(_)));
    sleep(Duration::from_secs(5)).await;
    assert_eq!(limiter.check("live"), Decision::Send);

    sleep(Duration::from_secs(10)).await; // at 65 s: "old" was last sent 65 s ago
    assert_eq!(limiter.sweep(), 1);
    assert_eq!(limiter.len(), 2);
    assert_eq!(
        limiter.check("old"),
        Decision::Send,
        "the old entry is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweep_never_drops_an_entry_younger_than_the_window() {
    // A cleanup interval shorter than the window must not cut a window short.
    let limiter = limiter(20, 5);
    assert_eq!(limiter.check(TOKEN), Decision::Send);
    sleep(Duration::from_secs(10)).await;
    assert_eq!(limiter.sweep(), 0);
    assert!(matches!(limiter.check(TOKEN), Decision::SendAt(_)));
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_runs_on_its_interval_and_stops_on_shutdown() {
    let limiter = Arc::new(limiter(1, 10));
    let shutdown = CancellationToken::new();
    let sweeper = limiter.spawn_sweeper(shutdown.clone());
    let start = Instant::now();

    assert_eq!(limiter.check("early"), Decision::Send);
    tokio::time::sleep_until(start + Duration::from_secs(5)).await;
    assert_eq!(limiter.check("late"), Decision::Send);

    // The sweep at 10 s drops "early" (10 s old) and keeps "late" (5 s old).
    tokio::time::sleep_until(start + Duration::from_millis(10_500)).await;
    assert_eq!(limiter.len(), 1);
    // At 15 s "late" is old enough, but nothing sweeps between ticks.
    tokio::time::sleep_until(start + Duration::from_secs(19)).await;
    assert_eq!(limiter.len(), 1);
    // The sweep at 20 s drops it.
    tokio::time::sleep_until(start + Duration::from_millis(20_500)).await;
    assert_eq!(limiter.len(), 0);

    shutdown.cancel();
    assert!(tokio::time::timeout(Duration::from_secs(1), sweeper)
        .await
        .is_ok());
    // Stopped: an entry that would be swept later stays.
    assert_eq!(limiter.check("after"), Decision::Send);
    sleep(Duration::from_secs(60)).await;
    assert_eq!(limiter.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_ends_when_the_limiter_is_dropped() {
    let limiter = Arc::new(limiter(1, 10));
    let sweeper = limiter.spawn_sweeper(CancellationToken::new());
    drop(limiter);
    assert!(tokio::time::timeout(Duration::from_secs(30), sweeper)
        .await
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dead_token_is_remembered_until_its_time_is_up() {
    let dead = DeadTokens::new(Duration::from_secs(60));
    dead.mark_dead(TOKEN);
    assert!(dead.is_dead(TOKEN));
    assert!(!dead.is_dead(OTHER));

    sleep(Duration::from_secs(59)).await;
    assert!(dead.is_dead(TOKEN));
    assert_eq!(dead.sweep(), 0);

    sleep(Duration::from_secs(1)).await;
    assert!(!dead.is_dead(TOKEN));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead.sweep(), 1);
    assert_eq!(dead.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn marking_a_dead_token_again_restarts_its_time() {
    let dead = DeadTokens::new(Duration::from_secs(60));
    dead.mark_dead(TOKEN);
    sleep(Duration::from_secs(40)).await;
    dead.mark_dead(TOKEN);
    sleep(Duration::from_secs(40)).await;
    assert!(dead.is_dead(TOKEN));
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_dead_token_is_alive() {
    let dead = DeadTokens::new(Duration::from_secs(60));
    dead.mark_dead(TOKEN);
    dead.mark_dead(OTHER);
    dead.forget(TOKEN);
    assert!(!dead.is_dead(TOKEN));
    assert!(dead.is_dead(OTHER));
    assert_eq!(dead.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_zero_remember_time_switches_the_dead_token_memory_off() {
    let dead = Arc::new(DeadTokens::new(Duration::ZERO));
    dead.mark_dead(TOKEN);
    assert!(!dead.is_dead(TOKEN));
    assert_eq!(dead.len(), 0);
    let sweeper = dead.spawn_sweeper(CancellationToken::new());
    assert!(tokio::time::timeout(Duration::from_secs(1), sweeper)
        .await
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_dead_token_sweeper_drops_expired_tokens_and_stops_on_shutdown() {
    let dead = Arc::new(DeadTokens::new(Duration::from_secs(30)));
    let shutdown = CancellationToken::new();
    let sweeper = dead.spawn_sweeper(shutdown.clone());
    let start = Instant::now();
    dead.mark_dead(TOKEN);

    tokio::time::sleep_until(start + Duration::from_secs(29)).await;
    assert_eq!(dead.len(), 1);
    tokio::time::sleep_until(start + Duration::from_secs(31)).await;
    assert_eq!(dead.len(), 0);

    shutdown.cancel();
    assert!(tokio::time::timeout(Duration::from_secs(1), sweeper)
        .await
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_dead_token_memory_keeps_the_newest_entries_up_to_its_cap() {
    let dead = DeadTokens::new(Duration::from_secs(3600)).with_max_entries(10_000);
    let mut buf = String::new();
    for n in 0..100_000 {
        dead.mark_dead(token(n, &mut buf));
    }
    assert_eq!(dead.len(), 10_000);
    assert!(dead.is_dead(token(99_999, &mut buf)));
    assert!(dead.is_dead(token(90_000, &mut buf)));
    assert!(!dead.is_dead(token(89_999, &mut buf)));
    assert!(!dead.is_dead(token(0, &mut buf)));
    // Marking the same token over and over keeps one entry and never grows past the cap.
    for _ in 0..50_000 {
        dead.mark_dead(TOKEN);
    }
    assert!(dead.len() <= 10_000);
    assert!(dead.is_dead(TOKEN));
}

#[tokio::test(start_paused = true)]
async fn the_sweep_drops_only_the_expired_front() {
    let dead = DeadTokens::new(Duration::from_secs(60));
    let mut buf = String::new();
    for n in 0..1_000 {
        dead.mark_dead(token(n, &mut buf));
    }
    sleep(Duration::from_secs(30)).await;
    for n in 1_000..1_500 {
        dead.mark_dead(token(n, &mut buf));
    }
    sleep(Duration::from_secs(31)).await;
    assert_eq!(dead.sweep(), 1_000);
    assert_eq!(dead.len(), 500);
    assert!(dead.is_dead(token(1_499, &mut buf)));
}

/// A 64-hex token, like an APNS device token, different for every `n`.
fn token(n: u64, buf: &mut String) -> &str {
    buf.clear();
    let mixed = u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let _ = write!(buf, "{mixed:032x}{:032x}", u128::from(n));
    buf
}

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// One million tokens in one test; run it with `--nocapture` to see the figures.
#[tokio::test(start_paused = true)]
async fn a_million_cached_tokens_cost_well_under_a_hundred_bytes_each() {
    const TOKENS: u64 = 1_000_000;
    let limiter = limiter(20, 300);
    let mut buf = String::with_capacity(64);
    let rss_before = rss_bytes();
    for n in 0..TOKENS {
        assert_eq!(limiter.check(token(n, &mut buf)), Decision::Send);
    }
    let rss_after = rss_bytes();
    assert_eq!(limiter.len(), TOKENS as usize);

    let per_token = limiter.table_bytes() as f64 / TOKENS as f64;
    println!(
        "ratelimit: {TOKENS} tokens, table {} bytes, {per_token:.1} bytes per token",
        limiter.table_bytes()
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "ratelimit: RSS grew by {} bytes, {:.1} bytes per token",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / TOKENS as f64
        );
    }
    assert!(per_token < 60.0, "{per_token:.1} bytes per token");

    // After a sweep the table is reused: refilling it with new tokens does not grow it.
    let table_after_first_fill = limiter.table_bytes();
    let rss_after_first_fill = rss_bytes();
    for cycle in 1..=2u64 {
        sleep(Duration::from_secs(300)).await;
        assert_eq!(limiter.sweep(), TOKENS as usize);
        assert_eq!(limiter.len(), 0);
        for n in cycle * TOKENS..(cycle + 1) * TOKENS {
            assert_eq!(limiter.check(token(n, &mut buf)), Decision::Send);
        }
        assert_eq!(limiter.len(), TOKENS as usize);
        println!(
            "ratelimit: after sweep and refill {cycle}: table {} bytes, RSS {:?}",
            limiter.table_bytes(),
            rss_bytes()
        );
        assert_eq!(limiter.table_bytes(), table_after_first_fill);
    }
    if let (Some(first), Some(last)) = (rss_after_first_fill, rss_bytes()) {
        // A regrown table would add another 50 MB; the margin covers the other tests' threads.
        assert!(last <= first + 8 * 1024 * 1024, "RSS {first} -> {last}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reconfigured_limiter_keeps_its_tokens_and_applies_the_new_window() {
    let before = limiter(20, 300);
    let first = Instant::now();
    assert_eq!(before.check(TOKEN), Decision::Send);

    // A reload shortens the window to 5 s: the token's last send is remembered …
    let after = before.reconfigured(RatelimitConfig {
        enabled: true,
        window: Duration::from_secs(5),
        cleanup_interval: Duration::from_secs(300),
    });
    drop(before);
    assert_eq!(after.len(), 1);
    sleep(Duration::from_secs(1)).await;
    // … and the new window counts from it.
    assert_eq!(
        after.check(TOKEN),
        Decision::SendAt(first + Duration::from_secs(5))
    );
    assert_eq!(after.check(TOKEN), Decision::Reject);
    // A token it never saw is sent at once.
    assert_eq!(after.check(OTHER), Decision::Send);
}

/// A reload applies `deadTokens.*` to the modules it keeps, as it does for their ratelimit: a
/// lower `maxEntries` holds at once, and `remember: "0s"` stops answering the tokens remembered
/// before (the way back after a wrong topic made the provider call live tokens dead).
#[tokio::test]
async fn a_reload_applies_new_dead_token_settings_to_the_modules_it_keeps() {
    use fpush::modules::{self, Admitting, ModuleSet};
    use fpush::ratelimit::Admission;
    use fpush_traits::{DeadTokenReason, PushError};

    let metrics = fpush::metrics::Metrics::new();
    let build = |dead_tokens: &str, previous: Option<&ModuleSet>| {
        let text = format!(
            r#"{{
  "component": {{ "componentHostname": "push.example.org", "componentKey": "secret",
                  "serverHostname": "127.0.0.1", "serverPort": 5347 }},
  "deadTokens": {dead_tokens},
  "pushModules": {{ "demo": {{ "type": "demo", "is_default_module": true }} }}
}}"#
        );
        let loaded = fpush::config::parse(&text, &modules::platforms()).unwrap();
        modules::build(&loaded.settings, &metrics, previous).unwrap()
    };
    let dead_tokens = |set: &ModuleSet| set.gauges()[0].dead_tokens;
    let is_known_dead = |set: &ModuleSet, token: &str| {
        let module = set.lookup(None).unwrap();
        matches!(module.admit(token), Admitting::Now(Admission::KnownDead))
    };

    let first = build(r#"{ "maxEntries": 10 }"#, None);
    let dead = Err(PushError::TokenInvalid(DeadTokenReason::Unregistered));
    let demo = first.lookup(None).unwrap().clone();
    for n in 0..10 {
        demo.settle(&format!("dead-{n}"), &dead, Duration::ZERO, None);
    }
    assert_eq!(dead_tokens(&first), 10);

    let capped = build(r#"{ "maxEntries": 2 }"#, Some(&first));
    assert_eq!(
        dead_tokens(&first),
        10,
        "nothing changes before it is in service"
    );
    capped.spawn_sweepers(Some(&first));
    assert_eq!(
        dead_tokens(&capped),
        2,
        "the lower cap holds after the reload"
    );
    assert!(is_known_dead(&capped, "dead-9"), "the newest are kept");

    let off = build(r#"{ "remember": "0s" }"#, Some(&capped));
    off.spawn_sweepers(Some(&capped));
    assert!(
        !is_known_dead(&off, "dead-9"),
        "remember 0s: nothing is dead"
    );
    assert_eq!(dead_tokens(&off), 0);
}

#[tokio::test(start_paused = true)]
async fn a_limiter_a_reload_switches_off_forgets_the_tokens_it_no_longer_asks() {
    let before = limiter(20, 300);
    assert_eq!(before.check(TOKEN), Decision::Send);
    assert_eq!(before.check(OTHER), Decision::Send);
    sleep(Duration::from_secs(1)).await;
    let after = Arc::new(before.reconfigured(RatelimitConfig {
        enabled: false,
        ..RatelimitConfig::default()
    }));
    // Nothing changes before the reload is in service: it may still be refused.
    assert_eq!(before.len(), 2);
    drop(before);
    // A disabled limiter has no sweeper: what it kept would stay (and be shown) until a restart.
    after.spawn_sweeper(CancellationToken::new()).await.unwrap();
    assert_eq!(after.len(), 0);
    assert_eq!(after.check(TOKEN), Decision::Send);
}

/// A reload that changes `deadTokens.remember` applies it to the tokens remembered already
/// (counted from when each was declared dead) and to those declared dead afterwards.
#[tokio::test(start_paused = true)]
async fn a_shorter_remember_applies_to_remembered_tokens_and_to_new_ones() {
    let before = DeadTokens::new(Duration::from_secs(3600));
    before.mark_dead(TOKEN);
    sleep(Duration::from_secs(120)).await;
    let after = Arc::new(before.reconfigured(Duration::from_secs(60), 1_000_000));
    assert!(
        after.is_dead(TOKEN),
        "nothing changes before it is in service"
    );
    let _sweeper = after.spawn_sweeper(CancellationToken::new());
    assert!(
        !after.is_dead(TOKEN),
        "declared dead 120 s ago: over under a 60 s memory"
    );

    // A push that started before the reload ends with the memory it started with.
    before.mark_dead("late");
    after.mark_dead(OTHER);
    sleep(Duration::from_secs(59)).await;
    assert!(after.is_dead(OTHER));
    sleep(Duration::from_secs(2)).await;
    assert!(
        !after.is_dead(OTHER),
        "a token declared dead after the reload is remembered for the new 60 s"
    );
    assert!(!after.is_dead("late"), "whichever memory took it");
}

/// A reload that lengthens `ratelimitTime` makes a new limiter sharing the old one's map; the
/// old limiter's sweeper runs on (with the old `keep`) while anything holds the old module, e.g.
/// a push queued before the reload, and must not drop entries whose new window is still open.
#[tokio::test(start_paused = true)]
async fn the_old_sweeper_does_not_cut_short_a_window_a_reload_lengthened() {
    // Before the reload: window 20 s, entries kept 30 s (swept every 30 s).
    let before = Arc::new(limiter(20, 30));
    let _old_sweeper = before.spawn_sweeper(CancellationToken::new());
    let start = Instant::now();
    assert_eq!(before.check(TOKEN), Decision::Send);
    sleep(Duration::from_secs(14)).await;
    // A push for another token, queued until 34 s: its task holds the old module until then.
    assert_eq!(before.check(OTHER), Decision::Send);
    assert!(matches!(before.check(OTHER), Decision::SendAt(_)));
    sleep(Duration::from_secs(1)).await;
    // The reload at 15 s: window 120 s.
    let after = Arc::new(before.reconfigured(RatelimitConfig {
        enabled: true,
        window: Duration::from_secs(120),
        cleanup_interval: Duration::from_secs(30),
    }));
    let _new_sweeper = after.spawn_sweeper(CancellationToken::new());
    tokio::time::sleep_until(start + Duration::from_secs(31)).await;
    // TOKEN was sent at 0 s: under the new 120 s window its next push waits until 120 s.
    assert_eq!(
        after.check(TOKEN),
        Decision::SendAt(start + Duration::from_secs(120)),
        "the token's window (120 s from its send at 0 s) was cut short at 30 s"
    );
    drop(before);
}

/// A token the provider throttled (429, `hold`) stays held for the whole pause when a reload
/// switches the module's ratelimit off meanwhile (the disabled limiter used to ask only its
/// `holding` flag, which only a hold taken while disabled set).
#[tokio::test(start_paused = true)]
async fn a_hold_survives_a_reload_that_switches_the_ratelimit_off() {
    let before = Arc::new(limiter(20, 300));
    assert_eq!(before.check(TOKEN), Decision::Send);
    // The provider answers 429 with Retry-After: 60 s.
    before.hold(TOKEN, Duration::from_secs(60));
    let after = Arc::new(before.reconfigured(RatelimitConfig {
        enabled: false,
        ..RatelimitConfig::default()
    }));
    drop(before);
    let _sweeper = after.spawn_sweeper(CancellationToken::new());
    sleep(Duration::from_secs(10)).await;
    assert!(after.is_held(TOKEN), "the pause is not over");
    assert_eq!(
        after.check(TOKEN),
        Decision::Reject,
        "sent 10 s into the provider's 60 s pause"
    );
}

/// A token held while the ratelimit was off stays held when a reload switches it on, and its
/// first push after the pause goes out at once, as after a hold taken while it was on.
#[tokio::test(start_paused = true)]
async fn a_hold_taken_while_off_ends_with_its_pause_once_a_reload_switches_the_ratelimit_on() {
    let off = Arc::new(Ratelimiter::new(RatelimitConfig {
        enabled: false,
        ..RatelimitConfig::default()
    }));
    // The provider answers 429 with Retry-After: 60 s.
    off.hold(TOKEN, Duration::from_secs(60));
    let on = Arc::new(off.reconfigured(RatelimitConfig::default()));
    sleep(Duration::from_secs(30)).await;
    assert!(on.is_held(TOKEN));
    assert_eq!(on.check(TOKEN), Decision::Reject, "held");
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        on.check(TOKEN),
        Decision::Send,
        "no push was sent for 60 s: the pause is over"
    );
}
