//! Fuzz target: arbitrary bytes through every protocol decoder; none may panic, and the passthrough
//! must forward exactly the bytes the framer splits into frames.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsluice::protocol::backend::BackendMessage;
use pgsluice::protocol::frontend::{parse_password, parse_sasl_initial_response, FrontendMessage};
use pgsluice::protocol::startup::decode_startup;
use pgsluice::protocol::{Framer, Passthrough, Step};

const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode_startup(&mut buf) {}

    let framer = Framer::new(MAX);
    let mut buf = BytesMut::from(data);
    let mut framed = 0;
    while let Ok(Some(frame)) = framer.next_frame(&mut buf) {
        framed += frame.as_bytes().len();
        if let Ok(msg) = FrontendMessage::decode(&frame) {
            let mut out = BytesMut::new();
            msg.encode(&mut out);
            assert_eq!(&out[..], &frame.as_bytes()[..], "frontend round trip");
        }
        if let Ok(msg) = BackendMessage::decode(&frame) {
            let mut out = BytesMut::new();
            msg.encode(&mut out);
            let again = framer.next_frame(&mut out).unwrap().unwrap();
            assert_eq!(
                BackendMessage::decode(&again),
                Ok(msg),
                "backend round trip"
            );
        }
        let _ = parse_password(frame.body());
        let _ = parse_sasl_initial_response(frame.body());
    }

    // Feed the same bytes to a passthrough in uneven chunks; it must forward whole frames the framer
    // accepted and never more than was buffered.
    let mut pt = Passthrough::default();
    let mut pending = BytesMut::new();
    let mut forwarded = 0;
    'chunks: for chunk in data.chunks(7) {
        pending.extend_from_slice(chunk);
        loop {
            let n = match pt.step(&pending, MAX) {
                Ok(Step::Message { available, .. }) => available,
                Ok(Step::Body { n }) => n,
                Ok(Step::NeedMore) => break,
                Err(_) => break 'chunks,
            };
            assert!(n > 0 && n <= pending.len());
            let _ = pending.split_to(n);
            forwarded += n;
            pt.advance(n);
        }
    }
    assert!(forwarded >= framed);
    if !pt.in_message() {
        assert_eq!(
            forwarded, framed,
            "passthrough and framer disagree on boundaries"
        );
    }
});
