//! The TOML configuration: parsing (with `${VAR}` from the environment), defaults,
//! and validation that names the key at fault. Every key is documented in
//! `config/README.md`.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use tidemark_connectors::mysql::MysqlConfig;
use tidemark_connectors::poll::{PollConfig, PollTable};
use tidemark_connectors::postgres::{self, PostgresConfig, TableName};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: environment variable {var} is not set")]
    MissingEnv {
        path: String,
        line: usize,
        var: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Upper bounds of sizes and durations (config/README.md lists them): past
/// them a value is a typo or a unit mistake, and some would hold memory
/// without limit (a batch is never cut inside a transaction below
/// `max_batch_events`).
pub mod bounds {
    use std::time::Duration;

    /// Events, rows, pages.
    pub const MAX_COUNT: usize = 1_000_000;
    pub const MAX_PARALLELISM: usize = 64;
    pub const MAX_FILE_BYTES: u64 = 1 << 40;
    pub const DAY: Duration = Duration::from_secs(86_400);
    pub const HOUR: Duration = Duration::from_secs(3_600);
}

/// A count between `min` and `max`, or an error naming the key.
fn count(key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{value} is not between {min} and {max}"),
        ))
    }
}

/// A duration between `min` and `max`, or an error naming the key.
fn duration(
    key: &str,
    text: &str,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<(), ConfigError> {
    match parse_duration(text) {
        Some(d) if d >= min && d <= max => Ok(()),
        _ => Err(invalid(
            key,
            format!(
                "{text:?} is not a duration between {} and {} (like 30s, 500ms, 5m)",
                humantime_text(min),
                humantime_text(max)
            ),
        )),
    }
}

fn humantime_text(d: std::time::Duration) -> String {
    match d.as_secs() {
        0 if d.is_zero() => "0s".into(),
        0 => format!("{}ms", d.as_millis()),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s => format!("{s}s"),
    }
}

/// `log.level`: levels or `target=level` directives, comma-separated. A word
/// that is neither (a typo like `wran`) is refused: the filter library takes
/// it for a target name and would silence every line.
fn log_level(text: &str) -> Result<(), ConfigError> {
    let level = |l: &str| {
        ["trace", "debug", "info", "warn", "error", "off"]
            .iter()
            .any(|known| known.eq_ignore_ascii_case(l.trim()))
    };
    let target = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:-.".contains(c))
    };
    let ok = !text.trim().is_empty()
        && text
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((t, l)) => target(t.trim()) && level(l),
                None => level(directive),
            });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "log.level",
            format!(
                "{text:?} is not a level (trace, debug, info, warn, error, off) or target=level directives like info,tidemark=debug"
            ),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub source: SourceConfig,
    #[serde(default)]
    pub sink: SinkConfig,
    #[serde(default)]
    pub cursor: CursorConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Where `tidemark apply` and `tidemark migrate` write.
    pub target: Option<TargetConfig>,
    #[serde(default)]
    pub apply: ApplyConfig,
    #[serde(default)]
    pub migrate: MigrateConfig,
}

/// A target database for `apply` and `migrate`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[serde(rename = "type")]
    pub engine: TargetEngine,
    pub url: String,
    /// `"stop"` (default) or `"apply"`: add and drop columns on `op: "s"` events.
    #[serde(default)]
    pub schema_changes: crate::target::SchemaChanges,
    /// Source `schema.table` → target `[schema.]table`.
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("TargetConfig")
            .field("engine", &self.engine)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetEngine {
    Postgres,
    Mysql,
}

impl TargetEngine {
    pub fn engine(self) -> crate::target::types::Engine {
        match self {
            TargetEngine::Postgres => crate::target::types::Engine::Postgres,
            TargetEngine::Mysql => crate::target::types::Engine::Mysql,
        }
    }
}

/// `tidemark apply` options.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// `"source"`: capture `[source]` in the same process; `"sink"`: read what
    /// `[sink]` holds (the file sink's directory, or the Kinesis stream).
    #[serde(default)]
    pub input: ApplyInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApplyInput {
    #[default]
    Source,
    Sink,
}

