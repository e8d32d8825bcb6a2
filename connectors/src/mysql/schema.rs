//! Table layouts: from TABLE_MAP metadata (what each rows event was written
//! with) and from `information_schema` (the schema history used for schema-change
//! events, and for column names when the server sends no metadata).

use super::layout::{label_lists, wire_layout, WireColumn};
use super::my_error;
use super::values::{MyKind, BINARY_CHARSET, LATIN1_CHARSET, UTF8MB4_CHARSET};
use crate::event::{json, ColumnInfo, Row};
use crate::SourceError;
use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::sync::Arc;

/// Which optional TABLE_MAP metadata the server sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SentMetadata {
    pub signedness: bool,
    pub charsets: bool,
}

/// A table's columns, in table order, and its key.
#[derive(Debug, Clone)]
pub(crate) struct TableColumns {
    pub db: Arc<str>,
    pub table: Arc<str>,
    pub names: Vec<Arc<str>>,
    pub kinds: Vec<MyKind>,
    /// `COLUMN_TYPE` (e.g. `varchar(20)`), where known.
    pub types: Vec<String>,
    /// `CHARACTER_SET_NAME` (empty for other than character columns), where known.
    pub charsets: Vec<String>,
    /// Indexes into `names` of the primary key.
    pub key: Vec<usize>,
    pub estimated_rows: u64,
    /// How rows events lay the columns out (from a TABLE_MAP; empty otherwise).
    pub wire: Vec<WireColumn>,
    /// Each name as a JSON object key with its colon (`"id":`), rendered once
    /// for all the table's row images (see [`TableColumns::render_names`]).
    pub json_names: Vec<Vec<u8>>,
}

impl TableColumns {
    /// A table of no columns yet.
    pub(crate) fn empty(db: &str, table: &str) -> TableColumns {
        TableColumns {
            db: db.into(),
            table: table.into(),
            names: Vec::new(),
            kinds: Vec::new(),
            types: Vec::new(),
            charsets: Vec::new(),
            key: Vec::new(),
            estimated_rows: 0,
            wire: Vec::new(),
            json_names: Vec::new(),
        }
    }

    /// Renders the column names for row images; run once the names are final.
    pub(crate) fn render_names(&mut self) {
        self.json_names = self
            .names
            .iter()
            .map(|name| {
                let mut key = Vec::with_capacity(name.len() + 3);
                json::string(&mut key, name);
                key.push(b':');
                key
            })
            .collect();
    }

    /// The key columns of a row (`None` if one is missing from it).
    pub(crate) fn key_of(&self, row: &Row) -> Option<Row> {
        self.key
            .iter()
            .map(|&i| {
                let name = self.names.get(i)?;
                Some((name.clone(), row.get(name)?.clone()))
            })
            .collect::<Option<Vec<_>>>()
            .map(Row)
    }

    /// Completes, from this schema-history layout of the same columns, a
    /// TABLE_MAP layout the server sent without metadata
    /// (`binlog_row_metadata` not `FULL`): the binlog then does not say which
    /// integers are unsigned, which strings are binary or latin1, nor the ENUM
    /// and SET labels; `COLUMN_TYPE` and the column's charset do.
    /// What the server did send (MySQL 8's `MINIMAL`: signedness and
    /// charsets) stays: the binlog describes its own rows, the history only
    /// the table as it is now.
    pub(crate) fn complete_wire(&self, wire: &mut [WireColumn], sent: SentMetadata) {
        for (i, column) in wire.iter_mut().enumerate() {
            let declared = self.types.get(i).map_or("", String::as_str);
            if !sent.signedness {
                column.unsigned = column.column_type.is_numeric_type()
                    && declared.to_ascii_lowercase().contains("unsigned");
            }
            let labels = MyKind::declared_labels(declared);
            if sent.charsets && labels.is_none() {
                continue;
            }
            let charset = if matches!(
                self.kinds.get(i),
                Some(MyKind::Bytes | MyKind::FixedBytes(_))
            ) {
                BINARY_CHARSET
            } else if self
                .charsets
                .get(i)
                .is_some_and(|c| c.eq_ignore_ascii_case("latin1"))
            {
                LATIN1_CHARSET
            } else {
                UTF8MB4_CHARSET
            };
            column.kind = MyKind::of(column.column_type, &column.meta, charset, labels);
        }
    }

