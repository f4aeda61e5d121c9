//! One authenticated stream, from the handshake to its end: a reader that cuts stanzas and
//! hands them to the dispatcher, and one writer that sends every reply (batched) and the
//! keepalive pings. Both run in the same task, so nothing here needs to be `'static`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::framer::{FramingError, StreamFrame};
use super::handshake::{element_name, is_stream_error, stream_error, Opened};
use super::{ComponentConfig, ComponentError, Inbound, LinkError, ReplyReceiver};

/// The most replies taken from the queue for one write.
const MAX_BATCH: usize = 1024;

/// How a stream that was up came to an end.
pub(crate) enum LinkEnd {
    /// Shutdown was asked, every reply was written and the stream closed.
    Shutdown,
    /// The link failed; the caller reconnects.
    Dropped(LinkError),
    /// New settings: every stanza read was handed over and the stream closed; the caller
    /// connects with them.
    Reconfigured,
}

/// Replies taken from the queue and not yet completely handed to the socket.
///
/// Writes go out piece by piece and every byte the socket takes is accounted for at once, so
/// when a stream ends in the middle of a write (a failed write, or the reader seeing the stream
/// end while the writer is blocked), the replies already written in full are forgotten and only
/// the rest goes out on the next stream — the one cut in the middle from its first byte, since
/// its start went to a stream that is gone. Writing the whole batch again would give the XMPP
/// server some replies twice.
///
/// "Written" means taken by the kernel: if the connection then dies before the server reads
/// those bytes they are lost with it, and no component can know (XEP-0114 has no acks).
#[derive(Default)]
pub(crate) struct PendingReplies {
    bytes: Vec<u8>,
    /// End offset in `bytes` of each queued item, and whether it is a reply (not a ping).
    ends: VecDeque<(usize, bool)>,
    /// How much of `bytes` the socket has taken.
    written: usize,
    /// Where the first item not yet written in full starts.
    done: usize,
    /// How many replies are not yet written in full (pings are not counted).
    count: usize,
}

impl PendingReplies {
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    fn push_reply(&mut self, reply: &[u8]) {
        self.push(reply, true);
    }

    fn push_ping(&mut self, ping: &[u8]) {
        self.push(ping, false);
    }

    fn push(&mut self, item: &[u8], is_reply: bool) {
        self.bytes.extend_from_slice(item);
        self.ends.push_back((self.bytes.len(), is_reply));
        if is_reply {
            self.count += 1;
        }
    }

    /// The bytes still to be written on this stream.
    fn unwritten(&self) -> &[u8] {
        &self.bytes[self.written..]
    }

    /// The socket took `n` more bytes.
    fn advance(&mut self, n: usize) {
        self.written = (self.written + n).min(self.bytes.len());
        while let Some(&(end, is_reply)) = self.ends.front() {
            if end > self.written {
                break;
            }
            self.ends.pop_front();
            self.done = end;
            if is_reply {
                self.count -= 1;
            }
        }
        if self.written == self.bytes.len() {
            self.bytes.clear();
            self.written = 0;
            self.done = 0;
        }
    }

    /// A new stream begins: forget what was written in full, and start the item that was cut
    /// short over from its beginning.
    fn restart(&mut self) {
        self.bytes.drain(..self.done);
        for (end, _) in self.ends.iter_mut() {
            *end -= self.done;
        }
        self.written = 0;
        self.done = 0;
    }
}

/// What ends a stream from outside, and what the link says back.
pub(crate) struct StreamEnds<'a> {
    /// Shutdown: hand over what was read, write every reply, close.
    pub shutdown: &'a CancellationToken,
    /// Raised by the link at shutdown once every stanza it read was handed over.
    pub handed_over: &'a CancellationToken,
    /// New settings: hand over what was read, close, so that the caller reconnects.
    pub reconfigured: &'a CancellationToken,
}

