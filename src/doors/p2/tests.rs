//! The p2 door's unit tests: its hashes, and registrations and pushes against a SQLite store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::metrics::ModuleMetrics;
use crate::modules::{Module, Registering};
use crate::ratelimit::RatelimitConfig;
use crate::request::{AdHocCommand, CommandStatus, Condition};
use crate::store::{
    Credentials, Registration, RegistrationKey, SqliteStore, StoreLimits, TOUCH_INTERVAL,
};
use fpush_traits::{Delivered, PushError, PushTrait};

#[test]
fn the_device_hash_is_lowercase_hex() {
    let hash = device_hash("a@b", "c");
    assert_eq!(hash.len(), 40);
    assert!(hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
}

#[test]
fn secrets_compare_equal_only_when_identical() {
    assert!(same_secret(b"s3cr3t", b"s3cr3t"));
    assert!(!same_secret(b"s3cr3t", b"s3cr3T"));
    assert!(!same_secret(b"s3cr3t", b"s3cr3"));
    assert!(!same_secret(b"", b"x"));
}

#[test]
fn only_pushes_without_push_module_and_with_a_secret_are_claimed() {
    assert!(claims(&push("n", "s")));
    let mut named = push("n", "s");
    named.module = Some("android".into());
    assert!(!claims(&named));
    assert!(!claims(&PushRequest {
        token: "n".into(),
        ..PushRequest::default()
    }));
}

fn push(node: &str, secret: &str) -> PushRequest {
    PushRequest {
        token: node.to_owned(),
        module: None,
        options: vec![("secret".to_owned(), secret.to_owned())],
        ..PushRequest::default()
    }
}

#[test]
fn a_registration_is_due_a_touch_only_after_the_touch_interval() {
    let now = SystemTime::now();
    assert!(!touch_due(now, now));
    assert!(!touch_due(
        now - TOUCH_INTERVAL + Duration::from_secs(1),
        now
    ));
    assert!(touch_due(now - TOUCH_INTERVAL, now));
    // A last use in the future (a clock step back) is not stale.
    assert!(!touch_due(now + Duration::from_secs(60), now));
}

#[tokio::test]
async fn a_delivered_push_touches_the_store_only_for_a_stale_registration() {
    let store = Arc::new(EmptyStore::default());
    for (stale, outcome, touched) in [
        (false, Outcome::delivered, 0),
        (true, Outcome::delivered, 1),
        (true, Outcome::store_failed, 1),
    ] {
        let registered = Registered::new(store.clone(), "example.org", "node".into(), stale);
        registered
            .settle(outcome, &PushNotification::default(), SentTo::Token)
            .await;
        assert_eq!(store.touched.load(Ordering::Relaxed), touched);
    }
}

/// A store that holds nothing and counts `touch` calls; its look-ups fail when `failing` (a
/// Redis that is down, a SQLite file that stays locked).
#[derive(Default)]
pub(crate) struct EmptyStore {
    touched: AtomicUsize,
    failing: bool,
}

impl EmptyStore {
    pub(crate) fn failing() -> Self {
        EmptyStore {
            failing: true,
            ..EmptyStore::default()
        }
    }
}

#[async_trait::async_trait]
impl RegistrationStore for EmptyStore {
    async fn register(&self, _: Registration) -> Result<Credentials, StoreError> {
        Err(StoreError::Unavailable("not in this test".into()))
    }
    async fn find(&self, _: &str, _: &str) -> Result<Option<Registration>, StoreError> {
        if self.failing {
            Err(StoreError::Unavailable("down".into()))
        } else {
            Ok(None)
        }
    }
    async fn touch(&self, _: &str, _: &str) -> Result<(), StoreError> {
        self.touched.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn unregister(&self, _: &RegistrationKey) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn remove(&self, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn clear_second_token(&self, _: &str, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn sweep(&self, _: SystemTime) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn count_unused(&self, _: SystemTime) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn sweeps_skipped_for(&self) -> Result<Duration, StoreError> {
        Ok(Duration::ZERO)
    }
    async fn record_sweeps_skipped(&self, _: Option<Duration>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn room_registrations_naming_a_victim_leave_the_victims_registration_working() {
    let (door, store, _dir) = sqlite_door();
    let modules = fcm_modules();
    let victim = [("token", "victim-token"), ("device-id", "v1")];
    let (node, secret) = registered(&door, &modules, "victim@example.org/phone", &victim).await;
    // More room registrations than `store.maxPerAccount` (20), from the victim's own domain,
    // each naming the victim's JID as the room.
    let rooms = (0..25).map(|n| (format!("m{n}"), "victim@example.org".to_owned()));
    register_rooms(&door, &modules, "mallory@example.org/laptop", rooms).await;
    assert!(
        delivers(&door, &modules, &node, &secret).await,
        "the victim's registration still delivers"
    );
    // Mallory's room registrations count against her own cap.
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 21)]);
}

#[tokio::test]
async fn a_senders_room_registrations_never_replace_its_own() {
    let (door, store, _dir) = sqlite_door();
    let modules = fcm_modules();
    let own = [("token", "juliet-token"), ("device-id", "j1")];
    let (node, secret) = registered(&door, &modules, "juliet@example.org/phone", &own).await;
    let rooms = (0..25).map(|n| ("j1".to_owned(), format!("room{n}@conference.example.org")));
    register_rooms(&door, &modules, "juliet@example.org/phone", rooms).await;
    assert!(
        delivers(&door, &modules, &node, &secret).await,
        "the account's own registration still delivers"
    );
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 21)]);
}

