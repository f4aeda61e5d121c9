//! The connection pool against the testkit's TLS server: stream limits, growth one connection
//! at a time, bounded waiting, GOAWAY mid-burst, a connection dying under load, idle extras.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{setup, Setup};
use fpush_http::{HttpClient, HttpConfig, HttpError, HttpResponse};
use fpush_testkit::tls::{serve_with, ClientAuth, Connection, ServeOptions, TestServer};
use http::{Request, Response};

fn config(s: &Setup, max_connections: usize) -> HttpConfig {
    HttpConfig {
        ca_file: Some(s.ca_path.clone()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        max_connections,
        ..HttpConfig::default()
    }
}

/// Streams in flight per connection now, and the most each ever had.
#[derive(Default)]
struct Load {
    now: Mutex<HashMap<u64, usize>>,
    peak: Mutex<HashMap<u64, usize>>,
}

impl Load {
    fn enter(&self, conn: u64) {
        let mut now = self.now.lock().unwrap();
        let n = now.entry(conn).or_default();
        *n += 1;
        let mut peak = self.peak.lock().unwrap();
        let p = peak.entry(conn).or_default();
        *p = (*p).max(*n);
    }

    fn leave(&self, conn: u64) {
        *self.now.lock().unwrap().get_mut(&conn).unwrap() -= 1;
    }

    fn peaks(&self) -> HashMap<u64, usize> {
        self.peak.lock().unwrap().clone()
    }
}

/// A server allowing `streams` per connection that answers after `delay` with its connection
/// id; `fault` may act on the connection for the n-th request (1-based).
async fn slow_server(
    s: &Setup,
    streams: u32,
    delay: Duration,
    load: Arc<Load>,
    fault: impl Fn(usize, &Connection) + Send + Sync + 'static,
) -> TestServer {
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let options = ServeOptions {
        max_concurrent_streams: streams,
    };
    let count = Arc::new(AtomicUsize::new(0));
    let fault = Arc::new(fault);
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    serve_with(
        addr,
        tls,
        options,
        move |_req: Request<Bytes>, conn: Arc<Connection>| {
            let load = load.clone();
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let fault = fault.clone();
            async move {
                load.enter(conn.id);
                fault(n, &conn);
                tokio::time::sleep(delay).await;
                load.leave(conn.id);
                Response::new(Bytes::from(conn.id.to_string()))
            }
        },
    )
    .await
    .unwrap()
}

async fn burst(client: &HttpClient, n: usize) -> Vec<Result<HttpResponse, HttpError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let req = Request::post(format!("/push/{i}"))
                    .body(Bytes::from_static(b"{}"))
                    .unwrap();
                client.send(req).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn no_fault(_: usize, _: &Connection) {}

#[tokio::test]
async fn a_burst_opens_what_the_stream_limits_need_and_respects_them() {
    let s = setup();
    let load = Arc::new(Load::default());
    let server = slow_server(&s, 5, Duration::from_millis(300), load.clone(), no_fault).await;
    let client = HttpClient::new(&server.origin(), config(&s, 8)).unwrap();
    let results = burst(&client, 30).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // 30 at once over 5 streams each: six connections, each at its limit, none beyond.
    assert_eq!(client.connections_opened(), 6);
    assert_eq!(server.connections_accepted(), 6);
    let peaks = load.peaks();
    assert_eq!(peaks.len(), 6);
    assert!(peaks.values().all(|&p| p <= 5), "{peaks:?}");
}

#[tokio::test]
async fn at_max_connections_requests_wait_for_a_stream_instead_of_failing() {
    let s = setup();
    let load = Arc::new(Load::default());
    let server = slow_server(&s, 5, Duration::from_millis(200), load.clone(), no_fault).await;
    let client = HttpClient::new(&server.origin(), config(&s, 2)).unwrap();
    let started = tokio::time::Instant::now();
    let results = burst(&client, 30).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.connections_accepted(), 2);
    // Ten streams in all: three rounds of 200 ms.
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(load.peaks().values().all(|&p| p <= 5));
}

