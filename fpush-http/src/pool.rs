//! [`Pool`]: the connections of one origin, which one a request gets, and when the pool grows
//! and shrinks.
//!
//! A request takes a stream on the least-loaded HTTP/2 connection with one free, as each
//! connection's server allows (`SETTINGS_MAX_CONCURRENT_STREAMS`, re-read as it changes). When
//! every connection is full and fewer than `max_connections` exist, one task opens one more,
//! never two at a time; meanwhile, and once the pool is at its size, requests wait for a stream.
//! That wait has no bound of its own: the caller's request timeout bounds it. Idle extra
//! connections are closed by their drivers; a connection behind a GOAWAY or dead leaves the
//! pool at once, and its streams in flight finish on it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fpush_traits::ConnectionGauge;
use http_body_util::Full;
use hyper::client::conn::http1;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connect::{Connector, Fresh};
use crate::HttpError;

/// After a failed opening, how long a pool that still has connections waits before trying again.
const OPEN_BACKOFF: Duration = Duration::from_secs(1);
/// Idle HTTP/1.1 connections kept for reuse.
const MAX_IDLE_HTTP1: usize = 4;

/// The connections of one origin.
pub(crate) struct Pool {
    pub(crate) connector: Connector,
    max_connections: usize,
    pub(crate) idle_timeout: Duration,
    state: Mutex<State>,
    /// A stream freed (one waiter woken), or a connection added or an opening ended (all woken).
    changed: Notify,
    opened: AtomicU64,
    http1_idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    epoch: Instant,
}

#[derive(Default)]
struct State {
    conns: Vec<Arc<Conn>>,
    opening: bool,
    /// Failed openings so far, and the last one's error.
    failures: u64,
    last_failure: Option<(bool, String)>,
    no_opening_before: Option<Instant>,
}

/// One HTTP/2 connection in the pool.
pub(crate) struct Conn {
    id: u64,
    pub(crate) sender: h2::client::SendRequest<Bytes>,
    in_flight: AtomicUsize,
    /// The server's stream limit, as last read from the connection.
    limit: AtomicUsize,
    /// Milliseconds since the pool's epoch when the last stream ended.
    last_busy: AtomicU64,
    pub(crate) check_now: Arc<Notify>,
}

/// What a request got to send on.
pub(crate) enum Lease {
    H2(Stream),
    Http1(http1::SendRequest<Full<Bytes>>),
}

/// One stream reserved on a connection; freed when dropped.
pub(crate) struct Stream {
    pool: Arc<Pool>,
    conn: Arc<Conn>,
}

enum Step {
    Lease(Lease),
    Failed(HttpError),
    Wait,
}