/// Serves one authenticated stream until it drops, until shutdown has drained every reply, or
/// until new settings have it closed.
pub(crate) async fn serve(
    opened: Opened,
    cfg: &ComponentConfig,
    inbound: &mpsc::Sender<Inbound>,
    replies: &mut ReplyReceiver,
    pending: &mut PendingReplies,
    ends: StreamEnds<'_>,
) -> Result<LinkEnd, ComponentError> {
    let shutdown = ends.shutdown;
    let Opened {
        stream, mut framer, ..
    } = opened;
    pending.restart();
    let (mut rd, mut wr) = stream.into_split();
    let outcome = {
        let hearing = Hearing::default();
        let reader = read_stanzas(&mut rd, &mut framer, inbound, &hearing, cfg, &ends);
        let writer = write_replies(&mut wr, replies, pending, &hearing, cfg, shutdown);
        first_end(reader, writer, shutdown, ends.handed_over).await
    };
    let farewell = Farewell::after(outcome, cfg);
    if let Some(last) = farewell.last {
        // Closed for new settings, the server may have sent stanzas before it read our close:
        // they are handed over and answered (on the next stream), not thrown away with this one.
        let late = matches!(farewell.result, Ok(LinkEnd::Reconfigured)).then_some(LateStanzas {
            framer: &mut framer,
            inbound,
            cfg,
        });
        close_stream(&mut wr, &mut rd, farewell.grace, &last, late).await;
    }
    farewell.result
}

/// Where the stanzas that arrive while a stream closes go, when they are still to be answered.
struct LateStanzas<'a> {
    framer: &'a mut super::framer::Framer,
    inbound: &'a mpsc::Sender<Inbound>,
    cfg: &'a ComponentConfig,
}

