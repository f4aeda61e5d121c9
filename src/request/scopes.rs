//! XML namespace scopes for the stanza parser, reduced to what it matches on.
//!
//! A general resolver copies every declared namespace and walks each element's attributes
//! looking for declarations. The parser only ever asks "is this element in namespace X?" for
//! a handful of X, so a declaration is classified once, when it is read, into an [`Ns`], and an
//! element's attributes are only walked when its start tag mentions `xmlns` at all (in a push
//! IQ, four elements out of twenty do).

use memchr::memchr_iter;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::BytesStart;
use quick_xml::name::{PrefixDeclaration, QName};

use super::attributes::attributes;
use super::tag::Tag;
use super::Malformed;
use crate::markup::split_name;

/// XEP-0060 publish-subscribe: the payload of every push IQ.
const NS_PUBSUB: &[u8] = b"http://jabber.org/protocol/pubsub";
/// XEP-0004 data forms: the summary form and the publish-options form.
const NS_DATA_FORMS: &[u8] = b"jabber:x:data";
/// XEP-0030 service discovery, info query.
const NS_DISCO_INFO: &[u8] = b"http://jabber.org/protocol/disco#info";
/// XEP-0030 service discovery, items query (the list of ad-hoc commands).
const NS_DISCO_ITEMS: &[u8] = b"http://jabber.org/protocol/disco#items";
/// XEP-0050 ad-hoc commands.
pub(super) const NS_COMMANDS: &[u8] = b"http://jabber.org/protocol/commands";
/// XEP-0199 XMPP ping.
const NS_PING: &[u8] = b"urn:xmpp:ping";
/// The Tigase push extensions inside a notification (encrypted payload, priority).
const NS_TIGASE_ENCRYPT: &[u8] = b"tigase:push:encrypt:0";
const NS_TIGASE_PRIORITY: &[u8] = b"tigase:push:priority:0";
/// Where a Tigase server names the sender of a group chat message (`<groupchat><nickname>`).
const NS_TIGASE_MUC_OFFLINE: &[u8] = b"http://tigase.org/protocol/muc#offline";
/// The namespaces the `xml` and `xmlns` prefixes are bound to; nothing else may use them.
const NS_XML: &[u8] = b"http://www.w3.org/XML/1998/namespace";
const NS_XMLNS: &[u8] = b"http://www.w3.org/2000/xmlns/";

/// The namespace of an element, as far as the parser cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ns {
    /// No namespace: none declared, or an unknown prefix.
    Unbound,
    Pubsub,
    DataForms,
    DiscoInfo,
    DiscoItems,
    Commands,
    Ping,
    TigaseEncrypt,
    TigasePriority,
    TigaseMucOffline,
    /// Any namespace not matched anywhere in the parser.
    Other,
}

impl Ns {
    fn of(uri: &[u8]) -> Self {
        match uri {
            b"" => Ns::Unbound,
            NS_PUBSUB => Ns::Pubsub,
            NS_DATA_FORMS => Ns::DataForms,
            NS_DISCO_INFO => Ns::DiscoInfo,
            NS_DISCO_ITEMS => Ns::DiscoItems,
            NS_COMMANDS => Ns::Commands,
            NS_PING => Ns::Ping,
            NS_TIGASE_ENCRYPT => Ns::TigaseEncrypt,
            NS_TIGASE_PRIORITY => Ns::TigasePriority,
            NS_TIGASE_MUC_OFFLINE => Ns::TigaseMucOffline,
            _ => Ns::Other,
        }
    }
}

/// Declarations in force at once, at most. Servers declare a handful per stanza; every element
/// name is resolved by a walk back over those in force, so thousands of them (one start tag can
/// hold as many as the stanza size allows) would make each element of the stanza cost as much.
const MAX_BINDINGS: usize = 64;

/// One declaration: `xmlns='…'` (no prefix) or `xmlns:prefix='…'`, made at `level`.
struct Binding {
    level: u32,
    /// Prefixed declarations are rare in stanzas, so owning the prefix costs nothing in practice.
    prefix: Option<Box<[u8]>>,
    ns: Ns,
}

/// A position of [`Scopes`], see [`Scopes::mark`].
#[derive(Clone, Copy)]
pub(super) struct ScopeMark {
    level: u32,
    bindings: usize,
}

/// The declarations in force at the current element. Call [`Scopes::enter`] for every start
/// tag (and empty element) and [`Scopes::leave`] for every end (and right after an empty one).
#[derive(Default)]
pub(super) struct Scopes {
    level: u32,
    bindings: Vec<Binding>,
}

impl Scopes {
    /// Opens an element: records its declarations and returns its namespace.
    pub(super) fn enter(&mut self, start: &BytesStart<'_>) -> Result<Ns, Malformed> {
        self.level += 1;
        if mentions_xmlns(start.attributes_raw()) {
            self.declare(start)?;
        }
        Ok(self.resolve(start.name()))
    }

    /// [`Scopes::enter`] for a tag read in one pass: its attributes are only looked at when a
    /// key starts with `xmlns`, and its name was split when it was read.
    pub(super) fn enter_tag(&mut self, tag: &Tag<'_>) -> Result<Ns, Malformed> {
        self.level += 1;
        if tag.declares() {
            for &(key, value) in tag.attributes() {
                self.bind(QName(key), value.as_bytes())?;
            }
        }
        Ok(self.resolve_prefix(tag.prefix()))
    }

    /// Where the scopes stand now, to [`Scopes::reset`] to after a walk that was abandoned.
    pub(super) fn mark(&self) -> ScopeMark {
        ScopeMark {
            level: self.level,
            bindings: self.bindings.len(),
        }
    }

    /// Back to `mark`, taken at this level or an outer one.
    pub(super) fn reset(&mut self, mark: ScopeMark) {
        self.level = mark.level;
        self.bindings.truncate(mark.bindings);
    }

