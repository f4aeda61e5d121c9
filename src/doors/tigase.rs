//! The Tigase push protocol, as the Siskin-family iOS apps (Siskin IM, Snikket iOS) speak it:
//! the app registers its APNS token (and a PushKit VoIP token) with the ad-hoc command
//! `register-device`, naming a provider id fpush advertises in disco#info, and gets a `node`;
//! the user's server then pushes to that node, optionally with a payload it encrypted for the
//! app (`tigase:push:encrypt:0`) and a priority (`tigase:push:priority:0`).
//!
//! Registrations live in the shared store, keyed by (provider id, account bare JID, device
//! token): registering the same device again for the same account keeps its node. Ratelimit
//! and dead-token memory are keyed per registration (token and account), as for p2.

mod command;
mod payload;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use fpush_traits::{PushKind, PushNotification, SentTo};

use super::p2::{find_registration, lacking, Registered};
use super::{Refusal, Target, TargetKey};
use crate::config::RegistrationProtocol;
use crate::modules::{Admitting, Module, ModuleSet};
use crate::outcome::Outcome;
use crate::ratelimit::Admission;
use crate::request::PushRequest;
use crate::store::{touch_due, RegistrationStore};

pub use command::{command_kind, FEATURES, MAX_PAYLOAD_SIZE};

/// The protocol this door serves, as modules name it in `registration`.
pub const PROTOCOL: RegistrationProtocol = RegistrationProtocol::Tigase;

/// The tigase door: the registration store it shares with p2.
pub struct TigaseDoor {
    store: Arc<dyn RegistrationStore>,
}

impl fmt::Debug for TigaseDoor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TigaseDoor").finish_non_exhaustive()
    }
}

/// How a push the door claimed ends up.
#[derive(Debug)]
pub enum Resolved {
    /// A registration's push, ready for admission.
    Target(Box<Target>),
    /// Answered at once.
    Refused(Refusal),
    /// No registration has this node and nothing in the push is Tigase's: the push is a
    /// token-in-node push after all (a default module's).
    NotRegistered(PushRequest),
}

/// Whether a push may be tigase's: no `pushModule` and no `secret` (p2 claims those), while
/// some module serves tigase.
pub fn claims(push: &PushRequest, modules: &ModuleSet) -> bool {
    push.module.is_none()
        && !push.options.iter().any(|(var, _)| var == "secret")
        && modules.serves(PROTOCOL)
}

impl TigaseDoor {
    pub fn new(store: Arc<dyn RegistrationStore>) -> Self {
        TigaseDoor { store }
    }

    /// The target of a push from `from` (a bare JID) naming a registration by its node,
    /// looked up by (sender's domain, node).
    pub async fn resolve(&self, modules: &ModuleSet, from: &str, push: PushRequest) -> Resolved {
        // Registration nodes are 12 characters: a push that cannot name one is a token-in-node
        // push whatever the store holds, and never waits for (or on the failure of) a look-up.
        if !may_name_registration(&push) {
            return Resolved::NotRegistered(push);
        }
        let registration = match find_registration(&*self.store, from, &push.token).await {
            Ok(Some(found)) if is_provider_id(&found.key.service) => found,
            Ok(_) => return Resolved::Refused(lacking(&*self.store, modules).await.into()),
            Err(error) => {
                log::debug!("tigase: registration look-up failed: {error}");
                return Resolved::Refused(Outcome::store_failed.into());
            }
        };
        let provider = registration.key.service.as_str();
        let Some(module) = modules.provider_module(PROTOCOL, provider) else {
            let what = format!("the provider {provider}");
            return Resolved::Refused(Refusal::unserved(modules, PROTOCOL, provider, &what));
        };
        let built = payload::notification(module, &registration, push);
        let (notification, key) = keyed(module, built.notification, &registration.account);
        let stale = touch_due(registration.last_used, SystemTime::now());
        let (domain, node) = (&registration.domain, registration.node);
        let registered = Registered::new(self.store.clone(), domain, node, stale);
        let mut target = Target::new(module.clone(), notification, TargetKey::Composite(key))
            .bounded()
            .registered(registered);
        if built.urgent {
            target = target.urgent();
        }
        Resolved::Target(Box::new(target))
    }
}

