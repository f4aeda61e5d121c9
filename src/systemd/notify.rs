//! Service manager notifications (`sd_notify`): READY=1 once the component link is
//! authenticated, RELOADING=1 … READY=1 around a reload, STOPPING=1 at shutdown, STATUS= with the
//! link's state, EXTEND_TIMEOUT_USEC= while a long start-up step runs, and WATCHDOG=1 pings when
//! the unit has `WatchdogSec=`. Each is a no-op without `NOTIFY_SOCKET`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::component::LinkState;

/// Not yet told READY=1: systemd still waits for the first authenticated link.
const STARTING: u8 = 0;
const RUNNING: u8 = 1;
/// STOPPING=1 sent: nothing may announce readiness any more.
const STOPPING: u8 = 2;

/// Tells the service manager what the daemon is doing. Cheap to clone; all clones share one
/// phase, so a reload during start-up never announces readiness early.
#[derive(Clone, Default)]
pub struct ServiceNotifier {
    phase: Arc<AtomicU8>,
}

impl ServiceNotifier {
    /// Follow the link's state (READY=1 at the first `Up`, STATUS= on every change) and ping the
    /// watchdog if the service manager asked for it, until `stop` is cancelled.
    pub fn spawn(link: watch::Receiver<LinkState>, stop: CancellationToken) -> ServiceNotifier {
        let notifier = ServiceNotifier::default();
        tokio::spawn(notifier.clone().follow_link(link, stop.clone()));
        if let Some(period) = watchdog_period(sd_notify::watchdog_enabled()) {
            tokio::spawn(ping_watchdog(period, stop));
        }
        notifier
    }

    /// A reload starts.
    pub fn reloading(&self) {
        if self.phase.load(Ordering::Acquire) != RUNNING {
            return;
        }
        let mut states = vec![NotifyState::Reloading];
        // systemd ≥ 253 uses it to tell this reload from an older one.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        send(&states);
    }

    /// The reload is done (applied or refused: either way the daemon runs on).
    pub fn reloaded(&self) {
        if self.phase.load(Ordering::Acquire) == RUNNING {
            send(&[NotifyState::Ready]);
        }
    }

    /// Shutdown starts; it may take up to `budget`, which extends systemd's stop timeout when
    /// `TimeoutStopSec=` is shorter, so in-flight pushes are never cut off by a SIGKILL.
    pub fn stopping(&self, budget: Duration) {
        self.phase.store(STOPPING, Ordering::Release);
        let usec = u32::try_from(budget.as_micros()).unwrap_or(u32::MAX);
        send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: finishing pushes in flight"),
            NotifyState::ExtendTimeoutUsec(usec),
        ]);
    }

    async fn follow_link(self, mut link: watch::Receiver<LinkState>, stop: CancellationToken) {
        loop {
            let (status, up) = {
                let state = link.borrow_and_update();
                (status_line(&state), matches!(*state, LinkState::Up { .. }))
            };
            if up
                && self
                    .phase
                    .compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            } else if self.phase.load(Ordering::Acquire) != STOPPING {
                send(&[NotifyState::Status(&status)]);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = link.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// How much of the stream id STATUS= shows, in characters: systemd ignores a notification of
/// PIPE_BUF (4096) bytes or more whole, and the id comes in the same one as READY=1.
const SHOWN_STREAM_ID: usize = 64;

/// The STATUS= text `systemctl status` shows for a link state. The stream id is the XMPP
/// server's: it is escaped (a line break in it would add an assignment of the server's choosing,
/// MAINPID=, WATCHDOG_USEC=, STOPPING=1, to the notification) and cut short (a long one would
/// make systemd drop READY=1, and the start would time out).
fn status_line(state: &LinkState) -> String {
    match state {
        LinkState::Connecting => "connecting to the XMPP server".to_owned(),
        LinkState::Up { stream_id } => {
            let escaped = super::escape_controls(stream_id);
            let mut shown: String = escaped.chars().take(SHOWN_STREAM_ID).collect();
            if shown.len() < escaped.len() {
                shown.push('…');
            }
            format!("component link up (stream {shown})")
        }
        LinkState::Down => "component link down, retrying".to_owned(),
    }
}

/// How often to ping for the service manager's `WATCHDOG_USEC=`: at half of it. Zero means no
/// watchdog (libsystemd reads it so), not a ping, and a warning when it fails, every millisecond.
fn watchdog_period(interval: Option<Duration>) -> Option<Duration> {
    interval
        .filter(|interval| !interval.is_zero())
        .map(|interval| interval / 2)
}

/// WATCHDOG=1 every `period` from the event loop: if the loop stalls, the pings stop and systemd
/// restarts the service.
async fn ping_watchdog(period: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(period.max(Duration::from_millis(1)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => send(&[NotifyState::Watchdog]),
        }
    }
}

/// How much more start-up time one extension asks for, and how often one is sent.
const START_EXTENSION: Duration = Duration::from_secs(60);
const EXTEND_EVERY: Duration = Duration::from_secs(20);

/// Runs `work`, a start-up step that may take long (opening the registration store migrates
/// and compacts an older file first: about 11 s per million registrations), with `status` as
/// STATUS= and EXTEND_TIMEOUT_USEC= every `EXTEND_EVERY`, so that the unit's
/// `TimeoutStartSec=` does not kill a migration of a large store half-way (it would roll back,
/// and the restart would begin it again).
pub async fn extending_start_up<T>(status: &str, work: impl std::future::Future<Output = T>) -> T {
    let usec = u32::try_from(START_EXTENSION.as_micros()).unwrap_or(u32::MAX);
    let extend = || {
        send(&[
            NotifyState::Status(status),
            NotifyState::ExtendTimeoutUsec(usec),
        ])
    };
    extend();
    let start = tokio::time::Instant::now() + EXTEND_EVERY;
    let mut ticks = tokio::time::interval_at(start, EXTEND_EVERY);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => extend(),
        }
    }
}

