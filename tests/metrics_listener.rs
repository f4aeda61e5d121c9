//! The metrics listener cannot be tied up: idle and pipelining clients leave `/health`
//! answering, at most `max_connections` stay open, one answer per connection, and a request that
//! never completes is cut at the deadline; overlapping scrapes count nothing twice. Loopback
//! only; every test stops by itself.

use std::sync::Arc;
use std::time::Duration;

use fpush::component::LinkState;
use fpush::metrics::{serve_on, ListenerLimits, Metrics, Observed, StateSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// A running listener on a loopback port; stops when dropped.
struct Listener {
    port: u16,
    stop: CancellationToken,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(limits: ListenerLimits) -> Listener {
    start_with(limits, Metrics::new()).await
}

/// A listener answering with `metrics`, the link down and no modules.
async fn start_with(limits: ListenerLimits, metrics: Arc<Metrics>) -> Listener {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let observed = Arc::new(Observed {
        metrics,
        state: Arc::new(|| StateSnapshot {
            modules: Vec::new(),
            in_flight: 0,
            link: LinkState::Down,
        }),
    });
    let stop = CancellationToken::new();
    tokio::spawn(serve_on(listener, limits, observed, stop.clone()));
    Listener { port, stop }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

/// Send `request` on a new connection and read until the server closes it.
async fn exchange(port: u16, request: &str) -> std::io::Result<String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Whether the server has closed `socket` (end of stream or reset), waiting up to `wait`.
async fn closed_by_server(socket: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(wait, socket.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_within_a_second_under_200_idle_and_20_pipelining_clients() {
    timeout(Duration::from_secs(60), async {
        let listener = start(ListenerLimits::default()).await;
        let port = listener.port;
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        let pipelining = CancellationToken::new();
        let mut pipeliners = Vec::new();
        for _ in 0..20 {
            let stop = pipelining.clone();
            pipeliners.push(tokio::spawn(async move {
                let burst = get("/metrics").repeat(20);
                let mut answers = Vec::new();
                while !stop.is_cancelled() {
                    if let Ok(Ok(response)) =
                        timeout(Duration::from_secs(5), exchange(port, &burst)).await
                    {
                        answers.push(response.matches("HTTP/1.1 ").count());
                    }
                }
                answers
            }));
        }

        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..10 {
            let started = Instant::now();
            let response = timeout(Duration::from_secs(1), exchange(port, &get("/health")))
                .await
                .expect("/health answered within a second")
                .unwrap();
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            assert!(started.elapsed() < Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        pipelining.cancel();
        for pipeliner in pipeliners {
            let answers = pipeliner.await.unwrap();
            // No keep-alive: one answer per connection, whatever was pipelined behind it.
            assert!(answers.iter().all(|n| *n <= 1), "{answers:?}");
            assert!(
                answers.contains(&1),
                "a pipelining client was never answered"
            );
        }
        let mut still_open = 0;
        for socket in &mut idle {
            if !closed_by_server(socket, Duration::from_millis(20)).await {
                still_open += 1;
            }
        }
        assert!(still_open <= 64, "{still_open} idle connections kept open");
    })
    .await
    .expect("the test finishes within a minute");
}

#[tokio::test]
async fn a_request_that_never_completes_is_cut_at_the_deadline() {
    let limits = ListenerLimits {
        max_connections: 64,
        deadline: Duration::from_millis(300),
    };
    let listener = start(limits).await;
    let mut socket = TcpStream::connect(("127.0.0.1", listener.port))
        .await
        .unwrap();
    let started = Instant::now();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut socket, Duration::from_secs(5)).await);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

#[tokio::test]
async fn pipelined_requests_get_one_answer_and_the_connection_closes() {
    let listener = start(ListenerLimits::default()).await;
    let requests = [get("/health"), get("/metrics"), get("/ready")].concat();
    let response = timeout(Duration::from_secs(5), exchange(listener.port, &requests))
        .await
        .expect("closed by the server")
        .unwrap();
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
}

#[tokio::test]
async fn beyond_the_cap_the_oldest_idle_connection_gives_way() {
    let limits = ListenerLimits {
        max_connections: 4,
        deadline: Duration::from_secs(10),
    };
    let listener = start(limits).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            TcpStream::connect(("127.0.0.1", listener.port))
                .await
                .unwrap(),
        );
    }
    // Let the listener accept all four before the newcomer arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = timeout(
        Duration::from_secs(5),
        exchange(listener.port, &get("/ready")),
    )
    .await
    .expect("answered")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(closed_by_server(&mut idle[0], Duration::from_secs(1)).await);
    assert!(!closed_by_server(&mut idle[3], Duration::from_millis(100)).await);
}

/// A listener whose `/metrics` answer is far larger than what the kernel buffers between it and
/// a client that does not read (a few MB on loopback): writing it blocks until the deadline.
async fn start_with_a_huge_answer(limits: ListenerLimits) -> Listener {
    let metrics = Metrics::new();
    // Each module adds more than 4 KB to the answer.
    for n in 0..huge_answer_bytes() / 4_000 {
        metrics.module(&format!(
            "module-with-a-long-name-to-fill-the-answer-{n:05}"
        ));
    }
    start_with(limits, metrics).await
}

/// An answer size that cannot fit in the socket buffers: twice the most Linux lets a TCP send
/// buffer grow to (`net.ipv4.tcp_wmem`, 4 MiB by default), with the receive buffer kept small.
fn huge_answer_bytes() -> usize {
    let largest = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    2 * largest.max(4 << 20)
}

/// A connection that asks for `/metrics`, receives the start of the answer, and reads no more
/// (its receive buffer kept small, so that little of the answer fits in it).
async fn ask_and_never_read(port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    stream.write_all(get("/metrics").as_bytes()).await.unwrap();
    let mut start = [0u8; 16];
    timeout(Duration::from_secs(30), stream.read_exact(&mut start))
        .await
        .expect("the answer starts")
        .unwrap();
    assert!(start.starts_with(b"HTTP/1.1 200"));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_slot_answering_a_client_that_never_reads_the_oldest_gives_way_to_health() {
    let limits = ListenerLimits {
        max_connections: 4,
        // Longer than the test: only eviction can free a slot.
        deadline: Duration::from_secs(600),
    };
    let listener = start_with_a_huge_answer(limits).await;
    let mut stuck = Vec::new();
    for _ in 0..4 {
        stuck.push(ask_and_never_read(listener.port).await);
    }
    let response = timeout(
        Duration::from_secs(30),
        exchange(listener.port, &get("/health")),
    )
    .await
    .expect("/health answered")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    // The oldest was cut off in the middle of its answer to make room.
    let mut rest = Vec::new();
    let _ = timeout(Duration::from_secs(30), stuck[0].read_to_end(&mut rest))
        .await
        .expect("the oldest connection was closed");
    let text = String::from_utf8_lossy(&rest);
    let (head, body) = text.split_once("\r\n\r\n").expect("the headers arrived");
    let declared: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|length| length.trim().parse().ok())
        .expect("a content length");
    assert!(
        declared > huge_answer_bytes(),
        "an answer of {declared} bytes only"
    );
    assert!(body.len() < declared, "the oldest answer was written whole");
}

/// The state of one module whose platform has failed `failures` token refreshes so far.
fn refresh_failures_state(failures: u64) -> StateSnapshot {
    StateSnapshot {
        modules: vec![fpush::metrics::ModuleGauges {
            module: "fcm".into(),
            ratelimit_entries: 0,
            dead_tokens: 0,
            wipe_guard_tripped: false,
            provider: fpush_traits::ProviderSnapshot {
                token_refresh_failures: failures,
                ..Default::default()
            },
            platform: fpush::metrics::PlatformIdentity::default(),
            registrations: None,
        }],
        in_flight: 0,
        link: LinkState::Down,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_scrapes_never_count_a_followed_count_twice() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    // The first scrape reads the platform's count (5) and is held before it renders; a second
    // scrape reads the count after it grew (7) and renders. The first renders last.
    let reads = Arc::new(AtomicUsize::new(0));
    let release = Arc::new((Mutex::new(false), Condvar::new()));
    let (state_reads, state_release) = (reads.clone(), release.clone());
    let state = move || {
        let read = state_reads.fetch_add(1, Ordering::SeqCst);
        if read > 0 {
            return refresh_failures_state(7);
        }
        // Waits off the runtime's workers: the other scrape and the test go on meanwhile.
        tokio::task::block_in_place(|| {
            let (released, wake) = &*state_release;
            let held = released.lock().unwrap();
            let _ = wake
                .wait_timeout_while(held, Duration::from_secs(10), |released| !*released)
                .unwrap();
        });
        refresh_failures_state(5)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let observed = Arc::new(Observed {
        metrics: Metrics::new(),
        state: Arc::new(state),
    });
    let stop = CancellationToken::new();
    tokio::spawn(serve_on(
        listener,
        ListenerLimits::default(),
        observed,
        stop.clone(),
    ));
    let _stop = Listener { port, stop };

    let first = tokio::spawn(async move { exchange(port, &get("/metrics")).await });
    while reads.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut second = tokio::spawn(async move { exchange(port, &get("/metrics")).await });
    // Served meanwhile, or held until the first is done: either way both end.
    let second = match timeout(Duration::from_secs(1), &mut second).await {
        Ok(done) => done,
        Err(_) => {
            release_scrape(&release);
            second.await
        }
    };
    release_scrape(&release);
    for answer in [first.await.unwrap(), second.unwrap()] {
        assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
    }
    let last = exchange(port, &get("/metrics")).await.unwrap();
    let series = r#"fpush_token_refresh_failures_total{module="fcm"} "#;
    let line = last.lines().find(|line| line.starts_with(series));
    assert_eq!(line, Some(&*format!("{series}7")), "{last}");
}

fn release_scrape(release: &(std::sync::Mutex<bool>, std::sync::Condvar)) {
    *release.0.lock().unwrap() = true;
    release.1.notify_all();
}

#[tokio::test]
async fn only_get_and_head_are_served_other_methods_are_refused_with_the_allowed_ones() {
    let listener = start(ListenerLimits::default()).await;
    let head = exchange(listener.port, "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {head}"
    );
    for request in [
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n",
        // A 2xx answer to CONNECT would be the start of a tunnel, without a body.
        "CONNECT /health HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let response = exchange(listener.port, request).await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 405"),
            "{request}: {response}"
        );
        let lower = response.to_ascii_lowercase();
        assert!(lower.contains("\r\nallow: get, head\r\n"), "{response}");
        assert!(response.ends_with("use GET or HEAD\n"), "{response}");
    }
}
