//! `[source]`: a Postgres slot, a MySQL/MariaDB binlog, or polled tables.
//! Each kind is parsed and checked once, at load, into the typed section
//! its connector's config is built from ([`SourceSettings`]).

use super::values::bounds::{DAY, MAX_COUNT};
use super::values::{count, duration, split_mysql_table, SecretUrl};
use super::{invalid, ConfigError};
use crate::target::types::Engine;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tidemark_connectors::mysql::MysqlConfig;
use tidemark_connectors::poll::{PollConfig, PollTable};
use tidemark_connectors::postgres::{self, PostgresConfig, TableName};

/// `[source]` as written; [`SourceConfig::parse`] checks it. The serde names
/// are the ones the sections had before they were split in two, so that a
/// type error reads as it did.
#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename = "SourceConfig",
    deny_unknown_fields
)]
pub(super) enum RawSource {
    Postgres(RawPostgres),
    Mysql(RawMysql),
    Poll(RawPoll),
}

#[derive(Deserialize)]
#[serde(rename = "PostgresSource", deny_unknown_fields)]
pub(super) struct RawPostgres {
    url: SecretUrl,
    tables: Vec<String>,
    slot: String,
    publication: String,
    #[serde(default)]
    snapshot: SnapshotMode,
    #[serde(default = "default_chunk_rows")]
    snapshot_chunk_rows: usize,
    #[serde(default = "default_heartbeat_interval")]
    heartbeat_interval: String,
    heartbeat_statement: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename = "MysqlSource", deny_unknown_fields)]
pub(super) struct RawMysql {
    url: SecretUrl,
    tables: Vec<String>,
    server_id: u32,
    #[serde(default)]
    snapshot: SnapshotMode,
    #[serde(default = "default_chunk_rows")]
    snapshot_chunk_rows: usize,
}

#[derive(Deserialize)]
#[serde(rename = "PollSource", deny_unknown_fields)]
pub(super) struct RawPoll {
    url: SecretUrl,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(default = "default_page_size")]
    page_size: usize,
    #[serde(default)]
    wait_for_open_transactions: bool,
    table: Vec<RawPollTable>,
}

#[derive(Deserialize)]
#[serde(rename = "PollTableSource", deny_unknown_fields)]
pub(super) struct RawPollTable {
    name: String,
    cursor_column: String,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default = "default_lag_window")]
    lag_window: String,
    deleted_column: Option<String>,
    delete_detection: Option<String>,
    #[serde(default = "default_keyscan_interval")]
    keyscan_interval: String,
}

fn default_chunk_rows() -> usize {
    10_000
}

fn default_heartbeat_interval() -> String {
    "30s".into()
}

fn default_interval() -> String {
    "2s".into()
}

fn default_page_size() -> usize {
    1000
}

fn default_lag_window() -> String {
    "5s".into()
}

fn default_keyscan_interval() -> String {
    "1m".into()
}

#[derive(Debug)]
pub enum SourceConfig {
    Postgres(PostgresSection),
    Mysql(MysqlSection),
    Poll(PollSection),
}

/// `snapshot`: read every row first, or stream only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    #[default]
    Initial,
    Never,
}

/// Logical replication from a slot.
#[derive(Debug)]
pub struct PostgresSection {
    pub url: SecretUrl,
    /// Parsed and without duplicates.
    pub tables: Vec<TableName>,
    pub slot: String,
    pub publication: String,
    pub snapshot: SnapshotMode,
    pub snapshot_chunk_rows: usize,
    /// `heartbeat_interval`.
    pub heartbeat: Heartbeat,
    /// A statement to run as the heartbeat instead (say, an UPDATE of a captured
    /// heartbeat table), for roles that may not call `pg_logical_emit_message`.
    pub heartbeat_statement: Option<String>,
}

/// How often to write a heartbeat into the WAL (`pg_logical_emit_message`),
/// so the slot moves on idle or filtered databases; `"off"` to never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Off,
    Every(Duration),
}

