//! The provider's pause against the testkit's TLS server: a 503 with `Retry-After` pauses the
//! client until then and is lifted after; 429s for many tokens pause it; 429s for one do not.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{setup, Setup};
use fpush_http::{HttpClient, HttpConfig, HttpError, ThrottleKey};
use fpush_testkit::tls::{serve, ClientAuth, Connection, TestServer};
use http::{Request, Response};

/// Answers paths starting `/503` with 503 + `Retry-After: 1`, `/429` with 429 +
/// `Retry-After: 1`, anything else 200; counts requests.
async fn server(s: &Setup, count: Arc<AtomicUsize>) -> TestServer {
    server_speaking(s, count, &[b"h2", b"http/1.1"]).await
}

/// [`server`], offering only the ALPN protocols given.
async fn server_speaking(s: &Setup, count: Arc<AtomicUsize>, alpn: &[&[u8]]) -> TestServer {
    let tls = s
        .pki
        .server_config_with_alpn(ClientAuth::None, alpn)
        .unwrap();
    serve(tls, move |req: Request<Bytes>, _conn: Arc<Connection>| {
        count.fetch_add(1, Ordering::SeqCst);
        let status = match req.uri().path() {
            p if p.starts_with("/503") => 503,
            p if p.starts_with("/429") => 429,
            _ => 200,
        };
        async move {
            let mut resp = Response::builder().status(status);
            if status != 200 {
                resp = resp.header("retry-after", "1");
            }
            resp.body(Bytes::new()).unwrap()
        }
    })
    .await
    .unwrap()
}

fn client(s: &Setup, server: &TestServer) -> HttpClient {
    let cfg = HttpConfig {
        ca_file: Some(s.ca_path.clone()),
        ..HttpConfig::default()
    };
    HttpClient::new(&server.origin(), cfg).unwrap()
}

fn post(path: &str) -> Request<Bytes> {
    Request::post(path).body(Bytes::from_static(b"{}")).unwrap()
}

/// The status the server answered `request` with.
async fn status(client: &HttpClient, request: Request<Bytes>) -> u16 {
    client.send(request).await.unwrap().status.as_u16()
}

/// The client answers at once, without asking the server.
async fn assert_paused(client: &HttpClient) {
    let err = client.send(post("/ok")).await.unwrap_err();
    assert!(matches!(err, HttpError::Paused(_)), "{err}");
}

