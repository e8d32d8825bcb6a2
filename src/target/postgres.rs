//! Writes planned steps into a Postgres target: each column travels as one
//! `text[]` parameter and is cast to its column type in SQL
//! (`INSERT ... SELECT c0::int, ... FROM unnest($1::text[], ...) ON CONFLICT`),
//! so one statement writes thousands of rows and values go through Postgres'
//! own input functions.

use super::batch::{write_batch, BatchWriter};
use super::bookkeeping::{self, POSTGRES as BOOKKEEPING};
use super::described;
use super::history::HistoryMode;
use super::plan::{Step, TableKey, Versions};
use super::refusal;
use super::sql;
use super::types::Engine;
use super::values::{pg_kind, pg_text};
use super::{schema_ddl, AppliedSpan, SchemaChanges, TableMap, TargetError, TargetTable};
use std::collections::HashMap;
use std::sync::Arc;
use tidemark_connectors::postgres::tls;
use tidemark_connectors::postgres_transient;
use tidemark_connectors::sql::postgres::error_detail;
use tidemark_connectors::sql::postgres::quote_ident;
use tidemark_connectors::ChangeEvent;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient};

pub struct PgTarget {
    pub client: Client,
    map: TableMap,
    schema_changes: SchemaChanges,
    tables: HashMap<TableKey, Arc<TargetTable>>,
}

/// Connects with the session settings the value forms need (UTC, ISO dates),
/// and the URL's TLS settings (`sslmode`, `sslrootcert`).
pub(crate) async fn connect(url: &str) -> Result<Client, TargetError> {
    let url = tls::parse(url).map_err(|e| TargetError::Setup(format!("target.url: {e}")))?;
    let mut config = url.config.clone();
    config.options("-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=1");
    config.application_name("tidemark");
    let tls = url
        .tls_config()
        .map_err(|e| TargetError::Setup(format!("target.url: {e}")))?;
    url.refuse_cleartext(false)
        .await
        .map_err(|e| TargetError::Setup(format!("target.url: {e}")))?;
    tls::connect(&config, tls, "target")
        .await
        .map_err(|e| TargetError::pg("connect to the target", e))
}

impl PgTarget {
    pub async fn connect(
        url: &str,
        map: TableMap,
        schema_changes: SchemaChanges,
    ) -> Result<PgTarget, TargetError> {
        let client = connect(url).await?;
        // Connections made at once race to create the table: one retry settles it.
        let create = BOOKKEEPING.create_table();
        if client.batch_execute(create).await.is_err() {
            client
                .batch_execute(create)
                .await
                .map_err(|e| TargetError::pg(bookkeeping::CREATE, e))?;
        }
        // Foreign keys and user triggers do not fire for replicated rows (the
        // source already checked them, and rows of one batch come in key order,
        // not in the source's order); this needs a superuser.
        if let Err(e) = client
            .batch_execute("SET session_replication_role = replica")
            .await
        {
            tracing::warn!(
                "target: cannot set session_replication_role (foreign keys on the target will be checked): {}",
                error_detail(&e)
            );
        }
        let map = map.for_target(Engine::Postgres, "public");
        Ok(PgTarget {
            client,
            map,
            schema_changes,
            tables: HashMap::new(),
        })
    }

    pub(crate) fn map(&self) -> &TableMap {
        &self.map
    }