impl Pool {
    pub(crate) fn new(
        connector: Connector,
        max_connections: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            max_connections: max_connections.max(1),
            idle_timeout,
            state: Mutex::default(),
            changed: Notify::new(),
            opened: AtomicU64::new(0),
            http1_idle: Mutex::default(),
            epoch: Instant::now(),
        }
    }

    /// A stream (or an idle HTTP/1.1 connection) to send on, waiting as long as it takes; fails
    /// only when an opening made while waiting failed and no connection is left.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Lease, HttpError> {
        let failures_seen = self.lock().failures;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.next_step(failures_seen) {
                Step::Lease(lease) => return Ok(lease),
                Step::Failed(error) => return Err(error),
                Step::Wait => notified.await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_step(self: &Arc<Self>, failures_seen: u64) -> Step {
        let mut state = self.lock();
        if let Some(conn) = least_loaded(&state.conns) {
            return Step::Lease(Lease::H2(self.reserve(conn)));
        }
        // Every connection looks full: limits may have risen since they were read.
        for conn in &state.conns {
            conn.refresh_limit();
        }
        if let Some(conn) = least_loaded(&state.conns) {
            return Step::Lease(Lease::H2(self.reserve(conn)));
        }
        if state.conns.is_empty() {
            if let Some(sender) = self.idle_http1() {
                return Step::Lease(Lease::Http1(sender));
            }
            if !state.opening && state.failures > failures_seen {
                if let Some((tls, reason)) = &state.last_failure {
                    return Step::Failed(self.opening_error(*tls, reason));
                }
            }
        }
        let now = Instant::now();
        let may_open = state.conns.is_empty() || state.no_opening_before.is_none_or(|t| now >= t);
        if !state.opening && state.conns.len() < self.max_connections && may_open {
            state.opening = true;
            tokio::spawn(self.clone().open());
        }
        Step::Wait
    }

    fn reserve(self: &Arc<Self>, conn: Arc<Conn>) -> Stream {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Stream {
            pool: self.clone(),
            conn,
        }
    }

    fn opening_error(&self, tls: bool, reason: &str) -> HttpError {
        let origin = self.connector.origin.text.clone();
        let reason = reason.to_string();
        if tls {
            HttpError::Tls { origin, reason }
        } else {
            HttpError::Connect { origin, reason }
        }
    }

    /// Opens one connection and adds it, or records why it could not.
    async fn open(self: Arc<Self>) {
        let opened = self.connector.open().await;
        let mut added = None;
        let failure = match opened {
            Ok(Fresh::H2(handshake)) => {
                let (sender, connection) = *handshake;
                self.opened.fetch_add(1, Ordering::Relaxed);
                let conn = Arc::new(Conn::new(self.opened(), sender, self.millis()));
                let ready = crate::driver::spawn(connection, &self, &conn);
                // The server's SETTINGS (its stream limit) arrive before the answer to a PING.
                let _ = tokio::time::timeout(self.connector.connect_timeout, ready).await;
                conn.refresh_limit();
                added = Some(conn);
                None
            }
            Ok(Fresh::Http1(sender)) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                self.keep_http1(sender);
                None
            }
            Err(e) => {
                log::debug!(
                    "opening a connection to {} failed: {e}",
                    self.connector.origin.text
                );
                Some((e.is_tls(), connect_reason(e)))
            }
        };
        let mut state = self.lock();
        state.opening = false;
        state.conns.extend(added);
        if let Some(failure) = failure {
            state.failures += 1;
            state.last_failure = Some(failure);
            state.no_opening_before = Some(Instant::now() + OPEN_BACKOFF);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Takes a connection out of the pool (GOAWAY, dead, idle); its streams in flight go on.
    pub(crate) fn remove(&self, id: u64) {
        let mut state = self.lock();
        state.conns.retain(|c| c.id != id);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Removes connection `id` if it is an idle extra: not the last one, no stream in flight,
    /// and none for the idle timeout. True when it was removed.
    pub(crate) fn close_if_idle(&self, id: u64) -> bool {
        let now = self.millis();
        let limit = self.idle_timeout.as_millis() as u64;
        let mut state = self.lock();
        if state.conns.len() < 2 {
            return false;
        }
        let idle = |c: &Arc<Conn>| {
            c.id == id
                && c.in_flight.load(Ordering::Relaxed) == 0
                && now.saturating_sub(c.last_busy.load(Ordering::Relaxed)) >= limit
        };
        let before = state.conns.len();
        state.conns.retain(|c| !idle(c));
        before != state.conns.len()
    }

    /// Asks every connection's driver to prove its peer is still there.
    pub(crate) fn check_all(&self) {
        for conn in &self.lock().conns {
            conn.check_now.notify_one();
        }
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Connections opened so far (TLS handshakes completed).
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// HTTP/2 connections in the pool now.
    pub(crate) fn open_now(&self) -> usize {
        self.lock().conns.len()
    }

    /// Each pooled connection's load and stream limit now, oldest first (a limit the server
    /// never set reads as `u32::MAX`).
    pub(crate) fn gauges(&self) -> Vec<ConnectionGauge> {
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let state = self.lock();
        state
            .conns
            .iter()
            .map(|conn| ConnectionGauge {
                streams_in_flight: to_u32(conn.in_flight.load(Ordering::Relaxed)),
                max_streams: to_u32(conn.limit.load(Ordering::Relaxed)),
            })
            .collect()
    }

    fn idle_http1(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.http1_idle.lock().ok()?;
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps an HTTP/1.1 connection whose answer was read, for the next request.
    pub(crate) fn keep_http1(&self, sender: http1::SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.http1_idle.lock() {
            if idle.len() < MAX_IDLE_HTTP1 {
                idle.push(sender);
            }
        }
        self.changed.notify_one();
    }
}

/// The reason of an opening failure (`Connect` and `Tls` carry one; nothing else occurs).
fn connect_reason(error: HttpError) -> String {
    match error {
        HttpError::Connect { reason, .. } | HttpError::Tls { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// The connection with the fewest streams in flight among those with a stream free; the oldest
/// wins a tie, so light traffic keeps to one connection and extras go idle.
fn least_loaded(conns: &[Arc<Conn>]) -> Option<Arc<Conn>> {
    let mut best: Option<(&Arc<Conn>, usize)> = None;
    for conn in conns {
        let n = conn.in_flight.load(Ordering::Relaxed);
        if n < conn.limit.load(Ordering::Relaxed) && best.is_none_or(|(_, b)| n < b) {
            best = Some((conn, n));
        }
    }
    best.map(|(conn, _)| conn.clone())
}

impl Conn {
    fn new(id: u64, sender: h2::client::SendRequest<Bytes>, now: u64) -> Self {
        let limit = sender.current_max_send_streams();
        Self {
            id,
            sender,
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            last_busy: AtomicU64::new(now),
            check_now: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn refresh_limit(&self) {
        let limit = self.sender.current_max_send_streams();
        self.limit.store(limit, Ordering::Relaxed);
    }
}

impl Stream {
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The connection refused new streams for good (GOAWAY, closed): no request goes there again.
    pub(crate) fn retire(&self) {
        self.pool.remove(self.conn.id);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.conn
            .last_busy
            .store(self.pool.millis(), Ordering::Relaxed);
        self.conn.refresh_limit();
        self.pool.changed.notify_one();
    }
}