#[tokio::test]
async fn waiting_for_a_stream_is_bounded_by_the_request_timeout() {
    let s = setup();
    let load = Arc::new(Load::default());
    let server = slow_server(&s, 1, Duration::from_secs(2), load, no_fault).await;
    let mut cfg = config(&s, 1);
    cfg.request_timeout = Duration::from_millis(500);
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    let results = burst(&client, 2).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(e) if e.is_timeout())),
        "{results:?}"
    );
    assert_eq!(server.connections_accepted(), 1);
}

#[tokio::test]
async fn goaway_mid_burst_fails_nothing() {
    let s = setup();
    let load = Arc::new(Load::default());
    let goaway = |n: usize, conn: &Connection| {
        if n == 10 {
            conn.goaway();
        }
    };
    let server = slow_server(&s, 20, Duration::from_millis(100), load, goaway).await;
    let client = HttpClient::new(&server.origin(), config(&s, 8)).unwrap();
    let results = burst(&client, 60).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let first: usize = results
        .iter()
        .filter(|r| r.as_ref().unwrap().body == "1")
        .count();
    assert!(
        first >= 10,
        "the streams in flight at GOAWAY were answered on it: {first}"
    );
    assert!(server.connections_accepted() >= 2);
    // Later requests use the connections that are left.
    assert!(burst(&client, 10).await.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_connection_dying_under_load_fails_only_its_own_streams() {
    let s = setup();
    let load = Arc::new(Load::default());
    let dies = |n: usize, conn: &Connection| {
        if n == 25 {
            conn.drop_connection();
        }
    };
    let server = slow_server(&s, 10, Duration::from_millis(200), load, dies).await;
    let client = HttpClient::new(&server.origin(), config(&s, 8)).unwrap();
    let results = burst(&client, 40).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!failed.is_empty() && failed.len() <= 10, "{failed:?}");
    // What was in flight may have been processed: reported, never resent.
    assert!(
        failed.iter().all(|e| !e.not_sent() && !e.is_timeout()),
        "{failed:?}"
    );
    assert!(burst(&client, 40).await.iter().all(Result::is_ok));
}

#[tokio::test]
async fn idle_extra_connections_close_and_one_stays() {
    let s = setup();
    let load = Arc::new(Load::default());
    let server = slow_server(&s, 5, Duration::from_millis(100), load, no_fault).await;
    let mut cfg = config(&s, 8);
    cfg.idle_timeout = Duration::from_millis(200);
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    assert!(burst(&client, 15).await.iter().all(Result::is_ok));
    assert_eq!(client.connections_open(), 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(client.connections_open(), 1);
    // The one left carries on.
    assert!(burst(&client, 5).await.iter().all(Result::is_ok));
    assert_eq!(client.connections_opened(), 3);
}

#[tokio::test]
async fn when_no_connection_can_be_made_waiting_requests_fail_at_once() {
    let s = setup();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = HttpClient::new(&format!("https://localhost:{port}"), config(&s, 8)).unwrap();
    let started = tokio::time::Instant::now();
    let results = burst(&client, 20).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(e @ HttpError::Connect { .. }) if e.not_sent())),
        "{results:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_gauges_show_each_connection_its_streams_and_its_limit() {
    let s = setup();
    let load = Arc::new(Load::default());
    // Answers late enough that a loaded machine still sees every request in flight.
    let server = slow_server(&s, 5, Duration::from_secs(2), load, no_fault).await;
    let client = HttpClient::new(&server.origin(), config(&s, 8)).unwrap();
    let before = client.gauges();
    assert!(
        before.connections.is_empty(),
        "no connection before a request"
    );
    assert_eq!((before.connections_opened, before.paused_for), (0, None));

    let running = {
        let client = client.clone();
        tokio::spawn(async move { burst(&client, 7).await })
    };
    // Seven requests over five streams each: one full connection, one with two.
    let mut gauges = client.gauges();
    for _ in 0..150 {
        let busy: u32 = gauges.connections.iter().map(|c| c.streams_in_flight).sum();
        if busy == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        gauges = client.gauges();
    }
    let mut streams: Vec<u32> = gauges
        .connections
        .iter()
        .map(|c| c.streams_in_flight)
        .collect();
    streams.sort_unstable();
    assert_eq!(streams, vec![2, 5], "{gauges:?}");
    assert!(gauges.connections.iter().all(|c| c.max_streams == 5));
    assert_eq!(gauges.connections_opened, 2);
    assert!(running.await.unwrap().iter().all(Result::is_ok));

    let after = client.gauges();
    assert!(after.connections.iter().all(|c| c.streams_in_flight == 0));
    assert_eq!(after.connections.len(), 2);
}

