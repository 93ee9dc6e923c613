//! Tests of frontend messages: round trips, helper encoders and malformed bodies.

use bytes::{Bytes, BytesMut};

use super::frame::{Frame, Framer};
use super::frontend::*;
use super::ProtocolError;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn one_frame(out: &mut BytesMut) -> Frame {
    let f = Framer::new(1 << 20).next_frame(out).unwrap().unwrap();
    assert!(out.is_empty(), "exactly one frame encoded");
    f
}

fn samples() -> Vec<FrontendMessage> {
    use FrontendMessage as M;
    vec![
        M::Bind(Bind::new(
            b"",
            b"s1",
            &[1],
            &[Some(b"42"), None, Some(b"")],
            &[0, 1],
        )),
        M::Bind(Bind::new(b"p", b"", &[], &[], &[])),
        M::Close {
            kind: b'S',
            name: b("s1"),
        },
        M::Close {
            kind: b'P',
            name: b(""),
        },
        M::CopyData(b("1\t2\n")),
        M::CopyData(b("")),
        M::CopyDone,
        M::CopyFail { message: b("boom") },
        M::Describe {
            kind: b'P',
            name: b("p1"),
        },
        M::Execute {
            portal: b(""),
            max_rows: 0,
        },
        M::Execute {
            portal: b("p"),
            max_rows: 100,
        },
        M::Flush,
        M::FunctionCall(b("\0\0\0\x01\0\0\0\0\0\0")),
        M::Parse(Parse {
            name: b("s1"),
            sql: b("SELECT $1, $2"),
            param_types: vec![23, 0],
        }),
        M::Parse(Parse {
            name: b(""),
            sql: b(""),
            param_types: vec![],
        }),
        M::Password(b("secret\0")),
        M::Query { sql: b("SELECT 1") },
        M::Sync,
        M::Terminate,
    ]
}

#[test]
fn round_trip_every_message() {
    for msg in samples() {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let encoded = out.clone();
        let frame = one_frame(&mut out);
        let decoded = FrontendMessage::decode(&frame).unwrap();
        assert_eq!(decoded, msg);
        let mut again = BytesMut::new();
        decoded.encode(&mut again);
        assert_eq!(again, encoded, "{msg:?}");
    }
}

#[test]
fn decoded_names_are_zero_copy() {
    let frame = Frame::new(tag::QUERY, b"SELECT 1\0");
    let FrontendMessage::Query { sql } = FrontendMessage::decode(&frame).unwrap() else {
        panic!("not a query");
    };
    let start = frame.as_bytes().as_ptr() as usize + 5;
    assert_eq!(sql.as_ptr() as usize, start);
}

#[test]
fn bind_accessors() {
    let bind = Bind::new(b"portal", b"stmt", &[0, 1], &[Some(b"x"), None], &[1]);
    assert_eq!(&bind.portal[..], b"portal");
    assert_eq!(&bind.statement[..], b"stmt");
    assert_eq!(bind.param_count(), 2);
    let again = Bind::from_body(bind.body().clone()).unwrap();
    assert_eq!(again, bind);
}

#[test]
fn helper_encoders() {
    let mut out = BytesMut::new();
    encode_query("SELECT 1", &mut out);
    let f = one_frame(&mut out);
    assert_eq!(
        FrontendMessage::decode(&f).unwrap(),
        FrontendMessage::Query { sql: b("SELECT 1") }
    );

    encode_sync(&mut out);
    assert_eq!(
        FrontendMessage::decode(&one_frame(&mut out)).unwrap(),
        FrontendMessage::Sync
    );
    encode_terminate(&mut out);
    assert_eq!(
        FrontendMessage::decode(&one_frame(&mut out)).unwrap(),
        FrontendMessage::Terminate
    );

    encode_password("md5abc", &mut out);
    let f = one_frame(&mut out);
    assert_eq!(f.tag(), tag::PASSWORD);
    assert_eq!(parse_password(f.body()), Ok("md5abc"));

    encode_sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", &mut out);
    let f = one_frame(&mut out);
    assert_eq!(
        parse_sasl_initial_response(f.body()),
        Ok(("SCRAM-SHA-256", &b"n,,n=,r=abc"[..]))
    );

    encode_sasl_response(b"c=biws,r=abc", &mut out);
    let f = one_frame(&mut out);
    assert_eq!(
        FrontendMessage::decode(&f).unwrap(),
        FrontendMessage::Password(b("c=biws,r=abc"))
    );
}

#[test]
fn password_parsers_reject_malformed() {
    assert_eq!(
        parse_sasl_initial_response(b"M\0\xff\xff\xff\xff"),
        Ok(("M", &b""[..]))
    );
    assert!(parse_password(b"abc").is_err());
    assert!(parse_password(b"abc\0x").is_err());
    assert!(parse_password(b"\xff\0").is_err());
    assert!(parse_sasl_initial_response(b"M\0\0\0\0\x05abc").is_err());
    assert!(parse_sasl_initial_response(b"M\0\xff\xff\xff\xfe").is_err());
    assert!(parse_sasl_initial_response(b"M\0\0\0").is_err());
    assert!(parse_sasl_initial_response(b"M\0\0\0\0\x01ab").is_err());
}

#[test]
fn malformed_bodies_are_errors() {
    let cases: &[(u8, &[u8])] = &[
        (tag::BIND, b""),
        (tag::BIND, b"\0\0"),
        (tag::BIND, b"\0\0\0\0\0\0\0"),
        (tag::BIND, b"\0\0\0\x01\0"), // format array truncated
        (tag::BIND, b"\0\0\0\0\0\x01\0\0\0\x05ab\0\0"), // value truncated
        (tag::BIND, b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"), // length < -1
        (tag::BIND, b"\0\0\xff\xff\0\0\0\0"), // negative count
        (tag::BIND, b"\0\0\0\0\0\0\0\0x"), // trailing
        (tag::CLOSE, b"X\0"),
        (tag::CLOSE, b"S"),
        (tag::DESCRIBE, b""),
        (tag::DESCRIBE, b"Pname"),
        (tag::COPY_DONE, b"x"),
        (tag::COPY_FAIL, b"oops"),
        (tag::EXECUTE, b"\0\0\0"),
        (tag::EXECUTE, b"\0\0\0\0\0\0"),
        (tag::FLUSH, b"\0"),
        (tag::PARSE, b"s\0SELECT\0\0\x01\0\0"),
        (tag::PARSE, b"s\0SELECT\0\xff\xff"),
        (tag::PARSE, b"s\0SELECT"),
        (tag::QUERY, b"SELECT 1"),
        (tag::QUERY, b"SELECT 1\0\0"),
        (tag::SYNC, b"x"),
        (tag::TERMINATE, b"x"),
    ];
    for (t, body) in cases {
        let r = FrontendMessage::decode(&Frame::new(*t, body));
        assert!(
            matches!(r, Err(ProtocolError::Malformed { .. })),
            "{} {body:?}: {r:?}",
            *t as char
        );
    }
    assert_eq!(
        FrontendMessage::decode(&Frame::new(b'Z', b"")),
        Err(ProtocolError::UnknownTag { tag: b'Z' })
    );
}

#[test]
fn truncations_never_panic() {
    for msg in samples() {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let body = &out[5..];
        for k in 0..body.len() {
            let _ = FrontendMessage::decode(&Frame::new(out[0], &body[..k]));
        }
    }
}