/// `tidemark migrate` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateConfig {
    /// Chunks copied at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Rows per copy chunk (and per verify chunk).
    #[serde(default = "default_migrate_chunk_rows")]
    pub chunk_rows: usize,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        MigrateConfig {
            parallelism: default_parallelism(),
            chunk_rows: default_migrate_chunk_rows(),
        }
    }
}

fn default_parallelism() -> usize {
    4
}

fn default_migrate_chunk_rows() -> usize {
    50_000
}

/// The health, readiness and metrics endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`, or `"off"`. The environment variable `TIDEMARK_HTTP_LISTEN`
    /// overrides it (one port per instance of a templated unit).
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9187".into()
}

impl HttpConfig {
    /// The address to listen on; `None` when turned off.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let listen = std::env::var("TIDEMARK_HTTP_LISTEN").unwrap_or_else(|_| self.listen.clone());
        if listen == "off" {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            invalid(
                "http.listen",
                format!("{listen:?} is not host:port (like 127.0.0.1:9187) or \"off\""),
            )
        })
    }
}

/// Watching the source's log retention, so a lagging cursor is seen before its
/// changes are removed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_check_interval")]
    pub check_interval: String,
    /// Postgres: not ready once the slot retains more WAL than this (bytes);
    /// 0 leaves only `max_slot_wal_keep_size` to judge.
    #[serde(default)]
    pub max_retained_bytes: u64,
    /// MySQL/MariaDB: not ready once the cursor's binlog may be purged within this.
    #[serde(default = "default_warn_before_purge")]
    pub warn_before_purge: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            check_interval: default_check_interval(),
            max_retained_bytes: 0,
            warn_before_purge: default_warn_before_purge(),
        }
    }
}

fn default_check_interval() -> String {
    "30s".into()
}

fn default_warn_before_purge() -> String {
    "6h".into()
}

/// Logging; `level` is read again on SIGHUP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `tidemark=debug,info`. `RUST_LOG`,
    /// when set, wins at start.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    /// A batch is handed to the sink at this many events at most.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// The cursor is committed (after the sink syncs) at most this often while
    /// batches keep coming, once this long has passed since the last commit
    /// when they stop, at the first transaction end of a run, and on stop;
    /// `"0s"` commits after every batch. A crash replays at most this much
    /// (the file sink drops what it already holds).
    #[serde(default = "default_commit_interval")]
    pub commit_interval: String,
}

fn default_max_batch_events() -> usize {
    1024
}

fn default_commit_interval() -> String {
    "1s".into()
}

impl PipelineConfig {
    /// `commit_interval`, checked by [`Config::validate`].
    pub fn commit_every(&self) -> std::time::Duration {
        parse_duration(&self.commit_interval).unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Postgres(PostgresSource),
    Mysql(MysqlSource),
    Poll(PollSource),
}

/// Query-based capture from PostgreSQL or MySQL/MariaDB.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSource {
    pub url: String,
    /// Pause between polls that found nothing (`500ms`, `2s`, `1m`).
    #[serde(default = "default_interval")]
    pub interval: String,
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Timestamp cursors: never read past the start of the oldest open writing
    /// transaction, so late commits cannot be missed.
    #[serde(default)]
    pub wait_for_open_transactions: bool,
    pub table: Vec<PollTableSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollTableSource {
    pub name: String,
    pub cursor_column: String,
    #[serde(default)]
    pub key: Vec<String>,
    /// How far behind the watermark each poll reads again (timestamp cursors).
    #[serde(default = "default_lag_window")]
    pub lag_window: String,
    pub deleted_column: Option<String>,
    /// `"keyscan"`: find deleted rows by comparing the table's keys with the keys
    /// seen, every `keyscan_interval`.
    pub delete_detection: Option<String>,
    #[serde(default = "default_keyscan_interval")]
    pub keyscan_interval: String,
}

fn default_keyscan_interval() -> String {
    "1m".into()
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

/// Never print the URL: it may carry a password.
impl std::fmt::Debug for PollSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollSource")
            .field("url", &"<redacted>")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// `250ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

/// MySQL and MariaDB alike.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSource {
    pub url: String,
    /// `database.table`.
    pub tables: Vec<String>,
    /// The replica id tidemark announces; unique among the server's replicas.
    pub server_id: u32,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    #[serde(default = "default_chunk_rows")]
    pub snapshot_chunk_rows: usize,
}

/// Never print the URL: it may carry a password.
impl std::fmt::Debug for MysqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSource")
            .field("url", &"<redacted>")
            .field("tables", &self.tables)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    pub url: String,
    pub tables: Vec<String>,
    pub slot: String,
    pub publication: String,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    #[serde(default = "default_chunk_rows")]
    pub snapshot_chunk_rows: usize,
    /// How often to write a heartbeat into the WAL (`pg_logical_emit_message`),
    /// so the slot moves on idle or filtered databases; `"off"` to never.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval: String,
    /// A statement to run as the heartbeat instead (say, an UPDATE of a captured
    /// heartbeat table), for roles that may not call `pg_logical_emit_message`.
    pub heartbeat_statement: Option<String>,
}