impl LateStanzas<'_> {
    /// Reads and hands over stanzas until the server ends its stream, closes the connection or
    /// the stream fails.
    async fn hand_over_until_closed(self, rd: &mut OwnedReadHalf) {
        let hearing = Hearing::default();
        loop {
            let framed = hand_over_framed(self.framer, self.inbound, &hearing, self.cfg);
            if framed.await.is_err() {
                return;
            }
            match rd.read_buf(self.framer.buffer()).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Drives the reader and the writer until the stream is done with. After shutdown the reader
/// hands over what it had read, says so (`handed_over`) and stops; the writer goes on until
/// every reply is written.
async fn first_end(
    reader: impl Future<Output = ReadEnd>,
    writer: impl Future<Output = WriteEnd>,
    shutdown: &CancellationToken,
    handed_over: &CancellationToken,
) -> Outcome {
    tokio::pin!(reader, writer);
    let mut reading = true;
    loop {
        tokio::select! {
            end = &mut reader, if reading => match end {
                ReadEnd::Shutdown => {
                    reading = false;
                    handed_over.cancel();
                }
                ReadEnd::InboundClosed if shutdown.is_cancelled() => {
                    reading = false;
                    handed_over.cancel();
                }
                ReadEnd::InboundClosed => return Outcome::InboundClosed,
                ReadEnd::Reconfigured => return Outcome::Reconfigured,
                ReadEnd::Failed(e) => return Outcome::Failed(e),
            },
            end = &mut writer => return match end {
                WriteEnd::Drained => Outcome::Drained,
                WriteEnd::RepliesClosed => Outcome::RepliesClosed,
                WriteEnd::Failed(e) => Outcome::Failed(e),
            },
        }
    }
}

/// The end of our stream.
const STREAM_END: &[u8] = b"</stream:stream>";

/// How we take leave of the server once a stream is done with.
struct Farewell {
    /// The last bytes to write before hanging up, if the server should hear from us.
    last: Option<Cow<'static, [u8]>>,
    /// How long to wait for those bytes to go out, and again for the server to close.
    grace: Duration,
    /// What [`serve`] returns.
    result: Result<LinkEnd, ComponentError>,
}

impl Farewell {
    fn after(outcome: Outcome, cfg: &ComponentConfig) -> Farewell {
        // Long enough for the server to read our last replies and close its side.
        let orderly = cfg.keepalive_timeout.min(Duration::from_secs(5));
        let closing = |result| Farewell {
            last: Some(Cow::Borrowed(STREAM_END)),
            grace: orderly,
            result,
        };
        match outcome {
            Outcome::Drained => closing(Ok(LinkEnd::Shutdown)),
            Outcome::RepliesClosed => closing(Err(ComponentError::RepliesClosed)),
            Outcome::InboundClosed => closing(Err(ComponentError::InboundClosed)),
            // Replies not yet written stay pending for the next stream; this one is closed
            // briefly, as a reconnect should not wait long.
            Outcome::Reconfigured => Farewell {
                last: Some(Cow::Borrowed(STREAM_END)),
                grace: cfg.keepalive_timeout.min(Duration::from_millis(500)),
                result: Ok(LinkEnd::Reconfigured),
            },
            Outcome::Failed(e) => Farewell {
                last: Self::last_words(&e),
                // Reconnecting matters more than a polite goodbye: wait only briefly.
                grace: cfg.keepalive_timeout.min(Duration::from_millis(500)),
                result: Ok(LinkEnd::Dropped(e)),
            },
        }
    }

    /// What to send before hanging up on a failed stream.
    fn last_words(e: &LinkError) -> Option<Cow<'static, [u8]>> {
        if let Some(condition) = e.stream_error_condition() {
            // Tell the server why we hang up. If a reply write was cut short, these bytes
            // follow a partial stanza; the stream is being thrown away either way.
            let mut bytes = Vec::with_capacity(160);
            bytes.extend_from_slice(b"<stream:error><");
            bytes.extend_from_slice(condition.as_bytes());
            bytes.extend_from_slice(
                b" xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            );
            bytes.extend_from_slice(STREAM_END);
            return Some(Cow::Owned(bytes));
        }
        // The server ended its stream: close ours and read what is left, so the socket closes
        // cleanly instead of being reset over unread bytes.
        matches!(e, LinkError::StreamClosed | LinkError::StreamError { .. })
            .then_some(Cow::Borrowed(STREAM_END))
    }
}

enum Outcome {
    Drained,
    RepliesClosed,
    InboundClosed,
    Reconfigured,
    Failed(LinkError),
}

enum ReadEnd {
    Shutdown,
    InboundClosed,
    /// New settings: every stanza read was handed over, read no more on this stream.
    Reconfigured,
    Failed(LinkError),
}

enum WriteEnd {
    Drained,
    RepliesClosed,
    Failed(LinkError),
}

/// What the keepalive knows of the server's side of the stream.
struct Hearing {
    /// Set by the reader on every read; the keepalive clears it when it sends a ping.
    heard: AtomicBool,
    /// Set while the reader waits for the dispatcher to take a stanza: it reads nothing
    /// meanwhile, so the server's silence says nothing about the link.
    handing_over: AtomicBool,
}

impl Default for Hearing {
    fn default() -> Self {
        Hearing {
            heard: AtomicBool::new(true),
            handing_over: AtomicBool::new(false),
        }
    }
}

impl Hearing {
    /// Whether the link may be dead: nothing was read since the last ping, though the reader
    /// was free to read.
    fn silent(&self) -> bool {
        !self.heard.load(Ordering::Relaxed) && !self.handing_over.load(Ordering::Relaxed)
    }
}

/// Passes one stanza to the dispatcher; `false` when it takes no more. While its queue is full
/// the reader waits here, and says so to the keepalive.
async fn hand_over(inbound: &mpsc::Sender<Inbound>, item: Inbound, hearing: &Hearing) -> bool {
    let item = match inbound.try_send(item) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(item)) => item,
    };
    hearing.handing_over.store(true, Ordering::Relaxed);
    let taken = inbound.send(item).await.is_ok();
    hearing.handing_over.store(false, Ordering::Relaxed);
    taken
}

/// Reads the stream and passes each stanza on, until shutdown, new settings or failure. The
/// first two stop the reading only: every stanza already read is passed on (at shutdown the
/// daemon takes them until `handed_over`), so none of them goes unanswered.
async fn read_stanzas(
    rd: &mut OwnedReadHalf,
    framer: &mut super::framer::Framer,
    inbound: &mpsc::Sender<Inbound>,
    hearing: &Hearing,
    cfg: &ComponentConfig,
    ends: &StreamEnds<'_>,
) -> ReadEnd {
    loop {
        if let Err(end) = hand_over_framed(framer, inbound, hearing, cfg).await {
            return end;
        }
        tokio::select! {
            biased;
            _ = ends.shutdown.cancelled() => return ReadEnd::Shutdown,
            _ = ends.reconfigured.cancelled() => return ReadEnd::Reconfigured,
            read = rd.read_buf(framer.buffer()) => match read {
                Ok(0) => return ReadEnd::Failed(LinkError::Closed),
                Ok(_) => hearing.heard.store(true, Ordering::Relaxed),
                Err(e) => return ReadEnd::Failed(LinkError::Io(e)),
            },
        }
    }
}

