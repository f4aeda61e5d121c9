//! The scenarios of the performance budget (a–f), the distant-provider profiles and the burst
//! (g–i), pushes by node for stored registrations against the same load with the token in the
//! node (j–k), and the CI smoke run, as data.

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

/// Registrations pre-loaded for scenario j.
pub const P2_REGISTRATIONS: u64 = 1_000_000;

/// Answers at once, with Apple's stream limit.
pub const LOOPBACK: Provider = Provider {
    delay: Duration::ZERO,
    streams: 1_000,
};

/// How a push names its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The device token is the `node`, `pushModule` names the module (Monal, Quicksy iOS).
    TokenInNode,
    /// The `node` and `secret` of one of this many p2 registrations pre-loaded into a SQLite
    /// store (Conversations-family apps).
    P2 { registrations: u64 },
}

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
    pub door: Door,
}

impl Scenario {
    pub fn by_name(name: &str) -> Option<Scenario> {
        all().into_iter().chain([smoke()]).find(|s| s.name == name)
    }
}

/// Scenarios a–k.
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
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
            door: Door::TokenInNode,
        },
        Scenario {
            name: "j",
            what: "p2: 1M registrations in SQLite, 10,000 pushes/s by node for 10 s, nodes drawn from all",
            pushes: 100_000,
            tokens: Tokens::Random(P2_REGISTRATIONS),
            pacing: Pacing::Rate(10_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: LOOPBACK,
            door: Door::P2 {
                registrations: P2_REGISTRATIONS,
            },
        },
        // j's yardstick: the same pushes with the token in the node.
        Scenario {
            name: "k",
            what: "as j with the token in the node: 10,000 pushes/s for 10 s, tokens drawn from 1M",
            pushes: 100_000,
            tokens: Tokens::Random(P2_REGISTRATIONS),
            pacing: Pacing::Rate(10_000),
            ratelimit: None,
            drain: Duration::from_secs(15),
            provider: LOOPBACK,
            door: Door::TokenInNode,
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
        door: Door::TokenInNode,
    }
}
