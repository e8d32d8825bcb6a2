//! Decoding of rows-event images straight into their JSON.
//!
//! `mysql_common`'s `BinlogRow` builds a `Column` (with owned names) for every
//! column of every row; at hundreds of thousands of rows a second that
//! allocation dominates. Here each value is read with a per-table layout
//! computed once per TABLE_MAP (by the hand decoders of `wire` for the common
//! encodings, else by `mysql_common`'s `BinlogValue` decoder) and written into
//! the image's JSON object at once: no `Value` per column, no name per column
//! (names are rendered once per table).

use super::layout::WireColumn;
use super::schema::TableColumns;
use super::wire;
use crate::event::{Image, Row};
use mysql_async::binlog::value::BinlogValue;
use mysql_common::io::ParseBuf;
use serde_json::Value;
use std::io;
use std::sync::Arc;

/// Reads every row of a rows event: per row the before image (with the
/// columns `before` marks, when the event has one) then the after image. A
/// row that takes no bytes (a table of no columns) would repeat forever on
/// bytes that are left: it is an error. Errors name the row's index.
#[allow(clippy::type_complexity)]
pub(crate) fn read_rows<'a>(
    rows_data: &'a [u8],
    before: Option<&[bool]>,
    after: Option<&[bool]>,
    table: &'a TableColumns,
) -> Result<Vec<(Option<DecodedImage>, Option<DecodedImage>)>, (usize, io::Error)> {
    let mut buf = ParseBuf(rows_data);
    let mut decoded = Vec::new();
    let mut len_hint = 64;
    while !buf.is_empty() {
        let left = buf.len();
        let row = decoded.len();
        let mut image = |cols: Option<&[bool]>| {
            cols.map(|c| read_image(&mut buf, c, table, &mut len_hint))
                .transpose()
                .map_err(|e| (row, e))
        };
        let pair = (image(before)?, image(after)?);
        if buf.len() == left {
            return Err((
                row,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{left} bytes left that no row image reads"),
                ),
            ));
        }
        decoded.push(pair);
    }
    Ok(decoded)
}

/// One decoded row image.
pub(crate) struct DecodedImage {
    /// The image as a JSON object, rendered from the wire.
    pub image: Image,
    /// The table's key columns, when the image has them all.
    pub key: Option<Row>,
    /// Columns the image leaves out (they go to `unchanged`).
    pub missing: Vec<Arc<str>>,
}

/// Reads one row image: the null bitmap of the present columns, then their
/// values, rendered straight into the image's JSON (the column names were
/// rendered once per table); only the key columns become `Value`s, read back
/// from what was rendered. `len_hint` carries the last image's length over to
/// size the next one.
pub(crate) fn read_image<'a>(
    buf: &mut ParseBuf<'a>,
    present: &[bool],
    table: &'a TableColumns,
    len_hint: &mut usize,
) -> io::Result<DecodedImage> {
    let count = present.iter().filter(|p| **p).count();
    let nulls = buf
        .checked_eat(count.div_ceil(8))
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "truncated null bitmap"))?;
    let mut json = Vec::with_capacity(*len_hint);
    json.push(b'{');
    // Key values in column order (put in key order below, if that differs).
    let mut key: Vec<(Arc<str>, Value)> = Vec::with_capacity(table.key.len());
    let mut missing = Vec::new();
    let mut image_index = 0;
    for (i, is_present) in present.iter().enumerate() {
        let (Some(name), Some(json_name), Some(column)) = (
            table.names.get(i),
            table.json_names.get(i),
            table.wire.get(i),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "row image has column {i}, the table map only {}",
                    table.wire.len()
                ),
            ));
        };
        if !is_present {
            missing.push(name.clone());
            continue;
        }
        let is_null = nulls[image_index / 8] >> (image_index % 8) & 1 == 1;
        if image_index > 0 {
            json.push(b',');
        }
        image_index += 1;
        json.extend_from_slice(json_name);
        let start = json.len();
        if is_null {
            json.extend_from_slice(b"null");
        } else {
            write_value(buf, column, &mut json)
                .map_err(|e| io::Error::new(e.kind(), format!("column {name}: {e}")))?;
        }
        if table.key.contains(&i) {
            key.push((name.clone(), read_back(&json[start..], name)?));
        }
    }
    json.push(b'}');
    *len_hint = json.len() + 16;
    if !table.key.is_sorted() {
        let order = |name: &Arc<str>| {
            table
                .key
                .iter()
                .position(|&k| table.names.get(k) == Some(name))
        };
        key.sort_by_key(|(name, _)| order(name));
    }
    let complete = !table.key.is_empty() && key.len() == table.key.len();
    let key = complete.then_some(Row(key));
    Ok(DecodedImage {
        image: Image::Json(json),
        key,
        missing,
    })
}

/// One non-null value as JSON: by a hand decoder of `wire` when it has one for
/// the column, else by `mysql_common`'s.
fn write_value<'a>(
    buf: &mut ParseBuf<'a>,
    column: &'a WireColumn,
    json: &mut Vec<u8>,
) -> io::Result<()> {
    if !wire::write_json(buf, column, json)? {
        let value: BinlogValue<'_> =
            buf.parse((column.column_type, &column.meta[..], column.unsigned, false))?;
        column.kind.write_json(value, json);
    }
    Ok(())
}

/// The key holds what the image holds: a value's rendered JSON, read back
/// (integers, the common key, without going through the JSON parser).
fn read_back(rendered: &[u8], column: &str) -> io::Result<Value> {
    let text = std::str::from_utf8(rendered).unwrap_or_default();
    if let Ok(n) = text.parse::<i64>() {
        return Ok(Value::from(n));
    }
    serde_json::from_slice(rendered).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("key column {column} rendered as invalid JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::read_back;
    use serde_json::json;

    /// A table of no columns reads rows of no bytes: bytes left over must be
    /// an error, not a loop that never ends (found by the binlog_rows fuzzer).
    #[test]
    fn bytes_no_row_image_reads_are_an_error() {
        let table = super::TableColumns::empty("d", "t");
        let result = super::read_rows(&[0x25], None, Some(&[]), &table);
        match result {
            Err((0, e)) => assert!(e.to_string().contains("no row image reads"), "{e}"),
            Err((row, e)) => panic!("row {row}: {e}"),
            Ok(rows) => panic!("{} rows from one stray byte", rows.len()),
        }
    }

    #[test]
    fn keys_read_back_as_the_parser_would() {
        for rendered in [
            "0",
            "-42",
            "9223372036854775807",
            "18446744073709551615",
            "\"a\\\"b\"",
            "null",
            "1.5",
            "\"2026-11-22T00:00:00.000000\"",
        ] {
            let parsed: serde_json::Value = serde_json::from_str(rendered).expect("json");
            assert_eq!(
                read_back(rendered.as_bytes(), "id").expect("read back"),
                parsed,
                "{rendered}"
            );
        }
        assert_eq!(read_back(b"-7", "id").expect("read back"), json!(-7));
        let err = read_back(b"{oops", "id").expect_err("not JSON");
        assert!(
            err.to_string()
                .starts_with("key column id rendered as invalid JSON"),
            "{err}"
        );
    }
}
