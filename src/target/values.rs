//! From an event's JSON value forms (README "Events") back to what a target
//! column takes: Postgres input text (sent as `text[]` and cast in SQL) or a
//! MySQL literal. The target column's kind decides, so `"aGk="` is bytes for a
//! `bytea` column and text for a `text` column.

use base64::Engine as _;
use serde_json::Value;
use std::fmt::Write as _;
use tidemark_connectors::sql::mysql::push_literal;

/// What a target column holds, as far as converting values goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer,
    Decimal,
    Float,
    /// MySQL's single-precision `FLOAT`.
    Float4,
    Bytes,
    /// Bit strings; `bits` is the width (1 for a flag).
    Bit {
        bits: u32,
    },
    Json,
    /// A Postgres array, and what its elements hold.
    Array(Element),
    /// A MySQL `SET`.
    Set,
    Date,
    DateTime,
    Time,
    Text,
}

/// The elements of a Postgres array, as far as their event form differs from
/// Postgres input text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// base64 in events, `\x…` hex for Postgres.
    Bytes,
    /// Dates and timestamps: years before 1 are astronomical in events.
    Date,
    DateTime,
    /// Everything else: the event form is Postgres input text.
    Other,
}

impl Element {
    fn kind(self) -> Kind {
        match self {
            Element::Bytes => Kind::Bytes,
            Element::Date => Kind::Date,
            Element::DateTime => Kind::DateTime,
            Element::Other => Kind::Text,
        }
    }
}

/// The kind of a Postgres column from its `format_type` text.
pub(crate) fn pg_kind(type_name: &str) -> Kind {
    let base = type_name.split('(').next().unwrap_or(type_name).trim();
    if let Some(element) = type_name.strip_suffix("[]") {
        return Kind::Array(match pg_kind(element) {
            Kind::Bytes => Element::Bytes,
            Kind::Date => Element::Date,
            Kind::DateTime => Element::DateTime,
            _ => Element::Other,
        });
    }
    match base {
        "boolean" => Kind::Bool,
        "smallint" | "integer" | "bigint" | "oid" => Kind::Integer,
        "numeric" => Kind::Decimal,
        "real" | "double precision" => Kind::Float,
        "bytea" => Kind::Bytes,
        "bit" | "bit varying" => Kind::Bit { bits: 0 },
        "json" | "jsonb" => Kind::Json,
        "date" => Kind::Date,
        b if b.starts_with("timestamp") => Kind::DateTime,
        b if b.starts_with("time") => Kind::Time,
        _ => Kind::Text,
    }
}

/// The kind of a MySQL column from `information_schema.COLUMNS`
/// (`DATA_TYPE`, `COLUMN_TYPE`).
pub(crate) fn mysql_kind(data_type: &str, column_type: &str) -> Kind {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            Kind::Integer
        }
        "decimal" | "numeric" => Kind::Decimal,
        "float" => Kind::Float4,
        "double" | "real" => Kind::Float,
        "bit" => Kind::Bit {
            bits: column_type
                .trim_start_matches("bit(")
                .trim_end_matches(')')
                .parse()
                .unwrap_or(1),
        },
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Bytes,
        // Spatial values travel as the server's own bytes (SRID, then WKB),
        // which a spatial column takes as a binary string.
        t if tidemark_connectors::mysql::values::is_spatial(t) => Kind::Bytes,
        "json" => Kind::Json,
        "set" => Kind::Set,
        "date" => Kind::Date,
        "datetime" | "timestamp" => Kind::DateTime,
        "time" => Kind::Time,
        _ => Kind::Text,
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64 ({e})"))
}

/// MySQL's zero dates (`0000-00-00`, documented event form) have no Postgres
/// equivalent; they become NULL there.
fn is_zero_date(text: &str) -> bool {
    text.starts_with("0000-00-00")
}

