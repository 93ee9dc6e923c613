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

/// What `sql` does to session state.
pub fn query_effects(sql: &str) -> QueryEffects {
    if !may_touch_session(sql.as_bytes()) {
        return QueryEffects::default();
    }
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

/// False when `sql` cannot touch session state: none of [`SESSION_WORDS`] occurs in its bytes.
/// Keywords and function names cannot be escaped into other bytes (only quoted identifiers
/// take escapes, and those are never keywords), so whatever Postgres reads as such a statement
/// contains one of the words literally, in any lexing. A few byte comparisons per query
/// instead of the lexer for most application queries; a match only means "classify".
fn may_touch_session(sql: &[u8]) -> bool {
    sql.iter().enumerate().any(|(i, b)| {
        let first = b.to_ascii_lowercase();
        SESSION_WORDS.iter().any(|word| {
            word[0] == first
                && sql
                    .get(i..i + word.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(word))
        })
    })
}

/// Why `sql` pins the client, or `None` if it creates no session state that pins.
#[cfg(test)]
fn pins_session(sql: &str) -> Option<&'static str> {
    query_effects(sql).pin
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
    use super::{may_touch_session, pins_session, query_effects, QueryEffects};

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
            assert_eq!(query_effects(sql), QueryEffects::default(), "{sql}");
        }
        assert!(!may_touch_session(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 42"
        ));
        assert!(!may_touch_session("SELECT 'é'".as_bytes()));
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
            let effects = query_effects(sql);
            assert!(effects.pin.is_none() && effects.settings, "{sql}");
        }
        let discard = query_effects("DISCARD ALL");
        assert!(discard.pin.is_none() && discard.settings && discard.forget_all_statements);
        assert!(query_effects("DEALLOCATE ALL").forget_all_statements);
        assert_eq!(
            query_effects("deallocate prepare S1").deallocate.as_deref(),
            Some("s1")
        );
        assert_eq!(query_effects("DEALLOCATE a; SELECT 1").deallocate, None);
        assert_eq!(query_effects("SELECT 1"), QueryEffects::default());
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
