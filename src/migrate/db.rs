//! The SQL a migration runs on either side, for either engine: describing
//! tables, creating them on the target, cutting key ranges, checksums in a
//! canonical text form, counters (sequences / AUTO_INCREMENT), and the
//! migration's own state rows.

use super::MigrateError;
use crate::target::mysql::{
    connect as my_connect, execute_one, literal as my_literal, quote as my_quote,
};
use crate::target::pg_detail;
use crate::target::postgres::connect as pg_connect;
use crate::target::types::{target_type, Engine};
use crate::target::values::{mysql_kind, pg_kind, Kind};
use mysql_async::prelude::Queryable;
use tidemark_connectors::postgres::catalog::quote_ident;

/// A connection to one side of a migration.
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

fn pg_err(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> MigrateError {
    let what = what.into();
    move |e| {
        let transient = tidemark_connectors::postgres_transient(&e);
        let message = format!("cannot {what}: {}", pg_detail(e));
        if transient {
            MigrateError::Unavailable(message)
        } else {
            MigrateError::Db(message)
        }
    }
}

fn my_err(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> MigrateError {
    let what = what.into();
    move |e| {
        let message = format!("cannot {what}: {e}");
        if tidemark_connectors::mysql_transient(&e) {
            MigrateError::Unavailable(message)
        } else {
            MigrateError::Db(message)
        }
    }
}

fn pg_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
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
    pub fn quoted(&self, schema: &str, name: &str) -> String {
        match self {
            Db::Postgres(_) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
            Db::Mysql(_) => format!("{}.{}", my_quote(schema), my_quote(name)),
        }
    }

    fn ident(&self, name: &str) -> String {
        match self {
            Db::Postgres(_) => quote_ident(name),
            Db::Mysql(_) => my_quote(name),
        }
    }

    /// MySQL: the connection's database (the default schema of names).
    pub async fn current_schema(&mut self) -> Result<String, MigrateError> {
        match self {
            Db::Postgres(_) => Ok("public".into()),
            Db::Mysql(conn) => conn
                .query_first::<Option<String>, _>("SELECT DATABASE()")
                .await
                .map_err(my_err("read the current database"))?
                .flatten()
                .ok_or_else(|| MigrateError::Config("the MySQL URL names no database".into())),
        }
    }

    /// Runs statements that return nothing.
    pub async fn execute(&mut self, sql: &str) -> Result<u64, MigrateError> {
        match self {
            Db::Postgres(client) => client
                .execute(sql, &[])
                .await
                .map_err(pg_err(sql.to_string())),
            // One statement, whatever the text holds (see `execute_one`).
            Db::Mysql(conn) => execute_one(conn, sql)
                .await
                .map_err(my_err(sql.to_string())),
        }
    }

    /// Rows of text columns (NULL as `None`).
    pub async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, MigrateError> {
        match self {
            Db::Postgres(client) => {
                let messages = client
                    .simple_query(sql)
                    .await
                    .map_err(pg_err(sql.to_string()))?;
                Ok(messages
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_string))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect())
            }
            Db::Mysql(conn) => {
                let rows: Vec<mysql_async::Row> =
                    conn.query(sql).await.map_err(my_err(sql.to_string()))?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| match row.as_ref(i) {
                                Some(mysql_async::Value::NULL) | None => None,
                                Some(mysql_async::Value::Bytes(b)) => {
                                    Some(String::from_utf8_lossy(b).into_owned())
                                }
                                Some(other) => {
                                    Some(other.as_sql(true).trim_matches('\'').to_string())
                                }
                            })
                            .collect()
                    })
                    .collect())
            }
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
        let (columns, key, indexes) = match self {
            Db::Postgres(_) => {
                let rel = pg_literal(&self.quoted(schema, name));
                let columns = self
                    .rows(&format!(
                        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), (NOT a.attnotnull)::text,
                                (pg_get_serial_sequence({rel}, a.attname) IS NOT NULL)::text
                         FROM pg_attribute a WHERE a.attrelid = to_regclass({rel}) AND a.attnum > 0
                         AND NOT a.attisdropped ORDER BY a.attnum"
                    ))
                    .await?;
                let key = self
                    .strings(&format!(
                        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                         AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass({rel}) AND i.indisprimary
                         ORDER BY array_position(i.indkey::int2[], a.attnum)"
                    ))
                    .await?;
                let indexes = self
                    .rows(&format!(
                        "SELECT c.relname, i.indisunique::text, string_agg(a.attname, ',' ORDER BY k.n)
                         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                         WHERE i.indrelid = to_regclass({rel}) AND NOT i.indisprimary AND i.indexprs IS NULL
                         GROUP BY c.relname, i.indisunique ORDER BY c.relname"
                    ))
                    .await?;
                (columns, key, indexes)
            }
            Db::Mysql(_) => {
                let (s, n) = (my_literal(schema), my_literal(name));
                let columns = self
                    .rows(&format!(
                        "SELECT COLUMN_NAME, COLUMN_TYPE, IF(IS_NULLABLE = 'YES', 'true', 'false'),
                                IF(EXTRA LIKE '%auto_increment%', 'true', 'false'), DATA_TYPE,
                                IFNULL(CONCAT(' CHARACTER SET ', CHARACTER_SET_NAME, ' COLLATE ', COLLATION_NAME), '')
                         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {n}
                         ORDER BY ORDINAL_POSITION"
                    ))
                    .await?;
                let key = self
                    .strings(&format!(
                        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {s}
                         AND TABLE_NAME = {n} AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX"
                    ))
                    .await?;
                let indexes = self
                    .rows(&format!(
                        "SELECT INDEX_NAME, IF(NON_UNIQUE = 0, 'true', 'false'),
                                GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)
                         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {n}
                         AND INDEX_NAME <> 'PRIMARY' GROUP BY INDEX_NAME, NON_UNIQUE ORDER BY INDEX_NAME"
                    ))
                    .await?;
                (columns, key, indexes)
            }
        };
        if columns.is_empty() {
            return Ok(None);
        }
        let engine = self.engine();
        let text =
            |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(Some(Table {
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
        }))
    }

    /// Creates `table` (described on a `from` database) here as `schema.name`:
    /// columns and primary key only; indexes come after the copy.
    pub async fn create_table(
        &mut self,
        from: Engine,
        table: &Table,
        schema: &str,
        name: &str,
    ) -> Result<(), MigrateError> {
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
                    Engine::Postgres => " GENERATED BY DEFAULT AS IDENTITY",
                    Engine::Mysql => " AUTO_INCREMENT",
                });
            }
            if !c.nullable {
                def.push_str(" NOT NULL");
            }
            parts.push(def);
        }
        let key: Vec<String> = table.key.iter().map(|k| self.ident(k)).collect();
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
        let sql = format!(
            "CREATE TABLE {} ({})",
            self.quoted(schema, name),
            parts.join(", ")
        );
        tracing::info!("target: {sql}");
        self.execute(&sql).await?;
        Ok(())
    }

    /// Creates the source table's secondary indexes that the target lacks.
    pub async fn create_indexes(
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
            // Postgres index names are per schema: prefix with the table.
            let index_name = match self {
                Db::Postgres(_) if !index.name.starts_with(name) => {
                    format!("{name}_{}", index.name)
                }
                _ => index.name.clone(),
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
    pub async fn chunk_bounds(
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
                chunk_rows.max(1) - 1
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
                Db::Postgres(_) => format!("{}::text", quote_ident(k)),
                Db::Mysql(_) => format!("CAST({} AS CHAR)", my_quote(k)),
            })
            .collect()
    }

    /// `WHERE (key) > (lo) AND (key) <= (hi)`, either end left out when `None`.
    pub fn range(&self, table: &Table, lo: Option<&[String]>, hi: Option<&[String]>) -> String {
        let values = |key: &[String]| -> String {
            key.iter()
                .zip(&table.key)
                .map(|(v, k)| match self {
                    Db::Postgres(_) => {
                        let native = table.column(k).map_or("text", |c| c.native.as_str());
                        format!("{}::{native}", pg_literal(v))
                    }
                    Db::Mysql(_) => my_literal(v),
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
        let c = self.ident(&column.name);
        match self {
            Db::Postgres(_) => match column.kind {
                Kind::Bool => format!("{c}::int::text"),
                Kind::Decimal => format!("trim_scale({c})::text"),
                Kind::Bytes => format!("encode({c}, 'hex')"),
                Kind::Array(_) => format!("array_to_string({c}, ',', '\\N')"),
                Kind::Date => format!("to_char({c}, 'YYYY-MM-DD')"),
                Kind::DateTime => format!("to_char({c}, 'YYYY-MM-DD HH24:MI:SS.US')"),
                Kind::Time => format!("to_char({c}::interval, 'HH24:MI:SS.US')"),
                _ => format!("{c}::text"),
            },
            Db::Mysql(_) => {
                let text = match column.kind {
                    Kind::Bit { bits: 1 } => format!("CAST({c} + 0 AS CHAR)"),
                    Kind::Bit { bits } => format!("LPAD(LOWER(HEX({c})), {}, '0')", bits.div_ceil(8) * 2),
                    Kind::Decimal => format!(
                        "IF(INSTR(CAST({c} AS CHAR), '.') > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM CAST({c} AS CHAR))), CAST({c} AS CHAR))"
                    ),
                    Kind::Bytes => format!("LOWER(HEX({c}))"),
                    Kind::Date => format!("DATE_FORMAT({c}, '%Y-%m-%d')"),
                    Kind::DateTime => format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')"),
                    Kind::Time => format!("TIME_FORMAT({c}, '%H:%i:%s.%f')"),
                    _ => format!("CAST({c} AS CHAR)"),
                };
                format!("CONVERT({text} USING utf8mb4)")
            }
        }
    }

    /// The md5 of a row's canonical text (NULL as `\N`, fields split by 0x1F).
    fn row_hash(&self, table: &Table, columns: &[String]) -> String {
        let parts: Vec<String> = columns
            .iter()
            .filter_map(|name| table.column(name))
            .map(|c| match self {
                Db::Postgres(_) => format!("coalesce({}, '\\N')", self.canonical(c)),
                Db::Mysql(_) => format!("IFNULL({}, '\\\\N')", self.canonical(c)),
            })
            .collect();
        match self {
            Db::Postgres(_) => format!("md5(concat_ws(chr(31), {}))", parts.join(", ")),
            Db::Mysql(_) => format!("MD5(CONCAT_WS(CHAR(31), {}))", parts.join(", ")),
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
            Db::Postgres(_) => format!(
                "SELECT count(*)::text, coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint), 0)::text FROM (SELECT {hash} AS h FROM {from} {range}) s"
            ),
            Db::Mysql(_) => format!(
                "SELECT CAST(COUNT(*) AS CHAR), CAST(COALESCE(SUM(CAST(CONV(SUBSTR(h, 1, 15), 16, 10) AS UNSIGNED)), 0) AS CHAR) FROM (SELECT {hash} AS h FROM {from} {range}) s"
            ),
        };
        let row = self
            .rows(&sql)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok((get(0).parse().unwrap_or(0), get(1)))
    }

    /// Each row's key (as text, joined by `|`) and hash in a key range.
    pub async fn row_hashes(
        &mut self,
        table: &Table,
        columns: &[String],
        lo: Option<&[String]>,
        hi: Option<&[String]>,
    ) -> Result<std::collections::BTreeMap<String, String>, MigrateError> {
        let key = match self {
            Db::Postgres(_) => format!("concat_ws('|', {})", self.key_text(table).join(", ")),
            Db::Mysql(_) => format!("CONCAT_WS('|', {})", self.key_text(table).join(", ")),
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
        let rel = pg_literal(&self.quoted(&table.schema, &table.name));
        Ok(self
            .strings(&format!(
                "SELECT pg_get_serial_sequence({rel}, {})",
                pg_literal(column)
            ))
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
                format!("SELECT (CASE WHEN is_called THEN last_value ELSE last_value - 1 END)::text FROM {seq}")
            }
            Db::Mysql(_) => format!(
                "SELECT CAST(AUTO_INCREMENT - 1 AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                my_literal(&table.schema),
                my_literal(&table.name)
            ),
        };
        Ok(self
            .strings(&sql)
            .await?
            .into_iter()
            .next()
            .and_then(|v| v.parse().ok()))
    }

    /// Moves this side's counter of `column` past `last` and past the rows' maximum.
    pub async fn sync_counter(
        &mut self,
        table: &Table,
        column: &str,
        last: i64,
    ) -> Result<Option<i64>, MigrateError> {
        let from = self.quoted(&table.schema, &table.name);
        let col = self.ident(column);
        let max: i64 = self
            .strings(&format!(
                "SELECT CAST(COALESCE(MAX({col}), 0) AS {}) FROM {from}",
                match self {
                    Db::Postgres(_) => "text",
                    Db::Mysql(_) => "CHAR",
                }
            ))
            .await?
            .into_iter()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let value = last.max(max).max(1);
        match self {
            Db::Postgres(_) => {
                let Some(seq) = self.serial_sequence(table, column).await? else {
                    return Ok(None);
                };
                self.rows(&format!("SELECT setval({}, {value})", pg_literal(&seq)))
                    .await?;
            }
            Db::Mysql(_) => {
                self.execute(&format!(
                    "ALTER TABLE {from} AUTO_INCREMENT = {}",
                    value + 1
                ))
                .await?;
            }
        }
        Ok(Some(value))
    }

    /// Creates the migration's bookkeeping table: one JSON document per name.
    pub async fn ensure_documents(&mut self) -> Result<(), MigrateError> {
        match self {
            Db::Postgres(client) => client
                .batch_execute("CREATE TABLE IF NOT EXISTS public.tidemark_migration (name text PRIMARY KEY, kind text NOT NULL, document text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
                                CREATE TABLE IF NOT EXISTS public.tidemark_cutover (name text PRIMARY KEY, cut_over_at timestamptz NOT NULL DEFAULT now(), final_position text NOT NULL, verified boolean NOT NULL, record text NOT NULL)")
                .await
                .map_err(pg_err("create tidemark_migration"))?,
            Db::Mysql(conn) => {
                for statement in [
                    "CREATE TABLE IF NOT EXISTS tidemark_migration (name varchar(255) NOT NULL PRIMARY KEY, kind varchar(32) NOT NULL, document longtext NOT NULL, updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
                    "CREATE TABLE IF NOT EXISTS tidemark_cutover (name varchar(255) NOT NULL PRIMARY KEY, cut_over_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), final_position varchar(2048) NOT NULL, verified boolean NOT NULL, record longtext NOT NULL)",
                ] {
                    execute_one(conn, statement)
                        .await
                        .map_err(my_err("create tidemark_migration"))?;
                }
            }
        }
        Ok(())
    }

    pub async fn load_document(&mut self, name: &str) -> Result<Option<String>, MigrateError> {
        let sql = match self {
            Db::Postgres(_) => format!(
                "SELECT document FROM public.tidemark_migration WHERE name = {}",
                pg_literal(name)
            ),
            Db::Mysql(_) => format!(
                "SELECT document FROM tidemark_migration WHERE name = {}",
                my_literal(name)
            ),
        };
        Ok(self.strings(&sql).await?.into_iter().next())
    }

    pub async fn save_document(&mut self, name: &str, document: &str) -> Result<(), MigrateError> {
        let sql = match self {
            Db::Postgres(_) => format!(
                "INSERT INTO public.tidemark_migration (name, kind, document) VALUES ({n}, 'migration', {d}) ON CONFLICT (name) DO UPDATE SET document = EXCLUDED.document, updated_at = now()",
                n = pg_literal(name), d = pg_literal(document)
            ),
            Db::Mysql(_) => format!(
                "INSERT INTO tidemark_migration (name, kind, document) VALUES ({n}, 'migration', {d}) ON DUPLICATE KEY UPDATE document = VALUES(document), updated_at = CURRENT_TIMESTAMP(6)",
                n = my_literal(name), d = my_literal(document)
            ),
        };
        self.execute(&sql).await?;
        Ok(())
    }

    pub async fn save_cutover(
        &mut self,
        name: &str,
        position: &str,
        verified: bool,
        record: &str,
    ) -> Result<(), MigrateError> {
        let sql = match self {
            Db::Postgres(_) => format!(
                "INSERT INTO public.tidemark_cutover (name, final_position, verified, record) VALUES ({}, {}, {verified}, {}) ON CONFLICT (name) DO UPDATE SET cut_over_at = now(), final_position = EXCLUDED.final_position, verified = EXCLUDED.verified, record = EXCLUDED.record",
                pg_literal(name), pg_literal(position), pg_literal(record)
            ),
            Db::Mysql(_) => format!(
                "INSERT INTO tidemark_cutover (name, final_position, verified, record) VALUES ({}, {}, {verified}, {}) ON DUPLICATE KEY UPDATE cut_over_at = CURRENT_TIMESTAMP(6), final_position = VALUES(final_position), verified = VALUES(verified), record = VALUES(record)",
                my_literal(name), my_literal(position), my_literal(record)
            ),
        };
        self.execute(&sql).await?;
        Ok(())
    }
}
