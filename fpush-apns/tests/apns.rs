//! The APNS module against the in-process APNS test server: both auth modes, the request Apple
//! sees, every answer mapping, retries, JWT reuse and renewal, concurrency and timeouts.

use std::sync::Arc;
use std::time::Duration;

use fpush_apns::{unix_now, ApnsConfig, ApnsPush};
use fpush_testkit::apns::{ApnsAnswer, ApnsHarness, Fault, P12_PASSWORD, TOPIC};
use fpush_testkit::settings::with_keys;
use fpush_testkit::tls::P12Cipher;
use fpush_traits::{DeadTokenReason, PushError, PushNotification, PushSummary, PushTrait};
use serde_json::{json, Value};

const MODULE: &str = "apple-test";

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

async fn harness() -> ApnsHarness {
    ApnsHarness::start().await.unwrap()
}

/// The harness's `apns` block with `extra` keys added, as the module reads it.
fn with_extra(block: Value, extra: Value) -> ApnsConfig {
    let block = with_keys(block, json!({"requestTimeout": "5s"}));
    serde_json::from_value(with_keys(block, extra)).unwrap()
}

fn token_config(h: &ApnsHarness, extra: Value) -> ApnsConfig {
    with_extra(h.token_settings(), extra)
}

fn cert_config(h: &ApnsHarness, cipher: P12Cipher) -> ApnsConfig {
    with_extra(h.cert_settings(cipher).unwrap(), json!({}))
}

fn module(cfg: ApnsConfig) -> ApnsPush {
    ApnsPush::new(MODULE, cfg).unwrap()
}

fn push(token: &str) -> PushNotification {
    PushNotification::new(token, MODULE)
}

fn header<'a>(r: &'a fpush_testkit::apns::Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

// ---- delivery and the request Apple sees ----

#[tokio::test]
async fn token_auth_delivers_with_apples_headers_and_payload() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    log::set_max_level(log::LevelFilter::Debug); // the apns-id is read for the debug log only
    let delivered = module.send(&push(TOKEN)).await.unwrap();
    assert!(delivered.provider_id.is_some());

    let got = f.server.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!((r.status, r.token.as_str()), (200, TOKEN));
    assert_eq!(header(r, "apns-topic"), TOPIC);
    assert_eq!(header(r, "apns-push-type"), "alert");
    assert_eq!(header(r, "apns-priority"), "10");
    assert!(r.headers.get("apns-collapse-id").is_none());
    assert!(r.jwt.is_some() && !r.client_cert);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["aps"]["mutable-content"], 1);
    assert_eq!(body["aps"]["sound"], "default");
}

#[tokio::test]
async fn certificate_auth_delivers_with_modern_and_legacy_p12() {
    let f = harness().await;
    for cipher in [P12Cipher::Modern, P12Cipher::Legacy3Des] {
        let module = module(cert_config(&f, cipher));
        module.send(&push(TOKEN)).await.unwrap();
    }
    let got = f.server.received();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|r| r.client_cert && r.jwt.is_none() && r.status == 200));
}

#[tokio::test]
async fn expiration_is_now_plus_four_weeks_by_default_and_zero_when_configured() {
    let f = harness().await;
    let before = unix_now();
    module(token_config(&f, json!({})))
        .send(&push(TOKEN))
        .await
        .unwrap();
    let after = unix_now();
    module(token_config(&f, json!({"expiration": "0s"})))
        .send(&push(TOKEN))
        .await
        .unwrap();
    let got = f.server.received();
    let four_weeks = 28 * 24 * 3600;
    let sent: u64 = header(&got[0], "apns-expiration").parse().unwrap();
    assert!(
        (before + four_weeks..=after + four_weeks).contains(&sent),
        "{sent}"
    );
    assert_eq!(header(&got[1], "apns-expiration"), "0");
}

#[tokio::test]
async fn background_pushes_are_content_available_at_priority_5_with_collapse_id() {
    let f = harness().await;
    let module = module(token_config(
        &f,
        json!({"pushType": "background", "collapseId": "chat", "additionalData": {"k": "v"}}),
    ));
    module.send(&push(TOKEN)).await.unwrap();
    let r = &f.server.received()[0];
    assert_eq!(header(r, "apns-push-type"), "background");
    assert_eq!(header(r, "apns-priority"), "5");
    assert_eq!(header(r, "apns-collapse-id"), "chat");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"aps": {"content-available": 1}, "k": "v"})
    );
}

