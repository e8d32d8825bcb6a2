//! Writes planned steps into a Postgres target: each column travels as one
//! `text[]` parameter and is cast to its column type in SQL
//! (`INSERT ... SELECT c0::int, ... FROM unnest($1::text[], ...) ON CONFLICT`),
//! so one statement writes thousands of rows and values go through Postgres'
//! own input functions.

use super::plan::{Step, TableKey};
use super::refusal;
use super::types::Engine;
use super::values::{pg_kind, pg_text};
use super::{
    check_progress, pg_detail, schema_ddl, Progress, SchemaChanges, TableMap, TargetError,
    TargetTable,
};
use std::collections::HashMap;
use std::sync::Arc;
use tidemark_connectors::postgres::catalog::quote_ident;
use tidemark_connectors::postgres::tls;
use tidemark_connectors::postgres_transient;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient};

/// The bookkeeping tables, created on connect.
const META: &str = "
CREATE TABLE IF NOT EXISTS public.tidemark_applied (
    scope text PRIMARY KEY,
    position text NOT NULL,
    cursor text,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

pub struct PgTarget {
    pub client: Client,
    map: TableMap,
    schema_changes: SchemaChanges,
    tables: HashMap<TableKey, Arc<TargetTable>>,
}

/// Connects with the session settings the value forms need (UTC, ISO dates),
/// and the URL's TLS settings (`sslmode`, `sslrootcert`).
pub async fn connect(url: &str) -> Result<Client, TargetError> {
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
        if client.batch_execute(META).await.is_err() {
            client
                .batch_execute(META)
                .await
                .map_err(|e| TargetError::pg("create tidemark_applied", e))?;
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
                pg_detail(e)
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

    pub async fn applied(
        &mut self,
        scope: &str,
    ) -> Result<Option<(String, Option<String>)>, TargetError> {
        let row = self
            .client
            .query_opt(
                "SELECT position, cursor FROM public.tidemark_applied WHERE scope = $1",
                &[&scope],
            )
            .await
            .map_err(|e| TargetError::pg("read tidemark_applied", e))?;
        row.map(|r| {
            Ok((
                column(&r, 0, "read tidemark_applied")?,
                column(&r, 1, "read tidemark_applied")?,
            ))
        })
        .transpose()
    }

    pub async fn save_cursor(&mut self, scope: &str, cursor: &str) -> Result<(), TargetError> {
        self.client
            .execute(
                "INSERT INTO public.tidemark_applied (scope, position, cursor) VALUES ($1, '', $2)
                 ON CONFLICT (scope) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()",
                &[&scope, &cursor],
            )
            .await
            .map_err(|e| TargetError::pg("store the cursor in tidemark_applied", e))?;
        Ok(())
    }

    pub async fn claim(&mut self, scope: &str) -> Result<(), TargetError> {
        self.client
            .execute(
                "INSERT INTO public.tidemark_applied (scope, position) VALUES ($1, '')
                 ON CONFLICT (scope) DO NOTHING",
                &[&scope],
            )
            .await
            .map_err(|e| TargetError::pg("add a row to tidemark_applied", e))?;
        Ok(())
    }

    pub async fn forget(&mut self, scope: &str) -> Result<(), TargetError> {
        self.client
            .execute(
                "DELETE FROM public.tidemark_applied WHERE scope = $1",
                &[&scope],
            )
            .await
            .map_err(|e| TargetError::pg("reset tidemark_applied", e))?;
        Ok(())
    }

    /// Starts `COPY … FROM STDIN` (text format) into the target table of
    /// `source`, in a transaction of its own: the fast path of `tidemark
    /// migrate`'s copy when both ends are Postgres.
    pub async fn copy_in(
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
        progress: Option<Progress<'_>>,
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

    async fn apply_in_transaction(
        &mut self,
        steps: &[Step],
        progress: Option<Progress<'_>>,
        failed: &mut Option<usize>,
    ) -> Result<u64, TargetError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| TargetError::pg("begin a target transaction", e))?;
        if let Some(p) = &progress {
            let stored = tx
                .query_opt(
                    "SELECT position FROM public.tidemark_applied WHERE scope = $1 FOR UPDATE",
                    &[&p.scope],
                )
                .await
                .map_err(|e| TargetError::pg("read tidemark_applied", e))?;
            let stored = stored
                .map(|r| column(&r, 0, "read tidemark_applied"))
                .transpose()?;
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
                    let target = lookup(&mut self.tables, &self.map, &tx, table).await?;
                    schema_change(&tx, &target, table, event, self.schema_changes).await?;
                    self.tables.remove(table);
                    continue;
                }
            };
            let table = lookup(&mut self.tables, &self.map, &tx, source).await?;
            let (sqls, count) = statements(step, &table)?;
            for (i, (sql, params)) in sqls.iter().enumerate() {
                let written = execute(&tx, sql, params, &table).await?;
                if let (
                    0,
                    0,
                    Step::Move {
                        columns,
                        row,
                        position,
                        ..
                    },
                ) = (i, written, step)
                {
                    // The old row is not on the target: write what the event has.
                    let upsert = Step::Upsert {
                        table: source.clone(),
                        columns: columns.clone(),
                        rows: vec![row.clone()],
                        positions: vec![position.clone()],
                    };
                    execute_all(&tx, &statements(&upsert, &table)?.0, &table).await?;
                }
            }
            rows += count;
        }
        *failed = None;
        if let Some(p) = progress {
            tx.execute(
                "INSERT INTO public.tidemark_applied (scope, position) VALUES ($1, $2)
                 ON CONFLICT (scope) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
                &[&p.scope, &p.last],
            )
            .await
            .map_err(|e| TargetError::pg("store the applied position", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| TargetError::pg("commit a target transaction", e))?;
        Ok(rows)
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
                message: pg_detail(e),
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
pub struct PgCopy<'a> {
    tx: tokio_postgres::Transaction<'a>,
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<bytes::Bytes>>>,
    table: Arc<TargetTable>,
}

impl PgCopy<'_> {
    /// Sends the next piece of COPY text (it need not end at a row).
    pub async fn send(&mut self, data: bytes::Bytes) -> Result<(), TargetError> {
        use futures_util::SinkExt;
        let result = self.sink.send(data).await;
        result.map_err(|e| copy_error(&self.table, e))
    }

    /// Ends the copy and commits; returns the rows copied.
    pub async fn finish(mut self) -> Result<u64, TargetError> {
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
            detail: pg_detail(e),
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
    if let Some(table) = tables.get(source) {
        return Ok(table.clone());
    }
    let (schema, name) = map.resolve(source);
    let table = Arc::new(describe(client, &schema, &name).await?.ok_or_else(|| {
        TargetError::Table {
            table: format!("{schema}.{name}"),
            message: format!(
                "does not exist on the target (source table {source}; create it, or map it in [target.tables])"
            ),
        }
    })?);
    tables.insert(source.clone(), table.clone());
    Ok(table)
}

/// Adds and drops columns to match a schema-change event, when configured to.
async fn schema_change(
    client: &impl GenericClient,
    table: &TargetTable,
    source: &TableKey,
    event: &tidemark_connectors::ChangeEvent,
    mode: SchemaChanges,
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
                message: format!("{statement}: {}", pg_detail(e)),
            })?;
    }
    Ok(())
}

