//! The p2 door on its own, against a registration store in memory: the register and unregister
//! commands with every rule and error of the protocol, the device and channel hashes against
//! vectors computed independently, and a push resolved by (domain, node) and secret.

mod p2_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fpush::doors::p2::{device_hash, CommandAnswer, CommandKind, P2Door, PROTOCOL};
use fpush::doors::{Refusal, Target};
use fpush::metrics::ModuleMetrics;
use fpush::modules::{Module, ModuleSet, Registering};
use fpush::outcome::Outcome;
use fpush::ratelimit::RatelimitConfig;
use fpush::request::{AdHocCommand, Condition, ErrorType, PushRequest};
use fpush_traits::{async_trait, Delivered, PushError, PushNotification, PushTrait, SentTo};
use p2_support::MemoryStore;

/// `python3 -c "import hashlib; print(hashlib.sha1(b'juliet@capulet.example\x00a1b2c3d4e5f60789').hexdigest())"`
const JULIET_DEVICE: &str = "5a225e3989fe74dd1d6dcec1915ac493a87061af";
/// `python3 -c "import hashlib; print(hashlib.sha1(b'room@conference.capulet.example\x00a1b2c3d4e5f60789').hexdigest())"`
const ROOM_CHANNEL: &str = "01f70a349fb337e0750df67ee8e3c6ff45170c37";
const DEVICE_ID: &str = "a1b2c3d4e5f60789";
const FCM_TOKEN: &str = "cT7x9Qz1RkW3:APA91bHq-_Zk9";

struct Silent;

#[async_trait]
impl PushTrait for Silent {
    async fn send(&self, _: &PushNotification) -> Result<Delivered, PushError> {
        Ok(Delivered::default())
    }
}

fn plausible_fcm(token: &str) -> bool {
    !token.is_empty() && !token.contains(' ')
}

fn modules() -> ModuleSet {
    let module = Module::new(
        "android",
        "google",
        Arc::new(Silent),
        RatelimitConfig::default(),
        Duration::from_secs(3600),
        ModuleMetrics::detached(),
    )
    .serving(Registering {
        protocol: PROTOCOL,
        service: "fcm",
        plausible_token: plausible_fcm,
    });
    ModuleSet::from_modules(vec![(module, false)])
}

fn door() -> (P2Door, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    (P2Door::new(store.clone(), "push.example.org"), store)
}

fn command(node: &str, fields: &[(&str, &str)]) -> AdHocCommand {
    AdHocCommand {
        node: node.to_owned(),
        action: Some("execute".to_owned()),
        session_id: None,
        fields: fields
            .iter()
            .map(|(var, value)| (var.to_string(), value.to_string()))
            .collect(),
    }
}

const JULIET: &str = "juliet@capulet.example/balcony";
/// The JID the commands are addressed to.
const PUSH_JID: &str = "push.example.org";

async fn register(door: &P2Door, fields: &[(&str, &str)]) -> CommandAnswer {
    door.command(
        &modules(),
        JULIET,
        PUSH_JID,
        &command("register-push-fcm", fields),
    )
    .await
}

fn refusal(answer: CommandAnswer) -> (ErrorType, Condition) {
    let refusal = answer.result.expect_err("refused");
    (refusal.kind, refusal.condition)
}

const BAD: (ErrorType, Condition) = (ErrorType::Modify, Condition::BadRequest);
const NOT_FOUND: (ErrorType, Condition) = (ErrorType::Cancel, Condition::ItemNotFound);

#[test]
fn the_device_hash_is_sha1_of_jid_nul_device_id() {
    assert_eq!(
        device_hash("juliet@capulet.example", DEVICE_ID),
        JULIET_DEVICE
    );
    assert_eq!(
        device_hash("room@conference.capulet.example", DEVICE_ID),
        ROOM_CHANNEL
    );
}

#[tokio::test]
async fn register_stores_the_device_hash_and_answers_jid_node_and_secret() {
    let (door, store) = door();
    let answer = register(&door, &[("token", FCM_TOKEN), ("device-id", DEVICE_ID)]).await;
    assert_eq!(answer.kind, CommandKind::Register);
    let completed = answer.result.expect("completed");
    assert_eq!(
        completed.fields,
        [
            ("jid", "push.example.org".to_owned()),
            ("node", "node0".to_owned()),
            ("secret", "secret0".to_owned())
        ]
    );
    let stored = &store.all()[0];
    assert_eq!(stored.key.service, "fcm");
    assert_eq!(stored.key.device, JULIET_DEVICE);
    assert_eq!(stored.key.channel, "");
    assert_eq!(stored.account, "juliet@capulet.example");
    assert_eq!(stored.domain, "capulet.example");
    assert_eq!(stored.token, FCM_TOKEN);
}

