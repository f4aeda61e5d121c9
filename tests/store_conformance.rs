//! One conformance suite for every registration store backend: each check below runs against
//! SQLite (a file in a temporary directory) and Redis (a `redis-server` the test starts on a
//! free loopback port), and a three-master Redis Cluster, where every script must keep to one
//! slot. "Opening again" is a restart for SQLite and a second fpush instance for Redis.

mod store_support;

use std::time::{Duration, SystemTime};

use fpush::store::{Credentials, RegistrationKey, StoreError, StoreLimits};
use store_support::{redis_store, registered, registration, Backend};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn limits() -> StoreLimits {
    StoreLimits::default()
}

fn ago(duration: Duration) -> SystemTime {
    SystemTime::now() - duration
}

/// A stored registration with given credentials and last use.
fn restored(
    device: &str,
    account: &str,
    node: &str,
    last_used: SystemTime,
) -> fpush::store::Registration {
    let mut registration = registration("fcm", device, account);
    registration.node = node.into();
    registration.secret = format!("secret-{node}");
    registration.last_used = last_used;
    registration
}

async fn register_then_find(backend: Backend) {
    let store = backend.open(limits());
    let mut wanted = registration("fcm", "d1", "alice@example.org");
    wanted.second_token = Some("voip".into());
    let Credentials { node, secret } = store.register(wanted.clone()).await.unwrap();
    assert_eq!((node.len(), secret.len()), (12, 24));
    let found = store.find("example.org", &node).await.unwrap().unwrap();
    assert_eq!(found.key, wanted.key);
    assert_eq!(found.token, "token-of-d1");
    assert_eq!(found.second_token.as_deref(), Some("voip"));
    assert_eq!((found.node, found.secret), (node.clone(), secret));
    assert!(found.last_used > ago(Duration::from_secs(60)));
    assert_eq!(store.find("other.example", &node).await.unwrap(), None);
    assert_eq!(store.find("example.org", "nope").await.unwrap(), None);
}

async fn upsert_keeps_node_and_secret_and_updates_the_token(backend: Backend) {
    let store = backend.open(limits());
    let first = registered(&*store, "fcm", "d1", "alice@example.org").await;
    let mut again = registration("fcm", "d1", "alice@example.org");
    again.token = "new-token".into();
    let second = store.register(again).await.unwrap();
    assert_eq!(first, second);
    let found = store
        .find("example.org", &first.node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.token, "new-token");
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 1)]);
}

async fn unregister_removes_that_key_only(backend: Backend) {
    let store = backend.open(limits());
    let gone = registered(&*store, "fcm", "d1", "a@example.org").await;
    let kept = registered(&*store, "fcm", "d2", "a@example.org").await;
    let key = registration("fcm", "d1", "a@example.org").key;
    assert!(store.unregister(&key).await.unwrap());
    assert!(!store.unregister(&key).await.unwrap());
    assert_eq!(store.find("example.org", &gone.node).await.unwrap(), None);
    assert!(store
        .find("example.org", &kept.node)
        .await
        .unwrap()
        .is_some());
    let unknown = RegistrationKey {
        service: "apns".into(),
        device: "d2".into(),
        channel: String::new(),
    };
    assert!(!store.unregister(&unknown).await.unwrap());
}

async fn remove_by_domain_and_node(backend: Backend) {
    let store = backend.open(limits());
    let credentials = registered(&*store, "fcm", "d1", "a@example.org").await;
    let token = "token-of-d1";
    assert!(!store
        .remove("other.example", &credentials.node, token)
        .await
        .unwrap());
    assert!(store
        .remove("example.org", &credentials.node, token)
        .await
        .unwrap());
    assert!(!store
        .remove("example.org", &credentials.node, token)
        .await
        .unwrap());
    assert_eq!(
        store.find("example.org", &credentials.node).await.unwrap(),
        None
    );
    assert_eq!(store.counts().await.unwrap(), vec![]);
    // The key can register again, as new.
    let again = registered(&*store, "fcm", "d1", "a@example.org").await;
    assert_ne!(again, credentials);
}

async fn remove_keeps_a_registration_renewed_with_another_token(backend: Backend) {
    let store = backend.open(limits());
    let credentials = registered(&*store, "fcm", "d1", "a@example.org").await;
    // The client registered a new token after the push went to the old one.
    let mut renewed = registration("fcm", "d1", "a@example.org");
    renewed.token = "new-token".into();
    assert_eq!(store.register(renewed).await.unwrap(), credentials);
    let node = &credentials.node;
    assert!(!store
        .remove("example.org", node, "token-of-d1")
        .await
        .unwrap());
    let found = store.find("example.org", node).await.unwrap().unwrap();
    assert_eq!(found.token, "new-token");
    assert!(store
        .remove("example.org", node, "new-token")
        .await
        .unwrap());
    assert_eq!(store.counts().await.unwrap(), vec![]);
}

async fn clear_second_token_keeps_a_renewed_second_token(backend: Backend) {
    let store = backend.open(limits());
    let mut wanted = registration("apns", "d1", "a@example.org");
    wanted.second_token = Some("old-voip".into());
    let credentials = store.register(wanted.clone()).await.unwrap();
    wanted.second_token = Some("new-voip".into());
    store.register(wanted).await.unwrap();
    let node = &credentials.node;
    store
        .clear_second_token("example.org", node, "old-voip")
        .await
        .unwrap();
    let found = store.find("example.org", node).await.unwrap().unwrap();
    assert_eq!(found.second_token.as_deref(), Some("new-voip"));
}

async fn clear_second_token_keeps_the_rest(backend: Backend) {
    let store = backend.open(limits());
    let mut wanted = registration("apns", "d1", "a@example.org");
    wanted.second_token = Some("voip".into());
    let credentials = store.register(wanted).await.unwrap();
    store
        .clear_second_token("example.org", &credentials.node, "voip")
        .await
        .unwrap();
    let found = store
        .find("example.org", &credentials.node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.second_token, None);
    assert_eq!(found.token, "token-of-d1");
}

async fn one_more_than_max_per_account_replaces_the_least_recently_used(backend: Backend) {
    let capped = StoreLimits {
        max_per_account: 2,
        ..limits()
    };
    let store = backend.open(capped);
    store
        .restore(restored("old", "a@example.org", "node-old", ago(3 * HOUR)))
        .await
        .unwrap();
    store
        .restore(restored("mid", "a@example.org", "node-mid", ago(2 * HOUR)))
        .await
        .unwrap();
    store
        .restore(restored("other", "b@example.org", "node-b", ago(9 * HOUR)))
        .await
        .unwrap();
    let new = registered(&*store, "fcm", "new", "a@example.org").await;
    assert_eq!(store.find("example.org", "node-old").await.unwrap(), None);
    assert!(store
        .find("example.org", "node-mid")
        .await
        .unwrap()
        .is_some());
    assert!(store
        .find("example.org", &new.node)
        .await
        .unwrap()
        .is_some());
    assert!(
        store.find("example.org", "node-b").await.unwrap().is_some(),
        "other accounts keep theirs"
    );
    let old_key = registration("fcm", "old", "a@example.org").key;
    assert!(!store.unregister(&old_key).await.unwrap());
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 3)]);
}