/// Registers a room registration from `from` for each (device id, room), all with one token.
async fn register_rooms(
    door: &P2Door,
    modules: &ModuleSet,
    from: &str,
    rooms: impl Iterator<Item = (String, String)>,
) {
    for (device, room) in rooms {
        let fields = [
            ("token", "room-token"),
            ("device-id", device.as_str()),
            ("muc", room.as_str()),
        ];
        registered(door, modules, from, &fields).await;
    }
}

/// Whether a push to `node` with `secret` resolves to a target (is not refused).
async fn delivers(door: &P2Door, modules: &ModuleSet, node: &str, secret: &str) -> bool {
    door.resolve(modules, "example.org", push(node, secret))
        .await
        .is_ok()
}

/// A door on a SQLite store with the default limits, in a directory dropped with the test.
fn sqlite_door() -> (P2Door, Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.sqlite3");
    let store = Arc::new(SqliteStore::open(&path, StoreLimits::default()).unwrap());
    (P2Door::new(store.clone(), "push.example.org"), store, dir)
}

/// One module serving p2's `fcm` registrations, whose pushes all succeed.
fn fcm_modules() -> ModuleSet {
    let module = delivering_module("android", "google", PROTOCOL, "fcm");
    ModuleSet::from_modules(vec![(module, false)])
}

/// A module `id` of `kind` serving `protocol`'s registrations for `service`, whose pushes all
/// succeed.
pub(crate) fn delivering_module(
    id: &str,
    kind: &'static str,
    protocol: RegistrationProtocol,
    service: &'static str,
) -> Module {
    Module::new(
        id,
        kind,
        Arc::new(Delivers),
        RatelimitConfig::default(),
        Duration::from_secs(3600),
        ModuleMetrics::detached(),
    )
    .serving(Registering {
        protocol,
        service,
        plausible_token: |token| !token.is_empty(),
    })
}

struct Delivers;

#[async_trait::async_trait]
impl PushTrait for Delivers {
    async fn send(&self, _: &PushNotification) -> Result<Delivered, PushError> {
        Ok(Delivered::default())
    }
}

