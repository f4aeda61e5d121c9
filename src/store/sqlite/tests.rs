//! The SQLite store's own tests (the behaviour both backends share is in tests/store_conformance.rs).

use std::time::SystemTime;

use super::*;

fn opened(dir: &tempfile::TempDir) -> SqliteStore {
    let path = dir.path().join("registrations.sqlite3");
    SqliteStore::open(&path, StoreLimits::default()).expect("a fresh store opens")
}

fn registration(device: &str) -> Registration {
    Registration {
        key: RegistrationKey {
            service: "fcm".into(),
            device: device.into(),
            channel: String::new(),
        },
        account: format!("{device}@example.org"),
        domain: "example.org".into(),
        token: "token".into(),
        second_token: None,
        node: String::new(),
        secret: String::new(),
        last_used: SystemTime::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_reads_share_the_fixed_readers_and_all_succeed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(opened(&dir));
    let credentials = store
        .register(registration("d1"))
        .await
        .expect("registered");
    let reads = (0..16 * readers::count()).map(|_| {
        let (store, node) = (store.clone(), credentials.node.clone());
        tokio::spawn(async move { store.find("example.org", &node).await })
    });
    for read in reads.collect::<Vec<_>>() {
        let found = read.await.expect("joined").expect("found");
        assert_eq!(
            found.map(|found| found.secret),
            Some(credentials.secret.clone())
        );
    }
    let idle = store.shared.readers.idle_count();
    assert_eq!(
        idle,
        readers::count(),
        "no connection opened beyond the pool, none lost"
    );
}

#[tokio::test]
async fn readers_map_the_file_and_keep_their_own_page_cache() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    let pragmas = store
        .read(|reader| {
            let mmap: i64 = reader
                .query_row("PRAGMA mmap_size", [], |row| row.get(0))
                .map_err(failed)?;
            let cache: i64 = reader
                .query_row("PRAGMA cache_size", [], |row| row.get(0))
                .map_err(failed)?;
            Ok((mmap, cache))
        })
        .await
        .expect("pragmas read");
    assert!(pragmas.0 > 0, "mmap_size {}", pragmas.0);
    assert!(pragmas.1 < -2000, "cache_size {} KiB", pragmas.1);
}

#[tokio::test]
async fn a_read_sees_a_write_made_after_the_readers_were_opened() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    assert_eq!(
        store.find("example.org", "nothing").await.expect("read"),
        None
    );
    let credentials = store
        .register(registration("d2"))
        .await
        .expect("registered");
    let found = store
        .find("example.org", &credentials.node)
        .await
        .expect("read");
    assert_eq!(found.map(|found| found.key.device), Some("d2".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_ups_sent_off_the_thread_are_answered_in_batches_and_return_their_readers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(opened(&dir));
    let mut nodes = Vec::new();
    for device in ["b1", "b2", "b3"] {
        let credentials = store
            .register(registration(device))
            .await
            .expect("registered");
        nodes.push((device, credentials.node));
    }
    store.shared.lookups.go_off_thread();
    assert!(!store.shared.lookups.in_place());
    let finds = (0..200).map(|i| {
        let (device, node) = nodes[i % nodes.len()].clone();
        let (store, node) = (store.clone(), if i % 7 == 0 { "none".into() } else { node });
        tokio::spawn(async move { (i, device, store.find("example.org", &node).await) })
    });
    for find in finds.collect::<Vec<_>>() {
        let (i, device, found) = find.await.expect("joined");
        let found = found.expect("answered").map(|found| found.key.device);
        let expected = (i % 7 != 0).then(|| device.to_owned());
        assert_eq!(found, expected, "look-up {i}");
    }
    let idle = store.shared.readers.idle_count();
    assert_eq!(idle, readers::count(), "every reader back in the pool");
}

#[tokio::test]
async fn a_look_up_in_place_sees_every_registration_this_process_wrote_before_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    assert!(
        store.shared.lookups.in_place(),
        "a new store looks up in place"
    );
    for device in ["p1", "p2", "p3"] {
        let credentials = store
            .register(registration(device))
            .await
            .expect("registered");
        let found = store
            .find("example.org", &credentials.node)
            .await
            .expect("read");
        assert_eq!(found.map(|found| found.secret), Some(credentials.secret));
    }
    assert_eq!(
        store.shared.readers.idle_count(),
        readers::count(),
        "the pool is not used"
    );
}