async fn a_new_registration_beyond_max_per_domain_is_refused(backend: Backend) {
    let capped = StoreLimits {
        max_per_domain: 2,
        ..limits()
    };
    let store = backend.open(capped);
    registered(&*store, "fcm", "d1", "a@example.org").await;
    registered(&*store, "fcm", "d2", "b@example.org").await;
    let refused = store
        .register(registration("fcm", "d3", "c@example.org"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Full("store.maxPerDomain"))),
        "{refused:?}"
    );
    // Updating a known key and registering in another domain still work.
    registered(&*store, "fcm", "d1", "a@example.org").await;
    registered(&*store, "fcm", "d3", "c@example.net").await;
}

async fn a_new_registration_beyond_max_total_is_refused(backend: Backend) {
    let capped = StoreLimits {
        max_total: Some(2),
        ..limits()
    };
    let store = backend.open(capped);
    registered(&*store, "fcm", "d1", "a@example.org").await;
    registered(&*store, "apns", "d2", "b@example.net").await;
    let refused = store
        .register(registration("fcm", "d3", "c@example.com"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Full("store.maxTotal"))),
        "{refused:?}"
    );
    registered(&*store, "fcm", "d1", "a@example.org").await;
}

/// A registration of `device` for `account`, sent from `domain` (not the account's own).
fn from_domain(device: &str, account: &str, domain: &str) -> fpush::store::Registration {
    let mut registration = registration("fcm", device, account);
    registration.domain = domain.into();
    registration
}

/// Runs one command as another program writing under fpush's prefix would (a hand edit, a
/// damaged key), whatever it answers.
fn write_as_another_writer(connection: &mut ::redis::Connection, command: &[&str]) {
    let (name, args) = command.split_first().expect("a command");
    let _: ::redis::Value = ::redis::cmd(name).arg(args).query(connection).unwrap();
}

async fn is_stored(store: &dyn fpush::store::RegistrationStore, domain: &str, node: &str) -> bool {
    store.find(domain, node).await.unwrap().is_some()
}

async fn registrations_by_another_sender_never_evict_mine(backend: Backend) {
    let capped = StoreLimits {
        max_per_account: 2,
        ..limits()
    };
    let store = backend.open(capped);
    let mine = registered(&*store, "fcm", "mine", "a@example.org").await;
    for n in 0..5 {
        // My account's name, sent from another domain (a room named like my JID), and
        // another account of my domain.
        let named_like_me = from_domain(&format!("e{n}"), "a@example.org", "evil.example");
        store.register(named_like_me).await.unwrap();
        registered(&*store, "fcm", &format!("b{n}"), "b@example.org").await;
    }
    assert!(is_stored(&*store, "example.org", &mine.node).await);
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 5)]);
}

async fn the_per_account_cap_holds_for_room_registrations(backend: Backend) {
    let capped = StoreLimits {
        max_per_account: 2,
        ..limits()
    };
    let store = backend.open(capped);
    let mut last = None;
    for room in 0..5 {
        let mut in_room = registration("fcm", "d1", "a@example.org");
        in_room.key.channel = format!("channel-{room}");
        last = Some(store.register(in_room).await.unwrap());
    }
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 2)]);
    let last = last.unwrap();
    assert!(is_stored(&*store, "example.org", &last.node).await);
}

async fn the_domain_cap_holds_after_a_replacement(backend: Backend) {
    let capped = StoreLimits {
        max_per_account: 2,
        max_per_domain: 2,
        ..limits()
    };
    let store = backend.open(capped);
    for (node, age) in [("net-old", 3 * HOUR), ("net-mid", 2 * HOUR)] {
        let mut held = restored(node, "a@example.org", node, ago(age));
        held.domain = "example.net".into();
        store.restore(held).await.unwrap();
    }
    registered(&*store, "fcm", "b1", "b@example.org").await;
    registered(&*store, "fcm", "c1", "c@example.org").await;
    // The account is at its cap in example.net only: nothing there makes room in example.org.
    let refused = store
        .register(registration("fcm", "new", "a@example.org"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Full("store.maxPerDomain"))),
        "{refused:?}"
    );
    assert!(is_stored(&*store, "example.net", "net-old").await);
    // At its cap in a full domain, the account replaces its least recently used.
    let third = store
        .register(from_domain("third", "a@example.org", "example.net"))
        .await
        .unwrap();
    assert!(!is_stored(&*store, "example.net", "net-old").await);
    assert!(is_stored(&*store, "example.net", &third.node).await);
    // With the domain cap lowered below the domain's count, a replacement is refused and
    // replaces nothing.
    let lowered = backend.open(StoreLimits {
        max_per_domain: 1,
        ..capped
    });
    let refused = lowered
        .register(from_domain("fourth", "a@example.org", "example.net"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Full("store.maxPerDomain"))),
        "{refused:?}"
    );
    assert!(is_stored(&*lowered, "example.net", "net-mid").await);
    assert!(is_stored(&*lowered, "example.net", &third.node).await);
}

async fn a_replacement_at_max_total_is_accepted(backend: Backend) {
    let capped = StoreLimits {
        max_per_account: 1,
        max_total: Some(2),
        ..limits()
    };
    let store = backend.open(capped);
    let replaced = registered(&*store, "fcm", "d1", "a@example.org").await;
    registered(&*store, "fcm", "d2", "b@example.net").await;
    let new = registered(&*store, "fcm", "d3", "a@example.org").await;
    assert!(!is_stored(&*store, "example.org", &replaced.node).await);
    assert!(is_stored(&*store, "example.org", &new.node).await);
    let refused = store
        .register(registration("fcm", "d4", "c@example.com"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Full("store.maxTotal"))),
        "{refused:?}"
    );
}

async fn sweep_removes_registrations_unused_since_the_cutoff(backend: Backend) {
    let store = backend.open(limits());
    store
        .restore(restored("d1", "a@example.org", "node-1", ago(200 * DAY)))
        .await
        .unwrap();
    store
        .restore(restored("d2", "b@example.net", "node-2", ago(181 * DAY)))
        .await
        .unwrap();
    store
        .restore(restored("d3", "c@example.org", "node-3", ago(179 * DAY)))
        .await
        .unwrap();
    let fresh = registered(&*store, "fcm", "d4", "d@example.org").await;
    // What the sweeper weighs before a sweep: what the sweep then removes.
    assert_eq!(store.count_unused(ago(180 * DAY)).await.unwrap(), 2);
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 2);
    assert_eq!(store.count_unused(ago(180 * DAY)).await.unwrap(), 0);
    assert_eq!(store.find("example.org", "node-1").await.unwrap(), None);
    assert_eq!(store.find("example.net", "node-2").await.unwrap(), None);
    assert!(store.find("example.org", "node-3").await.unwrap().is_some());
    assert!(store
        .find("example.org", &fresh.node)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 2)]);
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 0);
}