/// A registration's push and its key: that of the token it goes to (the VoIP token for a call
/// over PushKit, the device token otherwise). A call whose device token is known dead is made a
/// push to the device token, answered as known dead without asking the provider: the platform
/// may send a call there as an alert whatever the door planned (no PushKit credentials, details
/// too large for PushKit), and a dead device token ends the registration, VoIP token and all.
/// Only a call costs a second key and look-up.
fn keyed(
    module: &Module,
    mut notification: PushNotification,
    account: &str,
) -> (PushNotification, String) {
    let device = target_key(&notification.token, account);
    let voip = match (notification.planned(), &notification.voip_token) {
        (SentTo::SecondToken, Some(voip)) => voip,
        _ => return (notification, device),
    };
    if known_dead(module, &device) {
        notification.voip_token = None;
        notification.kind = Some(PushKind::Alert);
        return (notification, device);
    }
    let key = target_key(voip, account);
    (notification, key)
}

/// Whether `module`'s dead-token memory holds `key`, asked as an urgent push asks it (no
/// ratelimit, this instance's memory).
fn known_dead(module: &Module, key: &str) -> bool {
    matches!(
        module.admit_limited_by(key, None),
        Admitting::Now(Admission::KnownDead)
    )
}

/// The ratelimit and dead-token key of a registration's push to `token` (its device token, or
/// its VoIP token for a call): per registration, so that several accounts on one phone never
/// queue or refuse each other's pushes, and per token, so that a dead VoIP token never stands
/// for the device token. The register command forgets the same keys in the dead-token memory.
pub(crate) fn target_key(token: &str, account: &str) -> String {
    format!("{token}\0{account}")
}

/// The key an answer is learnt under when the platform sent the push to another token than
/// planned: a call meant for the VoIP token that went to the device token as an alert (no
/// PushKit credentials, or details too large for PushKit) is answered for the device token, so
/// a dead device token is remembered as such, never as a dead VoIP token that was not even
/// tried. That is a registration's key for the device token, or, for a push2 call (keyed by
/// its token alone), the device token. `None` when the push went where planned (every push but
/// such calls).
pub fn key_sent_to(target: &Target, to: SentTo) -> Option<String> {
    let sent = &target.notification;
    let redirected = to == SentTo::Token && sent.planned() == SentTo::SecondToken;
    if !redirected {
        return None;
    }
    match (&target.key, target.registration()) {
        (TargetKey::SecondToken, _) => Some(sent.token.clone()),
        (_, Some(_)) => Some(target_key(&sent.token, sent.account.as_deref()?)),
        (_, None) => None,
    }
}

/// Whether a push may name a registration of this door: it carries Tigase's elements, or its
/// node has a registration node's shape. Such a push is never taken for a token-in-node push.
pub fn may_name_registration(push: &PushRequest) -> bool {
    push.tigase.is_some() || looks_like_node(&push.token)
}

/// Whether a push's node has the shape of a registration node rather than a device token:
/// nodes are 12 characters, device tokens (APNS 64 hex digits, FCM over 100 characters) never
/// this short. Such a push whose registration is gone is answered `item-not-found` (the server
/// disables it), never handed to a default module as if the node were a token.
fn looks_like_node(node: &str) -> bool {
    node.len() < 32
}

