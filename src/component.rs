//! The XEP-0114 component link: the only code that touches the XMPP socket.
//!
//! [`run_reconfigurable`] keeps one `jabber:component:accept` stream to the XMPP server alive for the life of
//! the daemon: it connects, authenticates with the handshake, cuts the byte stream into stanzas
//! (handed to the dispatcher over `inbound`: a push buffered whole already parsed, as
//! `request::frame_push` reads it while finding its end; anything else as raw bytes), writes
//! every reply through one
//! batching writer, pings itself through the server to notice dead links, and reconnects — at
//! once after a link that was up drops (then quickly a few times), with backoff after failed
//! attempts and after the second of two links in a row that died within `STABLE_LINK`. Replies
//! queued while the link is down wait for the next stream.

mod backoff;
mod framer;
mod handshake;
mod link;
#[cfg(test)]
mod tests;
mod whole_stanza;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::backoff::Backoff;
use self::framer::FramingError;
use self::handshake::Opened;
use self::link::{LinkEnd, PendingReplies};
use crate::request::Request;

/// How long a stream must stay up to count as a good link. One that dies sooner counts as a
/// failed attempt and is waited out with the backoff: a server that accepts the handshake and
/// then closes the stream at once, again and again, must not get a reconnect loop as fast as
/// the network allows (and a log line per round).
pub(crate) const STABLE_LINK: Duration = Duration::from_secs(30);

/// Everything the link needs to know.
#[derive(Clone, PartialEq, Eq)]
pub struct ComponentConfig {
    /// The component's JID (`component.componentHostname`).
    pub jid: String,
    /// The shared secret (`component.componentKey`).
    pub secret: String,
    /// Where the XMPP server accepts components.
    pub server_host: String,
    pub server_port: u16,
    /// Wait after the first failed connect or handshake (`timeout.xmppconnectionError`).
    pub reconnect_base: Duration,
    /// Longest wait between failed attempts.
    pub reconnect_cap: Duration,
    /// How often the server is pinged (`timeout.keepaliveInterval`).
    pub keepalive_interval: Duration,
    /// How long without any inbound data after a ping means the link is dead
    /// (`timeout.keepaliveTimeout`). Also bounds connecting, the handshake, and a stalled write.
    pub keepalive_timeout: Duration,
    /// Largest top-level element buffered, in bytes (`limits.maxStanzaSize`).
    pub max_stanza_size: usize,
    /// Deepest element nesting inside a stanza, the stanza element counting as 1
    /// (`limits.maxDepth`).
    pub max_depth: usize,
}

impl fmt::Debug for ComponentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentConfig")
            .field("jid", &self.jid)
            .field("secret", &"<redacted>")
            .field("server_host", &self.server_host)
            .field("server_port", &self.server_port)
            .field("reconnect_base", &self.reconnect_base)
            .field("reconnect_cap", &self.reconnect_cap)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("max_stanza_size", &self.max_stanza_size)
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

/// What the link hands to the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// One complete top-level element, for `request::parse`.
    Stanza(Bytes),
    /// A push IQ, parsed as it was framed.
    Push(Box<Request>),
    /// The start tag of a stanza over `max_stanza_size` or nested deeper than `max_depth`, whose
    /// body was skipped; for `request::parse_oversized`.
    Oversized { start_tag: Bytes },
}

/// Reply bytes queued from which the daemon takes no more stanzas from the link until the
/// writer has drained half of them. `send` never blocks (a push's task must not wait on the
/// socket), so a server that reads our replies more slowly than it sends stanzas (refusals,
/// pings and errors take no place in flight) would otherwise grow the queue without bound;
/// paused, the link's reader waits on the bounded inbound channel and TCP holds the rest.
pub const MAX_QUEUED_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// The bytes queued in a reply channel, and the wake-up for whoever waits for them to drain.
#[derive(Debug, Default)]
struct Backlog {
    bytes: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    fn taken(&self, bytes: usize) {
        let before = self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        let half = MAX_QUEUED_REPLY_BYTES / 2;
        if before >= half && before - bytes < half {
            self.drained.notify_waiters();
        }
    }
}

