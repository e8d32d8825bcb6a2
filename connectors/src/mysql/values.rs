//! MySQL/MariaDB column values (binlog row images) to the JSON forms of docs/events.md.
//!
//! `mysql_common` decodes the binary row image into `Value`s; what a value means
//! (text or bytes, which ENUM label, which SET members) depends on the column,
//! which the TABLE_MAP event describes. Zero dates (`0000-00-00`) are kept as the
//! strings MySQL prints for them.

use crate::event::json;
use base64::Engine;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::Value as MyValue;
use serde_json::{Number, Value};

/// The charset id MySQL uses for binary strings (BINARY, VARBINARY, BLOB).
pub(crate) const BINARY_CHARSET: u16 = 63;
/// latin1_swedish_ci, latin1's default collation.
pub(crate) const LATIN1_CHARSET: u16 = 8;
/// utf8mb4_general_ci.
pub(crate) const UTF8MB4_CHARSET: u16 = 45;

/// How one column's values map to JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MyKind {
    Integer,
    Float,
    Decimal,
    /// BIT(1): a boolean.
    Bit1,
    /// BIT(n>1), VARBINARY, BLOB, spatial types (the server's form: a 4-byte
    /// little-endian SRID, then WKB): base64.
    Bytes,
    /// BINARY(n): base64 of the n bytes the server stores. The binlog drops
    /// trailing zero bytes; they are put back.
    FixedBytes(usize),
    /// MariaDB `INET6` (16 bytes in the binlog): its text, as the server
    /// prints it.
    Inet6,
    /// MariaDB `UUID` (16 bytes in the binlog, in text order): its text.
    Uuid,
    /// CHAR, VARCHAR, TEXT (and MariaDB's JSON, a LONGTEXT): a string, decoded from
    /// latin1 when the column's charset says so.
    Text {
        latin1: bool,
    },
    Json,
    Enum(Vec<String>),
    Set(Vec<String>),
    /// A SET read by a query: its text form (`a,c`).
    SetText,
    Year,
    Date,
    Time,
    /// DATETIME: no zone.
    DateTime,
    /// TIMESTAMP: UTC.
    Timestamp,
    /// Anything else: its bytes as text.
    Other,
}

/// MySQL's and MariaDB's `latin1` is Windows-1252 (0x80 is `€`), not ISO
/// 8859-1; the five bytes 1252 leaves undefined map to the C1 controls of
/// the same number, as the server converts them.
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

/// One `latin1` byte as the server reads it.
fn latin1_char(byte: u8) -> char {
    match byte {
        0x80..=0x9F => CP1252_HIGH[(byte - 0x80) as usize],
        other => other as char,
    }
}

