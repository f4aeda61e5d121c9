//! The p2 door through the dispatcher, with a recording provider and a registration store in
//! memory: register and unregister commands answered as XEP-0050 asks (from full JIDs too),
//! pushes by node and secret delivered with the `account` key, and every refusal of the issue —
//! wrong secret, unknown node (never the default module), store failure, dead token — answered
//! with its reply and without a provider call where the issue says so.

mod p2_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fpush::access::AccessSettings;
use fpush::doors::p2::{device_hash, P2Door, PROTOCOL};
use fpush::doors::MAX_ID_BYTES;
use fpush::modules::{ModuleSet, Registering};
use fpush_testkit::xmpp::Stanza;
use p2_support::dispatcher::{error_of, module, Harness, JID};
use p2_support::forms::{command_iq, form_value};
use p2_support::RecordingProvider;

const JULIET: &str = "juliet@capulet.example/balcony";
const ROMEO: &str = "romeo@capulet.example/orchard";
const DOMAIN: &str = "capulet.example";
const DEVICE_ID: &str = "a1b2c3d4e5f60789";
const TOKEN: &str = "cT7x9Qz1RkW3:APA91bHq-_Zk9";

fn plausible(token: &str) -> bool {
    !token.is_empty() && !token.contains(' ')
}

impl Harness {
    /// An `android` module serving p2 for `fcm` and a default token-in-node module `app`, both
    /// on one recording provider; `ratelimit` on or off.
    fn new(ratelimit: bool) -> Self {
        Self::with(ratelimit, true)
    }

    fn with(ratelimit: bool, p2: bool) -> Self {
        let provider = Arc::new(RecordingProvider::default());
        let mut android = module("android", "google", &provider, ratelimit);
        if p2 {
            android = android.serving(Registering {
                protocol: PROTOCOL,
                service: "fcm",
                plausible_token: plausible,
            });
        }
        let app = module("app", "google", &provider, ratelimit);
        let modules = ModuleSet::from_modules(vec![(android, false), (app, true)]);
        let h = Harness::with_modules(modules, provider);
        h.dispatcher
            .set_p2(Arc::new(P2Door::new(h.store.clone(), JID)));
        h
    }

    /// The register command for `from`'s device and `token`, answered as it comes.
    async fn register_command(&mut self, from: &str, token: &str) -> Stanza {
        let fields = [("token", token), ("device-id", DEVICE_ID)];
        self.command(from, "register-push-fcm", &fields).await
    }

    /// Registers `from`'s device for `token`; answers (node, secret).
    async fn register(&mut self, from: &str, token: &str) -> (String, String) {
        let reply = self.register_command(from, token).await;
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
        (form_value(&reply, "node"), form_value(&reply, "secret"))
    }

    /// A push as Prosody sends it for a p2 registration: node, secret, no `pushModule`.
    async fn push(&mut self, from: &str, node: &str, secret: &str) -> Stanza {
        self.push_with(
            from,
            node,
            &format!("<field var='secret'><value>{secret}</value></field>"),
        )
        .await
    }

    async fn push_with(&mut self, from: &str, node: &str, options: &str) -> Stanza {
        self.ask(|id| push_iq(id, from, node, options)).await
    }
}

/// A push IQ for `node` with `options` in its publish-options form.
fn push_iq(id: &str, from: &str, node: &str, options: &str) -> String {
    format!(
        "<iq type='set' id='{id}' from='{from}' to='{JID}'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item>\
         <notification xmlns='urn:xmpp:push:0'/></item></publish><publish-options>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>\
         <value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         {options}</x></publish-options></pubsub></iq>"
    )
}

fn juliet_device() -> String {
    device_hash("juliet@capulet.example", DEVICE_ID)
}

#[tokio::test]
async fn a_registered_device_gets_its_pushes_with_the_account_key() {
    let mut h = Harness::new(false);
    let reply = h.register_command(JULIET, TOKEN).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert_eq!(reply.attr("to"), Some(JULIET));
    assert!(
        reply.raw.contains("node='register-push-fcm'")
            && reply.raw.contains("status='completed'")
            && reply.raw.contains("sessionid='")
            && reply.raw.contains("<x xmlns='jabber:x:data' type='form'>"),
        "{}",
        reply.raw
    );
    assert_eq!(form_value(&reply, "jid"), JID);
    let (node, secret) = (form_value(&reply, "node"), form_value(&reply, "secret"));

    let pushed = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(pushed.kind(), Some("result"), "{}", pushed.raw);
    let sent = h.provider.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].token, TOKEN);
    assert_eq!(sent[0].module_id, "android");
    assert_eq!(sent[0].extra, [("account".to_owned(), juliet_device())]);

    // Registering again keeps the node and secret and updates the token.
    let again = h.register(JULIET, "cT7x9Qz1RkW3:APA91bNEW").await;
    assert_eq!(again, (node, secret));
    assert_eq!(h.store.all()[0].token, "cT7x9Qz1RkW3:APA91bNEW");
}

