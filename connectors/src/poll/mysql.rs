//! The MySQL/MariaDB side of query-based capture: what a polled table looks
//! like, and its page and key-scan queries.
//!
//! Queries use the binary protocol with typed parameters, so integers compare as
//! integers and values come back typed (the same JSON forms as the binlog
//! connector). The session runs in UTC, so `TIMESTAMP` values are UTC.
//! A page's bound is written out (`c > ? OR (c = ? AND k > ?)`) rather than as a
//! row comparison, which MySQL and MariaDB do not use indexes for.

use super::{Bound, Described, Fetched, PollTable};
use crate::event::Row;
use crate::mysql::schema::{read_columns, TableColumns};
use crate::mysql::values::MyKind;
use crate::mysql::{connect, my_error};
use crate::sql::mysql::quote_ident;
use crate::SourceError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as MyValue};
use std::sync::Arc;

pub(super) struct MyPoll {
    conn: Conn,
}

/// What the queries of one table need.
pub(super) struct MyTable {
    columns: TableColumns,
}

/// A value as text that MySQL reads back as the same value.
fn text(value: &MyValue) -> String {
    match value {
        MyValue::NULL => String::new(),
        MyValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        MyValue::Int(i) => i.to_string(),
        MyValue::UInt(u) => u.to_string(),
        MyValue::Float(f) => f.to_string(),
        MyValue::Double(f) => f.to_string(),
        MyValue::Date(y, mo, d, h, mi, s, us) => {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }
        MyValue::Time(neg, days, h, m, s, us) => format!(
            "{}{:02}:{m:02}:{s:02}.{us:06}",
            if *neg { "-" } else { "" },
            *days as u64 * 24 + *h as u64
        ),
    }
}

/// A row's values, in column order.
fn values_of(row: mysql_async::Row) -> Vec<MyValue> {
    row.unwrap_raw()
        .into_iter()
        .map(|v| v.unwrap_or(MyValue::NULL))
        .collect()
}

/// A parameter of the column's kind: integers as integers, the rest as text.
fn param(kind: &MyKind, text: &str) -> MyValue {
    if *kind == MyKind::Integer {
        if let Ok(i) = text.parse::<i64>() {
            return MyValue::Int(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return MyValue::UInt(u);
        }
    }
    MyValue::Bytes(text.as_bytes().to_vec())
}

impl MyPoll {
    /// Connects (in UTC); returns the connection and the database name.
    pub(super) async fn connect(url: &str) -> Result<(Self, Arc<str>), SourceError> {
        let mut conn = connect(url).await?;
        conn.query_drop("SET time_zone = '+00:00'")
            .await
            .map_err(my_error("set the session time zone to UTC"))?;
        let db = crate::mysql::tls::parse(url)
            .ok()
            .and_then(|u| u.opts.db_name().map(str::to_owned))
            .unwrap_or_default();
        Ok((MyPoll { conn }, db.into()))
    }

    /// Checks the table and its columns; warns when no index starts with the
    /// cursor column.
    pub(super) async fn describe(
        &mut self,
        table: &PollTable,
    ) -> Result<(Described, MyTable), SourceError> {
        let (db, name) = (&*table.name.schema, &*table.name.table);
        let columns = read_columns(&mut self.conn, db, name)
            .await
            .map_err(|e| match e {
                SourceError::Setup(_) => {
                    SourceError::Setup(format!("source.table: table {} does not exist", table.name))
                }
                other => other,
            })?;
        let primary_key: Vec<String> = columns
            .key
            .iter()
            .map(|&k| columns.names[k].to_string())
            .collect();
        let described = Described::new(table, columns.names.clone(), &primary_key)?;
        let cursor_kind = &columns.kinds[described.cursor];
        let cursor_type = columns.types[described.cursor].to_ascii_lowercase();
        let orderable = match cursor_kind {
            MyKind::Integer
            | MyKind::Decimal
            | MyKind::Float
            | MyKind::Year
            | MyKind::Date
            | MyKind::Time
            | MyKind::DateTime
            | MyKind::Timestamp => true,
            MyKind::Text { .. } => {
                cursor_type.starts_with("varchar") || cursor_type.starts_with("char")
            }
            _ => false,
        };
        if !orderable {
            return Err(described.not_orderable(&cursor_type));
        }
        let indexed: Option<i64> = self
            .conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ? AND SEQ_IN_INDEX = 1",
                (db, name, &table.cursor_column),
            )
            .await
            .map_err(my_error(format!("look up the indexes of {}", table.name)))?;
        if indexed.unwrap_or(0) == 0 {
            described.warn_unindexed(&format!(
                "CREATE INDEX ... ON {}.{} ({}, ...)",
                quote_ident(db),
                quote_ident(name),
                quote_ident(&table.cursor_column)
            ));
        }
        let timed = matches!(
            cursor_kind,
            MyKind::Date | MyKind::DateTime | MyKind::Timestamp
        );
        Ok((Described { timed, ..described }, MyTable { columns }))
    }

    /// One page in `(cursor, key)` order.
    pub(super) async fn page(
        &mut self,
        table: &MyTable,
        described: &Described,
        bound: Bound<'_>,
        limit: usize,
    ) -> Result<Vec<Fetched>, SourceError> {
        let columns = &table.columns;
        let order_cols: Vec<usize> = std::iter::once(described.cursor)
            .chain(described.key.iter().copied())
            .collect();
        let (filter, params) = page_filter(columns, described, &order_cols, bound);
        let select: Vec<String> = columns.names.iter().map(|c| quote_ident(c)).collect();
        let order: Vec<String> = order_cols
            .iter()
            .map(|&i| quote_ident(&columns.names[i]))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}.{}{filter} ORDER BY {} LIMIT {limit}",
            select.join(", "),
            quote_ident(&columns.db),
            quote_ident(&columns.table),
            order.join(", ")
        );
        let rows: Vec<mysql_async::Row> = self
            .conn
            .exec(&sql, params)
            .await
            .map_err(my_error(format!("poll {}", described.table)))?;
        Ok(rows
            .into_iter()
            .map(|row| fetched(columns, described, row))
            .collect())
    }

    /// Every key in the table now (one statement, so one consistent view).
    pub(super) async fn keys(
        &mut self,
        table: &MyTable,
        described: &Described,
    ) -> Result<Vec<Vec<serde_json::Value>>, SourceError> {
        let columns = &table.columns;
        let key_cols: Vec<String> = described
            .key
            .iter()
            .map(|&k| quote_ident(&columns.names[k]))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}.{}",
            key_cols.join(", "),
            quote_ident(&columns.db),
            quote_ident(&columns.table)
        );
        let rows: Vec<mysql_async::Row> = self
            .conn
            .exec(&sql, ())
            .await
            .map_err(my_error(format!("scan the keys of {}", described.table)))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                described
                    .key
                    .iter()
                    .zip(values_of(row))
                    .map(|(&k, v)| columns.kinds[k].value(v))
                    .collect()
            })
            .collect())
    }
}

