//! Parsing console commands: case-insensitive keywords, optional trailing `;`, database names as
//! written (or double-quoted).

/// What SHOW can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    Help,
    Pools,
    Clients,
    Servers,
    Nodes,
    Stats,
    Config,
    Version,
    Workers,
}

/// One console command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Reload,
    /// PAUSE, optionally of one database.
    Pause(Option<String>),
    Resume(Option<String>),
    /// KILL of one client, by the id SHOW CLIENTS lists.
    Kill(u64),
    Shutdown,
}

/// Why a command was not understood (reported as SQLSTATE 42601).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown admin command \"{0}\"; SHOW HELP lists the commands")]
    UnknownCommand(String),
    #[error("unknown SHOW item \"{0}\"; SHOW HELP lists them")]
    UnknownShow(String),
    #[error("KILL takes one client id, as listed by SHOW CLIENTS")]
    KillNeedsId,
    #[error("{command} takes at most one database name")]
    TooManyArguments { command: &'static str },
}

/// Every command with a one-line description, for SHOW HELP.
pub const HELP: &[(&str, &str)] = &[
    ("SHOW HELP", "this list (also: SHOW)"),
    (
        "SHOW POOLS",
        "one row per pool: clients and server connections",
    ),
    (
        "SHOW CLIENTS",
        "one row per connected client (id is what KILL takes)",
    ),
    ("SHOW SERVERS", "one row per server connection"),
    (
        "SHOW NODES",
        "nodes of each database: role, health, WAL position, lag",
    ),
    ("SHOW STATS", "totals per database"),
    ("SHOW CONFIG", "the running configuration (secrets hidden)"),
    ("SHOW VERSION", "the pgsluice version"),
    (
        "SHOW WORKERS",
        "one row per worker thread: clients, CPU use, moves asked by the balancer",
    ),
    ("RELOAD", "re-read the config file and apply it"),
    (
        "PAUSE [db]",
        "new transactions wait; returns when no server connection is busy",
    ),
    ("RESUME [db]", "undo PAUSE"),
    ("KILL <client id>", "disconnect one client"),
    ("SHUTDOWN", "graceful shutdown, as on SIGTERM"),
];

/// Parses one statement (no `;` inside).
pub fn parse(statement: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let keyword = words
        .first()
        .map(|w| w.to_ascii_lowercase())
        .unwrap_or_default();
    let args = words.get(1..).unwrap_or_default();
    match keyword.as_str() {
        "show" => parse_show(args),
        "reload" if args.is_empty() => Ok(Command::Reload),
        "shutdown" if args.is_empty() => Ok(Command::Shutdown),
        "pause" => database_arg(args, "PAUSE").map(Command::Pause),
        "resume" => database_arg(args, "RESUME").map(Command::Resume),
        "kill" => match args {
            [id] => id
                .parse()
                .map(Command::Kill)
                .map_err(|_| ParseError::KillNeedsId),
            _ => Err(ParseError::KillNeedsId),
        },
        _ => Err(ParseError::UnknownCommand(statement.trim().to_string())),
    }
}

fn parse_show(args: &[&str]) -> Result<Command, ParseError> {
    let item = match args {
        [] => return Ok(Command::Show(Show::Help)),
        [item] => item.to_ascii_lowercase(),
        _ => return Err(ParseError::UnknownShow(args.join(" "))),
    };
    let show = match item.as_str() {
        "help" => Show::Help,
        "pools" => Show::Pools,
        "clients" => Show::Clients,
        "servers" => Show::Servers,
        "nodes" => Show::Nodes,
        "stats" => Show::Stats,
        "config" => Show::Config,
        "version" => Show::Version,
        "workers" => Show::Workers,
        _ => return Err(ParseError::UnknownShow(item)),
    };
    Ok(Command::Show(show))
}

fn database_arg(args: &[&str], command: &'static str) -> Result<Option<String>, ParseError> {
    match args {
        [] => Ok(None),
        [name] => {
            let unquoted = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .unwrap_or(name);
            Ok(Some(unquoted.to_string()))
        }
        _ => Err(ParseError::TooManyArguments { command }),
    }
}

/// Splits a simple-query string into statements on `;` (outside double quotes), dropping empty
/// ones.
pub fn statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in sql.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&sql[start..]);
    out.retain(|s| !s.trim().is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command_case_insensitively() {
        assert_eq!(parse("show pools"), Ok(Command::Show(Show::Pools)));
        assert_eq!(parse("  SHOW   Clients "), Ok(Command::Show(Show::Clients)));
        assert_eq!(parse("SHOW"), Ok(Command::Show(Show::Help)));
        assert_eq!(parse("show servers"), Ok(Command::Show(Show::Servers)));
        assert_eq!(parse("show NODES"), Ok(Command::Show(Show::Nodes)));
        assert_eq!(parse("show stats"), Ok(Command::Show(Show::Stats)));
        assert_eq!(parse("show config"), Ok(Command::Show(Show::Config)));
        assert_eq!(parse("show version"), Ok(Command::Show(Show::Version)));
        assert_eq!(parse("show workers"), Ok(Command::Show(Show::Workers)));
        assert_eq!(parse("Reload"), Ok(Command::Reload));
        assert_eq!(parse("shutdown"), Ok(Command::Shutdown));
        assert_eq!(parse("pause"), Ok(Command::Pause(None)));
        assert_eq!(parse("PAUSE MyDb"), Ok(Command::Pause(Some("MyDb".into()))));
        assert_eq!(
            parse("resume \"a b\""),
            Err(ParseError::TooManyArguments { command: "RESUME" })
        );
        assert_eq!(
            parse("resume \"ab\""),
            Ok(Command::Resume(Some("ab".into())))
        );
        assert_eq!(parse("kill 42"), Ok(Command::Kill(42)));
    }

    #[test]
    fn rejects_unknown_and_malformed_commands() {
        assert!(matches!(
            parse("select 1"),
            Err(ParseError::UnknownCommand(_))
        ));
        assert!(matches!(
            parse("show tables"),
            Err(ParseError::UnknownShow(_))
        ));
        assert!(matches!(
            parse("show pools now"),
            Err(ParseError::UnknownShow(_))
        ));
        assert_eq!(parse("kill"), Err(ParseError::KillNeedsId));
        assert_eq!(parse("kill bob"), Err(ParseError::KillNeedsId));
        assert_eq!(parse("kill -1"), Err(ParseError::KillNeedsId));
        assert!(matches!(
            parse("reload now"),
            Err(ParseError::UnknownCommand(_))
        ));
        assert!(matches!(parse(""), Err(ParseError::UnknownCommand(_))));
    }

    #[test]
    fn splits_statements_on_semicolons() {
        assert_eq!(statements("show pools;"), ["show pools"]);
        assert_eq!(
            statements("show pools; show clients ;;"),
            ["show pools", " show clients "]
        );
        assert_eq!(statements("pause \"a;b\""), ["pause \"a;b\""]);
        assert!(statements(" ; ").is_empty());
    }
}
