//! Writes planned steps into a MySQL/MariaDB target as multi-row statements
//! (`INSERT ... VALUES (...), (...) ON DUPLICATE KEY UPDATE`), with values as
//! literals (no prepare round trip per batch shape). Truncates become
//! `DELETE FROM` so they stay inside the transaction that records the
//! position; MySQL DDL commits implicitly, so a schema change ends the
//! transaction before it and starts a new one after it.

use super::batch::{write_batch, BatchWriter};
use super::bookkeeping::{self, MYSQL as BOOKKEEPING};
use super::described;
use super::history::HistoryMode;
use super::plan::{Step, TableKey, Versions};
use super::refusal;
use super::sql;
use super::types::Engine;
use super::values::{mysql_kind, mysql_literal, Kind};
use super::{schema_ddl, AppliedSpan, SchemaChanges, TableMap, TargetError, TargetTable};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::HashMap;
use std::sync::Arc;
use tidemark_connectors::mysql::{text_rows, text_value, tls};
use tidemark_connectors::ChangeEvent;

/// A statement is cut at about this size (the server's `max_allowed_packet`
/// is 16 MiB by default on MariaDB, 64 MiB on MySQL 8).
const MAX_STATEMENT_BYTES: usize = 4 << 20;

use tidemark_connectors::sql::mysql::quote_ident;

pub struct MyTarget {
    pub conn: Conn,
    map: TableMap,
    schema_changes: SchemaChanges,
    tables: HashMap<TableKey, Arc<TargetTable>>,
}

