//! The SQL a migration runs on either side, for either engine: describing
//! tables, creating them on the target, cutting key ranges, checksums in a
//! canonical text form, counters (sequences / AUTO_INCREMENT), and the
//! migration's own state rows.
//!
//! [`Db`] states what each operation does and holds what both engines share;
//! each dialect's SQL text and row reading live in `db/postgres.rs` and
//! `db/mysql.rs`.

mod mysql;
mod postgres;

use super::MigrateError;
use crate::target::mysql::connect as my_connect;
use crate::target::postgres::connect as pg_connect;
use crate::target::types::{target_type, Engine};
use crate::target::values::{mysql_kind, pg_kind, Kind};

/// A connection to one side of a migration.
///
/// What each operation does, whichever the engine:
///
/// - [`connect`](Db::connect): opens the engine the URL names (`postgres://`,
///   `postgresql://`, `mysql://`); any other URL is a config error that never
///   echoes the URL.
/// - [`engine`](Db::engine): which engine this is.
/// - [`quoted`](Db::quoted): `schema.table` with both names quoted.
/// - [`current_schema`](Db::current_schema): the default schema of names
///   (`public`; on MySQL the connection's database, an error when the URL
///   names none).
/// - [`execute`](Db::execute): runs one statement that returns no rows, and
///   gives the rows it affected.
/// - [`rows`](Db::rows): runs a query and gives every column as text, NULL as
///   `None`.
/// - [`describe`](Db::describe): a table's columns, primary key and secondary
///   indexes (expression indexes left out); `None` when it does not exist.
/// - [`create_table`](Db::create_table): creates a table described on another
///   (or the same) engine: columns with mapped types, counters and NOT NULL,
///   and the primary key; no secondary index.
/// - [`create_indexes`](Db::create_indexes): creates the source's secondary
///   indexes the table lacks (by name; Postgres names prefixed with the table).
/// - [`chunk_bounds`](Db::chunk_bounds): the key (as text) ending each chunk
///   of about `chunk_rows` rows, in key order.
/// - [`range`](Db::range): the `WHERE` clause of a key range `(lo, hi]`.
/// - [`checksum`](Db::checksum): row count and checksum of a key range, from
///   each column's canonical text (equal values give equal text on either
///   engine).
/// - [`row_hashes`](Db::row_hashes): each row's key (`|`-joined) and hash in a
///   key range, on the same canonical text.
/// - [`counter`](Db::counter): the last value a counter column (sequence /
///   AUTO_INCREMENT) handed out; `None` when it has no counter.
/// - [`sync_counter`](Db::sync_counter): moves a counter past a value and past
///   the rows' maximum, and gives where it put it.
/// - [`ensure_documents`](Db::ensure_documents): creates `tidemark_migration`
///   and `tidemark_cutover` unless they exist.
/// - [`load_document`](Db::load_document) / [`save_document`](Db::save_document):
///   one JSON document per name in `tidemark_migration`.
/// - [`save_cutover`](Db::save_cutover): the cutover record of a migration in
///   `tidemark_cutover` (replacing an earlier one).
///
/// A statement that fails reads "cannot {what}: {detail}", as
/// `MigrateError::Unavailable` when the database went away (a reconnect may
/// cure it) and `MigrateError::Db` otherwise; `connect` fails as the target
/// writers' `connect` does.
pub enum Db {
    Postgres(tokio_postgres::Client),
    Mysql(mysql_async::Conn),
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The engine's own type text (`format_type`, `COLUMN_TYPE`).
    pub native: String,
    pub kind: Kind,
    pub nullable: bool,
    /// Filled from a sequence / AUTO_INCREMENT.
    pub counter: bool,
    /// MySQL: ` CHARACTER SET … COLLATE …` of a character column (empty
    /// otherwise); kept by a MySQL target, so that a latin1 `TEXT` still holds
    /// 65,535 bytes of latin1.
    pub charset: String,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub name: String,
    pub unique: bool,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub key: Vec<String>,
    pub indexes: Vec<Index>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The three catalog queries behind [`Db::describe`], and the rows they give:
///
/// - `columns`: name, native type, nullable (`true`/`false`), counter
///   (`true`/`false`), then on MySQL `DATA_TYPE` and the ` CHARACTER SET …
///   COLLATE …` clause (empty when none); in column order;
/// - `key`: the primary key's column names, in key order;
/// - `indexes`: name, unique (`true`/`false`), column names joined by `,`.
pub(crate) struct DescribeQueries {
    pub(crate) columns: String,
    pub(crate) key: String,
    pub(crate) indexes: String,
}

/// Column `i` of a row as text (NULL or missing as empty).
fn text(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

/// A table from the rows of its [`DescribeQueries`] on `engine`.
fn table_from_rows(
    engine: Engine,
    (schema, name): (&str, &str),
    columns: &[Vec<Option<String>>],
    key: Vec<String>,
    indexes: &[Vec<Option<String>>],
) -> Table {
    Table {
        schema: schema.to_string(),
        name: name.to_string(),
        columns: columns
            .iter()
            .map(|r| {
                let native = text(r, 1);
                Column {
                    name: text(r, 0),
                    kind: match engine {
                        Engine::Postgres => pg_kind(&native),
                        Engine::Mysql => mysql_kind(&text(r, 4), &native),
                    },
                    native,
                    nullable: text(r, 2) == "true",
                    counter: text(r, 3) == "true",
                    charset: text(r, 5),
                }
            })
            .collect(),
        key,
        indexes: indexes
            .iter()
            .map(|r| Index {
                name: text(r, 0),
                unique: text(r, 1) == "true",
                columns: text(r, 2).split(',').map(str::to_string).collect(),
            })
            .collect(),
    }
}

/// The `OFFSET` of the row that ends a chunk of `chunk_rows` rows (a chunk
/// holds at least one row).
fn bound_offset(chunk_rows: usize) -> usize {
    chunk_rows.max(1) - 1
}

/// Where a synced counter goes: past the other side's last value and past the
/// rows' maximum, and at least 1.
fn counter_value(last: i64, max: i64) -> i64 {
    last.max(max).max(1)
}

impl Db {
    pub async fn connect(url: &str) -> Result<Db, MigrateError> {
        Ok(match Engine::of_url(url) {
            Some(Engine::Postgres) => Db::Postgres(pg_connect(url).await?),
            Some(Engine::Mysql) => Db::Mysql(my_connect(url).await?),
            None => {
                // Never echoed: a `key=value` string may hold `password=`.
                return Err(MigrateError::Config(
                    "a migrate URL must start with postgres://, postgresql:// or mysql://".into(),
                ));
            }
        })
    }

    pub fn engine(&self) -> Engine {
        match self {
            Db::Postgres(_) => Engine::Postgres,
            Db::Mysql(_) => Engine::Mysql,
        }
    }

    /// `"schema"."table"` / `` `db`.`table` ``.
    pub(crate) fn quoted(&self, schema: &str, name: &str) -> String {
        format!("{}.{}", self.ident(schema), self.ident(name))
    }

    fn ident(&self, name: &str) -> String {
        match self {
            Db::Postgres(_) => postgres::ident(name),
            Db::Mysql(_) => mysql::ident(name),
        }
    }

    /// MySQL: the connection's database (the default schema of names).
    pub(crate) async fn current_schema(&mut self) -> Result<String, MigrateError> {
        match self {
            Db::Postgres(_) => Ok(postgres::DEFAULT_SCHEMA.into()),
            Db::Mysql(conn) => mysql::current_schema(conn).await,
        }
    }

    /// Runs statements that return nothing.
    pub async fn execute(&mut self, sql: &str) -> Result<u64, MigrateError> {
        match self {
            Db::Postgres(client) => postgres::execute(client, sql).await,
            Db::Mysql(conn) => mysql::execute(conn, sql).await,
        }
    }

    /// Rows of text columns (NULL as `None`).
    pub async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, MigrateError> {
        match self {
            Db::Postgres(client) => postgres::rows(client, sql).await,
            Db::Mysql(conn) => mysql::rows(conn, sql).await,
        }
    }

    async fn strings(&mut self, sql: &str) -> Result<Vec<String>, MigrateError> {
        Ok(self
            .rows(sql)
            .await?
            .into_iter()
            .map(|r| r.into_iter().next().flatten().unwrap_or_default())
            .collect())
    }

    /// A table's columns, key and secondary indexes; `None` when it does not exist.
    pub async fn describe(
        &mut self,
        schema: &str,
        name: &str,
    ) -> Result<Option<Table>, MigrateError> {
        let queries = match self {
            Db::Postgres(_) => postgres::describe_queries(schema, name),
            Db::Mysql(_) => mysql::describe_queries(schema, name),
        };
        let columns = self.rows(&queries.columns).await?;
        let key = self.strings(&queries.key).await?;
        let indexes = self.rows(&queries.indexes).await?;
        if columns.is_empty() {
            return Ok(None);
        }
        Ok(Some(table_from_rows(
            self.engine(),
            (schema, name),
            &columns,
            key,
            &indexes,
        )))
    }

    /// Creates `table` (described on a `from` database) here as `schema.name`:
    /// columns and primary key only; indexes come after the copy.
    pub(crate) async fn create_table(
        &mut self,
        from: Engine,
        table: &Table,
        schema: &str,
        name: &str,
    ) -> Result<(), MigrateError> {
        let sql = self.create_table_sql(from, table, schema, name);
        tracing::info!("target: {sql}");
        self.execute(&sql).await?;
        Ok(())
    }

    /// The `CREATE TABLE` of [`Db::create_table`].
    fn create_table_sql(&self, from: Engine, table: &Table, schema: &str, name: &str) -> String {
        let to = self.engine();
        let mut parts = Vec::new();
        for c in &table.columns {
            let key = table.key.contains(&c.name);
            let mut def = format!(
                "{} {}",
                self.ident(&c.name),
                target_type(from, to, &c.native, key)
            );
            if (from, to) == (Engine::Mysql, Engine::Mysql) {
                def.push_str(&c.charset);
            }
            if c.counter {
                def.push_str(match to {
                    Engine::Postgres => postgres::COUNTER_CLAUSE,
                    Engine::Mysql => mysql::COUNTER_CLAUSE,
                });
            }
            if !c.nullable {
                def.push_str(" NOT NULL");
            }
            parts.push(def);
        }
        let key: Vec<String> = table.key.iter().map(|k| self.ident(k)).collect();
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
        format!(
            "CREATE TABLE {} ({})",
            self.quoted(schema, name),
            parts.join(", ")
        )
    }

    /// Creates the source table's secondary indexes that the target lacks.
    pub(crate) async fn create_indexes(
        &mut self,
        source: &Table,
        schema: &str,
        name: &str,
    ) -> Result<(), MigrateError> {
        let existing = self
            .describe(schema, name)
            .await?
            .map(|t| t.indexes.into_iter().map(|i| i.name).collect::<Vec<_>>())
            .unwrap_or_default();
        for index in &source.indexes {
            let index_name = match self {
                Db::Postgres(_) => postgres::index_name(name, &index.name),
                Db::Mysql(_) => index.name.clone(),
            };
            if existing.contains(&index_name) {
                continue;
            }
            let columns: Vec<String> = index.columns.iter().map(|c| self.ident(c)).collect();
            let sql = format!(
                "CREATE {}INDEX {} ON {} ({})",
                if index.unique { "UNIQUE " } else { "" },
                self.ident(&index_name),
                self.quoted(schema, name),
                columns.join(", ")
            );
            tracing::info!("target: {sql}");
            self.execute(&sql).await?;
        }
        Ok(())
    }

    /// The key (as text) that ends each chunk of about `chunk_rows` rows, in
    /// key order; the last chunk runs to the end of the table.
    pub(crate) async fn chunk_bounds(
        &mut self,
        table: &Table,
        chunk_rows: usize,
    ) -> Result<Vec<Vec<String>>, MigrateError> {
        let mut bounds: Vec<Vec<String>> = Vec::new();
        loop {
            let range = self.range(table, bounds.last().map(|b| b.as_slice()), None);
            let sql = format!(
                "SELECT {} FROM {} {range} ORDER BY {} LIMIT 1 OFFSET {}",
                self.key_text(table).join(", "),
                self.quoted(&table.schema, &table.name),
                self.key_list(table),
                bound_offset(chunk_rows)
            );
            let Some(row) = self.rows(&sql).await?.into_iter().next() else {
                return Ok(bounds);
            };
            bounds.push(row.into_iter().map(Option::unwrap_or_default).collect());
        }
    }

    fn key_list(&self, table: &Table) -> String {
        table
            .key
            .iter()
            .map(|k| self.ident(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key columns as text.
    fn key_text(&self, table: &Table) -> Vec<String> {
        table
            .key
            .iter()
            .map(|k| match self {
                Db::Postgres(_) => postgres::key_text(k),
                Db::Mysql(_) => mysql::key_text(k),
            })
            .collect()
    }

    /// `WHERE (key) > (lo) AND (key) <= (hi)`, either end left out when `None`.
    pub fn range(&self, table: &Table, lo: Option<&[String]>, hi: Option<&[String]>) -> String {
        let values = |key: &[String]| -> String {
            key.iter()
                .zip(&table.key)
                .map(|(v, k)| match self {
                    Db::Postgres(_) => postgres::key_value(v, table.column(k)),
                    Db::Mysql(_) => mysql::key_value(v),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut conditions = Vec::new();
        if let Some(lo) = lo {
            conditions.push(format!("({}) > ({})", self.key_list(table), values(lo)));
        }
        if let Some(hi) = hi {
            conditions.push(format!("({}) <= ({})", self.key_list(table), values(hi)));
        }
        if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        }
    }

    /// A column's canonical text: the same for equal values on either engine
    /// (given the type mapping), so rows hash alike on both sides.
    fn canonical(&self, column: &Column) -> String {
        match self {
            Db::Postgres(_) => postgres::canonical(column),
            Db::Mysql(_) => mysql::canonical(column),
        }
    }

    /// The md5 of a row's canonical text (NULL as `\N`, fields split by 0x1F).
    fn row_hash(&self, table: &Table, columns: &[String]) -> String {
        let parts: Vec<String> = columns
            .iter()
            .filter_map(|name| table.column(name))
            .map(|c| self.canonical(c))
            .collect();
        match self {
            Db::Postgres(_) => postgres::row_hash(&parts),
            Db::Mysql(_) => mysql::row_hash(&parts),
        }
    }

    /// Row count and checksum (sum of the rows' hash prefixes) of a key range.
    pub async fn checksum(
        &mut self,
        table: &Table,
        columns: &[String],
        lo: Option<&[String]>,
        hi: Option<&[String]>,
    ) -> Result<(u64, String), MigrateError> {
        let hash = self.row_hash(table, columns);
        let range = self.range(table, lo, hi);
        let from = self.quoted(&table.schema, &table.name);
        let sql = match self {
            Db::Postgres(_) => postgres::checksum_sql(&hash, &from, &range),
            Db::Mysql(_) => mysql::checksum_sql(&hash, &from, &range),
        };
        let row = self
            .rows(&sql)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok((text(&row, 0).parse().unwrap_or(0), text(&row, 1)))
    }

    /// Each row's key (as text, joined by `|`) and hash in a key range.
    pub(crate) async fn row_hashes(
        &mut self,
        table: &Table,
        columns: &[String],
        lo: Option<&[String]>,
        hi: Option<&[String]>,
    ) -> Result<std::collections::BTreeMap<String, String>, MigrateError> {
        let key = match self {
            Db::Postgres(_) => postgres::row_key(&self.key_text(table)),
            Db::Mysql(_) => mysql::row_key(&self.key_text(table)),
        };
        let sql = format!(
            "SELECT {key}, {} FROM {} {}",
            self.row_hash(table, columns),
            self.quoted(&table.schema, &table.name),
            self.range(table, lo, hi)
        );
        Ok(self
            .rows(&sql)
            .await?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                (
                    it.next().flatten().unwrap_or_default(),
                    it.next().flatten().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Postgres: the sequence behind a serial or identity column.
    async fn serial_sequence(
        &mut self,
        table: &Table,
        column: &str,
    ) -> Result<Option<String>, MigrateError> {
        Ok(self
            .strings(&postgres::serial_sequence_sql(table, column))
            .await?
            .into_iter()
            .next()
            .filter(|s| !s.is_empty()))
    }

    /// The last value a counter column handed out (sequence / AUTO_INCREMENT).
    pub async fn counter(
        &mut self,
        table: &Table,
        column: &str,
    ) -> Result<Option<i64>, MigrateError> {
        let sql = match self {
            Db::Postgres(_) => {
                let Some(seq) = self.serial_sequence(table, column).await? else {
                    return Ok(None);
                };
                postgres::counter_sql(&seq)
            }
            Db::Mysql(_) => mysql::counter_sql(table),
        };
        Ok(self
            .strings(&sql)
            .await?
            .into_iter()
            .next()
            .and_then(|v| v.parse().ok()))
    }

    /// Moves this side's counter of `column` past `last` and past the rows' maximum.
    pub(crate) async fn sync_counter(
        &mut self,
        table: &Table,
        column: &str,
        last: i64,
    ) -> Result<Option<i64>, MigrateError> {
        let from = self.quoted(&table.schema, &table.name);
        let col = self.ident(column);
        let text_type = match self {
            Db::Postgres(_) => postgres::TEXT_TYPE,
            Db::Mysql(_) => mysql::TEXT_TYPE,
        };
        let max: i64 = self
            .strings(&format!(
                "SELECT CAST(COALESCE(MAX({col}), 0) AS {text_type}) FROM {from}"
            ))
            .await?
            .into_iter()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let value = counter_value(last, max);
        match self {
            Db::Postgres(_) => {
                let Some(seq) = self.serial_sequence(table, column).await? else {
                    return Ok(None);
                };
                self.rows(&postgres::set_counter_sql(&seq, value)).await?;
            }
            Db::Mysql(_) => {
                self.execute(&mysql::set_counter_sql(&from, value)).await?;
            }
        }
        Ok(Some(value))
    }

    /// Creates the migration's bookkeeping table: one JSON document per name.
    pub(crate) async fn ensure_documents(&mut self) -> Result<(), MigrateError> {
        match self {
            Db::Postgres(client) => postgres::ensure_documents(client).await,
            Db::Mysql(conn) => mysql::ensure_documents(conn).await,
        }
    }

    pub(crate) async fn load_document(
        &mut self,
        name: &str,
    ) -> Result<Option<String>, MigrateError> {
        let sql = match self {
            Db::Postgres(_) => postgres::load_document_sql(name),
            Db::Mysql(_) => mysql::load_document_sql(name),
        };
        Ok(self.strings(&sql).await?.into_iter().next())
    }

    pub(crate) async fn save_document(
        &mut self,
        name: &str,
        document: &str,
    ) -> Result<(), MigrateError> {
        let sql = match self {
            Db::Postgres(_) => postgres::save_document_sql(name, document),
            Db::Mysql(_) => mysql::save_document_sql(name, document),
        };
        self.execute(&sql).await?;
        Ok(())
    }

    pub(crate) async fn save_cutover(
        &mut self,
        name: &str,
        position: &str,
        verified: bool,
        record: &str,
    ) -> Result<(), MigrateError> {
        let sql = match self {
            Db::Postgres(_) => postgres::save_cutover_sql(name, position, verified, record),
            Db::Mysql(_) => mysql::save_cutover_sql(name, position, verified, record),
        };
        self.execute(&sql).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<Option<String>> {
        cells
            .iter()
            .map(|c| (!c.is_empty()).then(|| c.to_string()))
            .collect()
    }

    #[test]
    fn postgres_rows_describe_a_table() {
        let table = table_from_rows(
            Engine::Postgres,
            ("public", "orders"),
            &[
                row(&["id", "bigint", "false", "true"]),
                row(&["note", "text", "true", "false"]),
            ],
            vec!["id".into()],
            &[row(&["orders_note", "true", "note,id"])],
        );
        assert_eq!(table.schema, "public");
        assert_eq!(table.name, "orders");
        assert_eq!(table.key, ["id"]);
        let id = table.column("id").unwrap();
        assert_eq!(id.kind, Kind::Integer);
        assert!(!id.nullable && id.counter);
        let note = table.column("note").unwrap();
        assert_eq!(note.kind, Kind::Text);
        assert!(note.nullable && !note.counter);
        assert_eq!(note.charset, "");
        assert_eq!(table.indexes.len(), 1);
        assert!(table.indexes[0].unique);
        assert_eq!(table.indexes[0].columns, ["note", "id"]);
    }

    #[test]
    fn mysql_rows_take_the_data_type_and_charset() {
        let table = table_from_rows(
            Engine::Mysql,
            ("shop", "t"),
            &[row(&[
                "flags",
                "bit(12)",
                "true",
                "false",
                "bit",
                " COLLATE x",
            ])],
            vec![],
            &[],
        );
        let flags = table.column("flags").unwrap();
        assert_eq!(flags.kind, Kind::Bit { bits: 12 });
        assert_eq!(flags.native, "bit(12)");
        assert_eq!(flags.charset, " COLLATE x");
        assert!(table.indexes.is_empty());
    }

    #[test]
    fn a_chunk_ends_at_its_last_row_and_holds_at_least_one() {
        assert_eq!(bound_offset(1000), 999);
        assert_eq!(bound_offset(1), 0);
        assert_eq!(bound_offset(0), 0);
    }

    #[test]
    fn a_synced_counter_passes_both_sides_and_is_positive() {
        assert_eq!(counter_value(5, 3), 5);
        assert_eq!(counter_value(2, 9), 9);
        assert_eq!(counter_value(0, 0), 1);
        assert_eq!(counter_value(-4, -1), 1);
    }
}
