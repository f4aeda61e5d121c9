//! A dispatcher with a recording provider and a registration store in memory, driven stanza by
//! stanza: what the door tests through the dispatcher share.

use std::sync::Arc;
use std::time::Duration;

use fpush::component::{reply_channel, Inbound, ReplyReceiver};
use fpush::dispatcher::Dispatcher;
use fpush::metrics::{Metrics, ModuleMetrics};
use fpush::modules::{Module, ModuleSet};
use fpush::ratelimit::RatelimitConfig;
use fpush_testkit::xmpp::Stanza;

use super::forms::command_iq;
use super::{MemoryStore, RecordingProvider};

/// The component's JID.
pub const JID: &str = "push.example.org";

/// The dispatcher under test and what it talks to; the door is set by each test file.
pub struct Harness {
    pub dispatcher: Dispatcher,
    pub replies: ReplyReceiver,
    pub provider: Arc<RecordingProvider>,
    pub store: Arc<MemoryStore>,
    next_id: usize,
}

/// A module `id` of type `platform` on `provider`, its ratelimit on or off.
pub fn module(
    id: &str,
    platform: &'static str,
    provider: &Arc<RecordingProvider>,
    ratelimit: bool,
) -> Module {
    let config = RatelimitConfig {
        enabled: ratelimit,
        window: Duration::from_secs(20),
        cleanup_interval: Duration::from_secs(300),
    };
    Module::new(
        id,
        platform,
        provider.clone(),
        config,
        Duration::from_secs(3600),
        ModuleMetrics::detached(),
    )
}

impl Harness {
    /// A dispatcher serving `modules` (built on `provider`) and an empty store for its door.
    pub fn with_modules(modules: ModuleSet, provider: Arc<RecordingProvider>) -> Self {
        let (sender, replies) = reply_channel();
        let dispatcher = Dispatcher::new(Arc::new(modules), 100, sender, Metrics::new());
        Harness {
            dispatcher,
            replies,
            provider,
            store: Arc::new(MemoryStore::default()),
            next_id: 0,
        }
    }

    /// Hands a stanza built around a fresh id to the dispatcher; answers the id.
    pub fn send(&mut self, stanza: impl FnOnce(&str) -> String) -> String {
        self.next_id += 1;
        let id = format!("q{}", self.next_id);
        let xml = stanza(&id);
        self.dispatcher
            .handle(Inbound::Stanza(bytes::Bytes::from(xml.into_bytes())));
        id
    }

    /// The next reply, if one comes `within`.
    pub async fn reply(&mut self, within: Duration) -> Option<Stanza> {
        let bytes = tokio::time::timeout(within, self.replies.recv())
            .await
            .ok()??;
        Some(Stanza::parse(String::from_utf8(bytes).unwrap()).unwrap())
    }

    /// Hands a stanza built around a fresh id to the dispatcher and waits for its reply.
    pub async fn ask(&mut self, stanza: impl FnOnce(&str) -> String) -> Stanza {
        let id = self.send(stanza);
        let reply = self.reply(Duration::from_secs(10)).await.expect("a reply");
        assert_eq!(reply.attr("id"), Some(id.as_str()), "{}", reply.raw);
        reply
    }

    /// An ad-hoc command from `from` with `fields` in its form.
    pub async fn command(&mut self, from: &str, node: &str, fields: &[(&str, &str)]) -> Stanza {
        self.ask(|id| command_iq(id, from, JID, node, fields)).await
    }

    /// disco#info asked by `from`.
    pub async fn disco_info(&mut self, from: &str) -> Stanza {
        self.ask(|id| {
            format!(
                "<iq type='get' id='{id}' from='{from}' to='{JID}'>\
                 <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            )
        })
        .await
    }

    /// The command list (disco#items of the commands node) asked by `from`.
    pub async fn command_items(&mut self, from: &str) -> Stanza {
        self.ask(|id| {
            format!(
                "<iq type='get' id='{id}' from='{from}' to='{JID}'>\
                 <query xmlns='http://jabber.org/protocol/disco#items' \
                 node='http://jabber.org/protocol/commands'/></iq>"
            )
        })
        .await
    }
}

/// An error reply's type and condition (the reply must be an error).
pub fn error_of(reply: &Stanza) -> (&str, &str) {
    assert_eq!(reply.kind(), Some("error"), "{}", reply.raw);
    (
        reply.error_type.as_deref().unwrap_or_default(),
        reply.error_condition.as_deref().unwrap_or_default(),
    )
}