/// A failed MySQL call: [`TargetError::Unavailable`] when the target went
/// away, else [`TargetError::Database`].
pub(crate) fn my_error(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> TargetError {
    let what = what.into();
    move |e| {
        if tidemark_connectors::mysql_transient(&e) {
            TargetError::Unavailable {
                what,
                detail: e.to_string(),
            }
        } else {
            TargetError::Database {
                what,
                detail: e.to_string(),
            }
        }
    }
}

/// Connects with UTC session time and the settings replicated rows need.
///
/// Values reach the target as literals (no prepare round trip per batch
/// shape); they stay literals whatever the server's modes, because the
/// session's `sql_mode` is set here without `NO_BACKSLASH_ESCAPES` (the
/// escaping of [`quote_mysql`] needs backslashes to escape) and read back.
/// mysql_async always asks for multi-statements, so every statement built
/// from events goes through [`execute_one`], which the server parses as one
/// statement.
pub(crate) async fn connect(url: &str) -> Result<Conn, TargetError> {
    let url = tls::parse(url).map_err(|e| TargetError::Setup(format!("target.url: {e}")))?;
    let mut conn = tls::connect(&url)
        .await
        .map_err(my_error("connect to the target"))?;
    let mode = text_value(&mut conn, "SELECT @@SESSION.sql_mode")
        .await
        .map_err(my_error("read the target's sql_mode"))?
        .unwrap_or_default();
    let mode = session_mode(&mode);
    conn.exec_drop(
        "SET SESSION time_zone = '+00:00', SESSION foreign_key_checks = 0, SESSION sql_mode = ?",
        (&mode,),
    )
    .await
    .map_err(my_error("set the target session up"))?;
    let set = text_value(&mut conn, "SELECT @@SESSION.sql_mode")
        .await
        .map_err(my_error("read the target's sql_mode"))?
        .unwrap_or_default();
    if set.split(',').any(|m| m == "NO_BACKSLASH_ESCAPES") {
        return Err(TargetError::Setup(format!(
            "target: the session's sql_mode keeps NO_BACKSLASH_ESCAPES ({set}); tidemark cannot write values safely"
        )));
    }
    Ok(conn)
}

/// The server's `sql_mode` without `NO_BACKSLASH_ESCAPES`, with
/// `NO_AUTO_VALUE_ON_ZERO` (a replicated 0 stays 0).
fn session_mode(server: &str) -> String {
    let mut modes: Vec<&str> = server
        .split(',')
        .filter(|m| !m.is_empty() && *m != "NO_BACKSLASH_ESCAPES" && *m != "NO_AUTO_VALUE_ON_ZERO")
        .collect();
    modes.push("NO_AUTO_VALUE_ON_ZERO");
    modes.join(",")
}

/// Runs one statement through the binary protocol's prepare, which takes one
/// statement only: text built from events can never carry a second one.
/// Closed at once: every batch's text differs, so a cache would only fill up.
pub(crate) async fn execute_one(conn: &mut Conn, sql: &str) -> Result<u64, mysql_async::Error> {
    let statement = conn.prep(sql).await?;
    let result = conn.exec_drop(&statement, ()).await;
    let affected = conn.affected_rows();
    conn.close(statement).await?;
    result.map(|()| affected)
}

impl MyTarget {
    pub async fn connect(
        url: &str,
        map: TableMap,
        schema_changes: SchemaChanges,
    ) -> Result<MyTarget, TargetError> {
        let mut conn = connect(url).await?;
        let db = text_value(&mut conn, "SELECT DATABASE()")
            .await
            .map_err(my_error("read the target database"))?;
        let Some(db) = db else {
            return Err(TargetError::Setup(
                "target.url: name the target database (mysql://user@host:3306/DB)".into(),
            ));
        };
        let create = BOOKKEEPING.create_table();
        if conn.query_drop(create).await.is_err() {
            conn.query_drop(create)
                .await
                .map_err(my_error(bookkeeping::CREATE))?;
        }
        let map = map.for_target(Engine::Mysql, &db);
        Ok(MyTarget {
            conn,
            map,
            schema_changes,
            tables: HashMap::new(),
        })
    }

    pub(crate) fn map(&self) -> &TableMap {
        &self.map
    }

    /// Creates a history table (one statement, indexes included).
    pub(crate) async fn create_history(
        &mut self,
        schema: &str,
        name: &str,
        spec: &super::history::HistoryTableSpec<'_>,
    ) -> Result<(), TargetError> {
        let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
        for sql in super::history::create_statements(Engine::Mysql, &quoted, name, spec) {
            tracing::info!("target: {sql}");
            execute_one(&mut self.conn, &sql)
                .await
                .map_err(|e| TargetError::Table {
                    table: quoted.clone(),
                    message: format!("{sql}: {e}"),
                })?;
        }
        Ok(())
    }

    pub async fn applied(
        &mut self,
        scope: &str,
    ) -> Result<Option<(String, Option<String>)>, TargetError> {
        self.conn
            .exec_first(BOOKKEEPING.read_applied(), (scope,))
            .await
            .map_err(my_error(bookkeeping::READ))
    }

    pub(crate) async fn save_cursor(
        &mut self,
        scope: &str,
        cursor: &str,
    ) -> Result<(), TargetError> {
        self.conn
            .exec_drop(BOOKKEEPING.store_cursor(), (scope, cursor))
            .await
            .map_err(my_error(bookkeeping::STORE_CURSOR))
    }

    pub(crate) async fn claim(&mut self, scope: &str) -> Result<(), TargetError> {
        self.conn
            .exec_drop(BOOKKEEPING.claim(), (scope,))
            .await
            .map_err(my_error(bookkeeping::CLAIM))
    }

    pub(crate) async fn forget(&mut self, scope: &str) -> Result<(), TargetError> {
        self.conn
            .exec_drop(BOOKKEEPING.forget(), (scope,))
            .await
            .map_err(my_error(bookkeeping::FORGET))
    }

    /// The target table for a source table, read from the catalog once.
    async fn table(&mut self, source: &TableKey) -> Result<Arc<TargetTable>, TargetError> {
        let conn = &mut self.conn;
        described::cached(
            &mut self.tables,
            &self.map,
            source,
            move |schema, name| async move { describe(conn, &schema, &name).await },
        )
        .await
    }

    pub async fn apply(
        &mut self,
        steps: Vec<Step>,
        progress: Option<AppliedSpan<'_>>,
    ) -> Result<u64, TargetError> {
        let mut failed = None;
        match self
            .apply_in_transaction(&steps, progress, &mut failed)
            .await
        {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // Best effort: the caller stops on the error anyway.
                let _ = self.conn.query_drop("ROLLBACK").await;
                Err(refusal::explain(self, e, failed.and_then(|i| steps.get(i))).await)
            }
        }
    }

    /// Writes one step in a transaction that is rolled back.
    async fn attempt_rolled_back(
        &mut self,
        step: &Step,
        table: &TargetTable,
    ) -> Result<(), TargetError> {
        self.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(my_error("begin a target transaction"))?;
        let mut result = Ok(());
        match statements(step, table) {
            Ok((sqls, _)) => {
                for sql in sqls {
                    result = self.run(table, &sql).await.map(drop);
                    if result.is_err() {
                        break;
                    }
                }
            }
            Err(e) => result = Err(e),
        }
        let _ = self.conn.query_drop("ROLLBACK").await;
        result
    }

    /// Begins a transaction, writes the batch in it (see [`write_batch`])
    /// and commits it.
    async fn apply_in_transaction(
        &mut self,
        steps: &[Step],
        progress: Option<AppliedSpan<'_>>,
        failed: &mut Option<usize>,
    ) -> Result<u64, TargetError> {
        self.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(my_error("begin a target transaction"))?;
        let rows = write_batch(self, steps, progress, failed).await?;
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(my_error("commit a target transaction"))?;
        Ok(rows)
    }

    /// Makes the target table match a schema-change event. MySQL DDL commits
    /// implicitly, so the transaction is committed before the change and a
    /// new one begun after it.
    async fn schema_change(
        &mut self,
        source: &TableKey,
        event: &ChangeEvent,
    ) -> Result<(), TargetError> {
        let target = self.table(source).await?;
        let ddl = schema_ddl(
            &target.columns,
            &target.quoted,
            source,
            event,
            (
                self.schema_changes,
                self.map
                    .history
                    .mode(&source.schema, &source.table)
                    .map(|m| &**m),
            ),
            Engine::Mysql,
        )?;
        if ddl.is_empty() {
            return Ok(());
        }
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(my_error("commit before a schema change"))?;
        for statement in ddl {
            tracing::info!("target: {statement}");
            execute_one(&mut self.conn, &statement)
                .await
                .map_err(|e| TargetError::Table {
                    table: target.quoted.clone(),
                    message: format!("{statement}: {e}"),
                })?;
        }
        self.tables.remove(source);
        self.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(my_error("begin a target transaction"))
    }
}