/// A page's `WHERE` clause for `bound` (empty for none) and its parameters,
/// in the order the placeholders appear; `order_cols` is the page's order
/// (the cursor column, then the key).
fn page_filter(
    columns: &TableColumns,
    described: &Described,
    order_cols: &[usize],
    bound: Bound<'_>,
) -> (String, Vec<MyValue>) {
    let cursor_col = quote_ident(&columns.names[described.cursor]);
    let mut params = Vec::new();
    let filter = match bound {
        Bound::All => String::new(),
        Bound::After(value, key) => {
            let values: Vec<&str> = std::iter::once(value)
                .chain(key.iter().map(String::as_str))
                .collect();
            // c >= v AND (c > v OR (c = v AND (k1 > w OR (k1 = w AND ...))))
            let mut tail = String::new();
            for (depth, &col) in order_cols.iter().enumerate().rev() {
                let name = quote_ident(&columns.names[col]);
                tail = if depth + 1 == order_cols.len() {
                    format!("{name} > ?")
                } else {
                    format!("({name} > ? OR ({name} = ? AND {tail}))")
                };
            }
            // Parameters in the order the placeholders appear.
            params.push(param(&columns.kinds[described.cursor], value));
            for (depth, (&col, value)) in order_cols.iter().zip(&values).enumerate() {
                let p = param(&columns.kinds[col], value);
                params.push(p.clone());
                if depth + 1 < order_cols.len() {
                    params.push(p);
                }
            }
            format!(" WHERE {cursor_col} >= ? AND {tail}")
        }
        Bound::Since(value, lag) => {
            params.push(param(&columns.kinds[described.cursor], value));
            format!(
                " WHERE {cursor_col} >= CAST(? AS DATETIME(6)) - INTERVAL {} MICROSECOND",
                lag.as_micros()
            )
        }
    };
    (filter, params)
}

/// One row of a page: its values, and its cursor and key as text.
fn fetched(columns: &TableColumns, described: &Described, row: mysql_async::Row) -> Fetched {
    let values = values_of(row);
    let text_of = |i: usize| values.get(i).map(text).unwrap_or_default();
    let fetched_cursor = text_of(described.cursor);
    let key = described.key.iter().map(|&k| text_of(k)).collect();
    let row = Row(columns
        .names
        .iter()
        .zip(&columns.kinds)
        .zip(values)
        .map(|((name, kind), value)| (name.clone(), kind.value(value)))
        .collect());
    Fetched {
        cursor: fetched_cursor,
        key,
        row,
    }
}