/// Queues reply bytes for the link's writer. Cheap to clone; `send` never blocks.
#[derive(Clone, Debug)]
pub struct ReplySender {
    queue: mpsc::UnboundedSender<Vec<u8>>,
    backlog: Arc<Backlog>,
}

impl ReplySender {
    /// Queues one complete reply stanza.
    pub fn send(&self, reply: Vec<u8>) {
        let bytes = reply.len();
        self.backlog.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.queue.send(reply).is_err() {
            self.backlog.taken(bytes);
            log::debug!("a reply was dropped: the component link has stopped");
        }
    }

    /// How full the queue is, for whoever paces the reading: a view that sends nothing, so it
    /// never holds the queue open (the link closes the stream once every sender is gone).
    pub fn backlog(&self) -> ReplyBacklog {
        ReplyBacklog(self.backlog.clone())
    }
}

/// How many reply bytes wait for the socket (see [`ReplySender::backlog`]).
#[derive(Clone, Debug)]
pub struct ReplyBacklog(Arc<Backlog>);

impl ReplyBacklog {
    /// Whether [`MAX_QUEUED_REPLY_BYTES`] are queued: take no more stanzas for now.
    pub fn is_backlogged(&self) -> bool {
        self.0.bytes.load(Ordering::Relaxed) >= MAX_QUEUED_REPLY_BYTES
    }

    /// Waits until less than half of [`MAX_QUEUED_REPLY_BYTES`] is queued.
    pub async fn drained(&self) {
        loop {
            let drained = self.0.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.0.bytes.load(Ordering::Relaxed) < MAX_QUEUED_REPLY_BYTES / 2 {
                return;
            }
            drained.await;
        }
    }
}

/// The writer's end of the reply queue; owned by [`run_reconfigurable`].
#[derive(Debug)]
pub struct ReplyReceiver {
    queue: mpsc::UnboundedReceiver<Vec<u8>>,
    backlog: Arc<Backlog>,
}

impl ReplyReceiver {
    /// The next queued reply; `None` once every sender is gone and the queue is empty. For
    /// whoever drives a dispatcher without a link (tests, benchmarks).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let reply = self.queue.recv().await?;
        self.backlog.taken(reply.len());
        Some(reply)
    }

    /// A reply that is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        let reply = self.queue.try_recv().ok()?;
        self.backlog.taken(reply.len());
        Some(reply)
    }

    /// Up to `limit` queued replies into `batch` (waiting for the first); 0 once every sender
    /// is gone and the queue is empty.
    async fn recv_many(&mut self, batch: &mut Vec<Vec<u8>>, limit: usize) -> usize {
        let start = batch.len();
        let received = self.queue.recv_many(batch, limit).await;
        self.backlog
            .taken(batch[start..].iter().map(Vec::len).sum());
        received
    }
}

/// A reply queue: senders for the dispatcher, the receiver for [`run_reconfigurable`].
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    let (queue, receiving) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let sender = ReplySender {
        queue,
        backlog: backlog.clone(),
    };
    (
        sender,
        ReplyReceiver {
            queue: receiving,
            backlog,
        },
    )
}

/// The link's state, for health reporting.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkState {
    /// Connecting or authenticating.
    Connecting,
    /// Authenticated; the server's stream id.
    Up { stream_id: String },
    /// No link (waiting before the next attempt, or stopped).
    Down,
}

/// Why [`run_reconfigurable`] gave up. Connection problems are never fatal (they are retried); these are.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("the dispatcher stopped taking stanzas (its receiver was dropped) before shutdown")]
    InboundClosed,
    #[error("every reply sender was dropped before shutdown")]
    RepliesClosed,
}

