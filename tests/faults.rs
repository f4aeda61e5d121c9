//! The `fpush` binary against APNS and FCM test servers that misbehave: they stall, answer
//! slowly, reset the connection mid-request, fail with 5xx in bursts, send GOAWAY, refuse TLS.
//! Every push must be answered exactly once, within the configured timeout, with the reply type
//! the house table gives; the provider may see a push twice only where a retry is allowed (it
//! cannot have accepted the first attempt); fpush recovers when the provider does; and the
//! provider never sees more than `limits.maxConcurrentPushes` requests at once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fpush_testkit::apns::{ApnsAnswer, ApnsHarness, Fault};
use fpush_testkit::fcm::{FcmAnswer, FcmServer};

/// The APNS request timeout used by these tests.
const TIMEOUT: Duration = Duration::from_millis(600);

struct Apns {
    provider: ApnsHarness,
    _server: FakeXmppServer,
    fpush: Daemon,
    link: ComponentLink,
}

async fn start_apns(limits: &str) -> Apns {
    let provider = ApnsHarness::start().await.expect("APNS test server");
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let fpush = Daemon::start(&settings(
        &server,
        &apns_modules(&provider, &format!("{}ms", TIMEOUT.as_millis())),
        limits,
    ));
    let link = connect(&mut server).await;
    Apns {
        provider,
        _server: server,
        fpush,
        link,
    }
}

impl Apns {
    async fn push(&mut self, id: &str, token: &str) {
        self.link.send(&push_iq(id, token, None)).await.unwrap();
    }

    /// Sends one push and returns its reply and how long it took.
    async fn round_trip(&mut self, id: &str, token: &str) -> (Stanza, Duration) {
        let started = Instant::now();
        self.push(id, token).await;
        let reply = self.link.next_stanza(WAIT).await.unwrap();
        (reply, started.elapsed())
    }

    fn calls(&self, token: &str) -> usize {
        self.provider.server.count_for(token)
    }

    /// A fresh push is delivered again: the provider connection recovered.
    async fn delivers(&mut self, token: &str) {
        let (reply, _) = self.round_trip(token, token).await;
        assert_result(&reply, token);
        assert_eq!(self.calls(token), 1);
    }
}

fn token(name: &str) -> String {
    // Readable (the test servers' `ok…` convention: delivered unless an answer is queued);
    // unique per test and name.
    format!("ok-{name}-{:08x}", std::process::id())
}

#[tokio::test]
async fn a_stalled_apns_answer_times_out_with_remote_server_timeout_and_is_not_resent() {
    let mut t = start_apns("").await;
    let stalled = token("stalled");
    t.provider
        .server
        .enqueue(&stalled, [ApnsAnswer::fault(Fault::Stall)]);
    let (reply, took) = t.round_trip("s1", &stalled).await;
    assert_error(&reply, "s1", "wait", "remote-server-timeout");
    assert!(
        took >= TIMEOUT - Duration::from_millis(50) && took < TIMEOUT + Duration::from_secs(1),
        "answered after {took:?} with a {TIMEOUT:?} timeout"
    );
    // A timeout may have been delivered: never retried.
    assert_eq!(t.calls(&stalled), 1);
    t.delivers(&token("after-stall")).await;
    t.fpush.assert_no_panic();
}

#[tokio::test]
async fn slow_apns_answers_are_delivered_within_the_timeout_and_time_out_beyond_it() {
    let mut t = start_apns("").await;
    let (slow, too_slow) = (token("slow"), token("too-slow"));
    t.provider
        .server
        .enqueue(&slow, [ApnsAnswer::ok().delayed(TIMEOUT / 2)]);
    t.provider
        .server
        .enqueue(&too_slow, [ApnsAnswer::ok().delayed(TIMEOUT * 3)]);
    t.push("slow", &slow).await;
    t.push("too-slow", &too_slow).await;
    let started = Instant::now();
    let replies = by_id(&t.link.collect(2, WAIT).await.unwrap());
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1));
    assert_result(&replies["slow"][0], "slow");
    assert_error(
        &replies["too-slow"][0],
        "too-slow",
        "wait",
        "remote-server-timeout",
    );
    assert_eq!((t.calls(&slow), t.calls(&too_slow)), (1, 1));
    t.fpush.assert_no_panic();
}