async fn touch_writes_an_old_last_use_and_skips_a_recent_one(backend: Backend) {
    let store = backend.open(limits());
    store
        .restore(restored("d1", "a@example.org", "node-old", ago(2 * DAY)))
        .await
        .unwrap();
    let recent = ago(HOUR);
    store
        .restore(restored("d2", "a@example.org", "node-new", recent))
        .await
        .unwrap();
    store.touch("example.org", "node-old").await.unwrap();
    store.touch("example.org", "node-new").await.unwrap();
    store.touch("example.org", "missing").await.unwrap();
    let old = store
        .find("example.org", "node-old")
        .await
        .unwrap()
        .unwrap();
    assert!(old.last_used > ago(Duration::from_secs(60)));
    let new = store
        .find("example.org", "node-new")
        .await
        .unwrap()
        .unwrap();
    let stored = new
        .last_used
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let given = recent
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(stored, given);
    // A touched registration is no longer swept.
    assert_eq!(store.sweep(ago(DAY)).await.unwrap(), 0);
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn registering_again_never_moves_the_last_use_back(backend: Backend) {
    // Pushes recorded these registrations' use before the clock was set back 30 days. The
    // devices register again meanwhile: were their last uses moved back, they would look 30
    // days older than they are once the clock is right again, and be swept that much early.
    let store = backend.open(limits());
    let later = SystemTime::now() + 30 * DAY;
    store
        .restore(restored("d1", "a@example.org", "node-1", later))
        .await
        .unwrap();
    let credentials = registered(&*store, "fcm", "d1", "a@example.org").await;
    assert_eq!(credentials.node, "node-1");
    let found = store.find("example.org", "node-1").await.unwrap().unwrap();
    assert_eq!(seconds(found.last_used), seconds(later));
    // The same when the device's account moved to another domain.
    store
        .restore(restored("d2", "b@example.org", "node-2", later))
        .await
        .unwrap();
    let credentials = registered(&*store, "fcm", "d2", "b@example.net").await;
    assert_eq!(credentials.node, "node-2");
    let found = store.find("example.net", "node-2").await.unwrap().unwrap();
    assert_eq!(seconds(found.last_used), seconds(later));
    // An earlier last use is brought up to now.
    store
        .restore(restored("d3", "c@example.org", "node-3", ago(10 * DAY)))
        .await
        .unwrap();
    registered(&*store, "fcm", "d3", "c@example.org").await;
    let found = store.find("example.org", "node-3").await.unwrap().unwrap();
    assert!(found.last_used > ago(Duration::from_secs(60)));
}

async fn counts_are_per_service(backend: Backend) {
    let store = backend.open(limits());
    registered(&*store, "fcm", "d1", "a@example.org").await;
    registered(&*store, "fcm", "d2", "b@example.org").await;
    registered(&*store, "apns", "d3", "c@example.org").await;
    let mut counts = store.counts().await.unwrap();
    counts.sort();
    assert_eq!(counts, vec![("apns".into(), 1), ("fcm".into(), 2)]);
}

async fn registrations_survive_reopening_and_are_shared(backend: Backend) {
    let first = backend.open(limits());
    let credentials = registered(&*first, "fcm", "d1", "a@example.org").await;
    let second = backend.open(limits());
    let found = second
        .find("example.org", &credentials.node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.secret, credentials.secret);
    let again = registered(&*second, "fcm", "d1", "a@example.org").await;
    assert_eq!(again, credentials);
    drop(first);
    assert!(second
        .remove("example.org", &credentials.node, "token-of-d1")
        .await
        .unwrap());
    let third = backend.open(limits());
    assert_eq!(
        third.find("example.org", &credentials.node).await.unwrap(),
        None
    );
}

async fn the_time_sweeps_were_skipped_survives_reopening_until_cleared(backend: Backend) {
    let first = backend.open(limits());
    assert_eq!(first.sweeps_skipped_for().await.unwrap(), Duration::ZERO);
    first.record_sweeps_skipped(Some(5 * HOUR)).await.unwrap();
    first.record_sweeps_skipped(Some(6 * HOUR)).await.unwrap();
    drop(first);
    let second = backend.open(limits());
    assert_eq!(second.sweeps_skipped_for().await.unwrap(), 6 * HOUR);
    second.record_sweeps_skipped(None).await.unwrap();
    second.record_sweeps_skipped(None).await.unwrap();
    assert_eq!(second.sweeps_skipped_for().await.unwrap(), Duration::ZERO);
    assert_eq!(
        backend.open(limits()).sweeps_skipped_for().await.unwrap(),
        Duration::ZERO
    );
}

async fn a_new_store_notes_when_it_was_made_and_keeps_it(backend: Backend) {
    let first = backend.open(limits());
    let made = first
        .created()
        .await
        .unwrap()
        .expect("a new store knows its age");
    assert!(made > ago(Duration::from_secs(60)) && made <= SystemTime::now());
    registered(&*first, "fcm", "d1", "a@example.org").await;
    drop(first);
    let second = backend.open(limits());
    let again = second
        .created()
        .await
        .unwrap()
        .expect("the age survives reopening");
    assert_eq!(seconds(again), seconds(made));
}

async fn a_store_that_held_registrations_before_it_kept_its_age_has_none(backend: Backend) {
    let first = backend.open(limits());
    registered(&*first, "fcm", "d1", "a@example.org").await;
    drop(first);
    // As an fpush that kept no such time left it.
    backend.forget_when_made();
    assert_eq!(backend.open(limits()).created().await.unwrap(), None);
    assert_eq!(backend.open(limits()).created().await.unwrap(), None);
}

async fn an_export_misses_none_that_pushes_move_or_others_leave(backend: Backend) {
    // Pushes touch registrations (in Redis that reorders the domain's last-use list) and
    // dead tokens remove some while an export pages through them; every one that stays must
    // come out. 300: more than Redis keeps in a compact set, so its scan goes page by page.
    let store = backend.open(limits());
    for i in 0..300u64 {
        let when = ago(DAY + Duration::from_secs(i));
        let account = format!("u{i}@example.org");
        let registration = restored(&format!("d{i}"), &account, &format!("n{i}"), when);
        store.restore(registration).await.unwrap();
    }
    let (mut seen, mut removed, mut after) = (Vec::new(), Vec::new(), None);
    for _ in 0..100 {
        let page = store.list(after, 50).await.unwrap();
        for registration in &page.registrations {
            let (node, device) = (&registration.node, &registration.key.device);
            if seen.len() % 7 == 0 {
                let token = format!("token-of-{device}");
                assert!(store.remove("example.org", node, &token).await.unwrap());
                removed.push(device.clone());
            } else {
                store.touch("example.org", node).await.unwrap();
            }
            seen.push(device.clone());
        }
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(after, None, "still listing after 100 pages");
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        300,
        "missed: {} (removed {removed:?})",
        300 - seen.len()
    );
}

async fn list_pages_through_every_registration(backend: Backend) {
    let store = backend.open(limits());
    let mut nodes = Vec::new();
    for (device, account) in [
        ("d1", "a@example.org"),
        ("d2", "b@example.net"),
        ("d3", "c@example.org"),
    ] {
        nodes.push(registered(&*store, "fcm", device, account).await.node);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        // About the limit: a Redis scan gives a small domain whole.
        let page = store.list(after, 2).await.unwrap();
        assert!(page.registrations.len() <= 3);
        seen.extend(page.registrations.into_iter().map(|r| r.node));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    nodes.sort();
    assert_eq!(seen, nodes);
}

async fn list_pages_through_line_breaks_in_nodes_and_domains(backend: Backend) {
    // An imported line may carry them (a push could never name such a node).
    let store = backend.open(limits());
    let mut odd = restored("d1", "a@example.org", "a\nb", ago(DAY));
    odd.domain = "exa\nmple.org".into();
    for registration in [
        odd,
        restored("d2", "b@example.org", "a\nb", ago(DAY)),
        restored("d3", "c@example.org", "c", ago(DAY)),
    ] {
        store.restore(registration).await.unwrap();
    }
    let (mut seen, mut after) = (Vec::new(), None);
    for _ in 0..10 {
        let page = store.list(after, 1).await.unwrap();
        seen.extend(page.registrations.into_iter().map(|r| r.key.device));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(after, None, "still listing after 10 pages: {seen:?}");
    seen.sort();
    assert_eq!(seen, ["d1", "d2", "d3"]);
}

async fn restore_keeps_the_given_node_secret_and_last_use(backend: Backend) {
    let store = backend.open(limits());
    let when = ago(10 * DAY);
    let given = restored("d1", "a@example.org", "given-node", when);
    store.restore(given.clone()).await.unwrap();
    store.restore(given.clone()).await.unwrap();
    let found = store
        .find("example.org", "given-node")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.secret, "secret-given-node");
    assert_eq!(found.key, given.key);
    let stored = found
        .last_used
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        stored,
        when.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 1)]);
    // Registering the key afterwards answers the restored credentials.
    let credentials = registered(&*store, "fcm", "d1", "a@example.org").await;
    assert_eq!(credentials.node, "given-node");
}