/// Whether a stored registration is this door's: provider ids are colon-separated (settings
/// validation requires it), p2's services (`fcm`, `apns`) never are.
pub fn is_provider_id(service: &str) -> bool {
    service.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doors::p2::tests::{delivering_module, EmptyStore};
    use crate::request::AdHocCommand;
    use crate::store::{SqliteStore, StoreLimits};

    const PROVIDER: &str = "snikket:apns:1";

    fn apns_modules() -> ModuleSet {
        let module = delivering_module("ios", "apple", PROTOCOL, "apns").with_provider(PROVIDER);
        ModuleSet::from_modules(vec![(module, false)])
    }

    /// A door on a SQLite store in `dir`.
    fn sqlite_door(dir: &std::path::Path) -> TigaseDoor {
        let path = dir.join("registrations.sqlite3");
        TigaseDoor::new(Arc::new(
            SqliteStore::open(&path, StoreLimits::default()).unwrap(),
        ))
    }

    /// `register-device` for the APNS provider and one device token.
    fn register_device() -> AdHocCommand {
        AdHocCommand {
            node: "register-device".into(),
            action: Some("execute".into()),
            session_id: None,
            fields: vec![
                ("provider".into(), PROVIDER.into()),
                ("device-token".into(), "ab".repeat(32)),
            ],
        }
    }

    #[tokio::test]
    async fn a_sender_spelling_its_domain_otherwise_finds_its_registration() {
        let dir = tempfile::tempdir().unwrap();
        let door = sqlite_door(dir.path());
        let modules = apns_modules();
        let command = register_device();
        let from = "juliet@Example.ORG./phone";
        let answer = door.command(&modules, from, &command).await;
        let completed = answer.result.expect("registered");
        let node = completed.fields.iter().find(|(var, _)| *var == "node");
        let node = node.map(|(_, node)| node.clone()).expect("a node");
        for sender in ["example.org", "EXAMPLE.org."] {
            let push = PushRequest {
                token: node.clone(),
                ..PushRequest::default()
            };
            let resolved = door.resolve(&modules, sender, push).await;
            assert!(
                matches!(resolved, Resolved::Target(_)),
                "a push from {sender}: {resolved:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_account_is_the_senders_bare_jid_in_canonical_form() {
        // Siskin finds the account (and its notification key) by the push's `account`; the
        // Tigase component normalised the sender so. One device is one registration however
        // the server spells the JID.
        let dir = tempfile::tempdir().unwrap();
        let door = sqlite_door(dir.path());
        let modules = apns_modules();
        let command = register_device();
        let mut nodes = Vec::new();
        for from in ["Juliet@Example.ORG./phone", "juliet@example.org/phone"] {
            let answer = door.command(&modules, from, &command).await;
            let completed = answer.result.expect("registered");
            let node = completed.fields.iter().find(|(var, _)| *var == "node");
            nodes.push(node.map(|(_, node)| node.clone()).expect("a node"));
        }
        assert_eq!(nodes[0], nodes[1], "one registration");
        let push = PushRequest {
            token: nodes[0].clone(),
            ..PushRequest::default()
        };
        let Resolved::Target(target) = door.resolve(&modules, "example.org", push).await else {
            panic!("not delivered");
        };
        let account = target.notification.account.as_deref();
        assert_eq!(account, Some("juliet@example.org"));
        let unregistered = AdHocCommand {
            node: "unregister-device".into(),
            ..command
        };
        let answer = door
            .command(&modules, "JULIET@example.org/ipad", &unregistered)
            .await;
        assert!(answer.result.is_ok(), "unregistered: {answer:?}");
    }

    #[tokio::test]
    async fn a_failing_store_never_holds_back_a_push_that_cannot_name_a_registration() {
        // A default module's token-in-node push (a 64-hex APNS token, no Tigase elements) can
        // name no tigase registration (nodes are 12 characters): without a store it goes out
        // (`without_store`), and so must it while the open store fails.
        let door = TigaseDoor::new(Arc::new(EmptyStore::failing()));
        let modules = apns_modules();
        let push = PushRequest {
            token: "ab".repeat(32),
            ..PushRequest::default()
        };
        assert!(!may_name_registration(&push));
        let resolved = door.resolve(&modules, "example.org", push).await;
        assert!(
            matches!(resolved, Resolved::NotRegistered(_)),
            "a token-in-node push held back by the store: {resolved:?}"
        );
    }

    #[test]
    fn provider_ids_are_told_from_p2_services() {
        assert!(is_provider_id("snikket:apns:1"));
        assert!(!is_provider_id("apns"));
        assert!(!is_provider_id("fcm"));
    }
}
