//! A captured table's name and column layout, and the building of event rows from
//! its column values (shared by the snapshot and the WAL stream).

use super::pgoutput::Datum;
use super::values::ValueKind;
use crate::event::Row;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// `schema.table`, as configured and as logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Arc<str>,
    pub table: Arc<str>,
}

impl TableName {
    pub fn new(schema: &str, table: &str) -> Self {
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Parses `schema.table`, or `table` in schema `public`.
    pub fn parse(text: &str) -> Option<Self> {
        let (schema, table) = text.split_once('.').unwrap_or(("public", text));
        let valid = |s: &str| !s.is_empty() && !s.contains('.');
        (valid(schema) && valid(table)).then(|| TableName::new(schema, table))
    }

    /// The double-quoted SQL form.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            super::catalog::quote_ident(&self.schema),
            super::catalog::quote_ident(&self.table)
        )
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

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
pub struct TableSchema {
    pub name: TableName,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the key (primary key, else replica identity).
    pub key: Vec<usize>,
}

impl TableSchema {
    /// Builds a row from pgoutput values. Unchanged TOAST values are left out of
    /// the row and named in the second result; NULL stays `null`.
    pub fn row(&self, values: &[Datum]) -> (Row, Vec<Arc<str>>) {
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
    pub fn row_from_text<'a>(&self, values: impl Iterator<Item = Option<&'a str>>) -> Row {
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
    pub fn key_of(&self, row: &Row) -> Option<Row> {
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
    pub fn key_row(&self, values: &[Datum]) -> Row {
        let (full, _) = self.row(values);
        self.key_of(&full).unwrap_or_default()
    }

    /// True when both describe the same columns with the same types.
    pub fn same_columns(&self, other: &TableSchema) -> bool {
        self.columns.len() == other.columns.len()
            && self.columns.iter().zip(&other.columns).all(|(a, b)| {
                a.name == b.name && a.type_oid == b.type_oid && a.type_modifier == b.type_modifier
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_with_default_schema() {
        assert_eq!(
            TableName::parse("orders"),
            Some(TableName::new("public", "orders"))
        );
        assert_eq!(
            TableName::parse("shop.orders").map(|t| t.to_string()),
            Some("shop.orders".into())
        );
        assert_eq!(TableName::parse("a.b.c"), None);
        assert_eq!(
            TableName::new("s", "we\"ird").quoted(),
            "\"s\".\"we\"\"ird\""
        );
    }
}
