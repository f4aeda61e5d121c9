//! The scenarios of the performance budget (a–f), the distant-provider profiles and the burst
//! (g–i), and the CI smoke run, as data.

use std::time::Duration;

use crate::load::Tokens;

/// How the generator paces its pushes.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// As fast as this many pushes in flight allow.
    Window(u64),
    /// A fixed rate per second.
    Rate(u64),
    /// A fixed rate per second; halfway through, with pushes held at the provider, the
    /// connection is dropped and the reconnect accepted.
    RateWithDrop(u64),
}

/// How the benchmark's APNS server behaves: every answer waits `delay` (a provider's round
/// trip), and each connection allows `streams` requests at once.
#[derive(Debug, Clone, Copy)]
pub struct Provider {
    pub delay: Duration,
    pub streams: u32,
}

/// Answers at once, with Apple's stream limit.
pub const LOOPBACK: Provider = Provider {
    delay: Duration::ZERO,
    streams: 1_000,
};

/// One scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub pushes: u64,
    pub tokens: Tokens,
    pub pacing: Pacing,
    /// `None`: ratelimit off; `Some(window)`: on, with this `ratelimitTime`.
    pub ratelimit: Option<&'static str>,
    /// How long after the last push was written the generator waits for replies.
    pub drain: Duration,
    pub provider: Provider,
}

impl Scenario {
    pub fn by_name(name: &str) -> Option<Scenario> {
        all().into_iter().chain([smoke()]).find(|s| s.name == name)
    }
}

/// Scenarios a–i.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "a",
            what: "100k pushes, 10k tokens, ratelimit off, 1,000 in flight",
            pushes: 100_000,
            tokens: Tokens::Pool(10_000),
            pacing: Pacing::Window(1_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: LOOPBACK,
        },
        Scenario {
            name: "b",
            what: "100k pushes, 10k tokens, ratelimit 20s (10k queued for 20 s + 1,000 in flight)",
            pushes: 100_000,
            tokens: Tokens::Pool(10_000),
            // The second push of each token waits out its 20 s window: all 10k of them are in
            // flight at once, so the window leaves room for them plus 1,000.
            pacing: Pacing::Window(11_000),
            ratelimit: Some("20s"),
            drain: Duration::from_secs(35),
            provider: LOOPBACK,
        },
        Scenario {
            name: "c",
            what: "1M distinct tokens, one push each, ratelimit on (memory of the cache)",
            pushes: 1_000_000,
            tokens: Tokens::Distinct,
            pacing: Pacing::Window(1_000),
            ratelimit: Some("20s"),
            drain: Duration::from_secs(15),
            provider: LOOPBACK,
        },
        Scenario {
            name: "d",
            what: "2,000 pushes/s for 20 s, 10k tokens, ratelimit off (latency)",
            pushes: 40_000,
            tokens: Tokens::Pool(10_000),
            pacing: Pacing::Rate(2_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: LOOPBACK,
        },
        Scenario {
            name: "e",
            what: "2,000 pushes/s for 10 s; connection dropped at 5 s with pushes at the provider",
            pushes: 20_000,
            tokens: Tokens::Pool(10_000),
            pacing: Pacing::RateWithDrop(2_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: LOOPBACK,
        },
        Scenario {
            name: "f",
            what: "10,000 pushes/s for 10 s, 10k tokens, ratelimit off",
            pushes: 100_000,
            tokens: Tokens::Pool(10_000),
            pacing: Pacing::Rate(10_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: LOOPBACK,
        },
        Scenario {
            name: "g",
            what: "10,000 pushes/s for 10 s, provider 150 ms away with 1,000 streams per connection (APNS-like)",
            pushes: 100_000,
            tokens: Tokens::Pool(10_000),
            pacing: Pacing::Rate(10_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: Provider {
                delay: Duration::from_millis(150),
                streams: 1_000,
            },
        },
        Scenario {
            name: "h",
            what: "10,000 pushes/s for 10 s, provider 60 ms away with 100 streams per connection (FCM-like)",
            pushes: 100_000,
            tokens: Tokens::Pool(10_000),
            pacing: Pacing::Rate(10_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: Provider {
                delay: Duration::from_millis(60),
                streams: 100,
            },
        },
        Scenario {
            name: "i",
            what: "a burst: 10,000 pushes written at once, provider 150 ms away (1,000 streams)",
            pushes: 10_000,
            tokens: Tokens::Pool(10_000),
            pacing: Pacing::Window(10_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: Provider {
                delay: Duration::from_millis(150),
                streams: 1_000,
            },
        },
    ]
}

/// A few seconds' run for CI: every push must be answered.
pub fn smoke() -> Scenario {
    Scenario {
        name: "smoke",
        what: "2,000 pushes, 500 tokens, ratelimit off, 200 in flight",
        pushes: 2_000,
        tokens: Tokens::Pool(500),
        pacing: Pacing::Window(200),
        ratelimit: None,
        drain: Duration::from_secs(10),
        provider: LOOPBACK,
    }
}
