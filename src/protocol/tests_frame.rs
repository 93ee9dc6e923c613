//! Tests of framing: `Header`, `Frame`, `Framer` and (heavily) `Passthrough`.

use bytes::{BufMut, BytesMut};

use super::frame::{whole_run, Frame, Framer, Header, Passthrough, Step, HEADER_LEN};
use super::ProtocolError;

const MAX: usize = 1 << 30;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    Frame::new(tag, body).into_bytes().to_vec()
}

/// A stream of several messages of different sizes, including empty bodies.
fn stream() -> (Vec<u8>, Vec<(u8, usize)>) {
    let parts: Vec<(u8, Vec<u8>)> = vec![
        (b'T', vec![1, 2, 3]),
        (b'D', (0..40).collect()),
        (b'D', vec![]),
        (b'C', b"SELECT 2\0".to_vec()),
        (b'Z', b"I".to_vec()),
    ];
    let mut all = Vec::new();
    let mut expect = Vec::new();
    for (t, b) in &parts {
        all.extend(msg(*t, b));
        expect.push((*t, b.len()));
    }
    (all, expect)
}

/// Result of a simulated relay loop.
struct Relayed {
    forwarded: Vec<u8>,
    headers: Vec<(u8, usize)>,
    whole: Vec<Vec<u8>>,
}

/// Runs the lead's relay loop over `input` delivered in the given chunks; messages whose tag satisfies
/// `wait_whole` are only forwarded once complete.
fn relay<'a>(chunks: impl Iterator<Item = &'a [u8]>, wait_whole: impl Fn(u8) -> bool) -> Relayed {
    let mut buf = BytesMut::new();
    let mut pt = Passthrough::default();
    let mut r = Relayed {
        forwarded: Vec::new(),
        headers: Vec::new(),
        whole: Vec::new(),
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match pt.step(&buf, MAX).unwrap() {
                Step::Message { header, available } if available == header.frame_len() => {
                    assert!(!pt.in_message());
                    r.headers.push((header.tag, header.body_len()));
                    let f = buf.split_to(available);
                    r.whole.push(f.to_vec());
                    r.forwarded.extend_from_slice(&f);
                    pt.advance(available);
                }
                Step::Message { header, available } => {
                    assert!(available >= HEADER_LEN && available < header.frame_len());
                    if wait_whole(header.tag) {
                        break;
                    }
                    r.headers.push((header.tag, header.body_len()));
                    r.forwarded.extend_from_slice(&buf.split_to(available));
                    pt.advance(available);
                    assert!(pt.in_message());
                }
                Step::Body { n } => {
                    assert!(n > 0 && n <= buf.len());
                    r.forwarded.extend_from_slice(&buf.split_to(n));
                    pt.advance(n);
                }
                Step::NeedMore => break,
            }
        }
    }
    assert!(buf.is_empty(), "bytes left unforwarded");
    assert!(!pt.in_message());
    r
}

#[test]
fn header_parse() {
    assert_eq!(Header::parse(b"Z\0\0\0", MAX), Ok(None));
    let h = Header::parse(b"Z\0\0\0\x05I", MAX).unwrap().unwrap();
    assert_eq!(h, Header { tag: b'Z', len: 5 });
    assert_eq!((h.frame_len(), h.body_len()), (6, 1));
    assert_eq!(
        Header::parse(b"Z\0\0\0\x03", MAX),
        Err(ProtocolError::InvalidLength { tag: b'Z', len: 3 })
    );
    assert_eq!(
        Header::parse(b"Z\xff\xff\xff\xff", MAX),
        Err(ProtocolError::InvalidLength { tag: b'Z', len: -1 })
    );
    assert_eq!(
        Header::parse(b"D\0\0\0\x10", 16),
        Err(ProtocolError::MessageTooLarge { len: 17, max: 16 })
    );
    assert!(Header::parse(b"D\0\0\0\x10", 17).unwrap().is_some());
}

#[test]
fn frame_accessors() {
    let f = Frame::new(b'Q', b"SELECT 1\0");
    assert_eq!(f.tag(), b'Q');
    assert_eq!(f.body(), b"SELECT 1\0");
    assert_eq!(&f.body_bytes()[..], b"SELECT 1\0");
    assert_eq!(f.as_bytes().len(), 14);
    let again = Frame::from_bytes(f.clone().into_bytes(), MAX).unwrap();
    assert_eq!(again, f);
    let mut long = f.into_bytes().to_vec();
    long.push(0);
    assert!(Frame::from_bytes(long.into(), MAX).is_err());
    assert!(Frame::from_bytes(bytes::Bytes::from_static(b"Q\0\0"), MAX).is_err());
}