    /// Creates a history table (all statements in one transaction).
    pub(crate) async fn create_history(
        &mut self,
        schema: &str,
        name: &str,
        spec: &super::history::HistoryTableSpec<'_>,
    ) -> Result<(), TargetError> {
        let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
        let sql = super::history::create_statements(Engine::Postgres, &quoted, name, spec);
        let sql = format!("BEGIN; {}; COMMIT", sql.join("; "));
        tracing::info!("target: {sql}");
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| TargetError::Table {
                table: quoted.clone(),
                message: format!("{sql}: {}", error_detail(&e)),
            })
    }

    pub async fn applied(
        &mut self,
        scope: &str,
    ) -> Result<Option<(String, Option<String>)>, TargetError> {
        let row = self
            .client
            .query_opt(&BOOKKEEPING.read_applied(), &[&scope])
            .await
            .map_err(|e| TargetError::pg(bookkeeping::READ, e))?;
        row.map(|r| {
            Ok((
                column(&r, 0, bookkeeping::READ)?,
                column(&r, 1, bookkeeping::READ)?,
            ))
        })
        .transpose()
    }

    pub(crate) async fn save_cursor(
        &mut self,
        scope: &str,
        cursor: &str,
    ) -> Result<(), TargetError> {
        self.client
            .execute(&BOOKKEEPING.store_cursor(), &[&scope, &cursor])
            .await
            .map_err(|e| TargetError::pg(bookkeeping::STORE_CURSOR, e))?;
        Ok(())
    }

    pub(crate) async fn claim(&mut self, scope: &str) -> Result<(), TargetError> {
        self.client
            .execute(&BOOKKEEPING.claim(), &[&scope])
            .await
            .map_err(|e| TargetError::pg(bookkeeping::CLAIM, e))?;
        Ok(())
    }

    pub(crate) async fn forget(&mut self, scope: &str) -> Result<(), TargetError> {
        self.client
            .execute(&BOOKKEEPING.forget(), &[&scope])
            .await
            .map_err(|e| TargetError::pg(bookkeeping::FORGET, e))?;
        Ok(())
    }

    /// Starts `COPY … FROM STDIN` (text format) into the target table of
    /// `source`, in a transaction of its own: the fast path of `tidemark
    /// migrate`'s copy when both ends are Postgres.
    pub(crate) async fn copy_in(
        &mut self,
        source: &TableKey,
        columns: &[Arc<str>],
    ) -> Result<PgCopy<'_>, TargetError> {
        let table = lookup(&mut self.tables, &self.map, &self.client, source).await?;
        let fail = |what: &str| {
            let what = format!("{what} {}", table.quoted);
            move |e: tokio_postgres::Error| TargetError::pg(what, e)
        };
        let tx = self
            .client
            .transaction()
            .await
            .map_err(fail("begin a copy into"))?;
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN",
                table.quoted,
                quoted_list(columns)
            ))
            .await
            .map_err(fail("start a copy into"))?;
        Ok(PgCopy {
            tx,
            sink: Box::pin(sink),
            table,
        })
    }

    /// Applies the steps in order, in one transaction (Postgres DDL is
    /// transactional, so schema changes are part of it).
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
            // The transaction was dropped, so rolled back.
            Err(e) => Err(refusal::explain(self, e, failed.and_then(|i| steps.get(i))).await),
        }
    }

    /// Writes one step in a transaction that is rolled back.
    async fn attempt_rolled_back(
        &mut self,
        step: &Step,
        table: &TargetTable,
    ) -> Result<(), TargetError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| TargetError::pg("begin a target transaction", e))?;
        execute_all(&tx, &statements(step, table)?.0, table).await?;
        // Dropped: rolled back.
        Ok(())
    }

    /// Begins a transaction, writes the batch in it (see
    /// [`write_batch`]) and commits it.
    async fn apply_in_transaction(
        &mut self,
        steps: &[Step],
        progress: Option<AppliedSpan<'_>>,
        failed: &mut Option<usize>,
    ) -> Result<u64, TargetError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| TargetError::pg("begin a target transaction", e))?;
        let mut batch = PgBatch {
            tx: &tx,
            tables: &mut self.tables,
            map: &self.map,
            schema_changes: self.schema_changes,
        };
        let rows = write_batch(&mut batch, steps, progress, failed).await?;
        tx.commit()
            .await
            .map_err(|e| TargetError::pg("commit a target transaction", e))?;
        Ok(rows)
    }
}

/// A batch's transaction, with the target's table cache, as
/// [`write_batch`] writes through it.
struct PgBatch<'s, 't> {
    tx: &'s tokio_postgres::Transaction<'t>,
    tables: &'s mut HashMap<TableKey, Arc<TargetTable>>,
    map: &'s TableMap,
    schema_changes: SchemaChanges,
}

impl BatchWriter for PgBatch<'_, '_> {
    type Sql = Statement;