    /// MariaDB's `INET6` and `UUID` travel in the binlog as `BINARY(16)`:
    /// the schema history, which names their type, makes a TABLE_MAP layout
    /// render them as the server prints them (and the snapshot reads them).
    /// Only a 16-byte binary column the history calls so, at the same place
    /// with the same name, is taken.
    pub(crate) fn name_plugin_types(&self, layout: &mut TableColumns) {
        for (i, wire) in layout.wire.iter_mut().enumerate() {
            let same_column = self.names.get(i) == layout.names.get(i);
            let kind = match self.types.get(i) {
                Some(t) if t.eq_ignore_ascii_case("inet6") => MyKind::Inet6,
                Some(t) if t.eq_ignore_ascii_case("uuid") => MyKind::Uuid,
                _ => continue,
            };
            if same_column && wire.kind == MyKind::FixedBytes(16) {
                wire.kind = kind.clone();
                if let Some(k) = layout.kinds.get_mut(i) {
                    *k = kind;
                }
            }
        }
    }

    /// The `columns` of a schema-change event.
    pub(crate) fn infos(&self) -> Vec<ColumnInfo> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, name)| ColumnInfo {
                name: name.clone(),
                type_name: self.types.get(i).cloned().unwrap_or_default(),
                key: self.key.contains(&i),
            })
            .collect()
    }
}

/// Reads a table's current layout from `information_schema`.
pub(crate) async fn read_columns(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<TableColumns, SourceError> {
    // Two lookups, each keyed by constants only: MariaDB then opens just this
    // table's definition, where a join of information_schema views scans them
    // all (about 20 ms instead of 5 on a small server).
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, \
                    CAST(COALESCE((SELECT TABLE_ROWS FROM information_schema.TABLES \
                                   WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?), 0) AS SIGNED), \
                    COALESCE(CHARACTER_SET_NAME, '') \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table, db, table),
        )
        .await
        .map_err(my_error(format!("read the columns of {db}.{table}")))?;
    let key_names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
             ORDER BY SEQ_IN_INDEX",
            (db, table),
        )
        .await
        .map_err(my_error(format!("read the primary key of {db}.{table}")))?;
    if rows.is_empty() {
        return Err(SourceError::Setup(format!(
            "source.tables: table {db}.{table} does not exist"
        )));
    }
    let text = |r: &mysql_async::Row, i: usize| {
        r.get_opt::<String, _>(i)
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let int =
        |r: &mysql_async::Row, i: usize| r.get_opt::<i64, _>(i).and_then(Result::ok).unwrap_or(0);
    let mut columns = TableColumns::empty(db, table);
    for row in &rows {
        let column_type = text(row, 2);
        columns.names.push(text(row, 0).into());
        columns
            .kinds
            .push(MyKind::from_sql(&text(row, 1), &column_type));
        columns.types.push(column_type);
        columns.charsets.push(text(row, 4));
        columns.estimated_rows = int(row, 3).max(0) as u64;
    }
    columns.key = key_names
        .iter()
        .filter_map(|k| columns.names.iter().position(|n| **n == **k))
        .collect();
    Ok(columns)
}

