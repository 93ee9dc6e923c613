//! Which simple-query SQL creates session state that transaction pooling cannot move between server
//! connections, so the client must be pinned to its connection. Decided by the router's SQL
//! classifier (a real lexer: keywords inside strings, comments and dollar quotes do not count).
//! Fails closed: SQL the lexer cannot read pins, unless none of the words a session statement
//! needs occurs in it (then it has no session effect however it is read, and is not lexed at
//! all: the common case costs a byte scan). Settings (SET, RESET, set_config) do not pin:
//! they are tracked and moved with the client; DEALLOCATE and DISCARD ALL act on the client's view.

use crate::router::classify::{classify, ClassifierConfig, DiscardScope, SessionEffect};

/// What a query string does to session state, as far as transaction pooling cares.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueryEffects {
    /// Why the client must keep its server connection, if it must.
    pub pin: Option<&'static str>,
    /// It may change session settings (SET, RESET, set_config, DISCARD ALL): read them back.
    pub settings: bool,
    /// `DEALLOCATE ALL` or `DISCARD ALL`: the client's named statements are all gone.
    pub forget_all_statements: bool,
    /// `DEALLOCATE name` as the whole query string: that client statement is gone.
    pub deallocate: Option<String>,
}

/// What `sql` (a query string's bytes, in any ASCII-compatible client encoding) does to session
/// state. Bytes that are not UTF-8 and spell a session word pin: the lexer cannot read them.
pub fn query_effects(sql: &[u8]) -> QueryEffects {
    if !may_touch_session(sql) {
        return QueryEffects::default();
    }
    let Ok(sql) = std::str::from_utf8(sql) else {
        return QueryEffects {
            pin: Some("SQL the proxy cannot read"),
            ..QueryEffects::default()
        };
    };
    // Writing functions do not matter here; an empty list allocates nothing.
    let config = ClassifierConfig {
        writing_functions: Vec::new(),
        standard_conforming_strings: true,
    };
    let classification = classify(sql, &config);
    let mut effects = QueryEffects::default();
    if classification.malformed.is_some() {
        effects.pin = Some("SQL the proxy cannot read");
        return effects;
    }
    for effect in &classification.session_state {
        match effect {
            SessionEffect::Set { .. } | SessionEffect::SetConfig | SessionEffect::Reset { .. } => {
                effects.settings = true
            }
            SessionEffect::Discard(DiscardScope::All) => {
                effects.settings = true;
                effects.forget_all_statements = true;
            }
            SessionEffect::Deallocate { name: None } => effects.forget_all_statements = true,
            SessionEffect::Deallocate { name: Some(name) } if classification.statements == 1 => {
                effects.deallocate = Some(name.clone())
            }
            _ => {}
        }
        if effects.pin.is_none() {
            effects.pin = reason(effect);
        }
    }
    effects
}

/// Words at least one of which (ignoring ASCII case) every statement or call with a session
/// effect spells out: SET/RESET/set_config, LISTEN/UNLISTEN, PREPARE, DEALLOCATE, DISCARD,
/// TEMP/TEMPORARY/pg_temp, WITH HOLD, the advisory lock functions, LOAD.
const SESSION_WORDS: [&[u8]; 9] = [
    b"set",
    b"listen",
    b"prepare",
    b"dealloc",
    b"discard",
    b"temp",
    b"hold",
    b"advisory",
    b"load",
];

/// Bit `w` is set in `FIRST[b]` when byte `b` is the first letter of `SESSION_WORDS[w]` in either
/// case, and in `SECOND[b]` when it is the second.
const FIRST: [u16; 256] = letter_table(0);
const SECOND: [u16; 256] = letter_table(1);

const fn letter_table(position: usize) -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut w = 0;
    while w < SESSION_WORDS.len() {
        let letter = SESSION_WORDS[w][position];
        table[letter as usize] |= 1 << w;
        table[letter.to_ascii_uppercase() as usize] |= 1 << w;
        w += 1;
    }
    table
}

/// False when `sql` cannot touch session state: none of [`SESSION_WORDS`] occurs in its bytes.
/// Keywords and function names cannot be escaped into other bytes (only quoted identifiers
/// take escapes, and those are never keywords), and every client encoding Postgres accepts is
/// a superset of ASCII, so whatever Postgres reads as such a statement contains one of the words
/// literally, in any lexing. Two table lookups per byte pair pick the rare positions where a
/// word may start; a match only means "classify".
fn may_touch_session(sql: &[u8]) -> bool {
    sql.windows(2).enumerate().any(|(i, pair)| {
        let mut candidates = FIRST[pair[0] as usize] & SECOND[pair[1] as usize];
        while candidates != 0 {
            let word = SESSION_WORDS[candidates.trailing_zeros() as usize];
            if sql
                .get(i..i + word.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(word))
            {
                return true;
            }
            candidates &= candidates - 1;
        }
        false
    })
}

/// Why `sql` pins the client, or `None` if it creates no session state that pins.
#[cfg(test)]
fn pins_session(sql: &str) -> Option<&'static str> {
    query_effects(sql.as_bytes()).pin
}