#[test]
fn framer_splits_whole_frames() {
    let (all, expect) = stream();
    let framer = Framer::new(MAX);
    assert_eq!(framer.max_message_size(), MAX);
    // Every prefix: frames come out only when complete, and the buffer is untouched otherwise.
    for k in 0..=all.len() {
        let mut buf = BytesMut::from(&all[..k]);
        let mut got = Vec::new();
        while let Some(f) = framer.next_frame(&mut buf).unwrap() {
            got.push((f.tag(), f.body().len()));
        }
        assert_eq!(got[..], expect[..got.len()]);
        let consumed: usize = got.iter().map(|(_, l)| l + HEADER_LEN).sum();
        assert_eq!(buf[..], all[consumed..k]);
    }
}

#[test]
fn framer_enforces_max() {
    let framer = Framer::new(10);
    let mut ok = BytesMut::from(&msg(b'D', &[0; 5])[..]);
    assert!(framer.next_frame(&mut ok).unwrap().is_some());
    let mut big = BytesMut::from(&msg(b'D', &[0; 6])[..]);
    assert_eq!(
        framer.next_frame(&mut big),
        Err(ProtocolError::MessageTooLarge { len: 11, max: 10 })
    );
    // Refused from the header alone, before the body arrives.
    let mut head = BytesMut::from(&b"D\x7f\xff\xff\xff"[..]);
    assert!(framer.next_frame(&mut head).is_err());
    assert_eq!(head.len(), 5);
}

#[test]
fn passthrough_split_at_every_offset() {
    let (all, expect) = stream();
    for k in 0..=all.len() {
        let (a, b) = all.split_at(k);
        let r = relay([a, b].into_iter(), |_| false);
        assert_eq!(r.forwarded, all, "split at {k}");
        assert_eq!(r.headers, expect, "split at {k}");
        // Waiting for whole ReadyForQuery/CommandComplete gives the same bytes and whole frames for them.
        let r = relay([a, b].into_iter(), |t| t == b'Z' || t == b'C');
        assert_eq!(r.forwarded, all, "split at {k}");
        assert_eq!(r.headers, expect, "split at {k}");
        assert!(r.whole.iter().any(|w| w[..] == msg(b'Z', b"I")[..]));
        assert!(r.whole.iter().any(|w| w[0] == b'C'));
    }
}

#[test]
fn passthrough_every_chunk_size() {
    let (all, expect) = stream();
    for size in 1..=all.len() {
        let r = relay(all.chunks(size), |t| t == b'Z');
        assert_eq!(r.forwarded, all, "chunk size {size}");
        assert_eq!(r.headers, expect, "chunk size {size}");
        assert_eq!(r.whole.last().unwrap()[..], msg(b'Z', b"I")[..]);
    }
}

#[test]
fn passthrough_several_messages_in_one_buffer() {
    let (all, expect) = stream();
    let r = relay(std::iter::once(&all[..]), |_| true);
    assert_eq!(r.whole.len(), expect.len());
    assert_eq!(r.forwarded, all);
}

#[test]
fn passthrough_large_data_row_in_8k_chunks() {
    let body: Vec<u8> = (0..(1usize << 20)).map(|i| i as u8).collect();
    let mut all = msg(b'D', &body);
    all.extend(msg(b'Z', b"T"));
    let mut buf = BytesMut::new();
    let mut pt = Passthrough::new();
    let mut forwarded = Vec::with_capacity(all.len());
    let (mut messages, mut bodies, mut max_buffered) = (0, 0, 0);
    for chunk in all.chunks(8192) {
        buf.extend_from_slice(chunk);
        max_buffered = max_buffered.max(buf.len());
        loop {
            let n = match pt.step(&buf, 2 << 20).unwrap() {
                Step::Message { available, .. } => {
                    messages += 1;
                    available
                }
                Step::Body { n } => {
                    bodies += 1;
                    n
                }
                Step::NeedMore => break,
            };
            forwarded.extend_from_slice(&buf.split_to(n));
            pt.advance(n);
        }
    }
    assert_eq!(forwarded, all);
    assert_eq!(messages, 2);
    assert!(bodies >= 127, "body forwarded in chunks, got {bodies}");
    assert!(max_buffered <= 8192, "never buffered more than one read");
    assert!(!pt.in_message());
}