/// The Postgres input text for `value` in a column of `kind` (`None` = NULL).
pub(crate) fn pg_text(kind: Kind, value: &Value) -> Result<Option<String>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => match kind {
            Kind::Integer | Kind::Decimal | Kind::Bit { .. } => (if *b { "1" } else { "0" }).into(),
            _ => (if *b { "t" } else { "f" }).into(),
        },
        Value::Number(n) => match kind {
            Kind::Bool => (if n.as_f64() != Some(0.0) { "t" } else { "f" }).into(),
            _ => n.to_string(),
        },
        Value::String(s) => match kind {
            Kind::Bytes => {
                let bytes = decode_base64(s)?;
                let mut out = String::with_capacity(2 + bytes.len() * 2);
                out.push_str("\\x");
                out.push_str(&hex::encode(bytes));
                out
            }
            Kind::Date | Kind::DateTime if is_zero_date(s) => return Ok(None),
            Kind::Date | Kind::DateTime => pg_date_text(s),
            _ => s.clone(),
        },
        Value::Array(items) => match kind {
            Kind::Array(element) => pg_array(items, element)?,
            _ => value.to_string(),
        },
        Value::Object(_) => value.to_string(),
    }))
}

/// A year before 1 in the event form (ISO 8601 astronomical: `0000` is 1 BC,
/// `-0001` 2 BC) as the year number Postgres reads with a ` BC` suffix.
fn year_before_one(text: &str) -> Option<(i64, &str)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    let year: i64 = unsigned.get(..digits)?.parse().ok()?;
    let year = if negative { -year } else { year };
    (digits >= 4 && year <= 0 && unsigned.as_bytes().get(digits) == Some(&b'-'))
        .then(|| (1 - year, &unsigned[digits..]))
}

/// Postgres input text for a date or timestamp in the event form: years
/// before 1 get Postgres' ` BC` suffix.
fn pg_date_text(text: &str) -> String {
    match year_before_one(text) {
        Some((year_bc, rest)) => format!("{year_bc:04}{rest} BC"),
        None => text.to_owned(),
    }
}

/// A Postgres array literal (`{a,"b c",NULL,{1,2}}`), each element converted
/// as its kind says (`bytea[]` elements are base64 in events).
fn pg_array(items: &[Value], element: Element) -> Result<String, String> {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Array(inner) => out.push_str(&pg_array(inner, element)?),
            item => match pg_text(element.kind(), item)? {
                None => out.push_str("NULL"),
                Some(text) => quote_array_element(&mut out, &text),
            },
        }
    }
    out.push('}');
    Ok(out)
}

