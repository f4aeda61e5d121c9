//! A real `redis-server` child process on a loopback port, for the tests of the Redis backends.
//!
//! A port found free may be taken again before the server binds it (another test's server, an
//! outgoing connection's ephemeral port): a server is ready only when the one answering on its
//! port reports its process id, and one that exits at start-up is started again on another port,
//! so such a race fails no test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start-ups tried on fresh ports before giving up.
const ATTEMPTS: usize = 3;
/// How long a server may take to listen.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);

/// Starts `redis-server` keeping its files in `dir`, with `extra` arguments. Returns the child
/// and its port once it accepts connections.
pub fn start(dir: &Path, extra: &[&str]) -> (Child, u16) {
    for _ in 0..ATTEMPTS {
        let port = free_port();
        if let Ok(child) = start_on(port, dir, extra) {
            return (child, port);
        }
    }
    panic!("redis-server exited at start-up {ATTEMPTS} times (its output is above)");
}

/// Starts `redis-server` on `port` (for a restart on the port clients know); `Err` with its
/// exit status when it exits before listening.
pub fn start_on(port: u16, dir: &Path, extra: &[&str]) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start redis-server ({error}): these tests need a real Redis; install \
                 Debian's redis-server package (scripts/install-test-deps.sh does)"
            )
        });
    let deadline = Instant::now() + LISTEN_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited at start-up: {status}"));
        }
        if let Ok(connection) = TcpStream::connect(("127.0.0.1", port)) {
            // Another test's server may have taken the port first: then ours exits soon.
            if serving_pid(connection) == Some(child.id()) {
                return Ok(child);
            }
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on port {port} within {LISTEN_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The process id the Redis server behind `connection` reports (`INFO server`).
fn serving_pid(mut connection: TcpStream) -> Option<u32> {
    connection
        .set_read_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    connection
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let has_pid_line = |reply: &[u8]| {
        let text = String::from_utf8_lossy(reply);
        text.split_once("process_id:")
            .is_some_and(|(_, rest)| rest.contains("\r\n"))
    };
    while !has_pid_line(&reply) {
        let read = connection.read(&mut chunk).ok()?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&reply);
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))?;
    line.trim().parse().ok()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