/// A server that completes the TLS handshake (ALPN `h2`) and closes every connection at once,
/// the way an overloaded frontend or a broken proxy does; counts the connections it took.
async fn closing_server(s: &Setup) -> (String, Arc<AtomicUsize>) {
    raw_server(s, |tls| async move {
        drop(tls);
        Ok(())
    })
    .await
}

/// Sends one push that must fail to open a connection (and so was never sent).
async fn a_failed_opening(client: &HttpClient) {
    let req = Request::post("/push")
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    let result = client.send(req).await;
    assert!(
        matches!(&result, Err(e @ HttpError::Connect { .. }) if e.not_sent()),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_connection_closed_during_its_opening_fails_the_opening_and_never_joins_the_pool() {
    let s = setup();
    let (origin, accepted) = closing_server(&s).await;
    let client = HttpClient::new(&origin, config(&s, 8)).unwrap();
    a_failed_opening(&client).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one opening for one request, not one per refusal"
    );
    assert_eq!(client.connections_open(), 0);
    assert!(client.gauges().connections.is_empty());
}

/// Writes one HTTP/2 frame.
async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let len = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    out.write_all(&frame).await
}

/// `SETTINGS_MAX_CONCURRENT_STREAMS = streams`.
fn max_streams(streams: u32) -> Vec<u8> {
    let mut payload = vec![0, 3];
    payload.extend_from_slice(&streams.to_be_bytes());
    payload
}

/// The TLS stream a raw server's connection runs on.
type RawTls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A TLS listener whose connections `serve` speaks HTTP/2 to frame by frame (what the test kit's
/// server cannot be made to do); counts the connections it took.
async fn raw_server<F, Fut>(s: &Setup, serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(RawTls) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(s.pki.server_config(ClientAuth::None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            if let Ok(tls) = acceptor.accept(tcp).await {
                tokio::spawn(serve(tls));
            }
        }
    });
    (format!("https://localhost:{port}"), accepted)
}

/// One frame read by a raw server.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    async fn read<R: tokio::io::AsyncRead + Unpin>(input: &mut R) -> std::io::Result<Frame> {
        use tokio::io::AsyncReadExt;
        let mut head = [0; 9];
        input.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        input.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
            payload,
        })
    }

    /// Acknowledges a SETTINGS or answers a PING; false for any other frame.
    async fn acknowledge<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        out: &mut W,
    ) -> std::io::Result<bool> {
        match (self.kind, self.flags & 1) {
            (4, 0) => write_frame(out, 4, 1, 0, &[]).await?,
            (6, 0) => write_frame(out, 6, 1, 0, &self.payload).await?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Reads the client's preface and sends the server's SETTINGS allowing `streams`.
async fn open_raw<S>(tls: &mut S, streams: u32) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut preface = [0; 24];
    tls.read_exact(&mut preface).await?;
    write_frame(tls, 4, 0, 0, &max_streams(streams)).await
}

/// An HTTP/2 server the way APNS behaves: it allows one stream per connection at first and
/// raises the limit to 100 with its first answer. Each request is answered `200` after
/// `delay`; `peak` is the most streams it ever had open at once.
async fn raising_server(s: &Setup, delay: Duration, peak: Arc<AtomicUsize>) -> String {
    let serve = move |tls| serve_raising(tls, delay, peak.clone());
    raw_server(s, serve).await.0
}

/// One connection of [`raising_server`], frame by frame.
async fn serve_raising(
    mut tls: RawTls,
    delay: Duration,
    peak: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    open_raw(&mut tls, 1).await?;
    let (mut input, output) = tokio::io::split(tls);
    let output = Arc::new(tokio::sync::Mutex::new(output));
    let open = Arc::new(AtomicUsize::new(0));
    let raised = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let frame = Frame::read(&mut input).await?;
        if frame.acknowledge(&mut *output.lock().await).await? || frame.kind != 1 {
            continue;
        }
        peak.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        let (output, open, raised) = (output.clone(), open.clone(), raised.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut out = output.lock().await;
            if !raised.swap(true, Ordering::SeqCst) {
                write_frame(&mut *out, 4, 0, 0, &max_streams(100)).await?;
            }
            open.fetch_sub(1, Ordering::SeqCst);
            // `:status: 200` (HPACK static index 8), END_HEADERS | END_STREAM.
            write_frame(&mut *out, 1, 5, frame.stream, &[0x88]).await
        });
    }
}