fn default_heartbeat_interval() -> String {
    "30s".into()
}

/// Never print the URL: it may carry a password.
impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("url", &"<redacted>")
            .field("tables", &self.tables)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .finish_non_exhaustive()
    }
}

fn default_chunk_rows() -> usize {
    10_000
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    #[default]
    Initial,
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    File {
        path: PathBuf,
        #[serde(default = "default_max_file_bytes")]
        max_file_bytes: u64,
    },
    Stdout,
    /// Amazon Kinesis Data Streams.
    Kinesis {
        stream: String,
        /// Else the standard AWS chain (`AWS_REGION`, profile).
        region: Option<String>,
        /// Else `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL`, else AWS.
        endpoint: Option<String>,
        #[serde(default = "default_max_record_bytes")]
        max_record_bytes: usize,
        #[serde(default)]
        oversized: OversizedPolicy,
        /// Pack consecutive events of one partition key into one record (JSON lines).
        #[serde(default)]
        aggregate: bool,
    },
}

/// What the Kinesis sink does with an event larger than a record may be.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OversizedPolicy {
    #[default]
    Fail,
    SkipAndCount,
}

fn default_max_record_bytes() -> usize {
    1024 * 1024
}

fn default_lease_duration() -> String {
    "10s".into()
}

fn default_max_file_bytes() -> u64 {
    128 * 1024 * 1024
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig::File {
            path: state_dir().join("events"),
            max_file_bytes: default_max_file_bytes(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum CursorConfig {
    File {
        path: PathBuf,
    },
    /// A DynamoDB table (key `pipeline`), with a single-owner lease.
    Dynamodb {
        table: String,
        #[serde(default = "default_lease_duration")]
        lease_duration: String,
        region: Option<String>,
        /// Else `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`, else AWS.
        endpoint: Option<String>,
    },
}

impl Default for CursorConfig {
    fn default() -> Self {
        CursorConfig::File {
            path: state_dir().join("cursor.json"),
        }
    }
}

/// systemd's `StateDirectory` when run as a unit, else `./tidemark-state`.
fn state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tidemark-state"))
}

impl Config {
    /// The source's connection URL.
    pub fn source_url(&self) -> Option<&str> {
        match &self.source {
            SourceConfig::Postgres(pg) => Some(&pg.url),
            SourceConfig::Mysql(my) => Some(&my.url),
            SourceConfig::Poll(poll) => Some(&poll.url),
        }
    }

    /// The source's kind as positions name it: `postgres`, `mysql` or `poll`.
    pub fn source_kind(&self) -> &'static str {
        match &self.source {
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
            SourceConfig::Poll(_) => "poll",
        }
    }
    /// Reads, expands `${VAR}`, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let (expanded, substituted) = expand_env(&text, &shown)?;
        let config: Config = toml::from_str(&expanded).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            line: unknown_key_line(&expanded, e.message())
                .or_else(|| e.span().map(|s| line_of(&expanded, s.start)))
                .unwrap_or(0),
            message: redact(&e.message().replace('\n', " "), &substituted),
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key,
                message: redact(&message, &substituted),
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks what the types cannot: names, ranges, table names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.pipeline.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(invalid(
                "pipeline.name",
                format!("{name:?} must be letters, digits, '_', '-' or '.'"),
            ));
        }
        use bounds::*;
        use std::time::Duration;
        count(
            "pipeline.max_batch_events",
            self.pipeline.max_batch_events,
            1,
            MAX_COUNT,
        )?;
        duration(
            "pipeline.commit_interval",
            &self.pipeline.commit_interval,
            Duration::ZERO,
            HOUR,
        )?;
        if let Some(target) = &self.target {
            let engine = crate::target::types::Engine::of_url(&target.url);
            if engine != Some(target.engine.engine()) {
                return Err(invalid(
                    "target.url",
                    format!(
                        "is not a {:?} URL (postgres://... or mysql://...)",
                        target.engine
                    ),
                ));
            }
        }
        count(
            "migrate.parallelism",
            self.migrate.parallelism,
            1,
            MAX_PARALLELISM,
        )?;
        count("migrate.chunk_rows", self.migrate.chunk_rows, 1, MAX_COUNT)?;
        match &self.source {
            SourceConfig::Postgres(pg) => {
                postgres::parse_url(&pg.url).map_err(|e| invalid("source.url", e.to_string()))?;
                if pg.tables.is_empty() {
                    return Err(invalid("source.tables", "lists no table"));
                }
                let mut seen = std::collections::HashSet::new();
                for table in &pg.tables {
                    let parsed = TableName::parse(table).ok_or_else(|| {
                        invalid("source.tables", format!("{table:?} is not `schema.table`"))
                    })?;
                    if !seen.insert(parsed.to_string()) {
                        return Err(invalid(
                            "source.tables",
                            format!("{parsed} is listed twice"),
                        ));
                    }
                }
                for (key, value) in [
                    ("source.slot", &pg.slot),
                    ("source.publication", &pg.publication),
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
                    pg.snapshot_chunk_rows,
                    1,
                    MAX_COUNT,
                )?;
                if pg.heartbeat_interval != "off" {
                    duration(
                        "source.heartbeat_interval",
                        &pg.heartbeat_interval,
                        Duration::from_millis(100),
                        DAY,
                    )?;
                }
            }
            SourceConfig::Poll(poll) => {
                let mysql = poll.url.starts_with("mysql://");
                if mysql {
                    if poll.wait_for_open_transactions {
                        return Err(invalid(
                            "source.wait_for_open_transactions",
                            "is for PostgreSQL sources only; use lag_window for MySQL",
                        ));
                    }
                } else if poll.url.starts_with("postgres://")
                    || poll.url.starts_with("postgresql://")
                {
                    postgres::parse_url(&poll.url)
                        .map_err(|e| invalid("source.url", e.to_string()))?;
                } else {
                    return Err(invalid(
                        "source.url",
                        "poll sources read postgres:// or mysql:// URLs",
                    ));
                }
                duration(
                    "source.interval",
                    &poll.interval,
                    Duration::from_millis(10),
                    DAY,
                )?;
                count("source.page_size", poll.page_size, 1, MAX_COUNT)?;
                if poll.table.is_empty() {
                    return Err(invalid("source.table", "lists no table ([[source.table]])"));
                }
                for table in &poll.table {
                    if TableName::parse(&table.name).is_none() {
                        return Err(invalid(
                            "source.table.name",
                            format!("{:?} is not `schema.table`", table.name),
                        ));
                    }
                    duration(
                        "source.table.lag_window",
                        &table.lag_window,
                        Duration::ZERO,
                        DAY,
                    )?;
                    if let Some(mode) = &table.delete_detection {
                        if mode != "keyscan" {
                            return Err(invalid(
                                "source.table.delete_detection",
                                format!("{mode:?} is not a mode; the one mode is \"keyscan\""),
                            ));
                        }
                    }
                    duration(
                        "source.table.keyscan_interval",
                        &table.keyscan_interval,
                        Duration::from_millis(10),
                        7 * DAY,
                    )?;
                }
            }
            SourceConfig::Mysql(my) => {
                if !my.url.starts_with("mysql://") {
                    return Err(invalid("source.url", "must be a mysql:// URL"));
                }
                if my.tables.is_empty() {
                    return Err(invalid("source.tables", "lists no table"));
                }
                for table in &my.tables {
                    if split_mysql_table(table).is_none() {
                        return Err(invalid(
                            "source.tables",
                            format!("{table:?} is not `database.table`"),
                        ));
                    }
                }
                if my.server_id == 0 {
                    return Err(invalid("source.server_id", "must be a non-zero replica id"));
                }
                count(
                    "source.snapshot_chunk_rows",
                    my.snapshot_chunk_rows,
                    1,
                    MAX_COUNT,
                )?;
            }
        }
        self.http.address()?;
        duration(
            "retention.check_interval",
            &self.retention.check_interval,
            Duration::from_secs(1),
            DAY,
        )?;
        duration(
            "retention.warn_before_purge",
            &self.retention.warn_before_purge,
            Duration::from_secs(1),
            30 * DAY,
        )?;
        log_level(&self.log.level)?;
        if let SinkConfig::File { max_file_bytes, .. } = &self.sink {
            if !(4096..=MAX_FILE_BYTES).contains(max_file_bytes) {
                return Err(invalid(
                    "sink.max_file_bytes",
                    format!("{max_file_bytes} is not between 4096 and {MAX_FILE_BYTES}"),
                ));
            }
        }
        if let SinkConfig::Kinesis {
            stream,
            max_record_bytes,
            ..
        } = &self.sink
        {
            if stream.is_empty() {
                return Err(invalid("sink.stream", "names no stream"));
            }
            if !(1024..=10 * 1024 * 1024).contains(max_record_bytes) {
                return Err(invalid(
                    "sink.max_record_bytes",
                    "must be between 1024 and 10485760",
                ));
            }
        }
        if let CursorConfig::Dynamodb {
            table,
            lease_duration,
            ..
        } = &self.cursor
        {
            if table.is_empty() {
                return Err(invalid("cursor.table", "names no table"));
            }
            duration(
                "cursor.lease_duration",
                lease_duration,
                Duration::from_secs(1),
                HOUR,
            )?;
        }
        Ok(())
    }

    /// The connector's view of a poll `[source]`; `None` for other sources.
    pub fn poll(&self) -> Option<PollConfig> {
        let SourceConfig::Poll(poll) = &self.source else {
            return None;
        };
        Some(PollConfig {
            pipeline: self.pipeline.name.clone(),
            url: poll.url.clone(),
            tables: poll
                .table
                .iter()
                .filter_map(|t| {
                    Some(PollTable {
                        name: TableName::parse(&t.name)?,
                        cursor_column: t.cursor_column.clone(),
                        key: t.key.clone(),
                        lag_window: parse_duration(&t.lag_window)?,
                        deleted_column: t.deleted_column.clone(),
                        keyscan_every: t
                            .delete_detection
                            .is_some()
                            .then(|| parse_duration(&t.keyscan_interval))
                            .flatten(),
                    })
                })
                .collect(),
            interval: parse_duration(&poll.interval).unwrap_or(std::time::Duration::from_secs(2)),
            page_size: poll.page_size,
            wait_for_open_transactions: poll.wait_for_open_transactions,
            state_dir: match &self.cursor {
                CursorConfig::File { path } => match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                    _ => PathBuf::from("."),
                },
                CursorConfig::Dynamodb { .. } => state_dir(),
            },
        })
    }

    /// The connector's view of a MySQL `[source]`; `None` for other sources.
    pub fn mysql(&self, stop_at: Option<(String, u64)>) -> Option<MysqlConfig> {
        let SourceConfig::Mysql(my) = &self.source else {
            return None;
        };
        Some(MysqlConfig {
            pipeline: self.pipeline.name.clone(),
            url: my.url.clone(),
            tables: my
                .tables
                .iter()
                .filter_map(|t| split_mysql_table(t))
                .collect(),
            server_id: my.server_id,
            snapshot: my.snapshot == SnapshotMode::Initial,
            snapshot_chunk_rows: my.snapshot_chunk_rows,
            max_batch_events: self.pipeline.max_batch_events,
            stop_at,
        })
    }

    /// The connector's view of a Postgres `[source]`; `None` for other sources.
    pub fn postgres(&self, stop_at_lsn: Option<u64>) -> Option<PostgresConfig> {
        let SourceConfig::Postgres(pg) = &self.source else {
            return None;
        };
        Some(PostgresConfig {
            pipeline: self.pipeline.name.clone(),
            url: pg.url.clone(),
            tables: pg
                .tables
                .iter()
                .filter_map(|t| TableName::parse(t))
                .collect(),
            slot: pg.slot.clone(),
            publication: pg.publication.clone(),
            snapshot: pg.snapshot == SnapshotMode::Initial,
            snapshot_chunk_rows: pg.snapshot_chunk_rows,
            max_batch_events: self.pipeline.max_batch_events,
            stop_at_lsn,
            heartbeat: parse_duration(&pg.heartbeat_interval).map(|every| postgres::Heartbeat {
                every,
                statement: pg.heartbeat_statement.clone(),
            }),
        })
    }
}