/// Reads a table's columns and primary key; `None` when it does not exist.
pub async fn describe(
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
        return Err(TargetError::Table {
            table: quoted,
            message: "has no primary key on the target: changes cannot be applied idempotently"
                .into(),
        });
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
        let (type_name, kind) = table.columns.get(&**name).ok_or_else(|| TargetError::Table {
            table: table.quoted.clone(),
            message: format!("has no column {name:?} (the events have it; apply the schema change on the target, or set target.schema_changes = \"apply\")"),
        })?;
        casts.push(format!("c{i}::{type_name}"));
        for row in rows {
            let value = row.get(i).unwrap_or(&serde_json::Value::Null);
            params[i].push(pg_text(*kind, value).map_err(|e| TargetError::Table {
                table: table.quoted.clone(),
                message: format!("column {name}: value {value}: {e}"),
            })?);
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
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ON CONFLICT (key) DO UPDATE SET` every non-key column of `columns`.
fn on_conflict(table: &TargetTable, columns: &[Arc<str>]) -> String {
    let keys: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !table.key.iter().any(|k| k == &***c))
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
        .collect();
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

/// The statements for one step, and the number of rows it writes. A move is
/// an insert that copies the carried columns from the old row, then the
/// old row's delete.
fn statements(step: &Step, table: &TargetTable) -> Result<(Vec<Statement>, u64), TargetError> {
    Ok(match step {
        Step::Upsert { columns, rows, .. } => {
            let rows: Vec<&[serde_json::Value]> = rows.iter().map(|r| r.as_slice()).collect();
            let (select, params) = select_rows(table, columns, &rows, 1)?;
            (
                vec![(
                    format!(
                        "INSERT INTO {} ({}) {select} {}",
                        table.quoted,
                        quoted_list(columns),
                        on_conflict(table, columns)
                    ),
                    params,
                )],
                rows.len() as u64,
            )
        }
        Step::Delete { columns, keys, .. } => {
            let keys: Vec<&[serde_json::Value]> = keys.iter().map(|r| r.as_slice()).collect();
            let (select, params) = select_rows(table, columns, &keys, 1)?;
            (
                vec![(
                    format!(
                        "DELETE FROM {} WHERE ({}) IN ({select})",
                        table.quoted,
                        quoted_list(columns)
                    ),
                    params,
                )],
                keys.len() as u64,
            )
        }
        Step::Truncate { .. } => (vec![(format!("TRUNCATE {}", table.quoted), Vec::new())], 0),
        Step::Move {
            key_columns,
            old_key,
            columns,
            row,
            carry,
            ..
        } => {
            let (select, mut params) = select_rows(table, columns, &[row.as_slice()], 1)?;
            let (old, old_params) =
                select_rows(table, key_columns, &[old_key.as_slice()], 1 + columns.len())?;
            params.extend(old_params);
            let old_columns: Vec<String> = key_columns
                .iter()
                .map(|k| format!("o.{}", quote_ident(k)))
                .collect();
            let carried: Vec<String> = carry
                .iter()
                .map(|c| format!("o.{}", quote_ident(c)))
                .collect();
            let all: Vec<Arc<str>> = columns.iter().chain(carry).cloned().collect();
            let (delete, delete_params) =
                select_rows(table, key_columns, &[old_key.as_slice()], 1)?;
            (
                vec![
                    (
                        format!(
                            "INSERT INTO {t} ({}) SELECT s.*, {} FROM ({select}) AS s, {t} AS o WHERE ({}) = ({old}) {}",
                            quoted_list(&all),
                            carried.join(", "),
                            old_columns.join(", "),
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
                ],
                1,
            )
        }
        Step::Schema { .. } => (Vec::new(), 0),
    })
}
