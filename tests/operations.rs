//! Operating fpush: `/metrics` counts exactly what happened (final outcomes add up to pushes
//! received, only possible label pairs exist, every counter from start-up), `/health` answers
//! while the process serves, `/ready` follows the component link, and SIGHUP reloads modules and
//! ratelimits without touching the link or losing a push.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` from the metrics listener: (status, body). Retries while fpush starts listening.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            socket.read_to_string(&mut response).await.unwrap();
            let status = response
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            return (status, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample whose name is `metric` and whose labels include all of `labels`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name_and_labels, value) = line.rsplit_once(' ')?;
        let (name, label_text) = match name_and_labels.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (name_and_labels, ""),
        };
        if name != metric {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")));
        if all {
            value.parse().ok()
        } else {
            None
        }
    })
}

fn pushes(text: &str, module: &str, outcome: &str) -> f64 {
    sample(
        text,
        "fpush_pushes_total",
        &[("module", module), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// The sum of every sample of `metric`.
fn total(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(metric))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The `(module, outcome)` pairs of `fpush_pushes_total`.
fn outcome_pairs(text: &str) -> HashSet<(String, String)> {
    let label = |labels: &str, key: &str| {
        labels
            .split(',')
            .find_map(|l| l.strip_prefix(&format!("{key}=\"")))
            .map(|v| v.trim_end_matches('"').to_owned())
            .unwrap_or_default()
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("fpush_pushes_total{"))
        .filter_map(|line| line.split_once('}'))
        .map(|(labels, _)| (label(labels, "module"), label(labels, "outcome")))
        .collect()
}

fn metrics_section(port: u16) -> String {
    format!(r#""metrics": {{ "listen": "127.0.0.1:{port}" }},"#)
}

#[tokio::test]
async fn metrics_count_exactly_the_outcomes_of_a_scripted_sequence() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let port = free_port();
    let _fpush = Daemon::start(&settings(
        &server,
        &demo_module(Some("30s"), "0s"),
        &metrics_section(port),
    ));
    let mut link = server.accept(WAIT).await.unwrap();

    // token-a: delivered, queued (30 s), ratelimited; token-b: delivered;
    // an unknown module; a malformed push.
    for (id, token, module) in [
        ("m1", "token-a", None),
        ("m2", "token-a", None),
        ("m3", "token-a", None),
        ("m4", "token-b", Some("demo")),
        ("m5", "token-c", Some("nosuchapp")),
    ] {
        link.send(&push_iq(id, token, module)).await.unwrap();
    }
    link.send(&push_iq("m6", "bad token", None)).await.unwrap();
    // m2 stays queued: five replies now.
    link.collect(5, WAIT).await.unwrap();

    let (status, text) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(pushes(&text, "demo", "delivered"), 2.0, "{text}");
    assert_eq!(pushes(&text, "demo", "ratelimited"), 1.0, "{text}");
    assert_eq!(pushes(&text, "", "unknown_module"), 1.0, "{text}");
    assert_eq!(pushes(&text, "", "bad_request"), 1.0, "{text}");
    assert_eq!(pushes(&text, "demo", "token_invalid"), 0.0, "{text}");
    assert_eq!(
        sample(&text, "fpush_pushes_queued_total", &[("module", "demo")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "fpush_pushes_received_total", &[("module", "demo")]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "fpush_pushes_received_total", &[("module", "")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "fpush_provider_answers_total",
            &[("module", "demo"), ("reason", "accepted")]
        ),
        Some(2.0),
        "{text}"
    );
    // Six received, one still queued: the five final outcomes add up.
    let finals = total(&text, "fpush_pushes_total");
    let received = total(&text, "fpush_pushes_received_total");
    assert_eq!((finals, received), (5.0, 6.0), "{text}");
    assert_eq!(
        sample(&text, "fpush_ratelimit_entries", &[("module", "demo")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "fpush_component_connected", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "fpush_provider_latency_seconds_count",
            &[("module", "demo")]
        ),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn every_counter_exists_from_start_up_with_only_possible_label_pairs() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let port = free_port();
    let _fpush = Daemon::start(&settings(
        &server,
        &demo_module(Some("30s"), "0s"),
        &metrics_section(port),
    ));
    let _link = server.accept(WAIT).await.unwrap();
    let (_, text) = http_get(port, "/metrics").await;

    for (metric, labels) in [
        ("fpush_config_reloads_total", vec![("result", "ok")]),
        ("fpush_config_reloads_total", vec![("result", "error")]),
        ("fpush_component_reconnects_total", vec![]),
        ("fpush_redis_fallbacks_total", vec![]),
        ("fpush_pushes_queued_total", vec![("module", "demo")]),
        ("fpush_pushes_received_total", vec![("module", "demo")]),
        ("fpush_pushes_received_total", vec![("module", "")]),
        (
            "fpush_token_refresh_failures_total",
            vec![("module", "demo")],
        ),
        (
            "fpush_provider_answers_total",
            vec![("module", "demo"), ("reason", "not_for_this_app")],
        ),
        ("fpush_wipe_guard_tripped", vec![("module", "demo")]),
    ] {
        let value = sample(&text, metric, &labels);
        assert_eq!(value, Some(0.0), "{metric} {labels:?}\n{text}");
    }
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(
        sample(&text, "fpush_build_info", &version),
        Some(1.0),
        "{text}"
    );
    let started = sample(&text, "process_start_time_seconds", &[]).unwrap_or(0.0);
    assert!(started > 1.6e9, "{text}");

    let pairs = outcome_pairs(&text);
    let has = |module: &str, outcome: &str| pairs.contains(&(module.into(), outcome.into()));
    for outcome in [
        "delivered",
        "ratelimited",
        "known_dead",
        "timeout",
        "misconfigured",
    ] {
        assert!(
            has("demo", outcome) && !has("", outcome),
            "{outcome}\n{text}"
        );
    }
    for outcome in ["unknown_module", "bad_request", "forbidden", "too_large"] {
        assert!(
            has("", outcome) && !has("demo", outcome),
            "{outcome}\n{text}"
        );
    }
    assert!(
        !pairs.iter().any(|(_, outcome)| outcome == "queued"),
        "{text}"
    );
    // A platform that reports nothing about itself gets no expiry or pool series.
    assert!(
        !text.contains("fpush_credential_expiry_timestamp_seconds{"),
        "{text}"
    );
    assert!(!text.contains("fpush_pool_connections{"), "{text}");
}

#[tokio::test]
async fn ready_follows_the_component_link_and_health_only_the_process() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let port = free_port();
    let _fpush = Daemon::start(&settings(
        &server,
        &demo_module(None, "0s"),
        &metrics_section(port),
    ));
    let link = server.accept(WAIT).await.unwrap();
    assert_eq!(http_get(port, "/ready").await.0, 200);
    assert_eq!(http_get(port, "/health").await.0, 200);

    // Drop the link and do not accept the reconnect yet: not ready, but alive.
    link.drop_connection();
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(port, "/ready").await.0 != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready never went 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(http_get(port, "/health").await.0, 200);

    let mut again = server.accept(WAIT).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(port, "/ready").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, text) = http_get(port, "/metrics").await;
    assert_eq!(
        sample(&text, "fpush_component_reconnects_total", &[]),
        Some(1.0),
        "{text}"
    );
    again.send(&push_iq("h1", "token-h", None)).await.unwrap();
    assert_result(&again.next_stanza(WAIT).await.unwrap(), "h1");
}

#[tokio::test]
async fn sighup_reloads_modules_and_ratelimits_without_reconnecting_or_losing_pushes() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let port = free_port();
    let extra = metrics_section(port);
    let fpush = Daemon::start(&settings(&server, &demo_module(None, "20ms"), &extra));
    let mut link = server.accept(WAIT).await.unwrap();

    // Ratelimit off: two pushes for one token are both delivered.
    for id in ["a1", "a2"] {
        link.send(&push_iq(id, "token-same", None)).await.unwrap();
    }
    for reply in link.collect(2, WAIT).await.unwrap() {
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    }

    // Pushes keep flowing while the new settings are loaded: the demo module gets a 30 s
    // ratelimit and a second module appears.
    let reloaded = r#"{
        "demo": { "type": "demo", "is_default_module": true, "demo": { "delay": "20ms" },
                  "ratelimit": { "ratelimitTime": "30s" } },
        "second": { "type": "demo", "ratelimit": { "enabled": false } }
    }"#;
    fpush.rewrite_settings(&settings(&server, reloaded, &extra));
    let mut sent = HashSet::new();
    for i in 0..40 {
        let id = format!("flow-{i}");
        link.send(&push_iq(&id, &format!("token-flow-{i}"), None))
            .await
            .unwrap();
        sent.insert(id);
        if i == 20 {
            fpush.reload();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answered = HashSet::new();
    for reply in link.collect(sent.len(), WAIT).await.unwrap() {
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
        let id = reply.attr("id").unwrap_or_default().to_owned();
        assert!(answered.insert(id.clone()), "{id} answered twice");
    }
    assert_eq!(answered, sent);

    // Wait for the reload to be in service, then: the new module answers …
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(port, "/metrics").await;
        if sample(&text, "fpush_config_reloads_total", &[("result", "ok")]) == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "reload not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    link.send(&push_iq("s1", "token-s", Some("second")))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "s1");
    // … and the demo module's new ratelimit holds: sent, queued, rejected.
    for id in ["r1", "r2", "r3"] {
        link.send(&push_iq(id, "token-limited", None))
            .await
            .unwrap();
    }
    let mut replies = link.collect(2, WAIT).await.unwrap();
    replies.sort_by_key(|r| r.attr("id").map(str::to_owned));
    assert_result(&replies[0], "r1");
    assert_error(&replies[1], "r3", "wait", "resource-constraint");

    // A broken file is refused and the running settings stay.
    fpush.rewrite_settings("{ \"component\": ");
    fpush.reload();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(port, "/metrics").await;
        if sample(&text, "fpush_config_reloads_total", &[("result", "error")]) == Some(1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "failed reload not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    link.send(&push_iq("s2", "token-s2", Some("second")))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "s2");

    // All of it on the first stream: the link was never re-established.
    let (_, text) = http_get(port, "/metrics").await;
    assert_eq!(
        sample(&text, "fpush_component_reconnects_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(link.stream_id, "fake-stream-1");
    let log = fpush.log_with("keeping the running settings");
    assert!(log.contains("keeping the running settings"), "{log}");
}