#[tokio::test]
async fn wrong_secrets_and_unknown_nodes_never_reach_the_provider() {
    let mut h = Harness::new(false);
    let (node, _) = h.register(JULIET, TOKEN).await;
    let wrong = h.push(DOMAIN, &node, "not-the-secret").await;
    assert_eq!(error_of(&wrong), ("auth", "forbidden"));
    // Not sent to the default module either: the node would go to FCM as a token.
    let unknown = h.push(DOMAIN, "unknownNode1", "whatever").await;
    assert_eq!(error_of(&unknown), ("cancel", "item-not-found"));
    let other_domain = h.push("montague.example", &node, "whatever").await;
    assert_eq!(error_of(&other_domain), ("cancel", "item-not-found"));
    // A full JID never pushes.
    let full = h.push(JULIET, &node, "whatever").await;
    assert_eq!(error_of(&full), ("auth", "forbidden"));
    assert!(h.provider.sent().is_empty());
}

#[tokio::test]
async fn a_push_naming_its_module_keeps_the_token_in_node_rules() {
    let mut h = Harness::new(false);
    let options = "<field var='pushModule'><value>app</value></field>\
                   <field var='secret'><value>s</value></field>";
    let reply = h.push_with(DOMAIN, "monal-token-1", options).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let sent = h.provider.sent();
    assert_eq!(
        (sent[0].token.as_str(), sent[0].module_id.as_str()),
        ("monal-token-1", "app")
    );
    assert!(sent[0].extra.is_empty());
}

#[tokio::test]
async fn without_a_p2_module_a_secret_push_goes_to_the_default_module() {
    let mut h = Harness::with(false, false);
    let reply = h.push(DOMAIN, "plain-token-1", "s").await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert_eq!(h.provider.sent()[0].module_id, "app");
    let command = h.register_command(JULIET, TOKEN).await;
    assert_eq!(error_of(&command), ("cancel", "item-not-found"));
}

#[tokio::test]
async fn a_reload_that_stops_serving_p2_answers_its_pushes_wait_within_the_grace() {
    let mut h = Harness::new(false);
    let (node, secret) = h.register(JULIET, TOKEN).await;
    // The `registration` block is dropped from the settings by mistake: the module stays, p2
    // is no longer served.
    let before = h.dispatcher.modules().load_full();
    let provider = h.provider.clone();
    let android = module("android", "google", &provider, false);
    let app = module("app", "google", &provider, false);
    let mut after = ModuleSet::from_modules(vec![(android, false), (app, true)]);
    after.remember_retired(&before, Duration::from_secs(3600));
    h.dispatcher.replace_modules(Arc::new(after));

    // Not `cancel`, and not the node sent to the default module as a token (which FCM would
    // call invalid): either would make the XMPP server drop the registration.
    let reply = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(error_of(&reply), ("wait", "internal-server-error"));
    assert!(h.provider.sent().is_empty());
}

