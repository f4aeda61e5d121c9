//! Scenario j's registrations: a SQLite store of p2 registrations, made once and reused by every
//! run, and what registration number `i` holds, shared by that store and the push template.
//!
//! The first [`IMPORTED`] go through `fpush store import-p2` (the way an operator moves p2's
//! `target` table), which also creates the schema; the rest are inserted in one transaction
//! with the same columns, because the command's one write per row would take many minutes for
//! a million.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::xmpp::{write_hex64, TOKEN_PREFIX, USER_DOMAIN};
use crate::BenchError;

/// Registrations loaded through `fpush store import-p2`.
const IMPORTED: u64 = 1_000;

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

/// What registration `i` holds, as text.
struct Row {
    /// 40 hex digits, as p2's SHA-1 of account and device id, unique per `i`.
    device: String,
    token: String,
    node: String,
    secret: String,
}

impl Row {
    fn of(i: u64) -> Row {
        let mut token = [0u8; 64];
        let mut node = [0u8; NODE_LEN];
        let mut secret = [0u8; SECRET_LEN];
        write_token(&mut token, i);
        write_node(&mut node, i);
        write_secret(&mut secret, i);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Row {
            device: format!("{:016x}{:024x}", crate::xmpp::scramble(i), i),
            token: text(&token),
            node: text(&node),
            secret: text(&secret),
        }
    }
}

/// One row of p2's `target` table: service, device, channel, domain, token, node, secret.
fn write_row(out: &mut Vec<u8>, i: u64) {
    let row = Row::of(i);
    let line = format!(
        "APNS,{},,{USER_DOMAIN},{},{},{}\n",
        row.device, row.token, row.node, row.secret
    );
    out.extend_from_slice(line.as_bytes());
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

/// Makes the store at `path` with `count` registrations unless it is there already: imports
/// the first rows of p2's table (as CSV with its header line) with `fpush store import-p2`,
/// then inserts the others.
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
    write_csv(&csv, count.min(IMPORTED))?;
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
    insert_rest(&work.path().join("store.sqlite3"), IMPORTED..count)?;
    // Made under a temporary name, so that an interrupted import is never taken for a store.
    std::fs::rename(work.path().join("store.sqlite3"), path)?;
    Ok(())
}

/// Inserts registrations `range` into the store `fpush store import-p2` made, in one
/// transaction, as that command writes them: service `apns`, the domain and device standing in
/// for the account p2 never kept, used now.
fn insert_rest(store: &Path, range: std::ops::Range<u64>) -> Result<(), BenchError> {
    let sql = |e: rusqlite::Error| BenchError::Setup(format!("{}: {e}", store.display()));
    let mut db = rusqlite::Connection::open(store).map_err(sql)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let tx = db.transaction().map_err(sql)?;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO registrations (service, device, channel, account, domain, token, \
                 second_token, node, secret, last_used) \
                 VALUES ('apns', ?1, '', ?2, ?3, ?4, NULL, ?5, ?6, ?7)",
            )
            .map_err(sql)?;
        for i in range {
            let row = Row::of(i);
            let account = format!("p2:{USER_DOMAIN}:{}", row.device);
            let values = rusqlite::params![
                row.device,
                account,
                USER_DOMAIN,
                row.token,
                row.node,
                row.secret,
                now
            ];
            insert.execute(values).map_err(sql)?;
        }
    }
    tx.commit().map_err(sql)
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
    fn the_rest_is_inserted_with_the_rows_of_the_csv() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE registrations (id INTEGER PRIMARY KEY, service TEXT NOT NULL, \
             device TEXT NOT NULL, channel TEXT NOT NULL, account TEXT NOT NULL, \
             domain TEXT NOT NULL, token TEXT NOT NULL, second_token TEXT, node TEXT NOT NULL, \
             secret TEXT NOT NULL, last_used INTEGER NOT NULL)",
        )
        .expect("schema");
        insert_rest(&path, 5..15).expect("insert");
        let count: i64 = db
            .query_row("SELECT count(*) FROM registrations", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 10);
        let mut csv = Vec::new();
        write_row(&mut csv, 7);
        let (token, secret): (String, String) = db
            .query_row(
                "SELECT token, secret FROM registrations WHERE node = 'n00000000007'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("row 7");
        let csv = String::from_utf8(csv).expect("ASCII");
        assert!(
            csv.ends_with(&format!(",{token},n00000000007,{secret}\n")),
            "{csv}"
        );
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