/// Hands every whole frame the framer holds to the dispatcher; `Ok` when it needs more bytes,
/// else how the stream ends (a framing error, a stream error, the dispatcher gone).
async fn hand_over_framed(
    framer: &mut super::framer::Framer,
    inbound: &mpsc::Sender<Inbound>,
    hearing: &Hearing,
    cfg: &ComponentConfig,
) -> Result<(), ReadEnd> {
    loop {
        let item = match framer.next_frame() {
            Ok(Some(frame)) => match frame_to_inbound(frame, cfg) {
                Ok(Some(item)) => item,
                Ok(None) => continue,
                Err(e) => return Err(ReadEnd::Failed(e)),
            },
            Ok(None) => return Ok(()),
            Err(e) => return Err(ReadEnd::Failed(e.into())),
        };
        if !hand_over(inbound, item, hearing).await {
            return Err(ReadEnd::InboundClosed);
        }
    }
}

/// What a frame on an established stream means for the dispatcher.
fn frame_to_inbound(
    frame: StreamFrame,
    cfg: &ComponentConfig,
) -> Result<Option<Inbound>, LinkError> {
    match frame {
        StreamFrame::Element(element) if is_stream_error(&element) => {
            Err(stream_error(&element, &cfg.jid))
        }
        StreamFrame::Element(element) if element_name(&element) == b"handshake" => {
            log::debug!("ignoring a repeated handshake acknowledgement");
            Ok(None)
        }
        StreamFrame::Element(element) => Ok(Some(Inbound::Stanza(element))),
        StreamFrame::Push { request, .. } => Ok(Some(Inbound::Push(request))),
        StreamFrame::Oversized { start_tag } => {
            // Per stanza at debug: the dispatcher answers it and logs loudly, rate-limited.
            log::debug!(
                "skipped a stanza over the {} byte limit (limits.maxStanzaSize) or nested deeper \
                 than {} (limits.maxDepth)",
                cfg.max_stanza_size,
                cfg.max_depth
            );
            Ok(Some(Inbound::Oversized { start_tag }))
        }
        StreamFrame::StreamEnd => Err(LinkError::StreamClosed),
        StreamFrame::StreamHeader(_) => Err(LinkError::Unexpected("a second stream header".into())),
    }
}

/// Writes replies in batches and keeps the link honest with pings, until shutdown has drained
/// the queue or the link fails.
async fn write_replies(
    wr: &mut OwnedWriteHalf,
    replies: &mut ReplyReceiver,
    pending: &mut PendingReplies,
    hearing: &Hearing,
    cfg: &ComponentConfig,
    shutdown: &CancellationToken,
) -> WriteEnd {
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(64);
    let ping = keepalive_ping(cfg);
    let mut next_ping = Instant::now() + cfg.keepalive_interval;
    let mut ping_deadline: Option<Instant> = None;
    let mut draining = shutdown.is_cancelled();
    loop {
        // One `write` at a time, each accounted for before the next: this future may be
        // dropped between any two of them when the reader ends the stream.
        while !pending.unwritten().is_empty() {
            // A server that takes nothing from us for this long is as good as gone.
            match timeout(cfg.keepalive_timeout, wr.write(pending.unwritten())).await {
                Ok(Ok(0)) => {
                    return WriteEnd::Failed(LinkError::Io(std::io::ErrorKind::WriteZero.into()))
                }
                Ok(Ok(n)) => pending.advance(n),
                Ok(Err(e)) => return WriteEnd::Failed(LinkError::Io(e)),
                Err(_) => return WriteEnd::Failed(LinkError::WriteStalled(cfg.keepalive_timeout)),
            }
        }
        let keepalive = !draining;
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !draining => draining = true,
            _ = sleep_until(ping_deadline.unwrap_or(next_ping)), if keepalive && ping_deadline.is_some() => {
                if hearing.silent() {
                    return WriteEnd::Failed(LinkError::KeepaliveTimeout(cfg.keepalive_timeout));
                }
                ping_deadline = None;
            }
            _ = sleep_until(next_ping), if keepalive && ping_deadline.is_none() => {
                hearing.heard.store(false, Ordering::Relaxed);
                pending.push_ping(&ping);
                let now = Instant::now();
                ping_deadline = Some(now + cfg.keepalive_timeout);
                next_ping = now + cfg.keepalive_interval;
            }
            received = replies.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    return if draining { WriteEnd::Drained } else { WriteEnd::RepliesClosed };
                }
                for reply in batch.drain(..) {
                    pending.push_reply(&reply);
                }
            }
        }
    }
}