/// The reason shown in logs for session state that cannot move between server connections.
fn reason(effect: &SessionEffect) -> Option<&'static str> {
    Some(match effect {
        SessionEffect::Set { .. }
        | SessionEffect::SetConfig
        | SessionEffect::Reset { .. }
        | SessionEffect::Unlisten { .. } => return None,
        SessionEffect::Discard(_) => return None,
        SessionEffect::Listen { .. } => "LISTEN",
        SessionEffect::Prepare { .. } => "PREPARE",
        SessionEffect::Deallocate { .. } => return None,
        SessionEffect::DeclareWithHold { .. } => "cursor WITH HOLD",
        SessionEffect::CreateTemp => "temporary table",
        SessionEffect::AdvisoryLock { .. } => "session advisory lock",
        SessionEffect::Load { .. } => "LOAD",
    })
}

#[cfg(test)]
mod tests {
    use super::{may_touch_session, pins_session, query_effects, QueryEffects, SESSION_WORDS};

    #[test]
    fn the_prefilter_passes_every_statement_with_an_effect() {
        for sql in [
            "LISTEN c",
            "unlisten *",
            "PREPARE p AS SELECT 1",
            "DEALLOCATE p",
            "discard all",
            "CREATE TEMP TABLE t(x int)",
            "create temporary table t(x int)",
            "CREATE TABLE pg_temp.t(x int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "SELECT \"pg_try_advisory_lock\"(1)",
            "LOAD 'auto_explain'",
            "SET x = 1",
            "ReSeT ALL",
            "SELECT set_config('a', 'b', false)",
        ] {
            assert!(may_touch_session(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
            "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1",
            "select 1",
            "",
        ] {
            assert_eq!(
                query_effects(sql.as_bytes()),
                QueryEffects::default(),
                "{sql}"
            );
        }
        assert!(!may_touch_session(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 42"
        ));
        assert!(!may_touch_session("SELECT 'é'".as_bytes()));
    }

    /// The table-driven prefilter agrees with a plain substring search, at every offset, in
    /// both cases, next to every other byte.
    #[test]
    fn the_prefilter_matches_a_substring_search() {
        let naive = |sql: &[u8]| {
            SESSION_WORDS.iter().any(|word| {
                sql.windows(word.len())
                    .any(|window| window.eq_ignore_ascii_case(word))
            })
        };
        for word in SESSION_WORDS {
            let upper = word.to_ascii_uppercase();
            for filler in [&b""[..], b"x", b"se", b"\xff", b"pg_", b"SE"] {
                for w in [word, &upper[..], &word[..word.len() - 1]] {
                    let mut sql = filler.to_vec();
                    sql.extend_from_slice(w);
                    sql.extend_from_slice(filler);
                    assert_eq!(may_touch_session(&sql), naive(&sql), "{sql:?}");
                }
            }
        }
        for sql in ["se", "s", "", "seT", "xdealloc", "DEALLO", "holD", "ho"] {
            assert_eq!(
                may_touch_session(sql.as_bytes()),
                naive(sql.as_bytes()),
                "{sql}"
            );
        }
    }

    #[test]
    fn unreadable_bytes_pin_only_when_they_spell_a_session_word() {
        assert_eq!(query_effects(b"SELECT '\xff'"), QueryEffects::default());
        assert!(query_effects(b"SELECT '\xff'; LISTEN c").pin.is_some());
    }

    #[test]
    fn session_state_pins() {
        for sql in [
            "LISTEN chan",
            "PREPARE p AS SELECT 1",
            "CREATE TEMP TABLE t(x int)",
            "create temporary table t(x int)",
            "SELECT pg_advisory_lock(1)",
            "select pg_try_advisory_lock_shared(1)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "/* hi */ LISTEN x",
            "SELECT 1; SELECT pg_advisory_lock(2)",
        ] {
            assert!(pins_session(sql).is_some(), "{sql}");
        }
    }

    #[test]
    fn settings_are_tracked_and_statements_forgotten_not_pinned() {
        for sql in [
            "SET search_path = a",
            "set session statement_timeout = 5",
            "SELECT 1; SET TimeZone TO 'UTC'",
            "RESET ALL",
            "/* hi */ SET x.y = 1",
            "SELECT set_config('a.b', '1', false)",
        ] {
            let effects = query_effects(sql.as_bytes());
            assert!(effects.pin.is_none() && effects.settings, "{sql}");
        }
        let discard = query_effects(b"DISCARD ALL");
        assert!(discard.pin.is_none() && discard.settings && discard.forget_all_statements);
        assert!(query_effects(b"DEALLOCATE ALL").forget_all_statements);
        assert_eq!(
            query_effects(b"deallocate prepare S1")
                .deallocate
                .as_deref(),
            Some("s1")
        );
        assert_eq!(query_effects(b"DEALLOCATE a; SELECT 1").deallocate, None);
        assert_eq!(query_effects(b"SELECT 1"), QueryEffects::default());
    }

    #[test]
    fn transaction_scoped_statements_do_not_pin() {
        for sql in [
            "SELECT 1",
            "UPDATE t SET x = 1",
            "BEGIN; SET LOCAL statement_timeout = 5; COMMIT",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SELECT pg_advisory_xact_lock(1)",
            "DECLARE c CURSOR FOR SELECT 1",
            "CREATE TABLE t(x int)",
            "-- SET x = 1\nSELECT 2",
            "INSERT INTO settings VALUES (1)",
            "SELECT 'SET x = 1', $$LISTEN c$$",
        ] {
            assert!(pins_session(sql).is_none(), "{sql}");
        }
    }
}
