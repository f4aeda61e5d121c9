//! The OAuth side: a token endpoint that is down is a passing failure, one that refuses the
//! service account is an operator mistake, and nothing reaches FCM without a granted token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, module, push, server};
use fpush_fcm::FcmPush;
use fpush_testkit::fcm::{oauth_error, RsaTestKey, TestServiceAccount, TokenEndpointMode};
use fpush_traits::PushError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_is_transient_and_recovers() {
    let server = server().await;
    let module = module(&server);
    server.set_token_endpoint(TokenEndpointMode::Fail {
        status: 503,
        body: "<html>Service Unavailable</html>".to_string(),
    });

    let err = push(&module, "token-1").await.unwrap_err();

    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(server.message_count(), 0);
    server.set_token_endpoint(TokenEndpointMode::Grant);
    // A failed refresh is not tried again for a second (pushes meanwhile share its failure).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(&module, "token-2").await.unwrap();
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_token_endpoint_is_transient_not_a_provider_timeout() {
    let server = server().await;
    let mut cfg = config(&server);
    cfg.request_timeout = Duration::from_millis(500);
    let module = FcmPush::new("android", cfg).unwrap();
    server.set_token_endpoint(TokenEndpointMode::Stall);

    let err = push(&module, "token-1").await.unwrap_err();

    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(server.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_dropping_connections_is_transient() {
    let server = server().await;
    let module = module(&server);
    server.set_token_endpoint(TokenEndpointMode::DropConnection);
    let err = push(&module, "token-1").await.unwrap_err();
    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(server.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_is_misconfigured() {
    let server = server().await;
    let module = module(&server);
    server.set_token_endpoint(TokenEndpointMode::Fail {
        status: 400,
        body: oauth_error("invalid_grant", "Invalid JWT Signature."),
    });
    let err = push(&module, "token-1").await.unwrap_err();
    let PushError::Misconfigured(reason) = err else {
        panic!("expected Misconfigured, got {err:?}");
    };
    assert!(reason.contains("Invalid JWT Signature."), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_token_endpoint_does_not_know_is_refused() {
    let server = server().await;
    let stranger = TestServiceAccount::with_key(
        server.project_id(),
        server.account().token_uri(),
        RsaTestKey::stranger(),
    );
    let path = server.ca_file().with_file_name("stranger.json");
    stranger.write(&path).unwrap();
    let mut cfg = config(&server);
    cfg.fcm_secret_path = path;
    let module = FcmPush::new("android", cfg).unwrap();

    let err = push(&module, "token-1").await.unwrap_err();

    assert!(matches!(err, PushError::Misconfigured(_)), "{err:?}");
    assert_eq!(server.refused_assertions(), ["Invalid JWT Signature."]);
    assert_eq!(server.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_token_endpoint_does_not_know_is_refused() {
    let server = server().await;
    let other = TestServiceAccount::generate("someone-elses-project", server.account().token_uri());
    let path = server.ca_file().with_file_name("other-project.json");
    other.write(&path).unwrap();
    let mut cfg = config(&server);
    cfg.fcm_secret_path = path;
    let module = FcmPush::new("android", cfg).unwrap();

    let err = push(&module, "token-1").await.unwrap_err();

    assert!(matches!(err, PushError::Misconfigured(_)), "{err:?}");
    assert_eq!(
        server.refused_assertions(),
        ["Invalid grant: account not found"]
    );
    assert_eq!(server.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_one_failed_token_request() {
    let server = server().await;
    let module = Arc::new(module(&server));
    server.set_token_endpoint(TokenEndpointMode::Fail {
        status: 500,
        body: "{}".to_string(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let module = module.clone();
        tasks.spawn(async move { push(&module, &format!("token-{i}")).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(matches!(result.unwrap(), Err(PushError::Transient(_))));
    }
    // Pushes that arrive while a refresh runs share its failure; only pushes that start after
    // a refresh ended try again. With 200 pushes started at once that is a handful at most.
    assert!(
        server.token_requests() < 20,
        "{} token requests",
        server.token_requests()
    );
    assert_eq!(server.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expires_in_near_u64_max_is_survived_and_the_token_reused() {
    let server = server().await;
    server.set_token_lifetime(Duration::from_secs(u64::MAX));
    let module = module(&server);

    push(&module, "token-1").await.unwrap();
    push(&module, "token-2").await.unwrap();

    assert_eq!((server.message_count(), server.token_requests()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_built_from_the_same_file_share_one_access_token() {
    let server = server().await;
    let first = module(&server);
    push(&first, "token-1").await.unwrap();
    // A reload builds the module again while the old one still serves.
    let rebuilt = module(&server);
    drop(first);
    push(&rebuilt, "token-2").await.unwrap();
    assert_eq!(server.token_requests(), 1);
}
