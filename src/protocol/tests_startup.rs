//! Tests of startup-phase packets.

use bytes::{BufMut, BytesMut};

use super::startup::*;
use super::ProtocolError;

fn decode_all(bytes: &[u8]) -> Result<Option<StartupPacket>, ProtocolError> {
    decode_startup(&mut BytesMut::from(bytes))
}

fn raw_startup(code: u32, params: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_i32(8 + params.len() as i32);
    out.put_u32(code);
    out.put_slice(params);
    out.to_vec()
}

#[test]
fn startup_round_trip() {
    let mut out = BytesMut::new();
    encode_startup(
        &[("user", "alice"), ("database", "app"), ("x", "")],
        &mut out,
    );
    let encoded = out.clone();
    let Some(StartupPacket::Startup(m)) = decode_startup(&mut out).unwrap() else {
        panic!("not a startup message");
    };
    assert!(out.is_empty());
    assert_eq!(m.minor_version, 0);
    assert_eq!(
        (m.user(), m.database(), m.get("x")),
        (Some("alice"), Some("app"), Some(""))
    );
    assert_eq!(m.get("nope"), None);
    let mut again = BytesMut::new();
    encode_startup_packet(&StartupPacket::Startup(m), &mut again);
    assert_eq!(again, encoded);
}

#[test]
fn database_defaults_to_user() {
    let mut out = BytesMut::new();
    encode_startup(&[("user", "bob")], &mut out);
    let Some(StartupPacket::Startup(m)) = decode_startup(&mut out).unwrap() else {
        panic!("not a startup message");
    };
    assert_eq!(m.database(), Some("bob"));
}

#[test]
fn minor_version_kept() {
    let bytes = raw_startup(PROTOCOL_3_0 | 2, b"user\0u\0\0");
    let Some(StartupPacket::Startup(m)) = decode_all(&bytes).unwrap() else {
        panic!("not a startup message");
    };
    assert_eq!(m.minor_version, 2);
    let mut out = BytesMut::new();
    encode_startup_packet(&StartupPacket::Startup(m), &mut out);
    assert_eq!(out[..], bytes[..]);
}

#[test]
fn special_requests_round_trip() {
    let key = CancelKey {
        process_id: 42,
        secret_key: -7,
    };
    type Encoder = fn(&mut BytesMut);
    let cases: [(Encoder, StartupPacket); 3] = [
        (encode_ssl_request, StartupPacket::SslRequest),
        (encode_gssenc_request, StartupPacket::GssEncRequest),
        (
            |o| {
                encode_cancel_request(
                    CancelKey {
                        process_id: 42,
                        secret_key: -7,
                    },
                    o,
                )
            },
            StartupPacket::Cancel(key),
        ),
    ];
    for (encode, expect) in cases {
        let mut out = BytesMut::new();
        encode(&mut out);
        let encoded = out.clone();
        assert_eq!(decode_startup(&mut out).unwrap(), Some(expect.clone()));
        assert!(out.is_empty());
        let mut again = BytesMut::new();
        encode_startup_packet(&expect, &mut again);
        assert_eq!(again, encoded);
    }
}

#[test]
fn partial_input_needs_more_and_keeps_buffer() {
    let mut full = BytesMut::new();
    encode_startup(&[("user", "alice")], &mut full);
    for k in 0..full.len() {
        let mut buf = BytesMut::from(&full[..k]);
        assert_eq!(decode_startup(&mut buf), Ok(None), "prefix {k}");
        assert_eq!(buf.len(), k);
    }
    // A following packet stays in the buffer.
    encode_ssl_request(&mut full);
    assert!(matches!(
        decode_startup(&mut full),
        Ok(Some(StartupPacket::Startup(_)))
    ));
    assert_eq!(
        decode_startup(&mut full),
        Ok(Some(StartupPacket::SslRequest))
    );
}

#[test]
fn rejects_bad_lengths() {
    assert_eq!(
        decode_all(&[0, 0, 0, 7, 0, 0, 0]),
        Err(ProtocolError::InvalidLength { tag: 0, len: 7 })
    );
    assert_eq!(
        decode_all(&[0xff, 0xff, 0xff, 0xff]),
        Err(ProtocolError::InvalidLength { tag: 0, len: -1 })
    );
    assert_eq!(
        decode_all(&10_001i32.to_be_bytes()),
        Err(ProtocolError::MessageTooLarge {
            len: 10_001,
            max: MAX_STARTUP_PACKET
        })
    );
    // SSLRequest and CancelRequest with the wrong size.
    assert!(decode_all(&raw_startup(SSL_REQUEST_CODE, b"x")).is_err());
    assert!(decode_all(&raw_startup(CANCEL_REQUEST_CODE, &[0; 4])).is_err());
    assert!(decode_all(&raw_startup(CANCEL_REQUEST_CODE, &[0; 12])).is_err());
}

#[test]
fn rejects_bad_versions() {
    assert_eq!(
        decode_all(&raw_startup(2 << 16, b"\0")),
        Err(ProtocolError::UnsupportedVersion { major: 2, minor: 0 })
    );
    assert_eq!(
        decode_all(&raw_startup(1234 << 16 | 5681, b"")),
        Err(ProtocolError::UnsupportedVersion {
            major: 1234,
            minor: 5681
        })
    );
}

#[test]
fn rejects_bad_params() {
    let bad: [&[u8]; 7] = [
        b"",                    // no final NUL
        b"user\0alice\0",       // no final NUL
        b"user\0alice",         // value not terminated
        b"user\0",              // missing value
        b"user",                // name not terminated
        b"user\0\xff\xfe\0\0",  // not UTF-8
        b"user\0alice\0\0junk", // bytes after the final NUL
    ];
    for params in bad {
        let r = decode_all(&raw_startup(PROTOCOL_3_0, params));
        assert!(
            matches!(r, Err(ProtocolError::Malformed { .. })),
            "{params:?} gave {r:?}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        if len >= 4 {
            bytes[..4].copy_from_slice(&(len as i32).to_be_bytes());
        }
        let _ = decode_all(&bytes);
    }
}