/// An import must not make room in an account as a register does: the registration it would
/// evict may be one the same import just wrote, counted as imported.
async fn a_restore_over_max_per_account_is_refused_and_replaces_nothing(backend: Backend) {
    let store = backend.open(StoreLimits {
        max_per_account: 1,
        ..limits()
    });
    let first = restored("d1", "a@example.org", "node-1", ago(DAY));
    store.restore(first).await.unwrap();
    let second = restored("d2", "a@example.org", "node-2", ago(DAY));
    let refused = store.restore(second).await;
    assert!(
        matches!(refused, Err(StoreError::Full("store.maxPerAccount"))),
        "{refused:?}"
    );
    assert!(store.find("example.org", "node-1").await.unwrap().is_some());
    assert!(store.find("example.org", "node-2").await.unwrap().is_none());
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 1)]);
}

async fn a_restore_onto_another_registrations_node_changes_nothing(backend: Backend) {
    let store = backend.open(limits());
    store
        .restore(restored("d1", "a@example.org", "node-1", ago(DAY)))
        .await
        .unwrap();
    store
        .restore(restored("d2", "b@example.org", "node-2", ago(DAY)))
        .await
        .unwrap();
    // A line for d2 naming d1's node is refused; both registrations stay as they were.
    let clash = restored("d2", "b@example.org", "node-1", ago(HOUR));
    assert!(store.restore(clash).await.is_err());
    let held = |node: &'static str| {
        let store = store.clone();
        async move {
            store
                .find("example.org", node)
                .await
                .unwrap()
                .map(|r| r.key.device)
        }
    };
    assert_eq!(held("node-1").await.as_deref(), Some("d1"));
    assert_eq!(held("node-2").await.as_deref(), Some("d2"));
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 2)]);
}

macro_rules! conformance {
    ($backend:ident: $($check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::Backend::$backend()).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        conformance!(sqlite: $($check),*);
        conformance!(redis: $($check),*);
        conformance!(redis_cluster: $($check),*);
    };
}

suite!(
    register_then_find,
    upsert_keeps_node_and_secret_and_updates_the_token,
    unregister_removes_that_key_only,
    remove_by_domain_and_node,
    remove_keeps_a_registration_renewed_with_another_token,
    clear_second_token_keeps_a_renewed_second_token,
    clear_second_token_keeps_the_rest,
    one_more_than_max_per_account_replaces_the_least_recently_used,
    a_new_registration_beyond_max_per_domain_is_refused,
    a_new_registration_beyond_max_total_is_refused,
    registrations_by_another_sender_never_evict_mine,
    the_per_account_cap_holds_for_room_registrations,
    the_domain_cap_holds_after_a_replacement,
    a_replacement_at_max_total_is_accepted,
    sweep_removes_registrations_unused_since_the_cutoff,
    touch_writes_an_old_last_use_and_skips_a_recent_one,
    registering_again_never_moves_the_last_use_back,
    counts_are_per_service,
    registrations_survive_reopening_and_are_shared,
    the_time_sweeps_were_skipped_survives_reopening_until_cleared,
    a_new_store_notes_when_it_was_made_and_keeps_it,
    a_store_that_held_registrations_before_it_kept_its_age_has_none,
    list_pages_through_every_registration,
    an_export_misses_none_that_pushes_move_or_others_leave,
    list_pages_through_line_breaks_in_nodes_and_domains,
    restore_keeps_the_given_node_secret_and_last_use,
    a_restore_onto_another_registrations_node_changes_nothing,
    racing_first_registrations_of_one_key_make_one_registration,
    a_restore_over_max_per_account_is_refused_and_replaces_nothing,
);

