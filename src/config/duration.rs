//! Human-readable durations in the configuration ("500ms", "30s", "5m", "1h", "1d"; bare integers are seconds).
//!
//! Fields stay plain `std::time::Duration`; this module is used through
//! `#[serde(with = "duration")]` (or `with = "duration::option"` for overrides).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error(
        "invalid duration {0:?}: expected a number followed by ms, s, m, h or d (e.g. \"30s\")"
    )]
    Malformed(String),
    #[error("invalid duration {0:?}: unknown unit {1:?} (use ms, s, m, h or d)")]
    UnknownUnit(String, String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
    #[error("duration must not be negative (got {0})")]
    Negative(i64),
}

/// Parses "500ms", "30s", "5m", "1h", "1d" or a bare integer (seconds).
///
/// Whitespace around the value and between number and unit is allowed; combinations
/// ("1h30m") and fractions are not.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(DurationError::Malformed(text.to_string()));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| DurationError::Overflow(text.to_string()))?;
    let millis_per_unit: u64 = match unit.trim_start() {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other if other.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(DurationError::UnknownUnit(
                text.to_string(),
                other.to_string(),
            ))
        }
        _ => return Err(DurationError::Malformed(text.to_string())),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::Overflow(text.to_string()))
}

/// Formats a duration in the largest unit that represents it exactly ("0", "250ms", "30s", "5m", "1h", "2d").
///
/// The output parses back to the same value with [`parse`] (sub-millisecond parts are dropped).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0".to_string();
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis.is_multiple_of(size) {
            return format!("{}{}", millis / size, unit);
        }
    }
    format!("{millis}ms")
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as \"500ms\", \"30s\", \"5m\", \"1h\", \"1d\" or an integer number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(DurationError::Negative(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

/// Deserializes a `Duration` from a duration string or an integer number of seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Private carrier so `Option<Duration>` can reuse the visitor.
struct Carrier(Duration);

impl<'de> Deserialize<'de> for Carrier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(Carrier)
    }
}

/// `#[serde(default, with = "duration::option")]` for optional (override) durations; null means unset.
pub mod option {
    use super::Carrier;
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Deserializes an optional duration (null or absent = `None`).
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Carrier>::deserialize(deserializer)?.map(|c| c.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("42"), Ok(Duration::from_secs(42)));
        assert_eq!(parse(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(matches!(parse("s"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse("-5s"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse("1.5s"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse("1h30m"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse("3w"), Err(DurationError::UnknownUnit(_, _))));
        assert!(matches!(
            parse("99999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse("18446744073709551615d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn format_round_trips() {
        for text in ["0", "250ms", "1500ms", "30s", "5m", "1h", "2d", "90s"] {
            let parsed = parse(text).unwrap();
            assert_eq!(parse(&format(parsed)).unwrap(), parsed);
        }
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
    }
}