/// MySQL and MariaDB alike.
#[derive(Debug)]
pub struct MysqlSection {
    pub url: SecretUrl,
    /// `(database, table)` pairs.
    pub tables: Vec<(String, String)>,
    /// The replica id tidemark announces; unique among the server's replicas.
    pub server_id: u32,
    pub snapshot: SnapshotMode,
    pub snapshot_chunk_rows: usize,
}

/// Query-based capture from PostgreSQL or MySQL/MariaDB.
#[derive(Debug)]
pub struct PollSection {
    pub url: SecretUrl,
    /// Pause between polls that found nothing.
    pub interval: Duration,
    pub page_size: usize,
    /// Timestamp cursors: never read past the start of the oldest open writing
    /// transaction, so late commits cannot be missed.
    pub wait_for_open_transactions: bool,
    pub table: Vec<PollTableSection>,
}

/// One `[[source.table]]` of a poll source.
#[derive(Debug)]
pub struct PollTableSection {
    pub name: TableName,
    pub cursor_column: String,
    pub key: Vec<String>,
    /// How far behind the watermark each poll reads again (timestamp cursors).
    pub lag_window: Duration,
    pub deleted_column: Option<String>,
    pub delete_detection: DeleteDetection,
}

/// `delete_detection` (with `keyscan_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteDetection {
    /// Deletes are seen only through `deleted_column`, if any.
    Off,
    /// `"keyscan"`: compare the table's keys with the keys seen, this often.
    Keyscan { every: Duration },
}

/// The source section as its connector takes it, from
/// [`super::Config::connector_config`]: one value per kind, so callers match
/// once instead of asking each kind in turn.
pub enum SourceSettings {
    Postgres(PostgresConfig),
    Mysql(MysqlConfig),
    Poll(PollConfig),
}

impl SourceConfig {
    /// The tables captured, as `(schema, table)`; MySQL's schema is its database.
    pub(super) fn tables(&self) -> Vec<(String, String)> {
        let pair = |t: &TableName| (t.schema.to_string(), t.table.to_string());
        match self {
            SourceConfig::Postgres(pg) => pg.tables.iter().map(pair).collect(),
            SourceConfig::Mysql(my) => my.tables.clone(),
            SourceConfig::Poll(poll) => poll.table.iter().map(|t| pair(&t.name)).collect(),
        }
    }

    /// Each kind checks its keys in the order they have always been checked,
    /// so the first fault reported stays the same.
    pub(super) fn parse(raw: RawSource) -> Result<SourceConfig, ConfigError> {
        Ok(match raw {
            RawSource::Postgres(pg) => SourceConfig::Postgres(PostgresSection::parse(pg)?),
            RawSource::Mysql(my) => SourceConfig::Mysql(MysqlSection::parse(my)?),
            RawSource::Poll(poll) => SourceConfig::Poll(PollSection::parse(poll)?),
        })
    }
}

impl PostgresSection {
    fn parse(raw: RawPostgres) -> Result<PostgresSection, ConfigError> {
        postgres::parse_url(raw.url.expose()).map_err(|e| invalid("source.url", e.to_string()))?;
        let tables = postgres_tables(&raw.tables)?;
        for (key, value) in [
            ("source.slot", &raw.slot),
            ("source.publication", &raw.publication),
        ] {
            if !postgres::valid_name(value) {
                return Err(invalid(
                    key,
                    format!("{value:?} must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"),
                ));
            }
        }
        count(
            "source.snapshot_chunk_rows",
            raw.snapshot_chunk_rows,
            1,
            MAX_COUNT,
        )?;
        let heartbeat = Heartbeat::parse(&raw.heartbeat_interval)?;
        Ok(PostgresSection {
            url: raw.url,
            tables,
            slot: raw.slot,
            publication: raw.publication,
            snapshot: raw.snapshot,
            snapshot_chunk_rows: raw.snapshot_chunk_rows,
            heartbeat,
            heartbeat_statement: raw.heartbeat_statement,
        })
    }

