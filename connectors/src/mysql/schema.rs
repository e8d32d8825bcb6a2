//! Table layouts: from TABLE_MAP metadata (what each rows event was written
//! with) and from `information_schema` (the schema history used for schema-change
//! events, and for column names when the server sends no metadata).

use super::my_error;
use super::rows::WireColumn;
use super::values::MyKind;
use crate::event::{ColumnInfo, Row};
use crate::SourceError;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::sync::Arc;

/// A table's columns, in table order, and its key.
#[derive(Debug, Clone)]
pub struct TableColumns {
    pub db: Arc<str>,
    pub table: Arc<str>,
    pub names: Vec<Arc<str>>,
    pub kinds: Vec<MyKind>,
    /// `COLUMN_TYPE` (e.g. `varchar(20)`), where known.
    pub types: Vec<String>,
    /// Indexes into `names` of the primary key.
    pub key: Vec<usize>,
    pub estimated_rows: u64,
    /// How rows events lay the columns out (from a TABLE_MAP; empty otherwise).
    pub wire: Vec<WireColumn>,
}

impl TableColumns {
    /// The key columns of a row (`None` if one is missing from it).
    pub fn key_of(&self, row: &Row) -> Option<Row> {
        self.key
            .iter()
            .map(|&i| {
                let name = self.names.get(i)?;
                Some((name.clone(), row.get(name)?.clone()))
            })
            .collect::<Option<Vec<_>>>()
            .map(Row)
    }

    /// The `columns` of a schema-change event.
    pub fn infos(&self) -> Vec<ColumnInfo> {
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
pub async fn read_columns(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<TableColumns, SourceError> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, \
                    CAST(COALESCE(k.ORDINAL_POSITION, 0) AS SIGNED), CAST(COALESCE(t.TABLE_ROWS, 0) AS SIGNED) \
             FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             LEFT JOIN information_schema.KEY_COLUMN_USAGE k ON k.TABLE_SCHEMA = c.TABLE_SCHEMA \
                  AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY' \
             WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(my_error(format!("read the columns of {db}.{table}")))?;
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
    let mut key: Vec<(i64, usize)> = Vec::new();
    let mut columns = TableColumns {
        db: db.into(),
        table: table.into(),
        names: Vec::new(),
        kinds: Vec::new(),
        types: Vec::new(),
        key: Vec::new(),
        estimated_rows: 0,
        wire: Vec::new(),
    };
    for (i, row) in rows.iter().enumerate() {
        let column_type = text(row, 2);
        columns.names.push(text(row, 0).into());
        columns
            .kinds
            .push(MyKind::from_sql(&text(row, 1), &column_type));
        columns.types.push(column_type);
        if int(row, 3) > 0 {
            key.push((int(row, 3), i));
        }
        columns.estimated_rows = int(row, 4).max(0) as u64;
    }
    key.sort_unstable();
    columns.key = key.into_iter().map(|(_, i)| i).collect();
    Ok(columns)
}