/// The XEP-0199 ping from the component to itself: the server routes it back to us, so its
/// return proves the whole path (our write, the server's routing, our read) without naming a
/// domain the server may not host. A ping to a domain it does not host would go out over
/// server-to-server and could hang past the timeout, ending an idle link every interval.
fn keepalive_ping(cfg: &ComponentConfig) -> Vec<u8> {
    let jid = quick_xml::escape::escape(cfg.jid.as_str());
    format!("<iq type='get' id='fpush-keepalive' from='{jid}' to='{jid}'><ping xmlns='urn:xmpp:ping'/></iq>")
        .into_bytes()
}

/// Writes the final bytes, half-closes, and waits briefly for the server to close its side, so
/// the kernel does not reset the connection over unread input and lose what we just wrote.
/// What arrives meanwhile goes to `late` when given, else it is read and dropped. `grace`
/// bounds each of the two waits.
async fn close_stream(
    wr: &mut OwnedWriteHalf,
    rd: &mut OwnedReadHalf,
    grace: Duration,
    last: &[u8],
    late: Option<LateStanzas<'_>>,
) {
    let write = async {
        wr.write_all(last).await?;
        wr.shutdown().await
    };
    if let Ok(Err(e)) | Err(e) = timeout(grace, write)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
    {
        log::debug!("closing the stream: {e}");
        return;
    }
    let mut sink = vec![0u8; 4096];
    let drain = async {
        if let Some(late) = late {
            late.hand_over_until_closed(rd).await;
        }
        loop {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = timeout(grace, drain).await;
}

impl From<FramingError> for LinkError {
    fn from(e: FramingError) -> Self {
        LinkError::Framing(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jid: &str) -> ComponentConfig {
        ComponentConfig {
            jid: jid.to_owned(),
            secret: String::new(),
            server_host: "xmpp.internal".to_owned(),
            server_port: 5347,
            reconnect_base: Duration::from_secs(1),
            reconnect_cap: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            max_stanza_size: 1024,
            max_depth: 8,
        }
    }

    #[test]
    fn keepalive_pings_the_component_itself() {
        let ping = String::from_utf8(keepalive_ping(&cfg("push.example.org"))).unwrap();
        assert_eq!(
            ping,
            "<iq type='get' id='fpush-keepalive' from='push.example.org' to='push.example.org'>\
             <ping xmlns='urn:xmpp:ping'/></iq>"
        );
    }

    #[test]
    fn replies_written_in_full_are_not_written_again_on_the_next_stream() {
        let mut pending = PendingReplies::default();
        pending.push_reply(b"<iq id='1'/>");
        pending.push_ping(b"<iq id='ping'/>");
        pending.push_reply(b"<iq id='2'/>");
        pending.push_reply(b"<iq id='3'/>");
        assert_eq!(pending.count(), 3);
        // The socket took the first reply, the ping and half of the second, then the stream died.
        pending.advance(12 + 15 + 6);
        assert_eq!(pending.count(), 2);
        assert_eq!(pending.unwritten(), b"='2'/><iq id='3'/>");
        pending.restart();
        assert_eq!(pending.unwritten(), b"<iq id='2'/><iq id='3'/>");
        pending.advance(12);
        assert_eq!(pending.count(), 1);
        pending.restart();
        assert_eq!(pending.unwritten(), b"<iq id='3'/>");
        pending.advance(12);
        assert_eq!((pending.count(), pending.unwritten()), (0, &b""[..]));
    }

    #[test]
    fn a_new_stream_with_nothing_cut_short_starts_clean() {
        let mut pending = PendingReplies::default();
        pending.push_reply(b"<iq id='1'/>");
        pending.advance(12);
        pending.restart();
        assert!(pending.unwritten().is_empty());
        pending.push_reply(b"<iq id='2'/>");
        pending.restart();
        assert_eq!(pending.unwritten(), b"<iq id='2'/>");
        assert_eq!(pending.count(), 1);
    }
}
