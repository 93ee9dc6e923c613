//! Tests of the SCRAM server against postgres-protocol's independent SCRAM client.

use postgres_protocol::authentication::sasl::{self, ScramSha256};

use super::*;

/// Runs a whole exchange with postgres-protocol's client; returns the server's verdict, and checks
/// that the client accepts the server signature on success.
fn exchange(
    verifier: ScramVerifier,
    server_binding: ChannelBinding,
    password: &str,
    client_binding: sasl::ChannelBinding,
    mechanism: &str,
) -> Result<(), AuthError> {
    let mut server = ScramServer::new(verifier, server_binding);
    let mut client = ScramSha256::new(password.as_bytes(), client_binding);
    let server_first = server.client_first(mechanism, client.message())?;
    client
        .update(&server_first)
        .expect("client accepts server-first");
    let server_final = server.client_final(client.message())?;
    client
        .finish(&server_final)
        .expect("client accepts server signature");
    Ok(())
}

fn plain_exchange(verifier: ScramVerifier, password: &str) -> Result<(), AuthError> {
    exchange(
        verifier,
        ChannelBinding::None,
        password,
        sasl::ChannelBinding::unsupported(),
        SCRAM_SHA_256,
    )
}

/// Server after a valid client-first with client nonce "abc"; returns the full nonce.
fn after_first(flag: &str) -> (ScramServer, String) {
    let mut server = ScramServer::new(ScramVerifier::generate("pw"), ChannelBinding::None);
    let reply = server
        .client_first(SCRAM_SHA_256, format!("{flag}n=,r=abc").as_bytes())
        .unwrap();
    let reply = String::from_utf8(reply).unwrap();
    let nonce = reply
        .split(',')
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .unwrap();
    (server, nonce.to_owned())
}

#[test]
fn exchange_succeeds_with_postgres_protocol_client() {
    assert_eq!(
        plain_exchange(ScramVerifier::generate("secret"), "secret"),
        Ok(())
    );
    // "y,,": client supports binding but we did not offer it.
    let result = exchange(
        ScramVerifier::generate("secret"),
        ChannelBinding::None,
        "secret",
        sasl::ChannelBinding::unrequested(),
        SCRAM_SHA_256,
    );
    assert_eq!(result, Ok(()));
}