#[tokio::test]
async fn long_summaries_are_truncated_and_still_accepted() {
    let f = harness().await;
    let module = module(token_config(&f, json!({"alertFromSummary": true})));
    let mut n = push(TOKEN);
    n.summary = PushSummary {
        message_count: Some("1".into()),
        last_message_sender: Some("romeo@example.net".into()),
        last_message_body: Some("wherefore ".repeat(1000)),
    };
    module.send(&n).await.unwrap();
    let r = &f.server.received()[0];
    assert_eq!(r.status, 200);
    assert!(r.body.len() <= 4096);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["aps"]["alert"]["title"], "romeo@example.net");
}

// ---- answers and their mapping ----

/// What a test expects of an error.
type Expectation = Box<dyn Fn(&PushError) -> bool>;

#[tokio::test]
async fn every_apple_answer_maps_to_its_push_error() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    let misconfigured = |e: &PushError| matches!(e, PushError::Misconfigured(_));
    let cases: Vec<(Vec<ApnsAnswer>, Expectation, usize)> = vec![
        (
            vec![ApnsAnswer::error(410, "Unregistered")],
            Box::new(|e| *e == PushError::TokenInvalid(DeadTokenReason::Unregistered)),
            1,
        ),
        (
            vec![ApnsAnswer::error(400, "BadDeviceToken")],
            Box::new(|e| *e == PushError::TokenInvalid(DeadTokenReason::BadToken)),
            1,
        ),
        (
            vec![ApnsAnswer::error(400, "DeviceTokenNotForTopic")],
            Box::new(|e| *e == PushError::TokenInvalid(DeadTokenReason::NotForThisApp)),
            1,
        ),
        (
            vec![ApnsAnswer::error(429, "TooManyRequests").with_retry_after(12)],
            Box::new(|e| {
                *e == PushError::ProviderThrottled {
                    retry_after: Some(Duration::from_secs(12)),
                }
            }),
            1,
        ),
        (
            vec![ApnsAnswer::error(429, "TooManyRequests").with_retry_after(u64::MAX)],
            Box::new(|e| {
                *e == PushError::ProviderThrottled {
                    retry_after: Some(fpush_apns::response::MAX_RETRY_AFTER),
                }
            }),
            1,
        ),
        (
            vec![ApnsAnswer::error(429, "TooManyProviderTokenUpdates")],
            Box::new(misconfigured),
            1,
        ),
        (
            vec![ApnsAnswer::error(400, "TopicDisallowed")],
            Box::new(misconfigured),
            1,
        ),
        (
            vec![ApnsAnswer::error(400, "BadTopic")],
            Box::new(misconfigured),
            1,
        ),
        (
            vec![ApnsAnswer::error(403, "BadCertificate")],
            Box::new(misconfigured),
            1,
        ),
        (
            vec![ApnsAnswer::error(403, "BadCertificateEnvironment")],
            Box::new(misconfigured),
            1,
        ),
        // A young provider token is not renewed (Apple forbids renewing within 20 minutes).
        (
            vec![ApnsAnswer::error(403, "ExpiredProviderToken")],
            Box::new(misconfigured),
            1,
        ),
        (
            vec![ApnsAnswer::error(403, "InvalidProviderToken")],
            Box::new(misconfigured),
            1,
        ),
        // 5xx: retried once, then transient.
        (
            vec![
                ApnsAnswer::error(500, "InternalServerError"),
                ApnsAnswer::error(500, "InternalServerError"),
            ],
            Box::new(|e| matches!(e, PushError::Transient(m) if m.contains("InternalServerError"))),
            2,
        ),
        (
            vec![
                ApnsAnswer::error(503, "ServiceUnavailable"),
                ApnsAnswer::error(503, "Shutdown"),
            ],
            Box::new(|e| matches!(e, PushError::Transient(m) if m.contains("Shutdown"))),
            2,
        ),
    ];
    for (i, (answers, expected, requests)) in cases.into_iter().enumerate() {
        let token = format!("{i:02}{}", &TOKEN[2..]);
        let description = format!("{answers:?}");
        f.server.enqueue(&token, answers);
        let err = module.send(&push(&token)).await.unwrap_err();
        assert!(expected(&err), "{description}: got {err:?}");
        assert_eq!(f.server.count_for(&token), requests, "{description}");
    }
}

