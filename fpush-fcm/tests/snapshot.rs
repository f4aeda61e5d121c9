//! What an FCM module reports for the metrics: failed access-token refreshes (one per shared
//! refresh) and its connection pool to FCM.

mod common;

use std::time::Duration;

use common::{module, push, server};
use fpush_testkit::fcm::TokenEndpointMode;
use fpush_traits::PushTrait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_token_refreshes_are_counted_once_each() {
    let server = server().await;
    let module = module(&server);
    assert_eq!(module.snapshot().token_refresh_failures, 0);
    server.set_token_endpoint(TokenEndpointMode::Fail {
        status: 503,
        body: "<html>Service Unavailable</html>".to_string(),
    });
    push(&module, "token-1").await.unwrap_err();
    assert_eq!(module.snapshot().token_refresh_failures, 1);
    // A failed refresh is not tried again for a second, then two.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(&module, "token-2").await.unwrap_err();
    assert_eq!(module.snapshot().token_refresh_failures, 2);

    server.set_token_endpoint(TokenEndpointMode::Grant);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    push(&module, "token-3").await.unwrap();
    assert_eq!(
        module.snapshot().token_refresh_failures,
        2,
        "a success adds none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reports_its_connection_to_fcm() {
    let server = server().await;
    let module = module(&server);
    let before = module.snapshot().pool.expect("an FCM module keeps a pool");
    assert!(before.connections.is_empty());
    push(&module, "token-1").await.unwrap();
    let pool = module.snapshot().pool.unwrap();
    assert_eq!(pool.connections.len(), 1, "{pool:?}");
    assert_eq!(pool.connections[0].streams_in_flight, 0);
    assert!(pool.connections[0].max_streams > 0, "{pool:?}");
    assert!(pool.connections_opened >= 1);
    assert_eq!((pool.paused_for, pool.pauses), (None, 0));
}
