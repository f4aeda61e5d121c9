//! `fpush store import-p2 --csv FILE`: registrations from p2's `target` table, exported as CSV
//! with a header line (columns `service,device,channel,domain,token,node,secret` in any order;
//! quoting per RFC 4180).
//!
//! `service` `FCM` / `APNS` becomes the registration service `fcm` / `apns`. p2 keeps no
//! account: the domain and device (and channel, for a room) stand in for it, so the per-account
//! cap counts one device's registration, and each room's, on their own; the client's next
//! registration puts its real account in. Imported registrations count as used now.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use super::lines::Tally;
use crate::store::{Registration, RegistrationKey, RegistrationStore};

#[derive(Debug, Deserialize)]
struct Row {
    service: String,
    device: String,
    #[serde(default)]
    channel: String,
    domain: String,
    token: String,
    node: String,
    secret: String,
}

impl Row {
    fn registration(self) -> Result<Registration, String> {
        let service = match self.service.as_str() {
            "FCM" => "fcm",
            "APNS" => "apns",
            other => return Err(format!("unknown service {other:?} (FCM or APNS)")),
        };
        let required = [
            ("device", &self.device),
            ("domain", &self.domain),
            ("token", &self.token),
            ("node", &self.node),
            ("secret", &self.secret),
        ];
        if let Some((name, _)) = required.iter().find(|(_, value)| value.trim().is_empty()) {
            return Err(format!("`{name}` is empty"));
        }
        let account = match self.channel.as_str() {
            "" => format!("p2:{}:{}", self.domain, self.device),
            channel => format!("p2:{}:{}:{channel}", self.domain, self.device),
        };
        Ok(Registration {
            key: RegistrationKey {
                service: service.into(),
                device: self.device,
                channel: self.channel,
            },
            account,
            domain: self.domain,
            token: self.token,
            second_token: None,
            node: self.node,
            secret: self.secret,
            last_used: SystemTime::now(),
        })
    }
}

/// Imports every good row; `Ok(false)` when some were skipped.
pub(super) async fn import(store: Arc<dyn RegistrationStore>, file: &Path) -> Result<bool, String> {
    let name = file.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(file)
        .map_err(|e| format!("{name}: {e}"))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("{name}: {e}"))?
        .clone();
    let mut tally = Tally::default();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        let read = match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => record
                .deserialize::<Row>(Some(&headers))
                .map_err(|e| e.to_string())
                .and_then(Row::registration),
            Err(error) if error.is_io_error() => return Err(format!("{name}: {error}")),
            Err(error) => Err(error.to_string()),
        };
        let line = record.position().map_or(line, |position| position.line());
        tally.restore(&*store, read, &name, line).await;
    }
    Ok(tally.report("registrations from p2", &name))
}

/// A new file only its owner can read (exports hold secrets).
pub(super) fn create_private(path: &Path) -> Result<std::fs::File, String> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}
