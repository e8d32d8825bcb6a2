//! The binlog column layout read from TABLE_MAP events: each column's type
//! code, metadata bytes, signedness and value kind.
//!
//! Kept apart from the readers that use it (`wire`'s hand decoders, `rows`'
//! image reader) and from the table descriptions that hold it (`schema`), so
//! that each of them depends on this module and none on the other's.

use super::values::MyKind;
use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::consts::ColumnType;
use std::io;

/// How one column is laid out in a row image.
#[derive(Debug, Clone)]
pub(crate) struct WireColumn {
    pub column_type: ColumnType,
    pub meta: Vec<u8>,
    pub unsigned: bool,
    pub kind: MyKind,
}

/// The wire layout of every column of a TABLE_MAP, with value kinds resolved
/// from its metadata (signedness, charsets, ENUM/SET labels).
pub(super) fn wire_layout(
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
        // Missing metadata would make the value decoders index past it.
        let meta = tme
            .get_column_metadata(i)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("column {i} ({column_type:?}): its metadata is missing or truncated"),
                )
            })?
            .to_vec();
        if meta.len() < metadata_needed(column_type) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "column {i} ({column_type:?}): {} bytes of metadata, the type needs {}",
                    meta.len(),
                    metadata_needed(column_type)
                ),
            ));
        }
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

/// The TABLE_MAP metadata bytes a column type's values cannot be read
/// without: the value decoders (ours and `mysql_common`'s, which indexes them
/// unchecked) read them, so a table map that sends fewer is refused up front
/// (found by the binlog_rows fuzzer: a VARCHAR with none was a panic).
fn metadata_needed(column_type: ColumnType) -> usize {
    use ColumnType::*;
    match column_type {
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING => 2,
        MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR => 1,
        // The element's type, then the element's own metadata.
        MYSQL_TYPE_TYPED_ARRAY => 3,
        _ => 0,
    }
}

/// The ENUM or SET labels of each such column, from the optional metadata
/// field's bytes: per column a length-encoded count, then that many
/// length-encoded strings. Read here rather than by `mysql_common`, which
/// reserves room for the count it reads before checking it against the bytes
/// there are (a hostile count aborted the process: found by the binlog_rows
/// fuzzer).
pub(super) fn label_lists(mut raw: &[u8]) -> io::Result<Vec<Vec<String>>> {
    let mut lists = Vec::new();
    while !raw.is_empty() {
        let count = label_length(&mut raw)?;
        // Each label takes at least its length byte.
        if count > raw.len() {
            return Err(invalid_labels("more ENUM/SET labels than bytes"));
        }
        let mut labels = Vec::with_capacity(count);
        for _ in 0..count {
            let len = label_length(&mut raw)?;
            let (label, rest) = raw
                .split_at_checked(len)
                .ok_or_else(|| invalid_labels("truncated ENUM/SET label"))?;
            raw = rest;
            labels.push(String::from_utf8_lossy(label).into_owned());
        }
        lists.push(labels);
    }
    Ok(lists)
}

fn invalid_labels(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// One length-encoded integer of the ENUM/SET labels, taken off `raw`.
fn label_length(raw: &mut &[u8]) -> io::Result<usize> {
    let (&first, rest) = raw
        .split_first()
        .ok_or_else(|| invalid_labels("truncated ENUM/SET labels"))?;
    let width = match first {
        0..=0xfa => {
            *raw = rest;
            return Ok(first as usize);
        }
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return Err(invalid_labels("a malformed length in the ENUM/SET labels")),
    };
    let (bytes, rest) = rest
        .split_at_checked(width)
        .ok_or_else(|| invalid_labels("truncated ENUM/SET labels"))?;
    *raw = rest;
    let mut value = [0u8; 8];
    value[..width].copy_from_slice(bytes);
    usize::try_from(u64::from_le_bytes(value))
        .map_err(|_| invalid_labels("an ENUM/SET label length past memory"))
}
