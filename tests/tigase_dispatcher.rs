//! The tigase door through the dispatcher, with a recording provider and a registration store
//! in memory: discovery, register-device / unregister-device as the Siskin-family apps send
//! them, and every push rule (plain and encrypted payloads, VoIP to the second token, the
//! priority element, what skips the ratelimit queue, dead tokens) as the provider sees it.

mod p2_support;

use std::sync::Arc;
use std::time::Duration;

use fpush::doors::tigase::{TigaseDoor, PROTOCOL};
use fpush::modules::{ModuleSet, Registering};
use fpush_testkit::xmpp::Stanza;
use fpush_traits::{Priority, PushKind};
use p2_support::dispatcher::{error_of, module, Harness, JID};
use p2_support::RecordingProvider;

const PROVIDER: &str = "snikket:apns:1";
const JULIET: &str = "juliet@capulet.example/iphone";
const JULIET_BARE: &str = "juliet@capulet.example";
const NURSE: &str = "nurse@capulet.example/iphone";
const DOMAIN: &str = "capulet.example";
const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const VOIP: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

fn hex64(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Harness {
    /// An `ios` module serving tigase for [`PROVIDER`] with the ratelimit on, and no default
    /// module.
    fn new() -> Self {
        let provider = Arc::new(RecordingProvider::default());
        let ios = module("ios", "apple", &provider, true)
            .serving(Registering {
                protocol: PROTOCOL,
                service: "apns",
                plausible_token: hex64,
            })
            .with_provider(PROVIDER);
        let modules = ModuleSet::from_modules(vec![(ios, false)]);
        let h = Harness::with_modules(modules, provider);
        h.dispatcher
            .set_tigase(Arc::new(TigaseDoor::new(h.store.clone())));
        h
    }

    /// Registers `from`'s device (with a VoIP token when given); answers the node.
    async fn register(&mut self, from: &str, voip: Option<&str>) -> String {
        let mut fields = vec![("provider", PROVIDER), ("device-token", TOKEN)];
        if let Some(voip) = voip {
            fields.push(("device-second-token", voip));
        }
        let reply = self.command(from, "register-device", &fields).await;
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
        form_values(&reply, "node").remove(0)
    }

    fn push_stanza(id: &str, node: &str, notification: &str) -> String {
        format!(
            "<iq type='set' id='{id}' from='{DOMAIN}' to='{JID}'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item>\
             <notification xmlns='urn:xmpp:push:0'>{notification}</notification></item>\
             </publish></pubsub></iq>"
        )
    }

    async fn push(&mut self, node: &str, notification: &str) -> Stanza {
        self.ask(|id| Self::push_stanza(id, node, notification))
            .await
    }
}

/// A summary form as Prosody sends it.
fn summary(count: &str, sender: &str, body: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='form'><field var='FORM_TYPE'>\
         <value>urn:xmpp:push:summary</value></field>\
         <field var='message-count'><value>{count}</value></field>\
         <field var='last-message-sender'><value>{sender}</value></field>\
         <field var='last-message-body'><value>{body}</value></field></x>"
    )
}

fn encrypted(data: &str, attributes: &str) -> String {
    format!("<encrypted xmlns='tigase:push:encrypt:0' {attributes}>{data}</encrypted>")
}