#[tokio::test]
async fn prefix_convention_tokens_map_like_apples_answers() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    assert_eq!(
        module.send(&push("dead-1")).await.unwrap_err(),
        PushError::TokenInvalid(DeadTokenReason::Unregistered)
    );
    assert_eq!(
        module.send(&push("baddevice-1")).await.unwrap_err(),
        PushError::TokenInvalid(DeadTokenReason::BadToken)
    );
    assert!(matches!(
        module.send(&push("throttled-1")).await.unwrap_err(),
        PushError::ProviderThrottled { retry_after: None }
    ));
    // unavailable-once: the one retry delivers it.
    module.send(&push("unavailable-once-1")).await.unwrap();
    assert_eq!(f.server.count_for("unavailable-once-1"), 2);
}

#[tokio::test]
async fn a_wrong_topic_is_answered_not_for_this_app() {
    let f = harness().await;
    let mut cfg = token_config(&f, json!({}));
    cfg.topic = "com.example.other".into();
    let err = module(cfg).send(&push(TOKEN)).await.unwrap_err();
    assert_eq!(err, PushError::TokenInvalid(DeadTokenReason::NotForThisApp));
}

#[tokio::test]
async fn tokens_that_cannot_be_device_tokens_never_reach_apple() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    for token in ["", "a/b", "../x", "a b", ".", ".."] {
        assert_eq!(
            module.send(&push(token)).await.unwrap_err(),
            PushError::TokenInvalid(DeadTokenReason::Implausible)
        );
    }
    assert!(f.server.received().is_empty());
}

// ---- retries and timeouts ----

#[tokio::test]
async fn a_503_is_retried_once_and_delivered() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    f.server.enqueue(
        TOKEN,
        [
            ApnsAnswer::error(503, "ServiceUnavailable"),
            ApnsAnswer::ok(),
        ],
    );
    module.send(&push(TOKEN)).await.unwrap();
    assert_eq!(f.server.count_for(TOKEN), 2);
}

#[tokio::test]
async fn an_idle_timeout_answer_is_retried_once_and_delivered() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    f.server.enqueue(
        TOKEN,
        [ApnsAnswer::error(400, "IdleTimeout"), ApnsAnswer::ok()],
    );
    module.send(&push(TOKEN)).await.unwrap();
    assert_eq!(f.server.count_for(TOKEN), 2);
}

#[tokio::test]
async fn a_timeout_is_reported_and_never_retried() {
    let f = harness().await;
    let mut cfg = token_config(&f, json!({}));
    cfg.request_timeout = Duration::from_millis(300);
    let module = module(cfg);
    f.server.enqueue(TOKEN, [ApnsAnswer::fault(Fault::Stall)]);
    assert_eq!(
        module.send(&push(TOKEN)).await.unwrap_err(),
        PushError::Timeout
    );
    assert_eq!(f.server.count_for(TOKEN), 1);
}

