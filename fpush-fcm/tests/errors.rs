//! Every FCM answer maps to the right `PushError`, with exactly the provider calls the retry
//! rules allow: one retry when Google cannot have accepted the message, one fresh token after
//! an authentication failure, nothing more. A quota answer holds the token, or pauses the
//! module when it names the project; so does a 503 with `Retry-After`, until then.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{config, module, push, server};
use fpush_fcm::FcmPush;
use fpush_testkit::fcm::{FcmAnswer, THROTTLE_RETRY_AFTER};
use fpush_traits::{DeadTokenReason, PushError, PushTrait, Rejection};

/// Pushes `token` and returns the error and how many `messages:send` requests the server saw.
async fn outcome(token: &str) -> (PushError, usize) {
    let server = server().await;
    let module = module(&server);
    let err = push(&module, token).await.unwrap_err();
    (err, server.message_count())
}

async fn scripted(answers: Vec<FcmAnswer>) -> (Result<(), PushError>, usize, usize) {
    let server = server().await;
    let module = module(&server);
    server.script(answers);
    let result = push(&module, "token-1").await.map(|_| ());
    (result, server.message_count(), server.token_requests())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_is_a_dead_token_without_retry() {
    assert_eq!(
        outcome("dead-1").await,
        (PushError::TokenInvalid(DeadTokenReason::Unregistered), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_argument_on_the_token_is_a_bad_token() {
    assert_eq!(
        outcome("baddevice-1").await,
        (PushError::TokenInvalid(DeadTokenReason::BadToken), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_argument_saying_the_token_is_not_valid_is_a_bad_token() {
    let (result, calls, _) = scripted(vec![FcmAnswer::bad_token_without_field()]).await;
    assert_eq!(
        result,
        Err(PushError::TokenInvalid(DeadTokenReason::BadToken))
    );
    assert_eq!(calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_id_mismatch_is_a_token_of_another_app() {
    assert_eq!(
        outcome("mismatch-1").await,
        (PushError::TokenInvalid(DeadTokenReason::NotForThisApp), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_argument_on_another_field_is_misconfigured() {
    let (err, calls) = outcome("invalidarg-1").await;
    assert!(matches!(err, PushError::Misconfigured(_)), "{err:?}");
    assert_eq!(calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_is_throttling_with_retry_after_and_no_retry() {
    assert_eq!(
        outcome("throttled-1").await,
        (
            PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(THROTTLE_RETRY_AFTER))
            },
            1
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_once_then_transient() {
    let (err, calls) = outcome("unavailable-1").await;
    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_is_retried_once_then_transient() {
    let (err, calls) = outcome("internal-1").await;
    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_json_5xx_is_retried_once_then_transient() {
    let (err, calls) = outcome("html-1").await;
    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unavailable_answer_is_bridged_by_the_retry() {
    let server = server().await;
    let module = module(&server);
    push(&module, "unavailable-once-1").await.unwrap();
    let statuses: Vec<u16> = server.messages().iter().map(|m| m.status).collect();
    assert_eq!(statuses, [503, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_times_out_without_retry() {
    let server = server().await;
    let mut cfg = config(&server);
    cfg.request_timeout = Duration::from_millis(500);
    let module = FcmPush::new("android", cfg).unwrap();
    // Fetch the token first, so the stall hits the message itself.
    push(&module, "warm-up").await.unwrap();

    let err = push(&module, "stall-1").await.unwrap_err();

    assert_eq!(err, PushError::Timeout);
    assert_eq!(server.message_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_sending_is_transient_without_retry() {
    let server = server().await;
    let module = module(&server);
    push(&module, "warm-up").await.unwrap();

    let err = push(&module, "reset-1").await.unwrap_err();

    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(server.message_count(), 2);
    // The connection recovers for the next push.
    push(&module, "after-reset").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_once_and_recovers() {
    let server = server().await;
    let module = module(&server);
    push(&module, "warm-up").await.unwrap();
    // Close the live connection and refuse new handshakes: the module must reconnect.
    server.script([FcmAnswer::DropConnection]);
    let _ = push(&module, "reset-first").await;
    server.tls_server().set_refuse_tls(true);
    let accepted_before = server.tls_server().connections_accepted();

    let err = push(&module, "token-1").await.unwrap_err();

    assert!(matches!(err, PushError::Transient(_)), "{err:?}");
    assert_eq!(
        server.tls_server().connections_accepted() - accepted_before,
        2
    );
    assert_eq!(server.message_count(), 2);
    server.tls_server().set_refuse_tls(false);
    push(&module, "token-2").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_401_refreshes_the_token_once_then_is_misconfigured() {
    let (result, calls, token_requests) = scripted(vec![
        FcmAnswer::unauthenticated(),
        FcmAnswer::unauthenticated(),
    ])
    .await;
    assert!(
        matches!(result, Err(PushError::Misconfigured(_))),
        "{result:?}"
    );
    assert_eq!((calls, token_requests), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_401_is_cured_by_a_fresh_token() {
    let (result, calls, token_requests) = scripted(vec![FcmAnswer::unauthenticated()]).await;
    assert_eq!(result, Ok(()));
    assert_eq!((calls, token_requests), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_auth_error_is_misconfigured_without_a_token_refresh() {
    // The project's APNs or Web Push credentials: a fresh access token cannot help.
    let (result, calls, token_requests) = scripted(vec![FcmAnswer::third_party_auth_error()]).await;
    assert!(
        matches!(result, Err(PushError::Misconfigured(_))),
        "{result:?}"
    );
    assert_eq!((calls, token_requests), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_refreshes_once_then_is_misconfigured() {
    let server = server().await;
    let module = module(&server);
    server.script([
        FcmAnswer::permission_denied("fpush-test"),
        FcmAnswer::permission_denied("fpush-test"),
    ]);
    let err = push(&module, "token-1").await.unwrap_err();
    assert!(matches!(err, PushError::Misconfigured(_)), "{err:?}");
    assert_eq!((server.message_count(), server.token_requests()), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_found_without_unregistered_keeps_the_token() {
    let (result, calls, _) = scripted(vec![FcmAnswer::html(404)]).await;
    assert!(
        matches!(result, Err(PushError::Misconfigured(_))),
        "{result:?}"
    );
    assert_eq!(calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_near_u64_max_is_clamped_to_an_hour() {
    let (result, calls, _) = scripted(vec![FcmAnswer::quota_exceeded(u64::MAX)]).await;
    assert_eq!(
        result,
        Err(PushError::ProviderThrottled {
            retry_after: Some(Duration::from_secs(3600))
        })
    );
    assert_eq!(calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implausible_tokens_are_refused_without_asking_google() {
    let server = server().await;
    let module = module(&server);
    let too_long = "a".repeat(4097);
    for token in ["", "x/1", "a.b", "a b", "tok\u{e9}n", too_long.as_str()] {
        let err = push(&module, token).await.unwrap_err();
        assert_eq!(
            err,
            PushError::TokenInvalid(DeadTokenReason::Implausible),
            "{token:?}"
        );
    }
    assert_eq!((server.message_count(), server.token_requests()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_quota_holds_only_that_token_and_the_module_goes_on() {
    let server = server().await;
    let module = module(&server);
    server.script([FcmAnswer::quota_exceeded(THROTTLE_RETRY_AFTER)]);
    assert_eq!(
        push(&module, "token-1").await.unwrap_err(),
        PushError::ProviderThrottled {
            retry_after: Some(Duration::from_secs(THROTTLE_RETRY_AFTER))
        }
    );
    push(&module, "token-2").await.unwrap();
    assert_eq!(server.message_count(), 2, "the next token went out");
    let pool = module.snapshot().pool.unwrap();
    assert_eq!((pool.paused_for, pool.pauses), (None, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_quota_pauses_the_module_until_retry_after() {
    let server = server().await;
    let module = module(&server);
    server.script([FcmAnswer::project_quota_exceeded(4242, 1)]);
    assert_eq!(
        push(&module, "token-1").await.unwrap_err(),
        PushError::ProviderPaused {
            retry_after: Duration::from_secs(1)
        }
    );
    // Another token, same project: answered at once, without asking Google.
    let err = push(&module, "token-2").await.unwrap_err();
    assert!(
        matches!(err, PushError::ProviderPaused { retry_after: left } if left <= Duration::from_secs(1)),
        "{err:?}"
    );
    assert_eq!(server.message_count(), 1);
    let pool = module.snapshot().pool.unwrap();
    assert!(pool.paused_for.is_some(), "{pool:?}");
    assert_eq!(pool.pauses, 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(&module, "token-2").await.unwrap();
    assert_eq!(server.message_count(), 2);
    assert_eq!(module.snapshot().pool.unwrap().paused_for, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_with_retry_after_pauses_the_module_until_then() {
    let server = server().await;
    let module = module(&server);
    server.script([FcmAnswer::unavailable_for(1)]);
    let err = push(&module, "token-1").await.unwrap_err();
    assert!(matches!(err, PushError::ProviderPaused { .. }), "{err:?}");
    assert_eq!(server.message_count(), 1, "no retry into the pause");
    let err = push(&module, "token-2").await.unwrap_err();
    assert!(
        matches!(err, PushError::ProviderPaused { retry_after } if retry_after <= Duration::from_secs(1)),
        "{err:?}"
    );
    assert_eq!(server.message_count(), 1, "not called while paused");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(&module, "token-3").await.unwrap();
}

/// A 403 `PERMISSION_DENIED` that stays (the service account lacks the FCM role, or the FCM
/// API is disabled for the project: a fresh access token cannot help) must not make every push
/// ask the token endpoint for a new token: APNS holds its renewals for 20 minutes in the same
/// case; here each push's first 403 throws the fresh token away again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_permission_denied_does_not_refresh_the_token_for_every_push() {
    let server = server().await;
    let module = module(&server);
    server.script(std::iter::repeat_with(|| FcmAnswer::permission_denied("fpush-test")).take(40));
    for i in 0..20 {
        let err = push(&module, &format!("token-{i}")).await.unwrap_err();
        assert!(matches!(err, PushError::Misconfigured(_)), "{err:?}");
    }
    let refreshes = server.token_requests();
    assert!(
        refreshes <= 2,
        "{refreshes} token requests for 20 pushes, each refused 403 PERMISSION_DENIED"
    );
}

/// FCM refuses a message whose `data` is over 4096 bytes, whatever the token, with an
/// `INVALID_ARGUMENT` that names no field ("Android message is too big"). Start-up checks
/// `additionalData` alone; a p2 registration's keys (`account`, up to 256 bytes, and
/// `channel`, up to 64) can take a message over the limit next to it. Such a push is refused
/// as too large before Google is asked: sent, its refusal read as the module's
/// misconfiguration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_fcms_data_limit_is_refused_as_too_large_without_a_request() {
    let server = server().await;
    let mut cfg = config(&server);
    cfg.additional_data = BTreeMap::from([("app".to_string(), "a".repeat(3900))]);
    let module = FcmPush::new("android", cfg).unwrap();
    let mut notification = common::notification("token-1");
    notification.extra = vec![
        ("account".into(), "d".repeat(256)),
        ("channel".into(), "c".repeat(64)),
    ];
    let result = module.send(&notification).await;
    assert!(
        matches!(
            result,
            Err(PushError::Rejected {
                reason: Rejection::TooLarge,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(server.message_count(), 0, "Google was asked");
}