/// A `register-push-fcm` command with `action` and a form of `fields`.
fn register_command(action: &str, fields: &[(&str, &str)]) -> AdHocCommand {
    AdHocCommand {
        node: "register-push-fcm".to_owned(),
        action: Some(action.to_owned()),
        session_id: None,
        fields: fields
            .iter()
            .map(|(var, value)| (var.to_string(), value.to_string()))
            .collect(),
    }
}

/// Registers with `fields` from `from`; answers the node and secret.
async fn registered(
    door: &P2Door,
    modules: &ModuleSet,
    from: &str,
    fields: &[(&str, &str)],
) -> (String, String) {
    let command = register_command("execute", fields);
    let answer = door
        .command(modules, from, "push.example.org", &command)
        .await;
    let completed = answer.result.expect("completed");
    assert_eq!(completed.status, CommandStatus::Completed);
    let field = |name: &str| {
        let found = completed.fields.iter().find(|(var, _)| *var == name);
        found.map(|(_, value)| value.clone()).unwrap_or_default()
    };
    (field("node"), field("secret"))
}

/// Juliet's registration (node `node-old`, secret `secret-old`) as an fpush that did not fold
/// domains stored it: under `Example.ORG`, as her server spelled it.
fn spelled_registration() -> Registration {
    Registration {
        key: RegistrationKey {
            service: "fcm".into(),
            device: device_hash("juliet@Example.ORG", "j1"),
            channel: String::new(),
        },
        account: "juliet@Example.ORG".into(),
        domain: "Example.ORG".into(),
        token: "old-token".into(),
        second_token: None,
        node: "node-old".into(),
        secret: "secret-old".into(),
        last_used: SystemTime::now(),
    }
}

#[tokio::test]
async fn a_registration_stored_under_a_jid_as_spelled_is_replaced_when_registered_again() {
    // Its pushes carry the hash of `juliet@Example.ORG`, which the app drops: registering
    // again makes a registration the app recognises and removes the old one.
    let (door, store, _dir) = sqlite_door();
    let modules = fcm_modules();
    store.restore(spelled_registration()).await.unwrap();
    let fields = [("token", "new-token"), ("device-id", "j1")];
    let (node, secret) = registered(&door, &modules, "juliet@Example.ORG/phone", &fields).await;
    assert_ne!(node, "node-old");
    let now = store
        .find("example.org", &node)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(now.token, "new-token");
    assert_eq!(now.key.device, device_hash("juliet@example.org", "j1"));
    assert_eq!(store.find("Example.ORG", "node-old").await.unwrap(), None);
    assert!(delivers(&door, &modules, &node, &secret).await);
    assert_eq!(store.counts().await.unwrap(), vec![("fcm".into(), 1)]);
}

#[tokio::test]
async fn a_sender_spelling_its_domain_otherwise_finds_its_registration() {
    let (door, store, _dir) = sqlite_door();
    let modules = fcm_modules();
    let fields = [("token", "juliet-token"), ("device-id", "j1")];
    let from = "juliet@Example.ORG./phone";
    let (node, secret) = registered(&door, &modules, from, &fields).await;
    // Case and a final dot make no other domain (RFC 7622 §3.2), as for the access check.
    for sender in ["example.org", "EXAMPLE.org.", "Example.ORG."] {
        let resolved = door.resolve(&modules, sender, push(&node, &secret)).await;
        assert!(resolved.is_ok(), "a push from {sender}");
    }
    let stored = store.find("example.org", &node).await.unwrap();
    assert!(stored.is_some(), "stored under the folded domain");
}