/// Every value of field `var` in a reply's form.
fn form_values(reply: &Stanza, var: &str) -> Vec<String> {
    let open = format!("<field var='{var}'");
    let start = reply
        .raw
        .find(&open)
        .unwrap_or_else(|| panic!("no {var}: {}", reply.raw));
    let end = start + reply.raw[start..].find("</field>").unwrap();
    reply.raw[start..end]
        .split("<value>")
        .skip(1)
        .map(|value| value.split("</value>").next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn disco_names_the_provider_id_and_lists_the_commands() {
    let mut h = Harness::new();
    let info = h.disco_info(JULIET).await;
    for part in [
        "<identity category='pubsub' type='push'/>",
        "<feature var='urn:xmpp:push:0'/>",
        "<feature var='http://jabber.org/protocol/commands'/>",
        "<feature var='snikket:apns:1'/>",
    ] {
        assert!(info.raw.contains(part), "{part}: {}", info.raw);
    }
    let items = h.command_items(JULIET).await;
    assert!(
        items.raw.contains("node='register-device'"),
        "{}",
        items.raw
    );
    assert!(
        items.raw.contains("node='unregister-device'"),
        "{}",
        items.raw
    );
}

#[tokio::test]
async fn register_device_answers_a_stable_node_the_features_and_the_payload_size() {
    let mut h = Harness::new();
    let fields = [("provider", PROVIDER), ("device-token", TOKEN)];
    let reply = h.command(JULIET, "register-device", &fields).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert!(reply.raw.contains("status='completed'"), "{}", reply.raw);
    assert!(
        reply
            .raw
            .contains("<field var='features' type='text-multi'>"),
        "{}",
        reply.raw
    );
    assert_eq!(
        form_values(&reply, "features"),
        [
            "tigase:push:encrypt:0",
            "tigase:push:encrypt:aes-128-gcm",
            "tigase:push:priority:0"
        ]
    );
    assert_eq!(form_values(&reply, "max-payload-size"), ["2048"]);
    let node = form_values(&reply, "node").remove(0);
    // Same account, provider and token: the same node; another account: another one.
    assert_eq!(h.register(JULIET, Some(VOIP)).await, node);
    assert_ne!(h.register(NURSE, None).await, node);
    let stored = h.store.all();
    let juliet = stored.iter().find(|r| r.node == node).unwrap();
    assert_eq!(juliet.key.service, PROVIDER);
    assert_eq!(juliet.key.device, JULIET_BARE);
    assert_eq!(juliet.key.channel, TOKEN);
    assert_eq!(juliet.second_token.as_deref(), Some(VOIP));
    assert_eq!(juliet.domain, DOMAIN);
}

#[tokio::test]
async fn bad_register_commands_are_refused_before_the_store() {
    let mut h = Harness::new();
    let unknown = [("provider", "other:apns:1"), ("device-token", TOKEN)];
    let reply = h.command(JULIET, "register-device", &unknown).await;
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"));
    for fields in [
        vec![("device-token", TOKEN)],
        vec![("provider", PROVIDER)],
        vec![("provider", PROVIDER), ("device-token", "not hex")],
        vec![
            ("provider", PROVIDER),
            ("device-token", TOKEN),
            ("device-second-token", "nope"),
        ],
    ] {
        let reply = h.command(JULIET, "register-device", &fields).await;
        assert_eq!(error_of(&reply), ("modify", "bad-request"), "{fields:?}");
    }
    assert!(h.store.all().is_empty());
}

#[tokio::test]
async fn a_plain_push_carries_the_account_and_the_summary_keys() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    let reply = h
        .push(&node, &summary("3", "romeo@montague.example", "Hi"))
        .await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let sent = h.provider.sent();
    assert_eq!(sent.len(), 1);
    let push = &sent[0];
    assert_eq!(push.token, TOKEN);
    assert_eq!(push.account.as_deref(), Some(JULIET_BARE));
    assert_eq!(push.kind, Some(PushKind::Alert));
    assert_eq!(push.priority, Some(Priority::Normal));
    assert_eq!(
        push.extra,
        [
            ("sender".to_owned(), "romeo@montague.example".to_owned()),
            ("body".to_owned(), "Hi".to_owned())
        ]
    );
    assert_eq!(push.extra_numbers, [("unread-messages".to_owned(), 3)]);
    assert_eq!(push.encrypted, None);
}

#[tokio::test]
async fn a_reload_that_stops_serving_tigase_answers_its_pushes_wait_within_the_grace() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    // The `registration` block is dropped from the settings by mistake: no module serves
    // tigase any more.
    let before = h.dispatcher.modules().load_full();
    let ios = module("ios", "apple", &h.provider, true);
    let mut after = ModuleSet::from_modules(vec![(ios, false)]);
    after.remember_retired(&before, Duration::from_secs(3600));
    h.dispatcher.replace_modules(Arc::new(after));

    // `cancel` would make the XMPP server drop the registration.
    let reply = h
        .push(&node, &summary("1", "romeo@montague.example", "Hi"))
        .await;
    assert_eq!(error_of(&reply), ("wait", "internal-server-error"));
    assert!(h.provider.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_provider_a_reload_stopped_serving_is_answered_wait_only_within_the_grace() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    // The module now serves another provider id; tigase as a whole is still served.
    let before = h.dispatcher.modules().load_full();
    let ios = module("ios", "apple", &h.provider, true)
        .serving(Registering {
            protocol: PROTOCOL,
            service: "apns",
            plausible_token: hex64,
        })
        .with_provider("other:apns:1");
    let mut after = ModuleSet::from_modules(vec![(ios, false)]);
    let grace = Duration::from_secs(3600);
    after.remember_retired(&before, grace);
    h.dispatcher.replace_modules(Arc::new(after));
    let push = summary("1", "romeo@montague.example", "Hi");
    assert_eq!(
        error_of(&h.push(&node, &push).await),
        ("wait", "internal-server-error")
    );

    // Past `modules.retiredGrace` the change was meant: answered like a module no
    // configuration names, so that the servers stop pushing.
    tokio::time::advance(grace).await;
    assert_eq!(
        error_of(&h.push(&node, &push).await),
        ("cancel", "item-not-found")
    );
    assert!(h.provider.sent().is_empty());
}

#[tokio::test]
async fn a_push_without_content_is_a_background_push() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    let reply = h.push(&node, "").await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let push = &h.provider.sent()[0];
    assert_eq!(push.kind, Some(PushKind::Background));
    assert_eq!(push.priority, Some(Priority::Normal));
    assert!(push.extra.is_empty() && push.encrypted.is_none());
}

