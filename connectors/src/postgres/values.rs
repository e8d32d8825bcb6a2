//! Postgres column values (text form) to the JSON forms of docs/events.md.
//!
//! Both the WAL stream and the snapshot read values in their text form (the
//! snapshot selects `column::text`), so one converter serves both and a row reads
//! the same whichever path it came by. The sessions pin `TimeZone=UTC`,
//! `DateStyle=ISO`, `bytea_output=hex` and `extra_float_digits=1` so the text is
//! predictable.

use base64::Engine;
use serde_json::{Number, Value};

/// How a column's text form maps to JSON. Chosen once per column, by type OID.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// int2, int4, int8, oid, xid: exact JSON numbers.
    Integer,
    /// numeric: a string of the exact digits (`NaN`, `Infinity` as such).
    Numeric,
    /// float4, float8: numbers; NaN and infinities as strings.
    Float,
    Bool,
    /// bytea: base64.
    Bytes,
    /// date: as is (`2026-11-21`, `infinity`).
    Date,
    /// time: `13:45:00.123456`, always six fractional digits.
    Time,
    /// timestamp: `2026-11-21T13:45:00.123456`.
    Timestamp,
    /// timestamptz: UTC, `2026-11-21T13:45:00.123456Z`.
    TimestampTz,
    /// json, jsonb: a string holding the JSON text.
    Json,
    /// Arrays: a JSON array of the element form.
    Array(Box<ValueKind>),
    /// Text types, uuid, enums, and every other type: the text form as a string.
    Text,
}

impl ValueKind {
    /// The kind of a built-in type, or `None` when the catalog must be asked
    /// (user-defined types, domains, arrays of those).
    pub(crate) fn builtin(oid: u32) -> Option<ValueKind> {
        use ValueKind::*;
        let array = |k: ValueKind| Array(Box::new(k));
        Some(match oid {
            20 | 21 | 23 | 26 | 28 => Integer,
            1700 => Numeric,
            700 | 701 => Float,
            16 => Bool,
            17 => Bytes,
            1082 => Date,
            1083 => Time,
            1114 => Timestamp,
            1184 => TimestampTz,
            114 | 3802 => Json,
            18 | 19 | 25 | 1042 | 1043 | 2950 | 1266 | 1186 | 142 | 790 | 1560 | 1562 | 869
            | 650 | 829 => Text,
            1005 | 1007 | 1016 | 1028 => array(Integer),
            1231 => array(Numeric),
            1021 | 1022 => array(Float),
            1000 => array(Bool),
            1001 => array(Bytes),
            1182 => array(Date),
            1183 => array(Time),
            1115 => array(Timestamp),
            1185 => array(TimestampTz),
            199 | 3807 => array(Json),
            1002 | 1003 | 1009 | 1014 | 1015 | 2951 | 1270 | 1187 | 143 | 791 => array(Text),
            _ => return None,
        })
    }

    /// Converts one non-NULL text value.
    pub(crate) fn to_json(&self, text: &str) -> Value {
        match self {
            ValueKind::Integer => integer(text),
            ValueKind::Numeric | ValueKind::Json | ValueKind::Text => {
                Value::String(text.to_owned())
            }
            ValueKind::Date => Value::String(astronomical_year(text)),
            ValueKind::Float => match text.parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Value::Number(n),
                None => Value::String(text.to_owned()),
            },
            ValueKind::Bool => Value::Bool(text == "t"),
            ValueKind::Bytes => bytes(text),
            ValueKind::Time => Value::String(micros(text)),
            ValueKind::Timestamp => Value::String(timestamp(text)),
            ValueKind::TimestampTz => Value::String(timestamptz(text)),
            ValueKind::Array(element) => {
                let body = match text.find('=') {
                    // `[0:1]={1,2}`: arrays with explicit bounds.
                    Some(i) if text.starts_with('[') => &text[i + 1..],
                    _ => text,
                };
                let mut parser = ArrayParser {
                    rest: body.as_bytes(),
                    element,
                    depth: 0,
                };
                parser
                    .array()
                    .unwrap_or_else(|| Value::String(text.to_owned()))
            }
        }
    }
}