#[tokio::test]
async fn device_id_is_preferred_over_android_id() {
    let (door, store) = door();
    let fields = [
        ("token", FCM_TOKEN),
        ("android-id", "other"),
        ("device-id", DEVICE_ID),
    ];
    register(&door, &fields).await.result.expect("completed");
    assert_eq!(store.all()[0].key.device, JULIET_DEVICE);
    let (door, store) = self::door();
    let older = [("token", FCM_TOKEN), ("android-id", DEVICE_ID)];
    register(&door, &older).await.result.expect("completed");
    assert_eq!(store.all()[0].key.device, JULIET_DEVICE);
}

#[tokio::test]
async fn a_room_registration_counts_against_the_senders_rooms() {
    let (door, store) = door();
    let fields = [
        ("token", FCM_TOKEN),
        ("device-id", DEVICE_ID),
        ("muc", "room@conference.capulet.example"),
    ];
    register(&door, &fields).await.result.expect("completed");
    let stored = &store.all()[0];
    assert_eq!(stored.key.device, JULIET_DEVICE);
    assert_eq!(stored.key.channel, ROOM_CHANNEL);
    assert_eq!(stored.account, "juliet@capulet.example/rooms");
}

#[tokio::test]
async fn malformed_registrations_are_bad_requests() {
    let (door, store) = door();
    for fields in [
        &[("device-id", DEVICE_ID)][..],
        &[("token", ""), ("device-id", DEVICE_ID)],
        &[("token", FCM_TOKEN)],
        &[("token", FCM_TOKEN), ("device-id", "")],
        &[("token", "not a token"), ("device-id", DEVICE_ID)],
        &[
            ("token", FCM_TOKEN),
            ("device-id", DEVICE_ID),
            ("muc", "room@c.example/nick"),
        ],
    ] {
        assert_eq!(refusal(register(&door, fields).await), BAD, "{fields:?}");
    }
    let long = "d".repeat(300);
    let fields = [("token", FCM_TOKEN), ("device-id", long.as_str())];
    assert_eq!(refusal(register(&door, &fields).await), BAD);
    assert!(store.all().is_empty());
}

#[tokio::test]
async fn unknown_commands_and_services_are_not_found() {
    let (door, _) = door();
    let fields = [("token", FCM_TOKEN), ("device-id", DEVICE_ID)];
    let apns = door
        .command(
            &modules(),
            JULIET,
            PUSH_JID,
            &command("register-push-apns", &fields),
        )
        .await;
    assert_eq!(refusal(apns), NOT_FOUND);
    let other = door
        .command(
            &modules(),
            JULIET,
            PUSH_JID,
            &command("list-everything", &fields),
        )
        .await;
    assert_eq!(other.kind, CommandKind::Unknown);
    assert_eq!(refusal(other), NOT_FOUND);
}

#[tokio::test]
async fn unregister_finds_the_account_the_room_or_the_channel() {
    let (door, store) = door();
    let modules = modules();
    let room = "room@conference.capulet.example";
    let own = [("token", FCM_TOKEN), ("device-id", DEVICE_ID)];
    let in_room = [
        ("token", FCM_TOKEN),
        ("device-id", DEVICE_ID),
        ("muc", room),
    ];
    let unregister = |fields: Vec<(&'static str, &'static str)>| {
        let command = command("unregister-push-fcm", &fields);
        let door = &door;
        let modules = &modules;
        async move { door.command(modules, JULIET, PUSH_JID, &command).await }
    };
    for (registered, removing) in [
        (&in_room[..], vec![("device-id", DEVICE_ID), ("muc", room)]),
        (
            &in_room[..],
            vec![("android-id", DEVICE_ID), ("channel", ROOM_CHANNEL)],
        ),
        (&own[..], vec![("device-id", DEVICE_ID)]),
    ] {
        register(&door, registered)
            .await
            .result
            .expect("registered");
        let answer = unregister(removing.clone()).await;
        assert_eq!(answer.result.expect("completed").fields, [], "{removing:?}");
        assert!(store.all().is_empty(), "{removing:?}");
    }
    let unknown = unregister(vec![("device-id", DEVICE_ID)]).await;
    assert_eq!(refusal(unknown), NOT_FOUND);
    assert_eq!(refusal(unregister(vec![]).await), BAD);
}

#[tokio::test]
async fn store_failures_answer_wait() {
    let (door, store) = door();
    store.fail(true);
    let answer = register(&door, &[("token", FCM_TOKEN), ("device-id", DEVICE_ID)]).await;
    assert_eq!(
        refusal(answer),
        (ErrorType::Wait, Condition::InternalServerError)
    );
}

