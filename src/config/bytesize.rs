//! Human-readable byte sizes in the configuration ("64MiB", "1GiB", "512KiB", "8kB", "1024") into `usize`.
//!
//! Binary units (KiB, MiB, GiB, TiB) are powers of 1024; SI units (kB, MB, GB, TB) are powers of
//! 1000; "B" or no unit means bytes. Units are matched case-insensitively. Used through
//! `#[serde(with = "bytesize")]`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// Why a byte-size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("empty size")]
    Empty,
    #[error("invalid size {0:?}: expected a number optionally followed by B, kB, MB, GB, KiB, MiB, GiB...")]
    Malformed(String),
    #[error(
        "invalid size {0:?}: unknown unit {1:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
    )]
    UnknownUnit(String, String),
    #[error("size {0:?} is too large")]
    Overflow(String),
    #[error("size must not be negative (got {0})")]
    Negative(i64),
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    Some(multiplier)
}

/// Parses a size such as "64MiB", "8kB", "1024" or "1024B" into a byte count.
///
/// Whitespace between number and unit is allowed; fractions are not. Values that do not fit
/// in `usize` are refused rather than truncated.
pub fn parse(text: &str) -> Result<usize, ByteSizeError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ByteSizeError::Empty);
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(ByteSizeError::Malformed(text.to_string()));
    }
    let unit = unit.trim_start();
    let multiplier = match unit_multiplier(unit) {
        Some(m) => m,
        None if unit.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(ByteSizeError::UnknownUnit(
                text.to_string(),
                unit.to_string(),
            ))
        }
        None => return Err(ByteSizeError::Malformed(text.to_string())),
    };
    let overflow = || ByteSizeError::Overflow(text.to_string());
    let value: u64 = number.parse().map_err(|_| overflow())?;
    let bytes = value.checked_mul(multiplier).ok_or_else(overflow)?;
    usize::try_from(bytes).map_err(|_| overflow())
}

/// Formats a byte count with the largest binary unit that represents it exactly ("256MiB", "1000B").
pub fn format(bytes: usize) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    for (unit, shift) in [("TiB", 40u32), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        let size = 1u128 << shift;
        if (bytes as u128).is_multiple_of(size) {
            return format!("{}{}", bytes as u128 / size, unit);
        }
    }
    format!("{bytes}B")
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as \"64MiB\", \"8kB\" or an integer number of bytes")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        usize::try_from(v).map_err(|_| E::custom(ByteSizeError::Overflow(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
        let unsigned = u64::try_from(v).map_err(|_| E::custom(ByteSizeError::Negative(v)))?;
        self.visit_u64(unsigned)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        parse(v).map_err(E::custom)
    }
}

/// Deserializes a byte count from a size string or an integer number of bytes.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    deserializer.deserialize_any(ByteSizeVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("512KiB"), Ok(512 << 10));
        assert_eq!(parse("1024"), Ok(1024));
        assert_eq!(parse("1024B"), Ok(1024));
        assert_eq!(parse("8kB"), Ok(8_000));
        assert_eq!(parse("8KB"), Ok(8_000));
        assert_eq!(parse("2 MB"), Ok(2_000_000));
        assert_eq!(parse("3mib"), Ok(3 << 20));
        assert_eq!(parse("0"), Ok(0));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse("  "), Err(ByteSizeError::Empty));
        assert!(matches!(parse("MiB"), Err(ByteSizeError::Malformed(_))));
        assert!(matches!(parse("1.5MiB"), Err(ByteSizeError::Malformed(_))));
        assert!(matches!(parse("-1"), Err(ByteSizeError::Malformed(_))));
        assert!(matches!(
            parse("5XB"),
            Err(ByteSizeError::UnknownUnit(_, _))
        ));
        assert!(matches!(
            parse("99999999999TiB"),
            Err(ByteSizeError::Overflow(_))
        ));
        assert!(matches!(
            parse("99999999999999999999"),
            Err(ByteSizeError::Overflow(_))
        ));
    }

    #[test]
    fn format_round_trips() {
        for bytes in [0usize, 1, 1000, 1024, 8 << 10, 256 << 20, 3 << 30] {
            assert_eq!(parse(&format(bytes)), Ok(bytes));
        }
        assert_eq!(format(256 << 20), "256MiB");
    }
}