/// Why one link attempt or one link ended. Logged, then retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "the server rejected the handshake (not-authorized): wrong secret, \
         check component.componentKey"
    )]
    NotAuthorized,
    #[error(
        "another connection already holds the component name {0} (conflict): \
         is a second fpush running?"
    )]
    Conflict(String),
    #[error("the server sent a stream error: {condition}{}", text_suffix(.text))]
    StreamError { condition: String, text: String },
    #[error("the server's stream header has no id")]
    NoStreamId,
    #[error("unexpected {0} from the server")]
    Unexpected(String),
    #[error("the stream broke the rules: {0}")]
    Framing(FramingError),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server closed the stream")]
    StreamClosed,
    #[error("no data from the server within {0:?} of a keepalive ping")]
    KeepaliveTimeout(Duration),
    #[error("the server took no data from us for {0:?}")]
    WriteStalled(Duration),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn text_suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({})", crate::systemd::escape_controls(text))
    }
}

impl LinkError {
    /// The stream error we send before hanging up, when the fault was the server's stream.
    fn stream_error_condition(&self) -> Option<&'static str> {
        match self {
            LinkError::Framing(FramingError::NotWellFormed(_)) => Some("not-well-formed"),
            LinkError::Framing(FramingError::PolicyViolation(_)) => Some("policy-violation"),
            _ => None,
        }
    }
}

/// Keeps the component link up until `shutdown` is cancelled.
///
/// Stanzas go to `inbound` (awaiting it, so a slow dispatcher slows the reading, not the
/// memory). After `shutdown`, no new stanza is read, and `handed_over` is cancelled once every
/// stanza already read is on `inbound` (keep taking them until then); replies are written until
/// every [`ReplySender`] is dropped and the queue is empty, then the stream is closed and
/// `Ok(())` returned. If the link is down at that moment, it returns at once (and `handed_over`
/// is cancelled whenever it returns).
///
/// A change of `settings` (a reload) takes the link down, or ends an attempt or the wait after
/// a failed one, and connects with the new settings at once. Replies not yet written survive
/// the reconnect, as they do when a link drops.
pub async fn run_reconfigurable(
    settings: watch::Receiver<ComponentConfig>,
    inbound: mpsc::Sender<Inbound>,
    mut replies: ReplyReceiver,
    state: watch::Sender<LinkState>,
    shutdown: CancellationToken,
    handed_over: CancellationToken,
) -> Result<(), ComponentError> {
    let _handed_over = handed_over.clone().drop_guard();
    let mut settings = SettingsWatch {
        rx: settings,
        watching: true,
    };
    let mut target = Target::new(settings.rx.borrow_and_update().clone());
    let mut pending = PendingReplies::default();
    // Set while the stream we closed for new settings has no successor yet.
    let mut replacing = false;
    loop {
        if let Some(cfg) = settings.take_change() {
            target = Target::new(cfg);
        }
        let reopening = shutdown.is_cancelled() && std::mem::take(&mut replacing);
        if shutdown.is_cancelled() && !reopening {
            state.send_replace(LinkState::Down);
            report_unsent(&mut replies, &pending);
            return Ok(());
        }
        let opened = if reopening {
            // Every stanza read was handed over with the stream we closed.
            handed_over.cancel();
            target.reopen_to_answer(&state).await
        } else {
            target.open(&mut settings, &shutdown, &state).await
        };
        let Some(opened) = opened else {
            continue;
        };
        replacing = false;
        // New settings end the stream the way shutdown does, not by dropping the link's
        // future: the stanzas it had read but not yet handed over (behind a full inbound
        // queue, or when the task yielded half-way through a burst) would be lost with it,
        // pushes never answered. Replies not yet written stay in `pending` for the next
        // stream.
        let reconfigured = CancellationToken::new();
        let end = {
            let serving = link::serve(
                opened,
                &target.cfg,
                &inbound,
                &mut replies,
                &mut pending,
                link::StreamEnds {
                    shutdown: &shutdown,
                    handed_over: &handed_over,
                    reconfigured: &reconfigured,
                },
            );
            tokio::pin!(serving);
            tokio::select! {
                end = &mut serving => end,
                () = settings.changed() => {
                    log::info!("component settings changed: reconnecting");
                    reconfigured.cancel();
                    serving.await
                }
            }
        };
        if let Ok(LinkEnd::Reconfigured) = end {
            state.send_replace(LinkState::Down);
            replacing = true;
            continue;
        }
        state.send_replace(LinkState::Down);
        match target.link_ended(end?, &pending) {
            AfterLink::Stop => return Ok(()),
            AfterLink::Reconnect => {}
            AfterLink::Wait(delay) => {
                target
                    .pause_unless_changed(delay, &mut settings, &shutdown)
                    .await
            }
        }
    }
}