    /// The connector's config; `stop_at_lsn` ends a bounded run.
    pub(super) fn connector(
        &self,
        pipeline: &str,
        max_batch_events: usize,
        stop_at_lsn: Option<u64>,
    ) -> PostgresConfig {
        PostgresConfig {
            pipeline: pipeline.to_string(),
            url: self.url.expose().to_string(),
            tables: self.tables.clone(),
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            snapshot: self.snapshot == SnapshotMode::Initial,
            snapshot_chunk_rows: self.snapshot_chunk_rows,
            max_batch_events,
            stop_at_lsn,
            heartbeat: match self.heartbeat {
                Heartbeat::Off => None,
                Heartbeat::Every(every) => Some(postgres::Heartbeat {
                    every,
                    statement: self.heartbeat_statement.clone(),
                }),
            },
        }
    }
}

/// `tables`: at least one, each `schema.table` (or `table`, in `public`),
/// none twice.
fn postgres_tables(texts: &[String]) -> Result<Vec<TableName>, ConfigError> {
    if texts.is_empty() {
        return Err(invalid("source.tables", "lists no table"));
    }
    let mut seen = HashSet::new();
    let mut tables = Vec::with_capacity(texts.len());
    for table in texts {
        let parsed = TableName::parse(table)
            .ok_or_else(|| invalid("source.tables", format!("{table:?} is not `schema.table`")))?;
        if !seen.insert(parsed.to_string()) {
            return Err(invalid(
                "source.tables",
                format!("{parsed} is listed twice"),
            ));
        }
        tables.push(parsed);
    }
    Ok(tables)
}

impl Heartbeat {
    /// `"off"`, or a duration between 100ms and 24h.
    fn parse(text: &str) -> Result<Heartbeat, ConfigError> {
        if text == "off" {
            return Ok(Heartbeat::Off);
        }
        duration(
            "source.heartbeat_interval",
            text,
            Duration::from_millis(100),
            DAY,
        )
        .map(Heartbeat::Every)
    }
}

impl MysqlSection {
    fn parse(raw: RawMysql) -> Result<MysqlSection, ConfigError> {
        if raw.url.capture_engine() != Some(Engine::Mysql) {
            return Err(invalid("source.url", "must be a mysql:// URL"));
        }
        if raw.tables.is_empty() {
            return Err(invalid("source.tables", "lists no table"));
        }
        let mut tables = Vec::with_capacity(raw.tables.len());
        for table in &raw.tables {
            let parsed = split_mysql_table(table).ok_or_else(|| {
                invalid(
                    "source.tables",
                    format!("{table:?} is not `database.table`"),
                )
            })?;
            tables.push(parsed);
        }
        if raw.server_id == 0 {
            return Err(invalid("source.server_id", "must be a non-zero replica id"));
        }
        count(
            "source.snapshot_chunk_rows",
            raw.snapshot_chunk_rows,
            1,
            MAX_COUNT,
        )?;
        Ok(MysqlSection {
            url: raw.url,
            tables,
            server_id: raw.server_id,
            snapshot: raw.snapshot,
            snapshot_chunk_rows: raw.snapshot_chunk_rows,
        })
    }

    /// The connector's config; `stop_at` (binlog file, offset) ends a
    /// bounded run.
    pub(super) fn connector(
        &self,
        pipeline: &str,
        max_batch_events: usize,
        stop_at: Option<(String, u64)>,
    ) -> MysqlConfig {
        MysqlConfig {
            pipeline: pipeline.to_string(),
            url: self.url.expose().to_string(),
            tables: self.tables.clone(),
            server_id: self.server_id,
            snapshot: self.snapshot == SnapshotMode::Initial,
            snapshot_chunk_rows: self.snapshot_chunk_rows,
            max_batch_events,
            stop_at,
        }
    }
}