#[tokio::test]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn an_apns_reset_mid_request_is_answered_wait_and_nothing_is_sent_twice() {
    let mut t = start_apns("").await;
    // Three pushes in flight on the connection the reset will kill.
    let slow: Vec<String> = (0..3).map(|i| token(&format!("inflight{i}"))).collect();
    for (i, slow) in slow.iter().enumerate() {
        t.provider
            .server
            .enqueue(slow, [ApnsAnswer::ok().delayed(Duration::from_secs(5))]);
        t.push(&format!("in-flight-{i}"), slow).await;
    }
    // Let them reach the provider before the reset.
    while slow.iter().any(|s| t.calls(s) == 0) {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reset = token("reset");
    t.provider
        .server
        .enqueue(&reset, [ApnsAnswer::fault(Fault::DropConnection)]);
    t.push("reset", &reset).await;
    let replies = by_id(&t.link.collect(4, WAIT).await.unwrap());
    assert_eq!(replies.len(), 4, "{replies:?}");
    for (id, replies) in &replies {
        assert_eq!(replies.len(), 1, "{id} answered {} times", replies.len());
        // The request was out: the provider may have accepted it, so it is not retried and
        // the server is told to try later.
        assert_error(&replies[0], id, "wait", "internal-server-error");
    }
    assert_eq!(t.calls(&reset), 1);
    for slow in &slow {
        assert_eq!(t.calls(slow), 1, "{slow} was sent again after the reset");
    }
    t.delivers(&token("after-reset")).await;
    t.fpush.assert_no_panic();
}

#[tokio::test]
async fn bursts_of_apns_5xx_are_retried_once_then_answered_wait() {
    let mut t = start_apns("").await;
    let failing: Vec<String> = (0..8).map(|i| token(&format!("burst{i}"))).collect();
    let flaky: Vec<String> = (0..4).map(|i| token(&format!("flaky{i}"))).collect();
    for f in &failing {
        t.provider.server.enqueue(
            f,
            [
                ApnsAnswer::error(503, "ServiceUnavailable"),
                ApnsAnswer::error(500, "InternalServerError"),
            ],
        );
        t.push(f, f).await;
    }
    for f in &flaky {
        t.provider
            .server
            .enqueue(f, [ApnsAnswer::error(503, "ServiceUnavailable")]);
        t.push(f, f).await;
    }
    let replies = by_id(&t.link.collect(12, WAIT).await.unwrap());
    for f in &failing {
        assert_eq!(replies[f].len(), 1);
        assert_error(&replies[f][0], f, "wait", "internal-server-error");
        // A 5xx means Apple did not take the push: one retry is allowed, not more.
        assert_eq!(t.calls(f), 2, "{f}");
    }
    for f in &flaky {
        assert_eq!(replies[f].len(), 1);
        assert_result(&replies[f][0], f);
        assert_eq!(t.calls(f), 2, "{f}");
    }
    t.delivers(&token("after-burst")).await;
    t.fpush.assert_no_panic();
}

#[tokio::test]
async fn an_apns_goaway_is_survived_without_sending_anything_twice() {
    let mut t = start_apns("").await;
    let first = token("goaway");
    t.provider
        .server
        .enqueue(&first, [ApnsAnswer::fault(Fault::GoAway)]);
    let (reply, _) = t.round_trip("goaway", &first).await;
    assert_result(&reply, "goaway");
    assert_eq!(t.calls(&first), 1);
    let connections = t.provider.server.tls().connections_accepted();
    // Later pushes go out on a new connection, each once.
    let later: Vec<String> = (0..5).map(|i| token(&format!("after-goaway{i}"))).collect();
    for l in &later {
        t.push(l, l).await;
    }
    let replies = by_id(&t.link.collect(5, WAIT).await.unwrap());
    for l in &later {
        assert_result(&replies[l][0], l);
        assert_eq!(t.calls(l), 1);
    }
    assert!(t.provider.server.tls().connections_accepted() > connections);
    t.fpush.assert_no_panic();
}

