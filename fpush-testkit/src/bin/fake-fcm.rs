//! `fake-fcm`: the FCM HTTP v1 test server and its OAuth token endpoint as a process, for the
//! end-to-end harness.
//!
//! ```text
//! fake-fcm [--listen 127.0.0.1:0] [--dir DIR] [--record FILE] [--project ID]
//! ```
//!
//! On start it makes a fresh test CA and writes into `DIR` (default: a temporary directory,
//! removed on exit) what fpush's `fcm` settings need: the CA (`fcm-ca.pem`, for `caFilePath`)
//! and a service account (`fcm-service-account.json`, for `fcmSecretPath`) whose `token_uri`
//! points at this same server. It then prints ONE JSON line to stdout:
//! `{"port":..,"endpoint":..,"ca":..,"serviceAccount":..,"projectId":..,"tokenUri":..}`
//! (`endpoint` is what `fcm.endpoint` must be) and serves until SIGTERM or SIGINT.
//!
//! With `--record FILE`, every `messages:send` request is appended to `FILE` as one JSON line:
//! `{"token":..,"status":..,"reason":..,"headers":{..},"body":{..}}`, where `token` is
//! `message.token`, `status` is the status answered (0 = no answer: stalled or reset), `reason`
//! the FCM `errorCode` (else the error `status`) or `null` on success, and the `Authorization`
//! header is redacted. Token-endpoint requests are not recorded (they are not deliveries).
//!
//! Requests are checked as FCM does: a bearer token this server granted and not expired (else
//! 401 `UNAUTHENTICATED`), the project of the service account (else 403 `PERMISSION_DENIED`),
//! a JSON object (else 400 `INVALID_ARGUMENT` from Google's JSON reader, no `FcmError`),
//! `message.token`, string `data` values, `android.priority == "high"` and a valid
//! `android.ttl` (else 400 `INVALID_ARGUMENT` naming the field). Then the answer follows the
//! token-prefix convention shared with `fake-apns`:
//!
//! | token prefix | answer |
//! |---|---|
//! | `dead…` | 404 `NOT_FOUND`, `errorCode` `UNREGISTERED` |
//! | `baddevice…` | 400 `INVALID_ARGUMENT`, `google.rpc.BadRequest` on `message.token` |
//! | `unavailable…` | 503 `UNAVAILABLE` |
//! | `throttled…` | 429 `RESOURCE_EXHAUSTED` / `QUOTA_EXCEEDED`, `Retry-After: 30` |
//! | `stall…` | never answers |
//! | `unavailable-once…`, `throttled-once…` | that answer for the token's first request, 200 after |
//! | anything else | 200 `{"name": "projects/…/messages/…"}` |
//!
//! and FCM-only prefixes: `mismatch…` → 403 `SENDER_ID_MISMATCH`; `internal…` → 500
//! `INTERNAL`; `thirdpartyauth…` → 401 `THIRD_PARTY_AUTH_ERROR`; `invalidarg…` → 400
//! `INVALID_ARGUMENT` on another field; `html…` → 502 with an HTML body; `reset…` → the
//! connection is dropped mid-request.

use std::net::SocketAddr;
use std::path::PathBuf;

use fpush_testkit::fake_cli;
use fpush_testkit::fcm::{FcmServer, FcmServerOptions};

const USAGE: &str = "usage: fake-fcm [--listen ADDR] [--dir DIR] [--record FILE] [--project ID]";

fn parse_args() -> Result<FcmServerOptions, String> {
    let mut options = FcmServerOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--listen" => {
                let text = value()?;
                let addr: SocketAddr = text.parse().map_err(|e| format!("--listen {text}: {e}"))?;
                options.listen = Some(addr);
            }
            "--dir" => options.dir = Some(PathBuf::from(value()?)),
            "--record" => options.record = Some(PathBuf::from(value()?)),
            "--project" => options.project_id = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(options)
}

async fn run(options: FcmServerOptions) -> Result<(), String> {
    let server = FcmServer::start_with(options)
        .await
        .map_err(|e| e.to_string())?;
    let announce = serde_json::json!({
        "port": server.addr().port(),
        "endpoint": server.endpoint(),
        "ca": server.ca_file(),
        "serviceAccount": server.service_account_file(),
        "projectId": server.project_id(),
        "tokenUri": server.account().token_uri(),
    });
    fake_cli::announce(&announce)?;
    fake_cli::until_signal().await?;
    drop(server);
    Ok(())
}

fn main() {
    fake_cli::main("fake-fcm", parse_args(), run);
}
