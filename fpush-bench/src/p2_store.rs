//! Scenario j's registrations: a SQLite store of p2 registrations, made once through
//! `fpush store import-p2` (the way an operator moves p2's `target` table) and reused by every
//! run, and what registration number `i` holds, shared by that table and the push template.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::xmpp::{write_hex64, TOKEN_PREFIX, USER_DOMAIN};
use crate::BenchError;

/// Length of a p2 node and secret (9 and 18 random bytes in base64).
pub const NODE_LEN: usize = 12;
pub const SECRET_LEN: usize = 24;

/// Registration `i`'s node: `n` and eleven decimal digits, unique for every `i` below 10^11.
pub fn write_node(slot: &mut [u8], i: u64) {
    slot[0] = b'n';
    write_decimal(&mut slot[1..NODE_LEN], i);
}

/// Registration `i`'s secret: `s` and 23 decimal digits of a scrambled `i`.
pub fn write_secret(slot: &mut [u8], i: u64) {
    slot[0] = b's';
    write_decimal(&mut slot[1..SECRET_LEN], crate::xmpp::scramble(i) >> 1);
}

/// Registration `i`'s APNS device token: the token a token-in-node push for `i` carries.
pub fn write_token(slot: &mut [u8], i: u64) {
    write_hex64(slot, TOKEN_PREFIX, crate::xmpp::scramble(i));
}

fn write_decimal(slot: &mut [u8], mut value: u64) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// One row of p2's `target` table: service, device, channel, domain, token, node, secret.
fn write_row(out: &mut Vec<u8>, i: u64) {
    let mut token = [0u8; 64];
    let mut node = [0u8; NODE_LEN];
    let mut secret = [0u8; SECRET_LEN];
    write_token(&mut token, i);
    write_node(&mut node, i);
    write_secret(&mut secret, i);
    // The device: 40 hex digits, as p2's SHA-1 of account and device id, unique per `i`.
    let device = format!("{:016x}{:024x}", crate::xmpp::scramble(i), i);
    out.extend_from_slice(b"APNS,");
    out.extend_from_slice(device.as_bytes());
    out.extend_from_slice(b",,");
    out.extend_from_slice(USER_DOMAIN.as_bytes());
    for field in [&token[..], &node[..], &secret[..]] {
        out.push(b',');
        out.extend_from_slice(field);
    }
    out.push(b'\n');
}

/// Where the store of `count` registrations is kept between runs.
pub fn store_path(dir: &Path, count: u64) -> PathBuf {
    dir.join(format!("p2-registrations-{count}.sqlite3"))
}

/// The `store` section of fpush's settings for the store at `path`. The per-domain cap is
/// raised: every registration here comes from one domain.
pub fn store_settings(path: &Path, count: u64) -> serde_json::Value {
    serde_json::json!({
        "backend": "sqlite",
        "path": path,
        "maxPerDomain": count.saturating_mul(2),
    })
}

/// Makes the store at `path` with `count` registrations unless it is there already: writes
/// p2's table as CSV (with its header line) next to it and runs `fpush store import-p2` on it.
pub fn prepare(fpush: &Path, path: &Path, count: u64) -> Result<(), BenchError> {
    if path.exists() {
        return Ok(());
    }
    let dir = path
        .parent()
        .ok_or_else(|| BenchError::Setup(format!("{} has no directory", path.display())))?;
    let work = tempfile::Builder::new()
        .prefix("p2-import-")
        .tempdir_in(dir)?;
    let csv = work.path().join("target.csv");
    write_csv(&csv, count)?;
    let settings = work.path().join("settings.json");
    let store = store_settings(&work.path().join("store.sqlite3"), count);
    std::fs::write(&settings, import_settings(store).to_string())?;
    let output = Command::new(fpush)
        .args(["store", "import-p2"])
        .arg(&settings)
        .arg("--csv")
        .arg(&csv)
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run {}: {e}", fpush.display())))?;
    if !output.status.success() {
        return Err(BenchError::Setup(format!(
            "fpush store import-p2 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    // Made under a temporary name, so that an interrupted import is never taken for a store.
    std::fs::rename(work.path().join("store.sqlite3"), path)?;
    Ok(())
}

fn write_csv(path: &Path, count: u64) -> Result<(), BenchError> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(b"service,device,channel,domain,token,node,secret\n")?;
    let mut row = Vec::with_capacity(256);
    for i in 0..count {
        row.clear();
        write_row(&mut row, i);
        file.write_all(&row)?;
    }
    file.flush()?;
    Ok(())
}

/// Settings the import reads its store from: a demo module, so no credentials are needed.
fn import_settings(store: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "component": {
            "componentHostname": crate::xmpp::COMPONENT_JID,
            "componentKey": crate::xmpp::SECRET,
            "serverHostname": "127.0.0.1",
            "serverPort": 5347,
        },
        "store": store,
        "pushModules": { "demo": { "type": "demo", "is_default_module": true } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_p2s_seven_columns_with_node_and_secret_of_the_right_length() {
        let mut row = Vec::new();
        write_row(&mut row, 123_456);
        let text = String::from_utf8(row).expect("ASCII");
        let columns: Vec<&str> = text.trim_end().split(',').collect();
        assert_eq!(columns.len(), 7, "{text}");
        assert_eq!(
            (columns[0], columns[2], columns[3]),
            ("APNS", "", USER_DOMAIN)
        );
        assert_eq!(columns[1].len(), 40);
        assert_eq!(columns[4].len(), 64);
        assert_eq!(columns[5], "n00000123456");
        assert_eq!(columns[6].len(), SECRET_LEN);
    }

    #[test]
    fn distinct_registrations_get_distinct_nodes_secrets_and_tokens() {
        let rows: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|i| {
                let mut row = Vec::new();
                write_row(&mut row, i);
                row
            })
            .collect();
        assert_eq!(rows.len(), 1000);
        let mut a = [0u8; SECRET_LEN];
        let mut b = [0u8; SECRET_LEN];
        write_secret(&mut a, 1);
        write_secret(&mut b, 2);
        assert_ne!(a, b);
    }
}