#[tokio::test]
async fn refused_apns_tls_is_answered_wait_and_fpush_recovers_when_it_is_accepted() {
    let mut t = start_apns("").await;
    t.provider.server.tls().set_refuse_tls(true);
    let refused = token("refused");
    let (reply, took) = t.round_trip("refused", &refused).await;
    assert_error(&reply, "refused", "wait", "internal-server-error");
    assert!(took < TIMEOUT * 2 + Duration::from_secs(1), "took {took:?}");
    assert_eq!(t.calls(&refused), 0);
    t.provider.server.tls().set_refuse_tls(false);
    t.delivers(&token("after-tls")).await;
    t.fpush.assert_no_panic();
}

#[tokio::test]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn apns_never_sees_more_than_max_concurrent_pushes_in_flight() {
    const MAX: usize = 4;
    const HOLD: Duration = Duration::from_millis(250);
    let mut t = start_apns(&format!(r#""limits": {{ "maxConcurrentPushes": {MAX} }},"#)).await;
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    t.provider.server.set_responder(move |_| {
        seen.lock().unwrap().push(Instant::now());
        Some(ApnsAnswer::ok().delayed(HOLD))
    });
    // Waves of six, faster than the provider answers.
    let mut sent = Vec::new();
    for wave in 0..5 {
        for i in 0..6 {
            let id = format!("w{wave}-{i}");
            t.push(&id, &token(&id)).await;
            sent.push(id);
        }
        tokio::time::sleep(HOLD / 3).await;
    }
    let replies = by_id(&t.link.collect(sent.len(), WAIT).await.unwrap());
    let mut delivered = 0;
    for id in &sent {
        let reply = &replies[id];
        assert_eq!(reply.len(), 1, "{id}");
        if reply[0].kind() == Some("result") {
            delivered += 1;
            assert_eq!(t.calls(&token(id)), 1, "{id}");
        } else {
            // Over the bound: refused at once, never sent.
            assert_error(&reply[0], id, "wait", "resource-constraint");
            assert_eq!(t.calls(&token(id)), 0, "{id}");
        }
    }
    // A request is answered HOLD after it arrives, and a slot frees only then: at most MAX
    // arrivals fit in any window shorter than HOLD.
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), delivered);
    let window = HOLD - Duration::from_millis(10);
    let busiest = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|at| **at >= *start && **at - *start < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(busiest, MAX, "provider calls in flight at once");
    assert!(delivered < sent.len(), "the bound was never reached");
    t.fpush.assert_no_panic();
}

// ---- FCM ----

struct Fcm {
    provider: FcmServer,
    _server: FakeXmppServer,
    fpush: Daemon,
    link: ComponentLink,
}

async fn start_fcm() -> Fcm {
    let provider = FcmServer::start().await.expect("FCM test server");
    let modules = format!(
        r#"{{ "fcm": {{ "type": "google", "is_default_module": true,
              "ratelimit": {{ "enabled": false }},
              "fcm": {{ "fcmSecretPath": {secret:?}, "endpoint": "{endpoint}", "caFilePath": {ca:?},
                        "requestTimeout": "{timeout}ms" }} }} }}"#,
        secret = provider.service_account_file(),
        endpoint = provider.endpoint(),
        ca = provider.ca_file(),
        timeout = TIMEOUT.as_millis(),
    );
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let fpush = Daemon::start(&settings(&server, &modules, ""));
    let link = connect(&mut server).await;
    Fcm {
        provider,
        _server: server,
        fpush,
        link,
    }
}

impl Fcm {
    fn calls(&self, token: &str) -> usize {
        self.provider
            .messages()
            .iter()
            .filter(|m| m.device_token.as_deref() == Some(token))
            .count()
    }
}

