//! [`Pool`]: the connections of one origin, which one a request gets, and when the pool grows
//! and shrinks.
//!
//! A request takes a stream on the least-loaded HTTP/2 connection with one free, as each
//! connection's server allows (`SETTINGS_MAX_CONCURRENT_STREAMS`, re-read as it changes). When
//! every connection is full, requests wait for a stream; the pool grows by one connection (never
//! two openings at a time, never beyond `max_connections`) only when the rate of requests keeps
//! needing more streams than it has, or its waiters would wait long: see [`should_grow`].
//! That wait has no bound of its own: the caller's request timeout bounds it. Idle extra
//! connections are closed by their drivers (idle HTTP/1.1 ones by a sweep, [`sweep_http1`]);
//! a connection behind a GOAWAY or dead leaves the pool at once, and its streams in flight
//! finish on it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use fpush_traits::ConnectionGauge;
use http_body_util::Full;
use hyper::client::conn::http1;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connect::{Connector, Fresh, H2Handshake};
use crate::HttpError;

/// After a failed opening, how long a pool that still has connections waits before trying again.
const OPEN_BACKOFF: Duration = Duration::from_secs(1);
/// Why an opening failed when the server closed (or started closing, GOAWAY) the connection
/// right after the handshake.
const CLOSED: &str = "the server closed the connection during the HTTP/2 handshake";
/// Idle HTTP/1.1 connections kept for reuse.
const MAX_IDLE_HTTP1: usize = 4;
/// Without a recent request rate, the pool grows when its waiters would wait this long for
/// streams to free up.
const GROW_AFTER: Duration = Duration::from_millis(30);
/// Requests are counted over windows this long to know their rate.
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// A window longer than this many [`RATE_WINDOW`]s (nobody waited meanwhile) says nothing
/// about the rate now.
const RATE_WINDOW_STALE: u32 = 4;

/// The connections of one origin.
pub(crate) struct Pool {
    pub(crate) connector: Connector,
    max_connections: usize,
    pub(crate) idle_timeout: Duration,
    state: Mutex<State>,
    /// A stream freed (one waiter woken), or a connection added or an opening ended (all woken).
    changed: Notify,
    opened: AtomicU64,
    stream_time: StreamTime,
    /// Idle HTTP/1.1 connections, the longest idle first.
    http1_idle: Mutex<Vec<Http1Conn>>,
    /// HTTP/1.1 connections open now, busy or idle: they count against `max_connections`.
    http1_open: AtomicUsize,
    /// A task closing idle extra HTTP/1.1 connections is on (set and cleared under
    /// `http1_idle`'s lock).
    http1_sweep: AtomicBool,
    epoch: Instant,
}

#[derive(Default)]
struct State {
    conns: Vec<Arc<Conn>>,
    opening: bool,
    /// Requests waiting for a stream now.
    waiting: usize,
    arrivals: Arrivals,
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
    /// Set by the driver when the connection ended, before it leaves the pool.
    pub(crate) ended: Arc<AtomicBool>,
}

/// What a request got to send on.
pub(crate) enum Lease {
    H2(Stream),
    Http1(Http1Conn),
}

/// One HTTP/1.1 connection, counted in [`Pool::http1_open`] until dropped.
pub(crate) struct Http1Conn {
    pub(crate) sender: http1::SendRequest<Full<Bytes>>,
    pool: Weak<Pool>,
    /// When its last answer was read.
    idle_since: Instant,
}

impl Drop for Http1Conn {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.http1_open.fetch_sub(1, Ordering::Relaxed);
            pool.changed.notify_one();
        }
    }
}

/// One stream reserved on a connection; freed when dropped.
pub(crate) struct Stream {
    pool: Arc<Pool>,
    conn: Arc<Conn>,
    /// Microseconds since the pool's epoch when it was reserved.
    since: u64,
}

enum Step {
    Lease(Lease),
    Failed(HttpError),
    Wait,
}