/// Send, logging (not failing) when the socket refuses: notifications are advisory.
fn send(states: &[NotifyState<'_>]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send_to(&socket, &message(states)) {
        log::warn!("cannot notify the service manager: {error}");
    }
}

/// How long a notification may wait for room in the service manager's queue: a moment of
/// congestion does not lose READY=1, a stuck manager does not stall fpush.
const SEND_WITHIN: Duration = Duration::from_millis(100);

/// The notification's text: one `KEY=value` a line.
fn message(states: &[NotifyState<'_>]) -> String {
    states.iter().map(|state| format!("{state}\n")).collect()
}

/// Sends `message` as one datagram to `socket`: a path, or, with a leading `@`, a name in
/// Linux's abstract namespace, as sd_notify(3) reads `NOTIFY_SOCKET` (service managers in
/// containers hand out such names; taken as a path, READY=1 would never arrive). Waits at most
/// [`SEND_WITHIN`] for room: a service manager that reads no more (its queue full) costs a
/// notification, not the event loop every push runs on.
fn send_to(socket: &OsStr, message: &str) -> io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    datagram.set_write_timeout(Some(SEND_WITHIN))?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => datagram.connect_addr(&abstract_address(name)?)?,
        None => datagram.connect(socket)?,
    }
    let sent = datagram.send(message.as_bytes())?;
    if sent != message.len() {
        let cut = "the notification was cut short";
        return Err(io::Error::new(io::ErrorKind::WriteZero, cut));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> io::Result<SocketAddr> {
    let message = "abstract socket names exist only on Linux";
    Err(io::Error::new(io::ErrorKind::Unsupported, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_names_the_link_state() {
        assert_eq!(
            status_line(&LinkState::Connecting),
            "connecting to the XMPP server"
        );
        assert_eq!(
            status_line(&LinkState::Up {
                stream_id: "abc".into()
            }),
            "component link up (stream abc)"
        );
        assert_eq!(
            status_line(&LinkState::Down),
            "component link down, retrying"
        );
    }

    #[test]
    fn a_watchdog_interval_of_zero_means_no_watchdog() {
        assert_eq!(watchdog_period(None), None);
        assert_eq!(watchdog_period(Some(Duration::ZERO)), None);
        let interval = Some(Duration::from_secs(30));
        assert_eq!(watchdog_period(interval), Some(Duration::from_secs(15)));
    }

    #[test]
    fn the_message_has_one_assignment_a_line() {
        let states = [NotifyState::Ready, NotifyState::Status("up")];
        assert_eq!(message(&states), "READY=1\nSTATUS=up\n");
    }

    #[test]
    fn a_notify_socket_path_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\n");
        let gone = dir.path().join("gone.sock");
        assert!(send_to(gone.as_os_str(), "READY=1\n").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_notify_socket_is_reached() {
        let name = format!("@fpush-test-notify-{}", std::process::id());
        let address = abstract_address(&name.as_bytes()[1..]).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send_to(name.as_ref(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\n");
    }

    #[test]
    fn a_service_manager_that_reads_nothing_does_not_stall_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let _receiver = UnixDatagram::bind(&path).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let sent: Vec<bool> = (0..10_000)
                .map(|_| send_to(path.as_os_str(), "WATCHDOG=1\n").is_ok())
                .take_while(|sent| *sent)
                .collect();
            let _ = done.send(sent.len());
        });
        let sent = finished
            .recv_timeout(Duration::from_secs(5))
            .expect("a send to a full queue returned");
        assert!(sent > 0, "the first notification is sent");
        assert!(sent < 10_000, "a full queue refuses notifications");
    }

    #[test]
    fn a_long_stream_id_leaves_ready_within_what_the_service_manager_reads() {
        // systemd reads a notification of at most PIPE_BUF (4096) bytes and ignores a longer
        // one whole, READY=1 with it.
        let state = LinkState::Up {
            stream_id: "x".repeat(10_000),
        };
        let status = status_line(&state);
        let text = message(&[NotifyState::Ready, NotifyState::Status(&status)]);
        assert!(text.len() < 4096, "{} bytes", text.len());
        assert!(
            status.starts_with("component link up (stream xxxx"),
            "{status}"
        );
    }

    #[test]
    fn a_stream_id_cannot_add_lines_to_the_notification() {
        let state = LinkState::Up {
            stream_id: "x\nWATCHDOG_USEC=1\rMAINPID=1\0".into(),
        };
        let status = status_line(&state);
        assert!(!status.contains(char::is_control), "{status:?}");
        assert_eq!(
            status,
            "component link up (stream x\\nWATCHDOG_USEC=1\\rMAINPID=1\\0)"
        );
    }
}