impl MyTarget {
    /// Runs one statement built from events; returns the rows it changed.
    async fn run(&mut self, table: &TargetTable, sql: &str) -> Result<u64, TargetError> {
        execute_one(&mut self.conn, sql).await.map_err(|e| {
            if tidemark_connectors::mysql_transient(&e) {
                my_error("write to the target")(e)
            } else {
                TargetError::Table {
                    table: table.quoted.clone(),
                    message: e.to_string(),
                }
            }
        })
    }
}

impl BatchWriter for MyTarget {
    type Sql = String;

    fn locked_position<'a>(
        &'a mut self,
        scope: &'a str,
    ) -> refusal::Boxed<'a, Result<Option<String>, TargetError>> {
        Box::pin(async move {
            let stored: Option<String> = self
                .conn
                .exec_first(BOOKKEEPING.read_position_for_update(), (scope,))
                .await
                .map_err(my_error(bookkeeping::READ))?;
            Ok(stored)
        })
    }

    fn record_position<'a>(
        &'a mut self,
        scope: &'a str,
        last: &'a str,
    ) -> refusal::Boxed<'a, Result<(), TargetError>> {
        Box::pin(async move {
            self.conn
                .exec_drop(BOOKKEEPING.record_position(), (scope, last))
                .await
                .map_err(my_error(bookkeeping::RECORD))
        })
    }

    fn find_table<'a>(
        &'a mut self,
        source: &'a TableKey,
    ) -> refusal::Boxed<'a, Result<Arc<TargetTable>, TargetError>> {
        Box::pin(self.table(source))
    }

    fn change_schema<'a>(
        &'a mut self,
        source: &'a TableKey,
        event: &'a ChangeEvent,
    ) -> refusal::Boxed<'a, Result<(), TargetError>> {
        Box::pin(self.schema_change(source, event))
    }

    fn statements_for(
        step: &Step,
        table: &TargetTable,
    ) -> Result<(Vec<Self::Sql>, u64), TargetError> {
        statements(step, table)
    }

    fn write_sql<'a>(
        &'a mut self,
        table: &'a TargetTable,
        sql: &'a Self::Sql,
    ) -> refusal::Boxed<'a, Result<u64, TargetError>> {
        Box::pin(self.run(table, sql))
    }
}

