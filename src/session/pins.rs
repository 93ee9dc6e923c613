//! Which simple-query SQL creates session state that transaction pooling cannot move between server
//! connections, so the client must be pinned to its connection. Conservative: a false "pins" costs
//! multiplexing for one client; a false "does not pin" would leak state, so unknown shapes pin.

/// Why `sql` pins the client, or `None` if it creates no session state.
pub fn pins_session(sql: &str) -> Option<&'static str> {
    let mut statement = Vec::with_capacity(4);
    for word in words(sql) {
        if word == ";" {
            statement.clear();
            continue;
        }
        if let Some(reason) = advisory_lock(&word) {
            return Some(reason);
        }
        if statement.len() < 4 {
            statement.push(word);
            if let Some(reason) = leading(&statement) {
                return Some(reason);
            }
        } else if word == "hold" && statement[0] == "declare" {
            return Some("cursor WITH HOLD");
        }
    }
    None
}

/// Session state named by the first words of a statement.
fn leading(words: &[String]) -> Option<&'static str> {
    let first = words.first()?.as_str();
    let second = words.get(1).map(String::as_str);
    match (first, second) {
        ("set", None) => None,
        ("set", Some("local" | "transaction")) => None,
        ("set", Some(_)) => Some("SET"),
        ("reset", Some(_)) => Some("RESET"),
        ("discard", Some(_)) => Some("DISCARD"),
        ("listen", Some(_)) => Some("LISTEN"),
        ("prepare", Some("transaction")) => None,
        ("prepare", Some(_)) => Some("PREPARE"),
        ("deallocate", Some(_)) => Some("DEALLOCATE"),
        ("load", Some(_)) => Some("LOAD"),
        ("create", Some("temp" | "temporary" | "local" | "global")) => Some("temporary table"),
        _ => None,
    }
}

/// Session-level advisory locks outlive the transaction.
fn advisory_lock(word: &str) -> Option<&'static str> {
    (word.starts_with("pg_advisory_lock") || word.starts_with("pg_try_advisory_lock"))
        .then_some("session advisory lock")
}

/// Lower-cased identifier-like words and `;`, skipping comments, but not string contents (a keyword
/// inside a string can only cause an unneeded pin).
fn words(sql: &str) -> impl Iterator<Item = String> + '_ {
    let bytes = sql.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let c = bytes[i];
            if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            } else if c == b';' {
                i += 1;
                return Some(";".to_string());
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                return Some(sql[start..i].to_ascii_lowercase());
            } else {
                i += 1;
            }
        }
        None
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
        ] {
            assert!(pins_session(sql).is_none(), "{sql}");
        }
    }
}
