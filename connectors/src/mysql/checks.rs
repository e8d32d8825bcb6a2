//! Pre-flight checks of a MySQL/MariaDB source, shared by `tidemark check` and
//! `run`: each problem is one line naming the setting, grant or table at fault.

use super::{my_error, MysqlConfig};
use crate::SourceError;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::HashMap;

/// The server settings the checks read, in one round trip; a setting the
/// server does not have is absent.
async fn settings(conn: &mut Conn) -> Result<HashMap<String, String>, SourceError> {
    conn.query::<(String, String), _>(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
         'binlog_row_image', 'binlog_row_metadata', 'expire_logs_days', 'server_id')",
    )
    .await
    .map(|rows| rows.into_iter().collect())
    .map_err(my_error("read the binlog settings"))
}

/// What stops capture; warnings (row image, metadata, retention) are logged.
pub(super) async fn problems(
    conn: &mut Conn,
    cfg: &MysqlConfig,
) -> Result<Vec<String>, SourceError> {
    let settings = settings(conn).await?;
    let mut problems = setting_problems(&settings, cfg.server_id);
    let grants = grants(conn).await?;
    let user = current_user(conn).await?;
    problems.extend(grant_problems(&grants, &user));
    for (db, table) in &cfg.tables {
        problems.extend(table_problem(conn, db, table, &user).await?);
    }
    Ok(problems)
}

/// The problems in the server settings (binlog off or not in rows, our
/// replica id taken); what only degrades capture is logged as a warning.
fn setting_problems(settings: &HashMap<String, String>, server_id: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let variable = |name: &str| settings.get(name).map_or("", String::as_str);
    if variable("log_bin") != "ON" {
        problems.push(
            "source: log_bin is OFF; binlog capture needs log_bin = ON (set it in the server config and restart)".to_string(),
        );
    }
    let format = variable("binlog_format");
    if format != "ROW" {
        problems.push(format!(
            "source: binlog_format is {format}, capture needs binlog_format = ROW"
        ));
    }
    let image = variable("binlog_row_image");
    if image != "FULL" {
        tracing::warn!("source: binlog_row_image is {image}: columns the server leaves out of row images are listed in `unchanged`, not sent");
    }
    let metadata = match variable("binlog_row_metadata") {
        "" => "absent (MySQL before 8.0.1)",
        set => set,
    };
    if metadata != "FULL" {
        tracing::warn!(
            "source: binlog_row_metadata is {metadata}: column names, signedness, charsets and ENUM/SET labels come from the schema history instead of the binlog (FULL is recommended)"
        );
    }
    let days: f64 = variable("expire_logs_days").parse().unwrap_or(0.0);
    if days > 0.0 && days < 1.0 {
        tracing::warn!("source: binlogs expire after {days} days: a pipeline stopped longer than that must take a new snapshot");
    }
    if variable("server_id") == server_id.to_string() {
        problems.push(format!(
            "source.server_id: {server_id} is the server's own server_id; pick another"
        ));
    }
    problems
}

/// `SHOW GRANTS`, as one upper-case text.
async fn grants(conn: &mut Conn) -> Result<String, SourceError> {
    let grants: Vec<mysql_async::Row> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(my_error("read grants"))?;
    Ok(grants
        .iter()
        .filter_map(|r| r.get_opt::<String, _>(0).and_then(Result::ok))
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase())
}

/// `CURRENT_USER()`, for the messages.
async fn current_user(conn: &mut Conn) -> Result<String, SourceError> {
    Ok(conn
        .query_first::<mysql_async::Row, _>("SELECT CURRENT_USER()")
        .await
        .map_err(my_error("read the current user"))?
        .and_then(|r| r.get_opt::<String, _>(0))
        .and_then(Result::ok)
        .unwrap_or_default())
}

/// The replication privileges `grants` lacks.
fn grant_problems(grants: &str, user: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let has = |names: &[&str]| names.iter().any(|g| grants.contains(g));
    if !has(&["ALL PRIVILEGES", "REPLICATION SLAVE", "REPLICATION REPLICA"]) {
        problems.push(format!(
            "source: {user} lacks REPLICATION SLAVE (GRANT REPLICATION SLAVE ON *.* TO {user})"
        ));
    }
    if !has(&["ALL PRIVILEGES", "REPLICATION CLIENT", "BINLOG MONITOR"]) {
        problems.push(format!(
            "source: {user} lacks REPLICATION CLIENT (BINLOG MONITOR on MariaDB), needed to list binlogs (GRANT REPLICATION CLIENT ON *.* TO {user})"
        ));
    }
    problems
}

/// What keeps one captured table from being read: missing, hidden from
/// `user`, without a primary key, or not readable.
async fn table_problem(
    conn: &mut Conn,
    db: &str,
    table: &str,
    user: &str,
) -> Result<Option<String>, SourceError> {
    let row: Option<mysql_async::Row> = conn
        .exec_first(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CONSTRAINT_TYPE = 'PRIMARY KEY'), 0) AS SIGNED) FROM information_schema.TABLES t \
             LEFT JOIN information_schema.TABLE_CONSTRAINTS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
             WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?",
            (db, table),
        )
        .await
        .map_err(my_error(format!("look up table {db}.{table}")))?;
    let count =
        |r: &mysql_async::Row, i: usize| r.get_opt::<i64, _>(i).and_then(Result::ok).unwrap_or(0);
    Ok(match row.map(|r| (count(&r, 0), count(&r, 1))) {
        Some((0, _)) | None => Some(format!(
            "source.tables: table {db}.{table} does not exist or {user} cannot see it"
        )),
        Some((_, 0)) => Some(format!("source.tables: {db}.{table} has no primary key")),
        _ => {
            let probe = format!(
                "SELECT 1 FROM {}.{} LIMIT 0",
                crate::sql::mysql::quote_ident(db),
                crate::sql::mysql::quote_ident(table)
            );
            if conn.query_drop(probe).await.is_err() {
                Some(format!("source.tables: {user} cannot SELECT from {db}.{table} (GRANT SELECT ON {db}.{table} TO {user})"))
            } else {
                None
            }
        }
    })
}
