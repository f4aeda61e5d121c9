//! The APNS module's connection pool and throttling against the APNS test server: one provider
//! token shared by every connection, a token-specific 429 held to that token, a 503 with
//! `Retry-After` pausing the module until then.

use std::net::SocketAddr;
use std::time::Duration;

use fpush_apns::{ApnsConfig, ApnsPush};
use fpush_testkit::apns::{ApnsAnswer, ApnsHarness, ApnsHarnessOptions};
use fpush_testkit::settings::with_keys;
use fpush_testkit::tls::ServeOptions;
use fpush_traits::{PushError, PushNotification, PushTrait};
use serde_json::json;

const MODULE: &str = "apple-pool";

fn token(i: usize) -> String {
    format!("{i:064x}")
}

async fn harness(streams: u32) -> ApnsHarness {
    ApnsHarness::start_with(ApnsHarnessOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        serve: ServeOptions {
            max_concurrent_streams: streams,
        },
        ..ApnsHarnessOptions::default()
    })
    .await
    .unwrap()
}

fn module(h: &ApnsHarness) -> ApnsPush {
    let block = with_keys(h.token_settings(), json!({"requestTimeout": "5s"}));
    let cfg: ApnsConfig = serde_json::from_value(block).unwrap();
    ApnsPush::new(MODULE, cfg).unwrap()
}

#[tokio::test]
async fn every_connection_of_a_module_carries_the_same_provider_token() {
    let h = harness(4).await;
    h.server
        .set_responder(|_| Some(ApnsAnswer::ok().delayed(Duration::from_millis(200))));
    let module = std::sync::Arc::new(module(&h));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let module = module.clone();
            tokio::spawn(async move { module.send(&PushNotification::new(token(i), MODULE)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let received = h.server.received();
    let connections: std::collections::HashSet<_> = received.iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 4, "16 pushes over 4 streams each");
    let jwts: std::collections::HashSet<_> = received.iter().map(|r| r.jwt.clone()).collect();
    assert_eq!(jwts.len(), 1, "one provider token for the module: {jwts:?}");
    assert_eq!(module.http_client().connections_opened(), 4);
}

#[tokio::test]
async fn a_token_specific_429_throttles_only_that_token() {
    let h = harness(1000).await;
    let module = module(&h);
    let throttled = token(1);
    h.server.enqueue(
        &throttled,
        (0..30).map(|_| ApnsAnswer::error(429, "TooManyRequests").with_retry_after(30)),
    );
    for _ in 0..30 {
        let err = module
            .send(&PushNotification::new(throttled.clone(), MODULE))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(30))
            }
        );
    }
    module
        .send(&PushNotification::new(token(2), MODULE))
        .await
        .unwrap();
    assert_eq!(module.http_client().pauses(), 0);
}

#[tokio::test]
async fn a_503_with_retry_after_pauses_the_module_and_is_lifted_after() {
    let h = harness(1000).await;
    let module = module(&h);
    h.server.enqueue(
        &token(1),
        [
            ApnsAnswer::error(503, "ServiceUnavailable").with_retry_after(1),
            ApnsAnswer::error(503, "ServiceUnavailable").with_retry_after(1),
        ],
    );
    let err = module
        .send(&PushNotification::new(token(1), MODULE))
        .await
        .unwrap_err();
    assert!(matches!(err, PushError::ProviderPaused { .. }), "{err:?}");
    let before = h.server.received().len();
    for i in 2..12 {
        let err = module
            .send(&PushNotification::new(token(i), MODULE))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushError::ProviderPaused { retry_after: left } if left <= Duration::from_secs(1)),
            "{err:?}"
        );
    }
    assert_eq!(
        h.server.received().len(),
        before,
        "the provider is not called while paused"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    module
        .send(&PushNotification::new(token(12), MODULE))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_snapshot_shows_the_pool_and_the_certificates_expiry() {
    let h = harness(4).await;
    h.server
        .set_responder(|_| Some(ApnsAnswer::ok().delayed(Duration::from_millis(1500))));
    let block = h
        .cert_settings(fpush_testkit::tls::P12Cipher::Modern)
        .unwrap();
    let block = with_keys(block, json!({"requestTimeout": "5s"}));
    let module =
        std::sync::Arc::new(ApnsPush::new(MODULE, serde_json::from_value(block).unwrap()).unwrap());
    let idle = module.snapshot();
    // The test CA issues certificates valid until 4096-01-01T00:00:00Z (rcgen's default).
    let not_after = std::time::UNIX_EPOCH + Duration::from_secs(67_090_118_400);
    assert_eq!(idle.credentials_expire_at, Some(not_after));
    assert_eq!(idle.pool.unwrap().connections.len(), 0);

    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let module = module.clone();
            tokio::spawn(async move { module.send(&PushNotification::new(token(i), MODULE)).await })
        })
        .collect();
    let mut busy = Vec::new();
    for _ in 0..100 {
        let pool = module.snapshot().pool.unwrap();
        busy = pool
            .connections
            .iter()
            .map(|c| c.streams_in_flight)
            .collect();
        if busy.iter().sum::<u32>() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    busy.sort_unstable();
    assert_eq!(
        busy,
        vec![2, 4],
        "six pushes over four streams per connection"
    );
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let pool = module.snapshot().pool.unwrap();
    assert!(
        pool.connections.iter().all(|c| c.max_streams == 4),
        "{pool:?}"
    );
    assert_eq!(pool.connections_opened, 2);
}

#[tokio::test]
async fn the_snapshot_shows_the_pushkit_certificates_expiry_when_it_comes_first() {
    let h = harness(1000).await;
    let voip = h
        .p12_file_until("voip.p12", &format!("{}.voip", h.topic()), (2031, 1, 1))
        .unwrap();
    let extra = json!({"requestTimeout": "5s", "voipCertFilePath": voip,
        "voipCertPassword": fpush_testkit::apns::P12_PASSWORD});
    for block in [
        h.cert_settings(fpush_testkit::tls::P12Cipher::Modern)
            .unwrap(),
        h.token_settings(),
    ] {
        let cfg: ApnsConfig = serde_json::from_value(with_keys(block, extra.clone())).unwrap();
        let module = ApnsPush::new(MODULE, cfg).unwrap();
        // 2031-01-01T00:00:00Z, before the main certificate's 4096 (or a key that never expires).
        let not_after = std::time::UNIX_EPOCH + Duration::from_secs(1_924_992_000);
        assert_eq!(module.snapshot().credentials_expire_at, Some(not_after));
    }
}

#[tokio::test]
async fn a_token_auth_module_reports_no_expiry() {
    let h = harness(1000).await;
    assert_eq!(module(&h).snapshot().credentials_expire_at, None);
}
