//! SQLSTATE codes the proxy reports or recognises, and their class.

/// 00000: success (used in notices).
pub const SUCCESSFUL_COMPLETION: &str = "00000";
/// 01000: warning (used in the proxy's own notices).
pub const WARNING: &str = "01000";
/// 57P05: a client idle longer than allowed was disconnected.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// 08P01: the peer broke the wire protocol.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// 08006: a server connection failed.
pub const CONNECTION_FAILURE: &str = "08006";
/// 08000: generic connection problem.
pub const CONNECTION_EXCEPTION: &str = "08000";
/// 08001: no server connection could be established.
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
/// 28000: the user or database is not allowed.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// 42501: the user lacks a privilege (e.g. may not use the admin console).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// 42601: syntax error (e.g. unknown admin console command).
pub const SYNTAX_ERROR: &str = "42601";
/// F0000: the configuration file could not be (re)loaded.
pub const CONFIG_FILE_ERROR: &str = "F0000";
/// 28P01: authentication failed.
pub const INVALID_PASSWORD: &str = "28P01";
/// 3D000: unknown database.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// 53300: connection limit reached.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// 57014: the query was cancelled.
pub const QUERY_CANCELED: &str = "57014";
/// 57P01: shutting down.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// 57P03: not accepting connections right now (starting up, paused).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// 25006: a write was sent to a read-only node or transaction.
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// 0A000: the proxy does not support the request.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// XX000: a bug or unexpected state in the proxy.
pub const INTERNAL_ERROR: &str = "XX000";
/// 54000: a limit such as the maximum message size was exceeded.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// 25P03: idle in transaction for too long.
pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
/// 42704: an object (e.g. a prepared statement) does not exist.
pub const UNDEFINED_OBJECT: &str = "42704";
/// 53400: a configured limit was reached.
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";

/// The class of a SQLSTATE (its first two characters), or "" if `code` is not five ASCII
/// alphanumerics.
pub fn class(code: &str) -> &str {
    let well_formed = code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric());
    match code.get(..2) {
        Some(c) if well_formed => c,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_of_codes() {
        assert_eq!(class(PROTOCOL_VIOLATION), "08");
        assert_eq!(class(QUERY_CANCELED), "57");
        assert_eq!(class(INTERNAL_ERROR), "XX");
        assert_eq!(class(""), "");
        assert_eq!(class("08"), "");
        assert_eq!(class("08P01x"), "");
        assert_eq!(class("é0001"), "");
        assert_eq!(class("08-01"), "");
    }
}