impl refusal::Attempt for MyTarget {
    fn attempt<'a>(
        &'a mut self,
        step: &'a Step,
        table: &'a TargetTable,
    ) -> refusal::Boxed<'a, Result<(), TargetError>> {
        Box::pin(self.attempt_rolled_back(step, table))
    }

    fn target_table<'a>(
        &'a mut self,
        source: &'a TableKey,
    ) -> refusal::Boxed<'a, Result<Arc<TargetTable>, TargetError>> {
        Box::pin(self.table(source))
    }
}

/// Reads a table's columns and primary key; `None` when it does not exist.
pub(crate) async fn describe(
    conn: &mut Conn,
    schema: &str,
    name: &str,
) -> Result<Option<TargetTable>, TargetError> {
    let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let rows: Vec<(String, String, String)> = text_rows(
        conn,
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (schema, name),
    )
    .await
    .map_err(my_error(format!("describe target table {quoted}")))?
    .into_iter()
    .map(|row| match row.as_slice() {
        [Some(name), Some(data_type), Some(column_type)] => {
            Ok((name.clone(), data_type.clone(), column_type.clone()))
        }
        _ => Err(TargetError::Table {
            table: quoted.clone(),
            message: format!("information_schema.COLUMNS gave an unreadable row {row:?}"),
        }),
    })
    .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(None);
    }
    let key: Vec<String> = text_rows(
        conn,
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
        (schema, name),
    )
    .await
    .map_err(my_error(format!("read the primary key of {quoted}")))?
    .into_iter()
    .filter_map(|row| row.into_iter().next().flatten())
    .collect();
    if key.is_empty() {
        return Err(described::no_primary_key(quoted));
    }
    let columns = rows
        .into_iter()
        .map(|(name, data_type, column_type)| {
            let kind = mysql_kind(&data_type, &column_type);
            (name, (column_type, kind))
        })
        .collect();
    Ok(Some(TargetTable {
        quoted,
        columns,
        key,
    }))
}

/// The statements for one step (cut to [`MAX_STATEMENT_BYTES`]) and its row count.
fn statements(step: &Step, table: &TargetTable) -> Result<(Vec<String>, u64), TargetError> {
    let out = match step {
        Step::Upsert { columns, rows, .. } => upsert(table, columns, rows)?,
        Step::Delete { columns, keys, .. } => delete(table, columns, keys)?,
        Step::Truncate { .. } => vec![format!("DELETE FROM {}", table.quoted)],
        Step::Move {
            key_columns,
            old_key,
            columns,
            row,
            carry,
            ..
        } => move_row(table, key_columns, old_key, columns, row, carry)?,
        Step::Schema { .. } => Vec::new(),
        Step::Versions(versions) => history_versions(table, versions)?,
        Step::CloseAll { mode, at, .. } => vec![close_all(table, mode, at)?],
    };
    Ok((out, sql::rows_written(step)))
}