/// Inside tagged sections toml reports the section's span for an unknown key;
/// point at the key's own line instead.
fn unknown_key_line(text: &str, message: &str) -> Option<usize> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn split_mysql_table(text: &str) -> Option<(String, String)> {
    let (db, table) = text.split_once('.')?;
    (!db.is_empty() && !table.is_empty() && !table.contains('.'))
        .then(|| (db.to_string(), table.to_string()))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Shows `${NAME}` where an error would quote a value that came from the
/// environment (secrets come that way). Values under 3 bytes are left: they
/// would blank out digits and words of the message, and are no secrets.
fn redact(message: &str, substituted: &[(String, String)]) -> String {
    let mut out = message.to_string();
    for (name, value) in substituted {
        if value.len() >= 3 {
            out = out.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    out
}

/// Replaces each `${NAME}` with the environment variable's value; returns
/// the text and the (name, value) pairs substituted.
fn expand_env(text: &str, path: &str) -> Result<(String, Vec<(String, String)>), ConfigError> {
    let mut substituted = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let line = line_of(text, text.len() - rest.len() + start);
        let end = after.find('}').ok_or_else(|| ConfigError::Parse {
            path: path.to_string(),
            line,
            message: "unterminated ${...}".into(),
        })?;
        let var = &after[..end];
        let value = std::env::var(var).map_err(|_| ConfigError::MissingEnv {
            path: path.to_string(),
            line,
            var: var.to_string(),
        })?;
        out.push_str(&value);
        substituted.push((var.to_string(), value));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, substituted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().map_err(|source| ConfigError::Read {
            path: "tmp".into(),
            source,
        })?;
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).map_err(|source| ConfigError::Read {
            path: "tmp".into(),
            source,
        })?;
        Config::load(&path)
    }

    const GOOD: &str = r#"
[pipeline]
name = "demo"
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/shop"
tables = ["public.customers", "orders"]
slot = "tidemark_demo"
publication = "tidemark_demo"
"#;

    #[test]
    fn defaults_are_the_embedded_ones() {
        let config = parse(GOOD).expect("valid config");
        assert!(matches!(config.sink, SinkConfig::File { .. }));
        assert!(matches!(config.cursor, CursorConfig::File { .. }));
        let pg = config.postgres(None).expect("postgres source");
        assert!(pg.snapshot);
        assert_eq!(pg.tables[1].to_string(), "public.orders");
    }

    #[test]
    fn unknown_key_names_its_line() {
        let err = parse(&GOOD.replace("slot =", "slott =")).expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains(":8:") && text.contains("slott"), "{text}");
    }

    /// Every size and duration has an upper bound, and `log.level` takes
    /// only levels and `target=level` directives: each of these is refused in
    /// one line naming its key.
    #[test]
    fn unbounded_sizes_durations_and_level_typos_are_refused() {
        let huge = "9223372036854775807";
        let cases: Vec<(String, &str)> = vec![
            (GOOD.replace("[pipeline]\n", &format!("[pipeline]\nmax_batch_events = {huge}\n")), "pipeline.max_batch_events"),
            (GOOD.replace("[pipeline]\n", "[pipeline]\nmax_batch_events = 0\n"), "pipeline.max_batch_events"),
            (GOOD.replace("[pipeline]\n", "[pipeline]\ncommit_interval = \"2h\"\n"), "pipeline.commit_interval"),
            (format!("{GOOD}snapshot_chunk_rows = {huge}\n"), "source.snapshot_chunk_rows"),
            (format!("{GOOD}heartbeat_interval = \"5124095576030431h\"\n"), "source.heartbeat_interval"),
            (format!("{GOOD}heartbeat_interval = \"0s\"\n"), "source.heartbeat_interval"),
            (format!("{GOOD}[migrate]\nparallelism = 100000\n"), "migrate.parallelism"),
            (format!("{GOOD}[migrate]\nchunk_rows = {huge}\n"), "migrate.chunk_rows"),
            (format!("{GOOD}[sink]\ntype = \"file\"\npath = \"x\"\nmax_file_bytes = {huge}\n"), "sink.max_file_bytes"),
            (format!("{GOOD}[cursor]\ntype = \"dynamodb\"\ntable = \"t\"\nlease_duration = \"5124095576030431h\"\n"), "cursor.lease_duration"),
            (format!("{GOOD}[retention]\ncheck_interval = \"1000h\"\n"), "retention.check_interval"),
            (format!("{GOOD}[log]\nlevel = \"wran\"\n"), "log.level"),
            (format!("{GOOD}[log]\nlevel = \"tidemark=loud\"\n"), "log.level"),
            (format!("{GOOD}[log]\nlevel = \"\"\n"), "log.level"),
        ];
        for (text, key) in &cases {
            let err = parse(text).expect_err(key);
            let line = err.to_string();
            assert!(
                line.starts_with(&format!("{key}:")) && !line.contains('\n'),
                "{key}: {line}"
            );
        }
        for good in [
            "info",
            "warn,tidemark=debug",
            "tidemark::apply=trace, error",
            "OFF",
        ] {
            parse(&format!("{GOOD}[log]\nlevel = {good:?}\n"))
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse(&GOOD.replace("\"tidemark_demo\"\npub", "\"Bad-Slot\"\npub"))
            .expect_err("bad slot");
        assert!(err.to_string().starts_with("source.slot:"), "{err}");
        let err = parse(&GOOD.replace(
            "url = \"postgres://postgres@127.0.0.1:5432/shop\"",
            "url = \"${TIDEMARK_TEST_UNSET_VAR}\"",
        ))
        .expect_err("missing env");
        assert!(err.to_string().contains("TIDEMARK_TEST_UNSET_VAR"), "{err}");
        let err = parse(&GOOD.replace("[pipeline]\n", "[pipeline]\ncommit_interval = \"soon\"\n"))
            .expect_err("bad interval");
        assert!(
            err.to_string().starts_with("pipeline.commit_interval:"),
            "{err}"
        );
    }

    #[test]
    fn commit_interval_defaults_to_a_second_and_zero_means_every_batch() {
        let config = parse(GOOD).expect("valid config");
        assert_eq!(config.pipeline.commit_every(), Duration::from_secs(1));
        let config = parse(&GOOD.replace("[pipeline]\n", "[pipeline]\ncommit_interval = \"0s\"\n"))
            .expect("valid config");
        assert_eq!(config.pipeline.commit_every(), Duration::ZERO);
    }
}
