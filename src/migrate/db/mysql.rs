//! The MySQL/MariaDB dialect of [`super::Db`]: its SQL text, quoting, and
//! reading its rows.

use super::{Column, DescribeQueries, Table};
use crate::migrate::MigrateError;
use crate::target::mysql::execute_one;
use crate::target::values::Kind;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tidemark_connectors::sql::mysql::{literal, quote_ident};

/// What makes a created counter column fill itself.
pub(crate) const COUNTER_CLAUSE: &str = " AUTO_INCREMENT";

/// The type an expression is cast to for reading it as text.
pub(crate) const TEXT_TYPE: &str = "CHAR";

/// Turns a driver error into "cannot {what}: {error}", as `Unavailable` when
/// a reconnect may cure it and `Db` otherwise.
fn cannot(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> MigrateError {
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

/// A quoted identifier.
pub(crate) fn ident(name: &str) -> String {
    quote_ident(name)
}

/// The connection's database (the default schema of names).
pub(crate) async fn current_schema(conn: &mut Conn) -> Result<String, MigrateError> {
    conn.query_first::<Option<String>, _>("SELECT DATABASE()")
        .await
        .map_err(cannot("read the current database"))?
        .flatten()
        .ok_or_else(|| MigrateError::Config("the MySQL URL names no database".into()))
}

/// One statement, whatever the text holds (see `execute_one`).
pub(crate) async fn execute(conn: &mut Conn, sql: &str) -> Result<u64, MigrateError> {
    execute_one(conn, sql)
        .await
        .map_err(cannot(sql.to_string()))
}

/// The rows of a text query, every column as text (NULL as `None`).
pub(crate) async fn rows(
    conn: &mut Conn,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, MigrateError> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.map_err(cannot(sql.to_string()))?;
    Ok(rows
        .into_iter()
        .map(|row| (0..row.len()).map(|i| cell(row.as_ref(i))).collect())
        .collect())
}

/// One value as text: NULL as `None`, bytes as (lossy) UTF-8, anything else
/// as its SQL text without quotes.
fn cell(value: Option<&mysql_async::Value>) -> Option<String> {
    match value {
        Some(mysql_async::Value::NULL) | None => None,
        Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(other) => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// The catalog queries of `describe` (row layouts in [`DescribeQueries`]).
pub(crate) fn describe_queries(schema: &str, name: &str) -> DescribeQueries {
    let (s, n) = (literal(schema), literal(name));
    DescribeQueries {
        columns: format!(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IF(IS_NULLABLE = 'YES', 'true', 'false'),
                                IF(EXTRA LIKE '%auto_increment%', 'true', 'false'), DATA_TYPE,
                                IFNULL(CONCAT(' CHARACTER SET ', CHARACTER_SET_NAME, ' COLLATE ', COLLATION_NAME), '')
                         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {n}
                         ORDER BY ORDINAL_POSITION"
        ),
        key: format!(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {s}
                         AND TABLE_NAME = {n} AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX"
        ),
        indexes: format!(
            "SELECT INDEX_NAME, IF(NON_UNIQUE = 0, 'true', 'false'),
                                GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)
                         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {n}
                         AND INDEX_NAME <> 'PRIMARY' GROUP BY INDEX_NAME, NON_UNIQUE ORDER BY INDEX_NAME"
        ),
    }
}

/// A key column as text.
pub(crate) fn key_text(column: &str) -> String {
    format!("CAST({} AS CHAR)", quote_ident(column))
}

/// A key value as a literal.
pub(crate) fn key_value(value: &str) -> String {
    literal(value)
}

/// A column's canonical text (see `Db::canonical`).
pub(crate) fn canonical(column: &Column) -> String {
    let c = ident(&column.name);
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

/// The md5 of the canonical texts (NULL as `\N`, joined by 0x1F).
pub(crate) fn row_hash(canonical: &[String]) -> String {
    let parts: Vec<String> = canonical
        .iter()
        .map(|c| format!("IFNULL({c}, '\\\\N')"))
        .collect();
    format!("MD5(CONCAT_WS(CHAR(31), {}))", parts.join(", "))
}

/// Row count and sum of the hash prefixes of `range` of `from`.
pub(crate) fn checksum_sql(hash: &str, from: &str, range: &str) -> String {
    format!(
        "SELECT CAST(COUNT(*) AS CHAR), CAST(COALESCE(SUM(CAST(CONV(SUBSTR(h, 1, 15), 16, 10) AS UNSIGNED)), 0) AS CHAR) FROM (SELECT {hash} AS h FROM {from} {range}) s"
    )
}

/// A row's key columns (as text) joined by `|`.
pub(crate) fn row_key(key_text: &[String]) -> String {
    format!("CONCAT_WS('|', {})", key_text.join(", "))
}

/// The last value the table's AUTO_INCREMENT handed out.
pub(crate) fn counter_sql(table: &Table) -> String {
    format!(
        "SELECT CAST(AUTO_INCREMENT - 1 AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
        literal(&table.schema),
        literal(&table.name)
    )
}

/// Moves the AUTO_INCREMENT of `from` (quoted) past `value`.
pub(crate) fn set_counter_sql(from: &str, value: i64) -> String {
    format!("ALTER TABLE {from} AUTO_INCREMENT = {}", value + 1)
}

pub(crate) async fn ensure_documents(conn: &mut Conn) -> Result<(), MigrateError> {
    for statement in [
        "CREATE TABLE IF NOT EXISTS tidemark_migration (name varchar(255) NOT NULL PRIMARY KEY, kind varchar(32) NOT NULL, document longtext NOT NULL, updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
        "CREATE TABLE IF NOT EXISTS tidemark_cutover (name varchar(255) NOT NULL PRIMARY KEY, cut_over_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), final_position varchar(2048) NOT NULL, verified boolean NOT NULL, record longtext NOT NULL)",
    ] {
        execute_one(conn, statement)
            .await
            .map_err(cannot("create tidemark_migration"))?;
    }
    Ok(())
}

pub(crate) fn load_document_sql(name: &str) -> String {
    format!(
        "SELECT document FROM tidemark_migration WHERE name = {}",
        literal(name)
    )
}

pub(crate) fn save_document_sql(name: &str, document: &str) -> String {
    format!(
        "INSERT INTO tidemark_migration (name, kind, document) VALUES ({n}, 'migration', {d}) ON DUPLICATE KEY UPDATE document = VALUES(document), updated_at = CURRENT_TIMESTAMP(6)",
        n = literal(name), d = literal(document)
    )
}

pub(crate) fn save_cutover_sql(name: &str, position: &str, verified: bool, record: &str) -> String {
    format!(
        "INSERT INTO tidemark_cutover (name, final_position, verified, record) VALUES ({}, {}, {verified}, {}) ON DUPLICATE KEY UPDATE cut_over_at = CURRENT_TIMESTAMP(6), final_position = VALUES(final_position), verified = VALUES(verified), record = VALUES(record)",
        literal(name), literal(position), literal(record)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::Value;

    #[test]
    fn cells_read_null_bytes_and_numbers_as_text() {
        assert_eq!(cell(None), None);
        assert_eq!(cell(Some(&Value::NULL)), None);
        assert_eq!(
            cell(Some(&Value::Bytes(b"it's".to_vec()))),
            Some("it's".to_string())
        );
        assert_eq!(cell(Some(&Value::Int(-3))), Some("-3".to_string()));
    }

    #[test]
    fn bit_columns_hash_as_padded_hex_unless_a_flag() {
        let column = |bits: u32| Column {
            name: "b".into(),
            native: format!("bit({bits})"),
            kind: Kind::Bit { bits },
            nullable: true,
            counter: false,
            charset: String::new(),
        };
        assert_eq!(
            canonical(&column(1)),
            "CONVERT(CAST(`b` + 0 AS CHAR) USING utf8mb4)"
        );
        assert_eq!(
            canonical(&column(12)),
            "CONVERT(LPAD(LOWER(HEX(`b`)), 4, '0') USING utf8mb4)"
        );
    }
}
