//! The task that drives one pooled HTTP/2 connection: it reads the server's first SETTINGS
//! before the connection takes requests, pings it on a timer and when asked (after a request
//! timed out, a sign the peer may be gone without a FIN), closes it when it is an idle extra,
//! and takes it out of the pool when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio_rustls::client::TlsStream;

use crate::pool::{Conn, Pool};

/// How often a connection is checked with a PING.
const PING_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between two idleness checks.
const MIN_IDLE_CHECK: Duration = Duration::from_millis(50);

type Connection = h2::client::Connection<TlsStream<TcpStream>, Bytes>;

/// Starts driving `connection`; the receiver gets whether the server answered a first PING
/// (so its first SETTINGS were read), or fails when the connection ended before.
pub(crate) fn spawn(
    connection: Connection,
    pool: &Arc<Pool>,
    conn: &Arc<Conn>,
) -> oneshot::Receiver<bool> {
    let (ready, ready_rx) = oneshot::channel();
    let driver = Driver {
        pool: Arc::downgrade(pool),
        id: conn.id(),
        check_now: conn.check_now.clone(),
        ended: conn.ended.clone(),
        pong_timeout: pool.connector.connect_timeout,
        idle_check: (pool.idle_timeout / 2).max(MIN_IDLE_CHECK),
        origin: pool.connector.origin.text.clone(),
    };
    // The driver holds no strong handle on the connection's sender, so dropping the pool's
    // last handle lets h2 close the connection once its streams are done.
    tokio::spawn(driver.run(connection, ready));
    ready_rx
}

struct Driver {
    pool: Weak<Pool>,
    id: u64,
    check_now: Arc<Notify>,
    ended: Arc<AtomicBool>,
    pong_timeout: Duration,
    idle_check: Duration,
    origin: String,
}

enum Wake {
    Ended,
    Ping,
    IdleCheck,
}

impl Driver {
    async fn run(self, mut connection: Connection, ready: oneshot::Sender<bool>) {
        let mut ping_pong = connection.ping_pong();
        tokio::pin!(connection);
        let mut ready = Some(ready);
        let mut next_ping = tokio::time::Instant::now();
        // A deadline of its own: PINGs asked for by other requests' timeouts must not restart it.
        let mut next_idle_check = next_ping + self.idle_check;
        let mut in_pool = true;
        loop {
            let wake = tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        log::debug!("HTTP/2 connection to {} ended: {e}", self.origin);
                    }
                    Wake::Ended
                }
                _ = tokio::time::sleep_until(next_ping) => Wake::Ping,
                _ = self.check_now.notified() => Wake::Ping,
                _ = tokio::time::sleep_until(next_idle_check), if in_pool => Wake::IdleCheck,
            };
            match wake {
                Wake::Ended => break,
                Wake::IdleCheck => {
                    next_idle_check = tokio::time::Instant::now() + self.idle_check;
                    if let Some(pool) = self.pool.upgrade() {
                        if pool.close_if_idle(self.id) {
                            log::debug!("closing an idle extra connection to {}", self.origin);
                            in_pool = false;
                        }
                    }
                }
                Wake::Ping => {
                    next_ping = tokio::time::Instant::now() + PING_INTERVAL;
                    let Some(pings) = ping_pong.as_mut() else {
                        continue;
                    };
                    let pong =
                        tokio::time::timeout(self.pong_timeout, pings.ping(h2::Ping::opaque()));
                    let answered = tokio::select! {
                        ended = &mut connection => {
                            if let Err(e) = ended {
                                log::debug!("HTTP/2 connection to {} ended: {e}", self.origin);
                            }
                            break;
                        }
                        pong = pong => matches!(pong, Ok(Ok(_))),
                    };
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(answered);
                    }
                    if !answered {
                        log::warn!(
                            "HTTP/2 connection to {} does not answer PING; dropping it",
                            self.origin
                        );
                        break;
                    }
                }
            }
        }
        self.ended.store(true, Ordering::Release);
        if let Some(pool) = self.pool.upgrade() {
            pool.remove(self.id);
        }
    }
}
