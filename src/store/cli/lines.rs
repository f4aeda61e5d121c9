//! `fpush store export` / `import`: registrations as JSON lines, one object per registration,
//! to move them between backends (SQLite ↔ Redis) or hosts.
//!
//! `{"service", "device", "channel", "account", "domain", "token", "secondToken" (optional),
//! "node", "secret", "lastUsed" (unix seconds)}`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::{unix_seconds, Registration, RegistrationKey, RegistrationStore};

/// Registrations read per page while exporting.
const PAGE: usize = 1_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    service: String,
    device: String,
    channel: String,
    account: String,
    domain: String,
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    second_token: Option<String>,
    node: String,
    secret: String,
    last_used: u64,
}

impl From<Registration> for Line {
    fn from(registration: Registration) -> Self {
        let last_used = registration.last_used.duration_since(UNIX_EPOCH);
        Line {
            service: registration.key.service,
            device: registration.key.device,
            channel: registration.key.channel,
            account: registration.account,
            domain: registration.domain,
            token: registration.token,
            second_token: registration.second_token,
            node: registration.node,
            secret: registration.secret,
            last_used: last_used.map_or(0, |since| since.as_secs()),
        }
    }
}

impl Line {
    fn registration(self) -> Result<Registration, String> {
        let required = [
            ("service", &self.service),
            ("device", &self.device),
            ("domain", &self.domain),
            ("token", &self.token),
            ("node", &self.node),
        ];
        if let Some((name, _)) = required.iter().find(|(_, value)| value.is_empty()) {
            return Err(format!("`{name}` is empty"));
        }
        Ok(Registration {
            key: RegistrationKey {
                service: self.service,
                device: self.device,
                channel: self.channel,
            },
            account: self.account,
            domain: self.domain,
            token: self.token,
            // Empty is none, as the Redis backend stores it and the registering doors give it.
            second_token: self.second_token.filter(|token| !token.is_empty()),
            node: self.node,
            secret: self.secret,
            // A use in the future would keep the registration from every sweep until then.
            last_used: unix_seconds(self.last_used)
                .ok_or_else(|| format!("`last_used` {} is out of range", self.last_used))?
                .min(SystemTime::now()),
        })
    }
}

/// Writes every registration; `Ok(false)` when some could not be read (each named on standard
/// error, and the rest written). A file left unfinished by an error is removed: it would pass
/// for a whole export.
pub(super) async fn export(
    store: Arc<dyn RegistrationStore>,
    file: Option<&Path>,
) -> Result<bool, String> {
    let Some(file) = file else {
        return write_all(store, std::io::stdout().lock(), "standard output").await;
    };
    let name = file.display().to_string();
    let written = write_all(store, super::p2::create_private(file)?, &name).await;
    if written.is_err() {
        if let Err(error) = std::fs::remove_file(file) {
            eprintln!("{name}: the unfinished export stays: {error}");
        }
    }
    written
}

async fn write_all(
    store: Arc<dyn RegistrationStore>,
    sink: impl Write,
    name: &str,
) -> Result<bool, String> {
    let mut sink = BufWriter::new(sink);
    let cannot_write = |e: std::io::Error| format!("cannot write {name}: {e}");
    let (mut after, mut written, mut skipped) = (None, 0u64, 0u64);
    loop {
        let page = store.list(after, PAGE).await.map_err(|e| e.to_string())?;
        for why in &page.unreadable {
            eprintln!("{why}; skipped");
            skipped += 1;
        }
        for registration in page.registrations {
            let line = serde_json::to_string(&Line::from(registration))
                .map_err(|e| format!("cannot write a registration: {e}"))?;
            writeln!(sink, "{line}").map_err(cannot_write)?;
            written += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    sink.flush().map_err(cannot_write)?;
    eprintln!("exported {written} registrations, skipped {skipped}");
    Ok(skipped == 0)
}

/// Restores every readable line; `Ok(false)` when some were skipped.
pub(super) async fn import(
    store: Arc<dyn RegistrationStore>,
    file: Option<&Path>,
) -> Result<bool, String> {
    let source: Box<dyn BufRead> = match file {
        Some(file) => Box::new(BufReader::new(
            std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin().lock())),
    };
    let name = file.map_or("standard input".into(), |file| file.display().to_string());
    let mut tally = Tally::default();
    // Split as bytes: a line that is not UTF-8 is one line skipped, not the end of the import.
    for (index, line) in source.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("{name}: {e}"))?;
        let parsed = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => serde_json::from_str::<Line>(text)
                .map_err(|e| e.to_string())
                .and_then(Line::registration),
            Err(error) => Err(format!("not UTF-8 text ({error})")),
        };
        tally
            .restore(&*store, parsed, &name, index as u64 + 1)
            .await;
    }
    Ok(tally.report("registrations", &name))
}

/// What an import restored and what it skipped.
#[derive(Debug, Default)]
pub(super) struct Tally {
    imported: u64,
    skipped: u64,
}

impl Tally {
    /// Restores one read registration, or counts it skipped and says why on standard error
    /// (`name:line`: the place in the file).
    pub(super) async fn restore(
        &mut self,
        store: &dyn RegistrationStore,
        read: Result<Registration, String>,
        name: &str,
        line: u64,
    ) {
        let outcome = match read {
            Ok(registration) => store.restore(registration).await.map_err(|e| e.to_string()),
            Err(problem) => Err(problem),
        };
        match outcome {
            Ok(()) => self.imported += 1,
            Err(problem) => {
                self.skipped += 1;
                eprintln!("{name}:{line}: {problem}; skipped");
            }
        }
    }

    /// Prints the counts of `what` from `name`; `true` when nothing was skipped.
    pub(super) fn report(&self, what: &str, name: &str) -> bool {
        let (imported, skipped) = (self.imported, self.skipped);
        println!("imported {imported} {what}, skipped {skipped} ({name})");
        skipped == 0
    }
}