#[tokio::test]
async fn a_connection_reset_after_sending_is_transient_and_not_retried() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    f.server
        .enqueue(TOKEN, [ApnsAnswer::fault(Fault::DropConnection)]);
    assert!(matches!(
        module.send(&push(TOKEN)).await.unwrap_err(),
        PushError::Transient(_)
    ));
    assert_eq!(f.server.count_for(TOKEN), 1);
    // The next push reconnects.
    module.send(&push(TOKEN)).await.unwrap();
    assert_eq!(f.server.tls().connections_accepted(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_retried_once_then_transient() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    f.server.tls().set_refuse_tls(true);
    assert!(matches!(
        module.send(&push(TOKEN)).await.unwrap_err(),
        PushError::Transient(_)
    ));
    assert_eq!(
        f.server.tls().connections_accepted(),
        2,
        "one connect and one retry"
    );
    f.server.tls().set_refuse_tls(false);
    module.send(&push(TOKEN)).await.unwrap();
}

#[tokio::test]
async fn a_thousand_pushes_in_flight_share_one_connection() {
    let f = harness().await;
    let mut cfg = token_config(&f, json!({}));
    // Generous: on a loaded 2-core machine a debug build can take seconds for 1000 streams.
    cfg.request_timeout = Duration::from_secs(60);
    let module = Arc::new(module(cfg));
    f.server
        .set_responder(|_| Some(ApnsAnswer::ok().delayed(Duration::from_millis(200))));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let module = module.clone();
            tokio::spawn(async move { module.send(&push(&format!("{i:04}{}", &TOKEN[4..]))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(f.server.received().len(), 1000);
    assert_eq!(f.server.tls().connections_accepted(), 1);
    assert_eq!(module.http_client().connections_opened(), 1);
    // Serially this would take 200 s; in flight together, about one delay.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

// ---- provider token (JWT) ----

#[tokio::test]
async fn the_provider_token_is_reused_across_pushes() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    for _ in 0..20 {
        module.send(&push(TOKEN)).await.unwrap();
    }
    let jwts: std::collections::HashSet<_> = f
        .server
        .received()
        .into_iter()
        .map(|r| r.jwt.unwrap())
        .collect();
    assert_eq!(jwts.len(), 1);
}

#[tokio::test]
async fn a_module_rebuilt_from_the_same_key_keeps_its_provider_token() {
    let f = harness().await;
    let first = module(token_config(&f, json!({})));
    first.send(&push(TOKEN)).await.unwrap();
    // A reload builds the module again while the old one still serves.
    let rebuilt = module(token_config(&f, json!({"alertTitle": "Changed"})));
    drop(first);
    rebuilt.send(&push(TOKEN)).await.unwrap();
    assert_eq!(f.server.provider_tokens_seen(), 1);
    assert!(f.server.received().iter().all(|r| r.status == 200));
}

/// Moves tokio's clock forward without leaving it paused (the server runs on real sockets).
async fn travel(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn the_provider_token_is_renewed_before_apples_hour() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    module.send(&push(TOKEN)).await.unwrap();
    travel(Duration::from_secs(45 * 60)).await;
    module.send(&push(TOKEN)).await.unwrap();
    travel(Duration::from_secs(6 * 60)).await;
    module.send(&push(TOKEN)).await.unwrap();
    module.send(&push(TOKEN)).await.unwrap();
    let jwts: Vec<_> = f
        .server
        .received()
        .into_iter()
        .map(|r| r.jwt.unwrap())
        .collect();
    assert_eq!(jwts[0], jwts[1], "45 minutes old: still reused");
    assert_ne!(jwts[1], jwts[2], "51 minutes old: renewed");
    assert_eq!(jwts[2], jwts[3]);
    assert!(f.server.received().iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn a_refused_provider_token_over_20_minutes_old_is_renewed_and_the_push_retried() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    module.send(&push(TOKEN)).await.unwrap();
    travel(Duration::from_secs(21 * 60)).await;
    f.server
        .enqueue(TOKEN, [ApnsAnswer::error(403, "ExpiredProviderToken")]);
    module.send(&push(TOKEN)).await.unwrap();
    let got = f.server.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].jwt, got[0].jwt);
    assert_ne!(got[2].jwt, got[1].jwt, "the retry carries a new token");

    // Refused again right away: the new token is too young to replace, so no loop.
    f.server
        .enqueue(TOKEN, [ApnsAnswer::error(403, "InvalidProviderToken")]);
    assert!(matches!(
        module.send(&push(TOKEN)).await.unwrap_err(),
        PushError::Misconfigured(_)
    ));
    assert_eq!(f.server.received().len(), 4);
}

#[tokio::test]
async fn too_many_token_updates_is_misconfigured_and_keeps_the_token_for_20_minutes() {
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    module.send(&push(TOKEN)).await.unwrap();
    travel(Duration::from_secs(45 * 60)).await;
    f.server.enqueue(
        TOKEN,
        [ApnsAnswer::error(429, "TooManyProviderTokenUpdates")],
    );
    let err = module.send(&push(TOKEN)).await.unwrap_err();
    assert!(
        matches!(&err, PushError::Misconfigured(m) if m.contains("TooManyProviderTokenUpdates")),
        "{err:?}"
    );
    // 51 minutes old: renewed in normal times, kept while Apple refuses renewals.
    travel(Duration::from_secs(6 * 60)).await;
    module.send(&push(TOKEN)).await.unwrap();
    // 20 minutes after the refusal a new token is signed again.
    travel(Duration::from_secs(15 * 60)).await;
    module.send(&push(TOKEN)).await.unwrap();
    let got = f.server.received();
    assert_eq!(got.len(), 4, "no retry after the refusal");
    assert_eq!(got[1].jwt, got[0].jwt);
    assert_eq!(got[2].jwt, got[0].jwt, "no new token within 20 minutes");
    assert_eq!(got[2].status, 200);
    assert_ne!(got[3].jwt, got[0].jwt, "renewed once the 20 minutes passed");
    assert_eq!(got[3].status, 200);
}

#[tokio::test]
async fn a_token_older_than_an_hour_is_refused_by_the_server() {
    // Guards the test server itself: it really checks iat.
    let f = harness().await;
    let module = module(token_config(&f, json!({})));
    module.send(&push(TOKEN)).await.unwrap();
    let jwt = f.server.received()[0].jwt.clone().unwrap();
    travel(Duration::from_secs(61 * 60)).await;
    let client = fpush_http::HttpClient::new(
        &f.server.origin(),
        fpush_http::HttpConfig {
            ca_file: Some(f.ca_file().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let req = http::Request::post(format!("/3/device/{TOKEN}"))
        .header("apns-topic", TOPIC)
        .header("apns-push-type", "alert")
        .header("authorization", format!("bearer {jwt}"))
        .body(bytes::Bytes::from_static(b"{\"aps\":{}}"))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status, 403);
    assert!(String::from_utf8_lossy(&resp.body).contains("ExpiredProviderToken"));
}

// ---- start-up errors ----

fn startup_error(cfg: ApnsConfig) -> String {
    match ApnsPush::new(MODULE, cfg) {
        Ok(_) => panic!("module built with broken credentials"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn startup_errors_name_the_module_and_the_file() {
    let f = harness().await;
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.p12");
    let mut cfg = cert_config(&f, P12Cipher::Modern);
    cfg.cert_file_path = Some(missing);
    let err = startup_error(cfg);
    assert!(err.contains(MODULE) && err.contains("missing.p12"), "{err}");

    let mut cfg = cert_config(&f, P12Cipher::Modern);
    cfg.cert_password = format!("not-{P12_PASSWORD}");
    let err = startup_error(cfg);
    assert!(
        err.contains("apns.p12") && err.contains("certPassword"),
        "{err}"
    );

    let not_pem = dir.path().join("AuthKey_BROKEN.p8");
    std::fs::write(&not_pem, "this is not a key").unwrap();
    let mut cfg = token_config(&f, json!({}));
    cfg.key_file_path = Some(not_pem);
    let err = startup_error(cfg);
    assert!(
        err.contains(MODULE) && err.contains("AuthKey_BROKEN.p8"),
        "{err}"
    );

    let mut cfg = token_config(&f, json!({}));
    cfg.key_file_path = Some(dir.path().join("AuthKey_GONE.p8"));
    let err = startup_error(cfg);
    assert!(err.contains("AuthKey_GONE.p8"), "{err}");

    let mut cfg = token_config(&f, json!({}));
    cfg.team_id = None;
    assert!(startup_error(cfg).contains("teamId"));

    let mut cfg = token_config(&f, json!({}));
    cfg.cert_file_path = Some(f.p12_file(P12Cipher::Modern).unwrap());
    assert!(startup_error(cfg).contains("not both"));

    assert!(startup_error(token_config(&f, json!({"priority": 7}))).contains("priority"));
}

#[tokio::test]
async fn a_request_timeout_of_zero_is_refused_at_start_up() {
    let f = harness().await;
    for zero in [json!(0), json!("0s")] {
        let err = startup_error(token_config(&f, json!({"requestTimeout": zero})));
        assert!(
            err.contains(MODULE) && err.contains("requestTimeout"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_empty_key_id_or_team_id_is_refused_at_start_up() {
    let f = harness().await;
    for (key, blank) in [("keyId", ""), ("teamId", " ")] {
        let err = startup_error(token_config(&f, json!({ key: blank })));
        assert!(err.contains(MODULE) && err.contains(key), "{key}: {err}");
    }
}

#[test]
fn building_a_module_needs_no_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(harness());
    let cfg = token_config(&f, json!({}));
    // Outside any runtime: what `fpush --check` does.
    let module = std::thread::spawn(move || ApnsPush::new(MODULE, cfg).map(|_| ()))
        .join()
        .unwrap();
    assert!(module.is_ok());
}
