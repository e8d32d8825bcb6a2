//! From an event's JSON value forms (README "Events") back to what a target
//! column takes: Postgres input text (sent as `text[]` and cast in SQL) or a
//! MySQL literal. The target column's kind decides, so `"aGk="` is bytes for a
//! `bytea` column and text for a `text` column.

use base64::Engine as _;
use serde_json::Value;
use std::fmt::Write as _;

/// What a target column holds, as far as converting values goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer,
    Decimal,
    Float,
    Bytes,
    /// Bit strings; `bits` is the width (1 for a flag).
    Bit {
        bits: u32,
    },
    Json,
    /// A Postgres array.
    Array,
    /// A MySQL `SET`.
    Set,
    Date,
    DateTime,
    Time,
    Text,
}

/// The kind of a Postgres column from its `format_type` text.
pub fn pg_kind(type_name: &str) -> Kind {
    let base = type_name.split('(').next().unwrap_or(type_name).trim();
    if type_name.ends_with("[]") {
        return Kind::Array;
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
pub fn mysql_kind(data_type: &str, column_type: &str) -> Kind {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            Kind::Integer
        }
        "decimal" | "numeric" => Kind::Decimal,
        "float" | "double" | "real" => Kind::Float,
        "bit" => Kind::Bit {
            bits: column_type
                .trim_start_matches("bit(")
                .trim_end_matches(')')
                .parse()
                .unwrap_or(1),
        },
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Bytes,
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
pub fn pg_text(kind: Kind, value: &Value) -> Result<Option<String>, String> {
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
            _ => s.clone(),
        },
        Value::Array(items) => match kind {
            Kind::Array => pg_array(items),
            _ => value.to_string(),
        },
        Value::Object(_) => value.to_string(),
    }))
}

/// A Postgres array literal (`{a,"b c",NULL,{1,2}}`).
fn pg_array(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&pg_array(inner)),
            Value::String(s) => quote_array_element(&mut out, s),
            Value::Object(_) => quote_array_element(&mut out, &item.to_string()),
            other => out.push_str(&other.to_string()),
        }
    }
    out.push('}');
    out
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
pub fn mysql_literal(kind: Kind, value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Bool(b) => out.push_str(if *b { "1" } else { "0" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
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
            // Event timestamps are ISO (`T`, and `Z` for UTC): MySQL takes the
            // space form, in the session's UTC.
            Kind::DateTime => quote_mysql(out, &s.trim_end_matches('Z').replacen('T', " ", 1)),
            _ => quote_mysql(out, s),
        },
        Value::Array(items) if kind == Kind::Set => {
            let labels: Vec<String> = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            quote_mysql(out, &labels.join(","));
        }
        Value::Array(_) | Value::Object(_) => quote_mysql(out, &value.to_string()),
    }
    Ok(())
}

/// A quoted MySQL string literal (backslash escapes on, the server default).
pub fn quote_mysql(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x1a' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
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
            text(Kind::Array, json!(["a", "b c", null])),
            Some("{\"a\",\"b c\",NULL}".into())
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
        assert_eq!(lit(Kind::Text, json!(["a", "b"])), "'[\"a\",\"b\"]'");
    }
}