/// Closes per statement of history mode (each a derived table of literals).
const CLOSES_PER_STATEMENT: usize = 1000;

/// History mode: `UPDATE … JOIN (SELECT … UNION ALL …)` ends the target's
/// current versions the batch replaces, then `INSERT … ON DUPLICATE KEY
/// UPDATE position = position` adds the versions (a replayed one is a
/// no-op; not `INSERT IGNORE`, which would also turn bad values into warnings).
fn history_versions(table: &TargetTable, v: &Versions) -> Result<Vec<String>, TargetError> {
    let c = &v.mode.columns;
    let mut out = Vec::new();
    let mut columns = v.key_columns.clone();
    columns.extend([
        Arc::from(c.valid_to.as_str()),
        Arc::from(c.position.as_str()),
    ]);
    let kinds = kinds(table, &columns)?;
    let n = v.key_columns.len();
    let same_key: Vec<String> = v
        .key_columns
        .iter()
        .enumerate()
        .map(|(i, k)| format!("h.{} = c.`c{i}`", quote_ident(k)))
        .collect();
    for chunk in v.closes.chunks(CLOSES_PER_STATEMENT) {
        let mut derived = String::new();
        for (i, row) in chunk.iter().enumerate() {
            derived.push_str(if i == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            for (j, (value, kind)) in row.iter().zip(&kinds).enumerate() {
                if j > 0 {
                    derived.push(',');
                }
                mysql_literal(*kind, value, &mut derived)
                    .map_err(|e| sql::refused_value(table, &columns[j], value, e))?;
                if i == 0 {
                    derived.push_str(&format!(" AS `c{j}`"));
                }
            }
        }
        out.push(format!(
            "UPDATE {} AS h JOIN ({derived}) AS c ON {} SET h.{} = c.`c{n}`, h.{current} = FALSE WHERE h.{current} AND h.{} <> c.`c{}`",
            table.quoted,
            same_key.join(" AND "),
            quote_ident(&c.valid_to),
            quote_ident(&c.position),
            n + 1,
            current = quote_ident(&c.is_current),
        ));
    }
    let position = quote_ident(&c.position);
    let tail = format!(" ON DUPLICATE KEY UPDATE {position} = {position}");
    for (columns, rows) in &v.inserts {
        let head = format!("INSERT INTO {} ({}) VALUES ", table.quoted, names(columns));
        out.extend(chunked(table, columns, rows, &head, &tail)?);
    }
    Ok(out)
}

/// History mode's truncate: every current version ends at `at`.
fn close_all(
    table: &TargetTable,
    mode: &HistoryMode,
    at: &serde_json::Value,
) -> Result<String, TargetError> {
    let c = &mode.columns;
    let mut sql = format!(
        "UPDATE {} SET {} = ",
        table.quoted,
        quote_ident(&c.valid_to)
    );
    mysql_literal(Kind::DateTime, at, &mut sql)
        .map_err(|e| sql::refused_value(table, &c.valid_to, at, e))?;
    let current = quote_ident(&c.is_current);
    sql.push_str(&format!(", {current} = FALSE WHERE {current}"));
    Ok(sql)
}

/// `INSERT … VALUES … ON DUPLICATE KEY UPDATE` (`INSERT IGNORE` when only key
/// columns are written).
fn upsert(
    table: &TargetTable,
    columns: &[Arc<str>],
    rows: &[Vec<serde_json::Value>],
) -> Result<Vec<String>, TargetError> {
    let updates = sql::updates(table, columns, set_from_values);
    let insert = if updates.is_empty() {
        "INSERT IGNORE INTO"
    } else {
        "INSERT INTO"
    };
    let head = format!("{insert} {} ({}) VALUES ", table.quoted, names(columns));
    chunked(table, columns, rows, &head, &on_duplicate(&updates))
}

/// `DELETE … WHERE (key) IN (…)`.
fn delete(
    table: &TargetTable,
    columns: &[Arc<str>],
    keys: &[Vec<serde_json::Value>],
) -> Result<Vec<String>, TargetError> {
    let head = format!(
        "DELETE FROM {} WHERE ({}) IN (",
        table.quoted,
        names(columns)
    );
    chunked(table, columns, keys, &head, ")")
}

/// A move: an insert that copies the carried columns from the old row, then
/// the old row's delete.
fn move_row(
    table: &TargetTable,
    key_columns: &[Arc<str>],
    old_key: &[serde_json::Value],
    columns: &[Arc<str>],
    row: &[serde_json::Value],
    carry: &[Arc<str>],
) -> Result<Vec<String>, TargetError> {
    let mut values = String::new();
    tuple(&mut values, table, columns, &kinds(table, columns)?, row)?;
    let mut old = String::new();
    tuple(
        &mut old,
        table,
        key_columns,
        &kinds(table, key_columns)?,
        old_key,
    )?;
    let all = sql::with_carried(columns, carry);
    let updates = sql::updates(table, &all, set_from_values);
    // `(a, b)` as a select list: the tuple without its parentheses.
    let select = &values[1..values.len() - 1];
    Ok(vec![
        format!(
            "INSERT INTO {t} ({}) SELECT {select}, {} FROM {t} AS o WHERE ({}) = {old}{}",
            names(&all),
            sql::of_old_row(carry, quote_ident),
            sql::of_old_row(key_columns, quote_ident),
            on_duplicate(&updates),
            t = table.quoted,
        ),
        format!(
            "DELETE FROM {} WHERE ({}) = {old}",
            table.quoted,
            names(key_columns)
        ),
    ])
}

/// `head`, the rows as tuples separated by commas, then `tail`; cut into
/// statements of about [`MAX_STATEMENT_BYTES`], each with head and tail.
fn chunked(
    table: &TargetTable,
    columns: &[Arc<str>],
    rows: &[Vec<serde_json::Value>],
    head: &str,
    tail: &str,
) -> Result<Vec<String>, TargetError> {
    let kinds = kinds(table, columns)?;
    let mut out = Vec::new();
    let mut sql = String::new();
    for row in rows {
        if sql.is_empty() {
            sql.push_str(head);
        } else {
            sql.push(',');
        }
        tuple(&mut sql, table, columns, &kinds, row)?;
        if sql.len() >= MAX_STATEMENT_BYTES {
            sql.push_str(tail);
            out.push(std::mem::take(&mut sql));
        }
    }
    if !sql.is_empty() {
        sql.push_str(tail);
        out.push(sql);
    }
    Ok(out)
}

/// The kinds of `columns` in `table`.
fn kinds(table: &TargetTable, columns: &[Arc<str>]) -> Result<Vec<Kind>, TargetError> {
    columns
        .iter()
        .map(|name| sql::column(table, name).map(|(_, kind)| *kind))
        .collect()
}

/// Appends `(v1,v2,…)`: one row's values as literals.
fn tuple(
    out: &mut String,
    table: &TargetTable,
    columns: &[Arc<str>],
    kinds: &[Kind],
    row: &[serde_json::Value],
) -> Result<(), TargetError> {
    out.push('(');
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = row.get(i).unwrap_or(&serde_json::Value::Null);
        mysql_literal(*kind, value, out)
            .map_err(|e| sql::refused_value(table, &columns[i], value, e))?;
    }
    out.push(')');
    Ok(())
}

/// `a, b, c`, quoted.
fn names(columns: &[Arc<str>]) -> String {
    sql::list(columns, quote_ident)
}

/// `name = VALUES(name)`: an upsert's assignment of the new value.
fn set_from_values(column: &str) -> String {
    format!("{0} = VALUES({0})", quote_ident(column))
}

/// ` ON DUPLICATE KEY UPDATE …`, or nothing without assignments.
fn on_duplicate(updates: &[String]) -> String {
    if updates.is_empty() {
        String::new()
    } else {
        format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
    }
}