/// An IPv6 address as MariaDB's `INET6` prints it (inet_ntop's form): the
/// longest run of zero groups as `::`, and the last 32 bits dotted for
/// IPv4-compatible (`::1.2.3.4`) and IPv4-mapped (`::ffff:1.2.3.4`) addresses.
fn inet6_text(address: [u8; 16]) -> String {
    let words: Vec<u16> = address
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect();
    // The first longest run of two or more zero groups.
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, word) in words.iter().enumerate() {
        if *word == 0 {
            run = if run.1 == 0 {
                (i, 1)
            } else {
                (run.0, run.1 + 1)
            };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let dotted = || {
        format!(
            "{}.{}.{}.{}",
            address[12], address[13], address[14], address[15]
        )
    };
    if best.0 == 0 && (best.1 == 6 || (best.1 == 5 && words[5] == 0xffff)) {
        let prefix = if best.1 == 5 { "::ffff:" } else { "::" };
        return format!("{prefix}{}", dotted());
    }
    let group = |words: &[u16]| {
        words
            .iter()
            .map(|w| format!("{w:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best.1 < 2 {
        return group(&words);
    }
    let (start, end) = (best.0, best.0 + best.1);
    format!("{}::{}", group(&words[..start]), group(&words[end..]))
}

/// The spatial data types, as `information_schema.COLUMNS.DATA_TYPE` names them.
pub fn is_spatial(data_type: &str) -> bool {
    matches!(
        data_type.to_ascii_lowercase().as_str(),
        "geometry"
            | "point"
            | "linestring"
            | "polygon"
            | "multipoint"
            | "multilinestring"
            | "multipolygon"
            | "geometrycollection"
    )
}

/// The declared length of a `MYSQL_TYPE_STRING` column from its two TABLE_MAP
/// metadata bytes (the real type, with the length's high bits folded in, then
/// the length's low byte).
fn string_length(meta: &[u8]) -> usize {
    match meta {
        [real, low, ..] if real & 0x30 != 0x30 => {
            *low as usize | ((((*real & 0x30) ^ 0x30) as usize) << 4)
        }
        [_, low, ..] => *low as usize,
        _ => 0,
    }
}

/// latin1 charset ids (latin1_swedish_ci, latin1_bin, latin1_general_ci, ...).
fn is_latin1(charset: u16) -> bool {
    matches!(charset, 5 | 8 | 15 | 31 | 47 | 48 | 49 | 94)
}

impl MyKind {
    /// Chooses the kind from the TABLE_MAP column type and metadata.
    pub(crate) fn of(
        column_type: ColumnType,
        meta: &[u8],
        charset: u16,
        labels: Option<Vec<String>>,
    ) -> MyKind {
        use ColumnType::*;
        match column_type {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG => MyKind::Integer,
            MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => MyKind::Float,
            MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => MyKind::Decimal,
            MYSQL_TYPE_BIT => {
                let bits = meta.get(1).copied().unwrap_or(0) as usize * 8
                    + meta.first().copied().unwrap_or(0) as usize;
                if bits == 1 {
                    MyKind::Bit1
                } else {
                    MyKind::Bytes
                }
            }
            MYSQL_TYPE_JSON => MyKind::Json,
            MYSQL_TYPE_ENUM => MyKind::Enum(labels.unwrap_or_default()),
            MYSQL_TYPE_SET => MyKind::Set(labels.unwrap_or_default()),
            MYSQL_TYPE_YEAR => MyKind::Year,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => MyKind::Date,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => MyKind::Time,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => MyKind::DateTime,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => MyKind::Timestamp,
            MYSQL_TYPE_GEOMETRY => MyKind::Bytes,
            MYSQL_TYPE_STRING if charset == BINARY_CHARSET => {
                MyKind::FixedBytes(string_length(meta))
            }
            MYSQL_TYPE_STRING
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB => {
                if charset == BINARY_CHARSET {
                    MyKind::Bytes
                } else {
                    MyKind::Text {
                        latin1: is_latin1(charset),
                    }
                }
            }
            _ => MyKind::Other,
        }
    }

    /// The labels of an `enum('a','b')` or `set(…)` column type, as
    /// `information_schema.COLUMNS.COLUMN_TYPE` shows it (a quote in a label
    /// is doubled); `None` for any other type.
    pub(crate) fn declared_labels(column_type: &str) -> Option<Vec<String>> {
        let lower = column_type.to_ascii_lowercase();
        let start = if lower.starts_with("enum(") {
            5
        } else if lower.starts_with("set(") {
            4
        } else {
            return None;
        };
        let mut chars = column_type.get(start..)?.chars().peekable();
        let mut labels = Vec::new();
        loop {
            if chars.next()? != '\'' {
                return None;
            }
            let mut label = String::new();
            loop {
                match chars.next()? {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        label.push('\'');
                    }
                    '\'' => break,
                    c => label.push(c),
                }
            }
            labels.push(label);
            match chars.next()? {
                ',' => continue,
                ')' => return Some(labels),
                _ => return None,
            }
        }
    }

    /// Chooses the kind from `information_schema` (`DATA_TYPE`, `COLUMN_TYPE`), for
    /// values read by queries, where the server already turned ENUMs and SETs into
    /// text and any charset into the connection's utf8mb4.
    pub(crate) fn from_sql(data_type: &str, column_type: &str) -> MyKind {
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => MyKind::Integer,
            "decimal" => MyKind::Decimal,
            "float" | "double" => MyKind::Float,
            "bit" if column_type.eq_ignore_ascii_case("bit(1)") => MyKind::Bit1,
            "binary" => MyKind::FixedBytes(
                column_type
                    .trim_start_matches("binary(")
                    .trim_end_matches(')')
                    .parse()
                    .unwrap_or(1),
            ),
            "bit" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => MyKind::Bytes,
            t if is_spatial(t) => MyKind::Bytes,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "json"
            | "enum" => MyKind::Text { latin1: false },
            "set" => MyKind::SetText,
            "year" => MyKind::Year,
            "date" => MyKind::Date,
            "time" => MyKind::Time,
            "datetime" => MyKind::DateTime,
            "timestamp" => MyKind::Timestamp,
            _ => MyKind::Other,
        }
    }

    /// Converts one decoded binlog value.
    pub(crate) fn to_json(&self, value: BinlogValue<'_>) -> Value {
        match value {
            BinlogValue::Value(v) => self.value(v),
            BinlogValue::Jsonb(j) => match serde_json::Value::try_from(j) {
                Ok(json) => Value::String(json.to_string()),
                Err(e) => Value::String(format!("<undecodable json: {e}>")),
            },
            // Partial JSON updates (MySQL 8 PARTIAL_UPDATE_ROWS) are not applied here:
            // the column is reported in `unchanged` by the caller.
            BinlogValue::JsonDiff(_) => Value::Null,
        }
    }

    /// Appends one decoded binlog value as JSON: the text `to_json` gives once
    /// serialized, written without building a `Value` for the common kinds
    /// (integers, UTF-8 text, decimals, dates and times). The binlog hot path.
    pub(crate) fn write_json(&self, value: BinlogValue<'_>, out: &mut Vec<u8>) {
        let BinlogValue::Value(v) = value else {
            return json::value(out, &self.to_json(value));
        };
        match (self, v) {
            (_, MyValue::NULL) => out.extend_from_slice(b"null"),
            (MyKind::Enum(_) | MyKind::Year, v) => json::value(out, &self.value(v)),
            (_, MyValue::Int(i)) => json::integer(out, i),
            (_, MyValue::UInt(u)) => json::integer(out, u),
            (MyKind::Text { latin1: false } | MyKind::Decimal, MyValue::Bytes(b)) => {
                match std::str::from_utf8(&b) {
                    Ok(text) => json::string(out, text),
                    Err(_) => json::value(out, &self.value(MyValue::Bytes(b))),
                }
            }
            (_, v @ (MyValue::Date(..) | MyValue::Time(..))) => {
                out.push(b'"');
                self.write_temporal(&v, out);
                out.push(b'"');
            }
            (_, v) => json::value(out, &self.value(v)),
        }
    }

    /// The text of a DATE, DATETIME, TIMESTAMP or TIME value (nothing for others).
    fn write_temporal(&self, v: &MyValue, out: &mut Vec<u8>) {
        match (self, v) {
            (MyKind::Date, MyValue::Date(y, m, d, ..)) => push_date(out, *y, *m, *d),
            (kind, MyValue::Date(y, mo, d, h, mi, s, us)) => {
                push_date(out, *y, *mo, *d);
                out.push(b'T');
                push_clock(out, *h as u64, *mi, *s, *us);
                if *kind == MyKind::Timestamp {
                    out.push(b'Z');
                }
            }
            (_, MyValue::Time(neg, days, h, m, s, us)) => {
                if *neg {
                    out.push(b'-');
                }
                push_clock(out, *days as u64 * 24 + *h as u64, *m, *s, *us);
            }
            _ => {}
        }
    }

    /// Converts one value (from a binlog row or a query).
    pub(crate) fn value(&self, v: MyValue) -> Value {
        match (self, v) {
            (_, MyValue::NULL) => Value::Null,
            (_, MyValue::Int(i)) if !matches!(self, MyKind::Enum(_)) => Value::Number(i.into()),
            (_, MyValue::UInt(u)) => Value::Number(u.into()),
            (_, MyValue::Float(f)) => float(f as f64, &f.to_string()),
            (_, MyValue::Double(f)) => float(f, &f.to_string()),
            (MyKind::Enum(labels), MyValue::Int(i)) => enum_label(labels, i),
            (MyKind::Bit1, MyValue::Bytes(b)) => Value::Bool(b.iter().any(|x| *x != 0)),
            (MyKind::Set(labels), MyValue::Bytes(b)) => set_members(labels, &b),
            (MyKind::Year, MyValue::Bytes(b)) => year(&b),
            (MyKind::SetText, MyValue::Bytes(b)) => Value::Array(
                String::from_utf8_lossy(&b)
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(|m| Value::String(m.to_string()))
                    .collect(),
            ),
            (MyKind::Bytes, MyValue::Bytes(b)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(&b))
            }
            // Both are BINARY(16) in the binlog, trailing zero bytes dropped.
            (MyKind::Inet6, MyValue::Bytes(mut b)) if b.len() <= 16 => {
                b.resize(16, 0);
                let mut address = [0u8; 16];
                address.copy_from_slice(&b);
                Value::String(inet6_text(address))
            }
            (MyKind::Uuid, MyValue::Bytes(b)) if b.len() <= 16 => Value::String(uuid_text(b)),
            (MyKind::FixedBytes(length), MyValue::Bytes(mut b)) => {
                if b.len() < *length {
                    b.resize(*length, 0);
                }
                Value::String(base64::engine::general_purpose::STANDARD.encode(&b))
            }
            (MyKind::Text { latin1: true }, MyValue::Bytes(b)) => {
                Value::String(b.iter().map(|c| latin1_char(*c)).collect())
            }
            (MyKind::Timestamp, MyValue::Bytes(b)) => {
                Value::String(epoch_to_utc(&String::from_utf8_lossy(&b)))
            }
            // Text: the bytes become the string, copied only when not UTF-8.
            (_, MyValue::Bytes(b)) => Value::String(
                String::from_utf8(b)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            // Formatted by hand: temporal columns are common and this runs per value.
            (_, v @ (MyValue::Date(..) | MyValue::Time(..))) => {
                let mut text = Vec::with_capacity(27);
                self.write_temporal(&v, &mut text);
                // Only ASCII digits and separators were written: never empty.
                Value::String(String::from_utf8(text).unwrap_or_default())
            }
            (_, MyValue::Int(i)) => Value::Number(i.into()),
        }
    }
}

/// An ENUM value from its 1-based index into the labels.
fn enum_label(labels: &[String], i: i64) -> Value {
    match (i as usize).checked_sub(1).and_then(|i| labels.get(i)) {
        Some(label) => Value::String(label.clone()),
        // Index 0 is MySQL's "invalid value" empty string.
        None if i == 0 => Value::String(String::new()),
        None => Value::String(i.to_string()),
    }
}

/// A SET value: the labels whose bits are on in its bytes (a little-endian mask).
fn set_members(labels: &[String], bytes: &[u8]) -> Value {
    let mut mask = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(8) {
        mask |= (*byte as u64) << (8 * i);
    }
    // A SET has at most 64 members; labels past that (from a
    // hostile or broken table map) are never set.
    Value::Array(
        labels
            .iter()
            .take(64)
            .enumerate()
            .filter(|(i, _)| mask & (1u64 << i) != 0)
            .map(|(_, l)| Value::String(l.clone()))
            .collect(),
    )
}

/// A YEAR value from the text the row decoder gives.
fn year(bytes: &[u8]) -> Value {
    match String::from_utf8_lossy(bytes).parse::<u16>() {
        // The binlog stores a YEAR as its offset from 1900, and the
        // zero year 0000 as 0, which the row decoder reads as 1900
        // (not a YEAR value: they run from 1901).
        Ok(1900) => Value::Number(0.into()),
        Ok(year) => Value::Number(year.into()),
        Err(_) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// A MariaDB `UUID` (BINARY(16) in the binlog, trailing zero bytes dropped:
/// at most 16 bytes) as its text.
fn uuid_text(mut bytes: Vec<u8>) -> String {
    bytes.resize(16, 0);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Appends `n` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    // Digits fill the buffer from the right; its '0's are the padding.
    let mut digits = [b'0'; 20];
    let mut len = 0;
    while n > 0 || len == 0 {
        digits[19 - len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
    }
    let len = len.max(width).min(digits.len());
    out.extend_from_slice(&digits[digits.len() - len..]);
}

/// Two digits and a separator (`n` < 100: months, days, minutes, seconds).
fn push_two(out: &mut Vec<u8>, n: u8, separator: u8) {
    out.extend_from_slice(&[b'0' + n / 10 % 10, b'0' + n % 10, separator]);
}

/// `YYYY-MM-DD`.
fn push_date(out: &mut Vec<u8>, y: u16, m: u8, d: u8) {
    push_padded(out, y as u64, 4);
    out.push(b'-');
    push_two(out, m, b'-');
    out.extend_from_slice(&[b'0' + d / 10 % 10, b'0' + d % 10]);
}

/// `HH:MM:SS.ffffff` (hours may exceed 24 for TIME).
fn push_clock(out: &mut Vec<u8>, h: u64, m: u8, s: u8, us: u32) {
    match u8::try_from(h) {
        Ok(h) if h < 100 => push_two(out, h, b':'),
        _ => {
            push_padded(out, h, 2);
            out.push(b':');
        }
    }
    push_two(out, m, b':');
    push_two(out, s, b'.');
    push_padded(out, us as u64, 6);
}

fn float(f: f64, text: &str) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None if f < 0.0 => Value::String("-Infinity".into()),
        None => Value::String(text.to_string()),
    }
}

/// `1763737200.123456` (seconds since the epoch, as the binlog gives TIMESTAMP)
/// → `2025-11-21T15:00:00.123456Z`. A zero TIMESTAMP is `0000-00-00T00:00:00.000000Z`.
pub(crate) fn epoch_to_utc(text: &str) -> String {
    let (secs, micros) = match text.split_once('.') {
        Some((s, f)) => (s, format!("{f:0<6}")),
        None => (text, "000000".to_string()),
    };
    let Ok(secs) = secs.parse::<i64>() else {
        return text.to_string();
    };
    if secs == 0 && micros.trim_end_matches('0').is_empty() {
        return "0000-00-00T00:00:00.000000Z".into();
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
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

    #[test]
    fn enum_and_set_labels_are_read_from_the_column_type() {
        assert_eq!(
            MyKind::declared_labels("enum('a','it''s','x,y')"),
            Some(vec!["a".into(), "it's".into(), "x,y".into()])
        );
        assert_eq!(
            MyKind::declared_labels("SET('red','')"),
            Some(vec!["red".into(), String::new()])
        );
        assert_eq!(MyKind::declared_labels("int(10) unsigned"), None);
        assert_eq!(MyKind::declared_labels("enum('unterminated"), None);
    }
    use serde_json::json;

    /// The rendering fast path writes exactly what the `Value` path serializes to.
    #[test]
    fn rendered_values_match_the_value_path() {
        let cases = [
            (MyKind::Integer, MyValue::Int(-42)),
            (MyKind::Integer, MyValue::UInt(u64::MAX)),
            (MyKind::Decimal, MyValue::Bytes(b"-12345.678".to_vec())),
            (
                MyKind::Text { latin1: false },
                MyValue::Bytes("a \"q\" \n 🌊".into()),
            ),
            (
                MyKind::Text { latin1: false },
                MyValue::Bytes(vec![0xff, b'x']),
            ),
            (MyKind::Text { latin1: true }, MyValue::Bytes(vec![0xE9])),
            (MyKind::Date, MyValue::Date(2026, 11, 22, 0, 0, 0, 0)),
            (MyKind::DateTime, MyValue::Date(2026, 1, 2, 3, 4, 5, 60)),
            (MyKind::Timestamp, MyValue::Date(0, 0, 0, 0, 0, 0, 0)),
            (MyKind::Time, MyValue::Time(true, 1, 2, 3, 4, 5)),
            (MyKind::Enum(vec!["a".into(), "b".into()]), MyValue::Int(2)),
            (MyKind::Float, MyValue::Double(1.5)),
            (MyKind::Bit1, MyValue::Bytes(vec![1])),
            (MyKind::Integer, MyValue::NULL),
            (MyKind::Year, MyValue::Bytes(b"1900".to_vec())),
            (MyKind::Year, MyValue::Bytes(b"2155".to_vec())),
        ];
        for (kind, value) in cases {
            let mut rendered = Vec::new();
            kind.write_json(BinlogValue::Value(value.clone()), &mut rendered);
            let expected = serde_json::to_vec(&kind.to_json(BinlogValue::Value(value.clone())))
                .expect("serialize");
            assert_eq!(
                String::from_utf8_lossy(&rendered),
                String::from_utf8_lossy(&expected),
                "{kind:?} {value:?}"
            );
        }
    }

    #[test]
    fn temporal_forms_are_fixed_width() {
        let text = |kind: MyKind, v: MyValue| kind.value(v);
        assert_eq!(
            text(MyKind::DateTime, MyValue::Date(2026, 1, 2, 3, 4, 5, 60)),
            json!("2026-01-02T03:04:05.000060")
        );
        assert_eq!(
            text(
                MyKind::Timestamp,
                MyValue::Date(999, 12, 31, 23, 59, 59, 999_999)
            ),
            json!("0999-12-31T23:59:59.999999Z")
        );
        assert_eq!(
            text(MyKind::Date, MyValue::Date(0, 0, 0, 0, 0, 0, 0)),
            json!("0000-00-00")
        );
        assert_eq!(
            text(MyKind::Time, MyValue::Time(true, 1, 2, 3, 4, 5)),
            json!("-26:03:04.000005")
        );
        assert_eq!(
            text(MyKind::Time, MyValue::Time(false, 34, 22, 59, 59, 0)),
            json!("838:59:59.000000")
        );
    }

    /// The binlog drops BINARY(n)'s trailing zero bytes; the server stores
    /// them, and the snapshot reads them.
    #[test]
    fn binary_is_padded_to_its_declared_length() {
        // BINARY(4): real type 0xfe, length 4.
        let kind = MyKind::of(
            ColumnType::MYSQL_TYPE_STRING,
            &[0xfe, 4],
            BINARY_CHARSET,
            None,
        );
        assert_eq!(kind, MyKind::FixedBytes(4));
        assert_eq!(kind.value(MyValue::Bytes(vec![0xff, 1])), json!("/wEAAA=="));
        assert_eq!(
            MyKind::from_sql("binary", "binary(4)"),
            MyKind::FixedBytes(4)
        );
        // Lengths past 255 keep their high bits in the first byte (BINARY(255) max,
        // but CHAR(n) in 4-byte charsets reaches 1020).
        assert_eq!(string_length(&[0xfe ^ 0x10, 0xfc]), 0x1fc);
        assert_eq!(MyKind::from_sql("point", "point"), MyKind::Bytes);
    }

    /// MariaDB's INET6 text (checked against the server's own output for
    /// these addresses) and UUID text.
    #[test]
    fn inet6_and_uuid_print_as_the_server_does() {
        let inet6 = |text: &str| {
            let address: std::net::Ipv6Addr = text.parse().expect("address");
            MyKind::Inet6.value(MyValue::Bytes(address.octets().to_vec()))
        };
        for text in [
            "2001:db8::ff00:42:8329",
            "::1.2.3.4",
            "::ffff:1.2.3.4",
            "::",
            "::1",
            "fe80::1:0:0:1",
            "1:0:0:2::3",
            "1::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::102",
            "::1:0:0",
        ] {
            assert_eq!(inet6(text), json!(text), "{text}");
        }
        assert_eq!(
            MyKind::Uuid.value(MyValue::Bytes(vec![
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x1d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ])),
            json!("12345678-9abc-1def-8123-456789abcdef")
        );
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(epoch_to_utc("1795276897.5"), "2026-11-21T16:01:37.500000Z");
        assert_eq!(epoch_to_utc("0"), "0000-00-00T00:00:00.000000Z");
    }

    #[test]
    fn enums_sets_and_bits() {
        let e = MyKind::Enum(vec!["sad".into(), "happy".into()]);
        assert_eq!(e.value(MyValue::Int(2)), json!("happy"));
        // A (hostile) layout claiming more than 64 members reads only 64.
        let many: Vec<String> = (0..70).map(|i| format!("m{i}")).collect();
        assert_eq!(
            MyKind::Set(many).value(MyValue::Bytes(vec![1, 0, 0, 0, 0, 0, 0, 0x80, 0xff])),
            json!(["m0", "m63"])
        );
        let s = MyKind::Set(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(s.value(MyValue::Bytes(vec![0b101])), json!(["a", "c"]));
        assert_eq!(MyKind::Bit1.value(MyValue::Bytes(vec![1])), json!(true));
        // YEAR 0000 arrives from the row decoder as 1900.
        assert_eq!(
            MyKind::Year.value(MyValue::Bytes(b"1900".to_vec())),
            json!(0)
        );
        assert_eq!(
            MyKind::Year.value(MyValue::Bytes(b"1901".to_vec())),
            json!(1901)
        );
        assert_eq!(
            MyKind::Integer.value(MyValue::UInt(u64::MAX)),
            json!(u64::MAX)
        );
        assert_eq!(
            MyKind::Text { latin1: true }.value(MyValue::Bytes(vec![0xE9])),
            json!("é")
        );
        // The server's latin1 is Windows-1252, as its own conversion (the
        // snapshot's path) reads it.
        assert_eq!(
            MyKind::Text { latin1: true }.value(MyValue::Bytes(vec![0x80, 0x81, 0x9F])),
            json!("€\u{81}Ÿ")
        );
    }
}
