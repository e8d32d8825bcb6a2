//! Writes planned steps into a MySQL/MariaDB target as multi-row statements
//! (`INSERT ... VALUES (...), (...) ON DUPLICATE KEY UPDATE`), with values as
//! literals (no prepare round trip per batch shape). Truncates become
//! `DELETE FROM` so they stay inside the transaction that records the
//! position; MySQL DDL commits implicitly, so a schema change ends the
//! transaction before it and starts a new one after it.

use super::plan::{Step, TableKey};
use super::refusal;
use super::types::Engine;
use super::values::{mysql_kind, mysql_literal, quote_mysql, Kind};
use super::{
    check_progress, schema_ddl, Progress, SchemaChanges, TableMap, TargetError, TargetTable,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::HashMap;
use std::sync::Arc;
use tidemark_connectors::mysql::{text_rows, text_value, tls};

/// A statement is cut at about this size (the server's `max_allowed_packet`
/// is 16 MiB by default on MariaDB, 64 MiB on MySQL 8).
const MAX_STATEMENT_BYTES: usize = 4 << 20;

const META: &str = "CREATE TABLE IF NOT EXISTS tidemark_applied (
    scope varchar(255) NOT NULL PRIMARY KEY,
    position varchar(2048) NOT NULL,
    `cursor` text,
    updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
)";

pub use tidemark_connectors::mysql::quote;

pub struct MyTarget {
    pub conn: Conn,
    map: TableMap,
    schema_changes: SchemaChanges,
    tables: HashMap<TableKey, Arc<TargetTable>>,
}