#[tokio::test]
async fn a_registration_stored_under_a_domain_as_spelled_is_still_found_and_removed() {
    let (door, store, _dir) = sqlite_door();
    let modules = fcm_modules();
    store.restore(spelled_registration()).await.unwrap();
    let target = door
        .resolve(&modules, "Example.ORG", push("node-old", "secret-old"))
        .await
        .expect("found under the spelling it was stored with");
    let registration = target.registration().expect("registered");
    let outcome = registration
        .settle(Outcome::token_invalid, &target.notification, SentTo::Token)
        .await;
    assert_eq!(outcome, Outcome::token_invalid);
    let left = store.find("Example.ORG", "node-old").await.unwrap();
    assert_eq!(left, None, "a dead token removes it where it is stored");
}
#[tokio::test]
async fn a_registration_replaced_just_before_its_dead_token_is_removed_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.sqlite3");
    let sqlite = Arc::new(SqliteStore::open(&path, StoreLimits::default()).unwrap());
    let store = Arc::new(Replaces::new(sqlite.clone()));
    let door = P2Door::new(store.clone(), "push.example.org");
    let modules = fcm_modules();
    let fields = [("token", "old-token"), ("device-id", "j1")];
    let from = "juliet@example.org/phone";
    let (node, secret) = registered(&door, &modules, from, &fields).await;
    let target = door
        .resolve(&modules, "example.org", push(&node, &secret))
        .await
        .expect("a target");
    // The client registers a new token (same key: same node and secret) while the provider
    // answers that the old one is dead: it lands right before the removal.
    let mut fresh = sqlite.find("example.org", &node).await.unwrap().unwrap();
    fresh.token = "new-token".into();
    store.replace_with(fresh);
    let registration = target.registration().expect("registered");
    let outcome = registration
        .settle(Outcome::token_invalid, &target.notification, SentTo::Token)
        .await;
    let kept = sqlite.find("example.org", &node).await.unwrap();
    assert_eq!(
        kept.map(|found| found.token).as_deref(),
        Some("new-token"),
        "the fresh registration is kept"
    );
    assert_eq!(outcome, Outcome::transient, "answered wait, not cancel");
}

#[tokio::test]
async fn a_voip_token_replaced_just_before_its_dead_one_is_forgotten_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registrations.sqlite3");
    let sqlite = Arc::new(SqliteStore::open(&path, StoreLimits::default()).unwrap());
    let store = Arc::new(Replaces::new(sqlite.clone()));
    let mut wanted = Registration {
        key: RegistrationKey {
            service: "snikket:apns:1".into(),
            device: "juliet@example.org".into(),
            channel: "apns-token".into(),
        },
        account: "juliet@example.org".into(),
        domain: "example.org".into(),
        token: "apns-token".into(),
        second_token: Some("old-voip".into()),
        node: String::new(),
        secret: String::new(),
        last_used: SystemTime::now(),
    };
    let Credentials { node, .. } = sqlite.register(wanted.clone()).await.unwrap();
    wanted.second_token = Some("new-voip".into());
    store.replace_with(wanted);
    let registered = Registered::new(store.clone(), "example.org", node.clone(), false);
    let sent = PushNotification {
        token: "apns-token".into(),
        voip_token: Some("old-voip".into()),
        ..PushNotification::default()
    };
    let outcome = registered
        .settle(Outcome::token_invalid, &sent, SentTo::SecondToken)
        .await;
    assert_eq!(outcome, Outcome::transient);
    let kept = sqlite.find("example.org", &node).await.unwrap().unwrap();
    assert_eq!(kept.second_token.as_deref(), Some("new-voip"));
}

/// A SQLite store where a registration (`replace_with`) is registered again right before the
/// next removal or forgotten second token: the client's new registration racing the door.
struct Replaces {
    inner: Arc<SqliteStore>,
    replacement: std::sync::Mutex<Option<Registration>>,
}

impl Replaces {
    fn new(inner: Arc<SqliteStore>) -> Self {
        Replaces {
            inner,
            replacement: std::sync::Mutex::default(),
        }
    }

    fn replace_with(&self, registration: Registration) {
        *self.replacement.lock().unwrap() = Some(registration);
    }

