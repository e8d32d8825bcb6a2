//! Where the cursor's binlog stands against the server's binlog expiry, for the
//! daemon's retention watch: `SHOW BINARY LOGS` and the expiry setting, on a
//! connection of its own.

use super::{binary_logs, connect, my_error, text_value};
use crate::SourceError;
use mysql_async::Conn;

/// One reading against a cursor at `file:pos`.
#[derive(Debug, Clone)]
pub struct BinlogRetention {
    /// False when the cursor's binlog is no longer on the server (purged).
    pub present: bool,
    /// True when the cursor is in the newest binlog, which is never purged.
    pub in_newest: bool,
    /// Binlog bytes written after the cursor.
    pub behind_bytes: u64,
    /// `binlog_expire_logs_seconds` (or `expire_logs_days`); 0 = never purged.
    pub expire_seconds: u64,
}

pub struct BinlogWatch {
    conn: Conn,
}

impl BinlogWatch {
    pub async fn connect(url: &str) -> Result<BinlogWatch, SourceError> {
        Ok(BinlogWatch {
            conn: connect(url).await?,
        })
    }

    pub async fn check(&mut self, file: &str, pos: u64) -> Result<BinlogRetention, SourceError> {
        let logs = binary_logs(&mut self.conn).await?;
        let expire_seconds =
            match text_value(&mut self.conn, "SELECT @@global.binlog_expire_logs_seconds").await {
                Ok(seconds) => seconds.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
                // Servers before MariaDB 10.6 / MySQL 8 know only days.
                Err(_) => text_value(&mut self.conn, "SELECT @@global.expire_logs_days")
                    .await
                    .map_err(my_error("read expire_logs_days"))?
                    .and_then(|days| days.parse::<f64>().ok())
                    .map_or(0, |days| (days * 86_400.0) as u64),
            };
        let index = logs.iter().position(|(name, _)| name == file);
        let behind_bytes = match index {
            Some(i) => {
                logs[i].1.saturating_sub(pos)
                    + logs[i + 1..].iter().map(|(_, size)| size).sum::<u64>()
            }
            None => 0,
        };
        Ok(BinlogRetention {
            present: index.is_some(),
            in_newest: index.is_some_and(|i| i + 1 == logs.len()),
            behind_bytes,
            expire_seconds,
        })
    }
}
