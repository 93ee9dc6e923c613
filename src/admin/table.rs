//! Result sets the console sends: typed columns, text values, and their wire encoding; plus the
//! value formatting (timestamps, durations) the views share.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use crate::protocol::backend::{self, oid};

/// Column type: decides the type OID clients see (values are always sent as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
}

/// One result set.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    columns: Vec<(&'static str, Kind)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Kind)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one value per column (checked in debug builds).
    pub fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width");
        self.rows.push(row);
    }

    pub fn rows(&self) -> &[Vec<Option<String>>] {
        &self.rows
    }

    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|(name, _)| *name).collect()
    }

    /// RowDescription, one DataRow per row, CommandComplete(`tag`).
    pub fn encode(&self, tag: &str, out: &mut BytesMut) {
        let columns: Vec<(&str, u32)> = self
            .columns
            .iter()
            .map(|(name, kind)| {
                let type_oid = match kind {
                    Kind::Text => oid::TEXT,
                    Kind::Int => oid::INT8,
                    Kind::Float => oid::FLOAT8,
                };
                (*name, type_oid)
            })
            .collect();
        backend::encode_row_description(&columns, out);
        for row in &self.rows {
            backend::encode_data_row(row, out);
        }
        backend::encode_command_complete(tag, out);
    }
}

/// A text value.
pub fn text(value: impl Into<String>) -> Option<String> {
    Some(value.into())
}

/// An integer value.
pub fn int(value: impl Into<i128>) -> Option<String> {
    Some(value.into().to_string())
}

/// A wall-clock time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn timestamp(at: SystemTime) -> Option<String> {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's well-known algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::{tag, BackendMessage};
    use crate::protocol::Framer;
    use std::time::Duration;

    #[test]
    fn encodes_description_rows_and_tag() {
        let mut table = Table::new(&[("name", Kind::Text), ("n", Kind::Int)]);
        table.push(vec![text("a"), int(1)]);
        table.push(vec![None, int(-2)]);
        let mut out = BytesMut::new();
        table.encode("SHOW", &mut out);
        let framer = Framer::new(1 << 20);
        let mut tags = Vec::new();
        while let Some(frame) = framer.next_frame(&mut out).unwrap() {
            tags.push(frame.tag());
            if frame.tag() == tag::COMMAND_COMPLETE {
                let msg = BackendMessage::decode(&frame).unwrap();
                assert_eq!(
                    msg,
                    BackendMessage::CommandComplete {
                        tag: bytes::Bytes::from_static(b"SHOW")
                    }
                );
            }
        }
        assert_eq!(tags, [b'T', b'D', b'D', b'C']);
        assert_eq!(table.column_names(), ["name", "n"]);
    }

    #[test]
    fn formats_timestamps_in_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(at).unwrap(), "2023-11-14 22:13:20 UTC");
        assert_eq!(timestamp(UNIX_EPOCH).unwrap(), "1970-01-01 00:00:00 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap).unwrap(), "2000-02-29 00:00:00 UTC");
    }
}