fn my_error(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> TargetError {
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
pub async fn connect(url: &str) -> Result<Conn, TargetError> {
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
pub async fn execute_one(conn: &mut Conn, sql: &str) -> Result<u64, mysql_async::Error> {
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
        if conn.query_drop(META).await.is_err() {
            conn.query_drop(META)
                .await
                .map_err(my_error("create tidemark_applied"))?;
        }
        let map = map.for_target(Engine::Mysql, &db);
        Ok(MyTarget {
            conn,
            map,
            schema_changes,
            tables: HashMap::new(),
        })
    }

    pub async fn applied(
        &mut self,
        scope: &str,
    ) -> Result<Option<(String, Option<String>)>, TargetError> {
        self.conn
            .exec_first(
                "SELECT position, `cursor` FROM tidemark_applied WHERE scope = ?",
                (scope,),
            )
            .await
            .map_err(my_error("read tidemark_applied"))
    }

    pub async fn save_cursor(&mut self, scope: &str, cursor: &str) -> Result<(), TargetError> {
        self.conn
            .exec_drop(
                "INSERT INTO tidemark_applied (scope, position, `cursor`) VALUES (?, '', ?)
                 ON DUPLICATE KEY UPDATE `cursor` = VALUES(`cursor`), updated_at = CURRENT_TIMESTAMP(6)",
                (scope, cursor),
            )
            .await
            .map_err(my_error("store the cursor in tidemark_applied"))
    }

    pub async fn claim(&mut self, scope: &str) -> Result<(), TargetError> {
        self.conn
            .exec_drop(
                "INSERT IGNORE INTO tidemark_applied (scope, position) VALUES (?, '')",
                (scope,),
            )
            .await
            .map_err(my_error("add a row to tidemark_applied"))
    }

    pub async fn forget(&mut self, scope: &str) -> Result<(), TargetError> {
        self.conn
            .exec_drop("DELETE FROM tidemark_applied WHERE scope = ?", (scope,))
            .await
            .map_err(my_error("reset tidemark_applied"))
    }

    async fn table(&mut self, source: &TableKey) -> Result<Arc<TargetTable>, TargetError> {
        if let Some(table) = self.tables.get(source) {
            return Ok(table.clone());
        }
        let (schema, name) = self.map.resolve(source);
        let table = Arc::new(describe(&mut self.conn, &schema, &name).await?.ok_or_else(|| {
            TargetError::Table {
                table: format!("{schema}.{name}"),
                message: format!(
                    "does not exist on the target (source table {source}; create it, or map it in [target.tables])"
                ),
            }
        })?);
        self.tables.insert(source.clone(), table.clone());
        Ok(table)
    }

    pub async fn apply(
        &mut self,
        steps: Vec<Step>,
        progress: Option<Progress<'_>>,
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

    async fn apply_in_transaction(
        &mut self,
        steps: &[Step],
        progress: Option<Progress<'_>>,
        failed: &mut Option<usize>,
    ) -> Result<u64, TargetError> {
        self.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(my_error("begin a target transaction"))?;
        if let Some(p) = &progress {
            let stored: Option<String> = self
                .conn
                .exec_first(
                    "SELECT position FROM tidemark_applied WHERE scope = ? FOR UPDATE",
                    (p.scope,),
                )
                .await
                .map_err(my_error("read tidemark_applied"))?;
            check_progress(stored, p)?;
        }
        let mut rows = 0;
        for (index, step) in steps.iter().enumerate() {
            *failed = Some(index);
            let source = match step {
                Step::Upsert { table, .. }
                | Step::Delete { table, .. }
                | Step::Truncate { table }
                | Step::Move { table, .. } => table,
                Step::Schema { table, event } => {
                    let target = self.table(table).await?;
                    let ddl = schema_ddl(
                        &target.columns,
                        &target.quoted,
                        table,
                        event,
                        self.schema_changes,
                        Engine::Mysql,
                    )?;
                    if !ddl.is_empty() {
                        self.conn
                            .query_drop("COMMIT")
                            .await
                            .map_err(my_error("commit before a schema change"))?;
                        for statement in ddl {
                            tracing::info!("target: {statement}");
                            execute_one(&mut self.conn, &statement).await.map_err(|e| {
                                TargetError::Table {
                                    table: target.quoted.clone(),
                                    message: format!("{statement}: {e}"),
                                }
                            })?;
                        }
                        self.tables.remove(table);
                        self.conn
                            .query_drop("START TRANSACTION")
                            .await
                            .map_err(my_error("begin a target transaction"))?;
                    }
                    continue;
                }
            };
            let table = self.table(source).await?;
            let (sqls, count) = statements(step, &table)?;
            for (i, sql) in sqls.iter().enumerate() {
                let changed = self.run(&table, sql).await?;
                if let (
                    0,
                    0,
                    Step::Move {
                        columns,
                        row,
                        position,
                        ..
                    },
                ) = (i, changed, step)
                {
                    // The old row is not on the target: write what the event has.
                    let upsert = Step::Upsert {
                        table: source.clone(),
                        columns: columns.clone(),
                        rows: vec![row.clone()],
                        positions: vec![position.clone()],
                    };
                    for sql in statements(&upsert, &table)?.0 {
                        self.run(&table, &sql).await?;
                    }
                }
            }
            rows += count;
        }
        *failed = None;
        if let Some(p) = progress {
            self.conn
                .exec_drop(
                    "INSERT INTO tidemark_applied (scope, position) VALUES (?, ?)
                     ON DUPLICATE KEY UPDATE position = VALUES(position), updated_at = CURRENT_TIMESTAMP(6)",
                    (p.scope, p.last),
                )
                .await
                .map_err(my_error("store the applied position"))?;
        }
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(my_error("commit a target transaction"))?;
        Ok(rows)
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
pub async fn describe(
    conn: &mut Conn,
    schema: &str,
    name: &str,
) -> Result<Option<TargetTable>, TargetError> {
    let quoted = format!("{}.{}", quote(schema), quote(name));
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
        return Err(TargetError::Table {
            table: quoted,
            message: "has no primary key on the target: changes cannot be applied idempotently"
                .into(),
        });
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
    let kinds = |columns: &[Arc<str>]| -> Result<Vec<Kind>, TargetError> {
        columns
            .iter()
            .map(|name| {
                table.columns.get(&**name).map(|(_, k)| *k).ok_or_else(|| TargetError::Table {
                    table: table.quoted.clone(),
                    message: format!("has no column {name:?} (the events have it; apply the schema change on the target, or set target.schema_changes = \"apply\")"),
                })
            })
            .collect()
    };
    let tuple =
        |out: &mut String, columns: &[Arc<str>], kinds: &[Kind], row: &[serde_json::Value]| {
            out.push('(');
            for (i, kind) in kinds.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let value = row.get(i).unwrap_or(&serde_json::Value::Null);
                mysql_literal(*kind, value, out).map_err(|e| TargetError::Table {
                    table: table.quoted.clone(),
                    message: format!("column {}: value {value}: {e}", columns[i]),
                })?;
            }
            out.push(')');
            Ok::<_, TargetError>(())
        };
    let names = |columns: &[Arc<str>]| {
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::new();
    let count = match step {
        Step::Upsert { columns, rows, .. } => {
            let kinds = kinds(columns)?;
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !table.key.iter().any(|k| k == &***c))
                .map(|c| format!("{0} = VALUES({0})", quote(c)))
                .collect();
            let (head, tail) = if updates.is_empty() {
                (
                    format!(
                        "INSERT IGNORE INTO {} ({}) VALUES ",
                        table.quoted,
                        names(columns)
                    ),
                    String::new(),
                )
            } else {
                (
                    format!("INSERT INTO {} ({}) VALUES ", table.quoted, names(columns)),
                    format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", ")),
                )
            };
            let mut sql = String::new();
            for row in rows {
                if sql.is_empty() {
                    sql.push_str(&head);
                } else {
                    sql.push(',');
                }
                tuple(&mut sql, columns, &kinds, row)?;
                if sql.len() >= MAX_STATEMENT_BYTES {
                    sql.push_str(&tail);
                    out.push(std::mem::take(&mut sql));
                }
            }
            if !sql.is_empty() {
                sql.push_str(&tail);
                out.push(sql);
            }
            rows.len() as u64
        }
        Step::Delete { columns, keys, .. } => {
            let kinds = kinds(columns)?;
            let head = format!(
                "DELETE FROM {} WHERE ({}) IN (",
                table.quoted,
                names(columns)
            );
            let mut sql = String::new();
            for key in keys {
                if sql.is_empty() {
                    sql.push_str(&head);
                } else {
                    sql.push(',');
                }
                tuple(&mut sql, columns, &kinds, key)?;
                if sql.len() >= MAX_STATEMENT_BYTES {
                    sql.push(')');
                    out.push(std::mem::take(&mut sql));
                }
            }
            if !sql.is_empty() {
                sql.push(')');
                out.push(sql);
            }
            keys.len() as u64
        }
        Step::Truncate { .. } => {
            out.push(format!("DELETE FROM {}", table.quoted));
            0
        }
        Step::Move {
            key_columns,
            old_key,
            columns,
            row,
            carry,
            ..
        } => {
            let mut values = String::new();
            tuple(&mut values, columns, &kinds(columns)?, row)?;
            let mut old = String::new();
            tuple(&mut old, key_columns, &kinds(key_columns)?, old_key)?;
            let all: Vec<Arc<str>> = columns.iter().chain(carry).cloned().collect();
            let updates: Vec<String> = all
                .iter()
                .filter(|c| !table.key.iter().any(|k| k == &***c))
                .map(|c| format!("{0} = VALUES({0})", quote(c)))
                .collect();
            let carried: Vec<String> = carry.iter().map(|c| format!("o.{}", quote(c))).collect();
            let old_columns: Vec<String> = key_columns
                .iter()
                .map(|k| format!("o.{}", quote(k)))
                .collect();
            // `(a, b)` as a select list: the tuple without its parentheses.
            let select = &values[1..values.len() - 1];
            out.push(format!(
                "INSERT INTO {t} ({}) SELECT {select}, {} FROM {t} AS o WHERE ({}) = {old}{}",
                names(&all),
                carried.join(", "),
                old_columns.join(", "),
                if updates.is_empty() {
                    String::new()
                } else {
                    format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
                },
                t = table.quoted,
            ));
            out.push(format!(
                "DELETE FROM {} WHERE ({}) = {old}",
                table.quoted,
                names(key_columns)
            ));
            1
        }
        Step::Schema { .. } => 0,
    };
    Ok((out, count))
}

/// A string literal (for callers building SQL by hand).
pub fn literal(text: &str) -> String {
    let mut out = String::new();
    quote_mysql(&mut out, text);
    out
}