#[tokio::test]
async fn the_sweeper_removes_expired_registrations_until_stopped() {
    let backend = Backend::sqlite();
    let store = backend.open(limits());
    store
        .restore(restored("d1", "a@example.org", "node-1", ago(200 * DAY)))
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let sweeper = fpush::store::spawn_sweeper(
        store.clone(),
        Duration::from_millis(20),
        180 * DAY,
        stop.clone(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.find("example.org", "node-1").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "not swept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), sweeper)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_sweeper_keeps_a_registration_pushed_to_too_recently_to_record() {
    // A push records its use at most once a day: a registration recorded as used a day and
    // five minutes ago may have been pushed to six minutes ago (it was 23h59m old then, too
    // recent to record). With `expireAfter` 1d it is in use, not expired.
    let minute = Duration::from_secs(60);
    let recorded = ago(DAY + 5 * minute);
    assert!(!fpush::store::touch_due(recorded, ago(6 * minute)));
    let backend = Backend::sqlite();
    let store = backend.open(limits());
    let in_use = restored("d1", "a@example.org", "node-1", recorded);
    store.restore(in_use).await.unwrap();
    let unused = restored("d2", "b@example.org", "node-2", ago(2 * DAY + HOUR));
    store.restore(unused).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let every = Duration::from_millis(20);
    let sweeper = fpush::store::spawn_sweeper(store.clone(), every, DAY, stop.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.find("example.org", "node-2").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "not swept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kept = store.find("example.org", "node-1").await.unwrap();
    assert!(kept.is_some(), "a registration in use was swept");
    stop.cancel();
    sweeper.await.unwrap();
}

#[tokio::test]
async fn a_redis_registration_missing_fields_is_still_swept_and_replaced() {
    use fpush::store::RegistrationStore;
    let small = StoreLimits {
        max_per_account: 1,
        ..limits()
    };
    let (server, store) = redis_store(small);
    for (device, account, node) in [
        ("d1", "a@example.org", "node-1"),
        ("d2", "b@example.org", "node-2"),
        ("d3", "c@example.org", "node-3"),
        ("d5", "e@example.org", "node-5"),
    ] {
        let old = restored(device, account, node, ago(200 * DAY));
        store.restore(old).await.unwrap();
    }
    // Another writer on the shared Redis (or a damaged hash) left a field out of each.
    let mut connection = server.connection();
    let damaged = [
        ("node-1", "a"),
        ("node-2", "d"),
        ("node-3", "c"),
        ("node-5", "s"),
    ];
    for (node, field) in damaged {
        write_as_another_writer(
            &mut connection,
            &[
                "HDEL",
                &format!("fpush-test:{{example.org}}:r:{node}"),
                field,
            ],
        );
    }
    // c@'s next device replaces its damaged one; the sweep removes the other two.
    let fresh = store_support::registration("fcm", "d4", "c@example.org");
    store.register(fresh).await.unwrap();
    assert!(!is_stored(&store, "example.org", "node-3").await);
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 3);
    let left: i64 = ::redis::cmd("EXISTS")
        .arg("fpush-test:{example.org}:r:node-5")
        .query(&mut connection)
        .unwrap();
    assert_eq!(left, 0);
}

/// Removes `field` from the Redis registration hash at `node` in example.org, as another
/// writer (or a damaged hash) would.
fn damage(server: &store_support::RedisServer, node: &str, field: &str) {
    let mut connection = server.connection();
    write_as_another_writer(
        &mut connection,
        &[
            "HDEL",
            &format!("fpush-test:{{example.org}}:r:{node}"),
            field,
        ],
    );
}

#[tokio::test]
async fn a_damaged_redis_registration_is_unregistered_and_moved_by_its_key_all_the_same() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let gone = registered(&store, "fcm", "gone", "a@example.org").await;
    let moving = registered(&store, "fcm", "moving", "b@example.org").await;
    for node in [&gone.node, &moving.node] {
        damage(&server, node, "a");
    }
    let mut connection = server.connection();
    let mut exists = |node: &str| -> bool {
        ::redis::cmd("EXISTS")
            .arg(format!("fpush-test:{{example.org}}:r:{node}"))
            .query(&mut connection)
            .unwrap()
    };
    // Unregistered by its key although it cannot be read back.
    let key = registration("fcm", "gone", "a@example.org").key;
    assert!(store.unregister(&key).await.unwrap());
    assert!(!exists(&gone.node));
    // Registered from another domain: the damaged one makes way, the device gets new credentials.
    let moved = registration("fcm", "moving", "b@other.example");
    let credentials = store.register(moved).await.unwrap();
    assert!(!exists(&moving.node));
    assert!(is_stored(&store, "other.example", &credentials.node).await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
}

#[tokio::test]
async fn a_redis_registration_that_lost_its_secret_is_replaced_by_registering_again() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let damaged = registered(&store, "fcm", "d1", "a@example.org").await;
    damage(&server, &damaged.node, "x");
    let again = registered(&store, "fcm", "d1", "a@example.org").await;
    assert_ne!(again.node, damaged.node, "new credentials");
    assert!(!is_stored(&store, "example.org", &damaged.node).await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
    assert_eq!(
        store.count_unused(SystemTime::now() + DAY).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn a_sqlite_move_the_new_domain_refuses_keeps_the_registration_where_it_was() {
    let one_per_domain = StoreLimits {
        max_per_domain: 1,
        ..limits()
    };
    let backend = Backend::sqlite();
    let store = backend.open(one_per_domain);
    let kept = registered(&*store, "fcm", "k", "u@a.example").await;
    registered(&*store, "fcm", "other", "v@b.example").await;
    let moving = registration("fcm", "k", "u@b.example");
    let refused = store.register(moving).await;
    assert!(
        matches!(refused, Err(StoreError::Full("store.maxPerDomain"))),
        "{refused:?}"
    );
    assert!(is_stored(&*store, "a.example", &kept.node).await);
    // Moved once there is room: same node and secret.
    let other = registration("fcm", "other", "v@b.example").key;
    assert!(store.unregister(&other).await.unwrap());
    let moved = store
        .register(registration("fcm", "k", "u@b.example"))
        .await;
    assert_eq!(moved.unwrap(), kept);
    assert!(is_stored(&*store, "b.example", &kept.node).await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
}

#[tokio::test]
async fn a_redis_move_the_new_domain_refuses_keeps_the_registration_where_it_was() {
    use fpush::store::RegistrationStore;
    let one_per_domain = StoreLimits {
        max_per_domain: 1,
        ..limits()
    };
    let (_server, store) = redis_store(one_per_domain);
    let kept = registered(&store, "fcm", "k", "u@a.example").await;
    registered(&store, "fcm", "other", "v@b.example").await;
    let moving = registration("fcm", "k", "u@b.example");
    assert!(matches!(
        store.register(moving).await,
        Err(StoreError::Full(_))
    ));
    assert!(is_stored(&store, "a.example", &kept.node).await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 2)]);
    // Moved for real once there is room: same node and secret, counted once.
    let other = registration("fcm", "other", "v@b.example").key;
    assert!(store.unregister(&other).await.unwrap());
    let moved = store
        .register(registration("fcm", "k", "u@b.example"))
        .await;
    assert_eq!(moved.unwrap(), kept);
    assert!(!is_stored(&store, "a.example", &kept.node).await);
    assert!(is_stored(&store, "b.example", &kept.node).await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
}

#[tokio::test]
async fn a_redis_import_line_the_new_domain_refuses_keeps_the_registration_where_it_was() {
    use fpush::store::RegistrationStore;
    let one_per_domain = StoreLimits {
        max_per_domain: 1,
        ..limits()
    };
    let (_server, store) = redis_store(one_per_domain);
    store
        .restore(restored("k", "u@a.example", "node-k", ago(DAY)))
        .await
        .unwrap();
    registered(&store, "fcm", "other", "v@b.example").await;
    let moving = restored("k", "u@b.example", "node-k", ago(DAY));
    assert!(matches!(
        store.restore(moving.clone()).await,
        Err(StoreError::Full(_))
    ));
    assert!(is_stored(&store, "a.example", "node-k").await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 2)]);
    // Moved once there is room, counted once.
    let other = registration("fcm", "other", "v@b.example").key;
    assert!(store.unregister(&other).await.unwrap());
    store.restore(moving).await.unwrap();
    assert!(!is_stored(&store, "a.example", "node-k").await);
    assert!(is_stored(&store, "b.example", "node-k").await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
}

#[tokio::test]
async fn a_redis_move_at_max_total_is_no_new_registration() {
    use fpush::store::RegistrationStore;
    let two_in_all = StoreLimits {
        max_total: Some(2),
        ..limits()
    };
    let (_server, store) = redis_store(two_in_all);
    registered(&store, "fcm", "k", "u@a.example").await;
    registered(&store, "fcm", "other", "v@c.example").await;
    // Registering from another domain, and importing a line that moves it back: the total
    // stays at two, so the cap refuses neither.
    let moved = store
        .register(registration("fcm", "k", "u@b.example"))
        .await;
    let node = moved.unwrap().node;
    assert!(is_stored(&store, "b.example", &node).await);
    store
        .restore(restored("k", "u@a.example", &node, ago(DAY)))
        .await
        .unwrap();
    assert!(is_stored(&store, "a.example", &node).await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 2)]);
}

#[tokio::test]
async fn a_foreign_value_in_the_redis_store_s_time_reads_as_an_old_store() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    write_as_another_writer(
        &mut server.connection(),
        &["SET", "fpush-test:created", "yesterday"],
    );
    // Not known: the guard stays off, as for a store that held registrations before.
    assert_eq!(store.created().await.unwrap(), None);
}

