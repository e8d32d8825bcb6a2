//! A captured table's column layout, and the building of event rows from its
//! column values (shared by the snapshot and the WAL stream). The table's name
//! is the engine-neutral [`crate::table::TableName`], re-exported here so the
//! `postgres::table::TableName` path keeps working.

use super::pgoutput::Datum;
use super::values::ValueKind;
use crate::event::Row;
use serde_json::Value;
use std::sync::Arc;

pub use crate::table::TableName;

/// One column: its name (shared by every row), type and JSON form.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: Arc<str>,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub kind: ValueKind,
}

/// The columns of a table and which of them form its key.
#[derive(Debug, Clone)]
pub(crate) struct TableSchema {
    pub name: TableName,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the key (primary key, else replica identity).
    pub key: Vec<usize>,
}

impl TableSchema {
    /// Builds a row from pgoutput values. Unchanged TOAST values are left out of
    /// the row and named in the second result; NULL stays `null`.
    pub(crate) fn row(&self, values: &[Datum]) -> (Row, Vec<Arc<str>>) {
        let mut row = Vec::with_capacity(values.len());
        let mut unchanged = Vec::new();
        for (column, datum) in self.columns.iter().zip(values) {
            match datum {
                Datum::Null => row.push((column.name.clone(), Value::Null)),
                Datum::Unchanged => unchanged.push(column.name.clone()),
                Datum::Text(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    row.push((column.name.clone(), column.kind.to_json(&text)));
                }
            }
        }
        (Row(row), unchanged)
    }

    /// Builds a row from text values (the snapshot's `column::text`).
    pub(crate) fn row_from_text<'a>(&self, values: impl Iterator<Item = Option<&'a str>>) -> Row {
        Row(self
            .columns
            .iter()
            .zip(values)
            .map(|(column, text)| {
                let value = text.map_or(Value::Null, |t| column.kind.to_json(t));
                (column.name.clone(), value)
            })
            .collect())
    }

    /// The key columns of a full row (`None` if a key column is missing from it).
    pub(crate) fn key_of(&self, row: &Row) -> Option<Row> {
        self.key
            .iter()
            .map(|&i| {
                let name = &self.columns.get(i)?.name;
                Some((name.clone(), row.get(name)?.clone()))
            })
            .collect::<Option<Vec<_>>>()
            .map(Row)
    }

    /// The key-only old row pgoutput sends for REPLICA IDENTITY DEFAULT/INDEX:
    /// just the key columns (the others are placeholders).
    pub(crate) fn key_row(&self, values: &[Datum]) -> Row {
        let (full, _) = self.row(values);
        self.key_of(&full).unwrap_or_default()
    }

    /// True when both describe the same columns with the same types.
    pub(crate) fn same_columns(&self, other: &TableSchema) -> bool {
        self.columns.len() == other.columns.len()
            && self.columns.iter().zip(&other.columns).all(|(a, b)| {
                a.name == b.name && a.type_oid == b.type_oid && a.type_modifier == b.type_modifier
            })
    }
}