fn push(node: &str, secret: &str) -> PushRequest {
    PushRequest {
        token: node.to_owned(),
        module: None,
        options: vec![("secret".to_owned(), secret.to_owned())],
        ..PushRequest::default()
    }
}

#[tokio::test]
async fn a_push_with_the_right_secret_targets_the_stored_token() {
    let (door, store) = door();
    let room = "room@conference.capulet.example";
    let fields = [
        ("token", FCM_TOKEN),
        ("device-id", DEVICE_ID),
        ("muc", room),
    ];
    register(&door, &fields).await.result.expect("registered");
    let target = door
        .resolve(&modules(), "capulet.example", push("node0", "secret0"))
        .await
        .expect("a target");
    assert_eq!(target.module.id, "android");
    assert_eq!(target.notification.token, FCM_TOKEN);
    assert_eq!(
        target.notification.extra,
        [
            ("account".to_owned(), JULIET_DEVICE.to_owned()),
            ("channel".to_owned(), ROOM_CHANNEL.to_owned())
        ]
    );
    // The ratelimit and dead-token key: token, the sender's rooms and the room's channel.
    let rooms = "juliet@capulet.example/rooms";
    assert_eq!(
        target.key(),
        format!("{FCM_TOKEN}\0{rooms}\0{ROOM_CHANNEL}")
    );
    assert!(target.registration().is_some());
    assert_eq!(store.all().len(), 1);
}

#[tokio::test]
async fn wrong_secrets_unknown_nodes_and_store_failures_are_refused() {
    let (door, store) = door();
    register(&door, &[("token", FCM_TOKEN), ("device-id", DEVICE_ID)])
        .await
        .result
        .expect("registered");
    let outcome = |result: Result<Target, Refusal>| result.expect_err("refused").outcome;
    let modules = modules();
    let wrong = door
        .resolve(&modules, "capulet.example", push("node0", "secret1"))
        .await;
    assert_eq!(outcome(wrong), Outcome::forbidden);
    let unknown = door
        .resolve(&modules, "capulet.example", push("node9", "secret0"))
        .await;
    assert_eq!(outcome(unknown), Outcome::unknown_registration);
    let other_domain = door
        .resolve(&modules, "montague.example", push("node0", "secret0"))
        .await;
    assert_eq!(outcome(other_domain), Outcome::unknown_registration);
    store.fail(true);
    let failed = door
        .resolve(&modules, "capulet.example", push("node0", "secret0"))
        .await;
    assert_eq!(outcome(failed), Outcome::store_failed);
}

#[tokio::test]
async fn a_store_younger_than_the_grace_answers_wait_for_registrations_it_lacks() {
    let (door, store) = door();
    let hour = Duration::from_secs(3600);
    let outcome = |modules: ModuleSet| {
        let door = &door;
        async move {
            let unknown = push("node9", "secret0");
            let refused = door.resolve(&modules, "capulet.example", unknown).await;
            refused.expect_err("refused").outcome
        }
    };
    store.made_at(Some(SystemTime::now() - Duration::from_secs(60)));
    let young = outcome(modules().with_retired_grace(hour)).await;
    assert_eq!(young, Outcome::unknown_in_new_store);
    // Past the grace, or with none, the server is told to disable the registration.
    store.made_at(Some(SystemTime::now() - 2 * hour));
    let old = outcome(modules().with_retired_grace(hour)).await;
    assert_eq!(old, Outcome::unknown_registration);
    store.made_at(Some(SystemTime::now()));
    assert_eq!(outcome(modules()).await, Outcome::unknown_registration);
    // A store that cannot say when it was made is old.
    store.made_at(None);
    let unknown_age = outcome(modules().with_retired_grace(hour)).await;
    assert_eq!(unknown_age, Outcome::unknown_registration);
}

#[tokio::test]
async fn a_dead_token_removes_the_registration_and_a_delivery_keeps_it() {
    let (door, store) = door();
    register(&door, &[("token", FCM_TOKEN), ("device-id", DEVICE_ID)])
        .await
        .result
        .expect("registered");
    let target = door
        .resolve(&modules(), "capulet.example", push("node0", "secret0"))
        .await
        .expect("a target");
    let (registration, sent) = (
        target.registration().expect("registered"),
        &target.notification,
    );
    registration
        .settle(Outcome::delivered, sent, SentTo::Token)
        .await;
    registration
        .settle(Outcome::transient, sent, SentTo::Token)
        .await;
    assert_eq!(store.all().len(), 1);
    registration
        .settle(Outcome::known_dead, sent, SentTo::Token)
        .await;
    assert!(store.all().is_empty());
}
