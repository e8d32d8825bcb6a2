//! Decoding of rows-event images straight into their JSON.
//!
//! `mysql_common`'s `BinlogRow` builds a `Column` (with owned names) for every
//! column of every row; at hundreds of thousands of rows a second that
//! allocation dominates. Here each value is parsed with `mysql_common`'s own
//! `BinlogValue` decoder, using a per-table layout computed once per TABLE_MAP,
//! and written into the image's JSON object at once: no `Value` per column, no
//! name per column (names are rendered once per table).

use super::schema::TableColumns;
use super::values::MyKind;
use crate::event::{json, Image, Row};
use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::binlog::decimal::Decimal;
use mysql_common::io::ParseBuf;
use serde_json::Value;
use std::io::{self, Write as _};
use std::sync::Arc;

/// How one column is laid out in a row image.
#[derive(Debug, Clone)]
pub struct WireColumn {
    pub column_type: ColumnType,
    pub meta: Vec<u8>,
    pub unsigned: bool,
    pub kind: MyKind,
}

/// The wire layout of every column of a TABLE_MAP, with value kinds resolved
/// from its metadata (signedness, charsets, ENUM/SET labels).
pub fn wire_layout(
    tme: &TableMapEvent<'_>,
    labels: &mut dyn FnMut(ColumnType) -> Option<Vec<String>>,
) -> io::Result<Vec<WireColumn>> {
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let mut signedness = extractor.iter_signedness();
    let mut charsets = extractor.iter_charset();
    let count = tme.columns_count() as usize;
    let mut columns = Vec::with_capacity(count);
    for i in 0..count {
        let column_type = tme
            .get_column_type(i)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("column {i} has no type"),
                )
            })?;
        let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
        let unsigned = column_type.is_numeric_type() && signedness.next().unwrap_or(false);
        let charset = if column_type.is_character_type() {
            charsets.next().transpose()?.unwrap_or(0)
        } else {
            0
        };
        let kind = MyKind::of(column_type, &meta, charset, labels(column_type));
        columns.push(WireColumn {
            column_type,
            meta,
            unsigned,
            kind,
        });
    }
    Ok(columns)
}

/// One decoded row image.
pub struct DecodedImage {
    /// The image as a JSON object, rendered from the wire.
    pub image: Image,
    /// The table's key columns, when the image has them all.
    pub key: Option<Row>,
    /// Columns the image leaves out (they go to `unchanged`).
    pub missing: Vec<Arc<str>>,
}

/// Reads one row image: the null bitmap of the present columns, then their
/// values, rendered straight into the image's JSON (the column names were
/// rendered once per table); only the key columns become `Value`s. `len_hint`
/// carries the last image's length over to size the next one.
pub fn read_image<'a>(
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
        let in_key = table.key.contains(&i);
        if is_null {
            json.extend_from_slice(b"null");
            if in_key {
                key.push((name.clone(), Value::Null));
            }
        } else if in_key {
            let value: BinlogValue<'_> =
                buf.parse((column.column_type, &column.meta[..], column.unsigned, false))?;
            let value = column.kind.to_json(value);
            json::value(&mut json, &value);
            key.push((name.clone(), value));
        } else if column.column_type == ColumnType::MYSQL_TYPE_NEWDECIMAL {
            // mysql_common would format the decimal into a new String; its
            // text (digits, sign, point) goes straight into the JSON instead.
            let (precision, scale) = (column.meta.first(), column.meta.get(1));
            let (Some(&precision), Some(&scale)) = (precision, scale) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("DECIMAL column {i} without precision and scale"),
                ));
            };
            let decimal = Decimal::read_bin(&mut *buf, precision as usize, scale as usize, false)?;
            json.push(b'"');
            write!(json, "{decimal}")?;
            json.push(b'"');
        } else if let Some(text) = utf8_varchar(buf, column)? {
            json::string(&mut json, text);
        } else {
            let value: BinlogValue<'_> =
                buf.parse((column.column_type, &column.meta[..], column.unsigned, false))?;
            column.kind.write_json(value, &mut json);
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

/// A VARCHAR value of a UTF-8 column, borrowed from the image: its length (one
/// byte, or two when the column can hold more than 255 bytes) then its bytes.
/// `mysql_common` would copy it into a new vector first. `None` (and nothing
/// read) for other columns and for bytes that are not UTF-8.
fn utf8_varchar<'a>(buf: &mut ParseBuf<'a>, column: &WireColumn) -> io::Result<Option<&'a str>> {
    let is_varchar = matches!(
        column.column_type,
        ColumnType::MYSQL_TYPE_VARCHAR | ColumnType::MYSQL_TYPE_VAR_STRING
    );
    let (true, MyKind::Text { latin1: false }, [lo, hi, ..]) =
        (is_varchar, &column.kind, column.meta.as_slice())
    else {
        return Ok(None);
    };
    let prefix = if u16::from_le_bytes([*lo, *hi]) < 256 {
        1
    } else {
        2
    };
    let data: &'a [u8] = buf.0;
    let len = match data.get(..prefix) {
        Some([n]) => *n as usize,
        Some([lo, hi]) => u16::from_le_bytes([*lo, *hi]) as usize,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated VARCHAR length",
            ))
        }
    };
    let Some(bytes) = data.get(prefix..prefix + len) else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated VARCHAR value",
        ));
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(None);
    };
    buf.0 = &data[prefix + len..];
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varchar(max_bytes: u16) -> WireColumn {
        WireColumn {
            column_type: ColumnType::MYSQL_TYPE_VARCHAR,
            meta: max_bytes.to_le_bytes().to_vec(),
            unsigned: false,
            kind: MyKind::Text { latin1: false },
        }
    }

    /// The borrowed read takes what `mysql_common`'s decoder takes, and leaves
    /// the buffer at the same place.
    #[test]
    fn varchar_reads_match_mysql_common() {
        for (column, image) in [
            (varchar(40), b"\x05hello+rest".to_vec()),
            (varchar(1200), b"\x04\x00\xf0\x9f\x8c\x8a+rest".to_vec()),
            (varchar(40), b"\x00+rest".to_vec()),
        ] {
            let mut ours = ParseBuf(&image);
            let text = utf8_varchar(&mut ours, &column)
                .expect("read")
                .expect("utf-8");
            let mut theirs = ParseBuf(&image);
            let value: BinlogValue<'_> = theirs
                .parse((column.column_type, &column.meta[..], false, false))
                .expect("parse");
            let expected = column.kind.to_json(value);
            assert_eq!(serde_json::Value::String(text.to_string()), expected);
            assert_eq!(ours.0, theirs.0);
        }
        // Not UTF-8: left to the decoder, nothing consumed.
        let image = b"\x01\xff".to_vec();
        let mut buf = ParseBuf(&image);
        assert!(utf8_varchar(&mut buf, &varchar(40))
            .expect("read")
            .is_none());
        assert_eq!(buf.0.len(), 2);
        // Truncated: an error, not a panic.
        let image = b"\x09abc".to_vec();
        assert!(utf8_varchar(&mut ParseBuf(&image), &varchar(40)).is_err());
    }
}
