//! Life under systemd: service manager notifications (readiness, reload, stop, watchdog) and a
//! log format journald can read priorities from. Everything here is inert outside systemd.

pub mod journal;
pub mod notify;