#[tokio::test]
async fn a_foreign_value_among_the_redis_counts_blocks_no_registration_and_no_sweep() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let mut connection = server.connection();
    write_as_another_writer(
        &mut connection,
        &["HSET", "fpush-test:counts", "apns", "not a number"],
    );
    // `store.maxTotal` (on by default) reads the counts before every new registration.
    registered(&store, "fcm", "d1", "a@example.org").await;
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
    let old = restored("d2", "b@example.org", "node-2", ago(200 * DAY));
    store.restore(old).await.unwrap();
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_foreign_value_in_a_services_own_redis_count_blocks_neither_its_registrations_nor_sweeps()
{
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let old = restored("d1", "a@example.org", "node-1", ago(200 * DAY));
    store.restore(old).await.unwrap();
    write_as_another_writer(
        &mut server.connection(),
        &["HSET", "fpush-test:counts", "fcm", "not a number"],
    );
    let swept = store.sweep(ago(180 * DAY)).await;
    assert_eq!(
        swept.ok(),
        Some(1),
        "the sweep removes the unused registration"
    );
    let index: i64 = ::redis::cmd("EXISTS")
        .arg("fpush-test:key:fcm\nd1\n")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(index, 0, "and its index entry");
    write_as_another_writer(
        &mut server.connection(),
        &["HSET", "fpush-test:counts", "fcm", "not a number"],
    );
    let wanted = store_support::registration("fcm", "d2", "b@example.org");
    let first = store.register(wanted.clone()).await;
    assert!(
        first.is_ok(),
        "a new registration of the service: {first:?}"
    );
    assert_eq!(store.register(wanted).await.ok(), first.ok());
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
}

#[tokio::test]
async fn a_foreign_value_in_a_redis_key_index_entry_does_not_keep_its_device_from_registering() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    write_as_another_writer(
        &mut server.connection(),
        &["SET", "fpush-test:key:fcm\nd1\n", "not a location"],
    );
    let wanted = store_support::registration("fcm", "d1", "a@example.org");
    let first = store.register(wanted.clone()).await;
    let Ok(first) = first else {
        panic!("the device registers: {first:?}");
    };
    assert_eq!(store.register(wanted).await.ok(), Some(first.clone()));
    assert!(is_stored(&store, "example.org", &first.node).await);
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
}

#[tokio::test]
async fn a_redis_key_index_entry_of_another_type_does_not_keep_its_device_from_registering() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    write_as_another_writer(
        &mut server.connection(),
        &["HSET", "fpush-test:key:fcm\nd1\n", "f", "v"],
    );
    let wanted = store_support::registration("fcm", "d1", "a@example.org");
    let first = store.register(wanted.clone()).await;
    let Ok(first) = first else {
        panic!("the device registers: {first:?}");
    };
    assert_eq!(store.register(wanted.clone()).await.ok(), Some(first));
    assert_eq!(store.unregister(&wanted.key).await.ok(), Some(true));
}

#[tokio::test]
async fn a_redis_key_index_entry_of_another_type_does_not_stop_a_sweep() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    for (device, account, node) in [
        ("d1", "a@example.org", "node-1"),
        ("d2", "b@example.org", "node-2"),
    ] {
        let old = restored(device, account, node, ago(200 * DAY));
        store.restore(old).await.unwrap();
    }
    let mut connection = server.connection();
    for device in ["d1", "d2"] {
        let index = format!("fpush-test:key:fcm\n{device}\n");
        write_as_another_writer(&mut connection, &["DEL", &index]);
        write_as_another_writer(&mut connection, &["HSET", &index, "f", "v"]);
    }
    let swept = store.sweep(ago(180 * DAY)).await;
    assert_eq!(swept.ok(), Some(2), "both are swept");
    assert_eq!(store.counts().await.unwrap(), [], "and uncounted");
}

#[tokio::test]
async fn a_redis_registration_whose_channel_holds_a_line_break_leaves_no_index_entry_when_removed()
{
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    // A tigase registration's channel is the device token the client sent, any text.
    let mut old = restored("d1", "a@example.org", "node-1", ago(200 * DAY));
    old.key.channel = "tok\nen".into();
    store.restore(old).await.unwrap();
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 1);
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("fpush-test:key:*")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(keys, Vec::<String>::new(), "the index entry went with it");
    assert_eq!(store.counts().await.unwrap(), []);
}

