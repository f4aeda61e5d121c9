//! The stanza parser on arbitrary bytes: `request::parse` and `request::parse_oversized` must
//! never panic, and whatever IQ they accept must be answerable with a reply that is well-formed
//! XML, carries the request's id back, and is never itself answered (no reply loops).

#![no_main]

use fpush::request::{self, Condition, ErrorType, IqHeader, Reply, Request};
use libfuzzer_sys::fuzz_target;
use quick_xml::events::Event;
use quick_xml::Reader;

fuzz_target!(|data: &[u8]| {
    if let Some(iq) = request::parse_oversized(data) {
        check_replies_to(&iq);
    }
    let iq = match request::parse(data) {
        Request::Push { iq, push } => {
            assert!(!push.token.is_empty() && push.token.len() <= request::MAX_TOKEN_LEN);
            iq
        }
        Request::InvalidPush { iq, .. }
        | Request::DiscoInfo { iq }
        | Request::Ping { iq }
        | Request::Unsupported { iq } => iq,
        Request::Response { .. } | Request::Ignored => return,
    };
    check_replies_to(&iq);
});

/// Every reply shape to `iq` is well-formed, and fpush reads it back as a response to `iq.id`.
fn check_replies_to(iq: &IqHeader) {
    assert!(
        !iq.from.is_empty(),
        "an IQ without from was accepted: {iq:?}"
    );
    let replies = [
        Reply::Result,
        Reply::DiscoInfo,
        Reply::Error {
            kind: ErrorType::Wait,
            condition: Condition::ResourceConstraint,
            text: Some("x < y & 'z'"),
        },
    ];
    for reply in replies {
        let mut out = Vec::new();
        request::write_reply(iq, &reply, &mut out);
        assert_well_formed(&out);
        match request::parse(&out) {
            Request::Response { id } => assert_eq!(id, iq.id),
            other => panic!(
                "a reply was read back as {other:?}: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

fn assert_well_formed(xml: &[u8]) {
    let text = std::str::from_utf8(xml).expect("replies are UTF-8");
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("reply not well-formed ({e}): {text}"),
        }
    }
    assert_eq!(depth, 0, "unbalanced reply: {text}");
}
