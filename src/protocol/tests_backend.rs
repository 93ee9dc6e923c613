//! Tests of backend messages: round trips, direct encoders and malformed bodies.

use bytes::{Bytes, BytesMut};

use super::backend::*;
use super::frame::{Frame, Framer};
use super::startup::CancelKey;
use super::ProtocolError;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn one_frame(out: &mut BytesMut) -> Frame {
    let f = Framer::new(1 << 20).next_frame(out).unwrap().unwrap();
    assert!(out.is_empty(), "exactly one frame encoded");
    f
}

fn decode_one(out: &mut BytesMut) -> BackendMessage {
    BackendMessage::decode(&one_frame(out)).unwrap()
}

fn samples() -> Vec<BackendMessage> {
    use Authentication as A;
    use BackendMessage as M;
    let auths = vec![
        A::Ok,
        A::KerberosV5,
        A::CleartextPassword,
        A::Md5Password {
            salt: [1, 2, 0, 255],
        },
        A::Gss,
        A::GssContinue(b("token")),
        A::Sspi,
        A::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
        },
        A::Sasl { mechanisms: vec![] },
        A::SaslContinue(b("r=abc,s=xyz,i=4096")),
        A::SaslFinal(b("v=sig")),
        A::SaslFinal(b("")),
    ];
    let mut v: Vec<M> = auths.into_iter().map(M::Authentication).collect();
    v.extend([
        M::BackendKeyData(CancelKey {
            process_id: 1234,
            secret_key: -99,
        }),
        M::BindComplete,
        M::CloseComplete,
        M::CommandComplete {
            tag: b("INSERT 0 1"),
        },
        M::CopyData(b("row\n")),
        M::CopyDone,
        M::CopyInResponse(b("\0\0\x01\0\0")),
        M::CopyOutResponse(b("\0\0\0")),
        M::CopyBothResponse(b("\0\0\0")),
        M::DataRow(Bytes::from_static(b"\0\x02\0\0\0\x011\xff\xff\xff\xff")),
        M::EmptyQueryResponse,
        M::ErrorResponse(
            ErrorFields::new("ERROR", "42P01", "no such table")
                .with_detail("d")
                .with_hint("h"),
        ),
        M::NoticeResponse(ErrorFields::new("NOTICE", "00000", "hello")),
        M::ErrorResponse(ErrorFields::default()),
        M::FunctionCallResponse(Bytes::from_static(b"\xff\xff\xff\xff")),
        M::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized: vec!["_pq_.x".into()],
        },
        M::NegotiateProtocolVersion {
            newest_minor: 2,
            unrecognized: vec![],
        },
        M::NoData,
        M::NotificationResponse {
            pid: 7,
            channel: b("chan"),
            payload: b(""),
        },
        M::ParameterDescription(b("\0\x01\0\0\0\x17")),
        M::ParameterStatus {
            name: "client_encoding".into(),
            value: "UTF8".into(),
        },
        M::ParseComplete,
        M::PortalSuspended,
        M::ReadyForQuery {
            status: TransactionStatus::Idle,
        },
        M::ReadyForQuery {
            status: TransactionStatus::InTransaction,
        },
        M::ReadyForQuery {
            status: TransactionStatus::Failed,
        },
        M::RowDescription(b("\0\0")),
    ]);
    v
}

#[test]
fn round_trip_every_message() {
    for msg in samples() {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let encoded = out.clone();
        let decoded = decode_one(&mut out);
        assert_eq!(decoded, msg);
        let mut again = BytesMut::new();
        decoded.encode(&mut again);
        assert_eq!(again, encoded, "{msg:?}");
    }
}