#[tokio::test]
async fn an_encrypted_push_passes_the_trimmed_ciphertext_and_iv_unchanged() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    let body = encrypted("\n   c2VjcmV0IGJ5dGVz\n  ", "iv=' aXYxMjM0NTY3ODkw '");
    let reply = h.push(&node, &body).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let push = &h.provider.sent()[0];
    let sealed = push.encrypted.as_ref().expect("encrypted");
    assert_eq!(sealed.data, "c2VjcmV0IGJ5dGVz");
    assert_eq!(
        sealed.params,
        [("iv".to_owned(), "aXYxMjM0NTY3ODkw".to_owned())]
    );
    assert_eq!(push.kind, Some(PushKind::Alert));
    assert_eq!(push.account.as_deref(), Some(JULIET_BARE));
    assert!(push.extra.is_empty());
}

#[tokio::test]
async fn an_unusable_or_oversized_encrypted_part_becomes_a_plain_alert() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    let huge = "QUFB".repeat(1000);
    // `high`, so that the three are not held by the ratelimit queue.
    let high = "<priority xmlns='tigase:push:priority:0'>high</priority>";
    for body in [
        encrypted("c2Vj cmV0", "iv='aXYx'"),
        encrypted("c2VjcmV0", ""),
        encrypted(&huge, "iv='aXYx'"),
    ] {
        let reply = h.push(&node, &format!("{body}{high}")).await;
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    }
    let sent = h.provider.sent();
    assert_eq!(sent.len(), 3);
    for push in sent {
        assert_eq!(push.encrypted, None);
        assert_eq!(push.kind, Some(PushKind::Alert));
    }
}

#[tokio::test]
async fn a_voip_push_goes_to_the_second_token_at_once_every_time() {
    let mut h = Harness::new();
    let node = h.register(JULIET, Some(VOIP)).await;
    let call = encrypted("Y2FsbA==", "iv='aXYx' type='voip'");
    for _ in 0..3 {
        // Within one ratelimit window: a call is never held.
        let reply = h.push(&node, &call).await;
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    }
    let sent = h.provider.sent();
    assert_eq!(sent.len(), 3);
    for push in sent {
        assert_eq!(push.kind, Some(PushKind::Voip));
        assert_eq!(push.voip_token.as_deref(), Some(VOIP));
        assert_eq!(push.priority, Some(Priority::High));
        assert_eq!(push.encrypted.map(|e| e.data).as_deref(), Some("Y2FsbA=="));
    }
    assert_eq!(h.provider.asked(), [VOIP; 3]);
}

