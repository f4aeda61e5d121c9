//! The client against the testkit's TLS server: multiplexing, fallback, timeouts, reconnects.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{setup, Setup};
use fpush_http::{ClientIdentity, HttpClient, HttpConfig, HttpError};
use fpush_testkit::tls::{serve, ClientAuth, Connection, TestServer};
use http::{Request, Response, StatusCode};

fn config(s: &Setup) -> HttpConfig {
    HttpConfig {
        ca_file: Some(s.ca_path.clone()),
        client_identity: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..HttpConfig::default()
    }
}

fn post(path: &str, body: &'static str) -> Request<Bytes> {
    Request::post(path)
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

async fn echo_server(s: &Setup) -> TestServer {
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    serve(
        tls,
        |req: Request<Bytes>, conn: Arc<Connection>| async move {
            let alpn = String::from_utf8_lossy(conn.alpn.as_deref().unwrap_or(b"-")).to_string();
            Response::builder()
                .header("x-alpn", alpn)
                .header("x-path", req.uri().path())
                .body(req.into_body())
                .unwrap()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn concurrent_requests_share_one_http2_connection() {
    let s = setup();
    let server = echo_server(&s).await;
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/item/{i}");
            client
                .send(
                    Request::post(path.as_str())
                        .body(Bytes::from(path.clone()))
                        .unwrap(),
                )
                .await
                .map(|r| (path, r))
        }));
    }
    for task in tasks {
        let (path, resp) = task.await.unwrap().unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.headers["x-alpn"], "h2");
        assert_eq!(resp.headers["x-path"], path.as_str());
        assert_eq!(resp.body, path.as_bytes());
    }
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(client.connections_opened(), 1);
}

#[tokio::test]
async fn connection_specific_headers_are_left_out_on_http2() {
    let s = setup();
    let server = echo_server(&s).await;
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let request = Request::post("/item")
        .header("connection", "keep-alive")
        .header("transfer-encoding", "chunked")
        .header("upgrade", "h2c")
        .header("host", "elsewhere.example")
        .header("x-kept", "1")
        .body(Bytes::from_static(b"body"))
        .unwrap();
    // h2 refuses to send any of them: the request only goes out without them.
    let resp = client.send(request).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.headers["x-alpn"], "h2");
    assert_eq!(resp.body, &b"body"[..]);
}