#[test]
fn error_fields_helpers() {
    let f =
        ErrorFields::new("FATAL", "28P01", "password authentication failed").with_hint("check it");
    assert_eq!(f.severity(), Some("FATAL"));
    assert_eq!(f.code(), Some("28P01"));
    assert_eq!(f.message(), Some("password authentication failed"));
    assert_eq!(f.get(b'H'), Some("check it"));
    assert_eq!(f.get(b'D'), None);
    let only_s = ErrorFields {
        fields: vec![(b'S', "ERREUR".into())],
    };
    assert_eq!(only_s.severity(), Some("ERREUR"));

    let mut out = BytesMut::new();
    encode_error(&f, &mut out);
    assert_eq!(
        decode_one(&mut out),
        BackendMessage::ErrorResponse(f.clone())
    );
    encode_notice(&f, &mut out);
    assert_eq!(decode_one(&mut out), BackendMessage::NoticeResponse(f));
}

#[test]
fn non_utf8_error_text_is_kept_lossily() {
    let f = Frame::new(tag::ERROR_RESPONSE, b"Mcaf\xe9\0\0");
    let BackendMessage::ErrorResponse(fields) = BackendMessage::decode(&f).unwrap() else {
        panic!("not an error");
    };
    assert_eq!(fields.message(), Some("caf\u{fffd}"));
}

#[test]
fn direct_encoders() {
    use BackendMessage as M;
    let mut out = BytesMut::new();
    encode_auth(&Authentication::Md5Password { salt: *b"salt" }, &mut out);
    assert_eq!(
        decode_one(&mut out),
        M::Authentication(Authentication::Md5Password { salt: *b"salt" })
    );
    encode_parameter_status("TimeZone", "UTC", &mut out);
    assert_eq!(
        decode_one(&mut out),
        M::ParameterStatus {
            name: "TimeZone".into(),
            value: "UTC".into()
        }
    );
    let key = CancelKey {
        process_id: 1,
        secret_key: 2,
    };
    encode_backend_key_data(key, &mut out);
    assert_eq!(decode_one(&mut out), M::BackendKeyData(key));
    encode_ready_for_query(TransactionStatus::Failed, &mut out);
    assert_eq!(&out[..], b"Z\0\0\0\x05E");
    assert_eq!(
        decode_one(&mut out),
        M::ReadyForQuery {
            status: TransactionStatus::Failed
        }
    );
    encode_negotiate_protocol_version(0, &["_pq_.a", "_pq_.b"], &mut out);
    assert_eq!(
        decode_one(&mut out),
        M::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized: vec!["_pq_.a".into(), "_pq_.b".into()]
        }
    );
    encode_command_complete("SELECT 1", &mut out);
    assert_eq!(
        decode_one(&mut out),
        M::CommandComplete { tag: b("SELECT 1") }
    );
}

#[test]
fn ready_for_query_status_hot_path() {
    assert_eq!(ready_for_query_status(b"I"), Ok(TransactionStatus::Idle));
    assert_eq!(
        ready_for_query_status(b"T"),
        Ok(TransactionStatus::InTransaction)
    );
    assert_eq!(ready_for_query_status(b"E"), Ok(TransactionStatus::Failed));
    for bad in [&b""[..], b"X", b"II"] {
        assert!(matches!(
            ready_for_query_status(bad),
            Err(ProtocolError::Malformed { .. })
        ));
    }
    for s in [
        TransactionStatus::Idle,
        TransactionStatus::InTransaction,
        TransactionStatus::Failed,
    ] {
        assert_eq!(ready_for_query_status(&[s.as_byte()]), Ok(s));
    }
}

