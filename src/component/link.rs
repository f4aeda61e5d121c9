//! One authenticated stream, from the handshake to its end: a reader that cuts stanzas and
//! hands them to the dispatcher, and one writer that sends every reply (batched) and the
//! keepalive pings. Both run in the same task, so nothing here needs to be `'static`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::framer::{Frame, FramingError};
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
}

/// Replies taken from the queue but not yet known to be written. A failed write leaves them
/// here, and they go out first on the next stream.
#[derive(Default)]
pub(crate) struct PendingReplies {
    bytes: Vec<u8>,
    /// How many replies `bytes` holds (pings are not counted).
    count: usize,
}

impl PendingReplies {
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    fn push_reply(&mut self, reply: &[u8]) {
        self.bytes.extend_from_slice(reply);
        self.count += 1;
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }
}

/// Serves one authenticated stream until it drops, or until shutdown has drained every reply.
pub(crate) async fn serve(
    opened: Opened,
    cfg: &ComponentConfig,
    inbound: &mpsc::Sender<Inbound>,
    replies: &mut ReplyReceiver,
    pending: &mut PendingReplies,
    shutdown: &CancellationToken,
) -> Result<LinkEnd, ComponentError> {
    let Opened {
        stream, mut framer, ..
    } = opened;
    let (mut rd, mut wr) = stream.into_split();
    // Set by the reader on every read; the keepalive clears it when it sends a ping.
    let heard = AtomicBool::new(true);

    let outcome = {
        let reader = read_stanzas(&mut rd, &mut framer, inbound, &heard, cfg, shutdown);
        let writer = write_replies(&mut wr, replies, pending, &heard, cfg, shutdown);
        tokio::pin!(reader, writer);
        let mut reading = true;
        loop {
            tokio::select! {
                end = &mut reader, if reading => match end {
                    ReadEnd::Shutdown => reading = false,
                    ReadEnd::InboundClosed if shutdown.is_cancelled() => reading = false,
                    ReadEnd::InboundClosed => break Outcome::InboundClosed,
                    ReadEnd::Failed(e) => break Outcome::Failed(e),
                },
                end = &mut writer => break match end {
                    WriteEnd::Drained => Outcome::Drained,
                    WriteEnd::RepliesClosed => Outcome::RepliesClosed,
                    WriteEnd::Failed(e) => Outcome::Failed(e),
                },
            }
        }
    };

    // Long enough for the server to read our last replies and close its side.
    let orderly = cfg.keepalive_timeout.min(Duration::from_secs(5));
    match outcome {
        Outcome::Drained => {
            close_stream(&mut wr, &mut rd, orderly, b"</stream:stream>").await;
            Ok(LinkEnd::Shutdown)
        }
        Outcome::RepliesClosed => {
            close_stream(&mut wr, &mut rd, orderly, b"</stream:stream>").await;
            Err(ComponentError::RepliesClosed)
        }
        Outcome::InboundClosed => {
            close_stream(&mut wr, &mut rd, orderly, b"</stream:stream>").await;
            Err(ComponentError::InboundClosed)
        }
        Outcome::Failed(e) => {
            if let Some(condition) = e.stream_error_condition() {
                // Tell the server why we hang up. If a reply write was cut short above, these
                // bytes follow a partial stanza; the stream is being thrown away either way.
                let mut bytes = Vec::with_capacity(160);
                bytes.extend_from_slice(b"<stream:error><");
                bytes.extend_from_slice(condition.as_bytes());
                bytes.extend_from_slice(
                    b" xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
                );
                // Reconnecting matters more than a polite goodbye: wait only briefly.
                let grace = cfg.keepalive_timeout.min(Duration::from_millis(500));
                close_stream(&mut wr, &mut rd, grace, &bytes).await;
            }
            Ok(LinkEnd::Dropped(e))
        }
    }
}

enum Outcome {
    Drained,
    RepliesClosed,
    InboundClosed,
    Failed(LinkError),
}

enum ReadEnd {
    Shutdown,
    InboundClosed,
    Failed(LinkError),
}

enum WriteEnd {
    Drained,
    RepliesClosed,
    Failed(LinkError),
}