    fn locked_position<'a>(
        &'a mut self,
        scope: &'a str,
    ) -> refusal::Boxed<'a, Result<Option<String>, TargetError>> {
        Box::pin(async move {
            let row = self
                .tx
                .query_opt(&BOOKKEEPING.read_position_for_update(), &[&scope])
                .await
                .map_err(|e| TargetError::pg(bookkeeping::READ, e))?;
            let stored: Option<String> =
                row.map(|r| column(&r, 0, bookkeeping::READ)).transpose()?;
            Ok(stored)
        })
    }

    fn record_position<'a>(
        &'a mut self,
        scope: &'a str,
        last: &'a str,
    ) -> refusal::Boxed<'a, Result<(), TargetError>> {
        Box::pin(async move {
            self.tx
                .execute(&BOOKKEEPING.record_position(), &[&scope, &last])
                .await
                .map_err(|e| TargetError::pg(bookkeeping::RECORD, e))?;
            Ok(())
        })
    }

    fn find_table<'a>(
        &'a mut self,
        source: &'a TableKey,
    ) -> refusal::Boxed<'a, Result<Arc<TargetTable>, TargetError>> {
        Box::pin(lookup(self.tables, self.map, self.tx, source))
    }

    /// Postgres DDL is transactional: the change is part of the batch's
    /// transaction.
    fn change_schema<'a>(
        &'a mut self,
        source: &'a TableKey,
        event: &'a ChangeEvent,
    ) -> refusal::Boxed<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let target = lookup(self.tables, self.map, self.tx, source).await?;
            let history = self.map.history.mode(&source.schema, &source.table);
            let mode = (self.schema_changes, history.map(|m| &**m));
            schema_change(self.tx, &target, source, event, mode).await?;
            self.tables.remove(source);
            Ok(())
        })
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
        let (text, params) = sql;
        Box::pin(execute(self.tx, text, params, table))
    }
}

impl refusal::Attempt for PgTarget {
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
        Box::pin(lookup(&mut self.tables, &self.map, &self.client, source))
    }
}

/// Runs one statement; its error names the table. The rows it wrote.
async fn execute(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[Vec<Option<String>>],
    table: &TargetTable,
) -> Result<u64, TargetError> {
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    tx.execute(sql, &refs).await.map_err(|e| {
        if postgres_transient(&e) {
            TargetError::pg("write to the target", e)
        } else {
            TargetError::Table {
                table: table.quoted.clone(),
                message: error_detail(&e),
            }
        }
    })
}

/// Runs statements in order; the first error stops them.
async fn execute_all(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &[Statement],
    table: &TargetTable,
) -> Result<(), TargetError> {
    for (sql, params) in statements {
        execute(tx, sql, params, table).await?;
    }
    Ok(())
}

/// A `COPY … FROM STDIN` under way; dropped unfinished, it rolls back.
pub(crate) struct PgCopy<'a> {
    tx: tokio_postgres::Transaction<'a>,
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<bytes::Bytes>>>,
    table: Arc<TargetTable>,
}

impl PgCopy<'_> {
    /// Sends the next piece of COPY text (it need not end at a row).
    pub(crate) async fn send(&mut self, data: bytes::Bytes) -> Result<(), TargetError> {
        use futures_util::SinkExt;
        let result = self.sink.send(data).await;
        result.map_err(|e| copy_error(&self.table, e))
    }

    /// Ends the copy and commits; returns the rows copied.
    pub(crate) async fn finish(mut self) -> Result<u64, TargetError> {
        let rows = match self.sink.as_mut().finish().await {
            Ok(rows) => rows,
            Err(e) => return Err(copy_error(&self.table, e)),
        };
        // A deferred unique constraint is checked here.
        self.tx
            .commit()
            .await
            .map_err(|e| copy_error(&self.table, e))?;
        Ok(rows)
    }
}

/// A key already in the table is a [`TargetError::KeyConflict`] (the caller
/// upserts instead); anything else names the table.
fn copy_error(table: &TargetTable, e: tokio_postgres::Error) -> TargetError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        TargetError::KeyConflict {
            table: table.quoted.clone(),
            detail: error_detail(&e),
        }
    } else {
        TargetError::pg(format!("copy into {}", table.quoted), e)
    }
}

/// Column `i` of a row the target returned; a NULL or unexpected type is an
/// error naming what was read, never a panic.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
    what: &str,
) -> Result<T, TargetError> {
    row.try_get(i)
        .map_err(|e| TargetError::pg(what.to_string(), e))
}

/// The target table for a source table, read from the catalog once.
async fn lookup(
    tables: &mut HashMap<TableKey, Arc<TargetTable>>,
    map: &TableMap,
    client: &impl GenericClient,
    source: &TableKey,
) -> Result<Arc<TargetTable>, TargetError> {
    described::cached(tables, map, source, move |schema, name| async move {
        describe(client, &schema, &name).await
    })
    .await
}

/// Adds and drops columns to match a schema-change event, when configured to.
async fn schema_change(
    client: &impl GenericClient,
    table: &TargetTable,
    source: &TableKey,
    event: &tidemark_connectors::ChangeEvent,
    mode: (SchemaChanges, Option<&HistoryMode>),
) -> Result<(), TargetError> {
    let sql = schema_ddl(
        &table.columns,
        &table.quoted,
        source,
        event,
        mode,
        Engine::Postgres,
    )?;
    for statement in sql {
        tracing::info!("target: {statement}");
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| TargetError::Table {
                table: table.quoted.clone(),
                message: format!("{statement}: {}", error_detail(&e)),
            })?;
    }
    Ok(())
}