#[test]
fn malformed_bodies_are_errors() {
    let cases: &[(u8, &[u8])] = &[
        (tag::AUTHENTICATION, b""),
        (tag::AUTHENTICATION, b"\0\0\0"),
        (tag::AUTHENTICATION, b"\0\0\0\x06"),    // unknown code
        (tag::AUTHENTICATION, b"\0\0\0\0x"),     // trailing after Ok
        (tag::AUTHENTICATION, b"\0\0\0\x05abc"), // short salt
        (tag::AUTHENTICATION, b"\0\0\0\x05abcde"), // long salt
        (tag::AUTHENTICATION, b"\0\0\0\x0aSCRAM\0"), // list not terminated
        (tag::AUTHENTICATION, b"\0\0\0\x0aSCRAM"), // name not terminated
        (tag::AUTHENTICATION, b"\0\0\0\x0a\0x"), // trailing
        (tag::BACKEND_KEY_DATA, b"\0\0\0\x01\0\0\0"),
        (tag::BACKEND_KEY_DATA, b"\0\0\0\x01\0\0\0\x02\0"),
        (tag::BIND_COMPLETE, b"x"),
        (tag::COMMAND_COMPLETE, b"SELECT"),
        (tag::ERROR_RESPONSE, b""),
        (tag::ERROR_RESPONSE, b"Mabc"),
        (tag::ERROR_RESPONSE, b"Mabc\0"),
        (tag::NOTICE_RESPONSE, b"\0x"),
        (tag::NEGOTIATE_PROTOCOL_VERSION, b"\0\0\0\0\0\0\0\x02a\0"),
        (tag::NEGOTIATE_PROTOCOL_VERSION, b"\0\0\0\0\x7f\xff\xff\xff"),
        (tag::NEGOTIATE_PROTOCOL_VERSION, b"\0\0\0\0\xff\xff\xff\xff"),
        (tag::NEGOTIATE_PROTOCOL_VERSION, b"\xff\0\0\0\0\0\0\0"),
        (tag::NOTIFICATION_RESPONSE, b"\0\0\0\x01chan\0"),
        (tag::PARAMETER_STATUS, b"a\0b"),
        (tag::PARAMETER_STATUS, b"a\0\xff\0"),
        (tag::READY_FOR_QUERY, b""),
        (tag::READY_FOR_QUERY, b"Q"),
    ];
    for (t, body) in cases {
        let r = BackendMessage::decode(&Frame::new(*t, body));
        assert!(
            matches!(r, Err(ProtocolError::Malformed { .. })),
            "{} {body:?}: {r:?}",
            *t as char
        );
    }
    assert_eq!(
        BackendMessage::decode(&Frame::new(b'Q', b"")),
        Err(ProtocolError::UnknownTag { tag: b'Q' })
    );
}

#[test]
fn truncations_never_panic() {
    for msg in samples() {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let body = &out[5..];
        for k in 0..body.len() {
            let _ = BackendMessage::decode(&Frame::new(out[0], &body[..k]));
        }
    }
}

#[test]
fn row_description_lists_columns_in_text_format() {
    let mut out = BytesMut::new();
    encode_row_description(
        &[("database", oid::TEXT), ("sv_active", oid::INT8)],
        &mut out,
    );
    let frame = one_frame(&mut out);
    assert_eq!(frame.tag(), tag::ROW_DESCRIPTION);
    let mut expected = vec![0u8, 2];
    expected.extend_from_slice(b"database\0");
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff]);
    expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
    expected.extend_from_slice(b"sv_active\0");
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 8]);
    expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
    assert_eq!(frame.body(), &expected[..]);
}

#[test]
fn data_row_encodes_values_and_nulls() {
    let mut out = BytesMut::new();
    encode_data_row(&[Some("ab"), None, Some("")], &mut out);
    let frame = one_frame(&mut out);
    assert_eq!(frame.tag(), tag::DATA_ROW);
    let expected = [
        0u8, 3, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
    ];
    assert_eq!(frame.body(), &expected[..]);
    encode_empty_query_response(&mut out);
    assert_eq!(decode_one(&mut out), BackendMessage::EmptyQueryResponse);
}

#[test]
fn error_code_finds_the_sqlstate_without_decoding() {
    let mut out = BytesMut::new();
    let fields = ErrorFields::new("ERROR", "25006", "read-only").with_detail("d");
    encode_error(&fields, &mut out);
    let frame = one_frame(&mut out);
    assert_eq!(error_code(frame.body()), Some(&b"25006"[..]));
    assert_eq!(error_code(b"SERROR\0Mno code\0\0"), None);
    assert_eq!(error_code(b"SERROR"), None);
    assert_eq!(error_code(b""), None);
}