/// What follows a stream that was up.
enum AfterLink {
    /// It was closed for shutdown: the link is done.
    Stop,
    /// Reconnect at once.
    Reconnect,
    /// Wait this long first: this stream and the one before died within [`STABLE_LINK`], or another
    /// connection took the component's name (Prosody's `component_conflict_resolve =
    /// "kick_old"`), where taking it back at once would make the two kick each other in a tight
    /// loop.
    Wait(Duration),
}

/// The settings the link was started with, and whether a reload changed them.
struct SettingsWatch {
    rx: watch::Receiver<ComponentConfig>,
    /// Cleared once every settings sender is gone: no change can come any more.
    watching: bool,
}

impl SettingsWatch {
    /// The new settings, if they changed since they were last read (also when the sender is
    /// gone since).
    fn take_change(&mut self) -> Option<ComponentConfig> {
        let changed = self.rx.borrow().has_changed();
        changed.then(|| self.rx.borrow_and_update().clone())
    }

    /// Resolves when the settings change; never, once they cannot. The change is left unread
    /// for [`SettingsWatch::take_change`]: waiting on our own receiver would mark it read, and
    /// the link would reconnect with the old settings.
    async fn changed(&mut self) {
        let mut rx = self.rx.clone();
        if self.watching && rx.changed().await.is_ok() {
            return;
        }
        self.watching = false;
        std::future::pending().await
    }
}

/// Where the link connects, and how long it waits after a failed attempt.
struct Target {
    cfg: ComponentConfig,
    /// `host:port`, for the logs.
    address: String,
    backoff: Backoff,
    /// When the current stream came up.
    up_since: Instant,
    /// Whether the last stream that ended had died before [`STABLE_LINK`].
    died_young: bool,
}

impl Target {
    fn new(cfg: ComponentConfig) -> Self {
        Target {
            address: format!("{}:{}", cfg.server_host, cfg.server_port),
            backoff: Backoff::new(cfg.reconnect_base, cfg.reconnect_cap),
            up_since: Instant::now(),
            died_young: false,
            cfg,
        }
    }