#[tokio::test]
async fn requests_waiting_for_a_stream_all_go_when_the_provider_raises_its_limit() {
    let s = setup();
    let peak = Arc::new(AtomicUsize::new(0));
    let origin = raising_server(&s, Duration::from_millis(200), peak.clone()).await;
    let mut cfg = config(&s, 1);
    cfg.request_timeout = Duration::from_secs(3);
    let client = HttpClient::new(&origin, cfg).unwrap();
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .send(Request::get("/").body(Bytes::new()).unwrap())
                    .await
            })
        })
        .collect();
    for task in tasks {
        let result = task.await.unwrap();
        assert!(matches!(&result, Ok(r) if r.status == 200), "{result:?}");
    }
    // One answer at the first limit, then the other 39 together: two rounds, not forty.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(peak.load(Ordering::SeqCst) > 1);
}

/// A server that speaks only HTTP/1.1 and answers each request after `delay`.
async fn http1_server(s: &Setup, delay: Duration) -> TestServer {
    let tls = s
        .pki
        .server_config_with_alpn(ClientAuth::None, &[b"http/1.1"])
        .unwrap();
    serve_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        tls,
        ServeOptions::default(),
        move |_req: Request<Bytes>, _conn: Arc<Connection>| async move {
            tokio::time::sleep(delay).await;
            Response::new(Bytes::new())
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn http1_connections_are_limited_like_http2_ones() {
    let s = setup();
    let server = http1_server(&s, Duration::from_millis(200)).await;
    let client = HttpClient::new(&server.origin(), config(&s, 2)).unwrap();
    let results = burst(&client, 12).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // One request per HTTP/1.1 connection at a time: two connections carry all twelve.
    assert_eq!(server.connections_accepted(), 2);
    assert!(burst(&client, 4).await.iter().all(Result::is_ok));
    assert_eq!(server.connections_accepted(), 2, "the idle ones are reused");
}

#[tokio::test]
async fn idle_extra_http1_connections_close_and_one_stays() {
    let s = setup();
    let server = http1_server(&s, Duration::from_millis(100)).await;
    let mut cfg = config(&s, 4);
    cfg.idle_timeout = Duration::from_millis(200);
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    assert!(burst(&client, 4).await.iter().all(Result::is_ok));
    assert_eq!(server.connections_accepted(), 4);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The extras closed, one stayed: the next burst opens new ones beside it.
    assert!(burst(&client, 4).await.iter().all(Result::is_ok));
    let accepted = server.connections_accepted();
    assert!(
        (5..8).contains(&accepted),
        "{accepted} connections accepted"
    );
}

/// An HTTP/2 server that announces a server push (`PUSH_PROMISE` for `GET /`) before each
/// answer; counts the connections it took.
async fn pushing_server(s: &Setup) -> (String, Arc<AtomicUsize>) {
    raw_server(s, serve_pushing).await
}

/// One connection of [`pushing_server`], frame by frame.
async fn serve_pushing(mut tls: RawTls) -> std::io::Result<()> {
    open_raw(&mut tls, 100).await?;
    let mut promised = 2u32;
    loop {
        let frame = Frame::read(&mut tls).await?;
        if frame.acknowledge(&mut tls).await? || frame.kind != 1 {
            continue;
        }
        // Promised stream id, then `:method GET`, `:scheme https`, `:path /` and
        // `:authority localhost` (HPACK), END_HEADERS.
        let mut promise = promised.to_be_bytes().to_vec();
        promise.extend_from_slice(&[0x82, 0x87, 0x84, 0x41, 9]);
        promise.extend_from_slice(b"localhost");
        write_frame(&mut tls, 5, 4, frame.stream, &promise).await?;
        promised += 2;
        write_frame(&mut tls, 1, 5, frame.stream, &[0x88]).await?;
    }
}

#[tokio::test]
async fn a_provider_cannot_push_streams_at_us() {
    let s = setup();
    let (origin, _) = pushing_server(&s).await;
    let client = HttpClient::new(&origin, config(&s, 1)).unwrap();
    // A pushed stream is never read: each would be held (h2 does not bound them by default)
    // as long as the request it came with. Advertising no push makes one a protocol error.
    let result = client
        .send(Request::get("/").body(Bytes::new()).unwrap())
        .await;
    assert!(
        matches!(&result, Err(e) if !e.not_sent() && !e.is_timeout()),
        "{result:?}"
    );
}

/// An HTTP/2 server that sends GOAWAY (last stream 0) right after its SETTINGS on every
/// connection, answers PINGs and keeps the connection open; counts the connections it took.
async fn goaway_server(s: &Setup) -> (String, Arc<AtomicUsize>) {
    raw_server(s, serve_goaway).await
}

/// One connection of [`goaway_server`], frame by frame.
async fn serve_goaway(mut tls: RawTls) -> std::io::Result<()> {
    open_raw(&mut tls, 100).await?;
    // Last stream 0, NO_ERROR.
    write_frame(&mut tls, 7, 0, 0, &[0; 8]).await?;
    loop {
        Frame::read(&mut tls).await?.acknowledge(&mut tls).await?;
    }
}

#[tokio::test]
async fn a_connection_refused_by_goaway_at_once_is_a_failed_opening() {
    let s = setup();
    let (origin, accepted) = goaway_server(&s).await;
    let client = HttpClient::new(&origin, config(&s, 8)).unwrap();
    for round in 1..=5 {
        a_failed_opening(&client).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            round,
            "one opening a request"
        );
    }
    assert_eq!(client.connections_open(), 0);
}

/// An idle extra connection closes after the idle timeout even while requests on another
/// connection keep timing out: each timeout asks every driver for a PING, and the driver's
/// idle timer restarted on every wake, so timeouts more often than every half idle timeout
/// kept every extra connection open for good.
#[tokio::test]
async fn idle_extra_connections_close_while_other_requests_time_out() {
    let s = setup();
    let tls = s.pki.server_config(ClientAuth::None).unwrap();
    let options = ServeOptions {
        max_concurrent_streams: 5,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = serve_with(
        addr,
        tls,
        options,
        |req: Request<Bytes>, _conn| async move {
            let stall = req.uri().path().starts_with("/stall");
            let delay = if stall { 10_000 } else { 100 };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Response::new(Bytes::new())
        },
    )
    .await
    .unwrap();
    let mut cfg = config(&s, 8);
    cfg.request_timeout = Duration::from_millis(300);
    cfg.idle_timeout = Duration::from_secs(1);
    let client = HttpClient::new(&server.origin(), cfg).unwrap();
    let results = burst(&client, 15).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(client.connections_open(), 3);
    // One request at a time, each timing out on the oldest connection, for three seconds.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let result = client
            .send(Request::post("/stall").body(Bytes::new()).unwrap())
            .await;
        assert!(matches!(&result, Err(e) if e.is_timeout()), "{result:?}");
    }
    assert_eq!(
        client.connections_open(),
        1,
        "the two extras sat idle for three seconds with a one-second idle timeout"
    );
}