#[tokio::test]
async fn a_redis_registration_that_lost_its_service_still_counts_until_removed() {
    use fpush::store::RegistrationStore;
    let one_each = StoreLimits {
        max_per_account: 1,
        ..limits()
    };
    let (server, store) = redis_store(one_each);
    let dead = registered(&store, "fcm", "dead", "a@example.org").await;
    let old = restored("old", "b@example.org", "node-old", ago(200 * DAY));
    store.restore(old).await.unwrap();
    let replaced = registered(&store, "apns", "replaced", "c@example.org").await;
    let again = registered(&store, "apns", "again", "d@example.org").await;
    registered(&store, "fcm", "kept", "e@example.org").await;
    for node in [&*dead.node, "node-old", &replaced.node, &again.node] {
        damage(&server, node, "s");
    }
    let counted = |counts: Vec<(String, u64)>| -> u64 { counts.iter().map(|c| c.1).sum() };
    assert_eq!(counted(store.counts().await.unwrap()), 5);
    // Removed as a dead token, swept, replaced by its account's next device: one fewer each.
    assert!(store
        .remove("example.org", &dead.node, "token-of-dead")
        .await
        .unwrap());
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 1);
    registered(&store, "apns", "next", "c@example.org").await;
    // Registered again: the same registration, repaired, not a second one.
    assert_eq!(
        registered(&store, "apns", "again", "d@example.org").await,
        again
    );
    let found = store.find("example.org", &again.node).await.unwrap();
    assert_eq!(found.map(|r| r.key.service).as_deref(), Some("apns"));
    assert_eq!(
        store.counts().await.unwrap(),
        [("apns".to_owned(), 2), ("fcm".to_owned(), 1)]
    );
    // Nothing is left of the removed ones, index entries included.
    let mut connection = server.connection();
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("fpush-test:key:*")
        .query(&mut connection)
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "fpush-test:key:apns\nagain\n",
            "fpush-test:key:apns\nnext\n",
            "fpush-test:key:fcm\nkept\n"
        ]
    );
}

#[tokio::test]
async fn a_redis_count_never_goes_below_zero() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let first = registered(&store, "fcm", "d1", "a@example.org").await;
    // The counts were lost (a failover that dropped the key, a flush by hand).
    let mut connection = server.connection();
    write_as_another_writer(&mut connection, &["DEL", "fpush-test:counts"]);
    assert!(store
        .remove("example.org", &first.node, "token-of-d1")
        .await
        .unwrap());
    // The next registration counts, instead of bringing a count of -1 back to 0.
    registered(&store, "fcm", "d2", "b@example.org").await;
    assert_eq!(store.counts().await.unwrap(), [("fcm".to_owned(), 1)]);
}

#[tokio::test]
async fn a_redis_registration_missing_its_account_is_registered_again() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let first = registered(&store, "fcm", "d1", "a@example.org").await;
    let mut connection = server.connection();
    write_as_another_writer(
        &mut connection,
        &[
            "HDEL",
            &format!("fpush-test:{{example.org}}:r:{}", first.node),
            "a",
        ],
    );
    // The client registering its device again repairs it, node and secret kept.
    let again = registered(&store, "fcm", "d1", "a@example.org").await;
    assert_eq!(again, first);
    let found = store
        .find("example.org", &first.node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.account, "a@example.org");
}

#[tokio::test]
async fn a_redis_registration_gone_while_listing_hides_none_of_the_rest() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let mut nodes = Vec::new();
    for (device, account) in [("d1", "a@example.org"), ("d2", "b@example.org")] {
        nodes.push(registered(&store, "fcm", device, account).await.node);
    }
    nodes.push(registered(&store, "fcm", "d3", "c@example.net").await.node);
    // A registration removed between reading a page's nodes and reading their hashes (here:
    // a node listed by last use whose hash is gone) leaves a page short.
    let mut connection = server.connection();
    write_as_another_writer(
        &mut connection,
        &["ZADD", "fpush-test:{example.org}:l", "0", "gone"],
    );
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let page = store.list(after, 2).await.unwrap();
        seen.extend(page.registrations.into_iter().map(|r| r.node));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    nodes.sort();
    assert_eq!(seen, nodes);
}

#[tokio::test]
async fn a_redis_sweep_goes_past_a_batch_of_nodes_whose_registrations_are_gone() {
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let old = restored("d1", "a@example.org", "node-1", ago(200 * DAY));
    store.restore(old).await.unwrap();
    // A whole sweep batch of nodes listed by last use, older still, whose hashes are gone (lost
    // keys, or removed by hand).
    let mut connection = server.connection();
    let mut add = ::redis::cmd("ZADD");
    add.arg("fpush-test:{example.org}:l");
    for ghost in 0..1_000 {
        add.arg(ghost).arg(format!("ghost-{ghost}"));
    }
    let _: i64 = add.query(&mut connection).unwrap();
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 1);
    assert!(!is_stored(&store, "example.org", "node-1").await);
}

#[tokio::test]
async fn a_redis_domain_left_without_registrations_is_forgotten() {
    // Every sweep and count walks the domain list: were a domain that registered once kept in
    // it for good, anyone able to register from many domains (and unregister again) would grow
    // it, and each sweep's work, without bound.
    use fpush::store::RegistrationStore;
    let (server, store) = redis_store(limits());
    let mut connection = server.connection();
    let mut domains = move || -> Vec<String> {
        let mut listed: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg("fpush-test:domains")
            .query(&mut connection)
            .unwrap();
        listed.sort();
        listed
    };
    let kept = registered(&store, "fcm", "kept", "b@example.org").await;
    for n in 0..20 {
        let (device, account) = (format!("d{n}"), format!("u@example{n}.net"));
        registered(&store, "fcm", &device, &account).await;
        let key = registration("fcm", &device, &account).key;
        assert!(store.unregister(&key).await.unwrap());
    }
    let dead = restored("dead", "a@example.com", "node-1", ago(HOUR));
    store.restore(dead).await.unwrap();
    assert!(store
        .remove("example.com", "node-1", "token-of-dead")
        .await
        .unwrap());
    assert_eq!(domains(), ["example.org"]);
    let old = restored("old", "a@example.com", "node-2", ago(200 * DAY));
    store.restore(old).await.unwrap();
    assert_eq!(domains(), ["example.com", "example.org"]);
    assert_eq!(store.sweep(ago(180 * DAY)).await.unwrap(), 1);
    assert_eq!(domains(), ["example.org"]);
    // A domain forgotten registers again as before, and is swept again.
    registered(&store, "fcm", "new", "c@example.com").await;
    assert!(is_stored(&store, "example.org", &kept.node).await);
    assert_eq!(
        store.count_unused(SystemTime::now() + DAY).await.unwrap(),
        2
    );
}