/// Reads a table's columns and primary key; `None` when it does not exist.
pub(crate) async fn describe(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
) -> Result<Option<TargetTable>, TargetError> {
    let quoted = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let columns = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                    coalesce(a.attnum = ANY(i.indkey), false),
                    coalesce(array_position(i.indkey::int2[], a.attnum), 0)
             FROM pg_attribute a
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&quoted],
        )
        .await
        .map_err(|e| TargetError::pg(format!("describe target table {quoted}"), e))?;
    if columns.is_empty() {
        return Ok(None);
    }
    let mut key: Vec<(i32, String)> = Vec::new();
    let mut map = HashMap::new();
    let what = format!("describe target table {quoted}");
    for row in &columns {
        let name: String = column(row, 0, &what)?;
        let type_name: String = column(row, 1, &what)?;
        if column::<bool>(row, 2, &what)? {
            key.push((column(row, 3, &what)?, name.clone()));
        }
        let kind = pg_kind(&type_name);
        map.insert(name, (type_name, kind));
    }
    key.sort();
    if key.is_empty() {
        return Err(described::no_primary_key(quoted));
    }
    Ok(Some(TargetTable {
        quoted,
        columns: map,
        key: key.into_iter().map(|(_, n)| n).collect(),
    }))
}

/// `SELECT c0::type, ... FROM unnest($n::text[], ...) AS s(c0, ...)`: the rows
/// as one text array per column (parameters numbered from `first`), and those
/// arrays.
fn select_rows(
    table: &TargetTable,
    columns: &[Arc<str>],
    rows: &[&[serde_json::Value]],
    first: usize,
) -> Result<Statement, TargetError> {
    let mut params: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); columns.len()];
    let mut casts = Vec::with_capacity(columns.len());
    for (i, name) in columns.iter().enumerate() {
        let (type_name, kind) = sql::column(table, name)?;
        casts.push(format!("c{i}::{type_name}"));
        for row in rows {
            let value = row.get(i).unwrap_or(&serde_json::Value::Null);
            let text =
                pg_text(*kind, value).map_err(|e| sql::refused_value(table, name, value, e))?;
            params[i].push(text);
        }
    }
    let unnest: Vec<String> = (first..first + columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    Ok((
        format!(
            "SELECT {} FROM unnest({}) AS s({})",
            casts.join(", "),
            unnest.join(", "),
            aliases.join(", ")
        ),
        params,
    ))
}

fn quoted_list(names: &[Arc<str>]) -> String {
    sql::list(names, quote_ident)
}

/// `name = EXCLUDED.name`: an upsert's assignment of the new value.
fn set_from_excluded(column: &str) -> String {
    format!("{0} = EXCLUDED.{0}", quote_ident(column))
}

/// `ON CONFLICT (key) DO UPDATE SET` every non-key column of `columns`.
fn on_conflict(table: &TargetTable, columns: &[Arc<str>]) -> String {
    let keys: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
    let updates = sql::updates(table, columns, set_from_excluded);
    if updates.is_empty() {
        format!("ON CONFLICT ({}) DO NOTHING", keys.join(", "))
    } else {
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {}",
            keys.join(", "),
            updates.join(", ")
        )
    }
}

type Statement = (String, Vec<Vec<Option<String>>>);