/// Reads the stream and passes each stanza on, until shutdown or failure.
async fn read_stanzas(
    rd: &mut OwnedReadHalf,
    framer: &mut super::framer::Framer,
    inbound: &mpsc::Sender<Inbound>,
    heard: &AtomicBool,
    cfg: &ComponentConfig,
    shutdown: &CancellationToken,
) -> ReadEnd {
    loop {
        loop {
            let item = match framer.next_frame() {
                Ok(Some(frame)) => match frame_to_inbound(frame, cfg) {
                    Ok(Some(item)) => item,
                    Ok(None) => continue,
                    Err(e) => return ReadEnd::Failed(e),
                },
                Ok(None) => break,
                Err(e) => return ReadEnd::Failed(e.into()),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return ReadEnd::Shutdown,
                sent = inbound.send(item) => {
                    if sent.is_err() {
                        return ReadEnd::InboundClosed;
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return ReadEnd::Shutdown,
            read = rd.read_buf(framer.buffer()) => match read {
                Ok(0) => return ReadEnd::Failed(LinkError::Closed),
                Ok(_) => heard.store(true, Ordering::Relaxed),
                Err(e) => return ReadEnd::Failed(LinkError::Io(e)),
            },
        }
    }
}

/// What a frame on an established stream means for the dispatcher.
fn frame_to_inbound(frame: Frame, cfg: &ComponentConfig) -> Result<Option<Inbound>, LinkError> {
    match frame {
        Frame::Element(element) if is_stream_error(&element) => {
            Err(stream_error(&element, &cfg.jid))
        }
        Frame::Element(element) if element_name(&element) == b"handshake" => {
            log::debug!("ignoring a repeated handshake acknowledgement");
            Ok(None)
        }
        Frame::Element(element) => Ok(Some(Inbound::Stanza(element))),
        Frame::Oversized { start_tag } => {
            log::warn!(
                "skipped a stanza over the {} byte limit (limits.maxStanzaSize)",
                cfg.max_stanza_size
            );
            Ok(Some(Inbound::Oversized { start_tag }))
        }
        Frame::StreamEnd => Err(LinkError::StreamClosed),
        Frame::StreamHeader(_) => Err(LinkError::Unexpected("a second stream header".into())),
    }
}

/// Writes replies in batches and keeps the link honest with pings, until shutdown has drained
/// the queue or the link fails.
async fn write_replies(
    wr: &mut OwnedWriteHalf,
    replies: &mut ReplyReceiver,
    pending: &mut PendingReplies,
    heard: &AtomicBool,
    cfg: &ComponentConfig,
    shutdown: &CancellationToken,
) -> WriteEnd {
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(64);
    let ping = keepalive_ping(cfg);
    let mut next_ping = Instant::now() + cfg.keepalive_interval;
    let mut ping_deadline: Option<Instant> = None;
    let mut draining = shutdown.is_cancelled();
    loop {
        if !pending.bytes.is_empty() {
            // A server that takes nothing from us for this long is as good as gone.
            match timeout(cfg.keepalive_timeout, wr.write_all(&pending.bytes)).await {
                Ok(Ok(())) => pending.clear(),
                Ok(Err(e)) => return WriteEnd::Failed(LinkError::Io(e)),
                Err(_) => return WriteEnd::Failed(LinkError::WriteStalled(cfg.keepalive_timeout)),
            }
        }
        let keepalive = !draining;
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !draining => draining = true,
            _ = sleep_until(ping_deadline.unwrap_or(next_ping)), if keepalive && ping_deadline.is_some() => {
                if !heard.load(Ordering::Relaxed) {
                    return WriteEnd::Failed(LinkError::KeepaliveTimeout(cfg.keepalive_timeout));
                }
                ping_deadline = None;
            }
            _ = sleep_until(next_ping), if keepalive && ping_deadline.is_none() => {
                heard.store(false, Ordering::Relaxed);
                pending.bytes.extend_from_slice(&ping);
                let now = Instant::now();
                ping_deadline = Some(now + cfg.keepalive_timeout);
                next_ping = now + cfg.keepalive_interval;
            }
            received = replies.0.recv_many(&mut batch, MAX_BATCH) => {
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

/// The XEP-0199 ping from the component to its server's domain.
fn keepalive_ping(cfg: &ComponentConfig) -> Vec<u8> {
    let from = quick_xml::escape::escape(cfg.jid.as_str());
    let to = quick_xml::escape::escape(server_domain(cfg));
    format!("<iq type='get' id='fpush-keepalive' from='{from}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
        .into_bytes()
}

/// The domain a component is attached to: its JID minus the first label (`push.example.org` →
/// `example.org`). A single-label JID has no parent, so the configured server host is used.
fn server_domain(cfg: &ComponentConfig) -> &str {
    match cfg.jid.split_once('.') {
        Some((_, parent)) if !parent.is_empty() => parent,
        _ => &cfg.server_host,
    }
}

/// Writes the final bytes, half-closes, and waits briefly for the server to close its side, so
/// the kernel does not reset the connection over unread input and lose what we just wrote.
/// `grace` bounds each of the two waits.
async fn close_stream(
    wr: &mut OwnedWriteHalf,
    rd: &mut OwnedReadHalf,
    grace: Duration,
    last: &[u8],
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
    fn keepalive_goes_to_the_parent_domain() {
        assert_eq!(server_domain(&cfg("push.example.org")), "example.org");
        assert_eq!(server_domain(&cfg("pushhost")), "xmpp.internal");
        let ping = String::from_utf8(keepalive_ping(&cfg("push.localhost"))).unwrap();
        assert_eq!(
            ping,
            "<iq type='get' id='fpush-keepalive' from='push.localhost' to='localhost'>\
             <ping xmlns='urn:xmpp:ping'/></iq>"
        );
    }
}