/// `android` serving p2 for `fcm` (unless `without_android`), `ios` serving it for `apns`,
/// and the default token-in-node module `app`.
fn two_services(provider: &Arc<RecordingProvider>, without_android: bool) -> ModuleSet {
    let serving = |service| Registering {
        protocol: PROTOCOL,
        service,
        plausible_token: plausible,
    };
    let android = module("android", "google", provider, false).serving(serving("fcm"));
    let ios = module("ios", "apple", provider, false).serving(serving("apns"));
    let app = module("app", "google", provider, false);
    let mut modules = vec![(ios, false), (app, true)];
    if !without_android {
        modules.push((android, false));
    }
    ModuleSet::from_modules(modules)
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_stops_serving_one_p2_service_answers_wait_only_within_the_grace() {
    let provider = Arc::new(RecordingProvider::default());
    let mut h = Harness::with_modules(two_services(&provider, false), provider.clone());
    h.dispatcher
        .set_p2(Arc::new(P2Door::new(h.store.clone(), JID)));
    let (node, secret) = h.register(JULIET, TOKEN).await;
    // The FCM module is removed; APNS registrations are still served, so p2 is.
    let grace = Duration::from_secs(3600);
    let before = h.dispatcher.modules().load_full();
    let mut after = two_services(&provider, true);
    after.remember_retired(&before, grace);
    h.dispatcher.replace_modules(Arc::new(after));
    let reply = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(error_of(&reply), ("wait", "internal-server-error"));

    // Past `modules.retiredGrace` the removal was meant: answered like a module no
    // configuration names, so that the servers stop pushing.
    tokio::time::advance(grace).await;
    let reply = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"));
    assert!(h.provider.sent().is_empty());
}

#[tokio::test]
async fn a_new_store_answers_wait_for_nodes_it_lacks_until_the_grace_runs_out() {
    let provider = Arc::new(RecordingProvider::default());
    let grace = Duration::from_secs(3600);
    let modules = two_services(&provider, false).with_retired_grace(grace);
    let mut h = Harness::with_modules(modules, provider);
    h.dispatcher
        .set_p2(Arc::new(P2Door::new(h.store.clone(), JID)));
    // Made a minute ago: perhaps a `store.path` changed by mistake.
    h.store
        .made_at(Some(SystemTime::now() - Duration::from_secs(60)));
    let young = h.push(DOMAIN, "unknownNode1", "whatever").await;
    assert_eq!(error_of(&young), ("wait", "item-not-found"));
    h.store.made_at(Some(SystemTime::now() - grace));
    let old = h.push(DOMAIN, "unknownNode1", "whatever").await;
    assert_eq!(error_of(&old), ("cancel", "item-not-found"));
    assert!(h.provider.sent().is_empty());
}

#[tokio::test]
async fn a_failing_store_answers_wait_never_item_not_found() {
    let mut h = Harness::new(false);
    let (node, secret) = h.register(JULIET, TOKEN).await;
    h.store.fail(true);
    let pushed = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(error_of(&pushed), ("wait", "internal-server-error"));
    let command = h.register_command(JULIET, TOKEN).await;
    assert_eq!(error_of(&command), ("wait", "internal-server-error"));
    assert!(h.provider.sent().is_empty());
}

#[tokio::test]
async fn a_dead_token_removes_the_registration_and_registering_again_revives_it() {
    let mut h = Harness::new(false);
    let (node, secret) = h.register(JULIET, TOKEN).await;
    h.provider.unregister(TOKEN);
    let dead = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(error_of(&dead), ("cancel", "item-not-found"));
    assert!(h.store.all().is_empty(), "the registration is removed");
    let again = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(error_of(&again), ("cancel", "item-not-found"));
    assert_eq!(h.provider.sent().len(), 1);

    // The app registers the same token again: it is no longer answered from dead-token memory.
    let (node, secret) = h.register(JULIET, TOKEN).await;
    let revived = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(revived.kind(), Some("result"), "{}", revived.raw);
    assert_eq!(h.provider.sent().len(), 2);
}

#[tokio::test]
async fn a_registration_answered_from_dead_token_memory_is_removed_too() {
    let mut h = Harness::new(false);
    // One account, two device ids, one token: two registrations with one ratelimit and
    // dead-token key (token and account).
    let (first, first_secret) = h.register(JULIET, TOKEN).await;
    let fields = [("token", TOKEN), ("device-id", "another-device")];
    let reply = h.command(JULIET, "register-push-fcm", &fields).await;
    let (second, second_secret) = (form_value(&reply, "node"), form_value(&reply, "secret"));
    h.provider.unregister(TOKEN);
    let dead = h.push(DOMAIN, &first, &first_secret).await;
    assert_eq!(error_of(&dead), ("cancel", "item-not-found"));
    let known = h.push(DOMAIN, &second, &second_secret).await;
    assert_eq!(error_of(&known), ("cancel", "item-not-found"));
    assert_eq!(
        h.provider.sent().len(),
        1,
        "the second is answered from memory"
    );
    assert!(h.store.all().is_empty(), "both registrations are removed");
}

#[tokio::test(start_paused = true)]
async fn a_queued_push_to_a_token_replaced_meanwhile_leaves_the_registration_in_place() {
    let mut h = Harness::new(true);
    let (node, secret) = h.register(JULIET, TOKEN).await;
    let first = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(first.kind(), Some("result"), "{}", first.raw);
    // The next push waits for the end of the window, addressed to the token looked up now.
    let options = format!("<field var='secret'><value>{secret}</value></field>");
    let queued = h.send(|id| push_iq(id, DOMAIN, &node, &options));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Meanwhile the app registers its new token (same node and secret); the old one is dead.
    const NEW: &str = "cT7x9Qz1RkW3:APA91bNEW";
    assert_eq!(
        h.register(JULIET, NEW).await,
        (node.clone(), secret.clone())
    );
    h.provider.unregister(TOKEN);
    let window = Duration::from_secs(60);
    let reply = h.reply(window).await.expect("a reply");
    assert_eq!(reply.attr("id"), Some(queued.as_str()), "{}", reply.raw);
    assert_eq!(
        h.provider.sent().last().map(|n| n.token.as_str()),
        Some(TOKEN)
    );
    // Not `cancel`: the server would disable the registration that now holds a live token.
    assert_eq!(error_of(&reply).0, "wait");
    assert_eq!(h.store.all().len(), 1, "the registration is kept");
    assert_eq!(h.store.all()[0].token, NEW);
    let next = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(next.kind(), Some("result"), "{}", next.raw);
    assert_eq!(
        h.provider.sent().last().map(|n| n.token.as_str()),
        Some(NEW)
    );
}

#[tokio::test]
async fn accounts_sharing_a_token_do_not_share_a_ratelimit() {
    let mut h = Harness::new(true);
    let juliet = h.register(JULIET, TOKEN).await;
    let romeo = h.register(ROMEO, TOKEN).await;
    assert_ne!(juliet, romeo);
    for (node, secret) in [&juliet, &romeo] {
        let reply = h.push(DOMAIN, node, secret).await;
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    }
    let sent = h.provider.sent();
    assert_eq!(sent.len(), 2, "neither push waits for the other's window");
    let romeo_device = device_hash("romeo@capulet.example", DEVICE_ID);
    assert_eq!(sent[1].extra, [("account".to_owned(), romeo_device)]);
}

#[tokio::test]
async fn malformed_and_unknown_commands_get_their_errors() {
    let mut h = Harness::new(false);
    for (node, fields, expected) in [
        (
            "register-push-fcm",
            &[("device-id", DEVICE_ID)][..],
            ("modify", "bad-request"),
        ),
        (
            "register-push-fcm",
            &[("token", TOKEN)],
            ("modify", "bad-request"),
        ),
        (
            "register-push-fcm",
            &[("token", "has space"), ("device-id", DEVICE_ID)],
            ("modify", "bad-request"),
        ),
        (
            "register-push-fcm",
            &[
                ("token", TOKEN),
                ("device-id", DEVICE_ID),
                ("muc", "r@c.example/nick"),
            ],
            ("modify", "bad-request"),
        ),
        (
            "register-push-apns",
            &[("token", TOKEN), ("device-id", DEVICE_ID)],
            ("cancel", "item-not-found"),
        ),
        (
            "unregister-push-fcm",
            &[("device-id", DEVICE_ID)],
            ("cancel", "item-not-found"),
        ),
        ("do-something-else", &[], ("cancel", "item-not-found")),
    ] {
        let reply = h.command(JULIET, node, fields).await;
        assert_eq!(error_of(&reply), expected, "{node} {fields:?}");
    }
    assert!(h.store.all().is_empty());
}

#[tokio::test]
async fn a_register_from_a_jid_longer_than_any_jid_is_refused_before_the_store() {
    let mut h = Harness::new(false);
    // RFC 7622 allows 3071 bytes in all; a sender's bare JID is stored with its registration.
    let long = format!("{}@{DOMAIN}/phone", "j".repeat(3100));
    let reply = h.register_command(&long, TOKEN).await;
    assert_eq!(error_of(&reply), ("modify", "bad-request"));
    assert!(h.store.all().is_empty());
    // The longest JID still registers.
    let longest = format!("{}@{DOMAIN}/phone", "j".repeat(3070 - DOMAIN.len()));
    h.register(&longest, TOKEN).await;
    assert_eq!(h.store.all().len(), 1);
}

#[tokio::test]
async fn a_command_with_an_id_longer_than_a_push_may_carry_is_refused_before_the_store() {
    let mut h = Harness::new(false);
    let fields = [("token", TOKEN), ("device-id", DEVICE_ID)];
    let too_long = "i".repeat(MAX_ID_BYTES + 1);
    h.send(|_| command_iq(&too_long, JULIET, JID, "register-push-fcm", &fields));
    let reply = h.reply(Duration::from_secs(10)).await.expect("a reply");
    assert_eq!(reply.attr("id"), Some(too_long.as_str()));
    assert_eq!(error_of(&reply), ("modify", "bad-request"));
    assert!(h.store.all().is_empty());
    // The longest id a push may carry still registers.
    let longest = "i".repeat(MAX_ID_BYTES);
    h.send(|_| command_iq(&longest, JULIET, JID, "register-push-fcm", &fields));
    let reply = h.reply(Duration::from_secs(10)).await.expect("a reply");
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert_eq!(h.store.all().len(), 1);
}

#[tokio::test]
async fn unregister_completes_and_the_node_is_gone() {
    let mut h = Harness::new(false);
    let (node, secret) = h.register(JULIET, TOKEN).await;
    let reply = h
        .command(JULIET, "unregister-push-fcm", &[("device-id", DEVICE_ID)])
        .await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert!(reply.raw.contains("status='completed'"), "{}", reply.raw);
    let pushed = h.push(DOMAIN, &node, &secret).await;
    assert_eq!(error_of(&pushed), ("cancel", "item-not-found"));
}

#[tokio::test]
async fn commands_from_domains_not_served_are_forbidden() {
    let mut h = Harness::new(false);
    h.dispatcher.set_access(AccessSettings {
        allowed_domains: vec!["montague.example".to_owned()],
        ..AccessSettings::default()
    });
    let reply = h.register_command(JULIET, TOKEN).await;
    assert_eq!(error_of(&reply), ("auth", "forbidden"));
}

#[tokio::test]
async fn discovery_names_the_commands_feature_and_the_served_commands() {
    let mut h = Harness::new(false);
    let info = h.disco_info(JULIET).await;
    assert!(
        info.features
            .contains(&"http://jabber.org/protocol/commands".to_owned()),
        "{}",
        info.raw
    );
    assert!(info.features.contains(&"urn:xmpp:push:0".to_owned()));
    let items = h.command_items(JULIET).await;
    for node in ["register-push-fcm", "unregister-push-fcm"] {
        assert!(
            items
                .raw
                .contains(&format!("<item jid='{JID}' node='{node}'")),
            "{}",
            items.raw
        );
    }
    assert!(!items.raw.contains("apns"), "{}", items.raw);

    let mut plain = Harness::with(false, false);
    let info = plain.disco_info(DOMAIN).await;
    assert!(!info.raw.contains("protocol/commands"), "{}", info.raw);
}

#[tokio::test]
async fn commands_name_the_jid_they_reached_after_a_reload_renamed_the_component() {
    let mut h = Harness::new(false);
    // The door was made at start-up, when the component had another name; a reload changed
    // `component.componentHostname` and the link now serves `JID`.
    h.dispatcher
        .set_p2(Arc::new(P2Door::new(h.store.clone(), "old.example.org")));
    let reply = h.register_command(JULIET, TOKEN).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert_eq!(form_value(&reply, "jid"), JID);
    let items = h.command_items(JULIET).await;
    assert!(
        items
            .raw
            .contains(&format!("<item jid='{JID}' node='register-push-fcm'")),
        "{}",
        items.raw
    );
}

#[tokio::test]
async fn a_given_session_id_is_kept_cancel_is_answered_canceled_and_other_steps_refused() {
    let mut h = Harness::new(false);
    let form = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='token'><value>{TOKEN}</value>\
         </field><field var='device-id'><value>{DEVICE_ID}</value></field></x>"
    );
    // The register command with one more attribute on `<command>`.
    let register = |id: &str, attribute: &str| {
        format!(
            "<iq type='set' id='{id}' from='{JULIET}' to='{JID}'>\
             <command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' \
             {attribute}>{form}</command></iq>"
        )
    };
    let with_session = h.ask(|id| register(id, "sessionid='s-42'")).await;
    assert!(
        with_session.raw.contains("sessionid='s-42'"),
        "{}",
        with_session.raw
    );
    let cancel = h
        .ask(|id| register(id, "action='cancel' sessionid='s-43'"))
        .await;
    assert!(
        cancel.raw.contains("sessionid='s-43' status='canceled'/>"),
        "{}",
        cancel.raw
    );
    let next = h.ask(|id| register(id, "action='next'")).await;
    assert_eq!(error_of(&next), ("modify", "bad-request"));
}
