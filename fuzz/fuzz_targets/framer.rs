//! The component stream framer on arbitrary bytes, fed in arbitrary chunks as TCP would deliver
//! them. It must never panic, never hand out an element or start tag over the size limit, never
//! hold more than the limit between reads, and fail on the same input and cut the same frames
//! whatever the chunking: crossing a limit inside the stream skips a stanza and never fails, so
//! only the bytes decide whether the stream fails. (A stream that fails may show one frame more
//! in pieces: a stanza that crosses the limit in a read that ends in the middle of the markup that
//! fails is reported as skipped before the failure.)
//! Every element it hands out also goes through the stanza parser, as in the daemon; a push it
//! hands out already parsed must be what quick-xml's general reader makes of its bytes. Fed the whole input at
//! once, the framer's one pass over stanzas buffered whole must cut exactly what lexing token by
//! token cuts, and fail exactly where it fails.

#![no_main]

use fpush::component::fuzzing::{Framer, StreamFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [size_byte, depth_byte, chunk_byte, rest @ ..] = data else {
        return;
    };
    // Never below the stream header's length: a header is one tag and limits apply to it too.
    let max_size = 160 + usize::from(*size_byte) * 8;
    let max_depth = 1 + usize::from(*depth_byte % 16);
    let chunk = 1 + usize::from(*chunk_byte);
    // The daemon reads the stream header first: give every input one, so the fuzzer spends its
    // time on stanzas.
    let mut stream = b"<stream:stream xmlns='jabber:component:accept' \
        xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='push.localhost'>"
        .to_vec();
    stream.extend_from_slice(rest);

    let whole = frames(
        &stream,
        stream.len().max(1),
        max_size,
        Framer::new(max_size, max_depth),
    );
    let reference = frames(
        &stream,
        stream.len().max(1),
        max_size,
        Framer::new(max_size, max_depth).token_by_token(),
    );
    assert_eq!(
        whole.frames, reference.frames,
        "the one pass cut other frames"
    );
    assert_eq!(
        whole.failed, reference.failed,
        "the one pass failed differently"
    );
    let pieces = frames(&stream, chunk, max_size, Framer::new(max_size, max_depth));
    assert_eq!(
        whole.failed, pieces.failed,
        "chunking changed whether it failed"
    );
    if !whole.failed {
        assert_eq!(whole.frames, pieces.frames, "chunking changed the frames");
    } else {
        let (shorter, longer) = if whole.frames.len() <= pieces.frames.len() {
            (&whole.frames, &pieces.frames)
        } else {
            (&pieces.frames, &whole.frames)
        };
        assert!(
            longer.len() <= shorter.len() + 1 && shorter[..] == longer[..shorter.len()],
            "chunking changed the frames before the failure"
        );
    }
});

struct Run {
    frames: Vec<StreamFrame>,
    failed: bool,
}

fn frames(stream: &[u8], chunk: usize, max_size: usize, mut framer: Framer) -> Run {
    let mut run = Run {
        frames: Vec::new(),
        failed: false,
    };
    for piece in stream.chunks(chunk) {
        // As a socket read would: append, then drain every frame the bytes complete.
        framer.buffer().extend_from_slice(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => run.frames.push(checked(frame, max_size)),
                Ok(None) => break,
                Err(_) => {
                    run.failed = true;
                    return run;
                }
            }
        }
        assert!(
            framer.buffered() <= max_size,
            "{} bytes held between reads with a {max_size}-byte limit",
            framer.buffered()
        );
    }
    run
}

/// Checks one frame; a push read while framing comes back as the element it was cut from, so
/// that runs compare frame by frame whichever way each stanza went.
fn checked(frame: StreamFrame, max_size: usize) -> StreamFrame {
    match &frame {
        StreamFrame::Element(element) => {
            assert!(
                element.len() <= max_size,
                "an element over the limit was buffered"
            );
            let _ = fpush::request::parse(element);
        }
        StreamFrame::Push { stanza, request } => {
            assert!(stanza.len() <= max_size, "a push over the limit was read");
            // Against quick-xml's general reader: `request::parse` reads a whole push the way
            // the framer does, so comparing with it would prove little.
            assert_eq!(
                fpush::request::parse_general(stanza),
                **request,
                "a push read while framing differs from quick-xml's reading"
            );
            return StreamFrame::Element(stanza.clone());
        }
        StreamFrame::Oversized { start_tag } => {
            assert!(
                start_tag.len() <= max_size,
                "an oversized start tag was kept"
            );
            let _ = fpush::request::parse_oversized(start_tag);
        }
        StreamFrame::StreamHeader(_) | StreamFrame::StreamEnd => {}
    }
    frame
}