/// One request's wait for a stream: counted in [`State::waiting`] from its first `Wait` until
/// it leaves `acquire` (with a lease, an error, or cancelled by its timeout).
struct Waiter<'a> {
    pool: &'a Pool,
    counted: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.pool.lock().waiting -= 1;
        }
    }
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
            stream_time: StreamTime::default(),
            http1_idle: Mutex::default(),
            http1_open: AtomicUsize::new(0),
            http1_sweep: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// A stream (or an idle HTTP/1.1 connection) to send on, waiting as long as it takes; fails
    /// only when an opening made while waiting failed and no connection is left.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Lease, HttpError> {
        let failures_seen = {
            let mut state = self.lock();
            state.arrivals.total += 1;
            state.failures
        };
        let mut waiter = Waiter {
            pool: self,
            counted: false,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.next_step(failures_seen, &mut waiter) {
                Step::Lease(lease) => return Ok(lease),
                Step::Failed(error) => return Err(error),
                Step::Wait => notified.await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_step(self: &Arc<Self>, failures_seen: u64, waiter: &mut Waiter<'_>) -> Step {
        let mut state = self.lock();
        if let Some(conn) = least_loaded(&state.conns) {
            return Step::Lease(Lease::H2(self.reserve(conn)));
        }
        // Every connection looks full: limits may have risen since they were read, and then
        // the requests already waiting may go too.
        let mut rose = false;
        for conn in &state.conns {
            rose |= conn.refresh_limit();
        }
        if rose {
            self.changed.notify_waiters();
        }
        if let Some(conn) = least_loaded(&state.conns) {
            return Step::Lease(Lease::H2(self.reserve(conn)));
        }
        if state.conns.is_empty() {
            if let Some(conn) = self.idle_http1() {
                return Step::Lease(Lease::Http1(conn));
            }
            if !state.opening && state.failures > failures_seen {
                if let Some((tls, reason)) = &state.last_failure {
                    return Step::Failed(self.opening_error(*tls, reason));
                }
            }
        }
        let now = Instant::now();
        if !waiter.counted {
            waiter.counted = true;
            state.waiting += 1;
        }
        let may_open = state.conns.is_empty() || state.no_opening_before.is_none_or(|t| now >= t);
        let streams = all_streams(&state.conns);
        let stream_time = self.stream_time.average();
        let needed = state.arrivals.streams_needed(now, stream_time);
        let grow = should_grow(state.waiting, streams, stream_time, needed);
        let open = state.conns.len() + self.http1_open.load(Ordering::Relaxed);
        if !state.opening && open < self.max_connections && may_open && grow {
            log::debug!(
                "opening connection {} to {}: {} requests wait for {streams} streams held \
                 {stream_time:?} on average, {:?} requests a second",
                state.conns.len() + 1,
                self.connector.origin.text,
                state.waiting,
                state.arrivals.rate,
            );
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
            since: self.micros(),
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
        let opened = match self.connector.open().await {
            Ok(Fresh::H2(handshake)) => self.start_h2(*handshake).await.map(Some),
            Ok(Fresh::Http1(sender)) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                self.http1_open.fetch_add(1, Ordering::Relaxed);
                self.keep_http1(Http1Conn {
                    sender,
                    pool: Arc::downgrade(&self),
                    idle_since: Instant::now(),
                });
                Ok(None)
            }
            Err(e) => Err((e.is_tls(), connect_reason(e))),
        };
        let mut state = self.lock();
        state.opening = false;
        // Checked under the lock the driver's `remove` takes: a connection that ended after its
        // first PING is either seen ended here or removed after being added.
        let failure = match opened {
            Ok(Some(conn)) if conn.ended.load(Ordering::Acquire) => Some((false, CLOSED.into())),
            Ok(added) => {
                state.conns.extend(added);
                None
            }
            Err(failure) => Some(failure),
        };
        if let Some(failure) = failure {
            log::debug!(
                "opening a connection to {} failed: {}",
                self.connector.origin.text,
                failure.1
            );
            state.failures += 1;
            state.last_failure = Some(failure);
            state.no_opening_before = Some(Instant::now() + OPEN_BACKOFF);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Starts driving a fresh HTTP/2 connection and waits for the server's first SETTINGS (its
    /// stream limit), which arrive before the answer to a first PING. A connection that closes
    /// or stays silent meanwhile is a failed opening: pooled, it would refuse every request.
    async fn start_h2(
        self: &Arc<Self>,
        (sender, connection): H2Handshake,
    ) -> Result<Arc<Conn>, (bool, String)> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(self.opened(), sender, self.millis()));
        let ready = crate::driver::spawn(connection, self, &conn);
        let limit = self.connector.connect_timeout;
        match tokio::time::timeout(limit, ready).await {
            Ok(Ok(true)) if conn.takes_streams() => {
                conn.refresh_limit();
                Ok(conn)
            }
            // A GOAWAY read before the answer to the PING: the connection is closing.
            Ok(Ok(true)) | Ok(Err(_)) => Err((false, CLOSED.into())),
            Ok(Ok(false)) | Err(_) => Err((false, format!("no answer to a PING within {limit:?}"))),
        }
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

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
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

    fn idle_http1(&self) -> Option<Http1Conn> {
        let mut idle = self.http1_idle.lock().ok()?;
        while let Some(conn) = idle.pop() {
            if conn.sender.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an HTTP/1.1 connection whose answer was read, for the next request. Like an
    /// HTTP/2 one, an idle extra is closed after the idle timeout (see [`sweep_http1`]).
    pub(crate) fn keep_http1(&self, mut conn: Http1Conn) {
        if conn.sender.is_closed() {
            return;
        }
        conn.idle_since = Instant::now();
        let pool = conn.pool.clone();
        if let Ok(mut idle) = self.http1_idle.lock() {
            if idle.len() < MAX_IDLE_HTTP1 {
                idle.push(conn);
            }
            if !self.http1_sweep.swap(true, Ordering::Relaxed) {
                tokio::spawn(sweep_http1(pool, self.idle_timeout));
            }
        }
        self.changed.notify_one();
    }

    /// Closes the idle HTTP/1.1 connections idle for the idle timeout, as long as another
    /// connection stays open. Returns how long until the next one would be, or `None` when
    /// no idle extra is left (the sweep then ends).
    fn close_idle_http1(&self) -> Option<Duration> {
        let now = Instant::now();
        // Read before `http1_idle` is locked: `next_step` takes the two the other way round.
        let h2 = self.lock().conns.len();
        let mut idle = self.http1_idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut open = h2 + self.http1_open.load(Ordering::Relaxed);
        let stale = |conn: &Http1Conn| now.duration_since(conn.idle_since) >= self.idle_timeout;
        let mut closed = Vec::new();
        while open > 1 && idle.first().is_some_and(stale) {
            closed.push(idle.remove(0));
            open -= 1;
        }
        let next = match idle.first() {
            Some(conn) if open > 1 => Some(conn.idle_since + self.idle_timeout - now),
            _ => None,
        };
        if next.is_none() {
            self.http1_sweep.store(false, Ordering::Relaxed);
        }
        drop(idle);
        if !closed.is_empty() {
            log::debug!(
                "closing {} idle extra HTTP/1.1 connections to {}",
                closed.len(),
                self.connector.origin.text
            );
        }
        next
    }
}

/// Closes a pool's idle extra HTTP/1.1 connections as they reach the idle timeout, until none
/// is left; holds no strong handle on the pool meanwhile.
async fn sweep_http1(pool: Weak<Pool>, idle_timeout: Duration) {
    let mut wait = idle_timeout;
    loop {
        tokio::time::sleep(wait).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        match pool.close_idle_http1() {
            Some(next) => wait = next,
            None => return,
        }
    }
}

/// The reason of an opening failure (`Connect` and `Tls` carry one; nothing else occurs).
fn connect_reason(error: HttpError) -> String {
    match error {
        HttpError::Connect { reason, .. } | HttpError::Tls { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Whether `waiting` requests that found every connection full should get another connection.
///
/// By Little's law the pool needs `rate × stream_time` streams (`needed`, the smaller figure of
/// the last two windows: one alone may be a stall of the process, which holds streams longer
/// and then bunches requests); it grows when that is more than its `streams`, or when half as
/// many requests wait as it has streams (a burst). A smaller backlog (after a stall, or left
/// from a ramp) drains as streams free up, and an extra connection for it would soon sit idle.
/// Without a recent rate, the pool grows when the last waiter would wait [`GROW_AFTER`] for
/// the streams that free up (`streams / stream_time` a second); and before any stream has
/// ended (no connection yet, or a first burst) it grows.
fn should_grow(
    waiting: usize,
    streams: usize,
    stream_time: Option<Duration>,
    needed: Option<f64>,
) -> bool {
    let Some(stream_time) = stream_time else {
        return true;
    };
    if streams == 0 || waiting.saturating_mul(2) >= streams {
        return true;
    }
    match needed {
        Some(needed) => needed > streams as f64,
        None => {
            let wait = (waiting as u128).saturating_mul(stream_time.as_micros()) / streams as u128;
            wait >= GROW_AFTER.as_micros()
        }
    }
}

/// Requests that asked for a stream, counted over windows of [`RATE_WINDOW`] that roll only
/// while requests wait (so the count costs one addition per request).
#[derive(Default)]
struct Arrivals {
    total: u64,
    /// Start of the window and `total` then.
    window: Option<(Instant, u64)>,
    /// Requests a second over the last window, when it ended recently.
    rate: Option<f64>,
    /// Streams the last two windows needed (`rate × stream_time`), the last one first.
    needed: [Option<f64>; 2],
}

impl Arrivals {
    /// Rolls the window when it is over; then the streams needed by the last two windows'
    /// rates at `stream_time`, the smaller of the two, `None` unless both ended recently.
    fn streams_needed(&mut self, now: Instant, stream_time: Option<Duration>) -> Option<f64> {
        let Some((start, count)) = self.window else {
            self.window = Some((now, self.total));
            return None;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.rate = (elapsed <= RATE_WINDOW * RATE_WINDOW_STALE)
                .then(|| (self.total - count) as f64 / elapsed.as_secs_f64());
            let needed = self.rate.zip(stream_time).map(|(r, t)| r * t.as_secs_f64());
            self.needed = match self.rate {
                Some(_) => [needed, self.needed[0]],
                None => [None, None],
            };
            self.window = Some((now, self.total));
        }
        let [last, before] = self.needed;
        Some(last?.min(before?))
    }
}

/// How long a stream is held, on average: a moving average in microseconds, 0 before the first
/// stream ended.
#[derive(Default)]
struct StreamTime(AtomicU64);

impl StreamTime {
    fn average(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// Adds one stream's time (two streams ending at once may lose one sample: it is an
    /// average).
    fn record(&self, micros: u64) {
        let average = self.0.load(Ordering::Relaxed);
        let next = match average {
            0 => micros,
            _ => average.saturating_mul(255).saturating_add(micros) / 256,
        };
        self.0.store(next.max(1), Ordering::Relaxed);
    }
}

/// The stream limits of all connections, added up.
fn all_streams(conns: &[Arc<Conn>]) -> usize {
    conns.iter().fold(0, |sum, c| {
        sum.saturating_add(c.limit.load(Ordering::Relaxed))
    })
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
            ended: Arc::default(),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// False when h2 already knows the connection takes no new stream (a GOAWAY or an error
    /// was read); asked without waiting.
    fn takes_streams(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !matches!(self.sender.clone().poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    /// Re-reads the server's stream limit; true when it rose.
    fn refresh_limit(&self) -> bool {
        let limit = self.sender.current_max_send_streams();
        self.limit.swap(limit, Ordering::Relaxed) < limit
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
        let now = self.pool.micros();
        self.pool.stream_time.record(now.saturating_sub(self.since));
        self.conn.last_busy.store(now / 1000, Ordering::Relaxed);
        // One stream freed makes room for one waiter; a limit the server raised (APNS starts
        // at one stream) makes room for all of them, and nothing else would wake them.
        if self.conn.refresh_limit() {
            self.pool.changed.notify_waiters();
        } else {
            self.pool.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H2_ROUND_TRIP: Duration = Duration::from_millis(60);
    const H2_TIME: Option<Duration> = Some(H2_ROUND_TRIP);

    #[test]
    fn before_any_stream_ended_the_pool_grows() {
        assert!(should_grow(1, 100, None, Some(0.0)));
        assert!(should_grow(1, 0, H2_TIME, None));
    }

    #[test]
    fn a_rate_the_streams_carry_does_not_grow_the_pool_whatever_the_backlog() {
        assert!(!should_grow(340, 700, H2_TIME, Some(640.0)));
    }

    #[test]
    fn a_rate_that_needs_more_streams_grows_the_pool() {
        assert!(should_grow(1, 600, H2_TIME, Some(640.0)));
    }

    #[test]
    fn waiters_for_half_the_streams_grow_the_pool() {
        assert!(!should_grow(1_999, 4_000, H2_TIME, Some(0.0)));
        assert!(should_grow(2_000, 4_000, H2_TIME, Some(0.0)));
    }

    #[test]
    fn without_a_rate_waiters_that_would_wait_the_grow_delay_grow_the_pool() {
        // 700 streams held 60 ms: 11.7 free up per ms, 350 waiters are served in 30 ms.
        assert!(!should_grow(349, 700, H2_TIME, None));
        assert!(should_grow(350, 700, H2_TIME, None));
    }

    #[test]
    fn the_rule_does_not_overflow() {
        assert!(should_grow(
            usize::MAX,
            usize::MAX,
            Some(Duration::MAX),
            None
        ));
        assert!(!should_grow(1, usize::MAX, H2_TIME, None));
    }

    #[test]
    fn the_streams_needed_are_the_smaller_figure_of_the_last_two_windows() {
        let start = Instant::now();
        let mut arrivals = Arrivals::default();
        let mut at = |n: u64, window: u32| {
            arrivals.total += n;
            arrivals.streams_needed(start + RATE_WINDOW * window, H2_TIME)
        };
        assert_eq!(at(0, 0), None, "no window yet");
        // 10,000 a second held 60 ms: 600 streams.
        assert_eq!(at(1_000, 1), None, "one window alone");
        assert_eq!(at(2_000, 2), Some(600.0), "a spike of 1,200 after 600");
        assert_eq!(at(1_100, 3), Some(660.0));
        assert_eq!(at(0, 3 + RATE_WINDOW_STALE + 1), None, "a stale window");
    }

    #[test]
    fn the_stream_time_is_a_moving_average_of_ended_streams() {
        let time = StreamTime::default();
        assert_eq!(time.average(), None);
        time.record(60_000);
        assert_eq!(time.average(), H2_TIME);
        time.record(60_000 + 256 * 1_000);
        assert_eq!(time.average(), Some(Duration::from_millis(61)));
    }
}