#[tokio::test]
async fn a_voip_push_without_second_token_is_an_alert_to_the_device_token() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    let reply = h
        .push(&node, &encrypted("Y2FsbA==", "iv='aXYx' type='voip'"))
        .await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let push = &h.provider.sent()[0];
    assert_eq!(push.kind, Some(PushKind::Alert));
    assert_eq!(push.voip_token, None);
    assert_eq!(push.token, TOKEN);
    assert_eq!(push.priority, Some(Priority::High));
    assert_eq!(h.provider.asked(), [TOKEN]);
}

#[tokio::test]
async fn a_call_sent_as_an_alert_is_answered_for_the_device_token() {
    let mut h = Harness::new();
    let node = h.register(JULIET, Some(VOIP)).await;
    // As the APNS module without a PushKit certificate: the call goes to the device token.
    h.provider.send_calls_as_alerts(true);
    h.provider.unregister(TOKEN);
    let call = encrypted("Y2FsbA==", "iv='aXYx' type='voip'");
    let reply = h.push(&node, &call).await;
    // The device token is dead: the registration goes, its untried PushKit token with it.
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"));
    assert!(h.store.all().is_empty());
    assert_eq!(h.provider.asked(), [TOKEN]);
}

#[tokio::test]
async fn high_priority_pushes_skip_the_queue_and_normal_ones_wait() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    let plain = summary("1", "romeo@montague.example", "Hi");
    // The first push opens the ratelimit window.
    let first = h.push(&node, &plain).await;
    assert_eq!(first.kind(), Some("result"), "{}", first.raw);
    let high = "<priority xmlns='tigase:push:priority:0'>high</priority>";
    let message = format!("{plain}{high}");
    for _ in 0..2 {
        let reply = h.push(&node, &message).await;
        assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    }
    let sent = h.provider.sent();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].priority, Some(Priority::Normal));
    assert!(sent[1..].iter().all(|p| p.priority == Some(Priority::High)));
    // Another normal push within the window is held by the ratelimit queue: no reply yet.
    h.send(|id| Harness::push_stanza(id, &node, &plain));
    assert!(h.reply(Duration::from_millis(300)).await.is_none());
    assert_eq!(h.provider.sent().len(), 3);
}

#[tokio::test]
async fn a_dead_device_token_deletes_the_registration_and_is_item_not_found() {
    let mut h = Harness::new();
    let node = h.register(JULIET, Some(VOIP)).await;
    h.provider.unregister(TOKEN);
    let reply = h.push(&node, &summary("1", "r@m", "Hi")).await;
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"));
    assert!(h.store.all().is_empty());
    let again = h.push(&node, "").await;
    assert_eq!(error_of(&again), ("cancel", "item-not-found"));
    assert_eq!(h.provider.sent().len(), 1);
}

#[tokio::test]
async fn a_call_to_a_registration_whose_device_token_is_known_dead_is_not_sent() {
    let mut h = Harness::new();
    let node = h.register(JULIET, Some(VOIP)).await;
    // As the APNS module without a PushKit certificate: calls go to the device token.
    h.provider.send_calls_as_alerts(true);
    h.provider.unregister(TOKEN);
    // The device token dies while the store cannot remove the registration.
    h.store.fail_removals(true);
    let reply = h.push(&node, &summary("1", "r@m", "Hi")).await;
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"));
    assert_eq!(h.store.all().len(), 1);
    // A call is answered from the dead-token memory, as a message push would be.
    let call = encrypted("Y2FsbA==", "iv='aXYx' type='voip'");
    let reply = h.push(&node, &call).await;
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"));
    assert_eq!(h.provider.asked(), [TOKEN]);
    // Once the store works again, the next call removes the registration, still unsent.
    h.store.fail_removals(false);
    let reply = h.push(&node, &call).await;
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"));
    assert!(h.store.all().is_empty());
    assert_eq!(h.provider.asked(), [TOKEN]);
}