#[tokio::test]
async fn every_header_http2_forbids_is_left_out_and_costs_no_connection() {
    let s = setup();
    let server = echo_server(&s).await;
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let request = Request::post("/item")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .body(Bytes::from_static(b"body"))
        .unwrap();
    let resp = client.send(request).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn falls_back_to_http1_when_the_server_picks_it() {
    let s = setup();
    let tls = s
        .pki
        .server_config_with_alpn(ClientAuth::None, &[b"http/1.1"])
        .unwrap();
    let server = serve(
        tls,
        |req: Request<Bytes>, conn: Arc<Connection>| async move {
            let alpn = String::from_utf8_lossy(conn.alpn.as_deref().unwrap_or(b"-")).to_string();
            let host = req.headers()["host"].to_str().unwrap().to_string();
            Response::new(Bytes::from(format!("{alpn} {host} {}", req.uri().path())))
        },
    )
    .await
    .unwrap();
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    for _ in 0..3 {
        let resp = client.send(post("/token", "grant")).await.unwrap();
        let expected = format!("http/1.1 localhost:{} /token", server.addr().port());
        assert_eq!(resp.body, expected.as_bytes());
    }
    // Sequential requests reuse the idle HTTP/1.1 connection.
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn a_silent_server_times_out_and_is_not_retryable() {
    let s = setup();
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let server = serve(
        tls,
        |_req: Request<Bytes>, _conn: Arc<Connection>| async move {
            std::future::pending::<Response<Bytes>>().await
        },
    )
    .await
    .unwrap();
    let mut cfg = config(&s);
    cfg.request_timeout = Duration::from_millis(300);
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    let err = client.send(post("/stall", "x")).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(!err.not_sent());
}

#[tokio::test]
async fn a_dropped_connection_fails_in_flight_and_the_next_request_reconnects() {
    let s = setup();
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let server = serve(
        tls,
        |req: Request<Bytes>, conn: Arc<Connection>| async move {
            if req.uri().path() == "/reset" {
                conn.drop_connection();
                std::future::pending::<()>().await;
            }
            Response::new(Bytes::from_static(b"ok"))
        },
    )
    .await
    .unwrap();
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let err = client.send(post("/reset", "x")).await.unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    assert!(
        !err.not_sent(),
        "a request the server received may have been processed: {err}"
    );
    let resp = client.send(post("/after", "x")).await.unwrap();
    assert_eq!(resp.body, "ok");
    assert_eq!(server.connections_accepted(), 2);
}

#[tokio::test]
async fn goaway_moves_later_requests_to_a_new_connection() {
    let s = setup();
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let server = serve(
        tls,
        |req: Request<Bytes>, conn: Arc<Connection>| async move {
            if req.uri().path() == "/last" {
                conn.goaway();
            }
            Response::new(Bytes::from(conn.id.to_string()))
        },
    )
    .await
    .unwrap();
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let first = client.send(post("/last", "x")).await.unwrap();
    assert_eq!(
        first.body, "1",
        "the stream in flight at GOAWAY is still answered"
    );
    // The client learns of the GOAWAY asynchronously: either the old connection is already
    // forgotten, or the request is refused unsent on it and moved to a new one.
    let second = client.send(post("/next", "x")).await.unwrap();
    assert_eq!(second.body, "2");
    assert_eq!(server.connections_accepted(), 2);
}

#[tokio::test]
async fn connect_failure_is_not_sent() {
    let s = setup();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = HttpClient::new(&format!("https://localhost:{port}"), config(&s)).unwrap();
    let err = client.send(post("/", "x")).await.unwrap_err();
    assert!(matches!(err, HttpError::Connect { .. }), "{err}");
    assert!(err.not_sent());
}

#[tokio::test]
async fn refused_tls_and_untrusted_servers_are_connect_failures() {
    let s = setup();
    let server = echo_server(&s).await;
    let mut cfg = config(&s);
    cfg.ca_file = None;
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    let err = client.send(post("/", "x")).await.unwrap_err();
    assert!(err.not_sent() && err.is_tls(), "{err}");

    server.set_refuse_tls(true);
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let err = client.send(post("/", "x")).await.unwrap_err();
    assert!(matches!(err, HttpError::Connect { .. }), "{err}");
    assert!(err.not_sent() && !err.is_tls(), "{err}");
}

#[tokio::test]
async fn presents_the_client_certificate() {
    let s = setup();
    let tls = s.pki.server_config(ClientAuth::Required).unwrap();
    let server = serve(
        tls,
        |_req: Request<Bytes>, conn: Arc<Connection>| async move {
            let status = if conn.client_cert.is_some() { 200 } else { 403 };
            Response::builder()
                .status(status)
                .body(Bytes::new())
                .unwrap()
        },
    )
    .await
    .unwrap();
    let (chain, key) = s.pki.client_cert("com.example.app").unwrap().identity();
    let mut cfg = config(&s);
    cfg.client_identity = Some(ClientIdentity { chain, key });
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    let resp = client.send(post("/", "x")).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_answers_are_refused() {
    let s = setup();
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let server = serve(
        tls,
        |_req: Request<Bytes>, _conn: Arc<Connection>| async move {
            Response::new(Bytes::from(vec![b'x'; fpush_http::MAX_RESPONSE_BODY + 1]))
        },
    )
    .await
    .unwrap();
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let err = client.send(post("/", "x")).await.unwrap_err();
    assert!(matches!(err, HttpError::BodyTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn oversized_answer_headers_are_refused_and_not_resent() {
    let s = setup();
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let server = serve(
        tls,
        |_req: Request<Bytes>, _conn: Arc<Connection>| async move {
            // 1 MiB of headers: no provider answers like that, and each stream in flight
            // would hold it.
            let mut resp = Response::builder();
            for i in 0..32 {
                resp = resp.header(format!("x-big-{i}"), "x".repeat(32 * 1024));
            }
            resp.body(Bytes::new()).unwrap()
        },
    )
    .await
    .unwrap();
    let client = HttpClient::new(&server.origin(), config(&s)).unwrap();
    let err = client.send(post("/", "x")).await.unwrap_err();
    assert!(
        !err.not_sent() && !err.is_timeout(),
        "the server processed it: {err}"
    );
    // The connection stays usable for answers of a sane size.
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn a_stream_refused_after_its_answer_began_was_sent() {
    // The provider answered the head, then refused the stream (as a GOAWAY below it would):
    // it had the request, so sending it again could notify twice.
    let s = setup();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let tls = s.pki.server_config_with_alpn(ClientAuth::None, &[b"h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(acceptor.accept(tcp).await.unwrap())
            .await
            .unwrap();
        let mut requests = 0;
        while let Some(Ok((_request, mut respond))) = conn.accept().await {
            requests += 1;
            let mut body = respond.send_response(Response::new(()), false).unwrap();
            body.send_data(Bytes::from_static(b"{"), false).unwrap();
            // The connection goes on being driven (and so written) while the handler waits:
            // the head and a first piece reach the client before the stream is refused.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                body.send_reset(h2::Reason::REFUSED_STREAM);
            });
        }
        requests
    });
    let client = HttpClient::new(&origin, config(&s)).unwrap();
    let err = client.send(post("/", "x")).await.unwrap_err();
    assert!(!err.not_sent() && !err.is_timeout(), "{err}");
    drop(client);
    assert_eq!(server.await.unwrap(), 1, "sent once");
}

#[test]
fn construction_needs_no_runtime_and_checks_the_ca_file() {
    let s = setup();
    assert!(HttpClient::new("https://localhost:1", config(&s)).is_ok());
    let mut cfg = config(&s);
    cfg.ca_file = Some(s.ca_path.with_file_name("missing.pem"));
    let err = HttpClient::new("https://localhost:1", cfg).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let not_pem = s.ca_path.with_file_name("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let mut cfg = config(&s);
    cfg.ca_file = Some(not_pem);
    assert!(matches!(
        HttpClient::new("https://localhost:1", cfg),
        Err(HttpError::CaFileEmpty { .. })
    ));
}