    /// One attempt to open an authenticated stream. `None` when it failed (and its wait is
    /// over), or was given up for shutdown or for new settings.
    async fn open(
        &mut self,
        settings: &mut SettingsWatch,
        shutdown: &CancellationToken,
        state: &watch::Sender<LinkState>,
    ) -> Option<Opened> {
        state.send_replace(LinkState::Connecting);
        let cfg = &self.cfg;
        let attempt = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            () = settings.changed() => {
                log::info!("component settings changed: connecting with them");
                return None;
            }
            attempt = handshake::open(cfg, cfg.keepalive_timeout) => attempt,
        };
        match attempt {
            Ok(opened) => {
                self.connected(&opened.stream_id, state);
                Some(opened)
            }
            Err(reason) => {
                state.send_replace(LinkState::Down);
                self.wait_unless_changed(reason, settings, shutdown).await;
                None
            }
        }
    }

    /// One more stream, opened at shutdown when we had just closed the last one for new
    /// settings: the server is there, and the replies of the pushes still in flight go out on
    /// it. `None` when it cannot be opened at once (those replies are then lost).
    async fn reopen_to_answer(&mut self, state: &watch::Sender<LinkState>) -> Option<Opened> {
        state.send_replace(LinkState::Connecting);
        match handshake::open(&self.cfg, self.cfg.keepalive_timeout).await {
            Ok(opened) => {
                self.connected(&opened.stream_id, state);
                Some(opened)
            }
            Err(reason) => {
                log::warn!("shutting down: the component link could not be reopened: {reason}");
                state.send_replace(LinkState::Down);
                None
            }
        }
    }

    /// A stream is up. The backoff is only forgotten once it has stayed up (see
    /// [`Target::link_ended`]).
    fn connected(&mut self, stream_id: &str, state: &watch::Sender<LinkState>) {
        log::info!(
            "component {} connected to {} and authenticated (stream {})",
            self.cfg.jid,
            self.address,
            crate::systemd::escape_controls(stream_id)
        );
        self.up_since = Instant::now();
        self.backoff.connected();
        state.send_replace(LinkState::Up {
            stream_id: stream_id.to_owned(),
        });
    }

    /// Says how a stream that was up ended, and what comes next. A stream that stayed up
    /// [`STABLE_LINK`] starts the backoff afresh. A dropped stream is reconnected at once, unless
    /// the one before it died young too: then it counts as a failed attempt.
    fn link_ended(&mut self, end: LinkEnd, pending: &PendingReplies) -> AfterLink {
        let lived = self.up_since.elapsed();
        let young = lived < STABLE_LINK;
        if !young {
            self.backoff.reset();
        }
        let reason = match end {
            LinkEnd::Shutdown => {
                log::info!(
                    "component {} closed its stream to {}",
                    self.cfg.jid,
                    self.address
                );
                return AfterLink::Stop;
            }
            LinkEnd::Dropped(reason) => reason,
            LinkEnd::Reconfigured => return AfterLink::Reconnect,
        };
        let waiting = pending.count();
        let again_young = std::mem::replace(&mut self.died_young, young) && young;
        if let LinkError::Conflict(_) = reason {
            return AfterLink::Wait(self.failed(reason));
        }
        if !again_young {
            log::info!(
                "component link to {} lost: {reason}; reconnecting ({waiting} replies waiting)",
                self.address
            );
            self.backoff.try_quickly();
            return AfterLink::Reconnect;
        }
        let delay = self.backoff.next_delay();
        log::warn!(
            "component link to {} lost: {reason}; it and the one before were up under \
             {STABLE_LINK:?} (this one {lived:.1?}), so reconnecting in {delay:?} ({waiting} \
             replies waiting)",
            self.address
        );
        AfterLink::Wait(delay)
    }

    /// Says why an attempt failed, then waits out the backoff, cut short by new settings (a
    /// reload that fixes what failed is tried at once) or by shutdown.
    async fn wait_unless_changed(
        &mut self,
        reason: LinkError,
        settings: &mut SettingsWatch,
        shutdown: &CancellationToken,
    ) {
        let delay = self.failed(reason);
        self.pause_unless_changed(delay, settings, shutdown).await
    }

    /// Waits `delay` before the next attempt, unless new settings or shutdown come first.
    async fn pause_unless_changed(
        &self,
        delay: Duration,
        settings: &mut SettingsWatch,
        shutdown: &CancellationToken,
    ) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
            () = settings.changed() => {
                log::info!("component settings changed: connecting with them at once");
            }
        }
    }

    /// Counts one more failure and says why it failed: the wait before the next attempt.
    fn failed(&mut self, reason: LinkError) -> Duration {
        let delay = self.backoff.next_delay();
        let (jid, address) = (&self.cfg.jid, &self.address);
        match reason {
            // Only the operator can fix these: say so loudly.
            LinkError::NotAuthorized | LinkError::Conflict(_) => {
                log::error!("component {jid} at {address}: {reason}; retrying in {delay:?}")
            }
            _ => log::warn!(
                "component {jid} cannot open its link to {address}: {reason}; \
                 retrying in {delay:?}"
            ),
        }
        delay
    }
}

/// At shutdown with no link: say how many replies will never be written.
fn report_unsent(replies: &mut ReplyReceiver, pending: &PendingReplies) {
    let mut unsent = pending.count();
    while replies.try_recv().is_some() {
        unsent += 1;
    }
    if unsent > 0 {
        log::warn!("shutting down without a link to the XMPP server: {unsent} replies not sent");
    }
}

/// The stream framer itself, for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::framer::{Framer, FramingError, StreamFrame};
}