#[tokio::test]
async fn a_503_with_retry_after_pauses_the_client_until_then_and_is_lifted_after() {
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let server = server(&s, count.clone()).await;
    let client = client(&s, &server);
    let resp = client.send(post("/503")).await.unwrap();
    assert_eq!(resp.status, 503);
    for _ in 0..5 {
        let err = client.send(post("/ok")).await.unwrap_err();
        assert!(
            matches!(err, HttpError::Paused(left) if left <= Duration::from_secs(1)),
            "{err}"
        );
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "paused requests never reach the provider"
    );
    assert_eq!(client.pauses(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.paused_for(), None);
    assert_eq!(client.send(post("/ok")).await.unwrap().status, 200);
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_503_with_retry_after_pauses_a_client_that_speaks_http1_too() {
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let server = server_speaking(&s, count.clone(), &[b"http/1.1"]).await;
    let client = client(&s, &server);
    assert_eq!(client.send(post("/503")).await.unwrap().status, 503);
    let err = client.send(post("/ok")).await.unwrap_err();
    assert!(matches!(err, HttpError::Paused(_)), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(client.pauses(), 1);
}

#[tokio::test]
async fn a_token_specific_429_does_not_pause_the_client() {
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let server = server(&s, count.clone()).await;
    let client = client(&s, &server);
    for _ in 0..30 {
        assert_eq!(
            client.send(post("/429/one-token")).await.unwrap().status,
            429
        );
    }
    assert_eq!(client.send(post("/other-token")).await.unwrap().status, 200);
    assert_eq!(client.pauses(), 0);
}

#[tokio::test]
async fn one_token_throttled_with_ever_other_bodies_does_not_pause_the_client() {
    // Anyone who can push to one token can vary what the push says: that is still one token.
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let server = server(&s, count.clone()).await;
    let client = client(&s, &server);
    for i in 0..30 {
        let body = Bytes::from(format!("{{\"n\": {i}}}"));
        let request = Request::post("/429/one-token").body(body).unwrap();
        assert_eq!(client.send(request).await.unwrap().status, 429);
    }
    assert_eq!(client.send(post("/other-token")).await.unwrap().status, 200);
    assert_eq!(client.pauses(), 0);
}

#[tokio::test]
async fn a_platform_names_the_throttled_target_when_its_path_does_not() {
    // FCM sends every message to one path: the key it gives tells the tokens apart.
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let server = server(&s, count.clone()).await;
    let client = client(&s, &server);
    let threshold = HttpConfig::default().breaker.distinct_requests;
    let keyed = |key: &str| {
        let mut request = post("/429/messages:send");
        request.extensions_mut().insert(ThrottleKey::of(key));
        request
    };
    for _ in 0..threshold {
        assert_eq!(status(&client, keyed("same")).await, 429);
    }
    assert_eq!(client.pauses(), 0, "one token");
    // That one and the others make the threshold.
    for i in 0..threshold - 1 {
        assert_eq!(status(&client, keyed(&format!("token-{i}"))).await, 429);
    }
    assert_paused(&client).await;
}

#[tokio::test]
async fn throttling_for_many_tokens_pauses_the_client() {
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let server = server(&s, count.clone()).await;
    let client = client(&s, &server);
    let threshold = HttpConfig::default().breaker.distinct_requests;
    // Some services name the subscription in the query (WNS: `/w/?token=…`).
    for i in 0..threshold {
        assert_eq!(
            status(&client, post(&format!("/429/w/?token={i}"))).await,
            429
        );
    }
    assert_paused(&client).await;
    assert_eq!(count.load(Ordering::SeqCst), threshold);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.send(post("/ok")).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_pause_the_platform_asks_for_is_honoured_and_shown_in_the_gauges() {
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let server = server(&s, count.clone()).await;
    let client = client(&s, &server);
    assert_eq!(client.send(post("/ok")).await.unwrap().status, 200);
    let applied = client.pause(Some(Duration::from_secs(1)), "project quota");
    assert_eq!(applied, Duration::from_secs(1));
    let gauges = client.gauges();
    assert!(gauges.paused_for.is_some_and(|left| left <= applied));
    assert_eq!(gauges.pauses, 1);
    let err = client.send(post("/ok")).await.unwrap_err();
    assert!(matches!(err, HttpError::Paused(_)), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "paused: not sent");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.gauges().paused_for, None);
    assert_eq!(client.send(post("/ok")).await.unwrap().status, 200);
}

/// Requests that were waiting for a stream when the provider asked for a pause must not go
/// out once a stream frees up: the pause is checked only before a request starts waiting, so
/// every request queued in a full pool still reaches the provider during its pause.
#[tokio::test]
async fn requests_waiting_for_a_stream_when_the_pause_begins_do_not_reach_the_provider() {
    use fpush_testkit::tls::{serve_with, ServeOptions};
    let s = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let options = ServeOptions {
        max_concurrent_streams: 1,
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = serve_with(addr, tls, options, move |req: Request<Bytes>, _conn| {
        counted.fetch_add(1, Ordering::SeqCst);
        let first = req.uri().path().starts_with("/503");
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut resp = Response::builder().status(if first { 503 } else { 200 });
            if first {
                resp = resp.header("retry-after", "30");
            }
            resp.body(Bytes::new()).unwrap()
        }
    })
    .await
    .unwrap();
    let cfg = HttpConfig {
        ca_file: Some(s.ca_path.clone()),
        max_connections: 1,
        ..HttpConfig::default()
    };
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    // Opens the connection, so the paused request below takes its one stream at once.
    assert_eq!(status(&client, post("/warm-up")).await, 200);
    count.store(0, Ordering::SeqCst);
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.send(post("/503")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting: Vec<_> = (0..5)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.send(post(&format!("/ok/{i}"))).await })
        })
        .collect();
    assert_eq!(first.await.unwrap().unwrap().status, 503);
    for task in waiting {
        let result = task.await.unwrap();
        assert!(matches!(result, Err(HttpError::Paused(_))), "{result:?}");
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "only the request that was answered 503"
    );
}
