//! Stanza parsing and reply building on the IQs real servers send and on the shapes they must
//! never crash us with.

mod common;

use common::fixture_bytes;
use fpush::request::{
    parse, parse_oversized, write_reply, Condition, ErrorType, IqHeader, PushRequest, Reply,
    Request,
};
use fpush_traits::PushSummary;
use quick_xml::events::Event;
use quick_xml::Reader;

/// Strips the newline editors and capture tools leave after the stanza.
fn stanza(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn header(id: &str) -> IqHeader {
    IqHeader {
        id: id.to_owned(),
        from: "localhost".to_owned(),
        to: "push.localhost".to_owned(),
    }
}

/// A push IQ with `payload` inside `<pubsub>`.
fn push_iq(pubsub_inner: &str) -> String {
    format!(
        "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'>{pubsub_inner}</pubsub></iq>"
    )
}

fn expect_push(request: Request) -> (IqHeader, PushRequest) {
    match request {
        Request::Push { iq, push } => (iq, push),
        other => panic!("expected a push, got {other:?}"),
    }
}

fn expect_invalid(request: Request) -> String {
    match request {
        Request::InvalidPush { iq, reason } => {
            assert_eq!(iq, header("p1"));
            reason
        }
        other => panic!("expected an invalid push, got {other:?}"),
    }
}

#[test]
fn prosody_push_iq_gives_token_module_options_and_summary() {
    let bytes = fixture_bytes("prosody-0.12-push-iq.xml");
    let (iq, push) = expect_push(parse(stanza(&bytes)));
    assert_eq!(
        iq,
        header("8f84b1020e2738b18450418b60b993f738a893fb57411baaead093cbb5f5a007")
    );
    assert_eq!(push.token, "default-token");
    assert_eq!(push.module.as_deref(), Some("fcm"));
    assert_eq!(
        push.options,
        vec![("secret".to_owned(), "app-secret-xyz".to_owned())]
    );
    assert_eq!(
        push.summary,
        PushSummary {
            message_count: Some("1".to_owned()),
            last_message_sender: None,
            last_message_body: Some("New Message!".to_owned()),
        }
    );
}

#[test]
fn ejabberd_push_iq_gives_token_module_options_and_summary() {
    let bytes = fixture_bytes("ejabberd-23.01-push-iq.xml");
    let (iq, push) = expect_push(parse(stanza(&bytes)));
    assert_eq!(
        iq,
        header("rr-1795639453035-11432882933662248541-L2YF45y+j+PKpRXXBYQ/4bN9X6M=-62062580")
    );
    assert_eq!(push.token, "ej-token-1");
    assert_eq!(push.module.as_deref(), Some("fcm"));
    assert_eq!(
        push.options,
        vec![("secret".to_owned(), "app-secret-xyz".to_owned())]
    );
    assert_eq!(
        push.summary,
        PushSummary {
            message_count: None,
            last_message_sender: Some("bob@localhost/2812283704461174902850".to_owned()),
            last_message_body: Some("New message".to_owned()),
        }
    );
}

#[test]
fn trailing_newline_after_a_captured_stanza_does_not_matter() {
    let bytes = fixture_bytes("prosody-0.12-push-iq.xml");
    let (_, push) = expect_push(parse(&bytes));
    assert_eq!(push.token, "default-token");
}

#[test]
fn entities_are_unescaped_in_attributes_and_values() {
    let iq = "<iq type='set' id='a&amp;b&apos;c' from='l&lt;h' to='push.localhost'>\
        <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='tok&amp;en'><item>\
        <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'>\
        <field var='last-message-body'><value>it&#x27;s &lt;b&gt; &amp; more&#33;</value></field>\
        </x></notification></item></publish><publish-options><x xmlns='jabber:x:data'>\
        <field var='pushModule'><value>mod&amp;ule</value></field>\
        <field var='se&quot;cret'><value>&#x27;s3&amp;cret&#x27;</value></field>\
        </x></publish-options></pubsub></iq>";
    let (header, push) = expect_push(parse(iq.as_bytes()));
    assert_eq!(header.id, "a&b'c");
    assert_eq!(header.from, "l<h");
    assert_eq!(push.token, "tok&en");
    assert_eq!(push.module.as_deref(), Some("mod&ule"));
    assert_eq!(
        push.summary.last_message_body.as_deref(),
        Some("it's <b> & more!")
    );
    assert_eq!(
        push.options,
        vec![("se\"cret".to_owned(), "'s3&cret'".to_owned())]
    );
}

#[test]
fn cdata_in_a_value_is_taken_verbatim() {
    let iq = push_iq(
        "<publish node='t'/><publish-options><x xmlns='jabber:x:data'>\
         <field var='secret'><value><![CDATA[a<b&c]]></value></field></x></publish-options>",
    );
    let (_, push) = expect_push(parse(iq.as_bytes()));
    assert_eq!(
        push.options,
        vec![("secret".to_owned(), "a<b&c".to_owned())]
    );
}

#[test]
fn prefixed_namespaces_are_resolved() {
    let iq = "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
        <ps:pubsub xmlns:ps='http://jabber.org/protocol/pubsub'><ps:publish node='tok'><ps:item>\
        <n:notification xmlns:n='urn:xmpp:push:0'><d:x xmlns:d='jabber:x:data' type='form'>\
        <d:field var='message-count'><d:value>3</d:value></d:field></d:x></n:notification>\
        </ps:item></ps:publish><ps:publish-options><d:x xmlns:d='jabber:x:data' type='submit'>\
        <d:field var='pushModule'><d:value>apns</d:value></d:field></d:x></ps:publish-options>\
        </ps:pubsub></iq>";
    let (_, push) = expect_push(parse(iq.as_bytes()));
    assert_eq!(push.token, "tok");
    assert_eq!(push.module.as_deref(), Some("apns"));
    assert_eq!(push.summary.message_count.as_deref(), Some("3"));
}

#[test]
fn a_prefix_bound_to_another_namespace_is_not_pubsub() {
    let iq = "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
        <ps:pubsub xmlns:ps='http://jabber.org/protocol/pubsub#owner'>\
        <ps:publish node='tok'/></ps:pubsub></iq>";
    assert_eq!(
        parse(iq.as_bytes()),
        Request::Unsupported { iq: header("p1") }
    );
}

#[test]
fn whitespace_comments_labels_and_unknown_fields_are_tolerated() {
    let iq = "<iq type='set' id='p1' from='localhost' to='push.localhost' xml:lang='en'>\n\
        <!-- a comment before the payload -->\n  \
        <pubsub xmlns='http://jabber.org/protocol/pubsub' extra='1'>\n    \
        <publish node='tok' unknown='x'>\n      <!-- inside publish -->\n      <item id='i'>\n\
        <notification xmlns='urn:xmpp:push:0'>\n<x xmlns='jabber:x:data' type='result'>\n\
        <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\n\
        <field var='message-count' label='Count'>  <value> 2 </value>  </field>\n\
        <field var='pending-subscription-count'/>\n\
        <field var='last-message-body'><value></value></field>\n\
        <field var='last-message-sender' type='jid-single'><value>a@b</value><value>c@d</value></field>\n\
        <field><value>no var</value></field>\n\
        </x></notification></item></publish>\n\
        <publish-options><x xmlns='jabber:x:data'>\n\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\n\
        <field var='empty'/>\n<field var='secret' label='S'><value>s</value><value>ignored</value></field>\n\
        </x></publish-options>\n<unknown xmlns='urn:example'/>\n</pubsub>\n</iq>";
    let (_, push) = expect_push(parse(iq.as_bytes()));
    assert_eq!(push.token, "tok");
    assert_eq!(push.module, None);
    assert_eq!(
        push.summary,
        PushSummary {
            message_count: Some("2".to_owned()),
            last_message_sender: Some("a@b".to_owned()),
            last_message_body: None,
        }
    );
    assert_eq!(
        push.options,
        vec![
            ("empty".to_owned(), String::new()),
            ("secret".to_owned(), "s".to_owned())
        ]
    );
}

#[test]
fn a_push_without_forms_is_still_a_push() {
    let (_, push) = expect_push(parse(push_iq("<publish node='bare'/>").as_bytes()));
    assert_eq!(push.token, "bare");
    assert_eq!(push.module, None);
    assert_eq!(push.summary, PushSummary::default());
    assert!(push.options.is_empty());
}

/// A 256 KiB push of empty publish-options fields would otherwise be parsed into some 12,000
/// entries, several times the stanza's own size, while it waits among the 1,024 stanzas
/// between the link and the dispatcher.
#[test]
fn publish_options_fields_are_kept_up_to_a_bound() {
    let fields: String = (0..12_000)
        .map(|i| format!("<field var='f{i}'/>"))
        .collect();
    let iq = push_iq(&format!(
        "<publish node='tok'/><publish-options><x xmlns='jabber:x:data'>\
         <field var='secret'><value>s</value></field>{fields}\
         <field var='pushModule'><value>late</value></field></x></publish-options>"
    ));
    assert!(iq.len() < 256 * 1024);
    let (_, push) = expect_push(parse(iq.as_bytes()));
    assert_eq!(push.options.len(), fpush::request::MAX_OPTIONS);
    assert!(push.options.capacity() <= 2 * fpush::request::MAX_OPTIONS);
    assert_eq!(push.options[0], ("secret".to_owned(), "s".to_owned()));
    assert_eq!(push.options[1], ("f0".to_owned(), String::new()));
    // Only the kept fields are bounded: `pushModule` is read wherever it stands.
    assert_eq!(push.module.as_deref(), Some("late"));
}

#[test]
fn publish_without_node_is_invalid() {
    let reason = expect_invalid(parse(push_iq("<publish><item/></publish>").as_bytes()));
    assert!(reason.contains("no node"), "{reason}");
}

#[test]
fn empty_node_is_invalid() {
    let reason = expect_invalid(parse(push_iq("<publish node=''/>").as_bytes()));
    assert!(reason.contains("empty"), "{reason}");
}

#[test]
fn token_over_4096_bytes_is_invalid() {
    let token = "a".repeat(5000);
    let reason = expect_invalid(parse(
        push_iq(&format!("<publish node='{token}'/>")).as_bytes(),
    ));
    assert!(reason.contains("4096"), "{reason}");
}

#[test]
fn token_of_exactly_4096_bytes_is_accepted() {
    let token = "a".repeat(4096);
    let (_, push) = expect_push(parse(
        push_iq(&format!("<publish node='{token}'/>")).as_bytes(),
    ));
    assert_eq!(push.token.len(), 4096);
}

#[test]
fn token_with_a_space_is_invalid() {
    let reason = expect_invalid(parse(push_iq("<publish node='ab cd'/>").as_bytes()));
    assert!(reason.contains("whitespace"), "{reason}");
}

#[test]
fn token_with_an_escaped_tab_or_control_character_is_invalid() {
    for token in ["ab&#9;cd", "ab&#x7f;cd"] {
        let reason = expect_invalid(parse(
            push_iq(&format!("<publish node='{token}'/>")).as_bytes(),
        ));
        assert!(reason.contains("control"), "{token}: {reason}");
    }
}

#[test]
fn pubsub_without_publish_is_invalid() {
    let reason = expect_invalid(parse(
        push_iq("<publish-options><x xmlns='jabber:x:data'/></publish-options>").as_bytes(),
    ));
    assert!(reason.contains("no publish"), "{reason}");
    let empty = "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
        <pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>";
    assert!(expect_invalid(parse(empty.as_bytes())).contains("no publish"));
}

#[test]
fn set_with_another_namespace_is_unsupported() {
    let iq = "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
        <query xmlns='jabber:iq:register'/></iq>";
    assert_eq!(
        parse(iq.as_bytes()),
        Request::Unsupported { iq: header("p1") }
    );
}

#[test]
fn pubsub_element_without_namespace_is_unsupported() {
    let iq = "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
        <pubsub><publish node='t'/></pubsub></iq>";
    assert_eq!(
        parse(iq.as_bytes()),
        Request::Unsupported { iq: header("p1") }
    );
}

#[test]
fn set_without_payload_is_unsupported() {
    for iq in [
        "<iq type='set' id='p1' from='localhost' to='push.localhost'/>",
        "<iq type='set' id='p1' from='localhost' to='push.localhost'> </iq>",
    ] {
        assert_eq!(
            parse(iq.as_bytes()),
            Request::Unsupported { iq: header("p1") },
            "{iq}"
        );
    }
}

#[test]
fn truncated_push_is_invalid() {
    let bytes = fixture_bytes("prosody-0.12-push-iq.xml");
    let cut = &bytes[..bytes.len() / 2];
    let request = parse(cut);
    match request {
        Request::InvalidPush { iq, reason } => {
            assert_eq!(iq.id.len(), 64);
            assert!(reason.contains("well-formed"), "{reason}");
        }
        other => panic!("expected an invalid push, got {other:?}"),
    }
}

#[test]
fn mismatched_end_tag_is_invalid() {
    let iq = push_iq("<publish node='t'><item></publish></item>");
    assert!(expect_invalid(parse(iq.as_bytes())).contains("well-formed"));
}

#[test]
fn undefined_entity_is_invalid() {
    let iq = push_iq(
        "<publish node='t'><item><notification xmlns='urn:xmpp:push:0'>\
         <x xmlns='jabber:x:data'><field var='last-message-body'><value>&nbsp;</value></field>\
         </x></notification></item></publish>",
    );
    assert!(expect_invalid(parse(iq.as_bytes())).contains("well-formed"));
}

/// `count` namespace declarations on `<pubsub>`, then empty elements up to about `size` bytes.
fn pubsub_declaring(count: usize, size: usize) -> String {
    let declarations: String = (0..count).map(|i| format!(" xmlns:a{i}='x'")).collect();
    let elements = "<a/>".repeat(size.saturating_sub(declarations.len()) / 4);
    format!(
        "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'{declarations}>\
         <publish node='tok'/>{elements}</pubsub></iq>"
    )
}

#[test]
fn thousands_of_namespace_declarations_are_refused_without_walking_them_per_element() {
    // What ejabberd forwards verbatim from anyone: about 240 KiB, within the stanza limit. Each
    // element was resolved against every declaration in force, seconds for one stanza; more
    // than 64 in force now make it malformed before any is walked.
    let stanza = pubsub_declaring(8000, 240 * 1024);
    assert!(
        expect_invalid(parse(stanza.as_bytes())).contains("not well-formed"),
        "{stanza:.200}"
    );
    // Declared on the IQ itself, they leave nothing to answer.
    let declarations: String = (0..100).map(|i| format!(" xmlns:z{i}='x'")).collect();
    let on_the_iq = format!(
        "<iq type='get' id='p1' from='localhost'{declarations}><ping xmlns='urn:xmpp:ping'/></iq>"
    );
    assert_eq!(parse(on_the_iq.as_bytes()), Request::Ignored);
    // A few dozen, more than any server sends, are read as usual.
    let (_, push) = expect_push(parse(pubsub_declaring(60, 64 * 1024).as_bytes()));
    assert_eq!(push.token, "tok");
}

#[test]
fn only_the_first_publish_counts() {
    let iq = push_iq("<publish node='first'/><publish node='second'/>");
    let (_, push) = expect_push(parse(iq.as_bytes()));
    assert_eq!(push.token, "first");
}

#[test]
fn disco_info_get_is_recognised() {
    let iq = "<iq type='get' id='d1' from='localhost' to='push.localhost'>\
        <query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
    assert_eq!(
        parse(iq.as_bytes()),
        Request::DiscoInfo { iq: header("d1") }
    );
}

#[test]
fn disco_items_and_disco_info_set_are_unsupported() {
    for iq in [
        "<iq type='get' id='d1' from='localhost' to='push.localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        "<iq type='set' id='d1' from='localhost' to='push.localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    ] {
        assert_eq!(
            parse(iq.as_bytes()),
            Request::Unsupported { iq: header("d1") },
            "{iq}"
        );
    }
}

#[test]
fn ping_get_is_recognised() {
    let iq = "<iq from='localhost' to='push.localhost' id='ping1' type='get'>\
        <ping xmlns='urn:xmpp:ping'/></iq>";
    assert_eq!(
        parse(iq.as_bytes()),
        Request::Ping {
            iq: header("ping1")
        }
    );
}

#[test]
fn other_get_is_unsupported() {
    let iq = "<iq type='get' id='v1' from='localhost' to='push.localhost'>\
        <query xmlns='jabber:iq:version'/></iq>";
    assert_eq!(
        parse(iq.as_bytes()),
        Request::Unsupported { iq: header("v1") }
    );
}

#[test]
fn result_and_error_iqs_are_responses() {
    assert_eq!(
        parse(b"<iq type='result' id='r1' from='localhost' to='push.localhost'/>"),
        Request::Response
    );
    let error = "<iq type='error' id='r2' from='localhost' to='push.localhost'>\
        <ping xmlns='urn:xmpp:ping'/><error type='cancel'>\
        <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>";
    assert_eq!(parse(error.as_bytes()), Request::Response);
    // A response without `from` is still a response: it is never answered either way.
    assert_eq!(parse(b"<iq type='result' id='r3'/>"), Request::Response);
}

#[test]
fn messages_presence_and_garbage_are_ignored() {
    for stanza in [
        &b"<message from='a@localhost' to='push.localhost'><body>hi</body></message>"[..],
        b"<presence from='a@localhost' to='push.localhost'/>",
        b"<handshake/>",
        b"not xml at all",
        b"",
        b"   ",
        b"<iq type='set' id='x'",
    ] {
        assert_eq!(
            parse(stanza),
            Request::Ignored,
            "{}",
            String::from_utf8_lossy(stanza)
        );
    }
}

#[test]
fn iq_that_cannot_be_answered_is_ignored() {
    for iq in [
        // no id: a reply could not be matched
        "<iq type='set' from='localhost' to='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='t'/></pubsub></iq>",
        // no from: a reply would have no destination
        "<iq type='set' id='p1' to='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='t'/></pubsub></iq>",
        // no type, or an unknown one
        "<iq id='p1' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='bogus' id='p1' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        // no id on a result
        "<iq type='result' from='localhost'/>",
    ] {
        assert_eq!(parse(iq.as_bytes()), Request::Ignored, "{iq}");
    }
}

#[test]
fn iq_without_to_keeps_an_empty_to() {
    let iq = "<iq type='get' id='p1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>";
    let Request::Ping { iq } = parse(iq.as_bytes()) else {
        panic!("expected a ping");
    };
    assert_eq!(iq.to, "");
}

#[test]
fn oversized_start_tag_gives_the_header_of_get_and_set_only() {
    assert_eq!(
        parse_oversized(b"<iq type='set' id='p1' from='localhost' to='push.localhost'>"),
        Some(header("p1"))
    );
    assert_eq!(
        parse_oversized(b"<iq id='p1' type='get' to='push.localhost' from='localhost'>"),
        Some(header("p1"))
    );
    assert_eq!(
        parse_oversized(b"<iq type='result' id='p1' from='localhost' to='push.localhost'>"),
        None
    );
    assert_eq!(parse_oversized(b"<message id='m' from='a' to='b'>"), None);
    assert_eq!(
        parse_oversized(b"<iq type='set' from='localhost' to='push.localhost'>"),
        None
    );
}

#[test]
fn repeated_ids_parse_independently() {
    // Prosody reuses one id for every push of a registration; nothing may depend on it.
    let bytes = fixture_bytes("prosody-0.12-push-iq.xml");
    let first = parse(stanza(&bytes));
    let second = parse(stanza(&bytes));
    assert_eq!(first, second);
}

/// What a reply says, read back with a strict XML reader (so the bytes are well-formed).
#[derive(Debug, Default, PartialEq)]
struct ParsedReply {
    attrs: Vec<(String, String)>,
    elements: Vec<String>,
    text: String,
}

fn read_back(bytes: &[u8]) -> ParsedReply {
    let mut reader = Reader::from_reader(bytes);
    let mut parsed = ParsedReply::default();
    let mut depth = 0usize;
    loop {
        let (element, opens) = match reader.read_event().expect("reply must be well-formed") {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(_) => {
                depth -= 1;
                continue;
            }
            Event::Text(t) => {
                parsed.text.push_str(&t.decode().unwrap());
                continue;
            }
            Event::GeneralRef(r) => {
                let name = r.decode().unwrap();
                let resolved = quick_xml::escape::resolve_predefined_entity(&name).unwrap();
                parsed.text.push_str(resolved);
                continue;
            }
            Event::Eof => break,
            other => panic!("unexpected event {other:?}"),
        };
        if parsed.elements.is_empty() {
            assert_eq!(depth, 0);
            parsed
                .elements
                .push(String::from_utf8(element.name().as_ref().to_vec()).unwrap());
            for attr in element.attributes() {
                let attr = attr.unwrap();
                parsed.attrs.push((
                    String::from_utf8(attr.key.as_ref().to_vec()).unwrap(),
                    attr.unescape_value().unwrap().into_owned(),
                ));
            }
        } else {
            assert!(depth > 0, "a reply is one element");
            parsed.elements.push(element_summary(&element));
        }
        if opens {
            depth += 1;
        }
    }
    assert_eq!(depth, 0, "reply must close every element");
    parsed
}

fn element_summary(e: &quick_xml::events::BytesStart<'_>) -> String {
    let mut s = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
    for attr in e.attributes() {
        let attr = attr.unwrap();
        s.push_str(&format!(
            " {}={}",
            String::from_utf8_lossy(attr.key.as_ref()),
            attr.unescape_value().unwrap()
        ));
    }
    s
}

fn tricky_header() -> IqHeader {
    IqHeader {
        id: "id'<&>\"x".to_owned(),
        from: "user's&<server>".to_owned(),
        to: "push'<&".to_owned(),
    }
}

fn iq_attrs(kind: &str, h: &IqHeader) -> Vec<(String, String)> {
    vec![
        ("type".to_owned(), kind.to_owned()),
        ("id".to_owned(), h.id.clone()),
        ("from".to_owned(), h.to.clone()),
        ("to".to_owned(), h.from.clone()),
    ]
}

#[test]
fn result_reply_swaps_addresses_and_escapes() {
    let h = tricky_header();
    let mut out = Vec::new();
    write_reply(&h, &Reply::Result, &mut out);
    let parsed = read_back(&out);
    assert_eq!(parsed.attrs, iq_attrs("result", &h));
    assert_eq!(parsed.elements, vec!["iq".to_owned()]);
    // Our own parser sees it as a response, never to be answered.
    assert_eq!(parse(&out), Request::Response);
}

#[test]
fn disco_info_reply_lists_identity_and_features() {
    let h = tricky_header();
    let mut out = Vec::new();
    write_reply(&h, &Reply::DiscoInfo, &mut out);
    let parsed = read_back(&out);
    assert_eq!(parsed.attrs, iq_attrs("result", &h));
    assert_eq!(
        parsed.elements,
        vec![
            "iq".to_owned(),
            "query xmlns=http://jabber.org/protocol/disco#info".to_owned(),
            "identity category=pubsub type=push".to_owned(),
            "feature var=http://jabber.org/protocol/disco#info".to_owned(),
            "feature var=urn:xmpp:push:0".to_owned(),
        ]
    );
}

#[test]
fn error_replies_carry_type_condition_and_escaped_text() {
    let cases = [
        (
            ErrorType::Wait,
            Condition::ResourceConstraint,
            "wait",
            "resource-constraint",
        ),
        (
            ErrorType::Cancel,
            Condition::ItemNotFound,
            "cancel",
            "item-not-found",
        ),
        (
            ErrorType::Modify,
            Condition::BadRequest,
            "modify",
            "bad-request",
        ),
        (
            ErrorType::Modify,
            Condition::PolicyViolation,
            "modify",
            "policy-violation",
        ),
        (
            ErrorType::Wait,
            Condition::RemoteServerTimeout,
            "wait",
            "remote-server-timeout",
        ),
        (
            ErrorType::Wait,
            Condition::InternalServerError,
            "wait",
            "internal-server-error",
        ),
        (
            ErrorType::Cancel,
            Condition::ServiceUnavailable,
            "cancel",
            "service-unavailable",
        ),
    ];
    let h = tricky_header();
    for (kind, condition, kind_str, condition_str) in cases {
        let text = "module 'a<b>' & co";
        let mut out = Vec::new();
        write_reply(
            &h,
            &Reply::Error {
                kind,
                condition,
                text: Some(text),
            },
            &mut out,
        );
        let parsed = read_back(&out);
        assert_eq!(parsed.attrs, iq_attrs("error", &h));
        assert_eq!(
            parsed.elements,
            vec![
                "iq".to_owned(),
                format!("error type={kind_str}"),
                format!("{condition_str} xmlns=urn:ietf:params:xml:ns:xmpp-stanzas"),
                "text xmlns=urn:ietf:params:xml:ns:xmpp-stanzas".to_owned(),
            ]
        );
        assert_eq!(parsed.text, text);
        assert_eq!(parse(&out), Request::Response);
    }
}

#[test]
fn error_reply_without_text_has_no_text_element() {
    let h = header("p1");
    let mut out = Vec::new();
    write_reply(
        &h,
        &Reply::Error {
            kind: ErrorType::Cancel,
            condition: Condition::ServiceUnavailable,
            text: None,
        },
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "<iq type='error' id='p1' from='push.localhost' to='localhost'><error type='cancel'>\
         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
}

#[test]
fn reply_to_an_iq_without_to_has_no_from() {
    let h = IqHeader {
        id: "p1".to_owned(),
        from: "localhost".to_owned(),
        to: String::new(),
    };
    let mut out = Vec::new();
    write_reply(&h, &Reply::Result, &mut out);
    assert_eq!(out, b"<iq type='result' id='p1' to='localhost'/>");
}

#[test]
fn replies_append_to_the_buffer() {
    let h = header("p1");
    let mut out = b"<previous/>".to_vec();
    write_reply(&h, &Reply::Result, &mut out);
    assert_eq!(
        out,
        b"<previous/><iq type='result' id='p1' from='push.localhost' to='localhost'/>"
    );
}

#[test]
fn a_push_keeps_the_publish_options_a_door_uses_however_many_it_carries() {
    let many: String = (0..5000).map(|i| format!("<field var='f{i}'/>")).collect();
    let inner = format!(
        "<publish node='t'/><publish-options><x xmlns='jabber:x:data'>{many}\
         <field var='secret'><value>s3cret</value></field>{many}</x></publish-options>"
    );
    let (_, push) = expect_push(parse(push_iq(&inner).as_bytes()));
    // A waiting request holds what the doors use, not thousands of small allocations: the first
    // sixteen fields (all a push passes on) and the secret that decides the door.
    assert_eq!(push.options.len(), fpush::request::MAX_OPTIONS + 1);
    assert_eq!(push.options[0], ("f0".to_owned(), String::new()));
    assert_eq!(
        push.options.last(),
        Some(&("secret".to_owned(), "s3cret".to_owned()))
    );
}