/// The statements for one step, and the number of rows it writes.
fn statements(step: &Step, table: &TargetTable) -> Result<(Vec<Statement>, u64), TargetError> {
    let out = match step {
        Step::Upsert { columns, rows, .. } => vec![upsert(table, columns, rows)?],
        Step::Delete { columns, keys, .. } => vec![delete(table, columns, keys)?],
        Step::Truncate { .. } => vec![(format!("TRUNCATE {}", table.quoted), Vec::new())],
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

/// History mode: `UPDATE … FROM (SELECT …)` ends the target's current
/// versions the batch replaces, then `INSERT … ON CONFLICT (version key) DO
/// NOTHING` adds the versions (a replayed one is a no-op).
fn history_versions(table: &TargetTable, v: &Versions) -> Result<Vec<Statement>, TargetError> {
    let c = &v.mode.columns;
    let mut out = Vec::new();
    if !v.closes.is_empty() {
        let mut columns = v.key_columns.clone();
        columns.extend([
            Arc::from(c.valid_to.as_str()),
            Arc::from(c.position.as_str()),
        ]);
        let rows: Vec<&[serde_json::Value]> = v.closes.iter().map(|r| r.as_slice()).collect();
        let (select, params) = select_rows(table, &columns, &rows, 1)?;
        let n = v.key_columns.len();
        let same_key: Vec<String> = v
            .key_columns
            .iter()
            .enumerate()
            .map(|(i, k)| format!("h.{} = c.c{i}", quote_ident(k)))
            .collect();
        out.push((
            format!(
                "UPDATE {} AS h SET {} = c.c{n}, {current} = false FROM ({select}) AS c WHERE {} AND h.{current} AND h.{} <> c.c{}",
                table.quoted,
                quote_ident(&c.valid_to),
                same_key.join(" AND "),
                quote_ident(&c.position),
                n + 1,
                current = quote_ident(&c.is_current),
            ),
            params,
        ));
    }
    let conflict = format!(
        "ON CONFLICT ({}, {}) DO NOTHING",
        quoted_list(&v.key_columns),
        quote_ident(&c.position)
    );
    for (columns, rows) in &v.inserts {
        let rows: Vec<&[serde_json::Value]> = rows.iter().map(|r| r.as_slice()).collect();
        let (select, params) = select_rows(table, columns, &rows, 1)?;
        out.push((
            format!(
                "INSERT INTO {} ({}) {select} {conflict}",
                table.quoted,
                quoted_list(columns)
            ),
            params,
        ));
    }
    Ok(out)
}

/// History mode's truncate: every current version ends at `at`.
fn close_all(
    table: &TargetTable,
    mode: &HistoryMode,
    at: &serde_json::Value,
) -> Result<Statement, TargetError> {
    let c = &mode.columns;
    let (select, params) = select_rows(
        table,
        &[Arc::from(c.valid_to.as_str())],
        &[std::slice::from_ref(at)],
        1,
    )?;
    Ok((
        format!(
            "UPDATE {} SET {} = c.c0, {current} = false FROM ({select}) AS c WHERE {current}",
            table.quoted,
            quote_ident(&c.valid_to),
            current = quote_ident(&c.is_current),
        ),
        params,
    ))
}

/// `INSERT … SELECT … ON CONFLICT`: the rows, one text array per column.
fn upsert(
    table: &TargetTable,
    columns: &[Arc<str>],
    rows: &[Vec<serde_json::Value>],
) -> Result<Statement, TargetError> {
    let rows: Vec<&[serde_json::Value]> = rows.iter().map(|r| r.as_slice()).collect();
    let (select, params) = select_rows(table, columns, &rows, 1)?;
    Ok((
        format!(
            "INSERT INTO {} ({}) {select} {}",
            table.quoted,
            quoted_list(columns),
            on_conflict(table, columns)
        ),
        params,
    ))
}

/// `DELETE … WHERE (key) IN (SELECT …)`.
fn delete(
    table: &TargetTable,
    columns: &[Arc<str>],
    keys: &[Vec<serde_json::Value>],
) -> Result<Statement, TargetError> {
    let keys: Vec<&[serde_json::Value]> = keys.iter().map(|r| r.as_slice()).collect();
    let (select, params) = select_rows(table, columns, &keys, 1)?;
    Ok((
        format!(
            "DELETE FROM {} WHERE ({}) IN ({select})",
            table.quoted,
            quoted_list(columns)
        ),
        params,
    ))
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
) -> Result<Vec<Statement>, TargetError> {
    let (select, mut params) = select_rows(table, columns, &[row], 1)?;
    let (old, old_params) = select_rows(table, key_columns, &[old_key], 1 + columns.len())?;
    params.extend(old_params);
    let all = sql::with_carried(columns, carry);
    let (delete, delete_params) = select_rows(table, key_columns, &[old_key], 1)?;
    Ok(vec![
        (
            format!(
                "INSERT INTO {t} ({}) SELECT s.*, {} FROM ({select}) AS s, {t} AS o WHERE ({}) = ({old}) {}",
                quoted_list(&all),
                sql::of_old_row(carry, quote_ident),
                sql::of_old_row(key_columns, quote_ident),
                on_conflict(table, &all),
                t = table.quoted,
            ),
            params,
        ),
        (
            format!(
                "DELETE FROM {} WHERE ({}) IN ({delete})",
                table.quoted,
                quoted_list(key_columns)
            ),
            delete_params,
        ),
    ])
}