#[tokio::test]
async fn a_dead_voip_token_clears_only_the_second_token() {
    let mut h = Harness::new();
    let node = h.register(JULIET, Some(VOIP)).await;
    h.provider.unregister(VOIP);
    let call = encrypted("Y2FsbA==", "iv='aXYx' type='voip'");
    let reply = h.push(&node, &call).await;
    // Never `cancel`: the device token lives on.
    assert_eq!(error_of(&reply).0, "wait");
    let stored = h.store.all();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].second_token, None);
    // The next call falls back to an alert to the device token.
    let reply = h.push(&node, &call).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let last = h.provider.sent().pop().unwrap();
    assert_eq!((last.kind, last.voip_token), (Some(PushKind::Alert), None));
    assert_eq!(h.provider.asked(), [VOIP, TOKEN]);
}

#[tokio::test]
async fn unregister_device_removes_only_that_accounts_registration() {
    let mut h = Harness::new();
    let juliet = h.register(JULIET, None).await;
    let nurse = h.register(NURSE, None).await;
    let fields = [("provider", PROVIDER), ("device-token", TOKEN)];
    let reply = h.command(JULIET, "unregister-device", &fields).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert!(reply.raw.contains("status='completed'"), "{}", reply.raw);
    let gone = h.push(&juliet, &summary("1", "r@m", "Hi")).await;
    assert_eq!(error_of(&gone), ("cancel", "item-not-found"));
    let kept = h.push(&nurse, &summary("1", "r@m", "Hi")).await;
    assert_eq!(kept.kind(), Some("result"), "{}", kept.raw);
    let again = h.command(JULIET, "unregister-device", &fields).await;
    assert_eq!(error_of(&again), ("cancel", "item-not-found"));
}

#[tokio::test]
async fn a_store_failure_is_answered_wait() {
    let mut h = Harness::new();
    let node = h.register(JULIET, None).await;
    h.store.fail(true);
    let reply = h.push(&node, "").await;
    assert_eq!(error_of(&reply), ("wait", "internal-server-error"));
    let fields = [("provider", PROVIDER), ("device-token", TOKEN)];
    let reply = h.command(JULIET, "register-device", &fields).await;
    assert_eq!(error_of(&reply).0, "wait");
}

#[tokio::test]
async fn without_an_open_store_a_default_modules_push_still_goes_out() {
    // A reload can add a tigase module while no registration store is open (the store opens at
    // start-up only): a push whose node is a device token is still the default module's.
    let provider = Arc::new(RecordingProvider::default());
    let ios = module("ios", "apple", &provider, true)
        .serving(Registering {
            protocol: PROTOCOL,
            service: "apns",
            plausible_token: hex64,
        })
        .with_provider(PROVIDER);
    let classic = module("classic", "apple", &provider, false);
    let modules = ModuleSet::from_modules(vec![(ios, false), (classic, true)]);
    let mut h = Harness::with_modules(modules, provider);
    let reply = h
        .push(TOKEN, &summary("1", "romeo@montague.example", "Hi"))
        .await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let sent = h.provider.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].module_id.as_str(), sent[0].token.as_str()),
        ("classic", TOKEN)
    );
    // A node cannot be looked up now: `wait`, never `item-not-found` for a live registration.
    let reply = h.push("node0", "").await;
    assert_eq!(error_of(&reply), ("wait", "internal-server-error"));
    assert_eq!(h.provider.sent().len(), 1);
}

#[tokio::test]
async fn a_call_whose_encrypted_part_cannot_go_out_is_a_plain_alert() {
    let mut h = Harness::new();
    let node = h.register(JULIET, Some(VOIP)).await;
    // Not base64: the call's details cannot go out, so a plain alert goes to the device token
    // (a PushKit push without them would tell the app of no call).
    let call = encrypted("Y2Fs bA==", "iv='aXYx' type='voip'");
    let reply = h.push(&node, &call).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let push = &h.provider.sent()[0];
    assert_eq!(push.kind, Some(PushKind::Alert));
    assert_eq!(
        (push.token.as_str(), push.voip_token.as_deref()),
        (TOKEN, None)
    );
    assert_eq!(push.priority, Some(Priority::High));
    assert_eq!(push.encrypted, None);
}
