//! Loading: `${ENV}` interpolation of the raw text, YAML parsing, then validation.

use std::path::Path;

use super::{Config, ConfigError};

/// Reads, interpolates (from the process environment), parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, &|name| std::env::var(name).ok())
}

/// Interpolates with `env`, parses and validates; `env` is injectable so tests need no process env.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let expanded = interpolate(text, env)?;
    let config = parse_str(&expanded)?;
    config.validate()?;
    Ok(config)
}

/// Parses YAML into a `Config` without interpolation or validation.
///
/// Unknown keys, wrong types and bad durations/sizes fail here, with line and column.
pub fn parse_str(text: &str) -> Result<Config, ConfigError> {
    serde_saphyr::from_str::<Config>(text).map_err(|e| ConfigError::Parse(e.to_string()))
}

/// Replaces `${NAME}` and `${NAME:-default}` with values from `env`; `$$` becomes `$`.
///
/// A variable that is unset (or set but empty) takes the default when one is given; unset
/// without a default is an error. Every problem is collected, each with its 1-based line.
/// Whole-line comments (first non-blank character `#`) are copied untouched, so commented-out
/// settings never need their variables. A `$` not followed by `{` or `$` is kept as is
/// (SCRAM verifiers contain such `$`). Values are inserted verbatim: quote the YAML scalar
/// around `${...}` when the value may contain YAML syntax.
pub fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            interpolate_line(line, index + 1, env, &mut out, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError::Interpolation(errors))
    }
}

fn interpolate_line(
    line: &str,
    line_number: usize,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<String>,
) {
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(format!("line {line_number}: unterminated \"${{\""));
                out.push_str(&rest[dollar..]);
                return;
            };
            match resolve(&body[..close], env) {
                Ok(value) => out.push_str(&value),
                Err(message) => errors.push(format!("line {line_number}: {message}")),
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
}

/// Resolves the inside of `${...}`: `NAME` or `NAME:-default`.
fn resolve(reference: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match reference.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    if !is_variable_name(name) {
        return Err(format!("invalid environment variable name {name:?}"));
    }
    match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
        )),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER_NAME" => Some("app".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn expand(text: &str) -> Result<String, Vec<String>> {
        interpolate(text, &env).map_err(|e| match e {
            ConfigError::Interpolation(list) => list,
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        assert_eq!(expand("a: ${USER_NAME}\n").unwrap(), "a: app\n");
        assert_eq!(expand("a: ${USER_NAME:-x}").unwrap(), "a: app");
        assert_eq!(expand("a: ${MISSING:-fallback}").unwrap(), "a: fallback");
        assert_eq!(expand("a: ${MISSING:-}").unwrap(), "a: ");
        assert_eq!(expand("a: ${EMPTY}").unwrap(), "a: ");
        assert_eq!(expand("a: ${EMPTY:-d}").unwrap(), "a: d");
        assert_eq!(
            expand("a: x${USER_NAME}y${USER_NAME}").unwrap(),
            "a: xappyapp"
        );
    }

    #[test]
    fn escapes_and_literal_dollars() {
        assert_eq!(expand("a: $${USER_NAME}").unwrap(), "a: ${USER_NAME}");
        assert_eq!(expand("a: $$$$").unwrap(), "a: $$");
        assert_eq!(
            expand("a: SCRAM-SHA-256$4096:x$y:z").unwrap(),
            "a: SCRAM-SHA-256$4096:x$y:z"
        );
        assert_eq!(expand("a: trailing$").unwrap(), "a: trailing$");
    }

    #[test]
    fn comment_lines_are_untouched() {
        let text = "# uses ${NOT_SET} and $$\n  # ${ALSO_NOT_SET}\nb: 1 # ${USER_NAME}\n";
        assert_eq!(
            expand(text).unwrap(),
            "# uses ${NOT_SET} and $$\n  # ${ALSO_NOT_SET}\nb: 1 # app\n"
        );
    }

    #[test]
    fn reports_every_missing_variable_with_its_line() {
        let errors = expand("a: ${ONE}\nb: ok\nc: ${TWO} ${THREE}\nd: ${bad-name}\ne: ${OPEN\n")
            .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("line 1: environment variable ONE is not set"));
        assert!(errors[1].starts_with("line 3: environment variable TWO"));
        assert!(errors[2].starts_with("line 3: environment variable THREE"));
        assert!(errors[3].starts_with("line 4: invalid environment variable name"));
        assert!(errors[4].starts_with("line 5: unterminated"));
    }
}