#[test]
fn passthrough_edge_cases() {
    let mut pt = Passthrough::default();
    assert_eq!(pt.step(b"", MAX), Ok(Step::NeedMore));
    assert_eq!(pt.step(b"D\0\0", MAX), Ok(Step::NeedMore));
    let m = msg(b'D', b"abcdef");
    let step = pt.step(&m[..7], MAX).unwrap();
    assert_eq!(
        step,
        Step::Message {
            header: Header { tag: b'D', len: 10 },
            available: 7
        }
    );
    // Advancing by 0 keeps us at the message boundary.
    pt.advance(0);
    assert!(!pt.in_message());
    assert!(matches!(pt.step(&m[..7], MAX), Ok(Step::Message { .. })));
    pt.advance(7);
    assert!(pt.in_message());
    assert_eq!(pt.step(b"", MAX), Ok(Step::NeedMore));
    // The continuation is bounded by the message even if more bytes follow.
    let mut rest = m[7..].to_vec();
    rest.extend(msg(b'Z', b"I"));
    assert_eq!(pt.step(&rest, MAX), Ok(Step::Body { n: 4 }));
    pt.advance(1);
    assert_eq!(pt.step(&rest[1..], MAX), Ok(Step::Body { n: 3 }));
    pt.advance(3);
    assert!(!pt.in_message());
    assert!(matches!(
        pt.step(&rest[4..], MAX),
        Ok(Step::Message { available: 6, .. })
    ));
}

#[test]
fn passthrough_errors() {
    let mut pt = Passthrough::default();
    assert_eq!(
        pt.step(b"D\0\0\0\x02", MAX),
        Err(ProtocolError::InvalidLength { tag: b'D', len: 2 })
    );
    assert_eq!(
        pt.step(b"D\0\0\x10\0", 100),
        Err(ProtocolError::MessageTooLarge {
            len: 4097,
            max: 100
        })
    );
    let mut garbage = BytesMut::new();
    garbage.put_u32(0xdead_beef);
    garbage.put_u32(0xffff_ffff);
    assert!(pt.step(&garbage, MAX).is_err());
}

/// `whole_run` covers the whole messages before the first wanted, partial or invalid one, and
/// agrees with stepping a `Passthrough` message by message.
#[test]
fn whole_run_stops_at_wanted_partial_and_invalid_messages() {
    let message = |tag: u8, body: &[u8]| {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
    let ready = |tag: u8| matches!(tag, b'Z' | b'E' | b'S');
    let rows = [
        message(b'T', b"desc"),
        message(b'D', b"row1"),
        message(b'D', b""),
    ]
    .concat();
    let z = message(b'Z', b"I");
    let all = [rows.clone(), z.clone(), message(b'D', b"after")].concat();
    assert_eq!(whole_run(&all, 1 << 20, ready), rows.len());
    assert_eq!(
        whole_run(&all[rows.len()..], 1 << 20, ready),
        0,
        "stops at Z"
    );
    // A partial message ends the run; so does a header cut short, and an empty buffer.
    assert_eq!(whole_run(&rows[..rows.len() - 1], 1 << 20, ready), 18);
    assert_eq!(whole_run(&rows[..11], 1 << 20, ready), 9);
    assert_eq!(whole_run(&[], 1 << 20, ready), 0);
    // Oversized and invalid lengths end it too (the passthrough step then reports the error).
    assert_eq!(whole_run(&rows, 8, ready), 0);
    let mut bad = message(b'D', b"x");
    bad[1..5].copy_from_slice(&2i32.to_be_bytes());
    assert_eq!(
        whole_run(&[rows.clone(), bad].concat(), 1 << 20, ready),
        rows.len()
    );
    // The same boundary a passthrough reaches message by message.
    let mut pt = Passthrough::new();
    let mut at = 0;
    while let Ok(Step::Message { header, available }) = pt.step(&all[at..], 1 << 20) {
        if ready(header.tag) {
            break;
        }
        pt.advance(available);
        at += available;
    }
    assert_eq!(at, rows.len());
}
