//! What the APNS and FCM modules report about themselves reaches `/metrics` of a running fpush:
//! the `.p12` certificate's expiry, the pool's connections, stream limits and openings, the
//! provider's module-wide pause, and failed FCM token refreshes.

mod common;

use std::time::Duration;

use common::*;
use fpush_testkit::apns::{ApnsAnswer, ApnsHarness};
use fpush_testkit::fcm::{FcmServer, TokenEndpointMode};
use fpush_testkit::settings::with_keys;
use fpush_testkit::tls::P12Cipher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const PAUSED_TOKEN: &str = "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// The `/metrics` text, retried while fpush starts listening.
async fn scrape(port: u16) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            socket.read_to_string(&mut response).await.unwrap();
            return response.split_once("\r\n\r\n").unwrap().1.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics listener"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the line starting with `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn modules(apns: &ApnsHarness, fcm: &FcmServer) -> String {
    let timeout = json!({"requestTimeout": "5s"});
    let cert = apns.cert_settings(P12Cipher::Modern).unwrap();
    json!({
        "ios": { "type": "apple", "is_default_module": true, "ratelimit": { "enabled": false },
                 "apns": with_keys(cert, timeout.clone()) },
        "android": { "type": "google", "ratelimit": { "enabled": false },
                     "fcm": with_keys(fcm.settings(), timeout) },
    })
    .to_string()
}

#[tokio::test]
async fn the_apns_and_fcm_modules_state_reaches_metrics() {
    let apns = ApnsHarness::start().await.unwrap();
    let fcm = FcmServer::start().await.unwrap();
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let port = free_port();
    let _fpush = Daemon::start(&settings(
        &server,
        &modules(&apns, &fcm),
        &format!(r#""metrics": {{ "listen": "127.0.0.1:{port}" }},"#),
    ));
    let mut link = connect(&mut server).await;

    let text = scrape(port).await;
    // The test CA's certificates are valid until 4096-01-01T00:00:00Z (rcgen's default).
    let expiry = r#"fpush_credential_expiry_timestamp_seconds{module="ios"}"#;
    assert_eq!(value(&text, expiry), Some(67_090_118_400.0), "{text}");
    for module in ["ios", "android"] {
        for series in [
            "fpush_pool_connections",
            "fpush_pool_connections_opened_total",
            "fpush_provider_pause_seconds",
            "fpush_provider_pauses_total",
            "fpush_token_refresh_failures_total",
        ] {
            let name = format!(r#"{series}{{module="{module}"}}"#);
            assert_eq!(value(&text, &name), Some(0.0), "{name}\n{text}");
        }
    }

    assert_result(&push_and_reply(&mut link, "p1", APNS_TOKEN).await, "p1");
    let text = scrape(port).await;
    let ios = |series: &str| value(&text, &format!(r#"{series}{{module="ios"}}"#));
    assert_eq!(ios("fpush_pool_connections"), Some(1.0), "{text}");
    assert_eq!(
        ios("fpush_pool_connections_opened_total"),
        Some(1.0),
        "{text}"
    );
    let limit = r#"fpush_pool_max_streams{module="ios",connection="0"}"#;
    assert_eq!(value(&text, limit), Some(1000.0), "Apple's limit\n{text}");
    let streams = r#"fpush_pool_streams_in_flight{module="ios",connection="0"}"#;
    assert_eq!(value(&text, streams), Some(0.0), "{text}");

    // A 503 with Retry-After pauses the whole module.
    apns.server.enqueue(
        PAUSED_TOKEN,
        [ApnsAnswer::error(503, "ServiceUnavailable").with_retry_after(30)],
    );
    let reply = push_and_reply(&mut link, "p2", PAUSED_TOKEN).await;
    assert_error(&reply, "p2", "wait", "resource-constraint");
    let text = scrape(port).await;
    let ios = |series: &str| value(&text, &format!(r#"{series}{{module="ios"}}"#));
    let left = ios("fpush_provider_pause_seconds").unwrap_or(0.0);
    assert!(left > 0.0 && left <= 30.0, "{text}");
    assert_eq!(ios("fpush_provider_pauses_total"), Some(1.0), "{text}");

    // A token endpoint that fails counts one refresh failure per refresh.
    fcm.set_token_endpoint(TokenEndpointMode::Fail {
        status: 503,
        body: "<html>Service Unavailable</html>".to_string(),
    });
    let fcm_push = push_iq("p3", "fcm-token:APA91b-example", Some("android"));
    link.send(&fcm_push).await.unwrap();
    let reply = link.next_stanza(WAIT).await.unwrap();
    assert_error(&reply, "p3", "wait", "internal-server-error");
    let text = scrape(port).await;
    let failures = r#"fpush_token_refresh_failures_total{module="android"}"#;
    assert_eq!(value(&text, failures), Some(1.0), "{text}");
}
