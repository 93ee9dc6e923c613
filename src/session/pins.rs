//! Which simple-query SQL creates session state that transaction pooling cannot move between server
//! connections, so the client must be pinned to its connection. Decided by the router's SQL
//! classifier (a real lexer: keywords inside strings, comments and dollar quotes do not count).
//! Fails closed: SQL the lexer cannot read pins.

use crate::router::classify::{classify, ClassifierConfig, SessionEffect};

/// Why `sql` pins the client, or `None` if it creates no session state.
pub fn pins_session(sql: &str) -> Option<&'static str> {
    // Writing functions do not matter for pinning; an empty list allocates nothing.
    let config = ClassifierConfig {
        writing_functions: Vec::new(),
        standard_conforming_strings: true,
    };
    let classification = classify(sql, &config);
    if classification.malformed.is_some() {
        return Some("SQL the proxy cannot read");
    }
    classification.session_state.iter().find_map(reason)
}

/// The reason shown in logs for one kind of session state; UNLISTEN only removes state.
fn reason(effect: &SessionEffect) -> Option<&'static str> {
    Some(match effect {
        SessionEffect::Set { .. } => "SET",
        SessionEffect::SetConfig => "set_config()",
        SessionEffect::Reset { .. } => "RESET",
        SessionEffect::Discard(_) => "DISCARD",
        SessionEffect::Listen { .. } => "LISTEN",
        SessionEffect::Unlisten { .. } => return None,
        SessionEffect::Prepare { .. } => "PREPARE",
        SessionEffect::Deallocate { .. } => "DEALLOCATE",
        SessionEffect::DeclareWithHold { .. } => "cursor WITH HOLD",
        SessionEffect::CreateTemp => "temporary table",
        SessionEffect::AdvisoryLock { .. } => "session advisory lock",
        SessionEffect::Load { .. } => "LOAD",
    })
}

#[cfg(test)]
mod tests {
    use super::pins_session;

    #[test]
    fn session_state_pins() {
        for sql in [
            "SET search_path = a",
            "set session statement_timeout = 5",
            "SELECT 1; SET TimeZone TO 'UTC'",
            "RESET ALL",
            "DISCARD ALL",
            "LISTEN chan",
            "PREPARE p AS SELECT 1",
            "DEALLOCATE p",
            "CREATE TEMP TABLE t(x int)",
            "create temporary table t(x int)",
            "SELECT pg_advisory_lock(1)",
            "select pg_try_advisory_lock_shared(1)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "/* hi */ SET x.y = 1",
        ] {
            assert!(pins_session(sql).is_some(), "{sql}");
        }
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
