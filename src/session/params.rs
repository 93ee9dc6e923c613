//! Startup parameters a client asks for (application_name, client_encoding, DateStyle, `options`
//! with `-c name=value`, ...) and the SET statements that give a pooled server connection the same
//! settings.

use crate::protocol::startup::StartupMessage;

/// Why a client's startup parameters cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("replication connections are not supported by pgsluice")]
    Replication,
    #[error("invalid startup parameter name \"{0}\"")]
    InvalidName(String),
    #[error("invalid command-line option in \"options\": \"{0}\"")]
    InvalidOption(String),
}

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// The settings requested by a client, in order, `options` expanded.
pub fn requested_settings(msg: &StartupMessage) -> Result<Vec<(String, String)>, ParamError> {
    let mut settings = Vec::new();
    for (name, value) in &msg.params {
        let lower = name.to_ascii_lowercase();
        if lower == "replication" && !matches!(value.as_str(), "false" | "0" | "off" | "no") {
            return Err(ParamError::Replication);
        }
        if lower == "options" {
            settings.extend(parse_options(value)?);
            continue;
        }
        if NOT_SETTINGS.contains(&lower.as_str()) || lower.starts_with("_pq_.") {
            continue;
        }
        check_name(name)?;
        settings.push((name.clone(), value.clone()));
    }
    Ok(settings)
}

fn check_name(name: &str) -> Result<(), ParamError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(ParamError::InvalidName(name.to_string()))
    }
}

/// Splits libpq's `options` value (`-c a=b --c=d`, backslash escapes a space) into settings.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, ParamError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        let assignment = if word == "-c" {
            iter.next()
                .ok_or_else(|| ParamError::InvalidOption(word.clone()))?
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_string()
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_string()
        } else {
            return Err(ParamError::InvalidOption(word));
        };
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| ParamError::InvalidOption(assignment.clone()))?;
        let name = name.replace('-', "_");
        check_name(&name)?;
        settings.push((name, value.to_string()));
    }
    Ok(settings)
}

/// The set_config and RESET statements that give a server connection the client's settings: `desired`
/// is what the client asked for, `applied` what the proxy set on this connection for its previous
/// user, `reported` the server's ParameterStatus values. A setting already in force is skipped; one
/// applied for someone else and not wanted now is RESET. `None` when nothing needs to change.
pub fn sync_statements(
    desired: &[(String, String)],
    applied: &[(String, String)],
    reported: &[(String, String)],
) -> Option<String> {
    fn find<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
        list.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    // set_config takes values in their configuration-file form, so list settings such as
    // search_path keep their elements (SET x TO 'a,b' would make one quoted element).
    let mut sql = String::new();
    for (name, value) in desired {
        let current = find(applied, name).or_else(|| find(reported, name));
        if current == Some(value.as_str()) {
            continue;
        }
        sql.push_str(if sql.is_empty() { "SELECT " } else { ", " });
        sql.push_str("set_config(");
        push_literal(&mut sql, name);
        sql.push_str(", ");
        push_literal(&mut sql, value);
        sql.push_str(", false)");
    }
    if !sql.is_empty() {
        sql.push_str("; ");
    }
    for (name, _) in applied {
        if find(desired, name).is_none() {
            sql.push_str("RESET ");
            sql.push_str(name);
            sql.push_str("; ");
        }
    }
    (!sql.is_empty()).then_some(sql)
}

/// Appends `value` as a SQL string literal, safe whatever standard_conforming_strings says.
fn push_literal(sql: &mut String, value: &str) {
    if value.contains('\\') {
        sql.push_str("E'");
        for c in value.chars() {
            match c {
                '\'' => sql.push_str("''"),
                '\\' => sql.push_str("\\\\"),
                c => sql.push(c),
            }
        }
    } else {
        sql.push('\'');
        sql.push_str(&value.replace('\'', "''"));
    }
    sql.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            minor_version: 0,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn settings_skip_identity_and_expand_options() {
        let msg = startup(&[
            ("user", "app"),
            ("database", "db"),
            ("application_name", "psql"),
            (
                "options",
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=4MB",
            ),
        ]);
        let settings = requested_settings(&msg).unwrap();
        assert_eq!(
            settings,
            vec![
                ("application_name".into(), "psql".into()),
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "4MB".into()),
            ]
        );
    }

    #[test]
    fn replication_and_bad_names_are_refused() {
        let msg = startup(&[("user", "a"), ("replication", "database")]);
        assert_eq!(requested_settings(&msg), Err(ParamError::Replication));
        let msg = startup(&[("user", "a"), ("x; DROP TABLE t", "1")]);
        assert!(matches!(
            requested_settings(&msg),
            Err(ParamError::InvalidName(_))
        ));
        let msg = startup(&[("options", "-c")]);
        assert!(matches!(
            requested_settings(&msg),
            Err(ParamError::InvalidOption(_))
        ));
    }

    #[test]
    fn only_differing_settings_are_set_and_quoted() {
        let server = vec![
            ("client_encoding".to_string(), "UTF8".to_string()),
            ("DateStyle".to_string(), "ISO, MDY".to_string()),
        ];
        let wanted = vec![
            ("client_encoding".to_string(), "UTF8".to_string()),
            ("datestyle".to_string(), "ISO, DMY".to_string()),
            ("application_name".to_string(), "it's \\ here".to_string()),
        ];
        let sql = sync_statements(&wanted, &[], &server).unwrap();
        assert_eq!(
            sql,
            "SELECT set_config('datestyle', 'ISO, DMY', false), set_config('application_name', E'it''s \\\\ here', false); "
        );
        assert_eq!(sync_statements(&wanted[..1], &[], &server), None);
        // What the previous client set and this one does not want is reset.
        let applied = vec![
            ("search_path".to_string(), "other".to_string()),
            wanted[1].clone(),
        ];
        let sql = sync_statements(&wanted[..2], &applied, &server).unwrap();
        assert_eq!(sql, "RESET search_path; ");
    }
}