fn integer(text: &str) -> Value {
    if let Ok(v) = text.parse::<i64>() {
        Value::Number(v.into())
    } else if let Ok(v) = text.parse::<u64>() {
        Value::Number(v.into())
    } else {
        Value::String(text.to_owned())
    }
}

fn bytes(text: &str) -> Value {
    let hex = text.strip_prefix("\\x").unwrap_or(text).as_bytes();
    let decoded: Option<Vec<u8>> = hex
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect();
    match decoded {
        Some(raw) if hex.len() % 2 == 0 => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
        }
        _ => Value::String(text.to_owned()),
    }
}

/// `13:45:00` or `13:45:00.12` → `13:45:00.000000` / `13:45:00.120000`; any
/// suffix after the seconds (a zone, ` BC`) is kept.
fn micros(text: &str) -> String {
    // hh:mm:ss is 8 bytes; a time of day always has it.
    let Some(head) = text.get(..8) else {
        return text.to_owned();
    };
    let rest = &text[8..];
    let (fraction, tail) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..digits], &r[digits..])
        }
        None => ("", rest),
    };
    format!("{head}.{fraction:0<6}{tail}")
}

fn is_infinite(text: &str) -> bool {
    text == "infinity" || text == "-infinity"
}

/// A date or timestamp before year 1 (Postgres writes `4714-11-24 BC`) in ISO
/// 8601's astronomical numbering: 1 BC is year `0000`, 2 BC `-0001`, so
/// `-4713-11-24`. Other texts are returned as they are.
fn astronomical_year(text: &str) -> String {
    let Some(ad_form) = text.strip_suffix(" BC") else {
        return text.to_owned();
    };
    let digits = ad_form.bytes().take_while(u8::is_ascii_digit).count();
    match ad_form[..digits].parse::<i64>() {
        Ok(year_bc) => {
            let year = 1 - year_bc;
            let sign = if year < 0 { "-" } else { "" };
            format!("{sign}{:04}{}", year.abs(), &ad_form[digits..])
        }
        Err(_) => text.to_owned(),
    }
}

/// A timestamp text ending in ` BC`: formed by `form` without the suffix, then
/// its year made astronomical.
fn before_year_one(text: &str, form: fn(&str) -> String) -> Option<String> {
    let formed = form(text.strip_suffix(" BC")?);
    Some(match formed.split_once('T') {
        Some((date, time)) => format!("{}T{time}", astronomical_year(&format!("{date} BC"))),
        None => formed,
    })
}

fn timestamp(text: &str) -> String {
    if is_infinite(text) {
        return text.to_owned();
    }
    if let Some(bc) = before_year_one(text, timestamp) {
        return bc;
    }
    match text.split_once(' ') {
        Some((date, time)) => format!("{date}T{}", micros(time)),
        None => text.to_owned(),
    }
}

fn timestamptz(text: &str) -> String {
    if is_infinite(text) {
        return text.to_owned();
    }
    if let Some(bc) = before_year_one(text, timestamptz) {
        return bc;
    }
    // With TimeZone=UTC the server writes `... 13:45:00.123+00`.
    match text.strip_suffix("+00") {
        Some(utc) => format!("{}Z", timestamp(utc)),
        None => timestamp(text),
    }
}

/// Postgres arrays have at most 6 dimensions (`MAXDIM`); deeper nesting is
/// not an array Postgres wrote, and is not recursed into.
const MAX_ARRAY_DEPTH: usize = 6;