    async fn replace(&self) {
        let replacement = self.replacement.lock().unwrap().take();
        if let Some(registration) = replacement {
            self.inner.register(registration).await.unwrap();
        }
    }
}

#[async_trait::async_trait]
impl RegistrationStore for Replaces {
    async fn register(&self, registration: Registration) -> Result<Credentials, StoreError> {
        self.inner.register(registration).await
    }
    async fn find(&self, domain: &str, node: &str) -> Result<Option<Registration>, StoreError> {
        self.inner.find(domain, node).await
    }
    async fn touch(&self, domain: &str, node: &str) -> Result<(), StoreError> {
        self.inner.touch(domain, node).await
    }
    async fn unregister(&self, key: &RegistrationKey) -> Result<bool, StoreError> {
        self.inner.unregister(key).await
    }
    async fn remove(&self, domain: &str, node: &str, token: &str) -> Result<bool, StoreError> {
        self.replace().await;
        self.inner.remove(domain, node, token).await
    }
    async fn clear_second_token(
        &self,
        domain: &str,
        node: &str,
        v: &str,
    ) -> Result<(), StoreError> {
        self.replace().await;
        self.inner.clear_second_token(domain, node, v).await
    }
    async fn sweep(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.inner.sweep(before).await
    }
    async fn count_unused(&self, before: SystemTime) -> Result<u64, StoreError> {
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

/// `command` as Juliet's phone sends it.
async fn juliets(door: &P2Door, modules: &ModuleSet, command: AdHocCommand) -> CommandAnswer {
    let from = "juliet@example.org/phone";
    door.command(modules, from, "push.example.org", &command)
        .await
}

#[tokio::test]
async fn a_canceled_command_is_answered_canceled_and_registers_nothing() {
    let (door, store, _dir) = sqlite_door();
    let modules = fcm_modules();
    let fields = [("token", "a-token"), ("device-id", "j1")];
    let answer = juliets(&door, &modules, register_command("cancel", &fields)).await;
    let canceled = answer.result.expect("a cancel is not refused");
    assert_eq!(canceled.status, CommandStatus::Canceled);
    assert!(canceled.fields.is_empty());
    assert!(store.counts().await.unwrap().iter().all(|(_, n)| *n == 0));
}

#[tokio::test]
async fn a_step_the_one_step_commands_lack_is_a_bad_request() {
    let (door, store, _dir) = sqlite_door();
    let modules = fcm_modules();
    let fields = [("token", "a-token"), ("device-id", "j1")];
    for action in ["next", "prev", "dance"] {
        let answer = juliets(&door, &modules, register_command(action, &fields)).await;
        let refusal = answer.result.expect_err(action);
        assert_eq!(refusal.condition, Condition::BadRequest, "{action}");
    }
    assert!(store.counts().await.unwrap().iter().all(|(_, n)| *n == 0));
}

#[tokio::test]
async fn the_account_hash_is_over_the_bare_jid_as_the_app_spells_it() {
    // Conversations hashes its account's bare JID in canonical form (lower case, no final dot)
    // and drops a push whose `account` is another hash; p2 hashed the sender's JID so too.
    let (door, _store, _dir) = sqlite_door();
    let modules = fcm_modules();
    let fields = [("token", "juliet-token"), ("device-id", "j1")];
    let from = "Juliet@Example.ORG./phone";
    let (node, secret) = registered(&door, &modules, from, &fields).await;
    let target = door
        .resolve(&modules, "example.org", push(&node, &secret))
        .await
        .expect("delivered");
    let account = target
        .notification
        .extra
        .iter()
        .find(|(k, _)| k == "account");
    let expected = device_hash("juliet@example.org", "j1");
    assert_eq!(
        account.map(|(_, hash)| hash.as_str()),
        Some(expected.as_str())
    );
    // The same device registering from the canonical JID is the same registration.
    let again = registered(&door, &modules, "juliet@example.org/tablet", &fields).await;
    assert_eq!(again, (node, secret));
}