    /// Closes the innermost open element, dropping its declarations.
    pub(super) fn leave(&mut self) {
        while self.bindings.last().is_some_and(|b| b.level >= self.level) {
            self.bindings.pop();
        }
        self.level = self.level.saturating_sub(1);
    }

    /// Reads the namespace declarations among an element's attributes. Like the XML namespaces
    /// recommendation, rebinding `xml` or `xmlns` (or binding another prefix to their
    /// namespaces) makes the stanza malformed, and so here do more than [`MAX_BINDINGS`] in
    /// force at once; the scan stops at the first broken attribute, which the field readers
    /// report if it matters.
    fn declare(&mut self, start: &BytesStart<'_>) -> Result<(), Malformed> {
        for attr in attributes(start) {
            let Ok(Attribute { key, value }) = attr else {
                break;
            };
            self.bind(key, &value)?;
        }
        Ok(())
    }

    /// Records the attribute `key='value'` if it is a namespace declaration (see
    /// [`Scopes::declare`]).
    fn bind(&mut self, key: QName<'_>, value: &[u8]) -> Result<(), Malformed> {
        let prefix = match key.as_namespace_binding() {
            None => return Ok(()),
            Some(PrefixDeclaration::Default) => None,
            Some(PrefixDeclaration::Named(b"xml")) if value == NS_XML => return Ok(()),
            Some(PrefixDeclaration::Named(b"xml" | b"xmlns")) => return Err(Malformed),
            Some(PrefixDeclaration::Named(_)) if matches!(value, NS_XML | NS_XMLNS) => {
                return Err(Malformed)
            }
            Some(PrefixDeclaration::Named(prefix)) => Some(Box::from(prefix)),
        };
        if self.bindings.len() == MAX_BINDINGS {
            return Err(Malformed);
        }
        self.bindings.push(Binding {
            level: self.level,
            prefix,
            ns: Ns::of(value),
        });
        Ok(())
    }

    /// The namespace of an element name: the innermost binding of its prefix, or of the
    /// default namespace when it has none.
    fn resolve(&self, name: QName<'_>) -> Ns {
        self.resolve_prefix(split_name(name.into_inner()).0)
    }

    /// The innermost binding of `prefix` (of the default namespace for `None`).
    fn resolve_prefix(&self, prefix: Option<&[u8]>) -> Ns {
        self.bindings
            .iter()
            .rev()
            .find(|b| b.prefix.as_deref() == prefix)
            .map_or(Ns::Unbound, |b| b.ns)
    }
}

/// Whether `xmlns` occurs in an element's attribute bytes. Searching for its first byte beats
/// a substring search on the few dozen bytes of a typical start tag.
fn mentions_xmlns(attributes: &[u8]) -> bool {
    memchr_iter(b'x', attributes).any(|at| attributes[at..].starts_with(b"xmlns"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enters every start tag of `xml` in order, returning each element's namespace.
    fn namespaces(xml: &str) -> Vec<Ns> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut scopes = Scopes::default();
        let mut seen = Vec::new();
        loop {
            match reader.read_event().unwrap() {
                quick_xml::events::Event::Start(start) => {
                    seen.push(scopes.enter(&start).unwrap());
                }
                quick_xml::events::Event::Empty(start) => {
                    seen.push(scopes.enter(&start).unwrap());
                    scopes.leave();
                }
                quick_xml::events::Event::End(_) => scopes.leave(),
                quick_xml::events::Event::Eof => return seen,
                _ => {}
            }
        }
    }

    #[test]
    fn default_namespace_is_inherited_until_its_element_closes() {
        let seen = namespaces(
            "<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish/></pubsub>\
             <publish/></iq>",
        );
        assert_eq!(seen, [Ns::Unbound, Ns::Pubsub, Ns::Pubsub, Ns::Unbound]);
    }

    #[test]
    fn prefixes_resolve_to_the_innermost_declaration() {
        let seen = namespaces(
            "<iq xmlns:p='http://jabber.org/protocol/pubsub'><p:pubsub>\
             <p:x xmlns:p='jabber:x:data'/><p:publish/><q:publish/></p:pubsub></iq>",
        );
        assert_eq!(
            seen,
            [
                Ns::Unbound,
                Ns::Pubsub,
                Ns::DataForms,
                Ns::Pubsub,
                Ns::Unbound
            ]
        );
    }

    #[test]
    fn declarations_are_found_anywhere_in_a_start_tag() {
        assert!(mentions_xmlns(b" xmlns='a'"));
        assert!(mentions_xmlns(b" x='xx' y:xmlns:p='b'"));
        assert!(!mentions_xmlns(b" x='xmln' var='xml'"));
        assert!(!mentions_xmlns(b""));
    }

    #[test]
    fn an_empty_default_namespace_unbinds() {
        let seen = namespaces("<a xmlns='urn:xmpp:ping'><b xmlns=''/><c/></a>");
        assert_eq!(seen, [Ns::Ping, Ns::Unbound, Ns::Ping]);
    }

    #[test]
    fn rebinding_reserved_prefixes_is_malformed() {
        let mut scopes = Scopes::default();
        for tag in [
            "x xmlns:xmlns='urn:a'",
            "x xmlns:xml='urn:a'",
            "x xmlns:p='http://www.w3.org/2000/xmlns/'",
        ] {
            assert!(
                scopes.enter(&BytesStart::from_content(tag, 1)).is_err(),
                "{tag}"
            );
        }
        let fine =
            BytesStart::from_content("x xmlns:xml='http://www.w3.org/XML/1998/namespace'", 1);
        assert_eq!(scopes.enter(&fine).ok(), Some(Ns::Unbound));
    }
}