#[test]
fn wrong_password_is_rejected() {
    assert_eq!(
        plain_exchange(ScramVerifier::generate("secret"), "Secret"),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn postgres_verifier_round_trips_and_authenticates() {
    let text = postgres_protocol::password::scram_sha_256(b"p@ss word");
    let verifier = ScramVerifier::parse(&text).unwrap();
    assert_eq!(verifier.to_string(), text);
    assert_eq!(verifier.iterations, DEFAULT_ITERATIONS);
    // Our derivation from the same salt gives the same verifier.
    let derived = ScramVerifier::from_password("p@ss word", &verifier.salt, verifier.iterations);
    assert_eq!(derived, verifier);
    assert_eq!(plain_exchange(verifier.clone(), "p@ss word"), Ok(()));
    assert_eq!(
        plain_exchange(verifier, "p@ss"),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn generated_verifier_parses_back() {
    let v = ScramVerifier::generate("pw");
    assert_eq!(v.salt.len(), SALT_LEN);
    assert_eq!(ScramVerifier::parse(&v.to_string()), Ok(v.clone()));
    assert_ne!(ScramVerifier::generate("pw").salt, v.salt);
}

#[test]
fn invalid_verifiers_are_rejected() {
    let good = ScramVerifier::generate("pw").to_string();
    let bad = [
        String::new(),
        "SCRAM-SHA-256$".into(),
        good.replacen("SCRAM-SHA-256", "SCRAM-SHA-1", 1),
        good.replacen("$4096:", "$0:", 1),
        good.replacen("$4096:", "$x:", 1),
        good.replacen("$4096:", "$4096", 1),
        good.replacen("$4096:", "$4096::", 1),
        good.rsplit_once(':').unwrap().0.to_owned(),
        format!("{good}AAAA"),
        good.replacen(':', "$", 2),
    ];
    for text in bad {
        assert!(
            matches!(
                ScramVerifier::parse(&text),
                Err(AuthError::InvalidVerifier(_))
            ),
            "{text:?}"
        );
    }
}

#[test]
fn mock_is_stable_per_name_and_key_and_never_authenticates() {
    let key = [7u8; 32];
    let a = ScramVerifier::mock("alice", &key);
    assert_eq!(a, ScramVerifier::mock("alice", &key));
    assert_ne!(a.salt, ScramVerifier::mock("bob", &key).salt);
    assert_ne!(a, ScramVerifier::mock("alice", &[8u8; 32]));
    assert_eq!(a.salt.len(), SALT_LEN);
    assert_eq!(a.iterations, DEFAULT_ITERATIONS);
    assert_eq!(plain_exchange(a, ""), Err(AuthError::WrongPassword));
}

#[test]
fn debug_is_redacted() {
    let v = ScramVerifier::generate("pw");
    let shown = format!("{v:?}");
    assert!(!shown.contains(&STANDARD.encode(v.stored_key)));
    assert!(!shown.contains(&STANDARD.encode(&v.salt)));
    let server = ScramServer::new(v, ChannelBinding::TlsServerEndPoint(vec![0xab; 32]));
    assert!(format!("{server:?}").contains("AwaitingClientFirst"));
}

#[test]
fn mechanisms_depend_on_binding() {
    let v = ScramVerifier::generate("pw");
    let plain = ScramServer::new(v.clone(), ChannelBinding::None);
    assert_eq!(plain.mechanisms(), vec![SCRAM_SHA_256]);
    let tls = ScramServer::new(v, ChannelBinding::TlsServerEndPoint(vec![1; 32]));
    assert_eq!(tls.mechanisms(), vec![SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
}

#[test]
fn channel_binding_plus_exchange() {
    let hash = tls_server_end_point(b"not really a certificate");
    let run = |client_hash: Vec<u8>| {
        exchange(
            ScramVerifier::generate("pw"),
            ChannelBinding::TlsServerEndPoint(hash.clone()),
            "pw",
            sasl::ChannelBinding::tls_server_end_point(client_hash),
            SCRAM_SHA_256_PLUS,
        )
    };
    assert_eq!(run(hash.clone()), Ok(()));
    assert_eq!(run(vec![0; 32]), Err(AuthError::ChannelBindingMismatch));
}

#[test]
fn channel_binding_flag_must_fit_mechanism_and_offer() {
    let v = ScramVerifier::generate("pw");
    let offered = ChannelBinding::TlsServerEndPoint(vec![1; 32]);
    let try_first = |binding: &ChannelBinding, mechanism: &str, msg: &str| {
        ScramServer::new(v.clone(), binding.clone()).client_first(mechanism, msg.as_bytes())
    };
    let none = ChannelBinding::None;
    let mismatch = Err(AuthError::ChannelBindingMismatch);
    // "y" while we offered -PLUS: downgrade.
    assert_eq!(try_first(&offered, SCRAM_SHA_256, "y,,n=,r=a"), mismatch);
    // "p=" needs -PLUS; -PLUS needs "p=".
    assert_eq!(
        try_first(&offered, SCRAM_SHA_256, "p=tls-server-end-point,,n=,r=a"),
        mismatch
    );
    assert_eq!(
        try_first(&offered, SCRAM_SHA_256_PLUS, "n,,n=,r=a"),
        mismatch
    );
    assert_eq!(
        try_first(&offered, SCRAM_SHA_256_PLUS, "y,,n=,r=a"),
        mismatch
    );
    assert_eq!(
        try_first(&offered, SCRAM_SHA_256_PLUS, "p=tls-unique,,n=,r=a"),
        mismatch
    );
    // -PLUS when not offered, and unknown mechanisms.
    for mechanism in [SCRAM_SHA_256_PLUS, "SCRAM-SHA-1", ""] {
        assert_eq!(
            try_first(&none, mechanism, "n,,n=,r=a"),
            Err(AuthError::UnsupportedMechanism(mechanism.to_owned()))
        );
    }
    // "n" is fine either way.
    assert!(try_first(&offered, SCRAM_SHA_256, "n,,n=,r=a").is_ok());
    assert!(try_first(&none, SCRAM_SHA_256, "n,,n=user,r=a,x=ext").is_ok());
}

#[test]
fn malformed_client_first_is_an_error() {
    let cases: [&[u8]; 14] = [
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=,r=a",
        b"p=,,n=,r=a",
        b"n,b=zz,n=,r=a",
        b"n,,r=a",
        b"n,,n=",
        b"n,,n=,r=",
        b"n,,n=,r=a\x01b",
        b"n,,m=ext,n=,r=a",
        b"n,,n=,r=a,bogus",
        b"n,,n=,r=\xff",
    ];
    for data in cases {
        let mut server = ScramServer::new(ScramVerifier::generate("pw"), ChannelBinding::None);
        let result = server.client_first(SCRAM_SHA_256, data);
        assert!(
            matches!(result, Err(AuthError::Malformed(_))),
            "{data:?}: {result:?}"
        );
        // The exchange is over after an error.
        assert!(server.client_final(b"c=biws,r=a,p=").is_err());
    }
}

#[test]
fn authzid_is_ignored_but_echoed_in_binding() {
    let (mut server, nonce) = after_first("n,a=someone,");
    // c= must be the exact gs2 header including the authzid; "biws" ("n,,") is a mismatch.
    let msg = format!("c=biws,r={nonce},p={}", STANDARD.encode([0u8; 32]));
    assert_eq!(
        server.client_final(msg.as_bytes()),
        Err(AuthError::ChannelBindingMismatch)
    );
    let (mut server, nonce) = after_first("n,a=someone,");
    let cbind = STANDARD.encode("n,a=someone,");
    let msg = format!("c={cbind},r={nonce},p={}", STANDARD.encode([0u8; 32]));
    assert_eq!(
        server.client_final(msg.as_bytes()),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn malformed_client_final_is_an_error() {
    let proof = STANDARD.encode([0u8; 32]);
    let short = STANDARD.encode([0u8; 31]);
    let cases = |nonce: &str| {
        vec![
            (String::new(), "missing proof"),
            (format!("c=biws,r={nonce}"), "missing proof"),
            (format!("c=biws,r={nonce},p=!!!"), "bad proof base64"),
            (format!("c=biws,r={nonce},p={short}"), "short proof"),
            (format!("c=biws,p={proof}"), "missing nonce"),
            (format!("r={nonce},p={proof}"), "missing c"),
            (format!("c=@@,r={nonce},p={proof}"), "bad c base64"),
            (format!("c=biws,r={nonce}x,p={proof}"), "wrong nonce"),
            (format!("c=biws,r=abc,p={proof}"), "client nonce only"),
            (format!("c=biws,r={nonce},bad,p={proof}"), "bad extension"),
            (format!("c=biws,r={nonce},p={proof},x=1"), "proof not last"),
        ]
    };
    for i in 0..cases("").len() {
        // Each server has a fresh random nonce, so build the case for this one.
        let (mut server, nonce) = after_first("n,,");
        let (msg, why) = cases(&nonce).swap_remove(i);
        let result = server.client_final(msg.as_bytes());
        assert!(
            matches!(result, Err(AuthError::Malformed(_))),
            "{why}: {result:?}"
        );
    }
    // Channel-binding data differs: "y,," instead of "n,,".
    let (mut server, nonce) = after_first("n,,");
    let msg = format!("c=eSws,r={nonce},p={proof}");
    assert_eq!(
        server.client_final(msg.as_bytes()),
        Err(AuthError::ChannelBindingMismatch)
    );
    // Not UTF-8.
    let (mut server, _) = after_first("n,,");
    assert!(matches!(
        server.client_final(b"c=\xff"),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn messages_out_of_order_are_errors() {
    let mut server = ScramServer::new(ScramVerifier::generate("pw"), ChannelBinding::None);
    assert!(matches!(
        server.client_final(b"c=biws,r=a,p="),
        Err(AuthError::Malformed(_))
    ));
    let (mut server, _) = after_first("n,,");
    assert!(matches!(
        server.client_first(SCRAM_SHA_256, b"n,,n=,r=a"),
        Err(AuthError::Malformed(_))
    ));
}