impl PollSection {
    fn parse(raw: RawPoll) -> Result<PollSection, ConfigError> {
        poll_url(&raw.url, raw.wait_for_open_transactions)?;
        let interval = duration(
            "source.interval",
            &raw.interval,
            Duration::from_millis(10),
            DAY,
        )?;
        count("source.page_size", raw.page_size, 1, MAX_COUNT)?;
        if raw.table.is_empty() {
            return Err(invalid("source.table", "lists no table ([[source.table]])"));
        }
        let mut table = Vec::with_capacity(raw.table.len());
        for raw_table in raw.table {
            table.push(PollTableSection::parse(raw_table)?);
        }
        Ok(PollSection {
            url: raw.url,
            interval,
            page_size: raw.page_size,
            wait_for_open_transactions: raw.wait_for_open_transactions,
            table,
        })
    }

    /// The connector's config; `state_dir` keeps the key-scan sets.
    pub(super) fn connector(&self, pipeline: &str, state_dir: PathBuf) -> PollConfig {
        PollConfig {
            pipeline: pipeline.to_string(),
            url: self.url.expose().to_string(),
            tables: self.table.iter().map(PollTableSection::connector).collect(),
            interval: self.interval,
            page_size: self.page_size,
            wait_for_open_transactions: self.wait_for_open_transactions,
            state_dir,
        }
    }
}

/// A poll source reads `postgres://` (checked as a capture source's URL is)
/// or `mysql://`; waiting for open transactions is PostgreSQL's alone.
fn poll_url(url: &SecretUrl, wait_for_open_transactions: bool) -> Result<(), ConfigError> {
    match url.capture_engine() {
        Some(Engine::Mysql) if wait_for_open_transactions => Err(invalid(
            "source.wait_for_open_transactions",
            "is for PostgreSQL sources only; use lag_window for MySQL",
        )),
        Some(Engine::Mysql) => Ok(()),
        Some(Engine::Postgres) => postgres::parse_url(url.expose())
            .map(|_| ())
            .map_err(|e| invalid("source.url", e.to_string())),
        None => Err(invalid(
            "source.url",
            "poll sources read postgres:// or mysql:// URLs",
        )),
    }
}

impl PollTableSection {
    fn parse(raw: RawPollTable) -> Result<PollTableSection, ConfigError> {
        let name = TableName::parse(&raw.name).ok_or_else(|| {
            invalid(
                "source.table.name",
                format!("{:?} is not `schema.table`", raw.name),
            )
        })?;
        let lag_window = duration(
            "source.table.lag_window",
            &raw.lag_window,
            Duration::ZERO,
            DAY,
        )?;
        if let Some(mode) = &raw.delete_detection {
            if mode != "keyscan" {
                return Err(invalid(
                    "source.table.delete_detection",
                    format!("{mode:?} is not a mode; the one mode is \"keyscan\""),
                ));
            }
        }
        // Checked even without `delete_detection`, as it always was.
        let every = duration(
            "source.table.keyscan_interval",
            &raw.keyscan_interval,
            Duration::from_millis(10),
            7 * DAY,
        )?;
        let delete_detection = if raw.delete_detection.is_some() {
            DeleteDetection::Keyscan { every }
        } else {
            DeleteDetection::Off
        };
        Ok(PollTableSection {
            name,
            cursor_column: raw.cursor_column,
            key: raw.key,
            lag_window,
            deleted_column: raw.deleted_column,
            delete_detection,
        })
    }

    fn connector(&self) -> PollTable {
        PollTable {
            name: self.name.clone(),
            cursor_column: self.cursor_column.clone(),
            key: self.key.clone(),
            lag_window: self.lag_window,
            deleted_column: self.deleted_column.clone(),
            keyscan_every: match self.delete_detection {
                DeleteDetection::Off => None,
                DeleteDetection::Keyscan { every } => Some(every),
            },
        }
    }
}