fn quote_array_element(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Appends the MySQL literal for `value` in a column of `kind`.
pub(crate) fn mysql_literal(kind: Kind, value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Bool(b) => out.push_str(if *b { "1" } else { "0" }),
        Value::Number(n) => match (kind, n.as_f64()) {
            // The largest single-precision value, written exactly
            // (3.4028234663852886e38), is past the bound MySQL checks a FLOAT
            // literal against (its FLT_MAX constant, 3.402823466e38), and is
            // refused; that constant rounds to the same float.
            (Kind::Float4, Some(f)) if (f as f32).abs() == f32::MAX => out.push_str(if f < 0.0 {
                "-3.402823466e38"
            } else {
                "3.402823466e38"
            }),
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::String(s) => match kind {
            Kind::Bytes | Kind::Bit { .. } => {
                let bytes = decode_base64(s)?;
                if bytes.is_empty() {
                    out.push_str("''");
                } else {
                    out.push_str("X'");
                    out.push_str(&hex::encode(bytes));
                    out.push('\'');
                }
            }
            Kind::Bool => out.push_str(if s == "t" || s == "true" { "1" } else { "0" }),
            Kind::Date | Kind::DateTime if !is_mysql_date(s) => return Err(
                "has no MySQL/MariaDB equivalent (dates run from year 0000 to 9999, no infinity)"
                    .into(),
            ),
            // Event timestamps are ISO (`T`, and `Z` for UTC): MySQL takes the
            // space form, in the session's UTC.
            Kind::DateTime => push_literal(out, &s.trim_end_matches('Z').replacen('T', " ", 1)),
            _ => push_literal(out, s),
        },
        Value::Array(items) if kind == Kind::Set => {
            let labels: Vec<String> = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            push_literal(out, &labels.join(","));
        }
        Value::Array(_) | Value::Object(_) => push_literal(out, &value.to_string()),
    }
    Ok(())
}

/// Whether a date or timestamp event text is one MySQL/MariaDB can hold: a
/// four-digit year (not `infinity`, not before year 1 (`0000-01-01` is 1 BC
/// in the event form), not past 9999); MySQL's zero dates are.
fn is_mysql_date(text: &str) -> bool {
    let year = text.as_bytes().get(..5);
    let four_digits = year.is_some_and(|y| y[..4].iter().all(u8::is_ascii_digit) && y[4] == b'-');
    four_digits && (is_zero_date(text) || !text.starts_with("0000-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn postgres_text_follows_the_column_kind() {
        let text = |kind, v: Value| pg_text(kind, &v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(Kind::Bytes, json!("aGk=")), Some("\\x6869".into()));
        assert_eq!(text(Kind::Text, json!("aGk=")), Some("aGk=".into()));
        assert_eq!(text(Kind::Bool, json!(true)), Some("t".into()));
        assert_eq!(
            text(pg_kind("text[]"), json!(["a", "b c", null])),
            Some("{\"a\",\"b c\",NULL}".into())
        );
        // bytea[] elements are base64 in events and hex for Postgres.
        assert_eq!(
            text(pg_kind("bytea[]"), json!([["AAEC", null], ["", "/w=="]])),
            Some(r#"{{"\\x000102",NULL},{"\\x","\\xff"}}"#.into())
        );
        assert_eq!(
            text(pg_kind("boolean[]"), json!([true, false])),
            Some(r#"{"t","f"}"#.into())
        );
        // Years before 1 go back to Postgres' BC form.
        assert_eq!(
            text(Kind::DateTime, json!("-4713-12-31T23:59:59.999999Z")),
            Some("4714-12-31T23:59:59.999999Z BC".into())
        );
        assert_eq!(
            text(Kind::Date, json!("0000-01-01")),
            Some("0001-01-01 BC".into())
        );
        assert_eq!(
            text(pg_kind("date[]"), json!(["0000-01-01", "2026-01-01"])),
            Some(r#"{"0001-01-01 BC","2026-01-01"}"#.into())
        );
        assert_eq!(
            text(Kind::Date, json!("2026-01-01")),
            Some("2026-01-01".into())
        );
        assert_eq!(text(Kind::Date, json!("0000-00-00")), None);
        assert_eq!(
            text(Kind::Integer, json!(18446744073709551615u64)),
            Some("18446744073709551615".into())
        );
    }

    #[test]
    fn mysql_literals_are_escaped_and_typed() {
        let lit = |kind, v: Value| {
            let mut out = String::new();
            mysql_literal(kind, &v, &mut out).unwrap_or_else(|e| panic!("{e}"));
            out
        };
        assert_eq!(lit(Kind::Text, json!("it's \\ ok")), "'it\\'s \\\\ ok'");
        assert_eq!(lit(Kind::Bytes, json!("aGk=")), "X'6869'");
        assert_eq!(
            lit(Kind::DateTime, json!("2026-11-21T13:45:00.5Z")),
            "'2026-11-21 13:45:00.5'"
        );
        assert_eq!(lit(Kind::Set, json!(["a", "b"])), "'a,b'");
        // FLOAT's maximum as events carry it (the f32 widened) goes in.
        assert_eq!(lit(Kind::Float4, json!(f32::MAX as f64)), "3.402823466e38");
        assert_eq!(lit(Kind::Float4, json!(-3.4028235e38)), "-3.402823466e38");
        assert_eq!(lit(Kind::Float4, json!(1.5)), "1.5");
        assert_eq!(lit(Kind::Date, json!("0000-00-00")), "'0000-00-00'");
        for refused in [
            "infinity",
            "-infinity",
            "-4713-11-24",
            "0000-01-01",
            "294276-01-01T00:00:00.000000Z",
        ] {
            let mut out = String::new();
            assert!(
                mysql_literal(Kind::DateTime, &json!(refused), &mut out).is_err(),
                "{refused}"
            );
        }
        assert_eq!(lit(Kind::Text, json!(["a", "b"])), "'[\"a\",\"b\"]'");
    }
}