#[tokio::test]
async fn a_look_up_in_place_sees_another_process_write_within_a_second() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    assert_eq!(store.find("example.org", "n0").await.expect("read"), None);
    let other = Connection::open(dir.path().join("registrations.sqlite3")).expect("opened");
    other
        .execute(
            "INSERT INTO registrations (service, device, channel, account, domain, token, node, secret, last_used) VALUES ('fcm', 'x', '', 'a', 'example.org', 't', 'n0', 's', 0)",
            [],
        )
        .expect("inserted by another connection");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let found = store.find("example.org", "n0").await.expect("read");
    assert_eq!(found.map(|found| found.secret), Some("s".to_owned()));
}

#[tokio::test]
async fn look_ups_leave_the_thread_only_after_several_slow_disk_reads_within_a_second() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    let lookups = &store.shared.lookups;
    for _ in 1..lookups::STRIKES {
        lookups.strike();
        assert!(
            lookups.in_place(),
            "one slow read now and then keeps look-ups in place"
        );
    }
    lookups.strike();
    assert!(
        !lookups.in_place(),
        "the last strike sends them to blocking threads"
    );
}

#[tokio::test]
// Held on purpose: the write runs on a blocking thread and only tries the lock.
#[allow(clippy::await_holding_lock)]
async fn a_write_made_while_the_in_place_reader_is_busy_still_renews_its_snapshot() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    assert_eq!(store.find("example.org", "none").await.expect("read"), None);
    let credentials = {
        // Busy: the write cannot end the snapshot, only count itself.
        let _busy = store.shared.lookups.reader.lock().expect("free");
        store
            .register(registration("w1"))
            .await
            .expect("registered")
    };
    let found = store
        .find("example.org", &credentials.node)
        .await
        .expect("read");
    assert_eq!(found.map(|found| found.secret), Some(credentials.secret));
}

#[tokio::test]
async fn a_restored_registration_may_not_take_a_node_its_domain_already_uses() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    let mut first = registration("d1");
    first.node = "taken-node".into();
    first.secret = "s1".into();
    store.restore(first).await.expect("restored");
    let mut second = registration("d2");
    second.node = "taken-node".into();
    second.secret = "s2".into();
    let refused = store.restore(second).await.expect_err("the node is taken");
    assert!(
        refused
            .to_string()
            .contains("node taken-node is already used in example.org"),
        "{refused}"
    );
    let found = store.find("example.org", "taken-node").await.expect("read");
    assert_eq!(found.map(|found| found.secret), Some("s1".into()));
}

/// Pushes and writes interleaved, as on any busy server (each write follows a push's look-up):
/// the write-ahead log must still be checkpointed and start over, staying near SQLite's
/// auto-checkpoint size (1000 pages, about 4 MB), instead of growing with every write.
#[tokio::test]
async fn the_write_ahead_log_stays_bounded_while_pushes_and_writes_interleave() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = opened(&dir);
    let wal = dir.path().join("registrations.sqlite3-wal");
    let first = store
        .register(registration("w0"))
        .await
        .expect("registered");
    for i in 1..3_000 {
        // A push's look-up in place: its snapshot stays open until the next write ends it.
        let found = store.find("example.org", &first.node).await.expect("read");
        assert!(found.is_some());
        store
            .register(registration(&format!("w{i}")))
            .await
            .expect("registered");
    }
    let size = std::fs::metadata(&wal).expect("the WAL exists").len();
    assert!(
        size < 8 << 20,
        "the WAL grew to {} MB over 3,000 writes",
        size >> 20
    );
}