/// Parses Postgres' array literal (`{1,NULL,"a,b",{2,3}}`).
struct ArrayParser<'a> {
    rest: &'a [u8],
    element: &'a ValueKind,
    depth: usize,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn array(&mut self) -> Option<Value> {
        if self.bump()? != b'{' || self.depth == MAX_ARRAY_DEPTH {
            return None;
        }
        self.depth += 1;
        let mut items = Vec::new();
        if self.peek()? == b'}' {
            self.bump();
            self.depth -= 1;
            return Some(Value::Array(items));
        }
        loop {
            let item = match self.peek()? {
                b'{' => self.array()?,
                b'"' => {
                    let text = self.quoted()?;
                    self.element.to_json(&text)
                }
                _ => {
                    let len = self.rest.iter().position(|b| *b == b',' || *b == b'}')?;
                    let (raw, rest) = self.rest.split_at(len);
                    self.rest = rest;
                    let text = std::str::from_utf8(raw).ok()?;
                    if text.eq_ignore_ascii_case("NULL") {
                        Value::Null
                    } else {
                        self.element.to_json(text)
                    }
                }
            };
            items.push(item);
            match self.bump()? {
                b',' => continue,
                b'}' => {
                    self.depth -= 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<String> {
        self.bump();
        let mut out = Vec::new();
        loop {
            match self.bump()? {
                b'\\' => out.push(self.bump()?),
                b'"' => return String::from_utf8(out).ok(),
                b => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_follow_the_contract() {
        assert_eq!(
            ValueKind::Integer.to_json("18446744073709551615"),
            json!(18446744073709551615u64)
        );
        assert_eq!(ValueKind::Float.to_json("-Infinity"), json!("-Infinity"));
        assert_eq!(ValueKind::Float.to_json("1.5"), json!(1.5));
        assert_eq!(ValueKind::Bytes.to_json("\\x00ff"), json!("AP8="));
        assert_eq!(
            ValueKind::Time.to_json("13:45:00"),
            json!("13:45:00.000000")
        );
        assert_eq!(
            ValueKind::TimestampTz.to_json("2026-11-21 13:45:00.5+00"),
            json!("2026-11-21T13:45:00.500000Z")
        );
        assert_eq!(ValueKind::Timestamp.to_json("infinity"), json!("infinity"));
    }

    #[test]
    fn arrays_nest_quote_and_hold_nulls() {
        let ints = ValueKind::Array(Box::new(ValueKind::Integer));
        assert_eq!(ints.to_json("{{1,2},{3,NULL}}"), json!([[1, 2], [3, null]]));
        let texts = ValueKind::Array(Box::new(ValueKind::Text));
        assert_eq!(
            texts.to_json(r#"{"a,b","say \"hi\"",NULL,"NULL"}"#),
            json!(["a,b", "say \"hi\"", null, "NULL"])
        );
        assert_eq!(ints.to_json("[0:1]={7,8}"), json!([7, 8]));
        assert_eq!(ints.to_json("{}"), json!([]));
        // Six dimensions are read; hostile nesting past that is left as text,
        // without recursing a level per byte.
        assert_eq!(ints.to_json("{{{{{{1}}}}}}"), json!([[[[[[1]]]]]]));
        let deep = format!("{}{}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(ints.to_json(&deep), json!(deep));
    }

    /// Years before 1 use ISO 8601 astronomical numbering, the same for
    /// every date and time type, and timestamptz stays UTC `…Z`.
    #[test]
    fn dates_before_year_one_are_astronomical() {
        assert_eq!(
            ValueKind::Date.to_json("0001-01-01 BC"),
            json!("0000-01-01")
        );
        assert_eq!(
            ValueKind::Date.to_json("4714-11-24 BC"),
            json!("-4713-11-24")
        );
        assert_eq!(
            ValueKind::Timestamp.to_json("0002-02-03 04:05:06.5 BC"),
            json!("-0001-02-03T04:05:06.500000")
        );
        assert_eq!(
            ValueKind::TimestampTz.to_json("4714-12-31 23:59:59.999999+00 BC"),
            json!("-4713-12-31T23:59:59.999999Z")
        );
        assert_eq!(
            ValueKind::TimestampTz.to_json("294276-12-31 23:59:59.999999+00"),
            json!("294276-12-31T23:59:59.999999Z")
        );
        let dates = ValueKind::Array(Box::new(ValueKind::Date));
        assert_eq!(
            dates.to_json(r#"{"0001-01-01 BC",2026-01-01}"#),
            json!(["0000-01-01", "2026-01-01"])
        );
    }
}
