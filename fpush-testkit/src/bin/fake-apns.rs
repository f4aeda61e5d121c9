//! `fake-apns`: the APNS test server as a process, for the end-to-end harness.
//!
//! ```text
//! fake-apns [--listen 127.0.0.1:0] [--dir DIR] [--record FILE]
//! ```
//!
//! On start it runs the testkit's [`ApnsHarness`], which makes a fresh test PKI and writes into
//! `DIR` (default: a temporary directory, removed on exit) what fpush's `apns` settings need: the
//! CA (`apns-ca.pem`, for `caFilePath`), a client certificate (`apns.p12`, for
//! `certFilePath`/`certPassword`) and a signing key (`AuthKey_<keyId>.p8`, for
//! `keyFilePath`/`keyId`/`teamId`); both auth modes are accepted.
//! It then prints ONE JSON line to stdout:
//! `{"port":..,"endpoint":..,"ca":..,"p12":..,"p12Password":..,"p8":..,"keyId":..,"teamId":..,"topic":..}`
//! and serves until SIGTERM or SIGINT.
//!
//! With `--record FILE`, every request received is appended to `FILE` as one JSON line:
//! `{"token":..,"status":..,"reason":..,"headers":{..},"body":{..}}` (`status` 0 = no answer).
//!
//! Answers follow Apple's checks (device token: hex, 64 to 200 digits, else 400
//! `BadDeviceToken`, unless it starts with a prefix below; `apns-id`; topic, push type,
//! priority, provider token or client certificate, payload size), then the token-prefix convention shared with `fake-fcm`:
//! `dead…` → 410 `Unregistered`; `baddevice…` → 400 `BadDeviceToken`; `unavailable…` → 503
//! `ServiceUnavailable`; `throttled…` → 429 `TooManyRequests` (no `Retry-After`, as Apple sends it);
//! `stall…` → never answers; `unavailable-once…` / `throttled-once…` → that answer for the
//! token's first request, 200 after; anything else → 200 with an `apns-id`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fpush_testkit::apns::{
    ApnsHarness, ApnsHarnessOptions, Received, KEY_ID, P12_PASSWORD, TEAM_ID,
};
use fpush_testkit::fake_cli;
use fpush_testkit::tls::P12Cipher;

struct Args {
    listen: SocketAddr,
    dir: Option<PathBuf>,
    record: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir: None,
        record: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--record" => args.record = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                return Err("usage: fake-apns [--listen ADDR] [--dir DIR] [--record FILE]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn record_line(r: &Received) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body =
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "token": r.token,
        "status": r.status,
        "reason": r.reason,
        "headers": headers,
        "body": body,
    })
    .to_string()
}

async fn run(args: Args) -> Result<(), String> {
    let options = ApnsHarnessOptions {
        listen: args.listen,
        dir: args.dir,
        ..ApnsHarnessOptions::default()
    };
    let harness = ApnsHarness::start_with(options)
        .await
        .map_err(|e| e.to_string())?;
    let p12 = harness
        .p12_file(P12Cipher::Modern)
        .map_err(|e| e.to_string())?;

    if let Some(path) = &args.record {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let file = Arc::new(Mutex::new(file));
        harness.server.set_observer(move |received| {
            if let Ok(mut file) = file.lock() {
                let _ = writeln!(file, "{}", record_line(received));
            }
        });
    }

    let announce = serde_json::json!({
        "port": harness.server.addr().port(),
        "endpoint": harness.origin(),
        "ca": harness.ca_file(),
        "p12": p12,
        "p12Password": P12_PASSWORD,
        "p8": harness.key_file(),
        "keyId": KEY_ID,
        "teamId": TEAM_ID,
        "topic": harness.topic(),
    });
    fake_cli::announce(&announce)?;
    fake_cli::until_signal().await?;
    drop(harness);
    Ok(())
}

fn main() {
    fake_cli::main("fake-apns", parse_args(), run);
}
