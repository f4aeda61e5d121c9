//! A push reaches the FCM test server as a valid v1 message, with a token from the OAuth
//! endpoint that is cached, shared, refreshed and never sent expired.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{config, module, notification, push, server};
use fpush_fcm::FcmPush;
use fpush_testkit::fcm::FcmAnswer;
use fpush_traits::{PushError, PushTrait};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_arrives_as_a_high_priority_data_message() {
    let server = server().await;
    let mut cfg = config(&server);
    cfg.collapse_key = Some("chat".to_string());
    cfg.additional_data = BTreeMap::from([("kind".to_string(), "xmpp".to_string())]);
    cfg.data_from_summary = true;
    let module = FcmPush::new("android", cfg).unwrap();
    log::set_max_level(log::LevelFilter::Debug); // the message name is read for the debug log only

    let delivered = push(&module, "device-token-1").await.unwrap();

    let name = delivered.provider_id.unwrap();
    assert!(name.starts_with("projects/fpush-test/messages/"), "{name}");
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.status, 200);
    assert_eq!(message.project, "fpush-test");
    assert_eq!(
        message.body,
        json!({"message": {
            "token": "device-token-1",
            "data": {
                "kind": "xmpp",
                "message-count": "1",
                "last-message-sender": "juliet@capulet.example",
                "last-message-body": "New Message!"
            },
            "android": {"priority": "high", "ttl": "2419200s", "collapse_key": "chat"}
        }})
    );
    let content_type = message.headers.get(http::header::CONTENT_TYPE).unwrap();
    assert!(content_type
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_fetched_once_and_reused() {
    let server = server().await;
    let module = module(&server);
    for i in 0..5 {
        push(&module, &format!("token-{i}")).await.unwrap();
    }
    assert_eq!(server.token_requests(), 1);
    assert_eq!(server.message_count(), 5);
    let bearers: Vec<_> = server
        .messages()
        .iter()
        .map(|m| m.headers[http::header::AUTHORIZATION].clone())
        .collect();
    assert!(bearers.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_pushes_share_one_token_request() {
    let server = server().await;
    let module = Arc::new(module(&server));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let module = module.clone();
        tasks.spawn(async move { module.send(&notification(&format!("token-{i}"))).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(server.token_requests(), 1);
    assert_eq!(server.message_count(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_server_expired_is_replaced_after_one_401() {
    let server = server().await;
    let module = module(&server);
    push(&module, "token-a").await.unwrap();
    server.expire_issued_tokens();

    push(&module, "token-b").await.unwrap();

    assert_eq!(server.token_requests(), 2);
    let statuses: Vec<u16> = server.messages().iter().map(|m| m.status).collect();
    assert_eq!(statuses, [200, 401, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_on_arrival_is_never_sent() {
    let server = server().await;
    server.set_token_lifetime(Duration::ZERO);
    let module = module(&server);

    let err = push(&module, "token-a").await.unwrap_err();

    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(server.token_requests(), 1);
    assert_eq!(server.message_count(), 0);
    assert_eq!(server.expired_tokens_presented(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_never_presented_expired() {
    let server = server().await;
    // Two seconds of life: the module refreshes after one, the server refuses after two.
    server.set_token_lifetime(Duration::from_secs(2));
    let module = module(&server);
    let started = tokio::time::Instant::now();
    let mut pushes = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        push(&module, &format!("token-{pushes}")).await.unwrap();
        pushes += 1;
    }
    assert_eq!(server.expired_tokens_presented(), 0);
    assert!(
        server.token_requests() >= 2,
        "no refresh in 2.5 s of 2 s tokens"
    );
    assert!(server.messages().iter().all(|m| m.status == 200));
    assert_eq!(server.message_count(), pushes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_moves_later_pushes_to_a_new_connection() {
    let server = server().await;
    let module = module(&server);
    server.script([FcmAnswer::GoawayThenAccept]);
    push(&module, "token-a").await.unwrap();
    push(&module, "token-b").await.unwrap();
    push(&module, "token-c").await.unwrap();
    assert_eq!(server.message_count(), 3);
    assert!(server.tls_server().connections_accepted() >= 2);
}
