//! Sizes and speeds of the registration store at scale, for docs/registration-store.md. Ignored
//! by default (they take a while); run with
//! `cargo test --release -p fpush --test store_scale -- --ignored --nocapture`.

mod store_support;

use std::time::{Instant, SystemTime};

use fpush::store::{RegistrationStore, SqliteStore, StoreLimits};
use store_support::{registration, RedisServer};

/// An FCM token's usual length.
const TOKEN_LENGTH: usize = 163;

fn token(index: usize) -> String {
    format!("{index:0width$}", width = TOKEN_LENGTH)
}

fn node(index: usize) -> String {
    format!("{index:012}")
}

/// `count` registrations written straight into a store file (one transaction), with the sizes
/// real ones have: a 40-character device hash, a 163-character token, 12 + 24 characters of
/// node and secret, 100 domains.
fn fill_sqlite(path: &std::path::Path, count: usize) {
    drop(SqliteStore::open(path, StoreLimits::default()).unwrap());
    let mut connection = rusqlite::Connection::open(path).unwrap();
    let transaction = connection.transaction().unwrap();
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO registrations (service, device, channel, account, domain, token, \
                 node, secret, last_used) VALUES ('fcm', ?1, '', ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        for index in 0..count {
            let domain = format!("domain{}.example", index % 100);
            insert
                .execute(rusqlite::params![
                    format!("{index:040x}"),
                    format!("user{index}@{domain}"),
                    domain,
                    token(index),
                    node(index),
                    format!("{index:024}"),
                    1_700_000_000 + index as i64,
                ])
                .unwrap();
        }
    }
    transaction.commit().unwrap();
    connection
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

#[test]
#[ignore = "a measurement: run on purpose"]
fn sqlite_bytes_per_registration_for_100k() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.sqlite3");
    let count = 100_000;
    fill_sqlite(&path, count);
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "sqlite: {count} registrations, {bytes} bytes on disk, {} bytes per registration",
        bytes / count as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on purpose"]
async fn sqlite_find_with_1m_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.sqlite3");
    let count = 1_000_000;
    fill_sqlite(&path, count);
    let store = SqliteStore::open(&path, StoreLimits::default()).unwrap();
    let lookups = 20_000;
    let started = Instant::now();
    for lookup in 0..lookups {
        let index = (lookup * 7919) % count;
        let domain = format!("domain{}.example", index % 100);
        let found = store.find(&domain, &node(index)).await.unwrap();
        assert!(found.is_some());
    }
    let each = started.elapsed() / lookups as u32;
    println!("sqlite: find among {count} registrations: {each:?} each ({lookups} in a row)");
}

#[tokio::test]
#[ignore = "a measurement: run on purpose"]
async fn redis_bytes_per_registration() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut inspect = client.get_connection().unwrap();
    let used = |connection: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("memory").query(connection).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = used(&mut inspect);
    let store =
        fpush::store::RedisRegistrations::open(&server.settings(), StoreLimits::default()).unwrap();
    let count = 20_000;
    for index in 0..count {
        let domain = format!("domain{}.example", index % 100);
        let mut wanted = registration(
            "fcm",
            &format!("{index:040x}"),
            &format!("user{index}@{domain}"),
        );
        wanted.token = token(index);
        wanted.node = node(index);
        wanted.secret = format!("{index:024}");
        wanted.last_used = SystemTime::now();
        store.restore(wanted).await.unwrap();
    }
    let started = Instant::now();
    for index in 0..count {
        let domain = format!("domain{}.example", index % 100);
        assert!(store.find(&domain, &node(index)).await.unwrap().is_some());
    }
    let each = started.elapsed() / count as u32;
    let bytes = used(&mut inspect) - before;
    println!(
        "redis: {count} registrations, {bytes} bytes of memory, {} bytes per registration; find {each:?} each",
        bytes / count as u64
    );
}