/// Column names, kinds, wire layout and key from a TABLE_MAP event's metadata
/// (names empty when the server sent none).
pub(crate) fn from_table_map(tme: &TableMapEvent<'_>) -> std::io::Result<TableColumns> {
    let mut names = Vec::new();
    let mut enums: Vec<Vec<String>> = Vec::new();
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut key = Vec::new();
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::ColumnName(n) => {
                names = n
                    .iter_names()
                    .flatten()
                    .map(|c| Arc::<str>::from(c.name().as_ref()))
                    .collect();
            }
            OptionalMetadataField::EnumStrValue(v) => {
                let mut raw = Vec::new();
                mysql_common::proto::MySerialize::serialize(&v, &mut raw);
                enums = label_lists(&raw)?;
            }
            OptionalMetadataField::SetStrValue(v) => {
                let mut raw = Vec::new();
                mysql_common::proto::MySerialize::serialize(&v, &mut raw);
                sets = label_lists(&raw)?;
            }
            OptionalMetadataField::SimplePrimaryKey(pk) => {
                key = pk.iter_indexes().flatten().map(|i| i as usize).collect();
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(pk) => {
                key = pk
                    .iter_keys()
                    .flatten()
                    .map(|k| k.column_index() as usize)
                    .collect();
            }
            _ => {}
        }
    }
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    let wire = wire_layout(tme, &mut |ty| {
        if ty.is_enum_type() {
            enums.next()
        } else if ty.is_enum_or_set_type() {
            sets.next()
        } else {
            None
        }
    })?;
    let kinds = wire.iter().map(|w| w.kind.clone()).collect();
    Ok(TableColumns {
        db: tme.database_name().as_ref().into(),
        table: tme.table_name().as_ref().into(),
        names,
        kinds,
        types: Vec::new(),
        charsets: Vec::new(),
        key,
        estimated_rows: 0,
        wire,
        json_names: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::consts::ColumnType::*;

    fn wire(column_type: mysql_async::consts::ColumnType, meta: &[u8]) -> WireColumn {
        WireColumn {
            column_type,
            meta: meta.to_vec(),
            unsigned: false,
            kind: MyKind::Other,
        }
    }

    #[test]
    fn a_layout_without_metadata_takes_signedness_charsets_and_labels_from_history() {
        let declared = [
            ("int", "int(10) unsigned", ""),
            ("mediumint", "mediumint(9)", ""),
            ("bigint", "bigint(20) unsigned zerofill", ""),
            ("blob", "blob", ""),
            ("varchar", "varchar(10)", "latin1"),
            ("text", "text", "utf8mb4"),
            ("enum", "enum('a','b')", "utf8mb4"),
            ("set", "set('x','y')", "utf8mb4"),
        ];
        let history = TableColumns {
            db: "d".into(),
            table: "t".into(),
            names: declared.iter().map(|(n, _, _)| (*n).into()).collect(),
            kinds: declared
                .iter()
                .map(|(data_type, column_type, _)| MyKind::from_sql(data_type, column_type))
                .collect(),
            types: declared.iter().map(|(_, t, _)| t.to_string()).collect(),
            charsets: declared.iter().map(|(_, _, c)| c.to_string()).collect(),
            key: vec![0],
            estimated_rows: 0,
            wire: Vec::new(),
            json_names: Vec::new(),
        };
        let mut layout = vec![
            wire(MYSQL_TYPE_LONG, &[]),
            wire(MYSQL_TYPE_INT24, &[]),
            wire(MYSQL_TYPE_LONGLONG, &[]),
            wire(MYSQL_TYPE_BLOB, &[2]),
            wire(MYSQL_TYPE_VARCHAR, &[10, 0]),
            wire(MYSQL_TYPE_BLOB, &[2]),
            wire(MYSQL_TYPE_ENUM, &[1]),
            wire(MYSQL_TYPE_SET, &[1]),
        ];
        history.complete_wire(&mut layout, SentMetadata::default());
        let unsigned: Vec<bool> = layout.iter().map(|w| w.unsigned).collect();
        assert_eq!(
            unsigned,
            [true, false, true, false, false, false, false, false]
        );
        let kinds: Vec<MyKind> = layout.into_iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [
                MyKind::Integer,
                MyKind::Integer,
                MyKind::Integer,
                MyKind::Bytes,
                MyKind::Text { latin1: true },
                MyKind::Text { latin1: false },
                MyKind::Enum(vec!["a".into(), "b".into()]),
                MyKind::Set(vec!["x".into(), "y".into()]),
            ]
        );
        // What the server sent wins over the history (which is the table now).
        let mut sent = vec![wire(MYSQL_TYPE_LONG, &[])];
        sent[0].kind = MyKind::Integer;
        history.complete_wire(
            &mut sent,
            SentMetadata {
                signedness: true,
                charsets: true,
            },
        );
        assert!(!sent[0].unsigned);
    }
}