#[tokio::test]
async fn fcm_faults_get_the_right_reply_within_the_timeout_and_retries_only_where_allowed() {
    let mut t = start_fcm().await;
    // Token prefixes choose the test server's answer (see fpush_testkit::fcm::answers).
    // (token, reply type, condition, provider calls allowed)
    let cases = [
        ("stall-1", "wait", "remote-server-timeout", 1),
        ("unavailable-1", "wait", "internal-server-error", 2),
        ("internal-1", "wait", "internal-server-error", 2),
        ("html-1", "wait", "internal-server-error", 2),
        ("throttled-1", "wait", "resource-constraint", 1),
        ("dead-1", "cancel", "item-not-found", 1),
        ("unavailable-once-1", "result", "", 2),
        ("ok-1", "result", "", 1),
    ];
    let started = Instant::now();
    for (token, ..) in &cases {
        t.link.send(&push_iq(token, token, None)).await.unwrap();
    }
    let replies = by_id(&t.link.collect(cases.len(), WAIT).await.unwrap());
    // Everything in parallel: the slowest is a timeout, or a failed try, a pause and a retry.
    assert!(
        started.elapsed() < TIMEOUT * 2 + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    for (token, kind, condition, calls) in cases {
        assert_eq!(replies[token].len(), 1, "{token}");
        if kind == "result" {
            assert_result(&replies[token][0], token);
        } else {
            assert_error(&replies[token][0], token, kind, condition);
        }
        assert_eq!(t.calls(token), calls, "provider calls for {token}");
    }
    // A reset mid-request (alone: it kills every stream of the connection). The request was
    // out, so it is not retried.
    t.link
        .send(&push_iq("reset-1", "reset-1", None))
        .await
        .unwrap();
    assert_error(
        &t.link.next_stanza(WAIT).await.unwrap(),
        "reset-1",
        "wait",
        "internal-server-error",
    );
    assert_eq!(t.calls("reset-1"), 1);
    // The reset cost the connection; the next push still goes through, once.
    t.link.send(&push_iq("after", "ok-2", None)).await.unwrap();
    assert_result(&t.link.next_stanza(WAIT).await.unwrap(), "after");
    assert_eq!(t.calls("ok-2"), 1);
    t.fpush.assert_no_panic();
}

#[tokio::test]
async fn an_fcm_goaway_is_survived_without_sending_anything_twice() {
    let mut t = start_fcm().await;
    t.provider.script([FcmAnswer::GoawayThenAccept]);
    t.link.send(&push_iq("g1", "goaway-1", None)).await.unwrap();
    assert_result(&t.link.next_stanza(WAIT).await.unwrap(), "g1");
    for i in 0..4 {
        let token = format!("after-goaway-{i}");
        t.link.send(&push_iq(&token, &token, None)).await.unwrap();
    }
    let replies = by_id(&t.link.collect(4, WAIT).await.unwrap());
    for i in 0..4 {
        let token = format!("after-goaway-{i}");
        assert_result(&replies[&token][0], &token);
        assert_eq!(t.calls(&token), 1);
    }
    assert_eq!(t.calls("goaway-1"), 1);
    t.fpush.assert_no_panic();
}

#[tokio::test]
async fn refused_fcm_tls_is_answered_wait_and_fpush_recovers() {
    let mut t = start_fcm().await;
    t.provider.tls_server().set_refuse_tls(true);
    t.link
        .send(&push_iq("r1", "refused-1", None))
        .await
        .unwrap();
    assert_error(
        &t.link.next_stanza(WAIT).await.unwrap(),
        "r1",
        "wait",
        "internal-server-error",
    );
    assert_eq!(t.calls("refused-1"), 0);
    t.provider.tls_server().set_refuse_tls(false);
    // The token endpoint is on the same server: a failed refresh is not tried again for 1 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t.link
        .send(&push_iq("r2", "ok-after-tls", None))
        .await
        .unwrap();
    assert_result(&t.link.next_stanza(WAIT).await.unwrap(), "r2");
    assert_eq!(t.calls("ok-after-tls"), 1);
    t.fpush.assert_no_panic();
}

#[tokio::test]
async fn a_slow_fcm_is_delivered_within_the_timeout() {
    let mut t = start_fcm().await;
    t.provider.set_answer_delay(TIMEOUT / 2);
    for i in 0..5 {
        t.link
            .send(&push_iq(&format!("s{i}"), &format!("slow-{i}"), None))
            .await
            .unwrap();
    }
    let replies = by_id(&t.link.collect(5, WAIT).await.unwrap());
    for i in 0..5 {
        assert_result(&replies[&format!("s{i}")][0], &format!("s{i}"));
        assert_eq!(t.calls(&format!("slow-{i}")), 1);
    }
    t.fpush.assert_no_panic();
}
