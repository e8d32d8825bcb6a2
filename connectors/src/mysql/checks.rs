//! Pre-flight checks of a MySQL/MariaDB source, shared by `tidemark check` and
//! `run`: each problem is one line naming the setting, grant or table at fault.

use super::{my_error, MysqlConfig};
use crate::SourceError;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

pub(super) async fn variable(conn: &mut Conn, name: &str) -> Result<String, SourceError> {
    let row: Option<mysql_async::Row> = conn
        .query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await
        .map_err(my_error(format!("read {name}")))?;
    Ok(row
        .and_then(|r| r.get_opt::<String, _>(1))
        .and_then(Result::ok)
        .unwrap_or_default())
}

/// What stops capture; warnings (row image, metadata, retention) are logged.
pub(super) async fn problems(
    conn: &mut Conn,
    cfg: &MysqlConfig,
) -> Result<Vec<String>, SourceError> {
    let mut problems = Vec::new();
    if variable(conn, "log_bin").await? != "ON" {
        problems.push(
            "source: log_bin is OFF; binlog capture needs log_bin = ON (set it in the server config and restart)".to_string(),
        );
    }
    let format = variable(conn, "binlog_format").await?;
    if format != "ROW" {
        problems.push(format!(
            "source: binlog_format is {format}, capture needs binlog_format = ROW"
        ));
    }
    let image = variable(conn, "binlog_row_image").await?;
    if image != "FULL" {
        tracing::warn!("source: binlog_row_image is {image}: columns the server leaves out of row images are listed in `unchanged`, not sent");
    }
    let metadata = variable(conn, "binlog_row_metadata").await?;
    if metadata != "FULL" {
        tracing::warn!(
            "source: binlog_row_metadata is {metadata}: column names come from the schema history instead of the binlog (FULL is recommended)"
        );
    }
    let days: f64 = variable(conn, "expire_logs_days")
        .await?
        .parse()
        .unwrap_or(0.0);
    if days > 0.0 && days < 1.0 {
        tracing::warn!("source: binlogs expire after {days} days: a pipeline stopped longer than that must take a new snapshot");
    }
    let server_id = variable(conn, "server_id").await?;
    if server_id == cfg.server_id.to_string() {
        problems.push(format!(
            "source.server_id: {} is the server's own server_id; pick another",
            cfg.server_id
        ));
    }
    let grants: Vec<mysql_async::Row> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(my_error("read grants"))?;
    let grants = grants
        .iter()
        .filter_map(|r| r.get_opt::<String, _>(0).and_then(Result::ok))
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    let has = |names: &[&str]| names.iter().any(|g| grants.contains(g));
    let user: String = conn
        .query_first::<mysql_async::Row, _>("SELECT CURRENT_USER()")
        .await
        .map_err(my_error("read the current user"))?
        .and_then(|r| r.get_opt::<String, _>(0))
        .and_then(Result::ok)
        .unwrap_or_default();
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
    for (db, table) in &cfg.tables {
        let row: Option<mysql_async::Row> = conn
            .exec_first(
                "SELECT COUNT(*), CAST(COALESCE(SUM(CONSTRAINT_TYPE = 'PRIMARY KEY'), 0) AS SIGNED) FROM information_schema.TABLES t \
                 LEFT JOIN information_schema.TABLE_CONSTRAINTS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
                 WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?",
                (db, table),
            )
            .await
            .map_err(my_error(format!("look up table {db}.{table}")))?;
        let count = |r: &mysql_async::Row, i: usize| {
            r.get_opt::<i64, _>(i).and_then(Result::ok).unwrap_or(0)
        };
        match row.map(|r| (count(&r, 0), count(&r, 1))) {
            Some((0, _)) | None => problems.push(format!(
                "source.tables: table {db}.{table} does not exist or {user} cannot see it"
            )),
            Some((_, 0)) => {
                problems.push(format!("source.tables: {db}.{table} has no primary key"))
            }
            _ => {
                let probe = format!(
                    "SELECT 1 FROM `{}`.`{}` LIMIT 0",
                    db.replace('`', "``"),
                    table.replace('`', "``")
                );
                if conn.query_drop(probe).await.is_err() {
                    problems.push(format!("source.tables: {user} cannot SELECT from {db}.{table} (GRANT SELECT ON {db}.{table} TO {user})"));
                }
            }
        }
    }
    Ok(problems)
}