/// A store whose sweeps (and the sweeper's questions before one) are reported as they happen.
struct Watched {
    inner: std::sync::Arc<dyn fpush::store::RegistrationStore>,
    calls: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

impl Watched {
    /// `inner` watched, and the names of the calls as they happen.
    fn new(
        inner: std::sync::Arc<dyn fpush::store::RegistrationStore>,
    ) -> (
        std::sync::Arc<Self>,
        tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    ) {
        let (calls, called) = tokio::sync::mpsc::unbounded_channel();
        (std::sync::Arc::new(Watched { inner, calls }), called)
    }
}

/// A store of 150 registrations of which the first `unused` were last used 200 days ago, the
/// rest an hour ago.
async fn with_unused(
    backend: &Backend,
    unused: usize,
) -> std::sync::Arc<dyn fpush::store::RegistrationStore> {
    let store = backend.open(limits());
    for n in 0..150 {
        let last_used = if n < unused {
            ago(200 * DAY)
        } else {
            ago(HOUR)
        };
        let device = format!("d{n}");
        let account = format!("u{n}@example.org");
        let registration = restored(&device, &account, &format!("node-{n}"), last_used);
        store.restore(registration).await.unwrap();
    }
    store
}

#[async_trait::async_trait]
impl fpush::store::RegistrationStore for Watched {
    async fn register(
        &self,
        registration: fpush::store::Registration,
    ) -> Result<Credentials, StoreError> {
        self.inner.register(registration).await
    }
    async fn find(
        &self,
        domain: &str,
        node: &str,
    ) -> Result<Option<fpush::store::Registration>, StoreError> {
        self.inner.find(domain, node).await
    }
    async fn touch(&self, domain: &str, node: &str) -> Result<(), StoreError> {
        self.inner.touch(domain, node).await
    }
    async fn unregister(&self, key: &RegistrationKey) -> Result<bool, StoreError> {
        self.inner.unregister(key).await
    }
    async fn remove(&self, domain: &str, node: &str, token: &str) -> Result<bool, StoreError> {
        self.inner.remove(domain, node, token).await
    }
    async fn clear_second_token(
        &self,
        domain: &str,
        node: &str,
        v: &str,
    ) -> Result<(), StoreError> {
        self.inner.clear_second_token(domain, node, v).await
    }
    async fn sweep(&self, before: SystemTime) -> Result<u64, StoreError> {
        let swept = self.inner.sweep(before).await;
        let _ = self.calls.send("sweep");
        swept
    }
    async fn count_unused(&self, before: SystemTime) -> Result<u64, StoreError> {
        let _ = self.calls.send("count_unused");
        self.inner.count_unused(before).await
    }
    async fn sweeps_skipped_for(&self) -> Result<Duration, StoreError> {
        self.inner.sweeps_skipped_for().await
    }
    async fn record_sweeps_skipped(&self, skipped: Option<Duration>) -> Result<(), StoreError> {
        self.inner.record_sweeps_skipped(skipped).await
    }
    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.counts().await
    }
}

#[tokio::test]
async fn the_sweeper_keeps_a_store_that_a_clock_step_made_look_unused() {
    // The clock stepped 200 days ahead (a bad NTP server, a VM restored from a snapshot):
    // every registration looks unused for longer than `expireAfter`.
    let backend = Backend::sqlite();
    let store = backend.open(limits());
    for n in 0..150 {
        let device = format!("d{n}");
        let account = format!("u{n}@example.org");
        let node = format!("node-{n}");
        let stepped = restored(&device, &account, &node, ago(200 * DAY));
        store.restore(stepped).await.unwrap();
    }
    let (watched, mut called) = Watched::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let every = Duration::from_millis(20);
    let sweeper = fpush::store::spawn_sweeper(watched, every, 180 * DAY, stop.clone());
    // Two turns begun: the first is over.
    for _ in 0..2 {
        let call = tokio::time::timeout(Duration::from_secs(10), called.recv()).await;
        assert!(matches!(call, Ok(Some(_))), "the sweeper did not run");
    }
    stop.cancel();
    sweeper.await.unwrap();
    let total: u64 = store.counts().await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 150, "a clock step wiped the store");
}

#[tokio::test]
async fn the_sweeper_removes_a_minority_of_a_large_store_as_usual() {
    let backend = Backend::sqlite();
    let store = with_unused(&backend, 30).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let every = Duration::from_millis(20);
    let sweeper = fpush::store::spawn_sweeper(store.clone(), every, 180 * DAY, stop.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.find("example.org", "node-0").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "not swept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    sweeper.await.unwrap();
    let total: u64 = store.counts().await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 120);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_sweeps_a_mostly_unused_store_after_a_day_of_skipped_sweeps() {
    // An app discontinued half a year ago: 120 of 150 registrations unused for real. The clock
    // is right, so after a day of skipped sweeps (hourly, on tokio's paused clock) they go, or
    // the store would grow until its caps refuse real users.
    let backend = Backend::sqlite();
    let store = with_unused(&backend, 120).await;
    let (watched, mut called) = Watched::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let sweeper = fpush::store::spawn_sweeper(watched, HOUR, 180 * DAY, stop.clone());
    let mut turns = 0;
    while called.recv().await == Some("count_unused") {
        turns += 1;
        assert!(turns <= 26, "no sweep after a day of skipped ones");
    }
    assert!(turns > 24, "swept after {turns} turns: less than a day");
    stop.cancel();
    sweeper.await.unwrap();
    let total: u64 = store.counts().await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 30);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_sweeps_a_mostly_unused_store_even_when_fpush_restarts_twice_a_day() {
    // As above, but fpush is restarted every twelve hours (a deployment, a crash): the day of
    // skipped sweeps is kept in the store, so the third run sweeps.
    let backend = Backend::sqlite();
    let store = with_unused(&backend, 120).await;
    let mut turns = 0;
    for run in 1..=3 {
        let (watched, mut called) = Watched::new(backend.open(limits()));
        let stop = tokio_util::sync::CancellationToken::new();
        let sweeper = fpush::store::spawn_sweeper(watched, HOUR, 180 * DAY, stop.clone());
        // Twelve hourly turns, the first at start-up: stopped at eleven hours.
        let mut swept = false;
        for _ in 0..12 {
            match called.recv().await {
                Some("count_unused") => turns += 1,
                _ => {
                    swept = true;
                    break;
                }
            }
        }
        stop.cancel();
        sweeper.await.unwrap();
        if swept {
            assert_eq!(run, 3, "swept in run {run}, after {turns} turns");
            break;
        }
        assert!(run < 3, "no sweep after three runs of twelve hours");
    }
    assert!(turns > 24, "swept after {turns} turns: less than a day");
    let total: u64 = store.counts().await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 30);
}

/// Two register commands for the same new key racing (a client that sends `register-push` twice
/// on reconnect, two fpush instances on one Redis): the key must end with one registration, and
/// both answers must name it (SQLite's unique key index does this by itself).
async fn racing_first_registrations_of_one_key_make_one_registration(backend: Backend) {
    let store = backend.open(limits());
    let other = backend.open(limits());
    let (first, second) = tokio::join!(
        store.register(registration("fcm", "d1", "a@example.org")),
        other.register(registration("fcm", "d1", "a@example.org")),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let found = |node: String| {
        let store = store.clone();
        async move { store.find("example.org", &node).await.unwrap().is_some() }
    };
    let both = (
        found(first.node.clone()).await,
        found(second.node.clone()).await,
    );
    assert_eq!(
        store.counts().await.unwrap(),
        vec![("fcm".into(), 1)],
        "one key, one registration (stored: {both:?})"
    );
    assert_eq!(first, second, "both answers name the one registration");
    // Unregistering the key leaves nothing behind that pushes still reach.
    assert!(store
        .unregister(&registration("fcm", "d1", "a@example.org").key)
        .await
        .unwrap());
    assert_eq!(
        (found(first.node).await, found(second.node).await),
        (false, false)
    );
}
