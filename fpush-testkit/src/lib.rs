//! Test servers that speak the real protocols fpush talks to, for fpush's own tests, the
//! end-to-end harness and the benchmarks: the server side of XEP-0114, APNS, FCM and a Web Push
//! service (HTTP/2 over TLS with a test CA made at run time). None of this ships in the daemon.

pub mod apns;
pub mod fake_cli;
pub mod fcm;
pub mod redis_server;
pub mod settings;
pub mod tls;
pub mod webpush;
mod work_dir;
pub mod xmpp;
