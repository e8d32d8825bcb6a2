//! The PostgreSQL side of query-based capture: what a polled table looks like,
//! and its page and key-scan queries (simple query protocol, so values arrive in
//! the same text forms pgoutput sends).

use super::{Bound, Described, Fetched, PollTable};
use crate::postgres::catalog::{self, TypeKinds};
use crate::postgres::table::{Column, TableSchema};
use crate::postgres::values::ValueKind;
use crate::sql::postgres::{literal, quote_ident};
use crate::SourceError;
use std::sync::Arc;
use tokio_postgres::{Client, SimpleQueryMessage};

pub(super) struct PgPoll {
    client: Client,
    kinds: TypeKinds,
}

/// What the queries of one table need.
pub(super) struct PgTable {
    schema: TableSchema,
    cursor_type: String,
    key_types: Vec<String>,
}

fn err(what: String) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
    move |source| SourceError::Postgres { what, source }
}

impl PgPoll {
    /// Connects; returns the connection and the database name.
    pub(super) async fn connect(url: &str) -> Result<(Self, Arc<str>), SourceError> {
        let pg = crate::postgres::parse_url(url)?;
        let client = catalog::connect(&pg).await?;
        let db = pg.config.get_dbname().unwrap_or("postgres").into();
        Ok((
            PgPoll {
                client,
                kinds: TypeKinds::default(),
            },
            db,
        ))
    }

    /// Checks the table and its columns; warns when no index starts with the
    /// cursor column.
    pub(super) async fn describe(
        &mut self,
        table: &PollTable,
    ) -> Result<(Described, PgTable), SourceError> {
        let client = &self.client;
        let shape = catalog::table_shape(client, &table.name)
            .await?
            .ok_or_else(|| {
                SourceError::Setup(format!("source.table: table {} does not exist", table.name))
            })?;
        let names: Vec<Arc<str>> = shape
            .columns
            .iter()
            .map(|(n, _)| n.as_str().into())
            .collect();
        let described = Described::new(table, names, &shape.primary_key)?;
        let cursor_oid = shape.columns[described.cursor].1;
        let cursor_type = catalog::type_name(client, cursor_oid, -1).await?;
        let orderable: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod \
                 WHERE a.amname = 'btree' AND c.opcdefault AND c.opcintype = $1)",
                &[&cursor_oid],
            )
            .await
            .map_err(err(format!(
                "check the type of {}.{}",
                table.name, table.cursor_column
            )))?
            .get(0);
        if !orderable {
            return Err(described.not_orderable(&cursor_type));
        }
        let indexed: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                 AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND a.attname = $2)",
                &[&table.name.quoted(), &table.cursor_column],
            )
            .await
            .map_err(err(format!("look up the indexes of {}", table.name)))?
            .get(0);
        if !indexed {
            described.warn_unindexed(&format!(
                "CREATE INDEX ON {} ({}, ...)",
                table.name.quoted(),
                quote_ident(&table.cursor_column)
            ));
        }
        let mut columns = Vec::new();
        for (name, oid) in &shape.columns {
            columns.push(Column {
                name: name.as_str().into(),
                type_oid: *oid,
                type_modifier: -1,
                kind: self.kinds.kind(client, *oid).await?,
            });
        }
        let mut key_types = Vec::new();
        for &k in &described.key {
            key_types.push(catalog::type_name(client, shape.columns[k].1, -1).await?);
        }
        let timed = matches!(
            columns[described.cursor].kind,
            ValueKind::Timestamp | ValueKind::TimestampTz | ValueKind::Date
        );
        let schema = TableSchema {
            name: table.name.clone(),
            columns,
            key: described.key.clone(),
        };
        Ok((
            Described { timed, ..described },
            PgTable {
                schema,
                cursor_type,
                key_types,
            },
        ))
    }

    /// One page in `(cursor, key)` order. `before_oldest_tx`: stop before the start
    /// of the oldest transaction still writing.
    pub(super) async fn page(
        &self,
        table: &PgTable,
        described: &Described,
        bound: Bound<'_>,
        before_oldest_tx: bool,
        limit: usize,
    ) -> Result<Vec<Fetched>, SourceError> {
        let cursor_col = quote_ident(&described.names[described.cursor]);
        let order = self.order(described);
        let tuple = |value: &str, key: &[String]| {
            let mut values = vec![format!("{}::{}", literal(value), table.cursor_type)];
            values.extend(
                key.iter()
                    .zip(&table.key_types)
                    .map(|(k, t)| format!("{}::{t}", literal(k))),
            );
            format!("({order}) > ({})", values.join(", "))
        };
        let mut conditions = Vec::new();
        match bound {
            Bound::All => {}
            Bound::After(value, key) => conditions.push(tuple(value, key)),
            Bound::Since(value, lag) => conditions.push(format!(
                "{cursor_col} >= {}::{} - interval '{} milliseconds'",
                literal(value),
                table.cursor_type,
                lag.as_millis()
            )),
        }
        if before_oldest_tx {
            conditions.push(format!(
                "{cursor_col} < (SELECT coalesce(min(xact_start), clock_timestamp()) FROM pg_stat_activity \
                 WHERE backend_xid IS NOT NULL AND datname = current_database() AND pid <> pg_backend_pid())"
            ));
        }
        let select: Vec<String> = described.names.iter().map(|c| quote_ident(c)).collect();
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {order} LIMIT {limit}",
            select.join(", "),
            table.schema.name.quoted(),
        );
        let rows = self.rows(&sql, &table.schema.name.to_string()).await?;
        let ncols = described.names.len();
        Ok(rows
            .iter()
            .map(|row| {
                let text = |i: usize| row.get(i).unwrap_or_default().to_string();
                Fetched {
                    cursor: text(described.cursor),
                    key: described.key.iter().map(|&k| text(k)).collect(),
                    row: table.schema.row_from_text((0..ncols).map(|i| row.get(i))),
                }
            })
            .collect())
    }

    /// Every key in the table now (one statement, so one consistent view).
    pub(super) async fn keys(
        &self,
        table: &PgTable,
        described: &Described,
    ) -> Result<Vec<Vec<serde_json::Value>>, SourceError> {
        let key_cols: Vec<String> = described
            .key
            .iter()
            .map(|&k| quote_ident(&described.names[k]))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}",
            key_cols.join(", "),
            table.schema.name.quoted()
        );
        let rows = self.rows(&sql, &table.schema.name.to_string()).await?;
        Ok(rows
            .iter()
            .map(|row| {
                described
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| match row.get(i) {
                        Some(text) => table.schema.columns[k].kind.to_json(text),
                        None => serde_json::Value::Null,
                    })
                    .collect()
            })
            .collect())
    }

    fn order(&self, described: &Described) -> String {
        std::iter::once(described.cursor)
            .chain(described.key.iter().copied())
            .map(|i| quote_ident(&described.names[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn rows(
        &self,
        sql: &str,
        table: &str,
    ) -> Result<Vec<tokio_postgres::SimpleQueryRow>, SourceError> {
        Ok(self
            .client
            .simple_query(sql)
            .await
            .map_err(err(format!("poll {table}")))?
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .collect())
    }
}
